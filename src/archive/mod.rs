//! Archive and container writers: the sinks of `blockwise backup` and `blockwise convert`.
//!
//! A backup is planned as a list of `Segment`s covering the whole image in order: data
//! segments (mapped bytes, with unmapped holes inside them zeroed) and zero runs (unmapped).
//! [`Backup`] runs them through the crate's pipeline: the data segments are read as the
//! source prefers, an `Encoder` turns each into output bytes on every core, and the format's
//! `ArchiveWriter` receives them in image order and writes them through [`WriteAt`](crate::io::WriteAt), while
//! the bmap ranges are hashed from the same bytes. One file per output format: seekable zstd
//! (`zstd`), multi-block xz (`xz`), Android sparse (`simg`) and sparse raw (`sparse`), and
//! the virtual-disk containers `convert` also writes: qcow2 (`qcow2`), fixed and dynamic VHD
//! (`vhd`), dynamic VHDX (`vhdx`). A conversion is the same run without the bmap: the
//! same plan, pipeline and writers, whatever the output.
//! [`truncate`] ends an image at its last partition (rewriting a GPT backup).

pub mod backup;
mod codec;
mod formats;
pub mod plan;
mod qcow2;
pub mod simg;
pub mod sparse;
pub mod truncate;
mod vhd;
mod vhdx;
pub(crate) mod xz;
pub(crate) mod zstd;

pub use backup::{bmap_path, check_destination, Backup, BackupOptions, BackupStats, Progress};
pub use codec::{ClusterCompression, ContainerOptions};
pub use formats::ArchiveFormat;
