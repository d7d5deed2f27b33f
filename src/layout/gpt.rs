//! GUID partition tables: primary header at LBA 1, backup header at the last sector, entry
//! arrays, CRC32 checks and the fallback to the backup when the primary is damaged.
//!
//! This is our own parser rather than `gptman`. `gptman` 3.1 reserves
//! `number_of_partition_entries` entries up front (0xFFFFFFFF entries is a multi-GiB
//! allocation that aborts the process), multiplies LBAs and sizes without overflow checks,
//! asserts (panics) when the entry size is not 128 bytes although the spec allows larger
//! entries, and rejects header sizes other than 92. We validate the header and bound the
//! entry array (at most `MAX_ARRAY_BYTES`) before allocating anything, and keep going with
//! warnings where the data still makes sense.

use super::table::{GptInfo, PartKind, Partition};
use super::types::gpt_type_name;
use crate::checksum::crc32;
use crate::io::{ReadAt, ReadAtExt, SizeKnown};
use crate::util::{guid_le, le32, le64, utf16le_z};

/// Header signature at offset 0 of the header sector.
pub(crate) const SIGNATURE: &[u8; 8] = b"EFI PART";

/// Largest entry array we read (count × size). Real tables are 16 KiB; 1 MiB leaves room for
/// odd tools while keeping a hostile header from making us allocate or read much.
pub(crate) const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// Smallest header size the spec allows.
const MIN_HEADER_SIZE: u32 = 92;

/// A GPT header whose CRC and fields have been checked.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    /// Revision field (0x00010000 for 1.0).
    pub(crate) revision: u32,
    /// Where this header says it lives.
    pub(crate) my_lba: u64,
    /// Where this header says the other copy lives.
    pub(crate) alternate_lba: u64,
    /// First usable LBA.
    pub(crate) first_usable: u64,
    /// Last usable LBA.
    pub(crate) last_usable: u64,
    /// Disk GUID bytes (mixed endian as on disk).
    pub(crate) disk_guid: [u8; 16],
    /// LBA of the entry array.
    pub(crate) entries_lba: u64,
    /// Number of entries.
    pub(crate) entry_count: u32,
    /// Size of one entry.
    pub(crate) entry_size: u32,
    /// CRC32 of the entry array.
    pub(crate) entries_crc: u32,
}

/// Why a header copy could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The sector is not in the image at all.
    Missing,
    /// The sector is there but holds no "EFI PART" signature.
    NoSignature,
    /// The signature is there but something is wrong; the text says what.
    Corrupt(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Missing => "missing (past the end of the image)".into(),
            Failure::NoSignature => "missing (no EFI PART signature)".into(),
            Failure::Corrupt(s) => format!("corrupt ({s})"),
        }
    }
}

/// Parses and checks a header sector read from `lba`. Everything is validated here, before
/// the entry array is read, so that no later step allocates on an unchecked number.
pub(crate) fn parse_header(buf: &[u8], ss: u32, lba: u64) -> Result<Header, Failure> {
    if buf.get(0..8) != Some(&SIGNATURE[..]) {
        return Err(Failure::NoSignature);
    }
    let corrupt = |s: String| Err(Failure::Corrupt(s));
    let header_size = le32(buf, 12).unwrap_or(0);
    if header_size < MIN_HEADER_SIZE || header_size > ss || header_size as usize > buf.len() {
        return corrupt(format!("header size {header_size} outside 92..={ss}"));
    }
    let mut h = buf[..header_size as usize].to_vec();
    let stored_crc = le32(&h, 16).unwrap_or(0);
    h[16..20].fill(0);
    let crc = crc32(&h);
    if crc != stored_crc {
        return corrupt(format!(
            "CRC mismatch: stored {stored_crc:08x}, computed {crc:08x}"
        ));
    }
    let get64 = |o| le64(buf, o).unwrap_or(0);
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&buf[56..72]);
    let hdr = Header {
        revision: le32(buf, 8).unwrap_or(0),
        my_lba: get64(24),
        alternate_lba: get64(32),
        first_usable: get64(40),
        last_usable: get64(48),
        disk_guid,
        entries_lba: get64(72),
        entry_count: le32(buf, 80).unwrap_or(0),
        entry_size: le32(buf, 84).unwrap_or(0),
        entries_crc: le32(buf, 88).unwrap_or(0),
    };
    if hdr.my_lba != lba {
        return corrupt(format!(
            "header at LBA {lba} says it lives at LBA {}",
            hdr.my_lba
        ));
    }
    if hdr.entry_size < 128 || hdr.entry_size % 128 != 0 {
        return corrupt(format!(
            "partition entry size {} is not a multiple of 128",
            hdr.entry_size
        ));
    }
    let array = u64::from(hdr.entry_count) * u64::from(hdr.entry_size);
    if array > MAX_ARRAY_BYTES {
        return corrupt(format!(
            "absurd partition entry array: {} entries of {} bytes (limit {MAX_ARRAY_BYTES} bytes)",
            hdr.entry_count, hdr.entry_size
        ));
    }
    if hdr.first_usable > hdr.last_usable {
        return corrupt(format!(
            "first usable LBA {} is after last usable LBA {}",
            hdr.first_usable, hdr.last_usable
        ));
    }
    let array_sectors = array.div_ceil(u64::from(ss));
    let array_end = hdr.entries_lba.checked_add(array_sectors);
    if hdr.entries_lba == lba || array_end.is_none() {
        return corrupt(format!(
            "partition entry array at LBA {} overlaps the header or overflows",
            hdr.entries_lba
        ));
    }
    Ok(hdr)
}

/// Reads the `ss`-byte sector at `lba`, or `None` when it is not (entirely) in the image.
fn read_sector(src: &dyn ReadAt, lba: u64, ss: u32) -> crate::Result<Option<Vec<u8>>> {
    let Some(off) = lba.checked_mul(u64::from(ss)) else {
        return Ok(None);
    };
    let v = src.read_struct_upto(off, ss as usize)?;
    Ok((v.len() == ss as usize).then_some(v))
}

/// Reads and checks the header at `lba` and its entry array.
pub(crate) fn read_copy(
    src: &dyn ReadAt,
    ss: u32,
    lba: u64,
) -> crate::Result<Result<(Header, Vec<u8>), Failure>> {
    let Some(buf) = read_sector(src, lba, ss)? else {
        return Ok(Err(Failure::Missing));
    };
    let h = match parse_header(&buf, ss, lba) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    // Bounded by MAX_ARRAY_BYTES in parse_header.
    let len = h.entry_count as usize * h.entry_size as usize;
    let Some(off) = h.entries_lba.checked_mul(u64::from(ss)) else {
        return Ok(Err(Failure::Corrupt("entry array offset overflows".into())));
    };
    let arr = src.read_struct_upto(off, len)?;
    if arr.len() < len {
        return Ok(Err(Failure::Corrupt(format!(
            "partition entry array at LBA {} lies past the end of the image",
            h.entries_lba
        ))));
    }
    let crc = crc32(&arr);
    if crc != h.entries_crc {
        return Ok(Err(Failure::Corrupt(format!(
            "partition entry array CRC mismatch: stored {:08x}, computed {crc:08x}",
            h.entries_crc
        ))));
    }
    Ok(Ok((h, arr)))
}

/// Result of looking for a GPT with one sector size.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// No GPT signature anywhere we looked.
    Absent,
    /// A GPT is there but neither copy is usable; the text says why.
    Broken(String),
    /// A usable GPT.
    Found(Found),
}

/// A usable GPT with its partitions and the warnings collected while reading it.
#[derive(Debug)]
pub(crate) struct Found {
    /// Header facts.
    pub(crate) info: GptInfo,
    /// Used entries in table order, numbered entry index + 1.
    pub(crate) partitions: Vec<Partition>,
    /// Problems found on the way.
    pub(crate) warnings: Vec<String>,
    /// Entries that make the table untrustworthy as a map of the disk (ending before they
    /// start, outside the usable range, not addressable): a subset of the warnings.
    pub(crate) defects: Vec<String>,
}

/// Looks for a GPT using `ss`-byte sectors. The backup at the end of the image is consulted
/// when the primary is valid (to detect truncation) and, if the primary is damaged or
/// missing, as a replacement; a missing primary is only replaced when `search_backup` (the
/// MBR has a 0xEE entry), so plain MBR images never cost a read at their far end.
pub(crate) fn read_gpt(src: &dyn ReadAt, ss: u32, search_backup: bool) -> crate::Result<Outcome> {
    let total = src.size() / u64::from(ss);
    let last = total.checked_sub(1);
    let mut warnings = Vec::new();
    let primary = read_copy(src, ss, 1)?;
    let (hdr, arr, info) = match primary {
        Ok((h, arr)) => {
            let mut backup_ok = false;
            let mut tried = Vec::new();
            // A stream of hinted size is read in one pass; its end is not reached for a check
            // (see `GptInfo::backup_ok`).
            let check = src.caps().size == SizeKnown::Exact;
            for lba in [Some(h.alternate_lba), last]
                .into_iter()
                .flatten()
                .filter(|_| check)
            {
                if lba <= 1 || tried.contains(&lba) {
                    continue;
                }
                tried.push(lba);
                if let Ok((b, _)) = read_copy(src, ss, lba)? {
                    backup_ok = true;
                    if b.entries_crc != h.entries_crc {
                        warnings.push(format!(
                            "GPT backup at LBA {lba} lists different partitions than the primary; using the primary"
                        ));
                    }
                    break;
                }
            }
            if !backup_ok && check {
                let mut w =
                    "GPT backup header missing or invalid: image truncated or damaged?".to_string();
                if h.alternate_lba >= total {
                    w += &format!(
                        " (the primary says it is at LBA {}, the image has {total} sectors)",
                        h.alternate_lba
                    );
                }
                warnings.push(w);
            }
            let info = info_of(&h, true, backup_ok, false, h.my_lba, h.alternate_lba);
            (h, arr, info)
        }
        Err(pfail) => {
            // A damaged primary always sends us to the backup; a missing one only when the
            // MBR announces a GPT.
            if !search_backup && !matches!(pfail, Failure::Corrupt(_)) {
                return Ok(Outcome::Absent);
            }
            let mut found = None;
            if let Some(lba) = last.filter(|&l| l > 1) {
                if let Ok(b) = read_copy(src, ss, lba)? {
                    found = Some((lba, b));
                }
            }
            let Some((lba, (b, arr))) = found else {
                return Ok(match pfail {
                    Failure::Corrupt(_) => Outcome::Broken(format!(
                        "GPT unusable: primary header {} and no valid backup at the last sector",
                        pfail.describe()
                    )),
                    _ => Outcome::Absent,
                });
            };
            warnings.push(format!(
                "primary GPT header {}; using the backup at LBA {lba}",
                pfail.describe()
            ));
            let info = info_of(&b, false, true, true, b.alternate_lba, lba);
            (b, arr, info)
        }
    };
    if hdr.revision != 0x0001_0000 {
        warnings.push(format!(
            "GPT revision {}.{} (expected 1.0)",
            hdr.revision >> 16,
            hdr.revision & 0xffff
        ));
    }
    if info.backup_ok && hdr.last_usable >= total {
        warnings.push(format!(
            "GPT last usable LBA {} is past the end of the image ({total} sectors): image truncated?",
            hdr.last_usable
        ));
    }
    let mut defects = Vec::new();
    let partitions = entries(&hdr, &arr, ss, &mut defects);
    warnings.extend(defects.iter().cloned());
    Ok(Outcome::Found(Found {
        info,
        partitions,
        warnings,
        defects,
    }))
}

fn info_of(h: &Header, p_ok: bool, b_ok: bool, used_b: bool, p: u64, b: u64) -> GptInfo {
    GptInfo {
        disk_guid: guid_le(&h.disk_guid),
        first_usable_lba: h.first_usable,
        last_usable_lba: h.last_usable,
        primary_lba: p,
        backup_lba: b,
        entry_count: h.entry_count,
        entry_size: h.entry_size,
        primary_ok: p_ok,
        backup_ok: b_ok,
        used_backup: used_b,
    }
}

/// Decodes the used entries of a CRC-checked array; entries that cannot describe a real
/// partition are reported in `defects`.
fn entries(h: &Header, arr: &[u8], ss: u32, defects: &mut Vec<String>) -> Vec<Partition> {
    let mut out = Vec::new();
    for (i, e) in arr.chunks_exact(h.entry_size as usize).enumerate() {
        let index = i as u32 + 1;
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[0..16]);
        if ty == [0u8; 16] {
            continue;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&e[16..32]);
        let first = le64(e, 32).unwrap_or(0);
        let last = le64(e, 40).unwrap_or(0);
        if last < first {
            defects.push(format!(
                "GPT partition {index} ends (LBA {last}) before it starts (LBA {first})"
            ));
            continue;
        }
        if first < h.first_usable || last > h.last_usable {
            defects.push(format!(
                "GPT partition {index} (LBA {first}..={last}) lies outside the usable range {}..={}",
                h.first_usable, h.last_usable
            ));
        }
        let ss = u64::from(ss);
        let (Some(start), Some(size)) = (
            first.checked_mul(ss),
            (last - first)
                .checked_add(1)
                .and_then(|n| n.checked_mul(ss)),
        ) else {
            defects.push(format!(
                "GPT partition {index} (LBA {first}..={last}) is beyond any addressable size"
            ));
            continue;
        };
        let type_guid = guid_le(&ty);
        out.push(Partition {
            index,
            start,
            size,
            type_name: gpt_type_name(&type_guid).to_string(),
            kind: PartKind::Gpt {
                type_guid,
                uuid: guid_le(&uuid),
                name: utf16le_z(&e[56..128]),
                attributes: le64(e, 48).unwrap_or(0),
            },
        });
    }
    out
}
