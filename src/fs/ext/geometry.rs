//! The superblock's geometry, validated once so that every later computation on it (group
//! starts, descriptor and superblock-copy locations) cannot overflow.

use super::superblock::{
    u32_at, COMPAT_EXCLUDE_BITMAP, COMPAT_HAS_JOURNAL, COMPAT_RESIZE_INODE, COMPAT_SPARSE_SUPER2,
    INCOMPAT_64BIT, INCOMPAT_CSUM_SEED, INCOMPAT_JOURNAL_DEV, INCOMPAT_META_BG, INCOMPAT_RECOVER,
    MAX_GROUPS, MAX_LOG_BLOCK_SIZE, RO_COMPAT_BIGALLOC, RO_COMPAT_GDT_CSUM,
    RO_COMPAT_METADATA_CSUM, RO_COMPAT_SPARSE_SUPER, STATE_ERROR, STATE_VALID, USED_INCOMPAT_KNOWN,
    USED_RO_COMPAT_KNOWN,
};
use crate::checksum::crc32c_raw;
use crate::util::le16;

/// `s_creator_os` of a filesystem made by the Hurd.
const EXT4_OS_HURD: u32 = 1;

/// How group descriptors are checksummed.
#[derive(Clone, Copy)]
pub(super) enum DescCsum {
    None,
    /// `gdt_csum`: CRC-16 over uuid, group number and descriptor.
    Crc16([u8; 16]),
    /// `metadata_csum`: CRC-32C seeded from the uuid (or `s_checksum_seed`).
    Crc32c(u32),
}

/// Geometry from the superblock, validated so later arithmetic on it cannot overflow.
pub(super) struct Geo {
    /// Block size in bytes.
    pub(super) bs: u64,
    /// Blocks in the filesystem.
    pub(super) blocks: u64,
    pub(super) first_data: u64,
    /// Blocks per group.
    pub(super) bpg: u64,
    /// Blocks per cluster (1 without bigalloc).
    pub(super) ratio: u64,
    /// Clusters per group: the number of bits in one block bitmap.
    pub(super) cpg: u64,
    pub(super) groups: u64,
    pub(super) desc_size: usize,
    /// Descriptors per block.
    pub(super) dpb: u64,
    /// Blocks the whole descriptor table occupies.
    pub(super) gdt_blocks: u64,
    pub(super) meta_bg: bool,
    /// Descriptor blocks laid out the classic way (after each superblock copy).
    pub(super) old_gdt_blocks: u64,
    pub(super) reserved_gdt: u64,
    pub(super) sparse_super: bool,
    pub(super) backup_bgs: Option<[u64; 2]>,
    pub(super) itable_blocks: u64,
    pub(super) csum: DescCsum,
    pub(super) exclude_bitmap: bool,
    /// Bytes per on-disk inode.
    pub(super) inode_size: u64,
    /// Inodes per group: the number of bits in one inode bitmap.
    pub(super) ipg: u64,
    /// Inodes in the filesystem (never more than `groups × ipg`).
    pub(super) inodes: u64,
    /// First inode number not reserved by the format.
    pub(super) first_ino: u64,
    /// Descriptors and some block numbers carry high 32 (or 16) bits.
    pub(super) is64: bool,
    /// The filesystem has a journal (`has_journal`).
    pub(super) journal: bool,
    /// Inodes carry checksums the kernel verifies: `metadata_csum`, unless the creator OS is
    /// the Hurd (the kernel skips inode checksums there).
    pub(super) inode_csums: bool,
}

impl Geo {
    /// True when the descriptors carry checksums, which is when the kernel and e2fsck trust
    /// the lazy-initialisation hints (`INODE_UNINIT`, `BLOCK_UNINIT`, `itable_unused`).
    pub(super) fn lazy_hints(&self) -> bool {
        !matches!(self.csum, DescCsum::None)
    }

    /// True when the tight-metadata rule may apply at all (`spec/safety.md`): the lazy-init
    /// hints are trusted and there is a journal (without one the kernel's allocator reads free
    /// slots' deletion times, garbage on a restored copy).
    pub(super) fn tight_possible(&self) -> bool {
        self.lazy_hints() && self.journal
    }

    /// Checks a block or inode bitmap against the checksum its descriptor stores (`stored`,
    /// high half present only in 64-byte descriptors): `Err((stored, computed))` on a
    /// mismatch, `Ok` when it matches or the filesystem has no bitmap checksums.
    pub(super) fn check_bitmap(&self, stored: u32, bm: &[u8]) -> Result<(), (u32, u32)> {
        let DescCsum::Crc32c(seed) = self.csum else {
            return Ok(());
        };
        let c = crc32c_raw(seed, bm);
        let (stored, computed) = if self.desc_size >= 0x3C {
            (stored, c)
        } else {
            (stored & 0xFFFF, c & 0xFFFF)
        };
        if stored == computed {
            Ok(())
        } else {
            Err((stored, computed))
        }
    }

    /// The seed of inode checksums: present exactly when inodes carry checksums.
    pub(super) fn inode_csum_seed(&self) -> Option<u32> {
        match self.csum {
            DescCsum::Crc32c(seed) if self.inode_csums => Some(seed),
            _ => None,
        }
    }

    /// Group `g`'s copy of the reserved descriptor blocks (the reserve online resize grows
    /// the descriptor table into), for a group other than 0 that carries a superblock copy.
    /// Nothing reads such a copy: online resize and resize2fs write it whole when they take
    /// a reserved block into use (reading only group 0's, the resize inode's indirect
    /// blocks), e2fsck checks only group 0's, and mke2fs leaves it as the medium held it.
    /// Not under meta_bg: neither the kernel nor e2fsprogs reserves that span in its groups,
    /// where a meta group's descriptor block or file data may sit instead.
    pub(super) fn reserve_copy(&self, g: u64) -> Option<(u64, u64)> {
        if g == 0 || self.meta_bg || self.reserved_gdt == 0 || !self.has_super(g) {
            return None;
        }
        let s = self
            .sb_block(g)
            .checked_add(1)?
            .checked_add(self.old_gdt_blocks)?;
        let e = s.checked_add(self.reserved_gdt)?.min(self.group_end(g));
        (e > s).then_some((s, e))
    }

    pub(super) fn group_first(&self, g: u64) -> u64 {
        // g < groups, so this is < blocks (checked when groups was derived).
        self.first_data + g * self.bpg
    }

    pub(super) fn group_end(&self, g: u64) -> u64 {
        self.group_first(g)
            .saturating_add(self.bpg)
            .min(self.blocks)
    }

    pub(super) fn has_super(&self, g: u64) -> bool {
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
    pub(super) fn sb_block(&self, g: u64) -> u64 {
        if g == 0 {
            (1024 / self.bs).max(self.first_data)
        } else {
            self.group_first(g)
        }
    }

    /// Where descriptor block `i` of the primary table lives.
    pub(super) fn gdt_block(&self, i: u64) -> Option<u64> {
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
    pub(super) fn meta_gdt_block(&self, g: u64) -> u64 {
        if self.has_super(g) {
            self.sb_block(g) + 1
        } else {
            self.group_first(g)
        }
    }

    /// Blocks of group `g` the format reserves whether or not any bitmap says so: superblock
    /// copy, descriptor table copy, reserved descriptor blocks, meta_bg descriptor blocks.
    /// Pushed as block ranges clipped to the group.
    pub(super) fn base_meta(&self, g: u64, out: &mut Vec<(u64, u64)>) {
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

pub(super) fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

/// Validates the superblock's geometry. `Ok(Err(reason))` means the volume must be kept
/// whole for that reason (a state, not damage); `Err` means the geometry is impossible.
pub(super) fn parse_geometry(sb: &[u8]) -> crate::Result<Result<Geo, String>> {
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
    // groups × ipg ≤ 2^22 × 2^19: no overflow.
    let inodes = u64::from(g32(0x00)).min(groups * ipg);
    // Revision 0 reserves the first 10 inodes; a later revision names the first free one.
    // A nonsensical value falls back to the classic layout, which only shortens the
    // reserved range the walk treats specially.
    let first_ino = match u64::from(g32(0x54)) {
        n if g32(0x4C) != 0 && (11..inodes.max(12)).contains(&n) => n,
        _ => 11,
    };

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
        journal: compat & COMPAT_HAS_JOURNAL != 0,
        inode_size,
        ipg,
        inodes,
        first_ino,
        is64,
        inode_csums: matches!(csum, DescCsum::Crc32c(_)) && g32(0x48) != EXT4_OS_HURD,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn sparse_super_groups() {
        let pw: Vec<u64> = (0..100)
            .filter(|&g| {
                g == 0
                    || g == 1
                    || (g % 2 == 1 && (is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)))
            })
            .collect();
        assert_eq!(pw, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }
}
