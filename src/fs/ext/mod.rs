//! ext2/ext3/ext4 (and external ext journal devices, "jbd") superblock probe.
//!
//! The superblock sits at byte 1024. Classification follows `blkid`: a journal device is
//! "jbd"; without a journal and with only the features ext2 understood it is "ext2"; with a
//! journal and only ext3's features it is "ext3"; anything newer is "ext4" ("ext4dev" when
//! the test-filesystem flag is set).

use super::info::{FsInfo, FsType};
use crate::checksum::crc32c_raw;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, uuid_be};

mod bitmap;
mod geometry;
mod group;
mod inode;
mod superblock;
mod tree;
mod warn;
mod xcheck;

use bitmap::{bitmap_runs, hint_free};
use geometry::parse_geometry;
use group::read_descriptors;
use superblock::*;
use warn::Warn;

const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 1024;
const MAGIC: u16 = 0xEF53;

/// Recognises ext2/3/4 or an external ext journal in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_struct(SB_OFFSET, SB_LEN)?;
    if le16(&sb, 0x38) != Some(MAGIC) {
        return Ok(None);
    }
    let g32 = |off| le32(&sb, off).unwrap_or(0);
    let compat = g32(0x5C);
    let incompat = g32(0x60);
    let ro_compat = g32(0x64);
    let s_flags = g32(0x160);

    let log_bs = g32(0x18);
    // A two-byte magic deep in the volume is weak evidence: impossible geometry means
    // "not ext" (as blkid decides), so the remaining probes still get their chance.
    if log_bs > MAX_LOG_BLOCK_SIZE {
        return Ok(None);
    }
    let block_size = 1024u32 << log_bs;

    let fs_type = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        FsType::Jbd
    } else if compat & COMPAT_HAS_JOURNAL == 0
        && ro_compat & !EXT2_RO_COMPAT_SUPP == 0
        && incompat & !EXT2_INCOMPAT_SUPP == 0
    {
        FsType::Ext2
    } else if compat & COMPAT_HAS_JOURNAL != 0
        && ro_compat & !EXT3_RO_COMPAT_SUPP == 0
        && incompat & !EXT3_INCOMPAT_SUPP == 0
    {
        FsType::Ext3
    } else if s_flags & FLAGS_TEST_FILESYS != 0 {
        FsType::Ext4Dev
    } else {
        FsType::Ext4
    };
    let mut info = FsInfo {
        block_size: Some(block_size),
        ..FsInfo::new(fs_type)
    };

    let mut uuid = [0u8; 16];
    if let Some(b) = sb.get(0x68..0x78) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    info.label = label_utf8(sb.get(0x78..0x88).unwrap_or(&[]));
    info.version = Some(format!("{}.{}", g32(0x4C), le16(&sb, 0x3E).unwrap_or(0)));

    // The high word of the block count only exists with the 64bit feature; older
    // superblocks may have garbage there.
    let mut blocks = u64::from(g32(0x04));
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(g32(0x150)) << 32;
    }
    if blocks == 0 {
        return Ok(None);
    }
    match blocks.checked_mul(u64::from(block_size)) {
        Some(bytes) => {
            info.declare_size(bytes, dev.size());
        }
        None => info.warnings.push(format!(
            "block count {blocks} × block size {block_size} overflows: superblock is corrupt"
        )),
    }
    if g32(0x20) == 0 {
        // blocks_per_group == 0 would make every group computation divide by zero later.
        info.warnings
            .push("superblock says 0 blocks per group: corrupt".to_string());
    }

    let feats: &[(u32, u32, &str)] = &[
        (incompat, INCOMPAT_64BIT, "64bit"),
        (ro_compat, RO_COMPAT_METADATA_CSUM, "metadata_csum"),
        (ro_compat, RO_COMPAT_BIGALLOC, "bigalloc"),
        (incompat, INCOMPAT_FLEX_BG, "flex_bg"),
        (incompat, INCOMPAT_META_BG, "meta_bg"),
        (compat, COMPAT_HAS_JOURNAL, "has_journal"),
        (incompat, INCOMPAT_EXTENTS, "extents"),
        (ro_compat, RO_COMPAT_SPARSE_SUPER, "sparse_super"),
        (ro_compat, RO_COMPAT_HUGE_FILE, "huge_file"),
        (compat, COMPAT_RESIZE_INODE, "resize_inode"),
        (compat, COMPAT_DIR_INDEX, "dir_index"),
        (incompat, INCOMPAT_INLINE_DATA, "inline_data"),
        (incompat, INCOMPAT_ENCRYPT, "encrypt"),
        (incompat, INCOMPAT_CASEFOLD, "casefold"),
        (incompat, INCOMPAT_RECOVER, "needs_recovery"),
    ];
    for &(word, bit, name) in feats {
        if word & bit != 0 {
            info.features.push(name.to_string());
        }
    }
    // needs_recovery is listed as a feature; what it costs (the map keeps everything) is
    // said once, by the map.
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        let log_cluster = g32(0x1C);
        if log_cluster < log_bs || log_cluster > log_bs + 16 {
            info.warnings.push(format!(
                "bigalloc cluster size 2^{log_cluster} KiB is impossible for block size {block_size}"
            ));
        }
    }

    if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
        let stored = g32(0x3FC);
        let computed = crc32c_raw(!0, sb.get(..0x3FC).unwrap_or(&[]));
        if stored != computed {
            info.warnings.push(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
    }
    Ok(Some(info))
}

/// Labels are raw bytes up to the first NUL; ext tools write UTF-8, so decode it lossily.
fn label_utf8(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

use crate::extent::ExtentMap;
use crate::util::le64;

/// The bytes of this ext2/3/4 filesystem that must be kept: every block except those the
/// block bitmaps say are free.
///
/// Blocks the format reserves (superblock and descriptor copies, reserved descriptor blocks,
/// bitmaps, inode tables, the MMP block) are kept even where no bitmap marks them, which is
/// what makes groups flagged BLOCK_UNINIT (no bitmap on disk) safe. Whenever a group's
/// descriptor or bitmap is unreadable, misplaced or fails its checksum, the whole group is
/// kept; an unreplayed journal, unknown features or an unclean state keep the whole volume.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let sb = dev.read_struct(SB_OFFSET, SB_LEN)?;
    if le16(&sb, 0x38) != Some(MAGIC) {
        return Err(crate::Error::corrupt(
            "ext superblock",
            "no ext magic at byte 1080",
        ));
    }
    let geo = match parse_geometry(&sb)? {
        Ok(g) => g,
        Err(why) => return Ok(super::info::Usage::everything(dev.size(), why)),
    };
    let mut warn = Warn {
        list: Vec::new(),
        dropped: 0,
    };
    let fs_bytes = geo.blocks * geo.bs;
    if fs_bytes / 1024 > dev.size() {
        // Far beyond any plausible truncation: the block count is garbage, and trusting it
        // would size the per-group tables from it.
        return Err(crate::Error::corrupt(
            "ext superblock",
            format!("{fs_bytes} bytes claimed on a {}-byte volume", dev.size()),
        ));
    }
    // A filesystem larger than its volume was already reported by the probe.

    let descs = read_descriptors(dev, &geo, &mut warn)?;

    // Block ranges that must be kept, in any order; sorted and merged once at the end.
    let mut keep: Vec<(u64, u64)> = Vec::new();
    // Everything before the first group (block 0 with 1 KiB blocks) and the boot area plus
    // primary superblock, whatever the block size.
    keep.push((0, geo.first_data.max(1)));

    // No bitmap or inode table can sit in the boot block, primary superblock or primary
    // descriptor table (the kernel refuses such a descriptor too); a zeroed descriptor
    // field would otherwise make us read the superblock as a bitmap. Under meta_bg with no
    // classic descriptor blocks, group 0 holds one descriptor block and no reserve (the
    // kernel's own overlap check counts it so), whatever s_reserved_gdt_blocks says.
    let head = geo.sb_block(0)
        + 1
        + if geo.meta_bg && geo.old_gdt_blocks == 0 {
            1
        } else {
            geo.old_gdt_blocks + geo.reserved_gdt
        };
    let blocks_in = |s: u64, n: u64| -> Option<(u64, u64)> {
        let e = s.checked_add(n)?;
        (s >= head && e <= geo.blocks && n > 0).then_some((s, e))
    };

    // Inode tables that overlap one another: no tool makes them, the inodes in them cannot
    // be told apart, and reading every group's table would read the same blocks once per
    // group (a hostile image made of thousands of groups sharing one table would be read
    // thousands of times over). Whichever inodes are real may reference any block.
    let mut tables: Vec<(u64, u64, u64)> = (0u64..)
        .zip(descs.iter())
        .filter_map(|(g, d)| {
            let end = d.inode_table.checked_add(geo.itable_blocks)?;
            (d.inode_table >= head && end <= geo.blocks && end > d.inode_table).then_some((
                d.inode_table,
                end,
                g,
            ))
        })
        .collect();
    tables.sort_unstable();
    // Every table that lies where it can be read, as blocks.
    let all_tables = ExtentMap::from_ranges(tables.iter().map(|&(s, e, _)| (s, e)));
    if let Some(w) = tables.windows(2).find(|w| w[1].0 < w[0].1) {
        return Ok(super::info::Usage::everything(
            dev.size(),
            format!(
                "ext: the inode tables of groups {} and {} overlap (blocks {}-{} and {}-{}); \
                 the inodes cannot be trusted to say which blocks are free, so every block \
                 is kept. The filesystem is inconsistent: run e2fsck",
                w[0].2,
                w[1].2,
                w[0].0,
                w[0].1 - 1,
                w[1].0,
                w[1].1 - 1
            ),
        ));
    }

    // Inode tables, kept apart from `keep` until the walk has said which of their blocks no
    // inode can occupy.
    let mut table_keep: Vec<(u64, u64)> = Vec::new();
    // Which groups' bitmaps are to be read, as (bitmap block, group).
    let mut to_read: Vec<(u64, u64)> = Vec::new();
    // Groups without a bitmap on disk (BLOCK_UNINIT).
    let mut uninit: Vec<u64> = Vec::new();
    for (g, d) in (0u64..).zip(descs.iter()) {
        geo.base_meta(g, &mut keep);
        let whole = (geo.group_first(g), geo.group_end(g));
        if !d.ok {
            keep.push(whole);
            continue;
        }
        let mut sane = true;
        for (what, s, n) in [
            ("block bitmap", d.block_bitmap, 1),
            ("inode bitmap", d.inode_bitmap, 1),
            ("inode table", d.inode_table, geo.itable_blocks),
        ] {
            match blocks_in(s, n) {
                Some(r) if what == "inode table" => table_keep.push(r),
                Some(r) => keep.push(r),
                None => {
                    let where_ = if s < head {
                        format!(
                            "over the superblock and group descriptors (blocks 0-{})",
                            head - 1
                        )
                    } else {
                        "outside the filesystem".to_string()
                    };
                    warn.push(format!(
                        "ext group {g}: {what} at block {s} (+{n}) lies {where_}; group kept whole"
                    ));
                    sane = false;
                }
            }
        }
        if geo.exclude_bitmap && d.exclude_bitmap != 0 {
            if let Some(r) = blocks_in(d.exclude_bitmap, 1) {
                keep.push(r);
            }
        }
        if !sane {
            keep.push(whole);
            continue;
        }
        // Without descriptor checksums the kernel ignores BLOCK_UNINIT and reads the bitmap,
        // so must we.
        if geo.lazy_hints() && d.flags & BG_BLOCK_UNINIT != 0 {
            // No bitmap on disk: its used blocks are exactly the reserved ones pushed above
            // (this group's copies plus any group's bitmaps/tables placed here).
            uninit.push(g);
            continue;
        }
        to_read.push((d.block_bitmap, g));
    }

    // A stream being flashed skips what a group's bitmap calls free as it passes (a hint:
    // the flash writes afterwards whatever the final map keeps there). An uninitialised
    // group's free blocks are known now, from the reserved blocks alone.
    if !uninit.is_empty() {
        let reserved = ExtentMap::from_ranges(keep.iter().chain(&table_keep).copied());
        for &g in &uninit {
            let group = ExtentMap::single(geo.group_first(g), geo.group_end(g));
            for r in group.subtract(&reserved).iter() {
                hint_free(dev, geo.bs, r.start, r.end);
            }
        }
    }

    // The MMP block is allocated in the bitmap by mke2fs; keep it regardless in case a
    // tool placed it otherwise.
    if u32_at(&sb, 0x60) & INCOMPAT_MMP != 0 {
        let mmp = le64(&sb, 0x168).unwrap_or(0);
        if let Some(r) = blocks_in(mmp, 1) {
            keep.push(r);
        }
    }

    // Everything kept so far but the inode tables: the format's own metadata, and groups kept
    // whole. No block of it is ever left out as a spare table block.
    let protect = ExtentMap::from_ranges(keep.iter().copied());
    let unread_meta = unread_metadata(&geo, &descs, &sb, head);
    // A stream being flashed skips them as they pass, where the map will likely leave them
    // out (a hint: the final map decides).
    if geo.tight_possible() {
        for r in unread_meta.iter() {
            hint_free(dev, geo.bs, r.start, r.end);
        }
    }

    let nbits = geo.cpg;
    let bm_bytes = nbits.div_ceil(8) as usize;
    let mut on_block_bitmap = |g: u64,
                               data: Option<&[u8]>,
                               keep: &mut Vec<(u64, u64)>,
                               warn: &mut Warn| {
        let whole = (geo.group_first(g), geo.group_end(g));
        let Some(data) = data else {
            warn.push(format!(
                "ext group {g}: block bitmap unreadable; group kept whole"
            ));
            keep.push(whole);
            return;
        };
        let d = &descs[g as usize];
        let bm = &data[..bm_bytes.min(data.len())];
        if let Err((stored, computed)) = geo.check_bitmap(d.bitmap_csum, bm) {
            warn.push(format!(
                "ext group {g}: block bitmap checksum mismatch (stored {stored:#x}, computed {computed:#x}); group kept whole"
            ));
            keep.push(whole);
            return;
        }
        let (first, end) = whole;
        let mut free_from = first;
        bitmap_runs(bm, nbits, |a, b| {
            // Cluster numbers relative to the group → blocks, clipped to the group (the
            // last group's padding bits are set).
            let s = first.saturating_add(a.saturating_mul(geo.ratio)).min(end);
            let e = first.saturating_add(b.saturating_mul(geo.ratio)).min(end);
            if e > s {
                keep.push((s, e));
                hint_free(dev, geo.bs, free_from, s);
                free_from = free_from.max(e);
            }
        });
        hint_free(dev, geo.bs, free_from, end);
    };
    // The block bitmaps are read in the same pass as the inode bitmaps and tables.
    let walked = xcheck::walk(
        dev,
        &sb,
        &geo,
        &descs,
        head,
        &all_tables.union(&unread_meta),
        to_read,
        &mut on_block_bitmap,
        &mut keep,
        &mut warn,
    );

    let bs = geo.bs;
    // Blocks (not bytes) from here on; every pushed block is ≤ blocks.
    // bigalloc allocates whole clusters (first_data is 0 there, so clusters align to block
    // 0): a metadata block keeps its cluster, as the bitmap would.
    let kept = ExtentMap::from_ranges(
        keep.into_iter()
            .chain(table_keep)
            .map(|(s, e)| (s.min(geo.blocks), e.min(geo.blocks))),
    )
    .align_out(geo.ratio)
    .clip(geo.blocks);
    // bigalloc allocates whole clusters: a referenced block keeps its cluster.
    let refs = ExtentMap::from_ranges(walked.refs.iter().map(|&(s, e)| {
        (
            s - s % geo.ratio,
            e.div_ceil(geo.ratio)
                .saturating_mul(geo.ratio)
                .min(geo.blocks),
        )
    }));
    let added = refs.subtract(&kept);
    // Any sign of damage (a warning so far, blocks the inodes use but the bitmaps call free)
    // and none of the filesystem's promises about its tables is taken.
    let doubt = walked.incomplete.is_some() || !warn.list.is_empty() || !added.is_empty();
    let spare = if doubt || !walked.hints_trusted {
        ExtentMap::new()
    } else {
        let tables = spare_table_blocks(&geo, &descs, &walked.spare)
            .subtract(&protect)
            .subtract(&refs);
        // The reserve copies and uninitialised bitmaps, where they overlap nothing else.
        tables.union(&unread_meta.subtract(&refs))
    };
    let spare_tables = spare.intersect(&all_tables);
    // bigalloc: a cluster is left out only when every block of it is spare.
    let spare = align_in(&spare, geo.ratio);
    let kept = kept.subtract(&spare);
    let mut check = super::info::CrossCheck {
        against: format!(
            "its inodes ({} in use, {} tree blocks, {} read)",
            walked.inodes,
            walked.tree_blocks,
            crate::util::human_bytes(walked.meta_bytes.saturating_add(walked.tree_blocks * bs))
        ),
        added: added.total() * bs,
        ..Default::default()
    };
    let to_bytes = |m: &ExtentMap| {
        // blocks × bs was checked not to overflow.
        ExtentMap::from_ranges(m.iter().map(|e| (e.start * bs, e.end * bs)))
    };
    let mut used = if let Some(why) = walked.incomplete {
        warn.push(format!("ext: {why}"));
        check.incomplete = Some(why);
        ExtentMap::single(0, fs_bytes)
    } else {
        if !added.is_empty() {
            let mut groups: Vec<u64> = added
                .iter()
                .flat_map(|e| {
                    let g0 = (e.start - geo.first_data.min(e.start)) / geo.bpg;
                    let g1 = (e.end - 1 - geo.first_data.min(e.end - 1)) / geo.bpg;
                    g0..=g1
                })
                .collect();
            groups.dedup();
            check.added_where = xcheck::groups_text(&groups);
            warn.push(format!(
                "ext: {} blocks referenced by inodes are marked free in the block bitmaps ({}); kept. The filesystem is inconsistent: run e2fsck",
                added.total(),
                check.added_where
            ));
        }
        to_bytes(&kept.union(&added))
    };
    used = used.union(&ExtentMap::single(0, 2048.min(fs_bytes)));
    let unread_metadata = to_bytes(&spare).subtract(&used);
    let unread_inode_tables = to_bytes(&spare_tables).subtract(&used).total();
    Ok(super::info::Usage {
        used,
        unread_metadata,
        unread_inode_tables,
        from_fs: true,
        warnings: warn.finish(),
        cross_check: Some(check),
        ..Default::default()
    })
}

/// The inode-table blocks of the groups in `spare` (`(group, first slot no inode can
/// occupy)`) that hold only such slots.
fn spare_table_blocks(
    geo: &geometry::Geo,
    descs: &[group::Desc],
    spare: &[(u64, u64)],
) -> ExtentMap {
    let ipb = geo.bs / geo.inode_size;
    ExtentMap::from_ranges(spare.iter().filter_map(|&(g, from)| {
        let d = descs.get(usize::try_from(g).ok()?)?;
        let skip = from.div_ceil(ipb);
        (skip < geo.itable_blocks).then_some((
            d.inode_table.checked_add(skip)?,
            d.inode_table.checked_add(geo.itable_blocks)?,
        ))
    }))
}

/// The whole `unit`-aligned parts of `m`.
fn align_in(m: &ExtentMap, unit: u64) -> ExtentMap {
    if unit <= 1 {
        return m.clone();
    }
    ExtentMap::from_ranges(m.iter().filter_map(|e| {
        let s = e.start.checked_next_multiple_of(unit)?;
        let end = e.end - e.end % unit;
        (end > s).then_some((s, end))
    }))
}

/// Metadata blocks that hold nothing until the filesystem writes them whole, as candidates
/// to leave out (with the spare table blocks, under the same trust): the copies of the
/// reserved descriptor blocks ([`geometry::Geo::reserve_copy`]), and the bitmaps of groups
/// flagged uninitialised (the kernel and e2fsck make those in memory, and write them whole
/// when the group is first used). mke2fs itself leaves all of them as the medium held them.
/// A candidate overlapping any other metadata block is not one (it is kept).
fn unread_metadata(geo: &geometry::Geo, descs: &[group::Desc], sb: &[u8], head: u64) -> ExtentMap {
    let mut unread: Vec<(u64, u64)> = Vec::new();
    let mut others: Vec<(u64, u64)> = vec![(0, head)];
    let one = |b: u64| b.checked_add(1).map(|e| (b, e));
    let mut base = Vec::new();
    for (g, d) in (0u64..).zip(descs) {
        base.clear();
        geo.base_meta(g, &mut base);
        let rc = geo.reserve_copy(g);
        for &(s, e) in &base {
            let m = ExtentMap::single(s, e);
            let m = match rc {
                Some((a, b)) => m.subtract(&ExtentMap::single(a, b)),
                None => m,
            };
            others.extend(m.iter().map(|x| (x.start, x.end)));
        }
        unread.extend(rc);
        let uninit_blocks = geo.lazy_hints() && d.ok && d.flags & BG_BLOCK_UNINIT != 0;
        let uninit_inodes = geo.lazy_hints() && d.inodes_uninit(geo.ipg);
        for (bitmap, unused) in [
            (d.block_bitmap, uninit_blocks),
            (d.inode_bitmap, uninit_inodes),
        ] {
            if let Some(r) = one(bitmap) {
                if unused {
                    unread.push(r);
                } else {
                    others.push(r);
                }
            }
        }
        if geo.exclude_bitmap && d.exclude_bitmap != 0 {
            others.extend(one(d.exclude_bitmap));
        }
        if let Some(e) = d.inode_table.checked_add(geo.itable_blocks) {
            others.push((d.inode_table, e));
        }
    }
    if u32_at(sb, 0x60) & INCOMPAT_MMP != 0 {
        others.extend(one(le64(sb, 0x168).unwrap_or(0)));
    }
    let clip = |v: Vec<(u64, u64)>| {
        ExtentMap::from_ranges(
            v.into_iter()
                .map(|(s, e)| (s.min(geo.blocks), e.min(geo.blocks))),
        )
    };
    clip(unread).subtract(&clip(others))
}
