//! LVM2 physical volume label ("LABELONE" in one of the first four sectors).

use super::info::{FsInfo, FsType};
use crate::checksum::crc32_raw;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le32, le64};

/// LVM's CRC seed; its CRC-32 has no pre/post inversion.
const LVM_CRC_SEED: u32 = 0xf597_a6cf;

/// LVM's CRC-32 variant over `b`.
fn lvm_crc(b: &[u8]) -> u32 {
    crc32_raw(LVM_CRC_SEED, b)
}

/// Recognises an LVM2 physical volume in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    let head = dev.read_struct_upto(0, 4 * 512)?;
    for (sector, label) in head.chunks_exact(512).enumerate() {
        if label.get(0..8) != Some(b"LABELONE".as_slice()) {
            continue;
        }
        // The label records which sector it was written to; a copy elsewhere is stale.
        if le64(label, 8) != Some(sector as u64) {
            continue;
        }
        if label.get(24..32) != Some(b"LVM2 001".as_slice()) {
            continue;
        }
        let mut info = FsInfo {
            version: Some("LVM2 001".into()),
            ..FsInfo::new(FsType::Lvm2Member)
        };
        if le32(label, 16) != Some(lvm_crc(&label[20..])) {
            info.warnings.push("LVM label CRC mismatch".into());
        }
        let off = le32(label, 20).unwrap_or(32) as usize;
        let Some(pvh) = label.get(off..off.saturating_add(40)) else {
            info.warnings.push(format!(
                "pv_header offset {off} lies outside the label sector"
            ));
            return Ok(Some(info));
        };
        let id = &pvh[..32];
        if id.iter().all(u8::is_ascii_graphic) {
            // blkid groups the 32 characters 6-4-4-4-4-4-6.
            let mut s = String::with_capacity(38);
            let mut pos = 0;
            for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
                if i > 0 {
                    s.push('-');
                }
                s.extend(id[pos..pos + n].iter().map(|&c| c as char));
                pos += n;
            }
            info.uuid = Some(s);
        } else {
            info.warnings.push("PV UUID is not printable".into());
        }
        info.size = le64(pvh, 32).filter(|&s| s != 0);
        return Ok(Some(info));
    }
    Ok(None)
}
