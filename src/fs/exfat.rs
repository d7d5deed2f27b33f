//! exFAT boot sector probe; the label is read from the root directory.
//!
//! The boot region's checksum (sector 11 repeats a rotate-and-add sum over sectors 0..=10) is
//! verified; a mismatch is reported as a warning because the main boot sector itself already
//! passed every structural check.

use super::info::{FsInfo, FsType};
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};

const ENTRY_EOD: u8 = 0x00;
const ENTRY_LABEL: u8 = 0x83;
/// Bound on root-directory clusters followed, against loops.
const MAX_ROOT_CLUSTERS: usize = 256;
/// Bound on root-directory bytes scanned.
const MAX_ROOT_BYTES: u64 = 4 << 20;

/// Recognises exFAT in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_struct(0, 512)?;
    if bs.get(3..11) != Some(b"EXFAT   ") {
        return Ok(None);
    }
    // The FAT BPB area must be zero so FAT drivers never mistake exFAT for FAT.
    if bs.get(0x0B..0x40).is_none_or(|z| z.iter().any(|&b| b != 0)) {
        return Ok(None);
    }
    let g8 = |o: usize| bs.get(o).copied().unwrap_or(0);
    let g32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    let sector_shift = u32::from(g8(0x6C));
    let cluster_shift = u32::from(g8(0x6D));
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return Ok(None);
    }
    let nfats = g8(0x6E);
    if nfats != 1 && nfats != 2 {
        return Ok(None);
    }
    let sector = 1u64 << sector_shift;
    let cluster = sector << cluster_shift;
    let volume_sectors = le64(&bs, 0x48).unwrap_or(0);
    let fat_offset = g32(0x50);
    let heap_offset = g32(0x58);
    let cluster_count = g32(0x5C);
    let root_cluster = g32(0x60);
    let serial = le32(&bs, 0x64).unwrap_or(0).to_le_bytes();

    let mut info = FsInfo {
        block_size: Some(cluster as u32),
        version: Some(format!("{}.{}", g8(0x69), g8(0x68))),
        uuid: Some(format!(
            "{:02X}{:02X}-{:02X}{:02X}",
            serial[3], serial[2], serial[1], serial[0]
        )),
        ..FsInfo::new(FsType::Exfat)
    };
    match volume_sectors.checked_mul(sector) {
        Some(bytes) if volume_sectors > 0 => {
            info.declare_size(bytes, dev.size());
        }
        _ => info
            .warnings
            .push(format!("impossible volume length {volume_sectors} sectors")),
    }
    if let Some(w) = check_boot_checksum(dev, sector)? {
        info.warnings.push(w);
    }
    if le16(&bs, 0x6A).unwrap_or(0) & 0x0002 != 0 {
        info.features.push("dirty".into());
        info.warnings
            .push("volume is marked dirty: it was not cleanly unmounted".into());
    }

    let geo = Geo {
        sector,
        cluster,
        fat_offset,
        heap_offset,
        cluster_count,
    };
    match find_label(dev, &geo, root_cluster) {
        Ok(l) => info.label = l,
        Err(e) => info.warnings.push(format!(
            "could not read the root directory for the label: {}",
            e.chain()
        )),
    }
    Ok(Some(info))
}

struct Geo {
    sector: u64,
    cluster: u64,
    fat_offset: u64,
    heap_offset: u64,
    cluster_count: u64,
}

/// Verifies the boot region checksum; returns a warning text on mismatch.
fn check_boot_checksum(dev: &dyn ReadAt, sector: u64) -> crate::Result<Option<String>> {
    let len = (sector * 12) as usize;
    let region = dev.read_struct_upto(0, len)?;
    if region.len() < len {
        return Ok(Some("boot region is truncated".into()));
    }
    let body = sector as usize * 11;
    let mut sum: u32 = 0;
    for (i, &b) in region[..body].iter().enumerate() {
        // VolumeFlags and PercentInUse change at run time and are excluded.
        if i == 106 || i == 107 || i == 112 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    let ok = region[body..]
        .chunks_exact(4)
        .all(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == sum);
    Ok((!ok).then(|| "boot region checksum mismatch".to_string()))
}

fn find_label(dev: &dyn ReadAt, g: &Geo, mut c: u64) -> crate::Result<Option<String>> {
    let mut read = 0u64;
    for _ in 0..MAX_ROOT_CLUSTERS {
        if c < 2 || c - 2 >= g.cluster_count || read >= MAX_ROOT_BYTES {
            break;
        }
        let off = (c - 2)
            .checked_mul(g.cluster)
            .and_then(|x| x.checked_add(g.heap_offset.checked_mul(g.sector)?));
        let Some(off) = off else { break };
        let buf = dev.read_struct_upto(off, g.cluster.min(MAX_ROOT_BYTES) as usize)?;
        read += g.cluster;
        for e in buf.chunks_exact(32) {
            match e[0] {
                ENTRY_EOD => return Ok(None),
                ENTRY_LABEL => {
                    let n = usize::from(e[1]).min(11);
                    let units: Vec<u16> = e[2..2 + 2 * n]
                        .chunks_exact(2)
                        .map(|u| u16::from_le_bytes([u[0], u[1]]))
                        .collect();
                    let s = String::from_utf16_lossy(&units);
                    return Ok((!s.is_empty()).then_some(s));
                }
                _ => {}
            }
        }
        let pos = c
            .checked_mul(4)
            .and_then(|x| x.checked_add(g.fat_offset.checked_mul(g.sector)?));
        let Some(pos) = pos else { break };
        let mut ent = [0u8; 4];
        dev.read_struct_into(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent));
    }
    Ok(None)
}

const ENTRY_BITMAP: u8 = 0x81;
const ENTRY_UPCASE: u8 = 0x82;
const ENTRY_FILE: u8 = 0x85;
const ENTRY_STREAM: u8 = 0xC0;
/// Bitmap bytes read at once (per bitmap).
const BITMAP_CHUNK: u64 = 8 << 20;
/// Bound on root-directory clusters followed while looking for the bitmaps.
const MAX_USED_ROOT_CLUSTERS: u64 = 1 << 16;

/// The bytes of this exFAT volume that must be kept: everything below the cluster heap (main
/// and backup boot regions, the FATs), every cluster set in the Allocation Bitmap (both
/// bitmaps on TexFAT volumes), and whatever follows the last cluster.
///
/// The bitmap, up-case table and root directory must be marked in the bitmap; if they are
/// not, they are kept anyway and a warning says the bitmap is suspect.
///
/// The bitmap is then cross-checked against the directory tree (`cross_check` below): every
/// cluster a directory entry references is kept even where the bitmap calls it free.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let corrupt = |d: String| crate::Error::corrupt("exFAT allocation bitmap", d);
    let bs = dev.read_struct(0, 512)?;
    if bs.get(3..11) != Some(b"EXFAT   ") {
        return Err(corrupt("no exFAT boot sector".into()));
    }
    let g8 = |o: usize| bs.get(o).copied().unwrap_or(0);
    let g32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    let (sector_shift, cluster_shift) = (u32::from(g8(0x6C)), u32::from(g8(0x6D)));
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return Err(corrupt("impossible sector or cluster size".into()));
    }
    let nfats = u64::from(g8(0x6E));
    if nfats != 1 && nfats != 2 {
        return Err(corrupt(format!("{nfats} FATs")));
    }
    let sector = 1u64 << sector_shift;
    let cluster = sector << cluster_shift;
    let vol_bytes = le64(&bs, 0x48)
        .and_then(|n| n.checked_mul(sector))
        .ok_or_else(|| corrupt("volume length overflows".into()))?;
    // TexFAT: VolumeFlags bit 0 says which FAT is active.
    let active = u64::from(le16(&bs, 0x6A).unwrap_or(0) & 1).min(nfats - 1);
    let fat = g32(0x50)
        .checked_add(active * g32(0x54))
        .and_then(|s| s.checked_mul(sector))
        .ok_or_else(|| corrupt("FAT offset overflows".into()))?;
    let heap = g32(0x58) * sector;
    if heap > vol_bytes {
        return Err(corrupt("cluster heap starts past the volume".into()));
    }
    let mut u = super::info::Usage {
        from_fs: true,
        ..Default::default()
    };
    let mut count = g32(0x5C);
    let fits = (vol_bytes - heap) / cluster;
    if count > fits {
        u.warnings.push(format!(
            "cluster count {count} exceeds the volume ({fits} clusters fit); using {fits}"
        ));
        count = fits;
    }
    let heap_end = heap + count * cluster;
    let g = Geo {
        sector,
        cluster,
        fat_offset: fat / sector,
        heap_offset: heap / sector,
        cluster_count: count,
    };

    // Find the bitmap(s) and up-case table in the root directory.
    let root = root_chain(dev, &g, g32(0x60))?;
    let mut bitmaps: Vec<(u64, u64)> = Vec::new();
    let mut upcase = None;
    'scan: for &c in &root {
        let buf = dev.read_struct(heap + (c - 2) * cluster, cluster as usize)?;
        for e in buf.chunks_exact(32) {
            let first = u64::from(le32(e, 20).unwrap_or(0));
            let len = le64(e, 24).unwrap_or(0);
            match e[0] {
                ENTRY_EOD => break 'scan,
                ENTRY_BITMAP if bitmaps.len() < 2 => bitmaps.push((first, len)),
                ENTRY_UPCASE => upcase = Some((first, len)),
                _ => {}
            }
        }
    }
    if (bitmaps.len() as u64) < nfats {
        return Err(corrupt(format!(
            "{} allocation bitmap entries for {nfats} FATs",
            bitmaps.len()
        )));
    }
    // Bitmaps are contiguous (as the Linux driver reads them); check they lie in the heap.
    let need = count.div_ceil(8);
    let mut have = need;
    for &(first, len) in &bitmaps {
        let clusters = len.div_ceil(cluster);
        if first < 2 || (first - 2).checked_add(clusters).is_none_or(|e| e > count) {
            return Err(corrupt(format!(
                "bitmap of {len} bytes at cluster {first} lies outside the heap"
            )));
        }
        have = have.min(len);
    }
    if have < need {
        u.warnings.push(format!(
            "allocation bitmap has {have} of {need} bytes; the clusters past it are kept"
        ));
    }

    u.used.insert(0, heap);
    let mut cur: Option<(u64, u64)> = None;
    let mut flush = |cur: &mut Option<(u64, u64)>, next: Option<(u64, u64)>| {
        if let Some((s, e)) = std::mem::replace(cur, next) {
            u.used.insert(heap + s * cluster, heap + e * cluster);
        }
    };
    let mut set = |cur: &mut Option<(u64, u64)>, s: u64, e: u64| match cur {
        Some((_, ce)) if *ce == s => *ce = e,
        _ => flush(cur, Some((s, e))),
    };
    let mut lo = 0u64;
    let mut merged = Vec::new();
    while lo < have {
        let n = (have - lo).min(BITMAP_CHUNK);
        merged.clear();
        merged.resize(n as usize, 0u8);
        for &(first, _) in &bitmaps {
            let buf = dev.read_struct(heap + (first - 2) * cluster + lo, n as usize)?;
            merged.iter_mut().zip(&buf).for_each(|(m, b)| *m |= b);
        }
        for (i, &byte) in merged.iter().enumerate() {
            let c = (lo + i as u64) * 8; // index from the first heap cluster
            if byte == 0 {
                continue;
            }
            if byte == 0xFF {
                set(&mut cur, c, (c + 8).min(count));
                continue;
            }
            for bit in 0..8u64 {
                if byte & (1 << bit) != 0 && c + bit < count {
                    set(&mut cur, c + bit, c + bit + 1);
                }
            }
        }
        lo += n;
    }
    flush(&mut cur, None);
    // Clusters the bitmap does not describe, and the space after the heap.
    u.used.insert(
        heap + (have * 8).min(count) * cluster,
        vol_bytes.max(heap_end),
    );

    // The structures the bitmap must mark as allocated.
    let mut must: Vec<(u64, u64)> = bitmaps.iter().map(|&(f, l)| (f, l)).collect();
    if let Some((f, l)) = upcase {
        if f >= 2
            && (f - 2)
                .checked_add(l.div_ceil(cluster))
                .is_some_and(|e| e <= count)
        {
            must.push((f, l));
        }
    }
    must.extend(root.iter().map(|&c| (c, cluster)));
    for (first, len) in must {
        let s = heap + (first - 2) * cluster;
        let e = s + len.div_ceil(cluster) * cluster;
        if u.used.covered(s, e) != e - s {
            u.warnings.push(format!(
                "allocation bitmap leaves metadata at bytes {s}..{e} free; kept anyway"
            ));
            u.used.insert(s, e);
        }
    }
    cross_check(dev, &g, heap, &root, &mut u);
    Ok(u)
}

/// The root directory's clusters, following the FAT from `first`; stops at end-of-chain and
/// fails on a chain that leaves the heap or loops past the bound.
fn root_chain(dev: &dyn ReadAt, g: &Geo, first: u64) -> crate::Result<Vec<u64>> {
    let corrupt = |d: String| crate::Error::corrupt("exFAT root directory", d);
    let mut out = Vec::new();
    let mut c = first;
    let limit = g.cluster_count.min(MAX_USED_ROOT_CLUSTERS);
    loop {
        if c < 2 || c - 2 >= g.cluster_count {
            return Err(corrupt(format!(
                "chain reaches cluster {c}, outside the heap"
            )));
        }
        if out.len() as u64 >= limit {
            return Err(corrupt("chain is longer than the heap (a loop?)".into()));
        }
        out.push(c);
        let pos = c
            .checked_mul(4)
            .and_then(|x| x.checked_add(g.fat_offset.checked_mul(g.sector)?))
            .ok_or_else(|| corrupt("FAT offset overflows".into()))?;
        let mut ent = [0u8; 4];
        dev.read_struct_into(pos, &mut ent)?;
        c = u64::from(u32::from_le_bytes(ent));
        if c == 0xFFFF_FFFF {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check: the Allocation Bitmap against the directory tree.
//
// From the root, every entry set is read: a File entry (0x85) and the secondaries it announces.
// Every secondary with AllocationPossible set (the Stream Extension 0xC0, vendor allocations)
// owns clusters: ceil(DataLength / cluster) of them, one contiguous run when NoFatChain is set,
// else followed through the FAT. Directories are walked recursively; in the root the
// Allocation Bitmap (0x81) and Up-case Table (0x82) entries, read as contiguous runs as the
// Linux driver does, and any other primary with AllocationPossible (TexFAT padding, Windows CE
// ACT, vendor entries) are kept too. Set checksums are not required: a set with a bad checksum
// still keeps its clusters. Out-of-heap clusters are ignored and reported; a FAT chain stops at
// end-of-chain, a bad-cluster mark, a cluster already visited or its DataLength.

/// Directory entries examined (32 bytes each, so 512 MiB of directories) before the walk gives
/// up and keeps the heap whole.
const MAX_DIR_ENTRIES: u64 = 1 << 24;
/// Directories walked before the walk gives up.
const MAX_DIRS: u64 = 1 << 20;
/// The largest directory the specification allows; clusters past it are kept, not scanned.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Largest single read of adjacent directory clusters.
const DIR_READ_MAX: u64 = 1 << 20;
/// FAT bytes per cached page, and pages kept.
const FAT_PAGE: u64 = 64 << 10;
const FAT_PAGES: usize = 1024;

/// One allocation a directory entry describes: first cluster, length in bytes, and whether
/// it is one contiguous run (NoFatChain) instead of a FAT chain.
#[derive(Clone, Copy)]
struct Alloc {
    first: u64,
    len: u64,
    contiguous: bool,
}

/// The entry set being read: a primary entry and the secondaries it announced.
#[derive(Default)]
struct EntrySet {
    remaining: u32,
    dir: bool,
    allocs: Vec<(Alloc, bool)>,
}

struct XWalk<'a> {
    dev: &'a dyn ReadAt,
    g: &'a Geo,
    heap: u64,
    used: &'a ExtentMap,
    pages: std::collections::HashMap<u64, Vec<u8>>,
    visited: Vec<u64>,
    unmapped: super::xcheck::Unmapped,
    queue: Vec<Alloc>,
    set: EntrySet,
    files: u64,
    dirs: u64,
    scanned: u64,
    outside: u64,
    incomplete: Option<String>,
}

impl XWalk<'_> {
    fn fail(&mut self, why: String) {
        if self.incomplete.is_none() {
            self.incomplete = Some(why);
        }
        self.queue.clear();
    }

    /// Cluster `c` lies in the heap.
    fn in_heap(&self, c: u64) -> bool {
        c >= 2 && c - 2 < self.g.cluster_count
    }

    fn offset(&self, c: u64) -> u64 {
        self.heap + (c - 2) * self.g.cluster
    }

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

    /// Clusters `[a, b)` (in the heap) are referenced.
    fn keep(&mut self, a: u64, b: u64) {
        let (s, e) = (self.offset(a), self.offset(b));
        self.unmapped.note(self.used, s, e);
    }

    /// The FAT entry of cluster `c`, through a page cache.
    fn fat(&mut self, c: u64) -> crate::Result<u32> {
        let pos = c
            .checked_mul(4)
            .and_then(|x| x.checked_add(self.g.fat_offset.checked_mul(self.g.sector)?))
            .ok_or_else(|| crate::Error::corrupt("exFAT FAT", "entry offset overflows"))?;
        let page = pos / FAT_PAGE;
        if !self.pages.contains_key(&page) {
            if self.pages.len() >= FAT_PAGES {
                self.pages.clear();
            }
            let buf = self
                .dev
                .read_struct_upto(page * FAT_PAGE, FAT_PAGE as usize)?;
            self.pages.insert(page, buf);
        }
        let rel = (pos % FAT_PAGE) as usize;
        Ok(self
            .pages
            .get(&page)
            .and_then(|b| le32(b, rel))
            // An entry past the end of the source ends the chain.
            .unwrap_or(0xFFFF_FFFF))
    }

    /// Keeps the clusters of `a`; a directory's clusters (up to the directory size limit) go to
    /// `out`, skipping any already visited so a directory loop ends.
    fn alloc(&mut self, a: Alloc, mut out: Option<&mut Vec<u64>>) {
        let n = a.len.div_ceil(self.g.cluster);
        if a.first == 0 || n == 0 {
            return;
        }
        if !self.in_heap(a.first) {
            self.outside += 1;
            return;
        }
        let dir_max = MAX_DIR_BYTES / self.g.cluster;
        if a.contiguous {
            let room = self.g.cluster_count - (a.first - 2);
            if n > room {
                self.outside += 1;
            }
            let n = n.min(room);
            self.keep(a.first, a.first + n);
            if let Some(o) = out {
                // A cluster already visited means a loop or a cross-link: stop there, so
                // every directory cluster is looked at once at most.
                for c in a.first..a.first + n.min(dir_max) {
                    if !self.visit(c) {
                        break;
                    }
                    o.push(c);
                }
            }
            return;
        }
        let mut c = a.first;
        let mut run: Option<(u64, u64)> = None;
        for k in 0..n {
            if !self.in_heap(c) {
                self.outside += 1;
                break;
            }
            if !self.visit(c) {
                break;
            }
            run = match run {
                Some((s, e)) if e == c => Some((s, c + 1)),
                Some((s, e)) => {
                    self.keep(s, e);
                    Some((c, c + 1))
                }
                None => Some((c, c + 1)),
            };
            if let Some(o) = out.as_deref_mut() {
                if k < dir_max {
                    o.push(c);
                }
            }
            if k + 1 == n {
                break;
            }
            match self.fat(c) {
                Ok(0xFFFF_FFFF) | Ok(0xFFFF_FFF7) => break,
                Ok(v) => c = u64::from(v),
                Err(e) => {
                    self.fail(format!(
                        "FAT entry of cluster {c} unreadable: {}",
                        e.chain()
                    ));
                    break;
                }
            }
        }
        if let Some((s, e)) = run {
            self.keep(s, e);
        }
    }

    /// Ends the entry set being read: its allocations are kept, a directory's is queued.
    fn finish_set(&mut self) {
        let set = std::mem::take(&mut self.set);
        for (a, stream) in set.allocs {
            if set.dir && stream {
                if self.dirs + self.queue.len() as u64 >= MAX_DIRS {
                    return self.fail(format!("more than {MAX_DIRS} directories"));
                }
                self.queue.push(a);
            } else {
                self.alloc(a, None);
            }
        }
    }

    /// Looks at one buffer of directory entries; false once the end marker is met.
    fn scan(&mut self, buf: &[u8]) -> bool {
        for e in buf.chunks_exact(32) {
            if self.scanned >= MAX_DIR_ENTRIES {
                self.fail(format!("more than {MAX_DIR_ENTRIES} directory entries"));
                return false;
            }
            self.scanned += 1;
            let t = e[0];
            if t == ENTRY_EOD {
                return false;
            }
            let generic = |e: &[u8], flags: u16| Alloc {
                first: u64::from(le32(e, 20).unwrap_or(0)),
                len: le64(e, 24).unwrap_or(0),
                contiguous: flags & 2 != 0,
            };
            if t & 0x80 == 0 {
                // Unused or deleted: any set being read ends here.
                self.finish_set();
                continue;
            }
            if t & 0x40 == 0 {
                // A primary entry starts a new set.
                self.finish_set();
                match t {
                    ENTRY_FILE => {
                        self.files += 1;
                        self.set.remaining = u32::from(e[1]);
                        self.set.dir = le16(e, 4).unwrap_or(0) & 0x10 != 0;
                    }
                    // Bitmap and up-case table: contiguous, as the Linux driver reads them.
                    ENTRY_BITMAP | ENTRY_UPCASE => self.alloc(generic(e, 2), None),
                    ENTRY_LABEL => {}
                    _ => {
                        // Other primaries (volume GUID, TexFAT padding, vendor ones) follow
                        // the generic template.
                        let flags = le16(e, 2).unwrap_or(0);
                        if flags & 1 != 0 {
                            self.alloc(generic(e, flags), None);
                        }
                        self.set.remaining = u32::from(e[1]);
                    }
                }
                continue;
            }
            if self.set.remaining == 0 {
                continue; // an orphan secondary: no primary owns it
            }
            self.set.remaining -= 1;
            let flags = u16::from(e[1]);
            if flags & 1 != 0 {
                self.set.allocs.push((generic(e, flags), t == ENTRY_STREAM));
            }
            if self.set.remaining == 0 {
                self.finish_set();
            }
        }
        true
    }

    /// Reads a directory's clusters, adjacent ones together, and scans them.
    fn scan_clusters(&mut self, clusters: &[u64]) {
        let per_read = (DIR_READ_MAX / self.g.cluster).max(1) as usize;
        let mut i = 0;
        while i < clusters.len() && self.incomplete.is_none() {
            let mut j = i + 1;
            while j < clusters.len() && j - i < per_read && clusters[j] == clusters[j - 1] + 1 {
                j += 1;
            }
            let len = (j - i) as u64 * self.g.cluster;
            match self
                .dev
                .read_struct_upto(self.offset(clusters[i]), len as usize)
            {
                Ok(buf) => {
                    if !self.scan(&buf) {
                        break;
                    }
                }
                Err(e) => {
                    self.fail(format!(
                        "directory cluster {} unreadable: {}",
                        clusters[i],
                        e.chain()
                    ));
                    break;
                }
            }
            i = j;
        }
        self.finish_set();
    }

    fn walk(&mut self, root: &[u64]) {
        self.dirs = 1;
        for &c in root {
            self.visit(c);
        }
        self.scan_clusters(root);
        while let Some(d) = self.queue.pop() {
            self.dirs += 1;
            let mut cl = Vec::new();
            self.alloc(d, Some(&mut cl));
            self.scan_clusters(&cl);
        }
    }
}

/// Walks the directory tree from the root and adds back every cluster a directory entry
/// references that the Allocation Bitmap calls free; fills `u.cross_check`.
fn cross_check(dev: &dyn ReadAt, g: &Geo, heap: u64, root: &[u64], u: &mut super::info::Usage) {
    let words = (g.cluster_count + 2).div_ceil(64) as usize;
    let mut w = XWalk {
        dev,
        g,
        heap,
        used: &u.used,
        pages: Default::default(),
        visited: vec![0; words],
        unmapped: Default::default(),
        queue: Vec::new(),
        set: EntrySet::default(),
        files: 0,
        dirs: 0,
        scanned: 0,
        outside: 0,
        incomplete: None,
    };
    w.walk(root);
    let (unmapped, files, dirs, outside, incomplete) =
        (w.unmapped.map, w.files, w.dirs, w.outside, w.incomplete);
    if outside > 0 {
        u.warnings.push(format!(
            "exFAT: {outside} directory entries reference clusters outside the heap; ignored"
        ));
    }
    super::xcheck::finish(
        u,
        super::xcheck::Outcome {
            fs: "exFAT",
            against: format!(
                "its directory tree ({files} {}, {dirs} {})",
                super::xcheck::plural(files, "file", "files"),
                super::xcheck::plural(dirs, "directory", "directories")
            ),
            referrers: "files",
            map_name: "the allocation bitmap",
            fsck: "fsck.exfat",
            unmapped,
            base: heap,
            unit: g.cluster,
            first: 2,
            incomplete,
            whole: (heap, heap + g.cluster_count * g.cluster),
            whole_what: "every cluster of the heap",
        },
    );
}
