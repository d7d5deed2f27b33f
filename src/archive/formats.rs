//! The backup formats as a choice: [`ArchiveFormat`] (names, extensions, levels, how each
//! cuts the image), [`make`] (the encoder and writer for each) and the [`Passthrough`]
//! encoder of the uncompressed formats.
//!
//! Apart from the archive façade (`archive/mod.rs`) so that the backup, which picks a format,
//! imports this dispatch directly, and the façade (which re-exports the backup) and the backup
//! never import each other.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::codec::{ArchiveWriter, CodecOptions, Encoded, Encoder};
use super::plan::{DataSegment, PlanOptions};
use super::{simg, sparse, xz, zstd};

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

    /// The usual file-name extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Zstd => "zst",
            ArchiveFormat::Xz => "xz",
            ArchiveFormat::SparseRaw => "img",
            ArchiveFormat::AndroidSparse => "simg",
        }
    }

    /// Default compression level (ignored by the uncompressed formats).
    pub fn default_level(self) -> i32 {
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

/// Encoder of the uncompressed formats: their writers use the segment's bytes directly.
pub(crate) struct Passthrough;

impl Encoder for Passthrough {
    fn encode(&self, _seg: &DataSegment, _data: &[u8]) -> io::Result<Encoded> {
        Ok(Encoded::default())
    }
}
