//! btrfs superblock probe (primary copy at 64 KiB).

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64, uuid_be};

const SB_OFFSET: u64 = 64 << 10;
const SB_LEN: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const CSUM_CRC32C: u16 = 0;
/// Offset of the device item's UUID (dev_item at 0xC9, uuid 66 bytes into it).
const DEV_UUID: usize = 0xC9 + 66;
const LABEL: usize = 0x12B;
const LABEL_LEN: usize = 256;

/// Recognises btrfs in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
    if sb.get(0x40..0x48) != Some(MAGIC) {
        return Ok(None);
    }
    let g32 = |o| le32(&sb, o).unwrap_or(0);
    let g64 = |o| le64(&sb, o).unwrap_or(0);
    let sectorsize = g32(0x90);
    let nodesize = g32(0x94);
    // The magic is 8 bytes at a fixed offset, so bad geometry is damage to report, not
    // evidence of another filesystem (blkid identifies these too).
    let mut warnings = Vec::new();
    let sector_ok = sectorsize.is_power_of_two() && (4096..=65536).contains(&sectorsize);
    if !sector_ok {
        warnings.push(format!(
            "impossible sector size {sectorsize}: superblock is corrupt"
        ));
    }
    if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > 65536 {
        warnings.push(format!(
            "impossible node size {nodesize}: superblock is corrupt"
        ));
    }
    let mut info = FsInfo {
        fs_type: "btrfs",
        block_size: sector_ok.then_some(sectorsize),
        warnings,
        ..Default::default()
    };
    let uuid_at = |o: usize| {
        let mut u = [0u8; 16];
        u.copy_from_slice(sb.get(o..o + 16)?);
        (u != [0; 16]).then(|| uuid_be(&u))
    };
    info.uuid = uuid_at(0x20);
    let l = sb.get(LABEL..LABEL + LABEL_LEN).unwrap_or(&[]);
    let end = l.iter().position(|&c| c == 0).unwrap_or(l.len());
    let label = String::from_utf8_lossy(&l[..end]).into_owned();
    info.label = (!label.is_empty()).then_some(label);

    let total = g64(0x70);
    info.size = Some(total);
    // On a multi-device filesystem total_bytes spans all devices; this device's share is in
    // its dev_item.
    let num_devices = g64(0x88);
    let dev_total = le64(&sb, 0xC9 + 8).unwrap_or(0);
    if num_devices > 1 {
        info.features.push(format!("devices={num_devices}"));
    }
    if let Some(sub) = uuid_at(DEV_UUID) {
        info.features.push(format!("dev_uuid={sub}"));
    }
    let local = if num_devices > 1 { dev_total } else { total };
    if local > dev.size() {
        info.warnings.push(format!(
            "filesystem claims {local} bytes but the volume is only {}: truncated?",
            dev.size()
        ));
    }
    if total == 0 || num_devices == 0 {
        info.warnings.push(format!(
            "superblock says {total} bytes on {num_devices} devices: corrupt"
        ));
    }
    if le16(&sb, 0xC4) == Some(CSUM_CRC32C) {
        let stored = g32(0);
        let computed = !super::ext::crc32c_raw(!0, sb.get(0x20..).unwrap_or(&[]));
        if stored != computed {
            info.warnings.push(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
    }
    if g64(0x60) != 0 {
        info.features.push("log_tree".into());
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
