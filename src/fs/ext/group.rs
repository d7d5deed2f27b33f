//! Group descriptors: where each group's bitmaps and inode table live, its flags and
//! counters, checked against the descriptor checksum.

use super::bitmap::read_batched;
use super::geometry::{DescCsum, Geo};
use super::superblock::{u32_at, BG_INODE_UNINIT};
use super::warn::Warn;
use crate::checksum::{crc16_modbus, crc32c_raw};
use crate::io::ReadAt;
use crate::util::le16;

/// One group descriptor, the fields the map needs.
#[derive(Clone, Copy, Default)]
pub(super) struct Desc {
    pub(super) block_bitmap: u64,
    pub(super) inode_bitmap: u64,
    pub(super) inode_table: u64,
    pub(super) exclude_bitmap: u64,
    pub(super) flags: u16,
    pub(super) bitmap_csum: u32,
    /// Checksum of the inode bitmap (`metadata_csum`).
    pub(super) inode_bitmap_csum: u32,
    /// Free inodes in the group.
    pub(super) free_inodes: u32,
    /// Inodes at the end of the table never used since mkfs (with descriptor checksums).
    pub(super) itable_unused: u32,
    /// Descriptor checksum verified (or none to verify) and the descriptor was readable.
    pub(super) ok: bool,
}

impl Desc {
    /// Flagged `INODE_UNINIT` with every inode free, on a descriptor that verifies: the
    /// group holds no inode (trusted only where [`Geo::lazy_hints`] says the hints are).
    pub(super) fn inodes_uninit(&self, ipg: u64) -> bool {
        self.ok && self.flags & BG_INODE_UNINIT != 0 && u64::from(self.free_inodes) == ipg
    }
}

/// Reads and checks every group descriptor from the primary table. A descriptor block that
/// cannot be read (outside the volume) leaves its groups marked not ok, to be kept whole.
pub(super) fn read_descriptors(
    dev: &dyn ReadAt,
    geo: &Geo,
    warn: &mut Warn,
) -> crate::Result<Vec<Desc>> {
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
            let lohi16 = |lo: usize, hi: usize| {
                let l = u32::from(le16(raw, lo).unwrap_or(0));
                if is64 {
                    l | u32::from(le16(raw, hi).unwrap_or(0)) << 16
                } else {
                    l
                }
            };
            let mut inode_bitmap_csum = u32::from(le16(raw, 0x1A).unwrap_or(0));
            if ds >= 0x3C {
                inode_bitmap_csum |= u32::from(le16(raw, 0x3A).unwrap_or(0)) << 16;
            }
            descs[g as usize] = Desc {
                block_bitmap: lohi(0x00, 0x20),
                inode_bitmap: lohi(0x04, 0x24),
                inode_table: lohi(0x08, 0x28),
                exclude_bitmap: lohi(0x14, 0x34),
                flags,
                bitmap_csum,
                inode_bitmap_csum,
                free_inodes: lohi16(0x0E, 0x2E),
                itable_unused: lohi16(0x1C, 0x32),
                ok,
            };
        }
    });
    Ok(descs)
}

/// The checksum a descriptor should carry, or `None` when the filesystem has none.
pub(super) fn desc_csum(kind: DescCsum, group: u64, raw: &[u8]) -> Option<u16> {
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
        DescCsum::Crc16(uuid) => Some(crc16_modbus(&[
            &uuid,
            &gno,
            raw.get(..0x1E).unwrap_or(raw),
            raw.get(0x20..).unwrap_or(&[]),
        ])),
    }
}
