//! ext2/ext3/ext4 (and external ext journal devices, "jbd") superblock probe.
//!
//! The superblock sits at byte 1024. Classification follows `blkid`: a journal device is
//! "jbd"; without a journal and with only the features ext2 understood it is "ext2"; with a
//! journal and only ext3's features it is "ext3"; anything newer is "ext4" ("ext4dev" when
//! the test-filesystem flag is set).

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, uuid_be};

const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 1024;
const MAGIC: u16 = 0xEF53;

const COMPAT_HAS_JOURNAL: u32 = 0x0004;
const COMPAT_RESIZE_INODE: u32 = 0x0010;
const COMPAT_DIR_INDEX: u32 = 0x0020;

const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_RECOVER: u32 = 0x0004;
const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const INCOMPAT_META_BG: u32 = 0x0010;
const INCOMPAT_EXTENTS: u32 = 0x0040;
const INCOMPAT_64BIT: u32 = 0x0080;
const INCOMPAT_FLEX_BG: u32 = 0x0200;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_BTREE_DIR: u32 = 0x0004;
const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
const RO_COMPAT_BIGALLOC: u32 = 0x0200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;

/// Features an ext2 driver understands; anything else makes the volume ext3/ext4 to blkid.
const EXT2_RO_COMPAT_SUPP: u32 =
    RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
const EXT2_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const EXT3_RO_COMPAT_SUPP: u32 = EXT2_RO_COMPAT_SUPP;
const EXT3_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

const FLAGS_TEST_FILESYS: u32 = 0x0004;

/// Largest block size ext4 supports (64 KiB, log 6 above 1 KiB).
const MAX_LOG_BLOCK_SIZE: u32 = 6;

/// Recognises ext2/3/4 or an external ext journal in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
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

    let mut info = FsInfo {
        block_size: Some(block_size),
        ..Default::default()
    };

    info.fs_type = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if compat & COMPAT_HAS_JOURNAL == 0
        && ro_compat & !EXT2_RO_COMPAT_SUPP == 0
        && incompat & !EXT2_INCOMPAT_SUPP == 0
    {
        "ext2"
    } else if compat & COMPAT_HAS_JOURNAL != 0
        && ro_compat & !EXT3_RO_COMPAT_SUPP == 0
        && incompat & !EXT3_INCOMPAT_SUPP == 0
    {
        "ext3"
    } else if s_flags & FLAGS_TEST_FILESYS != 0 {
        "ext4dev"
    } else {
        "ext4"
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
    if incompat & INCOMPAT_RECOVER != 0 {
        info.warnings.push(
            "needs_recovery is set: the journal was not replayed, so the block bitmaps may be stale"
                .to_string(),
        );
    }
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

/// CRC-32C (Castagnoli) register update without the final inversion, the form ext4 and
/// btrfs store. The standard CRC-32C of `data` is `!crc32c_raw(!0, data)`.
pub(crate) fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    static TABLE: [u32; 256] = table();
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The catalogue check value of CRC-32C.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }
}

// ---------------------------------------------------------------------------------------------
// Used-block map
// ---------------------------------------------------------------------------------------------

use crate::extent::ExtentMap;
use crate::util::le64;

const COMPAT_EXCLUDE_BITMAP: u32 = 0x0100;
const COMPAT_SPARSE_SUPER2: u32 = 0x0200;

const INCOMPAT_MMP: u32 = 0x0100;
const INCOMPAT_EA_INODE: u32 = 0x0400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;

const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
const RO_COMPAT_QUOTA: u32 = 0x0100;
const RO_COMPAT_READONLY: u32 = 0x1000;
const RO_COMPAT_PROJECT: u32 = 0x2000;
const RO_COMPAT_VERITY: u32 = 0x8000;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;

/// Incompatible features whose meaning for block allocation we know. Anything else (e2compr,
/// future formats) may give bitmap bits another meaning, so the whole volume is kept.
const USED_INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;
/// Read-only-compatible features we know. bigalloc was one of these once: an unknown one may
/// change what a bitmap bit means, so it is refused too. (Snapshots, replicas and shared
/// blocks are left out on purpose: their block ownership rules are not the plain bitmap's.)
const USED_RO_COMPAT_KNOWN: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_BTREE_DIR
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_QUOTA
    | RO_COMPAT_BIGALLOC
    | RO_COMPAT_METADATA_CSUM
    | RO_COMPAT_READONLY
    | RO_COMPAT_PROJECT
    | RO_COMPAT_VERITY
    | RO_COMPAT_ORPHAN_PRESENT;

const STATE_VALID: u16 = 0x0001;
const STATE_ERROR: u16 = 0x0002;

const BG_BLOCK_UNINIT: u16 = 0x0002;

/// More groups than this (4 Mi groups = 512 TiB at 4 KiB blocks) is treated as corrupt: the
/// per-group table would otherwise be an unbounded allocation.
const MAX_GROUPS: u64 = 1 << 22;
/// Largest single read when batching adjacent bitmap or descriptor blocks.
const MAX_BATCH: u64 = 4 << 20;
/// Warnings beyond this many are summarised in one line.
const MAX_WARNINGS: usize = 32;

/// How group descriptors are checksummed.
#[derive(Clone, Copy)]
enum DescCsum {
    None,
    /// `gdt_csum`: CRC-16 over uuid, group number and descriptor.
    Crc16([u8; 16]),
    /// `metadata_csum`: CRC-32C seeded from the uuid (or `s_checksum_seed`).
    Crc32c(u32),
}

/// Geometry from the superblock, validated so later arithmetic on it cannot overflow.
struct Geo {
    /// Block size in bytes.
    bs: u64,
    /// Blocks in the filesystem.
    blocks: u64,
    first_data: u64,
    /// Blocks per group.
    bpg: u64,
    /// Blocks per cluster (1 without bigalloc).
    ratio: u64,
    /// Clusters per group: the number of bits in one block bitmap.
    cpg: u64,
    groups: u64,
    desc_size: usize,
    /// Descriptors per block.
    dpb: u64,
    /// Blocks the whole descriptor table occupies.
    gdt_blocks: u64,
    meta_bg: bool,
    /// Descriptor blocks laid out the classic way (after each superblock copy).
    old_gdt_blocks: u64,
    reserved_gdt: u64,
    sparse_super: bool,
    backup_bgs: Option<[u64; 2]>,
    itable_blocks: u64,
    csum: DescCsum,
    exclude_bitmap: bool,
}

impl Geo {
    fn group_first(&self, g: u64) -> u64 {
        // g < groups, so this is < blocks (checked when groups was derived).
        self.first_data + g * self.bpg
    }

    fn group_end(&self, g: u64) -> u64 {
        self.group_first(g)
            .saturating_add(self.bpg)
            .min(self.blocks)
    }

    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some(b) = self.backup_bgs {
            return g == b[0] || g == b[1];
        }
        if g == 1 || !self.sparse_super {
            return true;
        }
        g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7))
    }

    /// Block holding group `g`'s superblock copy. The primary lives at byte 1024 whatever
    /// the block size (block 1 with 1 KiB blocks even under bigalloc, where group 0 starts
    /// at block 0).
    fn sb_block(&self, g: u64) -> u64 {
        if g == 0 {
            (1024 / self.bs).max(self.first_data)
        } else {
            self.group_first(g)
        }
    }

    /// Where descriptor block `i` of the primary table lives.
    fn gdt_block(&self, i: u64) -> Option<u64> {
        if !self.meta_bg || i < self.old_gdt_blocks {
            return (self.sb_block(0) + 1).checked_add(i);
        }
        let g = i.checked_mul(self.dpb)?;
        if g >= self.groups {
            return None;
        }
        Some(self.meta_gdt_block(g))
    }

    /// A meta_bg descriptor block sits right after the superblock copy, if the group has one.
    fn meta_gdt_block(&self, g: u64) -> u64 {
        if self.has_super(g) {
            self.sb_block(g) + 1
        } else {
            self.group_first(g)
        }
    }

    /// Blocks of group `g` the format reserves whether or not any bitmap says so: superblock
    /// copy, descriptor table copy, reserved descriptor blocks, meta_bg descriptor blocks.
    /// Pushed as block ranges clipped to the group.
    fn base_meta(&self, g: u64, out: &mut Vec<(u64, u64)>) {
        let (first, end) = (self.group_first(g), self.group_end(g));
        let clip = |s: u64, n: u64| (s.min(end), s.saturating_add(n).min(end));
        let sup = self.has_super(g);
        if sup {
            let sb = self.sb_block(g);
            // Old-style copies: superblock, then the classic table, then the reserve. The
            // kernel counts the reserve under meta_bg too (e2fsprogs does not); keeping it
            // is the safe side of that disagreement.
            let n = 1 + self.old_gdt_blocks + self.reserved_gdt;
            out.push(clip(first.min(sb), sb - first.min(sb) + n));
        }
        if self.meta_bg && self.dpb > 0 {
            let m = g % self.dpb;
            let meta_index = g / self.dpb;
            if meta_index >= self.old_gdt_blocks && (m == 0 || m == 1 || m == self.dpb - 1) {
                // Copies of meta-group `meta_index`'s descriptor block live in its first,
                // second and last group.
                out.push(clip(self.meta_gdt_block(g), 1));
            }
        }
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

/// One group descriptor, the fields the map needs.
#[derive(Clone, Copy, Default)]
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    exclude_bitmap: u64,
    flags: u16,
    bitmap_csum: u32,
    /// Descriptor checksum verified (or none to verify) and the descriptor was readable.
    ok: bool,
}

/// Collects warnings, summarising instead of growing without limit.
struct Warn {
    list: Vec<String>,
    dropped: usize,
}

impl Warn {
    fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.dropped += 1;
        }
    }
    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("... and {} more ext warnings", self.dropped));
        }
        self.list
    }
}

/// The bytes of this ext2/3/4 filesystem that must be kept: every block except those the
/// block bitmaps say are free.
///
/// Blocks the format reserves (superblock and descriptor copies, reserved descriptor blocks,
/// bitmaps, inode tables, the MMP block) are kept even where no bitmap marks them, which is
/// what makes groups flagged BLOCK_UNINIT (no bitmap on disk) safe. Whenever a group's
/// descriptor or bitmap is unreadable, misplaced or fails its checksum, the whole group is
/// kept; an unreplayed journal, unknown features or an unclean state keep the whole volume.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
    if le16(&sb, 0x38) != Some(MAGIC) {
        return Err(crate::Error::corrupt(
            "ext superblock",
            "no ext magic at byte 1080",
        ));
    }
    let geo = match parse_geometry(&sb)? {
        Ok(g) => g,
        Err(why) => return Ok(super::Usage::everything(dev.size(), why)),
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
    if fs_bytes > dev.size() {
        warn.push(format!(
            "ext: filesystem is {fs_bytes} bytes but the volume only {}: truncated image",
            dev.size()
        ));
    }

    let descs = read_descriptors(dev, &geo, &mut warn)?;

    // Block ranges that must be kept, in any order; sorted and merged once at the end.
    let mut keep: Vec<(u64, u64)> = Vec::new();
    // Everything before the first group (block 0 with 1 KiB blocks) and the boot area plus
    // primary superblock, whatever the block size.
    keep.push((0, geo.first_data.max(1)));

    // No bitmap or inode table can sit in the boot block, primary superblock or primary
    // descriptor table (the kernel refuses such a descriptor too); a zeroed descriptor
    // field would otherwise make us read the superblock as a bitmap.
    let head =
        geo.sb_block(0) + 1 + (geo.old_gdt_blocks + geo.reserved_gdt).max(u64::from(geo.meta_bg));
    let blocks_in = |s: u64, n: u64| -> Option<(u64, u64)> {
        let e = s.checked_add(n)?;
        (s >= head && e <= geo.blocks && n > 0).then_some((s, e))
    };

    // Which groups' bitmaps are to be read, as (bitmap block, group).
    let mut to_read: Vec<(u64, u64)> = Vec::new();
    let csum_feature = !matches!(geo.csum, DescCsum::None);
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
                Some(r) => keep.push(r),
                None => {
                    warn.push(format!(
                        "ext group {g}: {what} at block {s} (+{n}) lies outside the filesystem; group kept whole"
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
        if csum_feature && d.flags & BG_BLOCK_UNINIT != 0 {
            // No bitmap on disk: its used blocks are exactly the reserved ones pushed above
            // (this group's copies plus any group's bitmaps/tables placed here).
            continue;
        }
        to_read.push((d.block_bitmap, g));
    }

    // The MMP block is allocated in the bitmap by mke2fs; keep it regardless in case a
    // tool placed it otherwise.
    if u32_at(&sb, 0x60) & INCOMPAT_MMP != 0 {
        let mmp = le64(&sb, 0x168).unwrap_or(0);
        if let Some(r) = blocks_in(mmp, 1) {
            keep.push(r);
        }
    }

    let nbits = geo.cpg;
    let bm_bytes = nbits.div_ceil(8) as usize;
    let seed = match geo.csum {
        DescCsum::Crc32c(s) => Some(s),
        _ => None,
    };
    let check_hi = geo.desc_size >= 0x3C;
    read_batched(dev, geo.bs, &mut to_read, |g, data| {
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
        if let Some(seed) = seed {
            let c = crc32c_raw(seed, bm);
            let (stored, computed) = if check_hi {
                (d.bitmap_csum, c)
            } else {
                (d.bitmap_csum & 0xFFFF, c & 0xFFFF)
            };
            if stored != computed {
                warn.push(format!(
                    "ext group {g}: block bitmap checksum mismatch (stored {stored:#x}, computed {computed:#x}); group kept whole"
                ));
                keep.push(whole);
                return;
            }
        }
        let (first, end) = whole;
        bitmap_runs(bm, nbits, |a, b| {
            // Cluster numbers relative to the group → blocks, clipped to the group (the
            // last group's padding bits are set).
            let s = first.saturating_add(a.saturating_mul(geo.ratio)).min(end);
            let e = first.saturating_add(b.saturating_mul(geo.ratio)).min(end);
            if e > s {
                keep.push((s, e));
            }
        });
    });

    let bs = geo.bs;
    let mut used = ExtentMap::from_ranges(keep.into_iter().map(|(s, e)| {
        // Every pushed block is ≤ blocks, and blocks × bs was checked not to overflow.
        (s.min(geo.blocks) * bs, e.min(geo.blocks) * bs)
    }));
    used = used.union(&ExtentMap::single(0, 2048.min(fs_bytes)));
    Ok(super::Usage {
        used,
        from_fs: true,
        warnings: warn.finish(),
        ..Default::default()
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    le32(b, off).unwrap_or(0)
}

/// Validates the superblock's geometry. `Ok(Err(reason))` means the volume must be kept
/// whole for that reason (a state, not damage); `Err` means the geometry is impossible.
fn parse_geometry(sb: &[u8]) -> crate::Result<Result<Geo, String>> {
    let bad = |d: String| Err(crate::Error::corrupt("ext superblock", d));
    let g32 = |off| u32_at(sb, off);
    let g16 = |off| le16(sb, off).unwrap_or(0);
    let compat = g32(0x5C);
    let incompat = g32(0x60);
    let ro_compat = g32(0x64);

    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Ok(Err(
            "ext: external journal device; every block is kept".to_string()
        ));
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Ok(Err("ext: needs_recovery is set (journal not replayed), so the block bitmaps may be stale; every block is kept".to_string()));
    }
    let unknown_in = incompat & !USED_INCOMPAT_KNOWN;
    let unknown_ro = ro_compat & !USED_RO_COMPAT_KNOWN;
    if unknown_in != 0 || unknown_ro != 0 {
        return Ok(Err(format!(
            "ext: features not understood (incompat {unknown_in:#x}, ro_compat {unknown_ro:#x}); every block is kept"
        )));
    }
    let state = g16(0x3A);
    if state & STATE_VALID == 0 || state & STATE_ERROR != 0 {
        return Ok(Err(format!(
            "ext: filesystem state {state:#x} is not clean (mounted, crashed or with errors), so the block bitmaps may be stale; every block is kept"
        )));
    }

    let log_bs = g32(0x18);
    if log_bs > MAX_LOG_BLOCK_SIZE {
        return bad(format!("log block size {log_bs}"));
    }
    let bs = 1024u64 << log_bs;
    let mut blocks = u64::from(g32(0x04));
    let is64 = incompat & INCOMPAT_64BIT != 0;
    if is64 {
        blocks |= u64::from(g32(0x150)) << 32;
    }
    if blocks.checked_mul(bs).is_none() {
        return bad(format!("{blocks} blocks of {bs} bytes overflow"));
    }
    let first_data = u64::from(g32(0x14));
    let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
    // 1 only for 1 KiB blocks without bigalloc, 0 otherwise; anything else moves every group.
    if first_data > 1 || (first_data == 1 && (bs != 1024 || bigalloc)) {
        return bad(format!(
            "first data block {first_data} with block size {bs}"
        ));
    }
    if blocks <= first_data {
        return bad(format!("block count {blocks}"));
    }
    let bpg = u64::from(g32(0x20));
    let (ratio, cpg) = if bigalloc {
        let log_c = g32(0x1C);
        if log_c < log_bs || log_c - log_bs > 16 {
            return bad(format!(
                "cluster size log {log_c} with block size log {log_bs}"
            ));
        }
        (1u64 << (log_c - log_bs), u64::from(g32(0x24)))
    } else {
        (1, bpg)
    };
    if cpg == 0 || cpg > 8 * bs || cpg % 8 != 0 || cpg.checked_mul(ratio) != Some(bpg) {
        return bad(format!(
            "{bpg} blocks / {cpg} clusters per group with {ratio} blocks per cluster"
        ));
    }
    let groups = (blocks - first_data).div_ceil(bpg);
    if groups > MAX_GROUPS {
        return bad(format!("{groups} block groups"));
    }

    let desc_size = if is64 {
        let d = g16(0xFE);
        if !(64..=1024).contains(&d) || !d.is_power_of_two() {
            return bad(format!("group descriptor size {d}"));
        }
        usize::from(d)
    } else {
        32
    };
    let dpb = bs / desc_size as u64;
    let gdt_blocks = groups.div_ceil(dpb);
    let meta_bg = incompat & INCOMPAT_META_BG != 0;
    let old_gdt_blocks = if meta_bg {
        u64::from(g32(0x104)).min(gdt_blocks)
    } else {
        gdt_blocks
    };
    let reserved_gdt = if compat & COMPAT_RESIZE_INODE != 0 || g16(0xCE) != 0 {
        u64::from(g16(0xCE))
    } else {
        0
    };

    let inode_size = if g32(0x4C) == 0 {
        128
    } else {
        u64::from(g16(0x58))
    };
    if !(128..=bs).contains(&inode_size) || !inode_size.is_power_of_two() {
        return bad(format!("inode size {inode_size}"));
    }
    let ipg = u64::from(g32(0x28));
    if ipg == 0 || ipg > 8 * bs {
        return bad(format!("{ipg} inodes per group"));
    }
    let itable_blocks = (ipg * inode_size).div_ceil(bs);

    let backup_bgs = (compat & COMPAT_SPARSE_SUPER2 != 0)
        .then(|| [u64::from(g32(0x24C)), u64::from(g32(0x250))]);

    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(sb.get(0x68..0x78).unwrap_or(&[0; 16]));
    let csum = if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
        DescCsum::Crc32c(if incompat & INCOMPAT_CSUM_SEED != 0 {
            g32(0x270)
        } else {
            crc32c_raw(!0, &uuid)
        })
    } else if ro_compat & RO_COMPAT_GDT_CSUM != 0 {
        DescCsum::Crc16(uuid)
    } else {
        DescCsum::None
    };

    Ok(Ok(Geo {
        bs,
        blocks,
        first_data,
        bpg,
        ratio,
        cpg,
        groups,
        desc_size,
        dpb,
        gdt_blocks,
        meta_bg,
        old_gdt_blocks,
        reserved_gdt,
        sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
        backup_bgs,
        itable_blocks,
        csum,
        exclude_bitmap: compat & COMPAT_EXCLUDE_BITMAP != 0,
    }))
}

/// Reads and checks every group descriptor from the primary table. A descriptor block that
/// cannot be read (outside the volume) leaves its groups marked not ok, to be kept whole.
fn read_descriptors(dev: &dyn ReadAt, geo: &Geo, warn: &mut Warn) -> crate::Result<Vec<Desc>> {
    let mut descs = vec![Desc::default(); geo.groups as usize];
    let mut blocks: Vec<(u64, u64)> = Vec::with_capacity(geo.gdt_blocks as usize);
    for i in 0..geo.gdt_blocks {
        match geo.gdt_block(i) {
            Some(b) if b < geo.blocks => blocks.push((b, i)),
            _ => warn.push(format!(
                "ext: group descriptor block {i} lies outside the filesystem; its groups are kept whole"
            )),
        }
    }
    let ds = geo.desc_size;
    let is64 = ds >= 64;
    read_batched(dev, geo.bs, &mut blocks, |i, data| {
        let Some(data) = data else {
            warn.push(format!(
                "ext: group descriptor block {i} unreadable; its groups are kept whole"
            ));
            return;
        };
        for (k, raw) in data.chunks_exact(ds).enumerate() {
            let Some(g) = (i * geo.dpb).checked_add(k as u64) else {
                break;
            };
            if g >= geo.groups {
                break;
            }
            let lohi = |lo: usize, hi: usize| {
                let l = u64::from(u32_at(raw, lo));
                if is64 {
                    l | u64::from(u32_at(raw, hi)) << 32
                } else {
                    l
                }
            };
            let flags = le16(raw, 0x12).unwrap_or(0);
            let mut bitmap_csum = u32::from(le16(raw, 0x18).unwrap_or(0));
            if ds >= 0x3C {
                bitmap_csum |= u32::from(le16(raw, 0x38).unwrap_or(0)) << 16;
            }
            let ok = match desc_csum(geo.csum, g, raw) {
                None => true,
                Some(computed) => {
                    let stored = le16(raw, 0x1E).unwrap_or(0);
                    if stored != computed {
                        warn.push(format!(
                            "ext group {g}: descriptor checksum mismatch (stored {stored:#06x}, computed {computed:#06x}); group kept whole"
                        ));
                    }
                    stored == computed
                }
            };
            descs[g as usize] = Desc {
                block_bitmap: lohi(0x00, 0x20),
                inode_bitmap: lohi(0x04, 0x24),
                inode_table: lohi(0x08, 0x28),
                exclude_bitmap: lohi(0x14, 0x34),
                flags,
                bitmap_csum,
                ok,
            };
        }
    });
    Ok(descs)
}

/// The checksum a descriptor should carry, or `None` when the filesystem has none.
fn desc_csum(kind: DescCsum, group: u64, raw: &[u8]) -> Option<u16> {
    // The on-disk group number is 32 bits; larger counts were refused earlier.
    let gno = (group as u32).to_le_bytes();
    match kind {
        DescCsum::None => None,
        DescCsum::Crc32c(seed) => {
            let c = crc32c_raw(seed, &gno);
            let c = crc32c_raw(c, raw.get(..0x1E).unwrap_or(raw));
            let c = crc32c_raw(c, &[0, 0]);
            let c = crc32c_raw(c, raw.get(0x20..).unwrap_or(&[]));
            Some((c & 0xFFFF) as u16)
        }
        DescCsum::Crc16(uuid) => {
            let c = crc16(0xFFFF, &uuid);
            let c = crc16(c, &gno);
            let c = crc16(c, raw.get(..0x1E).unwrap_or(raw));
            Some(crc16(c, raw.get(0x20..).unwrap_or(&[])))
        }
    }
}

/// CRC-16 (reflected polynomial 0xA001, no final inversion), as `gdt_csum` uses.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Reads one block for each `(block, key)` item, coalescing runs of adjacent blocks into
/// single reads (flex_bg packs bitmaps and descriptor blocks together), and hands each block
/// to `f` — or `None` when it could not be read. Items are visited in block order.
fn read_batched(
    dev: &dyn ReadAt,
    bs: u64,
    items: &mut [(u64, u64)],
    mut f: impl FnMut(u64, Option<&[u8]>),
) {
    items.sort_unstable();
    let max_run = (MAX_BATCH / bs).max(1);
    let mut i = 0;
    while i < items.len() {
        let start = items[i].0;
        let mut j = i + 1;
        while j < items.len() {
            let b = items[j].0;
            // Adjacent or repeated blocks join the run.
            if b > items[j - 1].0 + 1 || b - start >= max_run {
                break;
            }
            j += 1;
        }
        let nblocks = items[j - 1].0 - start + 1;
        let data = start
            .checked_mul(bs)
            .and_then(|off| dev.read_vec(off, (nblocks * bs) as usize).ok());
        for &(b, key) in &items[i..j] {
            let piece = data.as_ref().map(|d| {
                let o = ((b - start) * bs) as usize;
                &d[o..o + bs as usize]
            });
            match piece {
                Some(p) => f(key, Some(p)),
                None => {
                    // The run failed (e.g. it reaches past a truncated volume): retry this
                    // block alone so one bad block does not condemn its neighbours.
                    let one = b
                        .checked_mul(bs)
                        .and_then(|off| dev.read_vec(off, bs as usize).ok());
                    f(key, one.as_deref());
                }
            }
        }
        i = j;
    }
}

/// Calls `f(start, end)` for each run of set bits among the first `nbits` bits of `bm`
/// (little-endian bit order, as ext bitmaps are). Bits past the buffer count as clear.
fn bitmap_runs(bm: &[u8], nbits: u64, mut f: impl FnMut(u64, u64)) {
    let mut run: Option<u64> = None;
    let mut base = 0u64;
    for chunk in bm.chunks(8) {
        if base >= nbits {
            break;
        }
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let mut word = u64::from_le_bytes(w);
        let valid = (nbits - base).min(64);
        if valid < 64 {
            word &= (1u64 << valid) - 1;
        }
        let mut pos = 0u64;
        while pos < 64 {
            let rest = word >> pos;
            match run {
                None => {
                    if rest == 0 {
                        break;
                    }
                    pos += u64::from(rest.trailing_zeros());
                    run = Some(base + pos);
                }
                Some(s) => {
                    // Bits shifted in above the word are zeros; invert only real bits.
                    let inv = !rest & (u64::MAX >> pos);
                    if inv == 0 {
                        break;
                    }
                    pos += u64::from(inv.trailing_zeros());
                    f(s, base + pos);
                    run = None;
                }
            }
        }
        base += 64;
    }
    if let Some(s) = run {
        f(s, nbits.min(base));
    }
}

#[cfg(test)]
mod used_tests {
    use super::*;

    fn naive(bm: &[u8], nbits: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in 0..nbits {
            let set = bm
                .get((i / 8) as usize)
                .is_some_and(|b| b >> (i % 8) & 1 == 1);
            if set {
                match out.last_mut() {
                    Some(l) if l.1 == i => l.1 = i + 1,
                    _ => out.push((i, i + 1)),
                }
            }
        }
        out
    }

    #[test]
    fn bitmap_runs_match_naive() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for len in [0usize, 1, 7, 8, 9, 64, 65, 130, 1024] {
            for density in 0..4 {
                let bm: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        match density {
                            0 => 0,
                            1 => 0xFF,
                            2 => (x as u8) & (x >> 8) as u8,
                            _ => x as u8,
                        }
                    })
                    .collect();
                for nbits in [
                    0,
                    1,
                    5,
                    (len * 8) as u64,
                    (len * 8).saturating_sub(3) as u64,
                    len as u64 * 8 + 40,
                ] {
                    let mut got = Vec::new();
                    bitmap_runs(&bm, nbits, |a, b| got.push((a, b)));
                    assert_eq!(
                        got,
                        naive(&bm, nbits),
                        "len {len} density {density} nbits {nbits}"
                    );
                }
            }
        }
    }

    #[test]
    fn sparse_super_groups() {
        let pw: Vec<u64> = (0..100)
            .filter(|&g| {
                g == 0
                    || g == 1
                    || (g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)))
            })
            .collect();
        assert_eq!(pw, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC check value (init 0); ext's variant only differs in its initial value.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
