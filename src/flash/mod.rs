//! Flashing: writing an image's mapped blocks to one or more targets, head last, and reading
//! them back (issue 10). The [`FlashPlan`] says what is written and in which order
//! (`plan.rs`); [`write()`] runs it on the pipeline with every target as a sink and [`read_back`]
//! checks a target against the digests taken while writing (`write.rs`). Choosing and checking
//! the targets (mounted, system disk, too small) comes before, in the caller.

mod plan;
mod write;

pub use plan::{FlashPlan, HEAD, TAIL};
pub use write::{read_back, write, TargetOutcome, Written};
