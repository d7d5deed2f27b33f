//! The cross-check of the block bitmaps against the inodes (the bounded-loss rule in
//! `spec/safety.md`): every block an in-use inode references is kept, even where a block
//! bitmap (or a `BLOCK_UNINIT` flag) calls it free.
//!
//! Which inodes are read, and why that is enough:
//! - An inode is in use when e2fsck would treat it so (a non-zero link count), when its bit
//!   is set in an inode bitmap we could verify, or when it is one of the reserved inodes
//!   below `s_first_ino` (bad blocks, root, quota, boot loader, resize, journal, ...).
//! - Per group, the table is read up to a high-water mark: the part the descriptor does not
//!   declare unused (`itable_unused`, trusted only with a valid descriptor checksum) and
//!   everything up to the last bit set in the inode bitmap. A group flagged `INODE_UNINIT`
//!   is skipped only when its descriptor verifies and its free-inode count agrees.
//! - Where the table is known to have been zeroed (`ITABLE_ZEROED`, or no lazy init at all),
//!   the table block holding the first slot past the mark is read as well (the guard): an
//!   in-use inode there means the hints lie, and the whole table of that group is read.
//! - Inodes the superblock names (journal, quota, orphan file, snapshot) and the orphan
//!   chain are always walked.
//!
//! Without descriptor checksums (ext2/ext3 without `uninit_bg`) there are no lazy hints;
//! the inode bitmap bounds the read instead, with the same guard block after it.

use std::collections::HashSet;

use super::bitmap::{hint_free, read_in_order};
use super::geometry::Geo;
use super::group::Desc;
use super::inode::Inode;
use super::superblock::{u32_at, BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use super::tree::Walker;
use super::warn::Warn;

const BG_INODE_ZEROED: u16 = 0x0004;

/// Superblock fields naming inodes that must be walked wherever they live.
const SPECIAL_INODE_FIELDS: [(usize, &str); 6] = [
    (0xE0, "journal"),
    (0x240, "user quota"),
    (0x244, "group quota"),
    (0x26C, "project quota"),
    (0x280, "orphan file"),
    (0x180, "snapshot"),
];
const S_LAST_ORPHAN: usize = 0xE8;
/// Longest orphan chain followed (the kernel's list is short; a loop is caught anyway).
const MAX_ORPHANS: usize = 1 << 16;

/// What the walk found.
pub(super) struct Walked {
    /// Referenced blocks not wholly inside the known map, unsorted runs.
    pub(super) refs: Vec<(u64, u64)>,
    /// In-use inodes walked.
    pub(super) inodes: u64,
    /// Tree blocks (indirect, extent index and leaf) read.
    pub(super) tree_blocks: u64,
    /// Bytes of inode tables and inode bitmaps read.
    pub(super) meta_bytes: u64,
    /// Set when the walk could not finish; the caller keeps the whole volume.
    pub(super) incomplete: Option<String>,
    /// Groups whose inode-table slots from an index on can hold no in-use inode, as the
    /// filesystem itself promises (the tight-table rule of `spec/safety.md`): `(group, first
    /// such slot)`, ascending by group. Empty when any group's hints disagree with its
    /// counters or bitmap: then no group's promise is taken.
    pub(super) spare: Vec<(u64, u64)>,
    /// True when the lazy-init hints can be taken at all: checksummed descriptors, a
    /// journal, every group's hints agreeing with its counters and bitmap.
    pub(super) hints_trusted: bool,
}

/// Which slots of group `g`'s inode table to read.
#[derive(Clone, Copy, Default)]
struct Plan {
    /// In-use inodes at or past this index mean the group's hints lie.
    mark: u64,
    /// Slots from here ...
    from: u64,
    /// ... up to here are read: the first pass reads to `mark` plus the guard block.
    read_to: u64,
    /// From this slot on (the first pass's mark, with `metadata_csum`; never without), a slot
    /// whose inode checksum fails is garbage, not an inode: a table past its high-water mark
    /// holds whatever the medium held (a copy restored without those blocks, lazy init not
    /// run), the kernel refuses such an inode and e2fsck never reads there.
    csum_from: u64,
}

/// What one read of the metadata pass is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Meta {
    /// Group `g`'s block bitmap.
    BlockBitmap(u64),
    /// Group `g`'s inode bitmap.
    InodeBitmap(u64),
    /// A block of an inode table: group × table blocks + index within the table.
    Table(u64),
}

/// Takes group `g`'s block bitmap (`None`: unreadable) into the kept blocks, with warnings.
pub(super) type OnBlockBitmap<'a> =
    dyn FnMut(u64, Option<&[u8]>, &mut Vec<(u64, u64)>, &mut Warn) + 'a;

/// Recorded runs at which the walker is told the bitmaps read so far (and drops the runs
/// inside them) ...
const LEARN_AT: usize = 1 << 16;
/// ... and the most it waits for (well below the walker's own compaction point).
const LEARN_MAX: usize = 1 << 19;

/// The blocks `keep` holds so far, as the walker takes them (clipped to the filesystem,
/// clusters made whole, as `used` makes its final map), built up as `keep` grows.
#[derive(Default)]
struct Folded {
    map: crate::extent::ExtentMap,
    /// Entries of `keep` already in `map`.
    len: usize,
}

impl Folded {
    fn of(&mut self, geo: &Geo, keep: &[(u64, u64)]) -> crate::extent::ExtentMap {
        let new = crate::extent::ExtentMap::from_ranges(
            keep.get(self.len..)
                .unwrap_or_default()
                .iter()
                .map(|&(s, e)| (s.min(geo.blocks), e.min(geo.blocks))),
        )
        .align_out(geo.ratio)
        .clip(geo.blocks);
        self.map = self.map.union(&new);
        self.len = keep.len();
        self.map.clone()
    }
}

/// Reads the block bitmaps `block_bitmaps` (as `(block, group)`), handing each to
/// `on_block_bitmap` (which adds to `keep`, the blocks the bitmaps and the static metadata
/// keep), walks every in-use inode, and returns the blocks they reference outside `keep`.
/// `head` is the first block a bitmap or inode table may occupy (past the primary
/// superblock and descriptors). References into `tables` (every group's inode table and the
/// other metadata that may be left out as unread, as blocks) are always recorded, although the
/// bitmaps mark those blocks in use, so that a block a file claims too is never left out.
///
/// Block bitmaps, inode bitmaps and inode tables are read in one pass in block order, an
/// inode table as soon as its group's inode bitmap has said how much of it to read: with
/// flex_bg each flex group's bitmaps and tables lie together, and a stream (a `.gz` being
/// scanned) is decoded once rather than once for the block bitmaps of every flex group,
/// again for their inode bitmaps and again for their tables.
#[allow(clippy::too_many_arguments)] // the filesystem's parts, each used once
pub(super) fn walk(
    dev: &dyn crate::io::ReadAt,
    sb: &[u8],
    geo: &Geo,
    descs: &[Desc],
    head: u64,
    tables: &crate::extent::ExtentMap,
    block_bitmaps: Vec<(u64, u64)>,
    on_block_bitmap: &mut OnBlockBitmap<'_>,
    keep: &mut Vec<(u64, u64)>,
    warn: &mut Warn,
) -> Walked {
    let ipg = geo.ipg;
    let isz = geo.inode_size;
    let ipb = geo.bs / isz;
    let lazy = geo.lazy_hints();
    let table_ok = |d: &Desc| {
        d.inode_table >= head
            && d.inode_table
                .checked_add(geo.itable_blocks)
                .is_some_and(|e| e <= geo.blocks)
    };
    let mut meta_bytes = 0u64;
    // Blocks as the bitmaps give them; clusters to blocks, clipped, as the caller does.
    // What the bitmaps keep so far, folded in as `keep` grows (only its new entries sorted).
    let mut folded = Folded::default();

    // Inode bitmaps of the groups whose lazy hints do not settle the question alone.
    let skip_uninit = |d: &Desc| lazy && d.inodes_uninit(ipg);
    let inode_bitmaps: Vec<(u64, Meta)> = (0u64..)
        .zip(descs)
        .filter(|(_, d)| table_ok(d) && !skip_uninit(d))
        .filter(|(_, d)| d.inode_bitmap >= head && d.inode_bitmap < geo.blocks)
        .map(|(g, d)| (d.inode_bitmap, Meta::InodeBitmap(g)))
        .collect();
    meta_bytes += inode_bitmaps.len() as u64 * geo.bs;
    let bm_bytes = ipg.div_ceil(8) as usize;
    // The valid inode bitmap of each group that has one read.
    let mut bitmaps: Vec<Option<Vec<u8>>> = vec![None; descs.len()];
    // Past the last set bit of each valid inode bitmap read.
    let mut bitmap_marks: Vec<Option<u64>> = vec![None; descs.len()];

    // Group g's plan, given the highest set bit + 1 of its inode bitmap, or None where the
    // bitmap is not read or not valid.
    let plan_for = |g: u64, bitmap_mark: Option<u64>| -> Plan {
        let d = &descs[g as usize];
        let trusted = lazy && d.ok;
        let mark = if skip_uninit(d) {
            0
        } else {
            let hint = if trusted {
                ipg.saturating_sub(u64::from(d.itable_unused))
            } else if lazy {
                // A descriptor that fails its checksum says nothing reliable.
                ipg
            } else {
                0
            };
            let in_use = ipg.saturating_sub(u64::from(d.free_inodes));
            let counted = if trusted && in_use > hint { ipg } else { hint };
            match bitmap_mark {
                Some(b) => counted.max(b),
                // Without a bitmap to bound it, only a trusted hint does.
                None if trusted => counted,
                None => ipg,
            }
        };
        let zeroed = !lazy || d.flags & BG_INODE_ZEROED != 0;
        let read_to = if zeroed && mark < ipg {
            // The table block holding the first slot past the mark: one read per group.
            (mark / ipb + 1).saturating_mul(ipb).min(ipg)
        } else {
            mark
        };
        Plan {
            mark,
            from: 0,
            read_to,
            csum_from: if geo.inode_csum_seed().is_some() {
                mark
            } else {
                u64::MAX
            },
        }
    };
    // Inode slots of group g from index `from` to `to`, as table block reads.
    let items_for = |g: u64, from: u64, to: u64, out: &mut Vec<(u64, Meta)>| {
        let d = &descs[g as usize];
        for k in from / ipb..to.div_ceil(ipb) {
            out.push((d.inode_table + k, Meta::Table(g * geo.itable_blocks + k)));
        }
    };

    // A stream being flashed skips, as it passes, the table blocks a group's hints and bitmap
    // already call spare (a hint: the final map decides, as for the block bitmaps' free runs).
    let hint_spare = |g: u64, bitmap_mark: Option<u64>| {
        let d = &descs[g as usize];
        if !(geo.tight_possible() && d.ok && table_ok(d)) {
            return;
        }
        let hint = ipg.saturating_sub(u64::from(d.itable_unused));
        let in_use = ipg.saturating_sub(u64::from(d.free_inodes));
        let from = if skip_uninit(d) {
            0
        } else {
            match bitmap_mark {
                Some(b) if b <= hint && in_use <= hint => hint,
                _ => return,
            }
        };
        let from = from.max(geo.first_ino.saturating_sub(1).saturating_sub(g * ipg));
        let skip = from.div_ceil(ipb);
        if skip < geo.itable_blocks {
            hint_free(
                dev,
                geo.bs,
                d.inode_table + skip,
                d.inode_table + geo.itable_blocks,
            );
        }
    };
    let mut plans = vec![Plan::default(); descs.len()];
    let mut lost_groups = Vec::new();
    let mut reads: Vec<(u64, Meta)> = block_bitmaps
        .into_iter()
        .map(|(b, g)| (b, Meta::BlockBitmap(g)))
        .collect();
    let waits_for_bitmap: HashSet<u64> = inode_bitmaps
        .iter()
        .filter_map(|&(_, m)| match m {
            Meta::InodeBitmap(g) => Some(g),
            _ => None,
        })
        .collect();
    reads.extend(inode_bitmaps);
    for (g, d) in (0u64..).zip(descs) {
        if !table_ok(d) {
            lost_groups.push(g);
        } else if !waits_for_bitmap.contains(&g) {
            plans[g as usize] = plan_for(g, None);
            hint_spare(g, None);
            let p = plans[g as usize];
            items_for(g, p.from, p.read_to, &mut reads);
        }
    }

    let cap = 4096 + geo.blocks / 32;
    let mut w = Walker::new(
        dev,
        geo.bs,
        geo.first_data,
        geo.blocks,
        cap,
        folded.of(geo, keep).subtract(tables),
    );
    let mut inodes = 0u64;
    let mut rescan: Vec<u64> = Vec::new();
    let mut learn_at = LEARN_AT;
    read_in_order(dev, geo.bs, reads, |m, data, more| match m {
        Meta::BlockBitmap(g) => on_block_bitmap(g, data, keep, warn),
        Meta::InodeBitmap(g) => {
            let mark = data.and_then(|data| {
                let bm = &data[..bm_bytes.min(data.len())];
                geo.check_bitmap(descs[g as usize].inode_bitmap_csum, bm)
                    .ok()?;
                bitmaps[g as usize] = Some(bm.to_vec());
                let last = bm
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |i| i as u64 * 8 + 8 - u64::from(bm[i].leading_zeros()));
                Some(last.min(ipg))
            });
            bitmap_marks[g as usize] = mark;
            plans[g as usize] = plan_for(g, mark);
            hint_spare(g, mark);
            let p = plans[g as usize];
            let before = more.len();
            items_for(g, p.from, p.read_to, more);
            meta_bytes += (more.len() - before) as u64 * geo.bs;
        }
        Meta::Table(key) => {
            table_block(
                geo,
                key,
                data,
                &plans,
                &bitmaps,
                &mut w,
                &mut inodes,
                &mut rescan,
            );
            if w.recorded() >= learn_at {
                // Inodes read before the bitmaps of the blocks they name: tell the walker
                // what the bitmaps keep so far, so its record stays small.
                w.learn(folded.of(geo, keep).subtract(tables));
                learn_at = (w.recorded() * 2).clamp(LEARN_AT, LEARN_MAX);
            }
        }
    });
    // Every bitmap is read: the tree blocks and the rescan below are walked against all of
    // them, so that only references outside them are recorded, as before the pass.
    w.learn(folded.of(geo, keep).subtract(tables));
    // Table blocks of groups planned up front were counted here, the others as planned.
    meta_bytes += (0u64..)
        .zip(descs)
        .filter(|(g, d)| table_ok(d) && !waits_for_bitmap.contains(g))
        .map(|(g, _)| {
            let p = plans[g as usize];
            p.read_to.div_ceil(ipb) - p.from / ipb
        })
        .sum::<u64>()
        * geo.bs;
    if !lost_groups.is_empty() {
        warn.push(format!(
            "ext: the inode tables of {} lie outside the filesystem; their inodes cannot be read by anyone and were not cross-checked",
            groups_text(&lost_groups)
        ));
    }

    rescan.sort_unstable();
    rescan.dedup();
    if !rescan.is_empty() {
        warn.push(format!(
            "ext: in-use inodes past the point the descriptors and inode bitmaps of {} call unused; their whole inode tables were read",
            groups_text(&rescan)
        ));
        // The rest of those tables, with nothing left to be "past".
        let mut items = Vec::new();
        for &g in &rescan {
            let p = &mut plans[g as usize];
            *p = Plan {
                mark: ipg,
                from: p.read_to,
                read_to: ipg,
                csum_from: p.csum_from,
            };
            items_for(g, p.from, p.read_to, &mut items);
        }
        meta_bytes += items.len() as u64 * geo.bs;
        let mut none_past = Vec::new();
        read_in_order(dev, geo.bs, items, |m, data, _| {
            if let Meta::Table(key) = m {
                table_block(
                    geo,
                    key,
                    data,
                    &plans,
                    &bitmaps,
                    &mut w,
                    &mut inodes,
                    &mut none_past,
                );
            }
        });
    }

    // Inodes the superblock names, and the orphan chain, wherever they live.
    let mut named: Vec<u64> = SPECIAL_INODE_FIELDS
        .iter()
        .map(|&(off, _)| u64::from(u32_at(sb, off)))
        .filter(|&n| n != 0 && n <= geo.inodes)
        .collect();
    let mut orphan = u64::from(u32_at(sb, S_LAST_ORPHAN));
    let mut seen = HashSet::new();
    let mut chain = Vec::new();
    while orphan != 0 && orphan <= geo.inodes && chain.len() < MAX_ORPHANS && seen.insert(orphan) {
        match read_inode(dev, geo, descs, orphan, &table_ok) {
            Some(i) => {
                meta_bytes += geo.bs;
                chain.push((orphan, i));
                orphan = u64::from(i.dtime);
            }
            None => break,
        }
    }
    // Those inside the tables already read were judged there (the reserved ones always
    // walked); only the others need a read of their own.
    named.retain(|&n| {
        let (g, idx) = ((n - 1) / ipg, (n - 1) % ipg);
        !seen.contains(&n) && idx >= plans[g as usize].read_to
    });
    for n in named {
        if let Some(i) = read_inode(dev, geo, descs, n, &table_ok) {
            meta_bytes += geo.bs;
            chain.push((n, i));
        }
    }
    for (n, i) in &chain {
        inodes += 1;
        w.inode(*n, i);
    }

    // Where the tables hold no in-use inode, as the filesystem itself promises: only with
    // checksummed descriptors (the promise the kernel and e2fsck act on), a descriptor that
    // verifies, and an inode bitmap and free count that agree with it; never in a group whose
    // guard block or rescan found an in-use inode past its mark, below the reserved inodes,
    // or at an inode the superblock or the orphan chain names. Only with a journal: without
    // one, the kernel's allocator reads a free slot's deletion time before taking it
    // (`recently_deleted`); until Linux commit bd060afa7cc3 (2026, backported to stable) it
    // did so past the high-water mark too, where a restored copy may hold garbage, and skipped
    // the slot half the time, leaving garbage below the new mark for e2fsck to find.
    let mut spare: Vec<(u64, u64)> = Vec::new();
    // A group whose hints disagree with its own counters or bitmap (e2fsck resets them and
    // reads its whole table) is damage: then no group's hints are taken.
    let mut disagree = false;
    // Per group, the slot just past the last inode the superblock or the orphan chain names.
    let mut named_past: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for (n, _) in &chain {
        let e = named_past.entry((n - 1) / ipg).or_insert(0);
        *e = (*e).max((n - 1) % ipg + 1);
    }
    if geo.tight_possible() {
        for (g, d) in (0u64..).zip(descs) {
            if !d.ok || !table_ok(d) || rescan.binary_search(&g).is_ok() {
                disagree |= !d.ok || rescan.binary_search(&g).is_ok();
                continue;
            }
            let hint = ipg.saturating_sub(u64::from(d.itable_unused));
            let in_use = ipg.saturating_sub(u64::from(d.free_inodes));
            // e2fsck resets these hints too (check_super_block): an unused count above the
            // free count or the group, BLOCK_UNINIT on the last group.
            let last = g + 1 == descs.len() as u64;
            if u64::from(d.itable_unused) > u64::from(d.free_inodes)
                || u64::from(d.itable_unused) > ipg
                || in_use > hint
                || (last && d.flags & BG_BLOCK_UNINIT != 0)
            {
                disagree = true;
                continue;
            }
            let from = if d.flags & BG_INODE_UNINIT != 0 {
                if !skip_uninit(d) {
                    disagree = true;
                    continue;
                }
                0
            } else {
                let Some(bits) = bitmap_marks[g as usize] else {
                    // An inode bitmap that fails its checksum or cannot be read.
                    disagree = true;
                    continue;
                };
                if bits > hint {
                    disagree = true;
                    continue;
                }
                hint
            };
            let reserved = geo.first_ino.saturating_sub(1).saturating_sub(g * ipg);
            let named_here = named_past.get(&g).copied().unwrap_or(0);
            let from = from.max(reserved).max(named_here);
            if from < ipg {
                spare.push((g, from));
            }
        }
    }
    if disagree {
        spare.clear();
    }
    let hints_trusted = geo.tight_possible() && !disagree;

    w.run();
    let incomplete = w.capped.then(|| {
        format!("the inode walk reached its cap of {cap} tree blocks; the whole filesystem is kept")
    });
    if w.invalid > 0 {
        warn.push(format!(
            "ext: inodes reference {} block(s) outside the filesystem (ignored, as e2fsck ignores them): the filesystem is damaged; run e2fsck",
            w.invalid
        ));
    }
    if w.bad_nodes > 0 {
        warn.push(format!(
            "ext: {} block-map or extent-tree block(s) are not valid nodes or unreadable: what they would name is unknown to any reader; the filesystem is damaged, run e2fsck",
            w.bad_nodes
        ));
    }
    let tree_blocks = w.tree_blocks;
    Walked {
        refs: w.into_refs(),
        inodes,
        tree_blocks,
        meta_bytes,
        incomplete,
        spare,
        hints_trusted,
    }
}

/// Walks the in-use inodes of one inode table block (`key`: group × table blocks + index
/// within the table) within its group's plan; a group with an in-use inode past its mark is
/// pushed to `found_past`.
#[allow(clippy::too_many_arguments)] // the walk's state, each used once
fn table_block(
    geo: &Geo,
    key: u64,
    data: Option<&[u8]>,
    plans: &[Plan],
    bitmaps: &[Option<Vec<u8>>],
    w: &mut Walker,
    inodes: &mut u64,
    found_past: &mut Vec<u64>,
) {
    let Some(data) = data else { return };
    let (ipg, ipb) = (geo.ipg, geo.bs / geo.inode_size);
    let (g, k) = (key / geo.itable_blocks, key % geo.itable_blocks);
    let Plan {
        mark,
        from,
        read_to,
        csum_from,
    } = plans[g as usize];
    for (j, raw) in data.chunks_exact(geo.inode_size as usize).enumerate() {
        let idx = k * ipb + j as u64;
        if idx >= read_to {
            break;
        }
        if idx < from {
            continue;
        }
        let ino = g * ipg + idx + 1;
        if ino > geo.inodes {
            break;
        }
        let Some(inode) = Inode::parse(raw, geo.is64) else {
            continue;
        };
        let bit = bitmaps[g as usize].as_ref().is_some_and(|b| {
            b.get((idx / 8) as usize)
                .is_some_and(|x| x >> (idx % 8) & 1 == 1)
        });
        let in_use = ino < geo.first_ino || inode.links != 0 || bit;
        if !in_use {
            continue;
        }
        if idx >= csum_from
            && geo
                .inode_csum_seed()
                .is_some_and(|seed| !Inode::csum_ok(raw, ino, seed))
        {
            continue;
        }
        if idx >= mark && !inode.is_blank() && found_past.last() != Some(&g) {
            found_past.push(g);
        }
        *inodes += 1;
        w.inode(ino, &inode);
    }
}

/// Reads one inode by number, if its group's table is where it can be read.
fn read_inode(
    dev: &dyn crate::io::ReadAt,
    geo: &Geo,
    descs: &[Desc],
    ino: u64,
    table_ok: &dyn Fn(&Desc) -> bool,
) -> Option<Inode> {
    use crate::io::ReadAtExt;
    let (g, idx) = ((ino - 1) / geo.ipg, (ino - 1) % geo.ipg);
    let d = descs.get(g as usize).filter(|d| table_ok(d))?;
    let off = (d.inode_table * geo.bs).checked_add(idx * geo.inode_size)?;
    let raw = dev.read_struct(off, geo.inode_size as usize).ok()?;
    Inode::parse(&raw, geo.is64)
}

/// "group 3", "groups 3, 7, 9", "groups 3, 7, 9 and 12 more".
pub(super) fn groups_text(groups: &[u64]) -> String {
    const SHOWN: usize = 8;
    let list: Vec<String> = groups.iter().take(SHOWN).map(u64::to_string).collect();
    let more = groups.len().saturating_sub(SHOWN);
    let word = if groups.len() == 1 { "group" } else { "groups" };
    if more > 0 {
        format!("{word} {} and {more} more", list.join(", "))
    } else {
        format!("{word} {}", list.join(", "))
    }
}
