//! Android sparse writer (placeholder during the skeleton commit; implemented on its branch).

use std::fs::File;
use std::io;

use super::{ArchiveWriter, DataSegment, Encoded};

/// Writes RAW/FILL chunks for mapped data and DONT_CARE for unmapped space.
pub struct SimgWriter;

impl SimgWriter {
    /// A writer for an image of `image_size` bytes.
    pub fn new(_image_size: u64) -> crate::Result<Self> {
        Ok(SimgWriter)
    }
}

impl ArchiveWriter for SimgWriter {
    fn data(&mut self, _: &mut File, _: &DataSegment, _: &[u8], _: Encoded) -> io::Result<()> {
        Err(io::Error::other("simg output not built yet"))
    }
    fn zeros(&mut self, _: &mut File, _: u64, _: u64) -> io::Result<()> {
        Err(io::Error::other("simg output not built yet"))
    }
    fn finish(&mut self, _: &mut File, _: u64) -> io::Result<()> {
        Err(io::Error::other("simg output not built yet"))
    }
}
