//! Flashing: writing an image's mapped blocks to one or more targets, head last, and reading
//! them back (issue 10). The [`FlashPlan`] says what is written and in which order
//! (`plan.rs`); [`run`] runs it on the pipeline with every target as a sink, reads each
//! target back and writes its head last (`write.rs`); a [`Target`] is a block device or a
//! regular file opened for it (`target.rs`). Choosing and checking the targets (mounted, system
//! disk, too small: [`crate::drives`]) comes before, in the caller.
//!
//! Options around the write: [`gpt_to_end`] moves a GPT image's backup to the end of a larger
//! target (`gpt_end.rs`); [`check_capacity`] finds a fake card before it is written
//! (`capacity.rs`); [`find_sum`] finds the checksum file that vouches for the image and
//! [`SumCheck`] checks the image against it while the flash runs (`sums.rs`).

mod capacity;
mod gpt_end;
mod plan;
mod sums;
mod target;
mod write;

pub use capacity::{check_capacity, Capacity};
pub use gpt_end::{gpt_to_end, gpt_to_end_with, GptMove};
pub use plan::{FlashPlan, RangeCheck, HEAD, TAIL};
pub use sums::{find_sum, SumCheck, SumOutcome, Vouch};
pub use target::{Identity, Target, TargetKind, TargetReader};
pub use write::{
    read_back, run, FlashOptions, FlashTarget, Progress, Report, Stage, TargetError, TargetReport,
    WrittenPiece,
};
