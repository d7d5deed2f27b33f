//! XFS superblock probe (big-endian, at byte 0 of the data device), plus recognition of an
//! external XFS log device, which `blkid` reports as "xfs_external_log".

use super::info::{FsInfo, FsType};
use crate::checksum::crc32c;
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be16, be32, be64, le32, uuid_be};

const SB_MAGIC: &[u8; 4] = b"XFSB";
/// Log record header magic of an XFS journal.
const LOG_MAGIC: u32 = 0xFEED_BABE;

/// Recognises XFS (or an external XFS log) in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let sb = dev.read_struct(0, 512)?;
    if sb.starts_with(SB_MAGIC) {
        return superblock(dev, &sb).map(Some);
    }
    let version = be32(&sb, 4).unwrap_or(0);
    if be32(&sb, 0) == Some(LOG_MAGIC) && (version == 1 || version == 2) {
        return Ok(Some(FsInfo {
            ..FsInfo::new(FsType::XfsExternalLog)
        }));
    }
    Ok(None)
}

fn superblock(dev: &dyn ReadAt, sb: &[u8]) -> crate::Result<FsInfo> {
    let corrupt = |d: String| crate::Error::corrupt("XFS superblock", d);
    let g8 = |o: usize| sb.get(o).copied().unwrap_or(0);
    let block_size = be32(sb, 4).unwrap_or(0);
    let dblocks = be64(sb, 8).unwrap_or(0);
    let agblocks = be32(sb, 84).unwrap_or(0);
    let agcount = be32(sb, 88).unwrap_or(0);
    let versionnum = be16(sb, 100).unwrap_or(0);
    let sect_size = be16(sb, 102).unwrap_or(0);
    let block_log = u32::from(g8(120));
    let sect_log = u32::from(g8(121));

    // XFS's own mount-time checks: sizes must be powers of two matching their logs.
    if !block_size.is_power_of_two()
        || !(512..=65536).contains(&block_size)
        || block_size.trailing_zeros() != block_log
    {
        return Err(corrupt(format!(
            "impossible block size {block_size} (log {block_log})"
        )));
    }
    if !sect_size.is_power_of_two()
        || !(512..=32768).contains(&sect_size)
        || u32::from(sect_size).trailing_zeros() != sect_log
    {
        return Err(corrupt(format!(
            "impossible sector size {sect_size} (log {sect_log})"
        )));
    }
    if agcount == 0 || agblocks == 0 || dblocks == 0 {
        return Err(corrupt(format!(
            "empty geometry: {agcount} allocation groups of {agblocks} blocks, {dblocks} blocks"
        )));
    }

    let mut info = FsInfo {
        block_size: Some(block_size),
        version: Some((versionnum & 0xF).to_string()),
        ..FsInfo::new(FsType::Xfs)
    };
    let mut uuid = [0u8; 16];
    if let Some(b) = sb.get(32..48) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    let name = sb.get(108..120).unwrap_or(&[]);
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    let label = String::from_utf8_lossy(&name[..end]).into_owned();
    info.label = (!label.is_empty()).then_some(label);

    // The data device holds agcount groups; the last may be short, never longer.
    if u64::from(agcount).saturating_mul(u64::from(agblocks)) < dblocks {
        info.warnings.push(format!(
            "{dblocks} blocks do not fit in {agcount} allocation groups of {agblocks}"
        ));
    }
    match dblocks.checked_mul(u64::from(block_size)) {
        Some(bytes) => {
            info.declare_size(bytes, dev.size());
        }
        None => info.warnings.push("data block count overflows".into()),
    }
    if be64(sb, 48).unwrap_or(0) == 0 {
        info.features.push("external_log".into());
    }
    if versionnum & 0xF == 5 {
        if be32(sb, 216).unwrap_or(0) & 0x0000_0008 != 0 {
            info.features.push("bigtime".into());
        }
        info.features.push("crc".into());
        let stored = be32(sb, 224).map(u32::swap_bytes).unwrap_or(0);
        // The CRC covers the superblock's whole sector with the crc field itself zeroed.
        let mut copy = dev.read_struct_upto(0, usize::from(sect_size))?;
        if let Some(f) = copy.get_mut(224..228) {
            f.fill(0);
        }
        let len = usize::from(sect_size).min(copy.len());
        let computed = crc32c(&copy[..len]);
        if stored != computed {
            info.warnings.push(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
    }
    Ok(info)
}

/// Free-space B+tree (by block number) magics: v4 and v5 (CRC) forms.
const ABTB: u32 = 0x4142_5442;
const AB3B: u32 = 0x4142_3342;
const AGF_MAGIC: &[u8; 4] = b"XAGF";
/// XFS never builds a B+tree deeper than this (XFS_BTREE_MAXLEVELS).
const MAX_LEVELS: u32 = 9;
/// `sb_features_incompat` bits whose meaning for free space is understood. NEEDSREPAIR (0x10)
/// is deliberately absent: such a filesystem's metadata is not to be trusted.
const INCOMPAT_KNOWN: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;
/// Basic block: the log's and the disk address's unit.
const BB: u64 = 512;
/// How far around the log head cycle numbers are checked and the last record looked for:
/// more than all in-flight log buffers (8 × 256 KiB) can span.
const LOG_WINDOW_BB: u64 = 4096;
const XLOG_UNMOUNT_TRANS: u8 = 0x20;
const XLOG_CLIENT: u8 = 0xAA;
const XLOG_UNMOUNT_TYPE: u16 = 0x556E;

/// Geometry from the superblock that the allocation map needs.
struct Geo {
    block_size: u64,
    sect_size: u64,
    dblocks: u64,
    agblocks: u64,
    agcount: u64,
    agblklog: u32,
    crc: bool,
}

fn xfs_corrupt(what: &'static str, d: impl Into<String>) -> crate::Error {
    crate::Error::corrupt(what, d)
}

/// The bytes of an XFS data device that must be kept: per allocation group, everything the
/// by-block-number free-space B+tree does not list as free. AG headers, the AGFL's blocks,
/// inodes, every other B+tree and the internal log are allocated, so they are kept by
/// construction.
///
/// Refused (the caller keeps everything) when the free-space trees might not be the truth:
/// an unclean log that would still be replayed, an external log that cannot be checked, a
/// realtime device, `needsrepair`, unknown incompatible features, or any structure that fails
/// its checks.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let sb = dev.read_struct(0, 512)?;
    if !sb.starts_with(SB_MAGIC) {
        return Err(crate::Error::Format("no XFS superblock".into()));
    }
    let info = superblock(dev, &sb)?;
    if !info.warnings.is_empty() {
        return Err(xfs_corrupt("XFS superblock", info.warnings.join("; ")));
    }
    let g32 = |o| u64::from(be32(&sb, o).unwrap_or(0));
    let version = be16(&sb, 100).unwrap_or(0) & 0xF;
    if version != 4 && version != 5 {
        return Err(crate::Error::Unsupported(format!("XFS version {version}")));
    }
    if be64(&sb, 16).unwrap_or(0) != 0 || be64(&sb, 24).unwrap_or(0) != 0 {
        return Err(crate::Error::Unsupported(
            "XFS with a realtime device".into(),
        ));
    }
    if sb.get(126).copied().unwrap_or(0) != 0 {
        return Err(xfs_corrupt(
            "XFS superblock",
            "mkfs did not finish (sb_inprogress)",
        ));
    }
    if version == 5 {
        let incompat = be32(&sb, 216).unwrap_or(0);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(crate::Error::Unsupported(format!(
                "XFS incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            )));
        }
    }
    let geo = Geo {
        block_size: g32(4),
        sect_size: u64::from(be16(&sb, 102).unwrap_or(0)),
        dblocks: be64(&sb, 8).unwrap_or(0),
        agblocks: g32(84),
        agcount: g32(88),
        agblklog: u32::from(sb.get(124).copied().unwrap_or(0)),
        crc: version == 5,
    };
    // agblklog is the bit width of an AG-relative block number in a packed fsblock.
    if geo.agblklog > 31 || geo.agblocks > 1u64 << geo.agblklog {
        return Err(xfs_corrupt(
            "XFS superblock",
            "agblklog too small for agblocks",
        ));
    }
    if geo.agcount.saturating_sub(1).saturating_mul(geo.agblocks) >= geo.dblocks
        || geo.agcount.saturating_mul(geo.agblocks) < geo.dblocks
    {
        return Err(xfs_corrupt(
            "XFS superblock",
            "allocation group count does not match the block count",
        ));
    }
    let fs_bytes = geo
        .dblocks
        .checked_mul(geo.block_size)
        .ok_or_else(|| xfs_corrupt("XFS superblock", "size overflows"))?;
    if fs_bytes > dev.size() {
        return Err(xfs_corrupt(
            "XFS superblock",
            "filesystem larger than the volume",
        ));
    }

    let logstart = be64(&sb, 48).unwrap_or(0);
    if logstart == 0 {
        return Err(crate::Error::Unsupported(
            "XFS with an external log: cannot tell whether it was cleanly unmounted".into(),
        ));
    }
    let log_ag = logstart >> geo.agblklog;
    let log_agbno = logstart & ((1u64 << geo.agblklog) - 1);
    let log_off = log_ag
        .checked_mul(geo.agblocks)
        .and_then(|b| b.checked_add(log_agbno))
        .and_then(|b| b.checked_mul(geo.block_size))
        .ok_or_else(|| xfs_corrupt("XFS superblock", "log start overflows"))?;
    let log_len = g32(96).saturating_mul(geo.block_size);
    if log_len == 0 || log_off.checked_add(log_len).is_none_or(|e| e > fs_bytes) {
        return Err(xfs_corrupt(
            "XFS superblock",
            "log lies outside the filesystem",
        ));
    }
    check_log_clean(dev, log_off, log_len / BB)?;

    let mut used = ExtentMap::new();
    let mut headers = ExtentMap::new();
    for ag in 0..geo.agcount {
        let ag_start = ag * geo.agblocks;
        let ag_len = geo.agblocks.min(geo.dblocks - ag_start);
        let free = ag_free(dev, &geo, ag, ag_len)?;
        // free is ascending and disjoint (checked), so the gaps are appended in order.
        let mut pos = 0u64;
        for (s, e) in free.into_iter().chain(std::iter::once((ag_len, ag_len))) {
            if s > pos {
                used.insert(
                    (ag_start + pos) * geo.block_size,
                    (ag_start + s) * geo.block_size,
                );
            }
            pos = e;
        }
        // The AG's header sectors (SB, AGF, AGI, AGFL) never appear as free, but say so
        // explicitly in case a block is smaller than four sectors' worth.
        let hdr = (
            ag_start * geo.block_size,
            ag_start * geo.block_size + 4 * geo.sect_size,
        );
        if hdr.0 + 4 * geo.sect_size > (ag_start + ag_len) * geo.block_size {
            return Err(xfs_corrupt(
                "XFS AG",
                "allocation group smaller than its headers",
            ));
        }
        headers.insert(hdr.0, hdr.1);
    }
    Ok(super::info::Usage {
        used: used.union(&headers),
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}

/// Free extents `(start, end)` in AG-relative blocks, ascending and disjoint, read from the
/// AGF's by-block-number B+tree and cross-checked against the AGF's free block count.
fn ag_free(dev: &dyn ReadAt, geo: &Geo, ag: u64, ag_len: u64) -> crate::Result<Vec<(u64, u64)>> {
    let ag_off = ag * geo.agblocks * geo.block_size;
    let agf = dev.read_struct(ag_off + geo.sect_size, geo.sect_size as usize)?;
    let c = |d: String| xfs_corrupt("XFS AGF", format!("AG {ag}: {d}"));
    let a32 = |o| u64::from(be32(&agf, o).unwrap_or(0));
    if !agf.starts_with(AGF_MAGIC) || a32(4) != 1 {
        return Err(c("bad magic or version".into()));
    }
    if a32(8) != ag || a32(12) != ag_len {
        return Err(c(format!("says AG {} of {} blocks", a32(8), a32(12))));
    }
    if geo.crc {
        verify_crc(&agf, 216).map_err(|d| c(format!("checksum {d}")))?;
    }
    let root = a32(16);
    let levels = a32(28) as u32;
    let freeblks = a32(52);
    if !(1..=MAX_LEVELS).contains(&levels) {
        return Err(c(format!("free-space tree claims {levels} levels")));
    }
    let mut free: Vec<(u64, u64)> = Vec::new();
    let mut visited = std::collections::HashSet::new();
    // Depth-first, children pushed in reverse so leaves are reached in key order.
    let mut stack = vec![(root, levels - 1)];
    let bs = geo.block_size as usize;
    let hdr = if geo.crc { 56 } else { 16 };
    while let Some((bno, level)) = stack.pop() {
        // Each block belongs to the tree once; a repeat is a loop or a shared subtree.
        if bno == 0 || bno >= ag_len || !visited.insert(bno) {
            return Err(c(format!(
                "free-space tree block {bno} out of range or repeated"
            )));
        }
        let blk = dev.read_struct(ag_off + bno * geo.block_size, bs)?;
        let b32 = |o| be32(&blk, o).unwrap_or(0);
        let magic = b32(0);
        if magic != if geo.crc { AB3B } else { ABTB } {
            return Err(c(format!("block {bno}: bad magic {magic:#x}")));
        }
        if geo.crc {
            verify_crc(&blk, 52).map_err(|d| c(format!("block {bno}: checksum {d}")))?;
            let daddr = be64(&blk, 16).unwrap_or(0);
            let want = (ag_off + bno * geo.block_size) / BB;
            if daddr != want || u64::from(b32(48)) != ag {
                return Err(c(format!("block {bno}: wrong self address or owner")));
            }
        }
        let blk_level = u32::from(be16(&blk, 4).unwrap_or(0));
        let nrecs = usize::from(be16(&blk, 6).unwrap_or(0));
        if blk_level != level {
            return Err(c(format!(
                "block {bno}: level {blk_level}, expected {level}"
            )));
        }
        let maxrecs = if level == 0 {
            (bs - hdr) / 8
        } else {
            (bs - hdr) / 12
        };
        if nrecs > maxrecs || (nrecs == 0 && level > 0) {
            return Err(c(format!("block {bno}: {nrecs} records")));
        }
        if level == 0 {
            for r in 0..nrecs {
                let s = u64::from(b32(hdr + 8 * r));
                let n = u64::from(b32(hdr + 8 * r + 4));
                let e = s + n;
                if n == 0 || e > ag_len || free.last().is_some_and(|&(_, pe)| s < pe) {
                    return Err(c(format!("free extent {s}+{n} overlaps or out of order")));
                }
                free.push((s, e));
            }
        } else {
            let ptrs = hdr + 8 * maxrecs;
            for r in (0..nrecs).rev() {
                stack.push((u64::from(b32(ptrs + 4 * r)), level - 1));
            }
        }
    }
    let total: u64 = free.iter().map(|(s, e)| e - s).sum();
    if total != freeblks {
        return Err(c(format!(
            "free-space tree holds {total} blocks but the AGF counts {freeblks}"
        )));
    }
    Ok(free)
}

/// Checks the little-endian CRC32C at `at` over the whole buffer (with the field zeroed).
fn verify_crc(buf: &[u8], at: usize) -> Result<(), String> {
    let stored = le32(buf, at).ok_or("field outside the block")?;
    let mut copy = buf.to_vec();
    copy[at..at + 4].fill(0);
    let computed = crc32c(&copy);
    if stored != computed {
        return Err(format!(
            "mismatch (stored {stored:#x}, computed {computed:#x})"
        ));
    }
    Ok(())
}

/// Cycle number of one log basic block: record headers carry it after their magic, every
/// other block has it stamped over its first word.
fn cycle_of(bb: &[u8]) -> (u32, bool) {
    let w = be32(bb, 0).unwrap_or(0);
    if w == LOG_MAGIC {
        (be32(bb, 4).unwrap_or(0), true)
    } else {
        (w, false)
    }
}

/// Succeeds only if the internal log's newest record is an unmount record, i.e. there is
/// nothing to replay and the free-space trees on disk are the truth. Finds the head the way
/// log recovery does (the cycle number drops there), verifies the cycle numbers around it and
/// refuses anything ambiguous.
fn check_log_clean(dev: &dyn ReadAt, log_off: u64, nbb: u64) -> crate::Result<()> {
    let dirty = |d: &str| {
        crate::Error::Unsupported(format!(
            "XFS log is not cleanly unmounted ({d}); mount and unmount it to replay"
        ))
    };
    if nbb < 2 {
        return Err(xfs_corrupt("XFS log", "empty"));
    }
    let read_bb = |i: u64| dev.read_struct(log_off + i * BB, BB as usize);
    let cyc = |i: u64| read_bb(i).map(|b| cycle_of(&b).0);
    let first = cyc(0)?;
    let last = cyc(nbb - 1)?;
    if first == 0 {
        // A zeroed log has never been written: nothing to replay.
        return Ok(());
    }
    let head = if first == last {
        nbb
    } else {
        if !(last == first - 1 || last == 0) {
            return Err(dirty("cycle numbers do not form a log"));
        }
        // [0, head) carries `first`; binary search assumes that and the window check below
        // verifies it near the head.
        let (mut lo, mut hi) = (0u64, nbb - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cyc(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    // Window before the head: all `first`; window after it (if not wrapped): all `last`.
    let w = LOG_WINDOW_BB.min(nbb);
    let before_start = head.saturating_sub(w);
    let before = dev.read_struct(
        log_off + before_start * BB,
        ((head - before_start) * BB) as usize,
    )?;
    let mut last_hdr = None;
    for (k, bb) in before.chunks(BB as usize).enumerate() {
        let (c, is_hdr) = cycle_of(bb);
        if c != first {
            return Err(dirty("mixed cycle numbers before the head"));
        }
        if is_hdr {
            last_hdr = Some(k);
        }
    }
    if head < nbb {
        let after_end = (head + w).min(nbb);
        let after = dev.read_struct(log_off + head * BB, ((after_end - head) * BB) as usize)?;
        if after.chunks(BB as usize).any(|bb| cycle_of(bb).0 != last) {
            return Err(dirty("mixed cycle numbers after the head"));
        }
    }
    let Some(k) = last_hdr else {
        return Err(dirty("no record header near the head"));
    };
    let hdr = &before[k * BB as usize..(k + 1) * BB as usize];
    let h_version = be32(hdr, 8).unwrap_or(0);
    let h_size = u64::from(be32(hdr, 320).unwrap_or(0));
    // v2 logs with big buffers spread the header over several blocks (one per 32 KiB).
    let hblks = if h_version & 2 != 0 && h_size > 32768 {
        h_size.div_ceil(32768)
    } else {
        1
    };
    let data_bb = before_start + k as u64 + hblks;
    if data_bb >= head {
        return Err(dirty("last record is truncated"));
    }
    let op = read_bb(data_bb)?;
    let num_ops = be32(hdr, 40).unwrap_or(0);
    let clientid = op.get(8).copied().unwrap_or(0);
    let flags = op.get(9).copied().unwrap_or(0);
    // The unmount payload is an in-memory struct written in the host's byte order.
    let magic = be16(&op, 12).unwrap_or(0);
    let magic_ok = magic == XLOG_UNMOUNT_TYPE || magic.swap_bytes() == XLOG_UNMOUNT_TYPE;
    if num_ops != 1 || clientid != XLOG_CLIENT || flags & XLOG_UNMOUNT_TRANS == 0 || !magic_ok {
        return Err(dirty("last record is not an unmount record"));
    }
    Ok(())
}
