//! What the ext superblock's fields mean: the compat, incompat and ro-compat feature bits
//! (and which of them ext2, ext3 and the allocation-map reader know), the states, the
//! limits trusted (block size, group count), and [`u32_at`], the field reader.
//!
//! Apart from the ext façade (`ext/mod.rs`, the probe and `used`, which call `geometry`,
//! `group` and the rest) so that those structure readers take these from here and they and the
//! façade never import each other.

use crate::util::le32;

pub(super) const COMPAT_HAS_JOURNAL: u32 = 0x0004;
pub(super) const COMPAT_RESIZE_INODE: u32 = 0x0010;
pub(super) const COMPAT_DIR_INDEX: u32 = 0x0020;

pub(super) const INCOMPAT_FILETYPE: u32 = 0x0002;
pub(super) const INCOMPAT_RECOVER: u32 = 0x0004;
pub(super) const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
pub(super) const INCOMPAT_META_BG: u32 = 0x0010;
pub(super) const INCOMPAT_EXTENTS: u32 = 0x0040;
pub(super) const INCOMPAT_64BIT: u32 = 0x0080;
pub(super) const INCOMPAT_FLEX_BG: u32 = 0x0200;
pub(super) const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub(super) const INCOMPAT_ENCRYPT: u32 = 0x10000;
pub(super) const INCOMPAT_CASEFOLD: u32 = 0x20000;

pub(super) const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub(super) const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
pub(super) const RO_COMPAT_BTREE_DIR: u32 = 0x0004;
pub(super) const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
pub(super) const RO_COMPAT_BIGALLOC: u32 = 0x0200;
pub(super) const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;

/// Features an ext2 driver understands; anything else makes the volume ext3/ext4 to blkid.
pub(super) const EXT2_RO_COMPAT_SUPP: u32 =
    RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
pub(super) const EXT2_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
pub(super) const EXT3_RO_COMPAT_SUPP: u32 = EXT2_RO_COMPAT_SUPP;
pub(super) const EXT3_INCOMPAT_SUPP: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;

pub(super) const FLAGS_TEST_FILESYS: u32 = 0x0004;

/// Largest block size ext4 supports (64 KiB, log 6 above 1 KiB).
pub(super) const MAX_LOG_BLOCK_SIZE: u32 = 6;

pub(super) const COMPAT_EXCLUDE_BITMAP: u32 = 0x0100;
pub(super) const COMPAT_SPARSE_SUPER2: u32 = 0x0200;

pub(super) const INCOMPAT_MMP: u32 = 0x0100;
pub(super) const INCOMPAT_EA_INODE: u32 = 0x0400;
pub(super) const INCOMPAT_DIRDATA: u32 = 0x1000;
pub(super) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub(super) const INCOMPAT_LARGEDIR: u32 = 0x4000;

pub(super) const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
pub(super) const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
pub(super) const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
pub(super) const RO_COMPAT_QUOTA: u32 = 0x0100;
pub(super) const RO_COMPAT_READONLY: u32 = 0x1000;
pub(super) const RO_COMPAT_PROJECT: u32 = 0x2000;
pub(super) const RO_COMPAT_VERITY: u32 = 0x8000;
pub(super) const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;

/// Incompatible features whose meaning for block allocation we know. Anything else (e2compr,
/// future formats) may give bitmap bits another meaning, so the whole volume is kept.
pub(super) const USED_INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
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
pub(super) const USED_RO_COMPAT_KNOWN: u32 = RO_COMPAT_SPARSE_SUPER
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

pub(super) const STATE_VALID: u16 = 0x0001;
pub(super) const STATE_ERROR: u16 = 0x0002;

pub(super) const BG_INODE_UNINIT: u16 = 0x0001;
pub(super) const BG_BLOCK_UNINIT: u16 = 0x0002;

/// More groups than this (4 Mi groups = 512 TiB at 4 KiB blocks) is treated as corrupt: the
/// per-group table would otherwise be an unbounded allocation.
pub(super) const MAX_GROUPS: u64 = 1 << 22;

pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
    le32(b, off).unwrap_or(0)
}
