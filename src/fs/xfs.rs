//! XFS superblock probe (big-endian, at byte 0 of the data device), plus recognition of an
//! external XFS log device, which `blkid` reports as "xfs_external_log".

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{be16, be32, be64, uuid_be};

const SB_MAGIC: &[u8; 4] = b"XFSB";
/// Log record header magic of an XFS journal.
const LOG_MAGIC: u32 = 0xFEED_BABE;

/// Recognises XFS (or an external XFS log) in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let sb = dev.read_vec(0, 512)?;
    if sb.starts_with(SB_MAGIC) {
        return superblock(dev, &sb).map(Some);
    }
    let version = be32(&sb, 4).unwrap_or(0);
    if be32(&sb, 0) == Some(LOG_MAGIC) && (version == 1 || version == 2) {
        return Ok(Some(FsInfo {
            fs_type: "xfs_external_log",
            ..Default::default()
        }));
    }
    Ok(None)
}

fn superblock(dev: &dyn ReadAt, sb: &[u8]) -> crate::Result<FsInfo> {
    let corrupt = |d: String| crate::Error::corrupt("XFS superblock", d);
    let g8 = |o: usize| sb.get(o).copied().unwrap_or(0);
    let block_size = be32(sb, 4).unwrap_or(0);
    let dblocks = be64(sb, 8).unwrap_or(0);
    let agblocks = be32(sb, 84).unwrap_or(0);
    let agcount = be32(sb, 88).unwrap_or(0);
    let versionnum = be16(sb, 100).unwrap_or(0);
    let sect_size = be16(sb, 102).unwrap_or(0);
    let block_log = u32::from(g8(120));
    let sect_log = u32::from(g8(121));

    // XFS's own mount-time checks: sizes must be powers of two matching their logs.
    if !block_size.is_power_of_two()
        || !(512..=65536).contains(&block_size)
        || block_size.trailing_zeros() != block_log
    {
        return Err(corrupt(format!(
            "impossible block size {block_size} (log {block_log})"
        )));
    }
    if !sect_size.is_power_of_two()
        || !(512..=32768).contains(&sect_size)
        || u32::from(sect_size).trailing_zeros() != sect_log
    {
        return Err(corrupt(format!(
            "impossible sector size {sect_size} (log {sect_log})"
        )));
    }
    if agcount == 0 || agblocks == 0 || dblocks == 0 {
        return Err(corrupt(format!(
            "empty geometry: {agcount} allocation groups of {agblocks} blocks, {dblocks} blocks"
        )));
    }

    let mut info = FsInfo {
        fs_type: "xfs",
        block_size: Some(block_size),
        version: Some((versionnum & 0xF).to_string()),
        ..Default::default()
    };
    let mut uuid = [0u8; 16];
    if let Some(b) = sb.get(32..48) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    let name = sb.get(108..120).unwrap_or(&[]);
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let label = String::from_utf8_lossy(&name[..end]).into_owned();
    info.label = (!label.is_empty()).then_some(label);

    // The data device holds agcount groups; the last may be short, never longer.
    if u64::from(agcount).saturating_mul(u64::from(agblocks)) < dblocks {
        info.warnings.push(format!(
            "{dblocks} blocks do not fit in {agcount} allocation groups of {agblocks}"
        ));
    }
    match dblocks.checked_mul(u64::from(block_size)) {
        Some(bytes) => {
            info.size = Some(bytes);
            if bytes > dev.size() {
                info.warnings.push(format!(
                    "filesystem claims {bytes} bytes but the volume is only {}: truncated?",
                    dev.size()
                ));
            }
        }
        None => info.warnings.push("data block count overflows".into()),
    }
    if be64(sb, 48).unwrap_or(0) == 0 {
        info.features.push("external_log".into());
    }
    if versionnum & 0xF == 5 {
        if be32(sb, 216).unwrap_or(0) & 0x0000_0008 != 0 {
            info.features.push("bigtime".into());
        }
        info.features.push("crc".into());
        let stored = be32(sb, 224).map(u32::swap_bytes).unwrap_or(0);
        // The CRC covers the superblock's whole sector with the crc field itself zeroed.
        let mut copy = dev.read_upto(0, usize::from(sect_size))?;
        if let Some(f) = copy.get_mut(224..228) {
            f.fill(0);
        }
        let len = usize::from(sect_size).min(copy.len());
        let computed = !super::ext::crc32c_raw(!0, &copy[..len]);
        if stored != computed {
            info.warnings.push(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
    }
    Ok(info)
}

/// The bytes of this filesystem that must be kept. (Allocation map not read yet: keeps
/// everything, which is always safe.)
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage::everything(
        dev.size(),
        "allocation map reader not written yet; every block is kept",
    ))
}
