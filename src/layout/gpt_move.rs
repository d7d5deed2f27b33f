//! Moving a GPT's backup to a new end of the disk: what `backup --truncate` does when it cuts an
//! image at its last partition, and what `flash --gpt-to-end` does when a card is larger than
//! the image. One function, [`move_backup`], serves both.
//!
//! A GPT keeps a backup header in the disk's last sector and a copy of the entry array just
//! before it; the primary header names the backup's LBA (AlternateLBA) and the end of the
//! usable area (LastUsableLBA). When the disk ends elsewhere, the backup and its array are
//! written at the new end, the primary header is pointed at them (with a new header CRC; the
//! entries and their CRC are unchanged), and a protective MBR entry that spanned the old disk
//! is made to span the new one (capped at 0xFFFFFFFF sectors). Nothing is guessed: a damaged
//! primary GPT is refused, and so is an end that would cut into a partition.

use super::gpt::read_copy;
use super::table::{Layout, TableKind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le32, le64};

/// Largest sector count a protective MBR entry can hold.
const MBR_MAX_SECTORS: u64 = 0xFFFF_FFFF;

/// Where the moved backup ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NewEnd {
    /// As early as the partitions allow: right after the last partition (`--truncate`).
    Smallest,
    /// At the last whole sector of a disk of this many bytes (`--gpt-to-end`).
    At(u64),
}

/// A moved backup: the new disk size and the bytes that make the table valid for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Moved {
    /// The new disk size in bytes.
    pub(crate) new_size: u64,
    /// LBA of the new backup header (the disk's last whole sector).
    pub(crate) backup_lba: u64,
    /// The backup was already there (same AlternateLBA and LastUsableLBA): the patches then
    /// only rewrite what the image holds.
    pub(crate) in_place: bool,
    /// A protective MBR entry was resized to the new disk.
    pub(crate) mbr_resized: bool,
    /// Bytes to write: (offset, bytes), sorted and disjoint. The protective MBR (when it
    /// changes), the primary header, the backup entry array and the backup header.
    pub(crate) patches: Vec<(u64, Vec<u8>)>,
}

/// Works out the backup GPT of `src` (whose table is `layout`) moved to `end`, and the
/// patches that put it there. `option` names the command-line option in errors
/// (`--truncate`, `--gpt-to-end`).
///
/// Refuses an image without a GPT, a GPT whose primary copy is damaged (only the backup is
/// usable: repair it first), and an end that leaves no room for every partition and the
/// backup after them.
pub(crate) fn move_backup(
    src: &dyn ReadAt,
    layout: &Layout,
    end: NewEnd,
    option: &str,
) -> crate::Result<Moved> {
    let (TableKind::Gpt, Some(info)) = (layout.table, layout.gpt.as_ref()) else {
        return Err(crate::Error::Format(format!(
            "{option}: the image has no GPT"
        )));
    };
    if info.used_backup || !info.primary_ok {
        return Err(crate::Error::Unsupported(format!(
            "{option}: the primary GPT is damaged (only the backup is usable); repair the table (e.g. with gdisk) first"
        )));
    }
    let ss = layout.sector_size;
    let ssz = u64::from(ss);
    let (h, arr) = match read_copy(src, ss, 1)? {
        Ok(x) => x,
        Err(e) => {
            return Err(crate::Error::Unsupported(format!(
                "{option}: the primary GPT cannot be used ({e:?}); repair the table first"
            )))
        }
    };
    let overflow = || crate::Error::corrupt("GPT header", "LBAs out of range");
    let parts_end = layout.partitions_end()?;
    let arr_sectors = (arr.len() as u64).div_ceil(ssz);
    let primary_arr_end = h
        .entries_lba
        .checked_add(arr_sectors)
        .ok_or_else(|| crate::Error::corrupt("GPT header", "entry array LBA overflows"))?;
    // The usable area must still hold every partition, and at least one sector after the
    // primary's array (a first usable LBA past the last is no table).
    let min_arr_lba = parts_end
        .div_ceil(ssz)
        .max(h.first_usable.checked_add(1).ok_or_else(overflow)?)
        .max(primary_arr_end);
    let backup_arr_lba = match end {
        NewEnd::Smallest => min_arr_lba,
        NewEnd::At(size) => {
            let lba = (size / ssz)
                .checked_sub(1)
                .and_then(|last| last.checked_sub(arr_sectors))
                .filter(|&lba| lba >= min_arr_lba);
            match lba {
                Some(lba) => lba,
                None if size < parts_end => {
                    return Err(crate::Error::Refused {
                        reason: format!(
                            "{option}: the new disk size ({size} bytes) is smaller than the end of the last partition (byte {parts_end})"
                        ),
                    })
                }
                None => {
                    let need = min_arr_lba
                        .checked_add(arr_sectors)
                        .and_then(|n| n.checked_add(1))
                        .and_then(|n| n.checked_mul(ssz))
                        .ok_or_else(overflow)?;
                    return Err(crate::Error::Refused {
                        reason: format!(
                            "{option}: a disk of {size} bytes holds the partitions but not the backup GPT after them ({need} bytes needed)"
                        ),
                    });
                }
            }
        }
    };
    if backup_arr_lba < 2 {
        // Only a header claiming its usable area starts inside itself gets here.
        return Err(overflow());
    }
    let new_last_usable = backup_arr_lba - 1;
    let backup_lba = backup_arr_lba
        .checked_add(arr_sectors)
        .ok_or_else(overflow)?;
    let new_sectors = backup_lba.checked_add(1).ok_or_else(overflow)?;
    let new_size = match end {
        NewEnd::Smallest => new_sectors.checked_mul(ssz).ok_or_else(overflow)?,
        NewEnd::At(size) => size,
    };

    let sector1 = src.read_vec(ssz, ss as usize)?;
    let header_size = le32(&sector1, 12).unwrap_or(92) as usize;
    if le64(&sector1, 72) != Some(h.entries_lba) || header_size < 92 || header_size > sector1.len()
    {
        return Err(crate::Error::corrupt("GPT header", "changed while reading"));
    }
    let mut patches = Vec::new();

    // A protective MBR that spanned the old disk spans the new one.
    let mut mbr_resized = false;
    if layout
        .mbr
        .as_ref()
        .is_some_and(|m| m.protective && !m.hybrid)
    {
        let mut mbr = src.read_vec(0, 512)?;
        let old_sectors = src.size() / ssz;
        let spanned = old_sectors.saturating_sub(1).min(MBR_MAX_SECTORS);
        let new_len = (new_sectors - 1).min(MBR_MAX_SECTORS) as u32;
        for i in 0..4 {
            let e = 446 + i * 16;
            if mbr[e + 4] == 0xEE && le32(&mbr, e + 8) == Some(1) {
                let len = le32(&mbr, e + 12).unwrap_or(0);
                if u64::from(len) >= spanned && len != new_len {
                    mbr[e + 12..e + 16].copy_from_slice(&new_len.to_le_bytes());
                    mbr_resized = true;
                }
            }
        }
        if mbr_resized {
            patches.push((0u64, mbr));
        }
    }

    let mut primary = sector1;
    primary[32..40].copy_from_slice(&backup_lba.to_le_bytes());
    primary[48..56].copy_from_slice(&new_last_usable.to_le_bytes());
    set_crc(&mut primary, header_size);
    patches.push((ssz, primary.clone()));

    let mut backup_arr = arr;
    let arr_len = arr_sectors
        .checked_mul(ssz)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(overflow)?;
    backup_arr.resize(arr_len, 0);
    let at = |lba: u64| lba.checked_mul(ssz).ok_or_else(overflow);
    patches.push((at(backup_arr_lba)?, backup_arr));

    let mut backup = primary;
    backup[24..32].copy_from_slice(&backup_lba.to_le_bytes());
    backup[32..40].copy_from_slice(&1u64.to_le_bytes());
    backup[72..80].copy_from_slice(&backup_arr_lba.to_le_bytes());
    set_crc(&mut backup, header_size);
    patches.push((at(backup_lba)?, backup));

    Ok(Moved {
        new_size,
        backup_lba,
        in_place: h.alternate_lba == backup_lba && h.last_usable == new_last_usable,
        mbr_resized,
        patches,
    })
}

/// Sets a header's CRC32 over its first `header_size` bytes, computed with the field zeroed.
fn set_crc(header: &mut [u8], header_size: usize) {
    header[16..20].fill(0);
    let crc = crc32fast::hash(&header[..header_size]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}
