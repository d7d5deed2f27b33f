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
            info.size = Some(bytes);
            if bytes > dev.size() {
                info.warnings.push(format!(
                    "filesystem claims {bytes} bytes but the volume is only {}: truncated?",
                    dev.size()
                ));
            }
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

/// The bytes of this filesystem that must be kept. (Allocation map not read yet: keeps
/// everything, which is always safe.)
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage::everything(
        dev.size(),
        "allocation map reader not written yet; every block is kept",
    ))
}
