//! squashfs: version 4 (little-endian only) and the older 2.x/3.x layouts in either byte order.
//!
//! blkid calls version 4 "squashfs" and anything older "squashfs3"; neither has a label or UUID.
//! The size is `bytes_used`, the end of the compressed image (everything after is padding).

use super::{FsInfo, FsType};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be16, be32, be64, le16, le32, le64};

/// Recognises a squashfs filesystem in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    let sb = dev.read_upto(0, 96)?;
    let big_endian = match sb.get(0..4) {
        Some(b"hsqs") => false,
        Some(b"sqsh") => true,
        _ => return Ok(None),
    };
    if sb.len() < 96 {
        return Ok(None);
    }
    let u16_at = |o| {
        if big_endian {
            be16(&sb, o)
        } else {
            le16(&sb, o)
        }
    };
    let u32_at = |o| {
        if big_endian {
            be32(&sb, o)
        } else {
            le32(&sb, o)
        }
    };
    let u64_at = |o| {
        if big_endian {
            be64(&sb, o)
        } else {
            le64(&sb, o)
        }
    };
    let (Some(major), Some(minor)) = (u16_at(28), u16_at(30)) else {
        return Ok(None);
    };
    let fs_type = match major {
        4 if !big_endian => FsType::Squashfs,
        1..=3 => FsType::Squashfs3,
        _ => return Ok(None),
    };
    let mut info = FsInfo {
        version: Some(format!("{major}.{minor}")),
        ..FsInfo::new(fs_type)
    };
    match fs_type {
        FsType::Squashfs => {
            let block_size = le32(&sb, 12).unwrap_or(0);
            let block_log = le16(&sb, 22).unwrap_or(0);
            if block_size.is_power_of_two() && 1u64 << block_log.min(63) == u64::from(block_size) {
                info.block_size = Some(block_size);
            } else {
                info.warnings.push(format!(
                    "block size {block_size} disagrees with block_log {block_log}"
                ));
            }
            info.size = le64(&sb, 40);
            let comp = match le16(&sb, 20).unwrap_or(0) {
                1 => "gzip",
                2 => "lzma",
                3 => "lzo",
                4 => "xz",
                5 => "lz4",
                6 => "zstd",
                _ => "unknown-compression",
            };
            info.features.push(comp.to_string());
        }
        _ => {
            // v3 keeps the 64-bit bytes_used after the packed 2.x fields; 2.x has only the
            // 32-bit copy near the start.
            info.size = if major == 3 {
                u64_at(63)
            } else {
                u32_at(8).map(u64::from)
            };
            let block_log = u16_at(34).unwrap_or(0);
            if (12..=20).contains(&block_log) {
                info.block_size = Some(1 << block_log);
            }
            info.features.push(
                if big_endian {
                    "big-endian"
                } else {
                    "little-endian"
                }
                .into(),
            );
        }
    }
    if let Some(size) = info.size {
        if size > dev.size() {
            info.warnings.push(format!(
                "bytes_used {size} exceeds the {} bytes present",
                dev.size()
            ));
        }
    }
    Ok(Some(info))
}

/// squashfs pads its image to a multiple of this many bytes (mksquashfs's default `-pad`).
const PAD: u64 = 4096;

/// The bytes of a squashfs image that must be kept: `[0, bytes_used)` rounded up to the 4 KiB
/// padding mksquashfs writes. A squashfs is packed front to back, so there is nothing free
/// inside it.
pub(crate) fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let info =
        probe(dev)?.ok_or_else(|| crate::Error::Format("no squashfs superblock found".into()))?;
    let bytes_used = info
        .size
        .ok_or_else(|| crate::Error::corrupt("squashfs superblock", "no bytes_used"))?;
    // Rounding up can only keep more, and the end is clipped to what exists.
    let end = bytes_used
        .checked_add(PAD - 1)
        .map(|e| e / PAD * PAD)
        .unwrap_or(u64::MAX)
        .min(dev.size());
    Ok(super::Usage {
        used: crate::extent::ExtentMap::single(0, end),
        from_fs: true,
        warnings: info.warnings,
        ..Default::default()
    })
}
