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
//! [`SumCheck`] checks the image against it while the flash runs (`sums.rs`). For a stream
//! with no bmap, either a scan on a second decoder beside the flash says what it finds free as
//! it goes ([`ScanHints`], `hints.rs`; what it skipped that the scan's map keeps is written in
//! a second pass), or, with one decoder only, `stream_skip.rs` decides as the stream goes by
//! which blocks are already known free, over a view of the bytes that went by
//! (`captured.rs`).
//!
//! ```
//! use blockwise::flash::{self, FlashOptions, FlashPlan, FlashTarget};
//! use blockwise::io::MemSource;
//! use blockwise::ExtentMap;
//!
//! // A 3 MiB image of which the first 2 MiB matter, onto a 4 MiB "card" of old data.
//! let image = MemSource((0..3u32 << 20).map(|i| (i % 251) as u8).collect());
//! let mut card = vec![0xEEu8; 4 << 20];
//! let plan = FlashPlan::new(3 << 20, 4 << 20, &ExtentMap::single(0, 2 << 20), 4096);
//! let report = flash::run(
//!     &image,
//!     &plan,
//!     &mut [&mut card as &mut dyn FlashTarget],
//!     &FlashOptions::default(),
//!     &|p| eprintln!("{:?}: {} of {}", p.stage, p.done, p.total),
//!     None,
//! )?;
//! assert_eq!(report.targets[0].error, None);
//! assert_eq!(report.targets[0].verified, 2 << 20);
//! assert_eq!(card[..2 << 20], image.0[..2 << 20]);
//! assert!(card[2 << 20..3 << 20].iter().all(|&b| b == 0xEE), "unmapped: untouched");
//! assert!(card[3 << 20..].iter().all(|&b| b == 0), "past the image: the tail is zeroed");
//! # Ok::<(), blockwise::Error>(())
//! ```

mod capacity;
mod captured;
mod check;
mod gpt_end;
mod hints;
mod plan;
mod stream_skip;
mod sums;
mod target;
mod write;

pub use capacity::{check_capacity, Capacity};
pub use gpt_end::{gpt_to_end, gpt_to_end_with, GptMove};
pub use hints::ScanHints;
pub use plan::{FlashPlan, RangeCheck, ScanLink, HEAD, TAIL};
pub use sums::{find_sum, SumCheck, SumOutcome, Vouch};
pub use target::{Identity, Target, TargetKind, TargetReader};
pub use write::{
    read_back, run, run_checked, FlashOptions, FlashTarget, Progress, Report, Stage, TargetError,
    TargetReport, WrittenPiece,
};
