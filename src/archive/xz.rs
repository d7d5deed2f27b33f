//! Multi-block xz writer (placeholder during the skeleton commit; implemented on its branch).

use std::fs::File;
use std::io;

use super::{ArchiveWriter, DataSegment, Encoded, Encoder};

/// Largest zero run written as one xz block.
pub const MAX_ZERO_BLOCK: u64 = 64 << 20;

/// Compresses one data segment into one independent xz block.
pub struct BlockEncoder {
    _level: u32,
}

impl BlockEncoder {
    /// An encoder at xz preset `level` (0–9).
    pub fn new(level: i32) -> crate::Result<Self> {
        Ok(BlockEncoder {
            _level: level as u32,
        })
    }
}

impl Encoder for BlockEncoder {
    fn encode(&self, _seg: &DataSegment, _data: &[u8]) -> io::Result<Encoded> {
        Err(io::Error::other("xz output not built yet"))
    }
}

/// Writes blocks in order, then the index and stream footer.
pub struct XzWriter;

impl Default for XzWriter {
    fn default() -> Self {
        XzWriter
    }
}

impl XzWriter {
    /// A writer for one xz stream.
    pub fn new() -> Self {
        XzWriter
    }
}

impl ArchiveWriter for XzWriter {
    fn data(&mut self, _: &mut File, _: &DataSegment, _: &[u8], _: Encoded) -> io::Result<()> {
        Err(io::Error::other("xz output not built yet"))
    }
    fn zeros(&mut self, _: &mut File, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::other("xz output not built yet"))
    }
    fn finish(&mut self, _: &mut File, _: u64) -> io::Result<()> {
        Err(io::Error::other("xz output not built yet"))
    }
}
