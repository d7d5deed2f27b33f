//! The block map as data: [`Bmap`], its [`BmapRange`]s and [`ChecksumType`], and the
//! [`Progress`] callback hashing reports through.
//!
//! Apart from the bmap façade (`bmap/mod.rs`, which re-exports them and generates and verifies
//! by calling the `read`, `write` and `hash` modules) so that those modules take the types from
//! here and they and the façade never import each other.

use serde::Serialize;

use crate::extent::ExtentMap;

/// Hash function of range and file checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumType {
    /// SHA-1 (bmap 1.3 and older).
    Sha1,
    /// SHA-256 (bmap 1.4 / 2.0).
    Sha256,
}

impl ChecksumType {
    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumType::Sha1 => 40,
            ChecksumType::Sha256 => 64,
        }
    }
    /// Name as written in `ChecksumType`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Sha1 => "sha1",
            ChecksumType::Sha256 => "sha256",
        }
    }
}

/// One `<Range>`: blocks `first..=last`, with the checksum of their bytes (the last block cut
/// at the image size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BmapRange {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// Lowercase hex digest, if the file carries one.
    pub checksum: Option<String>,
}

/// A parsed or generated block map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bmap {
    /// Format version ("2.0", "1.4", "1.3", ...).
    pub version: String,
    /// Image size in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// ceil(image_size / block_size).
    pub blocks_count: u64,
    /// Blocks covered by the ranges.
    pub mapped_blocks: u64,
    /// Checksum type of the ranges (None for old files without checksums).
    pub checksum_type: Option<ChecksumType>,
    /// The ranges, ascending and disjoint.
    pub ranges: Vec<BmapRange>,
}

impl Bmap {
    /// The mapped bytes as an [`ExtentMap`], cut at the image size.
    pub fn extent_map(&self) -> ExtentMap {
        let bs = self.block_size;
        ExtentMap::from_ranges(self.ranges.iter().map(|r| {
            (
                r.first.saturating_mul(bs).min(self.image_size),
                r.last
                    .saturating_add(1)
                    .saturating_mul(bs)
                    .min(self.image_size),
            )
        }))
    }
}

/// Called with the number of bytes just hashed.
pub(crate) type Progress<'a> = &'a (dyn Fn(u64) + Sync);
