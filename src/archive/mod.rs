//! Archive writers: the sinks of `blockwise backup`.
//!
//! A backup is planned as a list of `Segment`s covering the whole image in order: data
//! segments (mapped bytes, with unmapped holes inside them zeroed) and zero runs (unmapped).
//! [`Backup`] runs them through the crate's pipeline: the data segments are read as the
//! source prefers, an `Encoder` turns each into output bytes on every core, and the format's
//! `ArchiveWriter` receives them in image order and writes them through [`WriteAt`], while
//! the bmap ranges are hashed from the same bytes. One file per output format: seekable zstd
//! (`zstd`), multi-block xz (`xz`), Android sparse (`simg`) and sparse raw (`sparse`).
//! [`truncate`] ends an image at its last partition (rewriting a GPT backup).

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::io::WriteAt;

pub(crate) mod backup;
pub(crate) mod plan;
pub(crate) mod simg;
pub(crate) mod sparse;
pub mod truncate;
pub(crate) mod xz;
pub(crate) mod zstd;

pub use backup::{bmap_path, check_destination, Backup, BackupOptions, BackupStats, Progress};
pub(crate) use plan::{DataSegment, PlanOptions, Segment};

/// Output format of a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// Seekable zstd (`.zst`): plain zstd to every other tool, random access for blockwise.
    Zstd,
    /// Multi-block xz (`.xz`): plain xz to every other tool, random access through its index.
    Xz,
    /// Sparse raw image (`.img`): unmapped space left as holes.
    SparseRaw,
    /// Android sparse image (`.simg`): unmapped space as DONT_CARE chunks.
    AndroidSparse,
}

impl ArchiveFormat {
    /// The format a destination's name asks for: `.zst`/`.zstd`, `.xz`, `.simg`, or a raw
    /// image name (`.img`, `.raw`, `.bin`, `.iso`). `None` if the name does not say.
    pub fn from_name(path: &Path) -> Option<ArchiveFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "zst" | "zstd" => Some(ArchiveFormat::Zstd),
            "xz" => Some(ArchiveFormat::Xz),
            "simg" => Some(ArchiveFormat::AndroidSparse),
            "img" | "raw" | "bin" | "iso" => Some(ArchiveFormat::SparseRaw),
            _ => None,
        }
    }

    /// Short name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::Zstd => "seekable zstd",
            ArchiveFormat::Xz => "multi-block xz",
            ArchiveFormat::SparseRaw => "sparse raw",
            ArchiveFormat::AndroidSparse => "Android sparse",
        }
    }

    /// Default compression level (ignored by the uncompressed formats).
    pub(crate) fn default_level(self) -> i32 {
        match self {
            ArchiveFormat::Zstd => 3,
            ArchiveFormat::Xz => 6,
            _ => 0,
        }
    }

    /// How this format wants the image cut into segments.
    pub(crate) fn plan_options(self) -> PlanOptions {
        match self {
            // Frames of 2 MiB: about zstd -3's window, so the ratio barely suffers, and a
            // random read decodes at most 2 MiB.
            ArchiveFormat::Zstd => PlanOptions {
                frame_size: 2 << 20,
                merge_gap: 256 << 10,
                max_zero: zstd::MAX_ZERO_FRAME,
            },
            // LZMA gains from longer blocks; 8 MiB keeps a random read cheap enough.
            ArchiveFormat::Xz => PlanOptions {
                frame_size: 8 << 20,
                merge_gap: 1 << 20,
                max_zero: xz::MAX_ZERO_BLOCK,
            },
            ArchiveFormat::SparseRaw | ArchiveFormat::AndroidSparse => PlanOptions {
                frame_size: 4 << 20,
                merge_gap: 64 << 10,
                max_zero: u64::MAX,
            },
        }
    }
}

/// What an [`Encoder`] made of one data segment: the bytes to write, and one number the
/// format's writer needs about them (xz: the block's unpadded size; others: unused).
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// Bytes to append to the archive.
    pub(crate) bytes: Vec<u8>,
    /// Format-defined extra (see each format).
    pub(crate) aux: u64,
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
    pub(crate) level: i32,
    /// Size of the image being archived (after any truncation).
    pub(crate) image_size: u64,
}

/// The encoder and writer for `format`.
pub(crate) fn make(
    format: ArchiveFormat,
    o: &CodecOptions,
) -> crate::Result<(Arc<dyn Encoder>, Box<dyn ArchiveWriter>)> {
    Ok(match format {
        ArchiveFormat::Zstd => (
            Arc::new(zstd::FrameEncoder::new(o.level)?),
            Box::new(zstd::SeekableWriter::new()),
        ),
        ArchiveFormat::Xz => (
            Arc::new(xz::BlockEncoder::new(o.level)?),
            Box::new(xz::XzWriter::new()),
        ),
        ArchiveFormat::SparseRaw => (Arc::new(Passthrough), Box::new(sparse::SparseWriter::new())),
        ArchiveFormat::AndroidSparse => (
            Arc::new(Passthrough),
            Box::new(simg::SimgWriter::new(o.image_size)?),
        ),
    })
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

/// Encoder of the uncompressed formats: their writers use the segment's bytes directly.
pub(crate) struct Passthrough;

impl Encoder for Passthrough {
    fn encode(&self, _seg: &DataSegment, _data: &[u8]) -> io::Result<Encoded> {
        Ok(Encoded::default())
    }
}
