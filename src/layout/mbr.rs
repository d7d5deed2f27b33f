//! DOS/MBR partition tables: the four primary slots, the EBR chain of logical partitions,
//! protective and hybrid MBRs in front of a GPT, and telling an MBR from a filesystem boot
//! sector (both end in 0x55AA).
//!
//! This is our own small parser rather than `mbrman`. `mbrman` 0.6 adds EBR offsets in `u32`
//! without overflow checks (a hostile link panics in debug builds and wraps in release), and it
//! turns any inconsistency in the EBR chain into an error for the whole table, losing the
//! primaries too. We need the opposite: keep everything that can be read, stop the chain at the
//! first bad link (loops, links outside the extended partition, a hard cap on the number of
//! logicals) and tell the user with a warning.

use std::collections::HashSet;

use super::table::{MbrEntry, MbrInfo, PartKind, Partition};
use super::types::{is_mbr_extended, mbr_type_name, MBR_GPT_PROTECTIVE};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32};

/// Size of the MBR/EBR structure: always the first 512 bytes of a sector, whatever the
/// logical sector size.
pub(crate) const MBR_SIZE: usize = 512;

/// Most logical partitions we follow before giving up on an EBR chain. Linux itself stops
/// long before a real table gets close; a chain this long is damage or an attack.
pub(crate) const MAX_LOGICALS: u32 = 128;

/// Offset of the first partition entry in an MBR/EBR.
const TABLE_OFFSET: usize = 446;

/// One raw 16-byte slot of an MBR or EBR, LBAs relative to whatever the slot is relative to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// Slot number 1-4.
    pub(crate) slot: u32,
    /// Boot indicator byte (0x00 or 0x80 in a valid table).
    pub(crate) boot: u8,
    /// System ID.
    pub(crate) type_code: u8,
    /// Starting LBA.
    pub(crate) start_lba: u32,
    /// Number of sectors.
    pub(crate) sectors: u32,
    /// Any byte of the slot is non-zero.
    pub(crate) nonzero: bool,
}

/// True when the 512-byte sector ends with the 0x55AA boot signature.
pub(crate) fn has_signature(sector: &[u8]) -> bool {
    sector.get(510..512) == Some(&[0x55, 0xaa][..])
}

/// The four slots of an MBR/EBR sector. A short buffer yields empty slots.
pub(crate) fn raw_entries(sector: &[u8]) -> [RawEntry; 4] {
    let mut out = [RawEntry::default(); 4];
    for (i, e) in out.iter_mut().enumerate() {
        let off = TABLE_OFFSET + i * 16;
        e.slot = i as u32 + 1;
        let Some(raw) = sector.get(off..off + 16) else {
            continue;
        };
        e.boot = raw[0];
        e.type_code = raw[4];
        e.start_lba = le32(raw, 8).unwrap_or(0);
        e.sectors = le32(raw, 12).unwrap_or(0);
        e.nonzero = raw.iter().any(|&b| b != 0);
    }
    out
}

/// True when sector 0 looks like the boot sector of a filesystem (FAT, NTFS, exFAT) rather
/// than an MBR: an x86 jump followed by a plausible BIOS parameter block. A whole-disk FAT
/// also ends in 0x55AA, so the signature alone proves nothing.
pub(crate) fn looks_like_vbr(s: &[u8]) -> bool {
    let jump = matches!(
        (s.first(), s.get(2)),
        (Some(0xeb), Some(0x90)) | (Some(0xe9), _)
    );
    if !jump {
        return false;
    }
    let oem = s.get(3..11).unwrap_or(&[]);
    if oem == b"NTFS    " || oem == b"EXFAT   " {
        return true;
    }
    let bps = le16(s, 11).unwrap_or(0);
    let spc = s.get(13).copied().unwrap_or(0);
    let reserved = le16(s, 14).unwrap_or(0);
    let fats = s.get(16).copied().unwrap_or(0);
    let media = s.get(21).copied().unwrap_or(0);
    matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && reserved >= 1
        && (1..=4).contains(&fats)
        && (media == 0xf0 || media >= 0xf8)
}

/// True when the slots could be a real partition table for an image of `total_sectors`:
/// boot flags are 0x00/0x80, at least one slot is used, and every used slot has a size and
/// starts inside the image. Used only to decide whether a boot-sector-looking sector 0 is
/// nevertheless an MBR.
pub(crate) fn entries_sane(entries: &[RawEntry; 4], total_sectors: u64) -> bool {
    let flags_ok = entries.iter().all(|e| e.boot == 0 || e.boot == 0x80);
    let used: Vec<_> = entries.iter().filter(|e| e.type_code != 0).collect();
    flags_ok
        && !used.is_empty()
        && used
            .iter()
            .all(|e| e.sectors > 0 && u64::from(e.start_lba) < total_sectors)
}

/// What sector 0 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sector0 {
    /// An MBR (possibly protective/hybrid, possibly with no used slots).
    Mbr,
    /// A filesystem boot sector with no believable partition entries.
    Vbr,
    /// No 0x55AA signature.
    NoSignature,
    /// The signature is there but the boot flags are not 0x00/0x80, which no partitioning
    /// tool writes: like Linux and blkid we do not treat it as a table.
    BadFlags,
}

/// Classifies sector 0 (its first 512 bytes) of an image of `total_sectors`.
pub(crate) fn classify(s0: &[u8], total_sectors: u64) -> Sector0 {
    if !has_signature(s0) {
        return Sector0::NoSignature;
    }
    let entries = raw_entries(s0);
    if looks_like_vbr(s0) && !entries_sane(&entries, total_sectors) {
        return Sector0::Vbr;
    }
    if entries.iter().any(|e| e.boot != 0 && e.boot != 0x80) {
        return Sector0::BadFlags;
    }
    Sector0::Mbr
}

/// Byte offset of `lba` in `ss`-byte sectors; `None` on overflow.
fn bytes(lba: u64, ss: u32) -> Option<u64> {
    lba.checked_mul(u64::from(ss))
}

/// The MBR facts of sector 0, with LBAs converted to bytes using sector size `ss`.
pub(crate) fn mbr_info(s0: &[u8], ss: u32) -> MbrInfo {
    let entries = raw_entries(s0);
    let used: Vec<&RawEntry> = entries.iter().filter(|e| e.type_code != 0).collect();
    let ee = used
        .iter()
        .filter(|e| e.type_code == MBR_GPT_PROTECTIVE)
        .count();
    MbrInfo {
        disk_signature: format!("{:08x}", le32(s0, 440).unwrap_or(0)),
        boot_code: s0.iter().take(440).any(|&b| b != 0),
        active: entries.iter().find(|e| e.boot == 0x80).map(|e| e.slot),
        protective: ee > 0 && used.len() == ee,
        hybrid: ee > 0 && used.len() > ee,
        entries: entries
            .iter()
            .filter(|e| e.nonzero)
            .map(|e| MbrEntry {
                slot: e.slot,
                type_code: e.type_code,
                bootable: e.boot == 0x80,
                start: u64::from(e.start_lba) * u64::from(ss),
                size: u64::from(e.sectors) * u64::from(ss),
            })
            .collect(),
    }
}

fn mbr_partition(
    index: u32,
    e: &RawEntry,
    start_lba: u64,
    ss: u32,
    logical: bool,
) -> Option<Partition> {
    Some(Partition {
        index,
        start: bytes(start_lba, ss)?,
        size: bytes(u64::from(e.sectors), ss)?,
        kind: PartKind::Mbr {
            type_code: e.type_code,
            bootable: e.boot == 0x80,
            logical,
            extended: is_mbr_extended(e.type_code),
        },
        type_name: mbr_type_name(e.type_code).to_string(),
    })
}

/// Partitions of the MBR in sector 0: used primaries in slot order (including extended
/// containers and 0xEE entries), then the logical partitions of every extended partition,
/// numbered from 5 as Linux does. Problems in the EBR chain become warnings.
pub(crate) fn read_partitions(
    src: &dyn ReadAt,
    s0: &[u8],
    ss: u32,
    warnings: &mut Vec<String>,
) -> crate::Result<Vec<Partition>> {
    let entries = raw_entries(s0);
    let mut parts = Vec::new();
    for e in entries.iter().filter(|e| e.type_code != 0) {
        if e.sectors == 0 {
            warnings.push(format!(
                "MBR slot {} (type 0x{:02x}) has size 0; ignored",
                e.slot, e.type_code
            ));
            continue;
        }
        if let Some(p) = mbr_partition(e.slot, e, u64::from(e.start_lba), ss, false) {
            parts.push(p);
        }
    }
    let mut chain = Chain {
        next_index: 5,
        visited: HashSet::new(),
        budget: MAX_LOGICALS,
    };
    for e in entries
        .iter()
        .filter(|e| is_mbr_extended(e.type_code) && e.sectors > 0)
    {
        chain.walk(src, e, ss, &mut parts, warnings)?;
    }
    Ok(parts)
}

/// State shared by every EBR chain of one MBR, so several extended partitions cannot
/// together exceed the cap or revisit each other's EBRs.
struct Chain {
    next_index: u32,
    visited: HashSet<u64>,
    budget: u32,
}

impl Chain {
    fn walk(
        &mut self,
        src: &dyn ReadAt,
        ext: &RawEntry,
        ss: u32,
        parts: &mut Vec<Partition>,
        warnings: &mut Vec<String>,
    ) -> crate::Result<()> {
        let ext_start = u64::from(ext.start_lba);
        let ext_end = ext_start + u64::from(ext.sectors);
        let mut cur = ext_start;
        let mut first = true;
        loop {
            if !self.visited.insert(cur) {
                warnings.push(format!(
                    "EBR chain of extended partition {} loops back to LBA {cur}; stopped there",
                    ext.slot
                ));
                return Ok(());
            }
            if self.budget == 0 {
                warnings.push(format!(
                    "EBR chain longer than {MAX_LOGICALS} entries; stopped following it"
                ));
                return Ok(());
            }
            self.budget -= 1;
            let Some(off) = bytes(cur, ss) else {
                return Ok(());
            };
            let ebr = src.read_struct_upto(off, MBR_SIZE)?;
            if ebr.len() < MBR_SIZE {
                warnings.push(format!(
                    "EBR at LBA {cur} lies past the end of the image: image truncated?"
                ));
                return Ok(());
            }
            if !has_signature(&ebr) {
                // An extended partition that was never given logicals may hold no EBR at all.
                if !(first && ebr.iter().all(|&b| b == 0)) {
                    warnings.push(format!(
                        "EBR at LBA {cur} has no 0x55AA signature; logical partitions stop here"
                    ));
                }
                return Ok(());
            }
            first = false;
            let slots = raw_entries(&ebr);
            if let Some(d) = slots
                .iter()
                .find(|e| e.type_code != 0 && !is_mbr_extended(e.type_code) && e.sectors > 0)
            {
                let start = cur + u64::from(d.start_lba);
                let end = start + u64::from(d.sectors);
                let index = self.next_index;
                self.next_index += 1;
                if start < ext_start || end > ext_end {
                    warnings.push(format!(
                        "logical partition {index} (LBA {start}..{end}) lies outside its extended partition (LBA {ext_start}..{ext_end})"
                    ));
                }
                if let Some(p) = mbr_partition(index, d, start, ss, true) {
                    parts.push(p);
                }
            }
            let Some(link) = slots
                .iter()
                .find(|e| is_mbr_extended(e.type_code) && (e.start_lba != 0 || e.sectors != 0))
            else {
                return Ok(());
            };
            let next = ext_start + u64::from(link.start_lba);
            if link.start_lba == 0 || next >= ext_end {
                warnings.push(format!(
                    "EBR at LBA {cur} links to LBA {next}, outside extended partition {} (LBA {ext_start}..{ext_end}); logical partitions stop here",
                    ext.slot
                ));
                return Ok(());
            }
            cur = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector_with(entries: &[(usize, u8, u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        for &(slot, boot, ty, start, len) in entries {
            let o = TABLE_OFFSET + slot * 16;
            s[o] = boot;
            s[o + 4] = ty;
            s[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
            s[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
        }
        s
    }

    #[test]
    fn protective_and_hybrid() {
        let p = mbr_info(&sector_with(&[(0, 0, 0xee, 1, 100)]), 512);
        assert!(p.protective && !p.hybrid && !p.boot_code);
        let h = mbr_info(
            &sector_with(&[(0, 0, 0xee, 1, 10), (1, 0x80, 0x0c, 20, 10)]),
            512,
        );
        assert!(h.hybrid && !h.protective);
        assert_eq!(h.active, Some(2));
        assert_eq!(h.entries[1].start, 20 * 512);
    }

    #[test]
    fn bad_flags_are_not_a_table() {
        let s = sector_with(&[(0, 0x12, 0x83, 1, 100)]);
        assert_eq!(classify(&s, 1000), Sector0::BadFlags);
        assert_eq!(classify(&[0u8; 100], 1000), Sector0::NoSignature);
    }

    #[test]
    fn ebr_loop_terminates() {
        // Extended at LBA 10; the EBR at 10 links to 20, and the EBR at 20 links to itself.
        let mut img = vec![0u8; 64 * 512];
        let mbr = sector_with(&[(0, 0, 0x05, 10, 50)]);
        img[..512].copy_from_slice(&mbr);
        let e1 = sector_with(&[(0, 0, 0x83, 1, 5), (1, 0, 0x05, 10, 20)]);
        img[10 * 512..11 * 512].copy_from_slice(&e1);
        let e2 = sector_with(&[(0, 0, 0x83, 1, 5), (1, 0, 0x05, 10, 20)]);
        img[20 * 512..21 * 512].copy_from_slice(&e2);
        let src = crate::io::MemSource(img);
        let mut w = vec![];
        let parts = read_partitions(&src, &mbr, 512, &mut w).unwrap();
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(w.iter().any(|w| w.contains("loops back")), "{w:?}");
    }
}
