//! Sparse raw writer (placeholder during the skeleton commit; implemented on its branch).

use std::fs::File;
use std::io;

use super::{ArchiveWriter, DataSegment, Encoded};

/// Writes mapped data at its offset and leaves unmapped space as holes.
pub struct SparseWriter;

impl Default for SparseWriter {
    fn default() -> Self {
        SparseWriter
    }
}

impl SparseWriter {
    /// A writer for one sparse raw image.
    pub fn new() -> Self {
        SparseWriter
    }
}

impl ArchiveWriter for SparseWriter {
    fn data(&mut self, _: &mut File, _: &DataSegment, _: &[u8], _: Encoded) -> io::Result<()> {
        Err(io::Error::other("sparse output not built yet"))
    }
    fn zeros(&mut self, _: &mut File, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::other("sparse output not built yet"))
    }
    fn finish(&mut self, _: &mut File, _: u64) -> io::Result<()> {
        Err(io::Error::other("sparse output not built yet"))
    }
}
