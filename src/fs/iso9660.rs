//! ISO 9660 (ECMA-119) with Joliet, Rock Ridge detection and El Torito boot catalogs.
//!
//! Identity follows libblkid: LABEL is the Primary Volume Descriptor's volume identifier, or the
//! Joliet one when a Joliet SVD exists (Joliet keeps case and non-ASCII characters but only 16
//! of them; when the PVD's 32-byte identifier is the same name in d-characters, its tail is
//! appended). UUID is the PVD modification (else creation) date as `YYYY-MM-DD-HH-MM-SS-CC`.

use super::{BootEntry, FsInfo, FsType};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be16, le16, le32};

/// ISO 9660 sectors are 2048 bytes regardless of the logical block size.
const SECTOR: u64 = 2048;
/// The volume descriptor set starts at sector 16 (the first 32 KiB are the system area).
const VD_START: u64 = 16;
/// Descriptor sets are short in practice (PVD, SVDs, boot record, terminator); this bounds the
/// walk when the terminator is missing.
const MAX_VDS: u64 = 64;
/// A catalog larger than this is not a real boot catalog; caps reads and entries.
const MAX_CATALOG_BYTES: usize = 8 * 2048;
/// Bound on reported boot entries.
const MAX_BOOT_ENTRIES: usize = 64;

/// Recognises an ISO 9660 filesystem in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    let mut pvd: Option<Vec<u8>> = None;
    let mut joliet: Option<Vec<u8>> = None;
    let mut boot_catalog: Option<u32> = None;
    let mut terminated = false;
    let mut warnings = Vec::new();

    for i in 0..MAX_VDS {
        let off = (VD_START + i) * SECTOR;
        let vd = match dev.read_vec(off, SECTOR as usize) {
            Ok(v) => v,
            // A set cut short by the end of the image: use what was found so far.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && pvd.is_some() => break,
            Err(e) => return Err(e.into()),
        };
        if vd.get(1..6) != Some(b"CD001".as_slice()) {
            if i == 0 {
                return Ok(None);
            }
            break;
        }
        match vd[0] {
            0 if vd.get(7..30) == Some(b"EL TORITO SPECIFICATION".as_slice()) => {
                boot_catalog = le32(&vd, 0x47);
            }
            1 if pvd.is_none() => pvd = Some(vd),
            2 if joliet.is_none() && is_joliet(&vd) => joliet = Some(vd),
            255 => {
                terminated = true;
                break;
            }
            _ => {}
        }
    }
    let Some(pvd) = pvd else {
        return Ok(None);
    };
    if !terminated {
        warnings.push("volume descriptor set has no terminator".to_string());
    }

    let mut info = FsInfo {
        ..FsInfo::new(FsType::Iso9660)
    };

    let iso_label = pvd.get(40..72).unwrap_or_default();
    let label = match &joliet {
        Some(j) => joliet_label(j.get(40..72).unwrap_or_default(), iso_label),
        None => crate::util::latin1_trim(iso_label),
    };
    info.label = (!label.is_empty()).then_some(label);
    info.uuid = date_uuid(pvd.get(830..847).unwrap_or_default())
        .or_else(|| date_uuid(pvd.get(813..830).unwrap_or_default()));

    let blocks = le32(&pvd, 80).unwrap_or(0);
    let mut bs = le16(&pvd, 128).unwrap_or(0);
    if be16(&pvd, 130) != Some(bs) {
        warnings.push("logical block size LE/BE copies disagree".to_string());
    }
    if !(512..=32768).contains(&bs) || !bs.is_power_of_two() {
        warnings.push(format!(
            "implausible logical block size {bs}, assuming 2048"
        ));
        bs = 2048;
    }
    info.block_size = Some(u32::from(bs));
    let size = u64::from(blocks) * u64::from(bs);
    info.size = Some(size);
    if size > dev.size() {
        warnings.push(format!(
            "volume claims {size} bytes but only {} are present",
            dev.size()
        ));
    }

    if joliet.is_some() {
        info.version = Some("Joliet Extension".to_string());
        info.features.push("joliet".to_string());
    }
    if has_rock_ridge(dev, &pvd) {
        info.features.push("rock-ridge".to_string());
    }
    if let Some(cat) = boot_catalog {
        info.features.push("el-torito".to_string());
        match boot_entries(dev, cat) {
            Ok(entries) => info.boot_entries = entries,
            Err(w) => warnings.push(w),
        }
    }
    info.warnings = warnings;
    Ok(Some(info))
}

/// A Supplementary VD is Joliet when its escape sequences name UCS-2 level 1, 2 or 3.
fn is_joliet(vd: &[u8]) -> bool {
    matches!(vd.get(88..91), Some(b"%/@") | Some(b"%/C") | Some(b"%/E"))
}

/// Joliet label, extended by the PVD label's tail when the PVD holds the same (longer) name.
///
/// Joliet identifiers are 16 UCS-2 characters; the PVD has 32 bytes. Authoring tools write the
/// same name to both, upper-cased and with `_` for characters outside d-characters in the PVD,
/// so if every Joliet character corresponds to the PVD one the full name is Joliet + PVD tail.
fn joliet_label(j: &[u8], iso: &[u8]) -> String {
    let units: Vec<u16> = j
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let jstr = String::from_utf16_lossy(&units);
    let trimmed = jstr.trim_end_matches([' ', '\0']).to_string();
    if trimmed.is_empty() {
        return crate::util::latin1_trim(iso);
    }
    let corresponds = units.len() == 16
        && !units.contains(&0)
        && units.iter().zip(iso.iter()).all(|(&u, &a)| {
            let ascii_match = u < 0x80 && (u as u8).eq_ignore_ascii_case(&a);
            ascii_match || a == b'_'
        });
    if corresponds && iso.len() > 16 {
        let tail = crate::util::latin1_trim(&iso[16..]);
        if !tail.is_empty() {
            return format!("{jstr}{tail}");
        }
    }
    trimmed
}

/// `YYYY-MM-DD-HH-MM-SS-CC` from an ISO 9660 17-byte date, or `None` when it is unset.
fn date_uuid(d: &[u8]) -> Option<String> {
    let digits = d.get(..16)?;
    if !digits.iter().all(u8::is_ascii_digit) || digits.iter().all(|&c| c == b'0') {
        return None;
    }
    let s = |a: usize, b: usize| std::str::from_utf8(&digits[a..b]).unwrap_or("");
    Some(format!(
        "{}-{}-{}-{}-{}-{}-{}",
        s(0, 4),
        s(4, 6),
        s(6, 8),
        s(8, 10),
        s(10, 12),
        s(12, 14),
        s(14, 16)
    ))
}

/// Looks for SUSP/Rock Ridge entries in the root directory's "." record (and one continuation
/// area, where mkisofs and xorriso put the "ER" entry).
fn has_rock_ridge(dev: &dyn ReadAt, pvd: &[u8]) -> bool {
    let Some(root_lba) = le32(pvd, 156 + 2) else {
        return false;
    };
    let Ok(dir) = dev.read_vec(u64::from(root_lba) * SECTOR, SECTOR as usize) else {
        return false;
    };
    let rec_len = usize::from(dir[0]);
    let name_len = usize::from(*dir.get(32).unwrap_or(&0));
    if rec_len < 34 || rec_len > dir.len() {
        return false;
    }
    // The name is padded to an even length so the system use area starts aligned.
    let su_start = 33 + name_len + usize::from(name_len % 2 == 0);
    let Some(su) = dir.get(su_start..rec_len) else {
        return false;
    };
    if su.get(0..2) != Some(b"SP".as_slice()) || su.get(4..6) != Some(&[0xBE, 0xEF][..]) {
        return false;
    }
    let (found, ce) = scan_susp(su);
    if found {
        return true;
    }
    if let Some((block, off, len)) = ce {
        let len = (len as usize).min(SECTOR as usize);
        let pos = u64::from(block) * SECTOR + u64::from(off);
        if let Ok(area) = dev.read_vec(pos, len) {
            return scan_susp(&area).0;
        }
    }
    false
}

/// Walks SUSP entries: returns whether a Rock Ridge entry was seen and the first continuation.
fn scan_susp(mut su: &[u8]) -> (bool, Option<(u32, u32, u32)>) {
    let mut ce = None;
    for _ in 0..256 {
        if su.len() < 4 {
            break;
        }
        let len = usize::from(su[2]);
        if len < 4 || len > su.len() {
            break;
        }
        match &su[0..2] {
            b"RR" | b"ER" | b"PX" | b"NM" => return (true, ce),
            b"CE" if ce.is_none() => {
                if let (Some(b), Some(o), Some(l)) = (le32(su, 4), le32(su, 12), le32(su, 20)) {
                    ce = Some((b, o, l));
                }
            }
            b"ST" => break,
            _ => {}
        }
        su = &su[len..];
    }
    (false, ce)
}

fn platform_name(id: u8) -> String {
    match id {
        0 => "BIOS".into(),
        1 => "PowerPC".into(),
        2 => "Mac".into(),
        0xEF => "UEFI".into(),
        x => format!("0x{x:02x}"),
    }
}

fn emulation_name(media: u8) -> String {
    match media & 0x0F {
        0 => "no-emulation".into(),
        1 => "1.2M floppy".into(),
        2 => "1.44M floppy".into(),
        3 => "2.88M floppy".into(),
        4 => "hard disk".into(),
        x => format!("unknown ({x})"),
    }
}

fn entry(e: &[u8], platform: u8) -> Option<BootEntry> {
    Some(BootEntry {
        platform: platform_name(platform),
        bootable: *e.first()? == 0x88,
        emulation: emulation_name(*e.get(1)?),
        load_rba: le32(e, 8)?,
        sector_count: le16(e, 6)?,
    })
}

/// Parses the El Torito boot catalog at ISO block `lba`. Errors are warnings for the caller.
fn boot_entries(dev: &dyn ReadAt, lba: u32) -> Result<Vec<BootEntry>, String> {
    let pos = u64::from(lba) * SECTOR;
    let cat = dev
        .read_upto(pos, MAX_CATALOG_BYTES)
        .map_err(|e| format!("El Torito boot catalog at block {lba} unreadable: {e}"))?;
    if cat.len() < 64 {
        return Err(format!(
            "El Torito boot catalog at block {lba} lies outside the image"
        ));
    }
    let val = &cat[..32];
    let sum = val.chunks_exact(2).fold(0u16, |s, c| {
        s.wrapping_add(u16::from_le_bytes([c[0], c[1]]))
    });
    if val[0] != 1 || val[30] != 0x55 || val[31] != 0xAA {
        return Err("El Torito validation entry is missing (no 55 AA key)".into());
    }
    if sum != 0 {
        return Err("El Torito validation entry checksum mismatch".into());
    }
    let mut out = Vec::new();
    if let Some(e) = entry(&cat[32..64], val[1]) {
        out.push(e);
    }
    let mut i = 64;
    let mut last_header = false;
    while i + 32 <= cat.len() && out.len() < MAX_BOOT_ENTRIES && !last_header {
        let h = &cat[i..i + 32];
        if h[0] != 0x90 && h[0] != 0x91 {
            break;
        }
        last_header = h[0] == 0x91;
        let platform = h[1];
        let count = usize::from(le16(h, 2).unwrap_or(0));
        i += 32;
        let mut taken = 0;
        while taken < count && i + 32 <= cat.len() && out.len() < MAX_BOOT_ENTRIES {
            let e = &cat[i..i + 32];
            i += 32;
            // 0x44 marks a selection-criteria extension of the previous entry, not an entry.
            if e[0] == 0x44 {
                continue;
            }
            if let Some(b) = entry(e, platform) {
                out.push(b);
            }
            taken += 1;
        }
    }
    Ok(out)
}

/// The bytes of an ISO 9660 volume that must be kept: `[0, volume space size × logical block
/// size)`. An ISO is mastered front to back, so nothing inside the declared volume is free.
///
/// Every volume descriptor in the set (primary, supplementary such as Joliet, enhanced) also
/// declares a volume space size; the largest is kept, so a hybrid whose descriptors disagree
/// loses nothing.
pub(crate) fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    const FIRST: u64 = 16;
    // Real descriptor sets hold a handful; the bound stops a hostile image from making us read
    // forever.
    const MAX_DESCRIPTORS: u64 = 64;
    let mut end = 0u64;
    let mut found = false;
    for i in 0..MAX_DESCRIPTORS {
        let off = (FIRST + i) * SECTOR;
        let Ok(vd) = dev.read_vec(off, SECTOR as usize) else {
            break;
        };
        if vd.get(1..6) != Some(b"CD001") {
            break;
        }
        let ty = vd[0];
        if ty == 255 {
            break;
        }
        // Primary (1) and supplementary/enhanced (2) descriptors carry the volume geometry.
        if ty == 1 || ty == 2 {
            let blocks = u64::from(le32(&vd, 80).unwrap_or(0));
            let bs = u64::from(le16(&vd, 128).unwrap_or(0));
            let bs = if bs.is_power_of_two() && (512..=SECTOR).contains(&bs) {
                bs
            } else {
                SECTOR
            };
            end = end.max(blocks.saturating_mul(bs));
            found |= ty == 1;
        }
    }
    if !found {
        return Err(crate::Error::corrupt(
            "ISO 9660 volume descriptors",
            "no primary volume descriptor",
        ));
    }
    // The descriptors themselves sit in the first sectors; keep them even if the size is
    // absurdly small.
    let head = (FIRST + MAX_DESCRIPTORS) * SECTOR;
    Ok(super::Usage {
        used: crate::extent::ExtentMap::single(0, end.max(head).min(dev.size())),
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}
