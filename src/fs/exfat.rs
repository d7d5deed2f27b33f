//! exFAT boot sector probe; the label is read from the root directory.
//!
//! The boot region's checksum (sector 11 repeats a rotate-and-add sum over sectors 0..=10) is
//! verified; a mismatch is reported as a warning because the main boot sector itself already
//! passed every structural check.

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};

const ENTRY_EOD: u8 = 0x00;
const ENTRY_LABEL: u8 = 0x83;
/// Bound on root-directory clusters followed, against loops.
const MAX_ROOT_CLUSTERS: usize = 256;
/// Bound on root-directory bytes scanned.
const MAX_ROOT_BYTES: u64 = 4 << 20;

/// Recognises exFAT in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_vec(0, 512)?;
    if bs.get(3..11) != Some(b"EXFAT   ") {
        return Ok(None);
    }
    // The FAT BPB area must be zero so FAT drivers never mistake exFAT for FAT.
    if bs.get(0x0B..0x40).is_none_or(|z| z.iter().any(|&b| b != 0)) {
        return Ok(None);
    }
    let g8 = |o: usize| bs.get(o).copied().unwrap_or(0);
    let g32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    let sector_shift = u32::from(g8(0x6C));
    let cluster_shift = u32::from(g8(0x6D));
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return Ok(None);
    }
    let nfats = g8(0x6E);
    if nfats != 1 && nfats != 2 {
        return Ok(None);
    }
    let sector = 1u64 << sector_shift;
    let cluster = sector << cluster_shift;
    let volume_sectors = le64(&bs, 0x48).unwrap_or(0);
    let fat_offset = g32(0x50);
    let heap_offset = g32(0x58);
    let cluster_count = g32(0x5C);
    let root_cluster = g32(0x60);
    let serial = le32(&bs, 0x64).unwrap_or(0).to_le_bytes();

    let mut info = FsInfo {
        fs_type: "exfat",
        block_size: Some(cluster as u32),
        version: Some(format!("{}.{}", g8(0x69), g8(0x68))),
        uuid: Some(format!(
            "{:02X}{:02X}-{:02X}{:02X}",
            serial[3], serial[2], serial[1], serial[0]
        )),
        ..Default::default()
    };
    match volume_sectors.checked_mul(sector) {
        Some(bytes) if volume_sectors > 0 => {
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
            .push(format!("impossible volume length {volume_sectors} sectors")),
    }
    if let Some(w) = check_boot_checksum(dev, sector)? {
        info.warnings.push(w);
    }
    if le16(&bs, 0x6A).unwrap_or(0) & 0x0002 != 0 {
        info.features.push("dirty".into());
        info.warnings
            .push("volume is marked dirty: it was not cleanly unmounted".into());
    }

    let geo = Geo {
        sector,
        cluster,
        fat_offset,
        heap_offset,
        cluster_count,
    };
    match find_label(dev, &geo, root_cluster) {
        Ok(l) => info.label = l,
        Err(e) => info.warnings.push(format!(
            "could not read the root directory for the label: {e}"
        )),
    }
    Ok(Some(info))
}

struct Geo {
    sector: u64,
    cluster: u64,
    fat_offset: u64,
    heap_offset: u64,
    cluster_count: u64,
}

/// Verifies the boot region checksum; returns a warning text on mismatch.
fn check_boot_checksum(dev: &dyn ReadAt, sector: u64) -> crate::Result<Option<String>> {
    let len = (sector * 12) as usize;
    let region = dev.read_upto(0, len)?;
    if region.len() < len {
        return Ok(Some("boot region is truncated".into()));
    }
    let body = sector as usize * 11;
    let mut sum: u32 = 0;
    for (i, &b) in region[..body].iter().enumerate() {
        // VolumeFlags and PercentInUse change at run time and are excluded.
        if i == 106 || i == 107 || i == 112 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    let ok = region[body..]
        .chunks_exact(4)
        .all(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == sum);
    Ok((!ok).then(|| "boot region checksum mismatch".to_string()))
}

fn find_label(dev: &dyn ReadAt, g: &Geo, mut c: u64) -> crate::Result<Option<String>> {
    let mut read = 0u64;
    for _ in 0..MAX_ROOT_CLUSTERS {
        if c < 2 || c - 2 >= g.cluster_count || read >= MAX_ROOT_BYTES {
            break;
        }
        let off = (c - 2)
            .checked_mul(g.cluster)
            .and_then(|x| x.checked_add(g.heap_offset.checked_mul(g.sector)?));
        let Some(off) = off else { break };
        let buf = dev.read_upto(off, g.cluster.min(MAX_ROOT_BYTES) as usize)?;
        read += g.cluster;
        for e in buf.chunks_exact(32) {
            match e[0] {
                ENTRY_EOD => return Ok(None),
                ENTRY_LABEL => {
                    let n = usize::from(e[1]).min(11);
                    let units: Vec<u16> = e[2..2 + 2 * n]
                        .chunks_exact(2)
                        .map(|u| u16::from_le_bytes([u[0], u[1]]))
                        .collect();
                    let s = String::from_utf16_lossy(&units);
                    return Ok((!s.is_empty()).then_some(s));
                }
                _ => {}
            }
        }
        let pos = c
            .checked_mul(4)
            .and_then(|x| x.checked_add(g.fat_offset.checked_mul(g.sector)?));
        let Some(pos) = pos else { break };
        let mut ent = [0u8; 4];
        dev.read_exact_at(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent));
    }
    Ok(None)
}

/// The bytes of this filesystem that must be kept. (Allocation map not read yet: keeps
/// everything, which is always safe.)
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage::everything(
        dev.size(),
        "allocation map reader not written yet; every block is kept",
    ))
}
