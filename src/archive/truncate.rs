//! `--truncate`: end an image at its last partition.
//!
//! Cards are often imaged whole although the partitions end far earlier (a 32 GB card holding
//! a 4 GB Raspberry Pi OS image). Cutting the image there is free for MBR disks; a GPT disk
//! keeps a backup header and entry array in its last sectors, so the cut image gets a new
//! backup at its new end, and the primary header is updated to point at it (AlternateLBA,
//! LastUsableLBA, CRC), and a protective MBR entry is shrunk to the new disk. The result is
//! clean for `sgdisk -v`. Nothing is guessed: a damaged primary GPT is refused.

use crate::io::{ReadAt, ReadAtExt};
use crate::layout::{gpt, Layout, TableKind};
use crate::util::{le32, le64};

/// How an image is ended at its last partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// New image size in bytes.
    pub new_size: u64,
    /// Bytes to replace in the truncated image: (offset, new bytes), sorted, disjoint.
    pub patches: Vec<(u64, Vec<u8>)>,
    /// What was changed, for the summary.
    pub(crate) notes: Vec<String>,
}

impl Truncation {
    /// Refuses a cut that would drop bytes the image map keeps: only the old GPT backup
    /// (rewritten at the new end) may lie past it. A whole-disk filesystem beside the table,
    /// or a table that cannot be trusted, keeps bytes there, and then nothing is cut.
    pub(crate) fn check_against_map(
        &self,
        layout: &Layout,
        map: &crate::ExtentMap,
        size: u64,
    ) -> crate::Result<()> {
        let mut past = map.subtract(&crate::ExtentMap::single(0, self.new_size));
        if let (TableKind::Gpt, Some(g)) = (layout.table, &layout.gpt) {
            let backup_from = g
                .last_usable_lba
                .saturating_add(1)
                .saturating_mul(u64::from(layout.sector_size));
            past = past.subtract(&crate::ExtentMap::single(backup_from.min(size), size));
        }
        let first = past.iter().next().map(|e| e.start);
        match first {
            None => Ok(()),
            Some(first) => Err(crate::Error::Unsupported(format!(
                "--truncate: {} past the last partition are in use (from byte {first}); nothing is cut",
                crate::util::human_bytes(past.total()),
            ))),
        }
    }
}

/// Works out the truncated size and the table rewrites it needs.
pub fn plan_truncation(src: &dyn ReadAt, layout: &Layout) -> crate::Result<Truncation> {
    let size = src.size();
    if let Some(why) = &layout.unusable {
        return Err(crate::Error::Unsupported(format!(
            "--truncate needs a partition table it can trust ({why})"
        )));
    }
    let end = layout
        .partitions
        .iter()
        .map(|p| p.start.checked_add(p.size))
        .try_fold(0u64, |m, e| e.map(|e| m.max(e)))
        .ok_or_else(|| crate::Error::corrupt("partition table", "partition end overflows"))?;
    if end > size {
        return Err(crate::Error::corrupt(
            "partition table",
            format!("a partition ends at byte {end}, past the image end ({size}); the image is already truncated"),
        ));
    }
    match layout.table {
        TableKind::None => Err(crate::Error::Unsupported(
            "--truncate ends an image at its last partition, and this image has no partition table"
                .into(),
        )),
        TableKind::Gpt => gpt_truncation(src, layout, end),
        _ => {
            if end == 0 {
                return Err(crate::Error::Unsupported(
                    "--truncate: the partition table lists no partitions".into(),
                ));
            }
            if end >= size {
                return Ok(unchanged(size));
            }
            Ok(Truncation {
                new_size: end,
                patches: vec![],
                notes: vec![format!(
                    "truncated at the end of the last partition: {} of {} bytes kept",
                    end, size
                )],
            })
        }
    }
}

fn unchanged(size: u64) -> Truncation {
    Truncation {
        new_size: size,
        patches: vec![],
        notes: vec!["--truncate: the image already ends at its last partition".into()],
    }
}

fn set_crc(header: &mut [u8], header_size: usize) {
    header[16..20].fill(0);
    let crc = crc32fast::hash(&header[..header_size]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}

fn gpt_truncation(src: &dyn ReadAt, layout: &Layout, end: u64) -> crate::Result<Truncation> {
    let size = src.size();
    let ss = layout.sector_size;
    let ssz = u64::from(ss);
    let gpt_info = layout.gpt.as_ref();
    if gpt_info.is_some_and(|g| g.used_backup || !g.primary_ok) {
        return Err(crate::Error::Unsupported(
            "--truncate: the primary GPT is damaged (only the backup is usable); repair the table (e.g. with gdisk) first".into(),
        ));
    }
    let (h, arr) = match gpt::read_copy(src, ss, 1)? {
        Ok(x) => x,
        Err(e) => {
            return Err(crate::Error::Unsupported(format!(
                "--truncate: the primary GPT cannot be used ({e:?}); repair the table first"
            )))
        }
    };
    let arr_sectors = (arr.len() as u64).div_ceil(ssz);
    let primary_arr_end = h
        .entries_lba
        .checked_add(arr_sectors)
        .ok_or_else(|| crate::Error::corrupt("GPT header", "entry array LBA overflows"))?;
    // The usable area must still hold every partition and not shrink below its start.
    let end_lba = end.div_ceil(ssz).max(h.first_usable).max(primary_arr_end);
    let overflow = || crate::Error::corrupt("GPT header", "LBAs out of range");
    let new_last_usable = end_lba.checked_sub(1).ok_or_else(overflow)?;
    let backup_arr_lba = end_lba;
    if backup_arr_lba < 2 {
        // Only a header claiming its usable area starts inside itself gets here.
        return Err(overflow());
    }
    let backup_hdr_lba = backup_arr_lba
        .checked_add(arr_sectors)
        .ok_or_else(overflow)?;
    let new_size = backup_hdr_lba
        .checked_add(1)
        .and_then(|n| n.checked_mul(ssz))
        .ok_or_else(overflow)?;
    if new_size >= size {
        return Ok(unchanged(size));
    }
    let sector1 = src.read_vec(ssz, ss as usize)?;
    let header_size = le32(&sector1, 12).unwrap_or(92) as usize;
    if le64(&sector1, 72) != Some(h.entries_lba) || header_size > sector1.len() {
        return Err(crate::Error::corrupt("GPT header", "changed while reading"));
    }
    let mut patches = Vec::new();
    let mut notes = vec![format!(
        "truncated at the end of the last partition: {new_size} of {size} bytes kept; GPT backup moved to LBA {backup_hdr_lba}"
    )];

    // A protective MBR that spanned the old disk spans the new one.
    if layout
        .mbr
        .as_ref()
        .is_some_and(|m| m.protective && !m.hybrid)
    {
        let mut mbr = src.read_vec(0, 512)?;
        let old_sectors = size / ssz;
        for i in 0..4 {
            let e = 446 + i * 16;
            if mbr[e + 4] == 0xEE && le32(&mbr, e + 8) == Some(1) {
                let len = le32(&mbr, e + 12).unwrap_or(0);
                if u64::from(len) >= old_sectors.saturating_sub(1).min(0xFFFF_FFFF) {
                    let new_len = (new_size / ssz - 1).min(0xFFFF_FFFF) as u32;
                    mbr[e + 12..e + 16].copy_from_slice(&new_len.to_le_bytes());
                    notes.push("protective MBR entry resized to the new disk".into());
                }
            }
        }
        patches.push((0u64, mbr));
    }

    let mut primary = sector1.clone();
    primary[32..40].copy_from_slice(&backup_hdr_lba.to_le_bytes());
    primary[48..56].copy_from_slice(&new_last_usable.to_le_bytes());
    set_crc(&mut primary, header_size);
    patches.push((ssz, primary.clone()));

    let mut backup_arr = arr;
    backup_arr.resize((arr_sectors * ssz) as usize, 0);
    patches.push((backup_arr_lba * ssz, backup_arr));

    let mut backup = primary;
    backup[24..32].copy_from_slice(&backup_hdr_lba.to_le_bytes());
    backup[32..40].copy_from_slice(&1u64.to_le_bytes());
    backup[72..80].copy_from_slice(&backup_arr_lba.to_le_bytes());
    set_crc(&mut backup, header_size);
    patches.push((backup_hdr_lba * ssz, backup));

    Ok(Truncation {
        new_size,
        patches,
        notes,
    })
}
