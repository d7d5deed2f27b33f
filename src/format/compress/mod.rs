//! Compression wrappers: each decodes to exactly one byte stream. gzip, bzip2 and lz4 are
//! decoded front to back ([`crate::format::stream`]); xz and zstd too, unless their index
//! (`xz_blocks`) or seek table (`seekable_zstd`) allows reading one block or frame at a
//! time.

pub(crate) mod bzip2;
pub(crate) mod gzip;
pub(crate) mod lz4;
pub(crate) mod seekable_zstd;
pub mod xz;
pub(crate) mod xz_blocks;
pub mod zstd;
