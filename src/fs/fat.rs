//! FAT12/FAT16/FAT32 ("vfat") boot sector probe.
//!
//! FAT has no real magic number, so the BIOS Parameter Block is validated the way `blkid`
//! does (jump or type string, power-of-two sector and cluster sizes, reserved sectors, FAT
//! count, media byte) before anything is believed. The FAT type is decided by the cluster
//! count, as the specification demands, not by the informational type string.
//!
//! The label comes from the volume-label entry in the root directory, which is what DOS,
//! Windows and `blkid` show; the copy in the boot sector is often stale.

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32};

/// Largest cluster counts of each FAT width (per Microsoft's spec, as used by blkid).
const FAT12_MAX: u64 = 0xFF4;
const FAT16_MAX: u64 = 0xFFF4;
const FAT32_MAX: u64 = 0x0FFF_FFF6;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0F;

/// Bound on root-directory clusters followed on FAT32, against loops and huge chains.
const MAX_ROOT_CLUSTERS: usize = 100;
/// Bound on bytes read while looking for the label.
const MAX_ROOT_BYTES: u64 = 4 << 20;

/// Parsed, validated BPB geometry.
struct Geometry {
    sector_size: u32,
    cluster_sectors: u32,
    reserved: u64,
    fats: u64,
    fat_length: u64,
    root_entries: u64,
    total_sectors: u64,
    clusters: u64,
    fat32: bool,
}

impl Geometry {
    fn first_data_sector(&self) -> Option<u64> {
        let root_sectors = (self.root_entries * 32).div_ceil(u64::from(self.sector_size));
        self.reserved
            .checked_add(self.fats.checked_mul(self.fat_length)?)?
            .checked_add(root_sectors)
    }
    fn cluster_offset(&self, c: u64) -> Option<u64> {
        let sec = self.first_data_sector()?.checked_add(
            c.checked_sub(2)?
                .checked_mul(u64::from(self.cluster_sectors))?,
        )?;
        sec.checked_mul(u64::from(self.sector_size))
    }
    fn cluster_bytes(&self) -> u32 {
        self.sector_size * self.cluster_sectors
    }
}

fn has_magic(bs: &[u8]) -> bool {
    let at = |off: usize, m: &[u8]| bs.get(off..off + m.len()) == Some(m);
    at(0x52, b"MSWIN")
        || at(0x52, b"FAT32   ")
        || at(0x36, b"MSDOS")
        || at(0x36, b"FAT16   ")
        || at(0x36, b"FAT12   ")
        || at(0x36, b"FAT     ")
        || matches!(bs.first(), Some(0xEB) | Some(0xE9))
        || at(0x1FE, &[0x55, 0xAA])
}

fn geometry(bs: &[u8]) -> Option<Geometry> {
    let at = |off: usize, m: &[u8]| bs.get(off..off + m.len()) == Some(m);
    // Other filesystems that share the DOS boot sector layout.
    if at(0x36, b"JFS     ") || at(0x36, b"HPFS    ") || at(3, b"NTFS    ") || at(3, b"EXFAT   ") {
        return None;
    }
    let media = *bs.get(0x15)?;
    if !(media >= 0xF8 || media == 0xF0) {
        return None;
    }
    let sector_size = u32::from(le16(bs, 0x0B)?);
    if !sector_size.is_power_of_two() || !(512..=4096).contains(&sector_size) {
        return None;
    }
    let cluster_sectors = u32::from(*bs.get(0x0D)?);
    if !cluster_sectors.is_power_of_two() {
        return None;
    }
    let reserved = u64::from(le16(bs, 0x0E)?);
    let fats = u64::from(*bs.get(0x10)?);
    if reserved == 0 || fats == 0 {
        return None;
    }
    let root_entries = u64::from(le16(bs, 0x11)?);
    let total_sectors = match le16(bs, 0x13)? {
        0 => u64::from(le32(bs, 0x20)?),
        n => u64::from(n),
    };
    let fat16_len = u64::from(le16(bs, 0x16)?);
    let fat32_len = u64::from(le32(bs, 0x24)?);
    let fat32 = fat16_len == 0 && fat32_len != 0;
    let fat_length = if fat16_len != 0 { fat16_len } else { fat32_len };
    if fat_length == 0 {
        return None;
    }
    let mut g = Geometry {
        sector_size,
        cluster_sectors,
        reserved,
        fats,
        fat_length,
        root_entries,
        total_sectors,
        clusters: 0,
        fat32,
    };
    let data = total_sectors.checked_sub(g.first_data_sector()?)?;
    g.clusters = data / u64::from(cluster_sectors);
    let max = if fat32 { FAT32_MAX } else { FAT16_MAX };
    if g.clusters > max {
        return None;
    }
    Some(g)
}

/// Recognises FAT12/16/32 in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_vec(0, 512)?;
    if !has_magic(&bs) {
        return Ok(None);
    }
    let Some(g) = geometry(&bs) else {
        return Ok(None);
    };

    let version = if g.fat32 {
        "FAT32"
    } else if g.clusters > FAT12_MAX {
        "FAT16"
    } else {
        "FAT12"
    };
    // The extended BPB (serial, label) sits at a different offset on FAT32.
    let ebpb = if g.fat32 { 0x40 } else { 0x24 };
    let sig = bs.get(ebpb + 2).copied().unwrap_or(0);
    let mut info = FsInfo {
        fs_type: "vfat",
        version: Some(version.to_string()),
        block_size: Some(g.cluster_bytes()),
        ..Default::default()
    };
    if sig == 0x29 || sig == 0x28 {
        if let Some(s) = bs.get(ebpb + 3..ebpb + 7) {
            info.uuid = Some(format!("{:02X}{:02X}-{:02X}{:02X}", s[3], s[2], s[1], s[0]));
        }
    }
    let boot_label = if sig == 0x29 {
        bs.get(ebpb + 7..ebpb + 18)
    } else {
        None
    };

    let root_label = find_root_label(dev, &g);
    if let Err(e) = &root_label {
        info.warnings.push(format!(
            "could not read the root directory for the label: {e}"
        ));
    }
    // Like blkid (and Windows), only the root-directory entry is the label; the boot sector
    // copy is stale after many relabelling tools and is used only when the root directory
    // could not be read at all.
    info.label = match root_label {
        Ok(l) => l.as_deref().and_then(decode_label),
        Err(_) => boot_label
            .filter(|l| *l != b"NO NAME    ")
            .and_then(decode_label),
    };

    match g.total_sectors.checked_mul(u64::from(g.sector_size)) {
        Some(bytes) => {
            info.declare_size(bytes, dev.size());
        }
        None => info
            .warnings
            .push("total sector count overflows".to_string()),
    }
    Ok(Some(info))
}

/// Scans one directory buffer for a volume-label entry. `Err(())` means the end-of-directory
/// marker was reached, so callers stop following the chain.
fn scan_dir(buf: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    for e in buf.chunks_exact(32) {
        let first = e[0];
        if first == 0 {
            return Err(());
        }
        let attr = e[11];
        if first == 0xE5 || attr & 0x3F == ATTR_LONG_NAME {
            continue;
        }
        if attr & (ATTR_VOLUME_ID | ATTR_DIR) == ATTR_VOLUME_ID {
            // A volume label owns no clusters; an entry that does is damage, not a label.
            if le16(e, 20) != Some(0) || le16(e, 26) != Some(0) {
                continue;
            }
            let mut name = e[0..11].to_vec();
            // 0x05 stands for a leading 0xE5, which would otherwise mean "deleted".
            if name[0] == 0x05 {
                name[0] = 0xE5;
            }
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn find_root_label(dev: &dyn ReadAt, g: &Geometry) -> crate::Result<Option<Vec<u8>>> {
    let ss = u64::from(g.sector_size);
    if !g.fat32 {
        let start = g
            .reserved
            .checked_add(g.fats.saturating_mul(g.fat_length))
            .and_then(|s| s.checked_mul(ss));
        let Some(start) = start else { return Ok(None) };
        let len = (g.root_entries * 32).min(MAX_ROOT_BYTES) as usize;
        let buf = dev.read_upto(start, len)?;
        return Ok(scan_dir(&buf).unwrap_or(None));
    }
    let bs = dev.read_vec(0, 512)?;
    let mut c = u64::from(le32(&bs, 0x2C).unwrap_or(0) & 0x0FFF_FFFF);
    let cbytes = u64::from(g.cluster_bytes());
    let fat_start = g.reserved * ss;
    let mut read = 0u64;
    for _ in 0..MAX_ROOT_CLUSTERS {
        if c < 2 || c > g.clusters + 1 || read >= MAX_ROOT_BYTES {
            break;
        }
        let Some(off) = g.cluster_offset(c) else {
            break;
        };
        let buf = dev.read_upto(off, cbytes as usize)?;
        read += cbytes;
        match scan_dir(&buf) {
            Ok(Some(l)) => return Ok(Some(l)),
            Ok(None) => {}
            Err(()) => break,
        }
        let mut ent = [0u8; 4];
        let Some(pos) = c.checked_mul(4).and_then(|x| x.checked_add(fat_start)) else {
            break;
        };
        dev.read_exact_at(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent) & 0x0FFF_FFFF);
    }
    Ok(None)
}

/// 8-bit label bytes → text. DOS labels are in the OEM codepage; code page 850 (DOS
/// Western Europe) covers what Western formatters write, and ASCII is unchanged.
fn decode_label(raw: &[u8]) -> Option<String> {
    let s: String = raw
        .iter()
        .map(|&b| {
            if b < 0x80 {
                b as char
            } else {
                CP850_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('?')
            }
        })
        .collect();
    let t = s.trim_end_matches([' ', '\0']).to_string();
    (!t.is_empty()).then_some(t)
}

/// Code page 850, bytes 0x80..=0xFF.
const CP850_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅ\
ÉæÆôöòûùÿÖÜø£Ø×ƒ\
áíóúñÑªº¿®¬½¼¡«»\
░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐\
└┴┬├─┼ãÃ╚╔╩╦╠═╬¤\
ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀\
ÓßÔÒõÕµþÞÚÛÙýÝ¯´\
\u{AD}±‗¾¶§÷¸°¨·¹³²■\u{A0}";

/// FAT entries examined per read, per copy (even, so FAT12 entry pairs never straddle reads).
const USED_CHUNK_ENTRIES: u64 = 1 << 20;

/// The bytes of this FAT volume that must be kept: the reserved sectors (boot sector, FSInfo,
/// backup boot sector), every FAT copy, the FAT12/16 root directory, every cluster whose entry
/// is non-zero in any FAT copy (allocated, end-of-chain or bad), and the data-region tail that
/// does not fill a whole cluster.
///
/// Clusters the BPB counts but the FAT has no room for, and entries that lie past the end of
/// the source, are kept: nothing says they are free.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let corrupt = |d: &str| crate::Error::corrupt("FAT boot sector", d.to_string());
    let bs = dev.read_vec(0, 512)?;
    let g = geometry(&bs).ok_or_else(|| corrupt("BIOS parameter block is not valid FAT"))?;
    let ss = u64::from(g.sector_size);
    let cbytes = u64::from(g.cluster_bytes());
    let bits: u64 = if g.fat32 {
        32
    } else if g.clusters > FAT12_MAX {
        16
    } else {
        12
    };
    let data_start = g
        .first_data_sector()
        .and_then(|s| s.checked_mul(ss))
        .ok_or_else(|| corrupt("data region offset overflows"))?;
    let total = g
        .total_sectors
        .checked_mul(ss)
        .ok_or_else(|| corrupt("volume size overflows"))?;
    let fat_bytes = g
        .fat_length
        .checked_mul(ss)
        .ok_or_else(|| corrupt("FAT size overflows"))?;
    let fat_start = g.reserved * ss;

    let mut u = super::Usage {
        from_fs: true,
        ..Default::default()
    };
    // Everything before the data region: boot sectors, FATs, fixed root directory. The
    // root directory relies on its unused entries being zero, so it is kept whole.
    u.used.insert(0, data_start);

    // Entries 0 and 1 are reserved; cluster n has entry n.
    let fat_entries = fat_bytes.saturating_mul(8) / bits;
    let with_entry = g.clusters.min(fat_entries.saturating_sub(2));
    if with_entry < g.clusters {
        u.warnings.push(format!(
            "the FAT has room for {with_entry} clusters but the volume has {}; the rest are kept",
            g.clusters
        ));
    }
    // Clusters whose data lies past the end of the source (a truncated image) are kept by
    // the tail below without looking at their entries; bounding the walk by what exists also
    // keeps a tiny hostile image from claiming billions of clusters to walk.
    let in_source = dev.size().saturating_sub(data_start) / cbytes.max(1);
    let with_entry = with_entry.min(in_source);
    let end_entry = with_entry + 2;
    let mut copies: Vec<Vec<u8>> = Vec::new();
    let mut lo = 0u64;
    while lo < end_entry {
        let hi = lo.saturating_add(USED_CHUNK_ENTRIES).min(end_entry);
        let byte_lo = lo * bits / 8;
        let byte_hi = (hi * bits).div_ceil(8);
        copies.clear();
        for k in 0..g.fats {
            let off = k
                .checked_mul(fat_bytes)
                .and_then(|o| o.checked_add(fat_start))
                .and_then(|o| o.checked_add(byte_lo))
                .ok_or_else(|| corrupt("FAT offset overflows"))?;
            copies.push(dev.read_upto(off, (byte_hi - byte_lo) as usize)?);
        }
        let mut run: Option<(u64, u64)> = None;
        for n in lo.max(2)..hi {
            let rel = (n - lo) as usize;
            // An entry missing from a short read (truncated image) counts as used.
            let busy = copies
                .iter()
                .any(|c| fat_entry(c, bits, rel).is_none_or(|v| v != 0));
            if !busy {
                continue;
            }
            // `n - 2 < clusters`, and the data region fits in the volume, so no overflow.
            let start = data_start + (n - 2) * cbytes;
            run = match run {
                Some((s, e)) if e == start => Some((s, start + cbytes)),
                Some((s, e)) => {
                    u.used.insert(s, e);
                    Some((start, start + cbytes))
                }
                None => Some((start, start + cbytes)),
            };
        }
        if let Some((s, e)) = run {
            u.used.insert(s, e);
        }
        lo = hi;
    }
    // Clusters without a FAT entry, and the sectors after the last whole cluster.
    let tail = data_start + with_entry * cbytes;
    u.used.insert(tail, total.max(tail));
    Ok(u)
}

/// Value of entry `rel` (counted from the start of `buf`, which begins at an even entry) in a
/// FAT of `bits`-wide entries, or `None` if `buf` is too short.
fn fat_entry(buf: &[u8], bits: u64, rel: usize) -> Option<u32> {
    match bits {
        12 => {
            let off = rel.checked_mul(3)? / 2;
            let lo = u32::from(*buf.get(off)?);
            let hi = u32::from(*buf.get(off + 1)?);
            Some(if rel % 2 == 0 {
                lo | (hi & 0x0F) << 8
            } else {
                lo >> 4 | hi << 4
            })
        }
        16 => le16(buf, rel.checked_mul(2)?).map(u32::from),
        // The top four bits of a FAT32 entry are reserved and must be ignored.
        _ => le32(buf, rel.checked_mul(4)?).map(|v| v & 0x0FFF_FFFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp850_table_complete() {
        assert_eq!(CP850_HIGH.chars().count(), 128);
        assert_eq!(decode_label(&[0xE5, 0xE5, b' ']).as_deref(), Some("ÕÕ"));
    }
}
