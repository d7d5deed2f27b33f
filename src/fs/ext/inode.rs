//! On-disk inodes: the fields the block walk needs, read from a raw inode.
//!
//! Only the first 128 bytes (the "good old" inode every revision has) are interpreted; the
//! extra fields of larger inodes carry nothing that locates blocks.

use crate::util::{le16, le32};

/// Inode of the bad-blocks list: its "data" blocks are the filesystem's bad blocks.
pub(super) const BAD_BLOCKS_INO: u64 = 1;
/// Inode of the online-resize reserve: a double-indirect block over the reserved GDT blocks
/// of every superblock copy, which the group layout already keeps.
pub(super) const RESIZE_INO: u64 = 7;

const S_IFMT: u16 = 0o170_000;
const S_IFREG: u16 = 0o100_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFLNK: u16 = 0o120_000;

const EXTENTS_FL: u32 = 0x0008_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;

/// Size of `i_block`: 15 block numbers, or an extent header and four extents, or inline data.
pub(super) const I_BLOCK_LEN: usize = 60;
const I_BLOCK_OFF: usize = 0x28;

/// The block-locating fields of one inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inode {
    /// Type and permission bits.
    pub(super) mode: u16,
    /// Hard links; 0 means free (or an orphan waiting to be released).
    pub(super) links: u16,
    /// Deletion time; in an orphan, the next orphan's inode number.
    pub(super) dtime: u32,
    /// `EXT4_*_FL` flags.
    pub(super) flags: u32,
    /// Size in bytes (low word only matters for the symlink test).
    pub(super) size: u64,
    /// 512-byte units (or blocks with `huge_file`) charged to the inode; only compared to 0.
    pub(super) blocks_lo: u32,
    /// The block map, extent tree root or inline data.
    pub(super) i_block: [u8; I_BLOCK_LEN],
    /// Block holding the inode's extended attributes, 0 if none.
    pub(super) file_acl: u64,
}

impl Inode {
    /// Parses a raw inode; `None` if the slot is shorter than a revision-0 inode.
    /// `is64`: the filesystem has the 64bit feature, so `i_file_acl` has a high half.
    pub(super) fn parse(raw: &[u8], is64: bool) -> Option<Inode> {
        if raw.len() < 128 {
            return None;
        }
        let g32 = |o| le32(raw, o).unwrap_or(0);
        let g16 = |o| le16(raw, o).unwrap_or(0);
        let mut i_block = [0u8; I_BLOCK_LEN];
        i_block.copy_from_slice(&raw[I_BLOCK_OFF..I_BLOCK_OFF + I_BLOCK_LEN]);
        let mut file_acl = u64::from(g32(0x68));
        if is64 {
            file_acl |= u64::from(g16(0x76)) << 32;
        }
        Some(Inode {
            mode: g16(0x00),
            links: g16(0x1A),
            dtime: g32(0x14),
            flags: g32(0x20),
            size: u64::from(g32(0x04)) | u64::from(g32(0x6C)) << 32,
            blocks_lo: g32(0x1C),
            i_block,
            file_acl,
        })
    }

    /// True when `raw`, the whole on-disk slot of inode `ino`, carries the `metadata_csum`
    /// checksum the kernel verifies before it believes an inode (`ext4_inode_csum`): CRC-32C
    /// from `seed` (the filesystem's) over the inode number, the generation and the slot with
    /// its checksum fields zeroed; the high half only where the slot's extra space holds it.
    pub(super) fn csum_ok(raw: &[u8], ino: u64, seed: u32) -> bool {
        use crate::checksum::crc32c_raw;
        const LO: usize = 0x7C;
        const HI: usize = 0x82;
        if raw.len() < 128 {
            return false;
        }
        let g16 = |o| u32::from(le16(raw, o).unwrap_or(0));
        // The inode number is 32 bits on disk.
        let mut c = crc32c_raw(seed, &(ino as u32).to_le_bytes());
        c = crc32c_raw(c, &raw[0x64..0x68]);
        c = crc32c_raw(c, &raw[..LO]);
        c = crc32c_raw(c, &[0, 0]);
        c = crc32c_raw(c, &raw[LO + 2..128]);
        let mut has_hi = false;
        if raw.len() > 128 {
            has_hi = raw.len() >= HI + 2 && g16(0x80) >= 4;
            if has_hi {
                c = crc32c_raw(c, &raw[128..HI]);
                c = crc32c_raw(c, &[0, 0]);
                c = crc32c_raw(c, &raw[HI + 2..]);
            } else {
                c = crc32c_raw(c, &raw[128..]);
            }
        }
        let stored = g16(LO) | if has_hi { g16(HI) << 16 } else { 0 };
        let computed = if has_hi { c } else { c & 0xFFFF };
        stored == computed
    }

    /// An all-zero slot: never used since the table was zeroed.
    pub(super) fn is_blank(&self) -> bool {
        self.mode == 0
            && self.links == 0
            && self.dtime == 0
            && self.file_acl == 0
            && self.i_block == [0; I_BLOCK_LEN]
    }

    /// The root of `i_block` is an extent tree.
    pub(super) fn uses_extents(&self) -> bool {
        self.flags & EXTENTS_FL != 0
    }

    /// Whether `i_block` holds block numbers (a block map or an extent tree), following
    /// e2fsprogs' `ext2fs_inode_has_valid_blocks2`: only directories, regular files and
    /// symlinks that are not "fast" (target stored in `i_block`) have blocks; device nodes,
    /// FIFOs and sockets keep other things there, and inline-data inodes hold their data.
    pub(super) fn has_block_map(&self) -> bool {
        let kind = self.mode & S_IFMT;
        if kind != S_IFDIR && kind != S_IFREG && kind != S_IFLNK {
            return false;
        }
        if kind == S_IFLNK {
            if self.file_acl == 0 {
                if self.blocks_lo == 0 {
                    return false;
                }
            } else {
                // With an xattr block, i_blocks counts it too; guess the way e2fsprogs does.
                let second = le32(&self.i_block, 4).unwrap_or(0);
                let long = self.size >= I_BLOCK_LEN as u64 || (self.size > 4 && second == 0);
                if !long {
                    return false;
                }
            }
        }
        self.flags & INLINE_DATA_FL == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(mode: u16, links: u16, flags: u32) -> Vec<u8> {
        let mut r = vec![0u8; 256];
        r[0..2].copy_from_slice(&mode.to_le_bytes());
        r[0x1A..0x1C].copy_from_slice(&links.to_le_bytes());
        r[0x20..0x24].copy_from_slice(&flags.to_le_bytes());
        r
    }

    #[test]
    fn kinds_with_blocks() {
        let reg = Inode::parse(&raw(0o100644, 1, 0), false).unwrap();
        assert!(reg.has_block_map());
        let dev = Inode::parse(&raw(0o020644, 1, 0), false).unwrap();
        assert!(!dev.has_block_map());
        let inline = Inode::parse(&raw(0o100644, 1, INLINE_DATA_FL), false).unwrap();
        assert!(!inline.has_block_map());
        // A fast symlink: no blocks charged, target text in i_block.
        let mut r = raw(0o120777, 1, 0);
        r[0x28..0x2C].copy_from_slice(b"/tmp");
        r[4] = 4;
        assert!(!Inode::parse(&r, false).unwrap().has_block_map());
        // A slow one: blocks charged.
        r[0x1C] = 8;
        assert!(Inode::parse(&r, false).unwrap().has_block_map());
    }

    #[test]
    fn file_acl_high_half_only_with_64bit() {
        let mut r = raw(0o100644, 1, 0);
        r[0x68] = 5;
        r[0x76] = 1;
        assert_eq!(Inode::parse(&r, false).unwrap().file_acl, 5);
        assert_eq!(Inode::parse(&r, true).unwrap().file_acl, (1 << 32) | 5);
        assert!(Inode::parse(&r[..127], true).is_none());
    }
}
