//! btrfs superblock probe (primary copy at 64 KiB).

use super::info::{FsInfo, FsType};
use crate::checksum::crc32c;
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64, uuid_be};

const SB_OFFSET: u64 = 64 << 10;
const SB_LEN: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const CSUM_CRC32C: u16 = 0;
/// Offset of the device item's UUID (dev_item at 0xC9, uuid 66 bytes into it).
const DEV_UUID: usize = 0xC9 + 66;
const LABEL: usize = 0x12B;
const LABEL_LEN: usize = 256;

/// Recognises btrfs in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < SB_OFFSET + SB_LEN as u64 {
        return Ok(None);
    }
    let sb = dev.read_struct(SB_OFFSET, SB_LEN)?;
    if sb.get(0x40..0x48) != Some(MAGIC) {
        return Ok(None);
    }
    let g32 = |o| le32(&sb, o).unwrap_or(0);
    let g64 = |o| le64(&sb, o).unwrap_or(0);
    let sectorsize = g32(0x90);
    let nodesize = g32(0x94);
    // The magic is 8 bytes at a fixed offset, so bad geometry is damage to report, not
    // evidence of another filesystem (blkid identifies these too).
    let mut warnings = Vec::new();
    let sector_ok = sectorsize.is_power_of_two() && (4096..=65536).contains(&sectorsize);
    if !sector_ok {
        warnings.push(format!(
            "impossible sector size {sectorsize}: superblock is corrupt"
        ));
    }
    if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > 65536 {
        warnings.push(format!(
            "impossible node size {nodesize}: superblock is corrupt"
        ));
    }
    let mut info = FsInfo {
        block_size: sector_ok.then_some(sectorsize),
        warnings,
        ..FsInfo::new(FsType::Btrfs)
    };
    let uuid_at = |o: usize| {
        let mut u = [0u8; 16];
        u.copy_from_slice(sb.get(o..o + 16)?);
        (u != [0; 16]).then(|| uuid_be(&u))
    };
    info.uuid = uuid_at(0x20);
    let l = sb.get(LABEL..LABEL + LABEL_LEN).unwrap_or(&[]);
    let end = l.iter().position(|&c| c == 0).unwrap_or(l.len());
    let label = String::from_utf8_lossy(&l[..end]).into_owned();
    info.label = (!label.is_empty()).then_some(label);

    let total = g64(0x70);
    info.size = Some(total);
    // On a multi-device filesystem total_bytes spans all devices; this device's share is in
    // its dev_item.
    let num_devices = g64(0x88);
    let dev_total = le64(&sb, 0xC9 + 8).unwrap_or(0);
    if num_devices > 1 {
        info.features.push(format!("devices={num_devices}"));
    }
    if let Some(sub) = uuid_at(DEV_UUID) {
        info.features.push(format!("dev_uuid={sub}"));
    }
    let local = if num_devices > 1 { dev_total } else { total };
    info.warn_if_larger(local, dev.size());
    if total == 0 || num_devices == 0 {
        info.warnings.push(format!(
            "superblock says {total} bytes on {num_devices} devices: corrupt"
        ));
    }
    if le16(&sb, 0xC4) == Some(CSUM_CRC32C) {
        let stored = g32(0);
        let computed = crc32c(sb.get(0x20..).unwrap_or(&[]));
        if stored != computed {
            info.warnings.push(format!(
                "superblock checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
    }
    if g64(0x60) != 0 {
        info.features.push("log_tree".into());
    }
    Ok(Some(info))
}

/// Where superblock copies live (when inside the device).
const SB_MIRRORS: [u64; 3] = [64 << 10, 64 << 20, 256 << 30];
/// btrfs never touches the first MiB (bootloaders live there); it belongs to the volume.
const RESERVED_HEAD: u64 = 1 << 20;
const SYS_CHUNK_ARRAY: usize = 0x32B;
const SYS_CHUNK_ARRAY_MAX: usize = 2048;
const CHUNK_ITEM_KEY: u8 = 228;
const CHUNK_ITEM_LEN: usize = 48;
const STRIPE_LEN: usize = 32;
const KEY_LEN: usize = 17;
const NODE_HEADER: usize = 101;
/// BTRFS_MAX_LEVEL.
const MAX_LEVEL: u8 = 8;
/// Far more chunk-tree nodes than any real filesystem has (each holds dozens of chunks).
const MAX_NODES: usize = 1 << 16;
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// Zoned filesystems keep their superblocks in a log of zones, not at fixed offsets.
const INCOMPAT_ZONED: u64 = 1 << 12;

/// One chunk: logical start and length, and the physical starts of its stripes on this device.
struct Chunk {
    logical: u64,
    length: u64,
    stripes: Vec<u64>,
}

fn btrfs_corrupt(d: impl Into<String>) -> crate::Error {
    crate::Error::corrupt("btrfs chunk map", d)
}

/// Parses a chunk item at `b[0..]`, keeping the stripes on device `devid`.
fn chunk_item(b: &[u8], logical: u64, devid: u64) -> crate::Result<(Chunk, usize)> {
    let length = le64(b, 0).ok_or_else(|| btrfs_corrupt("chunk item truncated"))?;
    let num_stripes = usize::from(le16(b, 44).unwrap_or(0));
    let len = CHUNK_ITEM_LEN + num_stripes * STRIPE_LEN;
    if num_stripes == 0 || b.len() < len || length == 0 {
        return Err(btrfs_corrupt(format!(
            "chunk at {logical}: {num_stripes} stripes, length {length}"
        )));
    }
    let mut stripes = Vec::with_capacity(num_stripes);
    for i in 0..num_stripes {
        let s = CHUNK_ITEM_LEN + i * STRIPE_LEN;
        let dev = le64(b, s).unwrap_or(0);
        if dev != devid {
            return Err(btrfs_corrupt(format!(
                "chunk at {logical} has a stripe on device {dev}, not this device {devid}"
            )));
        }
        stripes.push(le64(b, s + 8).unwrap_or(0));
    }
    Ok((
        Chunk {
            logical,
            length,
            stripes,
        },
        len,
    ))
}

/// Physical offset of `logical..logical+len` through the bootstrap (system) chunks.
fn map_logical(sys: &[Chunk], logical: u64, len: u64) -> crate::Result<u64> {
    for c in sys {
        let inside = logical >= c.logical
            && logical
                .checked_add(len)
                .is_some_and(|e| e <= c.logical.saturating_add(c.length));
        if inside {
            // Any stripe holds a full copy for the profiles a system chunk may use on one
            // device (single, DUP).
            return c.stripes[0]
                .checked_add(logical - c.logical)
                .ok_or_else(|| btrfs_corrupt("stripe offset overflows"));
        }
    }
    Err(btrfs_corrupt(format!(
        "chunk tree block {logical} is in no system chunk"
    )))
}

/// The bytes of a single-device btrfs that must be kept: the first MiB, the superblock
/// copies, and every allocated chunk's stripes (chunks are the unit btrfs allocates device
/// space in; space outside every chunk holds nothing the filesystem reads).
///
/// Refused (the caller keeps everything) for multi-device and zoned filesystems, non-crc32c
/// checksums, and any chunk-tree node that fails its checks.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let sb = dev.read_struct(SB_OFFSET, SB_LEN)?;
    if sb.get(0x40..0x48) != Some(MAGIC) {
        return Err(crate::Error::Format("no btrfs superblock".into()));
    }
    let g64 = |o| le64(&sb, o).unwrap_or(0);
    if le16(&sb, 0xC4) != Some(CSUM_CRC32C) {
        return Err(crate::Error::Unsupported(
            "btrfs checksum other than crc32c".into(),
        ));
    }
    let stored = le32(&sb, 0).unwrap_or(0);
    if stored != crc32c(&sb[0x20..]) {
        return Err(crate::Error::corrupt(
            "btrfs superblock",
            "checksum mismatch",
        ));
    }
    if g64(0x88) != 1 {
        return Err(crate::Error::Unsupported(format!(
            "btrfs on {} devices",
            g64(0x88)
        )));
    }
    let incompat = g64(0xBC);
    if incompat & INCOMPAT_ZONED != 0 {
        return Err(crate::Error::Unsupported("zoned btrfs".into()));
    }
    let nodesize = u64::from(le32(&sb, 0x94).unwrap_or(0));
    if !nodesize.is_power_of_two() || !(4096..=65536).contains(&nodesize) {
        return Err(crate::Error::corrupt("btrfs superblock", "bad node size"));
    }
    let devid = g64(0xC9);
    let fsid = if incompat & INCOMPAT_METADATA_UUID != 0 {
        &sb[0x23B..0x24B]
    } else {
        &sb[0x20..0x30]
    };

    // Bootstrap: the system chunks, which hold the chunk tree itself.
    let arr_len = le32(&sb, 0xA0).unwrap_or(0) as usize;
    if arr_len > SYS_CHUNK_ARRAY_MAX {
        return Err(btrfs_corrupt("sys_chunk_array too long"));
    }
    let arr = &sb[SYS_CHUNK_ARRAY..SYS_CHUNK_ARRAY + arr_len];
    let mut sys = Vec::new();
    let mut p = 0;
    while p < arr.len() {
        let key = arr
            .get(p..p + KEY_LEN)
            .ok_or_else(|| btrfs_corrupt("sys_chunk_array key truncated"))?;
        if key[8] != CHUNK_ITEM_KEY {
            return Err(btrfs_corrupt("sys_chunk_array holds a non-chunk item"));
        }
        let logical = le64(key, 9).unwrap_or(0);
        let (c, n) = chunk_item(&arr[p + KEY_LEN..], logical, devid)?;
        sys.push(c);
        p += KEY_LEN + n;
    }
    if sys.is_empty() {
        return Err(btrfs_corrupt("no system chunks"));
    }

    // The chunk tree: every chunk. Levels strictly decrease from the root and no block is
    // visited twice, so the walk ends on any input.
    let mut chunks = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let root_level = sb.get(0xC7).copied().unwrap_or(0);
    if root_level >= MAX_LEVEL {
        return Err(btrfs_corrupt("chunk tree too deep"));
    }
    let mut stack = vec![(g64(0x58), root_level)];
    while let Some((logical, level)) = stack.pop() {
        if !visited.insert(logical) || visited.len() > MAX_NODES {
            return Err(btrfs_corrupt(format!(
                "chunk tree block {logical} repeated or tree too large"
            )));
        }
        let phys = map_logical(&sys, logical, nodesize)?;
        let node = dev.read_struct(phys, nodesize as usize)?;
        let stored = le32(&node, 0).unwrap_or(0);
        if stored != crc32c(&node[0x20..]) {
            return Err(btrfs_corrupt(format!("node {logical}: checksum mismatch")));
        }
        if node[0x20..0x30] != *fsid || le64(&node, 48) != Some(logical) || node[100] != level {
            return Err(btrfs_corrupt(format!(
                "node {logical}: wrong fsid, address or level"
            )));
        }
        let nritems = le32(&node, 96).unwrap_or(0) as usize;
        if level > 0 {
            if nritems == 0 || nritems > (node.len() - NODE_HEADER) / 33 {
                return Err(btrfs_corrupt(format!("node {logical}: {nritems} pointers")));
            }
            for i in (0..nritems).rev() {
                let ptr = le64(&node, NODE_HEADER + i * 33 + KEY_LEN).unwrap_or(0);
                stack.push((ptr, level - 1));
            }
            continue;
        }
        if nritems > (node.len() - NODE_HEADER) / 25 {
            return Err(btrfs_corrupt(format!("leaf {logical}: {nritems} items")));
        }
        for i in 0..nritems {
            let it = NODE_HEADER + i * 25;
            if node[it + 8] != CHUNK_ITEM_KEY {
                continue;
            }
            let key_off = le64(&node, it + 9).unwrap_or(0);
            let off = le32(&node, it + KEY_LEN).unwrap_or(0) as usize;
            let size = le32(&node, it + KEY_LEN + 4).unwrap_or(0) as usize;
            let data = NODE_HEADER
                .checked_add(off)
                .and_then(|s| Some(s..s.checked_add(size)?))
                .and_then(|r| node.get(r))
                .ok_or_else(|| btrfs_corrupt(format!("leaf {logical}: item outside the leaf")))?;
            chunks.push(chunk_item(data, key_off, devid)?.0);
        }
    }
    if chunks.is_empty() {
        return Err(btrfs_corrupt("chunk tree holds no chunks"));
    }

    let size = dev.size();
    let mut used = ExtentMap::single(0, RESERVED_HEAD.min(size));
    for m in SB_MIRRORS {
        if m + SB_LEN as u64 <= size {
            used.insert(m, m + SB_LEN as u64);
        }
    }
    // Over-marking is safe: every stripe is kept at the chunk's full logical length, which is
    // exact for single/DUP/RAID1 and more than enough for striped profiles.
    let mut ranges = Vec::new();
    for c in chunks.iter().chain(&sys) {
        for &s in &c.stripes {
            let end = s
                .checked_add(c.length)
                .filter(|&e| e <= size)
                .ok_or_else(|| {
                    btrfs_corrupt(format!(
                        "chunk at {} has a stripe at {s}+{} past the device end {size}",
                        c.logical, c.length
                    ))
                })?;
            ranges.push((s, end));
        }
    }
    used = used.union(&ExtentMap::from_ranges(ranges));
    Ok(super::info::Usage {
        used,
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}
