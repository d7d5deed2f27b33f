//! Block maps in bmaptool's XML format: writing (byte for byte as `bmaptool create` lays
//! them out, so its `BmapFileChecksum` verifies in bmaptool) and reading every version from
//! 1.0 to 2.0 with full validation.

use std::io;

use serde::Serialize;

use crate::extent::ExtentMap;
use crate::io::ReadAt;

mod hash;
mod model;
pub mod read;
pub mod write;

pub(crate) use hash::{digest, hash_ranges, DigestKind, Hasher, RangeHasher, Reach};

pub(crate) use model::Progress;
pub use model::{Bmap, BmapRange, ChecksumType};
pub use read::parse;
pub use write::{render, BmapWriteOptions};

/// Byte range of a block range, cut at `image_size`.
pub fn range_bytes(first: u64, last: u64, block_size: u64, image_size: u64) -> (u64, u64) {
    let s = first.saturating_mul(block_size).min(image_size);
    let e = last
        .saturating_add(1)
        .saturating_mul(block_size)
        .min(image_size);
    (s, e)
}

/// SHA-256 (hex) of every block range `first..=last`, each cut at `image_size`; decoded and
/// hashed on all cores through the crate's pipeline.
pub fn range_checksums(
    src: &dyn ReadAt,
    ranges: &[(u64, u64)],
    block_size: u64,
    image_size: u64,
) -> crate::Result<Vec<String>> {
    let bytes: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(f, l)| range_bytes(f, l, block_size, image_size))
        .collect();
    let d = hash::hash_ranges(
        src,
        &bytes,
        ChecksumType::Sha256,
        &|_| {},
        hash::Reach::AtLeast(image_size),
    )?;
    Ok(d.iter().map(|d| hex(d)).collect())
}

pub use crate::checksum::hex;

/// The data (non-hole) ranges of a local file, as `bmaptool create` maps an image: every
/// block the filesystem stores, zero or not. Used for `--from holes` interoperability.
pub fn file_data_ranges(file: &std::fs::File) -> io::Result<ExtentMap> {
    use std::os::fd::AsFd;
    let len = file.metadata()?.len();
    let mut m = ExtentMap::new();
    let mut pos = 0u64;
    while pos < len {
        let Some(d) = crate::io::sys::seek_data(file.as_fd(), pos)? else {
            break;
        };
        let h = crate::io::sys::seek_hole(file.as_fd(), d)?
            .unwrap_or(len)
            .min(len);
        if h <= d {
            break;
        }
        m.insert(d, h);
        pos = h;
    }
    Ok(m)
}

/// Builds a complete bmap 2.0 file for `src` whose bytes that matter are `map`.
///
/// The ranges are read through the crate's pipeline, as the source prefers:
/// frames of a seekable archive decode on every core, a stream is decoded once, in order.
pub fn generate(
    src: &dyn ReadAt,
    map: &ExtentMap,
    checksums: bool,
    opts: &BmapWriteOptions,
) -> crate::Result<Vec<u8>> {
    generate_with_progress(src, map, checksums, opts, &|_| {})
}

/// [`generate`], reporting the bytes hashed as it goes (for a progress bar).
pub fn generate_with_progress(
    src: &dyn ReadAt,
    map: &ExtentMap,
    checksums: bool,
    opts: &BmapWriteOptions,
    progress: Progress,
) -> crate::Result<Vec<u8>> {
    let size = src.size();
    let ck = if checksums {
        let bytes: Vec<(u64, u64)> = write::block_ranges(size, map, opts.block_size)
            .into_iter()
            .map(|(f, l)| range_bytes(f, l, opts.block_size, size))
            .collect();
        let d = hash::hash_ranges(
            src,
            &bytes,
            ChecksumType::Sha256,
            progress,
            hash::Reach::Exact(size),
        )?;
        Some(d.iter().map(|d| hex(d)).collect::<Vec<_>>())
    } else {
        None
    };
    Ok(render(size, map, ck.as_deref(), opts))
}

/// Where bmaptool would look for the bmap of `image`: `IMG.bmap`, then with one extension
/// stripped at a time (`x.img.xz` → `x.img.xz.bmap`, `x.img.bmap`, `x.bmap`).
pub fn sidecar_candidates(image: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Some(name) = image.file_name().and_then(|n| n.to_str()) else {
        return out;
    };
    let mut stem = name.to_string();
    loop {
        out.push(image.with_file_name(format!("{stem}.bmap")));
        match stem.rfind('.') {
            Some(i) if i > 0 => stem.truncate(i),
            _ => break,
        }
    }
    out
}

/// A range whose contents do not match the bmap.
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// Digest in the bmap.
    pub expected: String,
    /// Digest of the image's bytes.
    pub actual: String,
}

/// Result of checking an image against a bmap.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyResult {
    /// Ranges checked.
    pub ranges_checked: usize,
    /// Ranges without a checksum (old bmaps), not checked.
    pub ranges_unchecked: usize,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Ranges that differ.
    pub mismatches: Vec<Mismatch>,
}

/// Checks every range of `bmap` that carries a checksum against `src`, reading through the
/// pipeline as [`generate`] does.
pub fn verify(src: &dyn ReadAt, bmap: &Bmap) -> crate::Result<VerifyResult> {
    let Some(t) = bmap.checksum_type else {
        return Err(crate::Error::Format(
            "this bmap has no checksums (format 1.2 or older without sha1 attributes); nothing to verify".into(),
        ));
    };
    if src.size() < bmap.image_size {
        return Err(crate::Error::Format(format!(
            "the image is {} bytes but the bmap describes {} bytes: truncated image or the wrong bmap",
            src.size(),
            bmap.image_size
        )));
    }
    let checked: Vec<&BmapRange> = bmap
        .ranges
        .iter()
        .filter(|r| r.checksum.is_some())
        .collect();
    let bytes: Vec<(u64, u64)> = checked
        .iter()
        .map(|r| range_bytes(r.first, r.last, bmap.block_size, bmap.image_size))
        .collect();
    let digests = hash::hash_ranges(
        src,
        &bytes,
        t,
        &|_| {},
        hash::Reach::AtLeast(bmap.image_size),
    )
    .map_err(|e| match e {
        // A stream of hinted size that ends before the bmap's last range.
        crate::Error::Replan {
            size: Some(size), ..
        } => crate::Error::Format(format!(
            "the image is {size} bytes but the bmap describes {} bytes: truncated image or \
             the wrong bmap",
            bmap.image_size
        )),
        e => e,
    })?;
    let mismatches = checked
        .iter()
        .zip(digests)
        .filter_map(|(r, d)| {
            let want = r.checksum.as_ref()?;
            let got = hex(&d);
            (got != *want).then(|| Mismatch {
                first: r.first,
                last: r.last,
                expected: want.clone(),
                actual: got,
            })
        })
        .collect();
    Ok(VerifyResult {
        ranges_checked: checked.len(),
        ranges_unchecked: bmap.ranges.len() - checked.len(),
        bytes_checked: bytes.iter().map(|(s, e)| e - s).sum(),
        mismatches,
    })
}
