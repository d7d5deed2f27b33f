//! What every backup format implements and is configured with: the [`Encoder`] (parallel, one
//! segment at a time) and its [`Encoded`] output, the [`ArchiveWriter`] (in image order),
//! [`CodecOptions`] and the level check.
//!
//! Apart from the archive façade (`archive/mod.rs`) and from `formats.rs` (which name every
//! format's writer) so that the format writers (`zstd`, `xz`, `simg`, `sparse`) and the
//! backup take these from here, and none of them imports a module that imports it.

use std::io;

use super::plan::DataSegment;
use crate::io::WriteAt;

/// What an [`Encoder`] made of one data segment: the bytes to write, and one number the
/// format's writer needs about them (xz: the block's unpadded size; others: unused).
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// Bytes to append to the archive.
    pub bytes: Vec<u8>,
    /// Format-defined extra (see each format).
    pub aux: u64,
}

/// Turns one data segment into output bytes. Runs on worker threads, one segment at a time
/// each, so it must not depend on the order segments arrive in.
pub(crate) trait Encoder: Send + Sync {
    /// Encodes `data`, the image bytes of `seg` (unmapped parts already zeroed).
    fn encode(&self, seg: &DataSegment, data: &[u8]) -> io::Result<Encoded>;
}

/// The sequential side of a format: receives every segment in image order and writes the
/// archive through a [`WriteAt`] (a file, a device, memory).
pub(crate) trait ArchiveWriter: Send {
    /// Appends a data segment (and its encoding) to `out`.
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        enc: &Encoded,
    ) -> io::Result<()>;
    /// Records `len` unmapped bytes at `offset`.
    fn zeros(&mut self, out: &mut dyn WriteAt, offset: u64, len: u64) -> io::Result<()>;
    /// Writes whatever ends the archive (seek table, index, header, final length) for an
    /// image of `image_size` bytes.
    fn finish(&mut self, out: &mut dyn WriteAt, image_size: u64) -> io::Result<()>;
}

/// Compression settings shared by the formats.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodecOptions {
    /// Compression level (format-specific range, checked by [`make`]).
    pub level: i32,
    /// Size of the image being archived (after any truncation).
    pub image_size: u64,
}

/// Checks a compression level against a codec's range, with a message naming both.
pub(crate) fn check_level(
    codec: &str,
    levels: &std::ops::RangeInclusive<i32>,
    level: i32,
) -> crate::Result<()> {
    if levels.contains(&level) {
        return Ok(());
    }
    Err(crate::Error::Unsupported(format!(
        "{codec} level {level} is out of range ({}–{})",
        levels.start(),
        levels.end()
    )))
}
