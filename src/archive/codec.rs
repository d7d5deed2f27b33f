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
    /// Format-defined sizes of the pieces of `bytes` (qcow2: one per cluster); empty for
    /// the formats that store a segment whole.
    pub parts: Vec<u32>,
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
    /// What the container formats (qcow2, VHD, VHDX) are asked for.
    pub container: ContainerOptions,
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

/// How a virtual-disk container is laid out: what `convert` asks of the qcow2, VHD and VHDX
/// writers (the other formats ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerOptions {
    /// qcow2 cluster size in bytes: a power of two from 512 B to 2 MiB.
    pub cluster_size: u32,
    /// qcow2: compress every data cluster with this codec (a cluster that does not shrink is
    /// stored as it is, as qemu does).
    pub compress: Option<ClusterCompression>,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            cluster_size: 64 << 10,
            compress: None,
        }
    }
}

/// The codecs of qcow2's compressed clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterCompression {
    /// Raw deflate with a 4 KiB window (every qcow2 reader knows it).
    Zlib,
    /// zstd frames (qcow2 v3 with the compression-type header field; qemu 5.1 and later).
    Zstd,
}
