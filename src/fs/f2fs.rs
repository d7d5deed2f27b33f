//! F2FS superblock probe (at byte 1024; a backup follows one block later).

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64, utf16le_z, uuid_be};

const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 3072;
const MAGIC: u32 = 0xF2F5_2010;

/// Recognises F2FS in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
    if le32(&sb, 0) != Some(MAGIC) {
        return Ok(None);
    }
    let g32 = |o| le32(&sb, o).unwrap_or(0);
    let corrupt = |d: String| crate::Error::corrupt("F2FS superblock", d);
    let log_sector = g32(8);
    let log_block = g32(16);
    // F2FS only ever uses 4 KiB blocks (16 KiB on some arm64 kernels); sectors 512..4096.
    if !(9..=12).contains(&log_sector) || !(12..=14).contains(&log_block) {
        return Err(corrupt(format!(
            "impossible sizes: log sector {log_sector}, log block {log_block}"
        )));
    }
    let block_size = 1u32 << log_block;
    let block_count = le64(&sb, 36).unwrap_or(0);
    let mut info = FsInfo {
        fs_type: "f2fs",
        block_size: Some(block_size),
        version: Some(format!(
            "{}.{}",
            le16(&sb, 4).unwrap_or(0),
            le16(&sb, 6).unwrap_or(0)
        )),
        ..Default::default()
    };
    let mut uuid = [0u8; 16];
    if let Some(b) = sb.get(108..124) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    let label = utf16le_z(sb.get(124..124 + 1024).unwrap_or(&[]));
    info.label = (!label.is_empty()).then_some(label);
    match block_count.checked_mul(u64::from(block_size)) {
        Some(bytes) if block_count > 0 => {
            info.size = Some(bytes);
            if bytes > dev.size() {
                info.warnings.push(format!(
                    "filesystem claims {bytes} bytes but the volume is only {}: truncated?",
                    dev.size()
                ));
            }
        }
        _ => info
            .warnings
            .push(format!("impossible block count {block_count}")),
    }
    Ok(Some(info))
}

/// The bytes of this filesystem that must be kept. (Allocation map not read yet: keeps
/// everything, which is always safe.)
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage::everything(
        dev.size(),
        "allocation map reader not written yet; every block is kept",
    ))
}
