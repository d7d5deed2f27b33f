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

use super::codec::{ArchiveWriter, CodecOptions, ContainerOptions, Encoded, Encoder};
use super::plan::{DataSegment, PlanOptions};
use super::{qcow2, simg, sparse, vhd, vhdx, xz, zstd};

/// Output format of a backup or a conversion.
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
    /// qcow2 version 3 (`.qcow2`): unmapped space as unallocated clusters.
    Qcow2,
    /// Fixed VHD (`.vhd`): the disk padded to whole MiB, then the footer (what Azure takes).
    VhdFixed,
    /// Dynamic VHD (`.vhd`): 2 MiB blocks allocated where data is.
    VhdDynamic,
    /// Dynamic VHDX (`.vhdx`): 32 MiB blocks allocated where data is.
    Vhdx,
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

    /// Like [`from_name`](Self::from_name), and also the virtual-disk containers `convert`
    /// writes: `.qcow2`, `.vhd` (dynamic, as qemu-img makes it), `.vhdx`.
    pub fn from_output_name(path: &Path) -> Option<ArchiveFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "qcow2" => Some(ArchiveFormat::Qcow2),
            "vhd" | "vpc" => Some(ArchiveFormat::VhdDynamic),
            "vhdx" => Some(ArchiveFormat::Vhdx),
            _ => Self::from_name(path),
        }
    }

    /// True for the formats whose free space is left for the reader to skip (an Android
    /// sparse image's DONT_CARE chunks are not written by fastboot): there, every byte not
    /// known to be free must be mapped. Elsewhere free space reads as zeros.
    pub fn free_is_skipped(self) -> bool {
        self == ArchiveFormat::AndroidSparse
    }

    /// True for the formats whose writer only appends or skips forward over a hole, never
    /// going back to patch what it wrote: their output can be streamed to a destination that
    /// cannot seek (an upload, where a hole becomes zeros). The others write chunk headers,
    /// tables or a header over earlier bytes.
    pub fn writes_in_order(self) -> bool {
        matches!(
            self,
            ArchiveFormat::Zstd
                | ArchiveFormat::Xz
                | ArchiveFormat::SparseRaw
                | ArchiveFormat::VhdFixed
        )
    }

    /// Short name used in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::Zstd => "seekable zstd",
            ArchiveFormat::Xz => "multi-block xz",
            ArchiveFormat::SparseRaw => "sparse raw",
            ArchiveFormat::AndroidSparse => "Android sparse",
            ArchiveFormat::Qcow2 => "qcow2",
            ArchiveFormat::VhdFixed => "fixed VHD",
            ArchiveFormat::VhdDynamic => "dynamic VHD",
            ArchiveFormat::Vhdx => "dynamic VHDX",
        }
    }

    /// The usual file-name extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Zstd => "zst",
            ArchiveFormat::Xz => "xz",
            ArchiveFormat::SparseRaw => "img",
            ArchiveFormat::AndroidSparse => "simg",
            ArchiveFormat::Qcow2 => "qcow2",
            ArchiveFormat::VhdFixed | ArchiveFormat::VhdDynamic => "vhd",
            ArchiveFormat::Vhdx => "vhdx",
        }
    }

    /// Size of the disk this format stores for an image of `image_size` bytes: VHD and VHDX
    /// hold whole 512-byte sectors, and a fixed VHD whole MiB (Azure's rule); the rest is
    /// zeros.
    pub fn disk_size(self, image_size: u64) -> u64 {
        let unit = match self {
            ArchiveFormat::VhdFixed => 1 << 20,
            ArchiveFormat::VhdDynamic | ArchiveFormat::Vhdx => 512,
            _ => 1,
        };
        image_size.div_ceil(unit).saturating_mul(unit)
    }

    /// Default compression level (ignored by the uncompressed formats). qcow2's is that
    /// of its cluster codec, given by [`default_level_with`](Self::default_level_with).
    pub fn default_level(self) -> i32 {
        match self {
            ArchiveFormat::Zstd => 3,
            ArchiveFormat::Xz => 6,
            _ => 0,
        }
    }

    /// Default compression level, for qcow2 that of its cluster codec (as qemu: zlib 6,
    /// zstd 3).
    pub fn default_level_with(self, container: &ContainerOptions) -> i32 {
        match (self, container.compress) {
            (ArchiveFormat::Qcow2, Some(super::codec::ClusterCompression::Zlib)) => 6,
            (ArchiveFormat::Qcow2, Some(super::codec::ClusterCompression::Zstd)) => 3,
            _ => self.default_level(),
        }
    }

    /// True if the level means something for this format with these container options.
    pub fn uses_level(self, container: &ContainerOptions) -> bool {
        match self {
            ArchiveFormat::Zstd | ArchiveFormat::Xz => true,
            ArchiveFormat::Qcow2 => container.compress.is_some(),
            _ => false,
        }
    }

    /// How this format wants the image cut into segments.
    pub(crate) fn plan_options(self, container: &ContainerOptions) -> PlanOptions {
        match self {
            // Frames of 2 MiB: about zstd -3's window, so the ratio barely suffers, and a
            // random read decodes at most 2 MiB.
            ArchiveFormat::Zstd => PlanOptions {
                frame_size: 2 << 20,
                merge_gap: 256 << 10,
                max_zero: zstd::MAX_ZERO_FRAME,
                align: 1,
            },
            // LZMA gains from longer blocks; 8 MiB keeps a random read cheap enough.
            ArchiveFormat::Xz => PlanOptions {
                frame_size: 8 << 20,
                merge_gap: 1 << 20,
                max_zero: xz::MAX_ZERO_BLOCK,
                align: 1,
            },
            ArchiveFormat::SparseRaw
            | ArchiveFormat::AndroidSparse
            | ArchiveFormat::VhdFixed
            | ArchiveFormat::VhdDynamic
            | ArchiveFormat::Vhdx => PlanOptions {
                frame_size: 4 << 20,
                merge_gap: 64 << 10,
                max_zero: u64::MAX,
                align: 1,
            },
            // Whole clusters, so each is classified and compressed on any core.
            ArchiveFormat::Qcow2 => PlanOptions {
                frame_size: 4 << 20,
                merge_gap: 64 << 10,
                max_zero: u64::MAX,
                align: u64::from(container.cluster_size).max(1),
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
        ArchiveFormat::Qcow2 => (
            Arc::new(qcow2::ClusterEncoder::new(&o.container, o.level)?),
            Box::new(qcow2::Qcow2Writer::new(o.image_size, &o.container)?),
        ),
        ArchiveFormat::VhdFixed => (
            Arc::new(Passthrough),
            Box::new(vhd::VhdFixedWriter::new(o.image_size)?),
        ),
        ArchiveFormat::VhdDynamic => (
            Arc::new(Passthrough),
            Box::new(vhd::VhdDynamicWriter::new(o.image_size)?),
        ),
        ArchiveFormat::Vhdx => (
            Arc::new(Passthrough),
            Box::new(vhdx::VhdxWriter::new(o.image_size)?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Backup, BackupOptions};
    use crate::io::{MemSource, WriteAt};
    use crate::ExtentMap;

    /// Remembers whether anything was written below what was already written.
    #[derive(Default)]
    struct InOrder {
        end: u64,
        went_back: bool,
    }

    impl WriteAt for InOrder {
        fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.went_back |= offset < self.end;
            self.end = self.end.max(offset + buf.len() as u64);
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.went_back |= len < self.end;
            self.end = len;
            Ok(())
        }
    }

    #[test]
    fn writes_in_order_says_which_writers_never_go_back() {
        let size = 12usize << 20;
        let image: Vec<u8> = (0..size).map(|i| (i / 4096 * 7 + i) as u8).collect();
        let map = ExtentMap::from_ranges([
            (0, 1 << 20),
            (3 << 20, (5 << 20) + 4096),
            (9 << 20, 10 << 20),
        ]);
        for format in [
            ArchiveFormat::Zstd,
            ArchiveFormat::Xz,
            ArchiveFormat::SparseRaw,
            ArchiveFormat::AndroidSparse,
            ArchiveFormat::Qcow2,
            ArchiveFormat::VhdFixed,
            ArchiveFormat::VhdDynamic,
            ArchiveFormat::Vhdx,
        ] {
            let job = Backup::from_source(
                Arc::new(MemSource(image.clone())),
                &map,
                BackupOptions {
                    format,
                    threads: 2,
                    level: format.uses_level(&ContainerOptions::default()).then_some(1),
                    ..BackupOptions::default()
                },
            )
            .unwrap();
            let mut out = InOrder::default();
            job.run(
                &mut out,
                &mut |_| {},
                &std::sync::atomic::AtomicBool::new(false),
            )
            .unwrap();
            assert_eq!(!out.went_back, format.writes_in_order(), "{format:?}");
        }
    }
}
