//! FAT12/FAT16/FAT32 ("vfat") boot sector probe.
//!
//! FAT has no real magic number, so the BIOS Parameter Block is validated the way `blkid`
//! does (jump or type string, power-of-two sector and cluster sizes, reserved sectors, FAT
//! count, media byte) before anything is believed. The FAT type is decided by the cluster
//! count, as the specification demands, not by the informational type string.
//!
//! The label comes from the volume-label entry in the root directory, which is what DOS,
//! Windows and `blkid` show; the copy in the boot sector is often stale.

use super::info::{FsInfo, FsType};
use super::xcheck::Unmapped;
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32};

/// Largest cluster counts of each FAT width (per Microsoft's spec, as used by blkid).
const FAT12_MAX: u64 = 0xFF4;
const FAT16_MAX: u64 = 0xFFF4;
const FAT32_MAX: u64 = 0x0FFF_FFF6;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0F;

/// Bound on root-directory clusters followed on FAT32, against loops and huge chains.
const MAX_ROOT_CLUSTERS: usize = 100;
/// Bound on bytes read while looking for the label.
const MAX_ROOT_BYTES: u64 = 4 << 20;

/// Parsed, validated BPB geometry.
struct Geometry {
    sector_size: u32,
    cluster_sectors: u32,
    reserved: u64,
    fats: u64,
    fat_length: u64,
    root_entries: u64,
    total_sectors: u64,
    clusters: u64,
    fat32: bool,
}

impl Geometry {
    fn first_data_sector(&self) -> Option<u64> {
        let root_sectors = (self.root_entries * 32).div_ceil(u64::from(self.sector_size));
        self.reserved
            .checked_add(self.fats.checked_mul(self.fat_length)?)?
            .checked_add(root_sectors)
    }
    fn cluster_offset(&self, c: u64) -> Option<u64> {
        let sec = self.first_data_sector()?.checked_add(
            c.checked_sub(2)?
                .checked_mul(u64::from(self.cluster_sectors))?,
        )?;
        sec.checked_mul(u64::from(self.sector_size))
    }
    fn cluster_bytes(&self) -> u32 {
        self.sector_size * self.cluster_sectors
    }
}

fn has_magic(bs: &[u8]) -> bool {
    let at = |off: usize, m: &[u8]| bs.get(off..off + m.len()) == Some(m);
    at(0x52, b"MSWIN")
        || at(0x52, b"FAT32   ")
        || at(0x36, b"MSDOS")
        || at(0x36, b"FAT16   ")
        || at(0x36, b"FAT12   ")
        || at(0x36, b"FAT     ")
        || matches!(bs.first(), Some(0xEB) | Some(0xE9))
        || at(0x1FE, &[0x55, 0xAA])
}

fn geometry(bs: &[u8]) -> Option<Geometry> {
    let at = |off: usize, m: &[u8]| bs.get(off..off + m.len()) == Some(m);
    // Other filesystems that share the DOS boot sector layout.
    if at(0x36, b"JFS     ") || at(0x36, b"HPFS    ") || at(3, b"NTFS    ") || at(3, b"EXFAT   ") {
        return None;
    }
    let media = *bs.get(0x15)?;
    if !(media >= 0xF8 || media == 0xF0) {
        return None;
    }
    let sector_size = u32::from(le16(bs, 0x0B)?);
    if !sector_size.is_power_of_two() || !(512..=4096).contains(&sector_size) {
        return None;
    }
    let cluster_sectors = u32::from(*bs.get(0x0D)?);
    if !cluster_sectors.is_power_of_two() {
        return None;
    }
    let reserved = u64::from(le16(bs, 0x0E)?);
    let fats = u64::from(*bs.get(0x10)?);
    if reserved == 0 || fats == 0 {
        return None;
    }
    let root_entries = u64::from(le16(bs, 0x11)?);
    let total_sectors = match le16(bs, 0x13)? {
        0 => u64::from(le32(bs, 0x20)?),
        n => u64::from(n),
    };
    let fat16_len = u64::from(le16(bs, 0x16)?);
    let fat32_len = u64::from(le32(bs, 0x24)?);
    let fat32 = fat16_len == 0 && fat32_len != 0;
    let fat_length = if fat16_len != 0 { fat16_len } else { fat32_len };
    if fat_length == 0 {
        return None;
    }
    let mut g = Geometry {
        sector_size,
        cluster_sectors,
        reserved,
        fats,
        fat_length,
        root_entries,
        total_sectors,
        clusters: 0,
        fat32,
    };
    let data = total_sectors.checked_sub(g.first_data_sector()?)?;
    g.clusters = data / u64::from(cluster_sectors);
    let max = if fat32 { FAT32_MAX } else { FAT16_MAX };
    if g.clusters > max {
        return None;
    }
    Some(g)
}

/// Recognises FAT12/16/32 in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_struct(0, 512)?;
    if !has_magic(&bs) {
        return Ok(None);
    }
    let Some(g) = geometry(&bs) else {
        return Ok(None);
    };

    let version = if g.fat32 {
        "FAT32"
    } else if g.clusters > FAT12_MAX {
        "FAT16"
    } else {
        "FAT12"
    };
    // The extended BPB (serial, label) sits at a different offset on FAT32.
    let ebpb = if g.fat32 { 0x40 } else { 0x24 };
    let sig = bs.get(ebpb + 2).copied().unwrap_or(0);
    let mut info = FsInfo {
        version: Some(version.to_string()),
        block_size: Some(g.cluster_bytes()),
        ..FsInfo::new(FsType::Vfat)
    };
    if sig == 0x29 || sig == 0x28 {
        if let Some(s) = bs.get(ebpb + 3..ebpb + 7) {
            info.uuid = Some(format!("{:02X}{:02X}-{:02X}{:02X}", s[3], s[2], s[1], s[0]));
        }
    }
    let boot_label = if sig == 0x29 {
        bs.get(ebpb + 7..ebpb + 18)
    } else {
        None
    };

    let root_label = find_root_label(dev, &g);
    if let Err(e) = &root_label {
        info.warnings.push(format!(
            "could not read the root directory for the label: {}",
            e.chain()
        ));
    }
    // Like blkid (and Windows), only the root-directory entry is the label; the boot sector
    // copy is stale after many relabelling tools and is used only when the root directory
    // could not be read at all.
    info.label = match root_label {
        Ok(l) => l.as_deref().and_then(decode_label),
        Err(_) => boot_label
            .filter(|l| *l != b"NO NAME    ")
            .and_then(decode_label),
    };

    match g.total_sectors.checked_mul(u64::from(g.sector_size)) {
        Some(bytes) => {
            info.declare_size(bytes, dev.size());
        }
        None => info
            .warnings
            .push("total sector count overflows".to_string()),
    }
    Ok(Some(info))
}

/// Scans one directory buffer for a volume-label entry. `Err(())` means the end-of-directory
/// marker was reached, so callers stop following the chain.
fn scan_dir(buf: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    for e in buf.chunks_exact(32) {
        let first = e[0];
        if first == 0 {
            return Err(());
        }
        let attr = e[11];
        if first == 0xE5 || attr & 0x3F == ATTR_LONG_NAME {
            continue;
        }
        if attr & (ATTR_VOLUME_ID | ATTR_DIR) == ATTR_VOLUME_ID {
            // A volume label owns no clusters; an entry that does is damage, not a label.
            if le16(e, 20) != Some(0) || le16(e, 26) != Some(0) {
                continue;
            }
            let mut name = e[0..11].to_vec();
            // 0x05 stands for a leading 0xE5, which would otherwise mean "deleted".
            if name[0] == 0x05 {
                name[0] = 0xE5;
            }
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn find_root_label(dev: &dyn ReadAt, g: &Geometry) -> crate::Result<Option<Vec<u8>>> {
    let ss = u64::from(g.sector_size);
    if !g.fat32 {
        let start = g
            .reserved
            .checked_add(g.fats.saturating_mul(g.fat_length))
            .and_then(|s| s.checked_mul(ss));
        let Some(start) = start else { return Ok(None) };
        let len = (g.root_entries * 32).min(MAX_ROOT_BYTES) as usize;
        let buf = dev.read_struct_upto(start, len)?;
        return Ok(scan_dir(&buf).unwrap_or(None));
    }
    let bs = dev.read_struct(0, 512)?;
    let mut c = u64::from(le32(&bs, 0x2C).unwrap_or(0) & 0x0FFF_FFFF);
    let cbytes = u64::from(g.cluster_bytes());
    let fat_start = g.reserved * ss;
    let mut read = 0u64;
    for _ in 0..MAX_ROOT_CLUSTERS {
        if c < 2 || c > g.clusters + 1 || read >= MAX_ROOT_BYTES {
            break;
        }
        let Some(off) = g.cluster_offset(c) else {
            break;
        };
        let buf = dev.read_struct_upto(off, cbytes as usize)?;
        read += cbytes;
        match scan_dir(&buf) {
            Ok(Some(l)) => return Ok(Some(l)),
            Ok(None) => {}
            Err(()) => break,
        }
        let mut ent = [0u8; 4];
        let Some(pos) = c.checked_mul(4).and_then(|x| x.checked_add(fat_start)) else {
            break;
        };
        dev.read_struct_into(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent) & 0x0FFF_FFFF);
    }
    Ok(None)
}

/// 8-bit label bytes → text. DOS labels are in the OEM codepage; code page 850 (DOS
/// Western Europe) covers what Western formatters write, and ASCII is unchanged.
fn decode_label(raw: &[u8]) -> Option<String> {
    let s: String = raw
        .iter()
        .map(|&b| {
            if b < 0x80 {
                b as char
            } else {
                CP850_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('?')
            }
        })
        .collect();
    let t = s.trim_end_matches([' ', '\0']).to_string();
    (!t.is_empty()).then_some(t)
}

/// Code page 850, bytes 0x80..=0xFF.
const CP850_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅ\
ÉæÆôöòûùÿÖÜø£Ø×ƒ\
áíóúñÑªº¿®¬½¼¡«»\
░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐\
└┴┬├─┼ãÃ╚╔╩╦╠═╬¤\
ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀\
ÓßÔÒõÕµþÞÚÛÙýÝ¯´\
\u{AD}±‗¾¶§÷¸°¨·¹³²■\u{A0}";

/// FAT entries examined per read, per copy (even, so FAT12 entry pairs never straddle reads).
const USED_CHUNK_ENTRIES: u64 = 1 << 20;

/// The bytes of this FAT volume that must be kept: the reserved sectors (boot sector, FSInfo,
/// backup boot sector), every FAT copy, the FAT12/16 root directory, every cluster whose entry
/// is non-zero in any FAT copy (allocated, end-of-chain or bad), and the data-region tail that
/// does not fill a whole cluster.
///
/// Clusters the BPB counts but the FAT has no room for, and entries that lie past the end of
/// the source, are kept: nothing says they are free.
///
/// The FAT is then cross-checked against the directory tree (`cross_check` below): a cluster a
/// directory entry or a chain reaches that every FAT copy calls free is kept too, and reported.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let corrupt = |d: &str| crate::Error::corrupt("FAT boot sector", d.to_string());
    let bs = dev.read_struct(0, 512)?;
    let g = geometry(&bs).ok_or_else(|| corrupt("BIOS parameter block is not valid FAT"))?;
    let ss = u64::from(g.sector_size);
    let cbytes = u64::from(g.cluster_bytes());
    let bits: u64 = if g.fat32 {
        32
    } else if g.clusters > FAT12_MAX {
        16
    } else {
        12
    };
    let data_start = g
        .first_data_sector()
        .and_then(|s| s.checked_mul(ss))
        .ok_or_else(|| corrupt("data region offset overflows"))?;
    let total = g
        .total_sectors
        .checked_mul(ss)
        .ok_or_else(|| corrupt("volume size overflows"))?;
    let fat_bytes = g
        .fat_length
        .checked_mul(ss)
        .ok_or_else(|| corrupt("FAT size overflows"))?;
    let fat_start = g.reserved * ss;

    let mut u = super::info::Usage {
        from_fs: true,
        ..Default::default()
    };
    // Everything before the data region: boot sectors, FATs, fixed root directory. The
    // root directory relies on its unused entries being zero, so it is kept whole.
    u.used.insert(0, data_start);

    // Entries 0 and 1 are reserved; cluster n has entry n.
    let fat_entries = fat_bytes.saturating_mul(8) / bits;
    let with_entry = g.clusters.min(fat_entries.saturating_sub(2));
    if with_entry < g.clusters {
        u.warnings.push(format!(
            "the FAT has room for {with_entry} clusters but the volume has {}; the rest are kept",
            g.clusters
        ));
    }
    // Clusters whose data lies past the end of the source (a truncated image) are kept by
    // the tail below without looking at their entries; bounding the walk by what exists also
    // keeps a tiny hostile image from claiming billions of clusters to walk.
    let in_source = dev.size().saturating_sub(data_start) / cbytes.max(1);
    let with_entry = with_entry.min(in_source);
    let end_entry = with_entry + 2;
    let mut copies: Vec<Vec<u8>> = Vec::new();
    // The first copy is kept for the cross-check's chain walk while it stays small.
    let mut cache = FatCache::new(bits, end_entry);
    let mut lo = 0u64;
    while lo < end_entry {
        let hi = lo.saturating_add(USED_CHUNK_ENTRIES).min(end_entry);
        let byte_lo = lo * bits / 8;
        let byte_hi = (hi * bits).div_ceil(8);
        copies.clear();
        for k in 0..g.fats {
            let off = k
                .checked_mul(fat_bytes)
                .and_then(|o| o.checked_add(fat_start))
                .and_then(|o| o.checked_add(byte_lo))
                .ok_or_else(|| corrupt("FAT offset overflows"))?;
            copies.push(dev.read_struct_upto(off, (byte_hi - byte_lo) as usize)?);
        }
        let mut run: Option<(u64, u64)> = None;
        for n in lo.max(2)..hi {
            let rel = (n - lo) as usize;
            // An entry missing from a short read (truncated image) counts as used.
            let busy = copies
                .iter()
                .any(|c| fat_entry(c, bits, rel).is_none_or(|v| v != 0));
            if !busy {
                continue;
            }
            // `n - 2 < clusters`, and the data region fits in the volume, so no overflow.
            let start = data_start + (n - 2) * cbytes;
            run = match run {
                Some((s, e)) if e == start => Some((s, start + cbytes)),
                Some((s, e)) => {
                    u.used.insert(s, e);
                    Some((start, start + cbytes))
                }
                None => Some((start, start + cbytes)),
            };
        }
        if let Some((s, e)) = run {
            u.used.insert(s, e);
        }
        if let Some(first) = copies.first_mut() {
            cache.offer(lo, std::mem::take(first));
        }
        lo = hi;
    }
    // Clusters without a FAT entry, and the sectors after the last whole cluster.
    let tail = data_start + with_entry * cbytes;
    u.used.insert(tail, total.max(tail));
    // What the FAT calls free, before the cross-check (a hint: a stream being flashed skips
    // it as it passes, and writes afterwards whatever the final map keeps there).
    for r in crate::ExtentMap::single(data_start, tail)
        .subtract(&u.used)
        .iter()
    {
        dev.note_free(r.start, r.end - r.start);
    }

    let geo = WalkGeo {
        g: &g,
        bits,
        fat_start,
        data_start,
        cbytes,
        with_entry,
        root_cluster: u64::from(le32(&bs, 0x2C).unwrap_or(0) & 0x0FFF_FFFF),
    };
    cross_check(dev, &geo, &mut cache, &mut u);
    Ok(u)
}

// ---------------------------------------------------------------------------------------------
// Cross-check: the FAT against the directory tree.
//
// The FAT is FAT's allocation map. A directory entry (or a chain) that leads into a cluster
// whose entry is zero in every copy means the map lies about that cluster: fsck.fat reports
// "Contains a free cluster (N). Assuming EOF." and would truncate the file there, mtools refuses
// to read it ("Fat problem while decoding"), but the Linux driver and fusefat read a file's or
// directory's first cluster without consulting the FAT, and undelete/recovery tools read a
// broken file as contiguous clusters from where its chain breaks. So the cluster the chain
// reaches is kept, and for a file also as many following clusters as its size still needs
// while they are free too (what a reader would most plausibly read). Lost chains (allocated,
// unreferenced) are already in the map.

/// Bytes of the first FAT copy kept in memory for the chain walk; past this, chunks are
/// re-read on demand.
const FAT_CACHE_MAX: u64 = 64 << 20;
/// Directory entries examined (32 bytes each, so 512 MiB of directories) before the walk gives
/// up and keeps the data region whole.
const MAX_DIR_ENTRIES: u64 = 1 << 24;
/// Directories walked before the walk gives up.
const MAX_DIRS: u64 = 1 << 20;
/// Largest single read of adjacent directory clusters.
const DIR_READ_MAX: u64 = 1 << 20;

/// The first FAT copy, in the chunks the map pass read it in.
struct FatCache {
    bits: u64,
    end_entry: u64,
    chunks: Vec<Option<Vec<u8>>>,
    held: u64,
    /// The chunk last read on demand, when the FAT was too big to keep.
    last: Option<(usize, Vec<u8>)>,
}

impl FatCache {
    fn new(bits: u64, end_entry: u64) -> Self {
        FatCache {
            bits,
            end_entry,
            chunks: Vec::new(),
            held: 0,
            last: None,
        }
    }

    /// Takes the chunk starting at entry `lo` (chunks arrive in order) if it fits the budget.
    fn offer(&mut self, lo: u64, buf: Vec<u8>) {
        debug_assert_eq!(lo / USED_CHUNK_ENTRIES, self.chunks.len() as u64);
        let len = buf.len() as u64;
        if self.held.saturating_add(len) <= FAT_CACHE_MAX {
            self.held += len;
            self.chunks.push(Some(buf));
        } else {
            self.chunks.push(None);
        }
    }

    /// Entry `n` of the first FAT copy; `Ok(None)` past the entries the volume has.
    fn get(&mut self, dev: &dyn ReadAt, fat_start: u64, n: u64) -> crate::Result<Option<u32>> {
        if n >= self.end_entry {
            return Ok(None);
        }
        let k = (n / USED_CHUNK_ENTRIES) as usize;
        let rel = (n % USED_CHUNK_ENTRIES) as usize;
        if let Some(Some(buf)) = self.chunks.get(k) {
            return Ok(fat_entry(buf, self.bits, rel));
        }
        if self.last.as_ref().is_none_or(|(lk, _)| *lk != k) {
            let lo = k as u64 * USED_CHUNK_ENTRIES;
            let hi = lo.saturating_add(USED_CHUNK_ENTRIES).min(self.end_entry);
            let byte_lo = lo * self.bits / 8;
            let byte_hi = (hi * self.bits).div_ceil(8);
            let buf = dev.read_struct_upto(fat_start + byte_lo, (byte_hi - byte_lo) as usize)?;
            self.last = Some((k, buf));
        }
        Ok(self
            .last
            .as_ref()
            .and_then(|(_, b)| fat_entry(b, self.bits, rel)))
    }
}

/// What the walk needs to know about the volume.
struct WalkGeo<'a> {
    g: &'a Geometry,
    bits: u64,
    fat_start: u64,
    data_start: u64,
    cbytes: u64,
    /// Clusters with a FAT entry inside the source (2 ..= with_entry + 1).
    with_entry: u64,
    root_cluster: u64,
}

impl WalkGeo<'_> {
    /// True for a cluster whose FAT entry the map pass looked at.
    fn mapped(&self, c: u64) -> bool {
        c >= 2 && c - 2 < self.with_entry
    }
    /// Byte offset of a `mapped` cluster (cannot overflow: the data region fits the source).
    fn offset(&self, c: u64) -> u64 {
        self.data_start + (c - 2) * self.cbytes
    }
}

/// What a FAT entry says comes next.
enum Next {
    /// Zero: the FAT calls the cluster free.
    Free,
    /// End of chain, a bad-cluster mark, or the reserved value 1.
    End,
    Cluster(u64),
}

fn classify(v: u32, bits: u64) -> Next {
    let bad = match bits {
        12 => 0xFF7,
        16 => 0xFFF7,
        _ => 0x0FFF_FFF7,
    };
    match v {
        0 => Next::Free,
        1 => Next::End,
        v if v >= bad => Next::End,
        v => Next::Cluster(u64::from(v)),
    }
}

struct Walker<'a> {
    dev: &'a dyn ReadAt,
    geo: &'a WalkGeo<'a>,
    cache: &'a mut FatCache,
    used: &'a ExtentMap,
    visited: Vec<u64>,
    unmapped: Unmapped,
    queue: Vec<u64>,
    entries: u64,
    dirs: u64,
    scanned: u64,
    outside: u64,
    incomplete: Option<String>,
}

impl Walker<'_> {
    fn fail(&mut self, why: String) {
        if self.incomplete.is_none() {
            self.incomplete = Some(why);
        }
        self.queue.clear();
    }

    /// Marks cluster `c` (a `mapped` one) visited; false if it already was.
    fn visit(&mut self, c: u64) -> bool {
        let (w, b) = ((c / 64) as usize, c % 64);
        match self.visited.get_mut(w) {
            Some(word) if *word & (1 << b) == 0 => {
                *word |= 1 << b;
                true
            }
            _ => false,
        }
    }

    fn seen(&self, c: u64) -> bool {
        self.visited
            .get((c / 64) as usize)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    fn keep(&mut self, c: u64) {
        let s = self.geo.offset(c);
        self.unmapped.note(self.used, s, s + self.geo.cbytes);
    }

    /// Follows the chain from `first`, keeping every cluster it reaches. Where it reaches a
    /// cluster the FAT calls free, the chain ends there, and for a file (`need` clusters long)
    /// the following free clusters are kept up to its size. Directory clusters go to `out`.
    fn follow(&mut self, first: u64, need: u64, mut out: Option<&mut Vec<u64>>) {
        let g = self.geo;
        let mut c = first;
        let mut k = 0u64;
        loop {
            if !g.mapped(c) {
                // Clusters past the FAT's room or the source's end are kept by the tail.
                if c < 2 || c - 2 >= g.g.clusters {
                    self.outside += 1;
                }
                return;
            }
            if !self.visit(c) {
                return;
            }
            k += 1;
            self.keep(c);
            if let Some(o) = out.as_deref_mut() {
                o.push(c);
            }
            let v = match self.cache.get(self.dev, g.fat_start, c) {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(e) => {
                    return self.fail(format!(
                        "FAT entry of cluster {c} unreadable: {}",
                        e.chain()
                    ))
                }
            };
            match classify(v, g.bits) {
                Next::Cluster(n) => c = n,
                Next::End => return,
                Next::Free => {
                    let mut d = c + 1;
                    while k < need && g.mapped(d) && !self.seen(d) {
                        let s = g.offset(d);
                        if self.used.covered(s, s + g.cbytes) != 0 {
                            break;
                        }
                        self.visit(d);
                        self.keep(d);
                        k += 1;
                        d += 1;
                    }
                    return;
                }
            }
        }
    }

    /// Looks at one buffer of directory entries; false once the end marker is met.
    fn scan(&mut self, buf: &[u8]) -> bool {
        let fat32 = self.geo.g.fat32;
        for e in buf.chunks_exact(32) {
            if self.scanned >= MAX_DIR_ENTRIES {
                self.fail(format!("more than {MAX_DIR_ENTRIES} directory entries"));
                return false;
            }
            self.scanned += 1;
            match e[0] {
                0 => return false,
                0xE5 => continue,
                _ => {}
            }
            let attr = e[11];
            if attr & 0x3F == ATTR_LONG_NAME || attr & ATTR_VOLUME_ID != 0 {
                continue;
            }
            if e[0] == b'.' && e[2..11].iter().all(|&b| b == b' ') && matches!(e[1], b' ' | b'.') {
                continue;
            }
            self.entries += 1;
            let lo = u64::from(le16(e, 26).unwrap_or(0));
            let hi = if fat32 {
                u64::from(le16(e, 20).unwrap_or(0))
            } else {
                0
            };
            let first = hi << 16 | lo;
            if first == 0 {
                continue;
            }
            if attr & ATTR_DIR != 0 {
                if self.queue.len() as u64 + self.dirs >= MAX_DIRS {
                    self.fail(format!("more than {MAX_DIRS} directories"));
                    return false;
                }
                self.queue.push(first);
            } else {
                let size = u64::from(le32(e, 28).unwrap_or(0));
                self.follow(first, size.div_ceil(self.geo.cbytes), None);
            }
        }
        true
    }

    /// Reads a directory's clusters, adjacent ones together, and scans them.
    fn scan_clusters(&mut self, clusters: &[u64]) {
        let g = self.geo;
        let per_read = (DIR_READ_MAX / g.cbytes).max(1) as usize;
        let mut i = 0;
        while i < clusters.len() && self.incomplete.is_none() {
            let mut j = i + 1;
            while j < clusters.len() && j - i < per_read && clusters[j] == clusters[j - 1] + 1 {
                j += 1;
            }
            let off = g.offset(clusters[i]);
            let len = (j - i) as u64 * g.cbytes;
            match self.dev.read_struct_upto(off, len as usize) {
                Ok(buf) => {
                    if !self.scan(&buf) {
                        return;
                    }
                }
                Err(e) => {
                    return self.fail(format!(
                        "directory cluster {} unreadable: {}",
                        clusters[i],
                        e.chain()
                    ))
                }
            }
            i = j;
        }
    }

    fn walk(&mut self) {
        let g = self.geo;
        self.dirs = 1;
        if g.g.fat32 {
            let root = g.root_cluster;
            if !g.mapped(root) {
                return self.fail(format!("root directory cluster {root} is outside the FAT"));
            }
            let mut cl = Vec::new();
            self.follow(root, 0, Some(&mut cl));
            self.scan_clusters(&cl);
        } else {
            let ss = u64::from(g.g.sector_size);
            let start = g.fat_start + g.g.fats * g.g.fat_length * ss;
            match self
                .dev
                .read_struct_upto(start, (g.g.root_entries * 32) as usize)
            {
                Ok(buf) => {
                    self.scan(&buf);
                }
                Err(e) => return self.fail(format!("root directory unreadable: {}", e.chain())),
            }
        }
        while let Some(d) = self.queue.pop() {
            self.dirs += 1;
            let mut cl = Vec::new();
            self.follow(d, 0, Some(&mut cl));
            self.scan_clusters(&cl);
        }
    }
}

/// Walks the directory tree and adds back every cluster it references that the FAT calls free;
/// fills `u.cross_check`.
fn cross_check(dev: &dyn ReadAt, geo: &WalkGeo, cache: &mut FatCache, u: &mut super::info::Usage) {
    let words = (geo.with_entry + 2).div_ceil(64) as usize;
    let mut w = Walker {
        dev,
        geo,
        cache,
        used: &u.used,
        visited: vec![0; words],
        unmapped: Unmapped::default(),
        queue: Vec::new(),
        entries: 0,
        dirs: 0,
        scanned: 0,
        outside: 0,
        incomplete: None,
    };
    w.walk();
    let (unmapped, entries, dirs, outside, incomplete) =
        (w.unmapped.map, w.entries, w.dirs, w.outside, w.incomplete);
    if outside > 0 {
        u.warnings.push(format!(
            "FAT: {outside} cluster references point outside the data region; ignored"
        ));
    }
    super::xcheck::finish(
        u,
        super::xcheck::Outcome {
            fs: "FAT",
            against: format!(
                "its directory tree ({entries} {}, {dirs} {})",
                super::xcheck::plural(entries, "entry", "entries"),
                super::xcheck::plural(dirs, "directory", "directories")
            ),
            referrers: "directory entries",
            map_name: "the FAT",
            fsck: "fsck.fat",
            unmapped,
            base: geo.data_start,
            unit: geo.cbytes,
            first: 2,
            incomplete,
            whole: (geo.data_start, geo.data_start + geo.with_entry * geo.cbytes),
            whole_what: "every cluster of the data region",
        },
    );
}

/// Value of entry `rel` (counted from the start of `buf`, which begins at an even entry) in a
/// FAT of `bits`-wide entries, or `None` if `buf` is too short.
fn fat_entry(buf: &[u8], bits: u64, rel: usize) -> Option<u32> {
    match bits {
        12 => {
            let off = rel.checked_mul(3)? / 2;
            let lo = u32::from(*buf.get(off)?);
            let hi = u32::from(*buf.get(off + 1)?);
            Some(if rel % 2 == 0 {
                lo | (hi & 0x0F) << 8
            } else {
                lo >> 4 | hi << 4
            })
        }
        16 => le16(buf, rel.checked_mul(2)?).map(u32::from),
        // The top four bits of a FAT32 entry are reserved and must be ignored.
        _ => le32(buf, rel.checked_mul(4)?).map(|v| v & 0x0FFF_FFFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_entry_classes() {
        assert!(matches!(classify(0, 12), Next::Free));
        assert!(matches!(classify(0xFF7, 12), Next::End));
        assert!(matches!(classify(1, 32), Next::End));
        assert!(matches!(classify(0x0FFF_FFF6, 32), Next::Cluster(_)));
    }

    #[test]
    fn cp850_table_complete() {
        assert_eq!(CP850_HIGH.chars().count(), 128);
        assert_eq!(decode_label(&[0xE5, 0xE5, b' ']).as_deref(), Some("ÕÕ"));
    }
}
