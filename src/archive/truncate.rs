//! `--truncate` (placeholder during the skeleton commit; implemented on its branch).

use crate::layout::Layout;
use crate::source::ReadAt;

/// How an image is ended at its last partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// New image size in bytes.
    pub new_size: u64,
    /// Bytes to replace in the truncated image: (offset, new bytes), sorted, disjoint.
    pub patches: Vec<(u64, Vec<u8>)>,
    /// What was changed, for the summary.
    pub notes: Vec<String>,
}

/// Works out the truncated size and the table rewrites it needs.
pub fn plan_truncation(_src: &dyn ReadAt, _layout: &Layout) -> crate::Result<Truncation> {
    Err(crate::Error::Unsupported("--truncate not built yet".into()))
}
