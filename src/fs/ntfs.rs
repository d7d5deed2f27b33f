//! NTFS boot sector probe, with the label and version read from the `$Volume` MFT record.
//!
//! The boot sector gives geometry and the 64-bit serial (`blkid` prints it as 16 uppercase hex
//! digits). The label lives in MFT record 3 (`$Volume`), attribute `$VOLUME_NAME`; the record is
//! protected by an update sequence array whose fixups must be applied before the attributes can
//! be trusted.

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};

const MFT_RECORD_VOLUME: u64 = 3;
const ATTR_VOLUME_NAME: u32 = 0x60;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_END: u32 = 0xFFFF_FFFF;
/// The update sequence protects the last two bytes of every 512-byte stride, whatever the
/// sector size.
const USA_STRIDE: usize = 512;
/// Largest cluster NTFS allows (Windows 10 1709+).
const MAX_CLUSTER: u64 = 2 << 20;

/// Recognises NTFS in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_vec(0, 512)?;
    if bs.get(3..11) != Some(b"NTFS    ") {
        return Ok(None);
    }
    let b8 = |o: usize| u64::from(bs.get(o).copied().unwrap_or(0));
    let b16 = |o| u64::from(le16(&bs, o).unwrap_or(0));
    let b32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    // Fields that are FAT geometry elsewhere must be zero here; that is how blkid tells an
    // NTFS boot sector from something merely carrying the name.
    if b16(0x0E) != 0
        || b8(0x10) != 0
        || b16(0x11) != 0
        || b16(0x13) != 0
        || b16(0x16) != 0
        || b32(0x20) != 0
    {
        return Ok(None);
    }
    let sector_size = b16(0x0B);
    if !sector_size.is_power_of_two() || !(256..=4096).contains(&sector_size) {
        return Ok(None);
    }
    let spc_raw = b8(0x0D);
    // Values above 128 encode 2^(256 - v) sectors, for clusters beyond 64 KiB.
    let spc = if spc_raw > 128 {
        let shift = 256 - spc_raw;
        if shift > 31 {
            return Ok(None);
        }
        1u64 << shift
    } else {
        spc_raw
    };
    if !spc.is_power_of_two() {
        return Ok(None);
    }
    let cluster = sector_size * spc;
    if cluster > MAX_CLUSTER {
        return Ok(None);
    }
    // Positive: clusters per record; negative: record is 2^-n bytes.
    let cpr = bs.get(0x40).copied().unwrap_or(0) as i8;
    let record_size = if cpr > 0 {
        cluster * cpr as u64
    } else {
        let shift = u32::from(cpr.unsigned_abs());
        if !(9..=20).contains(&shift) {
            return Ok(None);
        }
        1u64 << shift
    };
    if !record_size.is_power_of_two() || !(256..=(1 << 20)).contains(&record_size) {
        return Ok(None);
    }

    let total_sectors = le64(&bs, 0x28).unwrap_or(0);
    let mft_lcn = le64(&bs, 0x30).unwrap_or(0);
    let serial = le64(&bs, 0x48).unwrap_or(0);

    let mut info = FsInfo {
        fs_type: "ntfs",
        block_size: Some(cluster as u32),
        uuid: (serial != 0).then(|| format!("{serial:016X}")),
        ..Default::default()
    };
    match total_sectors.checked_mul(sector_size) {
        Some(bytes) if total_sectors > 0 => {
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
            .push(format!("impossible total sector count {total_sectors}")),
    }

    let rec_off = mft_lcn
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(MFT_RECORD_VOLUME.checked_mul(record_size)?));
    let record = match rec_off {
        Some(off) => dev
            .read_vec(off, record_size as usize)
            .map_err(|e| e.to_string())
            .and_then(|mut r| apply_fixups(&mut r).map(|()| r)),
        None => Err("MFT location overflows".to_string()),
    };
    match record {
        Ok(r) => read_volume_attrs(&r, &mut info),
        Err(e) => info
            .warnings
            .push(format!("cannot read $Volume (MFT record 3): {e}")),
    }
    Ok(Some(info))
}

/// Checks and undoes the update sequence: each 512-byte stride ends with the sequence
/// number, and the real bytes are stored in the array.
fn apply_fixups(r: &mut [u8]) -> Result<(), String> {
    if r.get(0..4) != Some(b"FILE") {
        return Err("record has no FILE signature".into());
    }
    let usa_ofs = usize::from(le16(r, 4).unwrap_or(0));
    let usa_count = usize::from(le16(r, 6).unwrap_or(0));
    if usa_count == 0 || (usa_count - 1) * USA_STRIDE > r.len() {
        return Err(format!(
            "update sequence count {usa_count} does not fit the record"
        ));
    }
    let usn = le16(r, usa_ofs).ok_or("update sequence array outside the record")?;
    for i in 1..usa_count {
        let end = i * USA_STRIDE;
        let fix = le16(r, usa_ofs + 2 * i).ok_or("update sequence array outside the record")?;
        let slot = r.get_mut(end - 2..end).ok_or("fixup outside the record")?;
        if u16::from_le_bytes([slot[0], slot[1]]) != usn {
            return Err(format!(
                "torn write: sector {i} of the record lacks its sequence number"
            ));
        }
        slot.copy_from_slice(&fix.to_le_bytes());
    }
    Ok(())
}

/// Walks the resident attributes of `$Volume` for the label and the NTFS version.
fn read_volume_attrs(r: &[u8], info: &mut FsInfo) {
    let used = (le32(r, 0x18).unwrap_or(0) as usize).min(r.len());
    let mut off = usize::from(le16(r, 0x14).unwrap_or(0));
    // Each attribute is at least 16 bytes, so this bounds the walk even on garbage.
    for _ in 0..r.len() / 16 {
        let Some(ty) = le32(r, off) else { break };
        if ty == ATTR_END {
            break;
        }
        let Some(len) = le32(r, off + 4).map(|l| l as usize) else {
            break;
        };
        if len < 16 || off.checked_add(len).is_none_or(|e| e > used) {
            break;
        }
        let attr = &r[off..off + len];
        let resident = attr.get(8) == Some(&0);
        if resident {
            let vlen = le32(attr, 0x10).unwrap_or(0) as usize;
            let voff = usize::from(le16(attr, 0x14).unwrap_or(0));
            let value = voff.checked_add(vlen).and_then(|e| attr.get(voff..e));
            match (ty, value) {
                (ATTR_VOLUME_NAME, Some(v)) => {
                    let units: Vec<u16> = v
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    let s = String::from_utf16_lossy(&units);
                    if !s.is_empty() {
                        info.label = Some(s);
                    }
                }
                (ATTR_VOLUME_INFORMATION, Some(v)) if v.len() >= 12 => {
                    info.version = Some(format!("{}.{}", v[8], v[9]));
                    if le16(v, 10).unwrap_or(0) & 0x0001 != 0 {
                        info.features.push("dirty".into());
                        info.warnings.push(
                            "volume is marked dirty: it was not cleanly unmounted (run chkdsk)"
                                .into(),
                        );
                    }
                }
                _ => {}
            }
        }
        off += len;
    }
}

/// The bytes of this filesystem that must be kept. (Allocation map not read yet: keeps
/// everything, which is always safe.)
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage::everything(
        dev.size(),
        "allocation map reader not written yet; every block is kept",
    ))
}
