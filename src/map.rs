//! The whole-image map: which bytes of a disk image matter, decided from a [`Scan`].
//!
//! This module is the skip rule and nothing else: it reads no bytes and probes nothing (the
//! filesystems' own maps come with the scan), so every command that leaves blocks out (bmap,
//! backup, flash) applies the same rule to the same facts. It follows the rule (`spec/safety.md`) exactly: the space before the first partition
//! (MBR, GPT, bootloaders such as U-Boot at sector 16), the gaps between partitions (EBRs live
//! there), the GPT backup, and every partition's used blocks are kept; only the space past the
//! last partition and the blocks a partition's own filesystem declares free are left out.

use serde::Serialize;

use crate::extent::ExtentMap;
use crate::fs;
use crate::layout::types::MBR_GPT_PROTECTIVE;
use crate::layout::TableKind;
use crate::scan::Scan;

/// How much of one partition (or the whole-disk filesystem) is used.
#[derive(Clone, Debug, Serialize)]
pub struct PartUsage {
    /// Partition number (0 for a whole-disk filesystem).
    pub index: u32,
    /// First byte in the image.
    pub(crate) start: u64,
    /// Length in bytes (clipped to the image).
    pub size: u64,
    /// Filesystem type, if one was recognised.
    pub(crate) fs_type: Option<fs::FsType>,
    /// Bytes the map keeps for it.
    pub used: u64,
    /// True when `used` comes from the filesystem's allocation metadata.
    pub from_fs: bool,
    /// Of `used`, the bytes past the filesystem's declared end (kept: nothing says they are
    /// free, but they are not the filesystem's use either).
    pub beyond_fs: u64,
    /// How the filesystem's allocation map was checked against its file metadata, and what
    /// that added back; null when it was not (see `spec/safety.md` for which are).
    pub cross_check: Option<fs::CrossCheck>,
    /// Metadata bytes left out of `used` because no one reads them as they are (ext4 with
    /// checksummed group descriptors: inode-table blocks no inode can occupy, reserved
    /// descriptor copies, bitmaps of uninitialised groups; 0 under
    /// [`MapRules::whole_metadata`]).
    pub metadata_left_out: u64,
    /// Of `metadata_left_out`, the inode-table bytes.
    pub inode_tables_left_out: u64,
}

/// Choices a user may make about the skip rule. The default is the tightest map the rule
/// allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRules {
    /// Keep every metadata block the allocation maps mark in use, as partclone and e2image
    /// do, rather than leave out the ext4 blocks no one reads as they are (`spec/safety.md`,
    /// *Tight ext4 metadata*).
    pub whole_metadata: bool,
}

/// The bytes of an image that matter.
#[derive(Clone, Debug, Serialize)]
pub struct ImageMap {
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Byte ranges to keep, sorted and disjoint, within `[0, image_size)`. Not serialised
    /// (it can hold thousands of ranges); `mapped` carries the total.
    #[serde(skip)]
    pub used: ExtentMap,
    /// Bytes kept (the total of `used`).
    pub mapped: u64,
    /// Per partition (or whole-disk filesystem) totals.
    pub parts: Vec<PartUsage>,
    /// Why more was kept than might be necessary.
    pub(crate) warnings: Vec<String>,
}

/// Applies the skip rule to a scanned image; `None` when its contents were not decoded (then
/// nothing is known about which bytes matter).
pub fn image_map(scan: &Scan) -> Option<ImageMap> {
    image_map_with(scan, MapRules::default())
}

/// [`image_map`] with the user's choices.
pub fn image_map_with(scan: &Scan, rules: MapRules) -> Option<ImageMap> {
    if !scan.decoded {
        return None;
    }
    let size = scan.image_size;
    let mut used = ExtentMap::new();
    let mut parts = Vec::new();
    let mut warnings = Vec::new();

    let mut add_fs =
        |start: u64, len: u64, index: u32, info: Option<&fs::FsInfo>, known: Option<&fs::Usage>| {
            let len = len.min(size.saturating_sub(start));
            if len == 0 {
                return;
            }
            let mut u = match (info, known) {
                (Some(_), Some(u)) => u.clone(),
                _ => fs::Usage::everything(len, "no filesystem recognised; every block is kept"),
            };
            if rules.whole_metadata {
                u.used = u.used.union(&u.unread_metadata);
                u.unread_metadata = ExtentMap::new();
                u.unread_inode_tables = 0;
            }
            let what = if index == 0 {
                "whole image".to_string()
            } else {
                format!("partition {index}")
            };
            for w in &u.warnings {
                // "No filesystem" on an empty slot is expected, not news.
                if info.is_some() {
                    warnings.push(format!("{what}: {w}"));
                }
            }
            let total = u.used.total();
            used = used.union(&u.used.shifted(start));
            parts.push(PartUsage {
                index,
                start,
                size: len,
                fs_type: info.map(|f| f.fs_type),
                used: total,
                from_fs: u.from_fs,
                beyond_fs: u.beyond_fs,
                cross_check: u.cross_check.clone(),
                metadata_left_out: u.unread_metadata.total(),
                inode_tables_left_out: u.unread_inode_tables,
            });
        };

    let layout = &scan.layout;
    let whole = scan.whole_disk.as_ref();
    let ss = u64::from(layout.sector_size);
    let n_data = layout.data_partitions().count();
    let whole_story = layout.table == TableKind::None || n_data == 0;

    if whole_story {
        // No table, or one that lists no partition: a filesystem spanning the image maps it
        // (its own map keeps its boot block, where an MBR would sit); nothing else is known.
        add_fs(0, size, 0, whole.map(|w| &w.fs), whole.map(|w| &w.usage));
        if whole.is_none() && layout.table != TableKind::None && layout.unusable.is_none() {
            warnings.push(
                "the partition table lists no partitions and no filesystem spans the disk; \
                 every byte is kept"
                    .into(),
            );
        }
        // The table's own sectors: the MBR, and a GPT's headers and entry arrays.
        if layout.table != TableKind::None {
            used.insert(0, ss.min(size));
        }
        if let Some(g) = layout
            .gpt
            .as_ref()
            .filter(|_| layout.table == TableKind::Gpt)
        {
            let head = g.first_usable_lba.saturating_mul(ss).min(size);
            let tail = g
                .last_usable_lba
                .saturating_add(1)
                .saturating_mul(ss)
                .min(size);
            used.insert(0, head.max(ss.min(size)));
            used.insert(tail, size);
        }
    } else {
        // An isohybrid image's ISO volume spans partitions, and a whole-disk filesystem beside
        // the table owns blocks past them: either is one more owner of its bytes.
        if let Some(w) = whole {
            add_fs(0, size, 0, Some(&w.fs), Some(&w.usage));
        }
        let mut covered = ExtentMap::new();
        let mut region_end = 0u64;
        for v in &scan.volumes {
            let p = &layout.partitions[v.partition];
            let end = p.start.saturating_add(p.size);
            if p.kind.is_protective() {
                continue;
            }
            region_end = region_end.max(end);
            if p.is_container() {
                // The EBRs inside an extended partition are in its gaps, kept below.
                continue;
            }
            covered.insert(p.start, end);
            add_fs(p.start, p.size, p.index, v.fs.as_ref(), v.usage.as_ref());
        }
        // A hybrid MBR's own entries are read by BIOS tools: nothing they cover is "past the
        // last partition".
        if let (TableKind::Gpt, Some(m)) = (layout.table, &layout.mbr) {
            for e in m
                .entries
                .iter()
                .filter(|e| e.type_code != MBR_GPT_PROTECTIVE)
            {
                region_end = region_end.max(e.start.saturating_add(e.size));
            }
        }
        // Everything up to the last partition's end that no partition covers: the MBR/GPT,
        // the bootloader gap, EBRs, gaps between partitions.
        used = used.union(&ExtentMap::single(0, region_end).subtract(&covered));
        if layout.table == TableKind::Gpt {
            let backup_from = layout
                .gpt
                .as_ref()
                .and_then(|g| g.last_usable_lba.checked_add(1))
                .and_then(|l| l.checked_mul(ss))
                .unwrap_or(0);
            used = used.union(&ExtentMap::single(backup_from.min(size), size));
        }
    }
    if let Some(why) = &layout.unusable {
        // A table that is there but cannot be trusted says nothing about what is free.
        warnings.push(format!("{why}: every byte of the image is kept"));
        used = ExtentMap::single(0, size);
    }
    let used = used.clip(size);
    Some(ImageMap {
        image_size: size,
        mapped: used.total(),
        used,
        parts,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::io::{MemSource, ReadAt};
    use crate::scan::scan_source;

    /// An MBR with one partition of unknown content and a gap before and after it.
    #[test]
    fn mbr_gaps_kept_tail_free() {
        let mut img = vec![0u8; 4 << 20];
        img[510] = 0x55;
        img[511] = 0xaa;
        let e = 446;
        img[e + 4] = 0xda; // non-fs data
        img[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[e + 12..e + 16].copy_from_slice(&2048u32.to_le_bytes());
        let src: Arc<dyn ReadAt> = Arc::new(MemSource(img));
        let m = image_map(&scan_source(src, None).unwrap()).unwrap();
        // [0, 1 MiB) gap + partition [1 MiB, 2 MiB) (unknown: all kept); [2 MiB, 4 MiB) free.
        assert_eq!(m.used, ExtentMap::single(0, 2 << 20));
    }
}
