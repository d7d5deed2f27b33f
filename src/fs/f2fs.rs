//! F2FS superblock probe (at byte 1024; a backup follows one block later).

use super::{FsInfo, FsType};
use crate::checksum::crc32_raw;
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64, utf16le_z, uuid_be};

const SB_OFFSET: u64 = 1024;
const SB_LEN: usize = 3072;
const MAGIC: u32 = 0xF2F5_2010;

/// Recognises F2FS in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
    if le32(&sb, 0) != Some(MAGIC) {
        return Ok(None);
    }
    let g32 = |o| le32(&sb, o).unwrap_or(0);
    let corrupt = |d: String| crate::Error::corrupt("F2FS superblock", d);
    let log_sector = g32(8);
    let log_block = g32(16);
    // F2FS only ever uses 4 KiB blocks (16 KiB on some arm64 kernels); sectors 512..4096.
    if !(9..=12).contains(&log_sector) || !(12..=14).contains(&log_block) {
        return Err(corrupt(format!(
            "impossible sizes: log sector {log_sector}, log block {log_block}"
        )));
    }
    let block_size = 1u32 << log_block;
    let block_count = le64(&sb, 36).unwrap_or(0);
    let mut info = FsInfo {
        block_size: Some(block_size),
        version: Some(format!(
            "{}.{}",
            le16(&sb, 4).unwrap_or(0),
            le16(&sb, 6).unwrap_or(0)
        )),
        ..FsInfo::new(FsType::F2fs)
    };
    let mut uuid = [0u8; 16];
    if let Some(b) = sb.get(108..124) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    let label = utf16le_z(sb.get(124..124 + 1024).unwrap_or(&[]));
    info.label = (!label.is_empty()).then_some(label);
    match block_count.checked_mul(u64::from(block_size)) {
        Some(bytes) if block_count > 0 => {
            info.declare_size(bytes, dev.size());
        }
        _ => info
            .warnings
            .push(format!("impossible block count {block_count}")),
    }
    Ok(Some(info))
}

const BLOCK: u64 = 4096;
const BLOCKS_PER_SEG: u64 = 512;
const CP_UMOUNT_FLAG: u32 = 0x1;
const CP_COMPACT_SUM_FLAG: u32 = 0x4;
const CP_ERROR_FLAG: u32 = 0x8;
const CP_LARGE_NAT_BITMAP_FLAG: u32 = 0x400;
const CP_DISABLED_FLAG: u32 = 0x1000;
/// SIT entry: vblocks u16, 64-byte valid map, mtime u64.
const SIT_ENTRY: usize = 74;
const SIT_PER_BLOCK: u64 = BLOCK / SIT_ENTRY as u64;
/// Summary block: 512 entries of 7 bytes, then the journal (`SUM_JOURNAL_SIZE` bytes).
const SUM_ENTRIES_BYTES: usize = 512 * 7;
const SUM_JOURNAL_SIZE: usize = 507;
const SIT_JOURNAL_ENTRY: usize = 4 + SIT_ENTRY;
const SIT_JOURNAL_MAX: usize = (SUM_JOURNAL_SIZE - 2) / SIT_JOURNAL_ENTRY;
/// Current data segment that carries the SIT journal (CURSEG_COLD_DATA).
const COLD_DATA: u64 = 2;

fn f2fs_corrupt(d: impl Into<String>) -> crate::Error {
    crate::Error::corrupt("F2FS checkpoint/SIT", d)
}

/// F2FS's checksum: reflected CRC-32 (IEEE) seeded with the magic, no final inversion.
fn f2fs_crc(data: &[u8]) -> u32 {
    crc32_raw(MAGIC, data)
}

/// MSB-first bit test, as F2FS lays out its bitmaps.
fn bit(map: &[u8], nr: u64) -> bool {
    map.get((nr / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (nr % 8)) != 0)
}

/// A checkpoint pack that checks out: its header block, its start and its version.
fn checkpoint(dev: &dyn ReadAt, start: u64) -> Option<(Vec<u8>, u64, u64)> {
    let cp = dev.read_vec(start * BLOCK, BLOCK as usize).ok()?;
    let off = le32(&cp, 164)? as usize;
    if !(192..=4092).contains(&off) || le32(&cp, off)? != f2fs_crc(&cp[..off]) {
        return None;
    }
    let version = le64(&cp, 0)?;
    let total = u64::from(le32(&cp, 136)?);
    if !(2..=BLOCKS_PER_SEG).contains(&total) {
        return None;
    }
    // The pack ends with a copy of its header; a torn pack has a stale or missing copy.
    let tail = dev
        .read_vec((start + total - 1) * BLOCK, BLOCK as usize)
        .ok()?;
    (le64(&tail, 0)? == version).then_some((cp, start, version))
}

/// The bytes of an F2FS volume that must be kept: everything below the main area
/// (superblocks, checkpoints, SIT, NAT, SSA), every main-area block whose SIT valid bit is
/// set (with the checkpoint's SIT journal applied over the SIT blocks), and the open
/// (current) segments whole.
///
/// Refused (the caller keeps everything) unless the newest valid checkpoint says the
/// filesystem was cleanly unmounted: otherwise roll-forward recovery may resurrect blocks the
/// SIT calls free.
pub(crate) fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let sb = dev.read_vec(SB_OFFSET, SB_LEN)?;
    if le32(&sb, 0) != Some(MAGIC) {
        return Err(crate::Error::Format("no F2FS superblock".into()));
    }
    let g = |o| u64::from(le32(&sb, o).unwrap_or(0));
    if g(16) != 12 || g(20) != 9 {
        return Err(crate::Error::Unsupported(format!(
            "F2FS with 2^{} byte blocks and 2^{} blocks per segment",
            g(16),
            g(20)
        )));
    }
    let (seg_sit, seg_main) = (g(56), g(68));
    let (cp_addr, sit_addr, main_addr) = (g(76), g(80), g(92));
    let size_blocks = dev.size() / BLOCK;
    let main_end = seg_main
        .checked_mul(BLOCKS_PER_SEG)
        .and_then(|b| b.checked_add(main_addr))
        .filter(|&e| e <= size_blocks)
        .ok_or_else(|| f2fs_corrupt("main area past the device"))?;
    if !(cp_addr < sit_addr && sit_addr < main_addr) || seg_sit < 2 {
        return Err(f2fs_corrupt("metadata areas out of order"));
    }
    let sit_blocks = seg_sit / 2 * BLOCKS_PER_SEG;
    if sit_addr + 2 * sit_blocks > main_addr || seg_main.div_ceil(SIT_PER_BLOCK) > sit_blocks {
        return Err(f2fs_corrupt(
            "SIT does not fit or does not cover the main area",
        ));
    }

    let packs = [
        checkpoint(dev, cp_addr),
        checkpoint(dev, cp_addr + BLOCKS_PER_SEG),
    ];
    let (cp, cp_start, _) = packs
        .into_iter()
        .flatten()
        .max_by_key(|p| p.2)
        .ok_or_else(|| f2fs_corrupt("no valid checkpoint pack"))?;
    let c32 = |o| le32(&cp, o).unwrap_or(0);
    let flags = c32(132);
    if flags & CP_UMOUNT_FLAG == 0 || flags & (CP_ERROR_FLAG | CP_DISABLED_FLAG) != 0 {
        return Err(crate::Error::Unsupported(format!(
            "F2FS was not cleanly unmounted (checkpoint flags {flags:#x})"
        )));
    }
    if flags & CP_LARGE_NAT_BITMAP_FLAG != 0 {
        return Err(crate::Error::Unsupported("F2FS large NAT bitmap".into()));
    }
    // Which of the two SIT copies holds each SIT block.
    let sit_bm_len = c32(156) as usize;
    let payload = g(1664);
    let sit_bitmap = if payload > 0 {
        dev.read_vec((cp_start + 1) * BLOCK, sit_bm_len.min(BLOCK as usize))?
    } else {
        cp.get(192..192 + sit_bm_len)
            .ok_or_else(|| f2fs_corrupt("SIT bitmap outside the checkpoint"))?
            .to_vec()
    };
    if (sit_bm_len as u64) * 8 < seg_main.div_ceil(SIT_PER_BLOCK) {
        return Err(f2fs_corrupt("SIT version bitmap too short"));
    }

    // SIT journal: entries newer than the SIT blocks.
    let sum_start = cp_start
        .checked_add(u64::from(c32(140)))
        .ok_or_else(|| f2fs_corrupt("summary start overflows"))?;
    let (jblk, joff) = if flags & CP_COMPACT_SUM_FLAG != 0 {
        (sum_start, SUM_JOURNAL_SIZE)
    } else {
        (sum_start + COLD_DATA, SUM_ENTRIES_BYTES)
    };
    let jb = dev.read_vec(jblk * BLOCK, BLOCK as usize)?;
    let n_sits = usize::from(le16(&jb, joff).unwrap_or(0));
    if n_sits > SIT_JOURNAL_MAX {
        return Err(f2fs_corrupt(format!("SIT journal claims {n_sits} entries")));
    }
    let mut journal = std::collections::HashMap::new();
    for k in 0..n_sits {
        let e = joff + 2 + k * SIT_JOURNAL_ENTRY;
        let segno = u64::from(le32(&jb, e).unwrap_or(u32::MAX));
        if segno >= seg_main {
            return Err(f2fs_corrupt(format!("SIT journal names segment {segno}")));
        }
        journal.insert(segno, jb[e + 4..e + 4 + SIT_ENTRY].to_vec());
    }
    let mut open = std::collections::HashSet::new();
    for k in 0..3 {
        open.insert(u64::from(c32(36 + 4 * k)));
        open.insert(u64::from(c32(84 + 4 * k)));
    }

    let mut used = ExtentMap::single(0, main_addr * BLOCK);
    let mut sit_block: Option<(u64, Vec<u8>)> = None;
    for segno in 0..seg_main {
        let seg_base = main_addr + segno * BLOCKS_PER_SEG;
        if open.contains(&segno) {
            used.insert(seg_base * BLOCK, (seg_base + BLOCKS_PER_SEG) * BLOCK);
            continue;
        }
        let entry = match journal.get(&segno) {
            Some(e) => e.as_slice(),
            None => {
                let idx = segno / SIT_PER_BLOCK;
                if sit_block.as_ref().is_none_or(|(i, _)| *i != idx) {
                    let copy = if bit(&sit_bitmap, idx) { sit_blocks } else { 0 };
                    let addr = sit_addr + copy + idx;
                    sit_block = Some((idx, dev.read_vec(addr * BLOCK, BLOCK as usize)?));
                }
                let b = &sit_block
                    .as_ref()
                    .map(|(_, b)| b)
                    .ok_or_else(|| f2fs_corrupt("SIT"))?;
                let o = (segno % SIT_PER_BLOCK) as usize * SIT_ENTRY;
                &b[o..o + SIT_ENTRY]
            }
        };
        let vblocks = u64::from(le16(entry, 0).unwrap_or(0) & 0x3FF);
        let map = &entry[2..66];
        let mut count = 0;
        let mut run: Option<u64> = None;
        for b in 0..=BLOCKS_PER_SEG {
            let set = b < BLOCKS_PER_SEG && bit(map, b);
            count += u64::from(set);
            match (set, run) {
                (true, None) => run = Some(b),
                (false, Some(s)) => {
                    used.insert((seg_base + s) * BLOCK, (seg_base + b) * BLOCK);
                    run = None;
                }
                _ => {}
            }
        }
        // The count and the map are written together; disagreement means damage.
        if count != vblocks {
            return Err(f2fs_corrupt(format!(
                "segment {segno}: {vblocks} valid blocks but {count} bits set"
            )));
        }
    }
    used.insert(main_end * BLOCK, dev.size());
    Ok(super::Usage {
        used,
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}
