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
            info.declare_size(bytes, dev.size());
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

const ENTRY_BITMAP: u8 = 0x81;
const ENTRY_UPCASE: u8 = 0x82;
/// Bitmap bytes read at once (per bitmap).
const BITMAP_CHUNK: u64 = 8 << 20;
/// Bound on root-directory clusters followed while looking for the bitmaps.
const MAX_USED_ROOT_CLUSTERS: u64 = 1 << 16;

/// The bytes of this exFAT volume that must be kept: everything below the cluster heap (main
/// and backup boot regions, the FATs), every cluster set in the Allocation Bitmap (both
/// bitmaps on TexFAT volumes), and whatever follows the last cluster.
///
/// The bitmap, up-case table and root directory must be marked in the bitmap; if they are
/// not, they are kept anyway and a warning says the bitmap is suspect.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let corrupt = |d: String| crate::Error::corrupt("exFAT allocation bitmap", d);
    let bs = dev.read_vec(0, 512)?;
    if bs.get(3..11) != Some(b"EXFAT   ") {
        return Err(corrupt("no exFAT boot sector".into()));
    }
    let g8 = |o: usize| bs.get(o).copied().unwrap_or(0);
    let g32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    let (sector_shift, cluster_shift) = (u32::from(g8(0x6C)), u32::from(g8(0x6D)));
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return Err(corrupt("impossible sector or cluster size".into()));
    }
    let nfats = u64::from(g8(0x6E));
    if nfats != 1 && nfats != 2 {
        return Err(corrupt(format!("{nfats} FATs")));
    }
    let sector = 1u64 << sector_shift;
    let cluster = sector << cluster_shift;
    let vol_bytes = le64(&bs, 0x48)
        .and_then(|n| n.checked_mul(sector))
        .ok_or_else(|| corrupt("volume length overflows".into()))?;
    // TexFAT: VolumeFlags bit 0 says which FAT is active.
    let active = u64::from(le16(&bs, 0x6A).unwrap_or(0) & 1).min(nfats - 1);
    let fat = g32(0x50)
        .checked_add(active * g32(0x54))
        .and_then(|s| s.checked_mul(sector))
        .ok_or_else(|| corrupt("FAT offset overflows".into()))?;
    let heap = g32(0x58) * sector;
    if heap > vol_bytes {
        return Err(corrupt("cluster heap starts past the volume".into()));
    }
    let mut u = super::Usage {
        from_fs: true,
        ..Default::default()
    };
    let mut count = g32(0x5C);
    let fits = (vol_bytes - heap) / cluster;
    if count > fits {
        u.warnings.push(format!(
            "cluster count {count} exceeds the volume ({fits} clusters fit); using {fits}"
        ));
        count = fits;
    }
    let heap_end = heap + count * cluster;
    let g = Geo {
        sector,
        cluster,
        fat_offset: fat / sector,
        heap_offset: heap / sector,
        cluster_count: count,
    };

    // Find the bitmap(s) and up-case table in the root directory.
    let root = root_chain(dev, &g, g32(0x60))?;
    let mut bitmaps: Vec<(u64, u64)> = Vec::new();
    let mut upcase = None;
    'scan: for &c in &root {
        let buf = dev.read_vec(heap + (c - 2) * cluster, cluster as usize)?;
        for e in buf.chunks_exact(32) {
            let first = u64::from(le32(e, 20).unwrap_or(0));
            let len = le64(e, 24).unwrap_or(0);
            match e[0] {
                ENTRY_EOD => break 'scan,
                ENTRY_BITMAP if bitmaps.len() < 2 => bitmaps.push((first, len)),
                ENTRY_UPCASE => upcase = Some((first, len)),
                _ => {}
            }
        }
    }
    if (bitmaps.len() as u64) < nfats {
        return Err(corrupt(format!(
            "{} allocation bitmap entries for {nfats} FATs",
            bitmaps.len()
        )));
    }
    // Bitmaps are contiguous (as the Linux driver reads them); check they lie in the heap.
    let need = count.div_ceil(8);
    let mut have = need;
    for &(first, len) in &bitmaps {
        let clusters = len.div_ceil(cluster);
        if first < 2 || (first - 2).checked_add(clusters).is_none_or(|e| e > count) {
            return Err(corrupt(format!(
                "bitmap of {len} bytes at cluster {first} lies outside the heap"
            )));
        }
        have = have.min(len);
    }
    if have < need {
        u.warnings.push(format!(
            "allocation bitmap has {have} of {need} bytes; the clusters past it are kept"
        ));
    }

    u.used.insert(0, heap);
    let mut cur: Option<(u64, u64)> = None;
    let mut flush = |cur: &mut Option<(u64, u64)>, next: Option<(u64, u64)>| {
        if let Some((s, e)) = std::mem::replace(cur, next) {
            u.used.insert(heap + s * cluster, heap + e * cluster);
        }
    };
    let mut set = |cur: &mut Option<(u64, u64)>, s: u64, e: u64| match cur {
        Some((_, ce)) if *ce == s => *ce = e,
        _ => flush(cur, Some((s, e))),
    };
    let mut lo = 0u64;
    let mut merged = Vec::new();
    while lo < have {
        let n = (have - lo).min(BITMAP_CHUNK);
        merged.clear();
        merged.resize(n as usize, 0u8);
        for &(first, _) in &bitmaps {
            let buf = dev.read_vec(heap + (first - 2) * cluster + lo, n as usize)?;
            merged.iter_mut().zip(&buf).for_each(|(m, b)| *m |= b);
        }
        for (i, &byte) in merged.iter().enumerate() {
            let c = (lo + i as u64) * 8; // index from the first heap cluster
            if byte == 0 {
                continue;
            }
            if byte == 0xFF {
                set(&mut cur, c, (c + 8).min(count));
                continue;
            }
            for bit in 0..8u64 {
                if byte & (1 << bit) != 0 && c + bit < count {
                    set(&mut cur, c + bit, c + bit + 1);
                }
            }
        }
        lo += n;
    }
    flush(&mut cur, None);
    // Clusters the bitmap does not describe, and the space after the heap.
    u.used.insert(
        heap + (have * 8).min(count) * cluster,
        vol_bytes.max(heap_end),
    );

    // The structures the bitmap must mark as allocated.
    let mut must: Vec<(u64, u64)> = bitmaps.iter().map(|&(f, l)| (f, l)).collect();
    if let Some((f, l)) = upcase {
        if f >= 2
            && (f - 2)
                .checked_add(l.div_ceil(cluster))
                .is_some_and(|e| e <= count)
        {
            must.push((f, l));
        }
    }
    must.extend(root.iter().map(|&c| (c, cluster)));
    for (first, len) in must {
        let s = heap + (first - 2) * cluster;
        let e = s + len.div_ceil(cluster) * cluster;
        if u.used.covered(s, e) != e - s {
            u.warnings.push(format!(
                "allocation bitmap leaves metadata at bytes {s}..{e} free; kept anyway"
            ));
            u.used.insert(s, e);
        }
    }
    Ok(u)
}

/// The root directory's clusters, following the FAT from `first`; stops at end-of-chain and
/// fails on a chain that leaves the heap or loops past the bound.
fn root_chain(dev: &dyn ReadAt, g: &Geo, first: u64) -> crate::Result<Vec<u64>> {
    let corrupt = |d: String| crate::Error::corrupt("exFAT root directory", d);
    let mut out = Vec::new();
    let mut c = first;
    let limit = g.cluster_count.min(MAX_USED_ROOT_CLUSTERS);
    loop {
        if c < 2 || c - 2 >= g.cluster_count {
            return Err(corrupt(format!(
                "chain reaches cluster {c}, outside the heap"
            )));
        }
        if out.len() as u64 >= limit {
            return Err(corrupt("chain is longer than the heap (a loop?)".into()));
        }
        out.push(c);
        let pos = c
            .checked_mul(4)
            .and_then(|x| x.checked_add(g.fat_offset.checked_mul(g.sector)?))
            .ok_or_else(|| corrupt("FAT offset overflows".into()))?;
        let mut ent = [0u8; 4];
        dev.read_exact_at(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent));
        if c == 0xFFFF_FFFF {
            return Ok(out);
        }
    }
}
