//! The exFAT cross-check, proven on damaged images: clear Allocation Bitmap bits under files'
//! and directories' clusters (the bitmap then calls them free while directory entries still
//! reference them), map the image, restore only the mapped bytes onto random garbage, and
//! compare the damaged original with the restored copy:
//!
//! - `fsck.exfat -n` prints the same report (it reports the damage);
//! - every file read through a read-only exfat-fuse mount is identical, byte for byte.
//!
//! Without the cross-check the second fails: the cleared clusters are left out and come back as
//! garbage. On the undamaged image the cross-check adds nothing and the map is exactly the
//! bitmap's. Cases skip with a printed reason when a tool or root is missing (and fail instead
//! under `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).

mod common;

use common::damage::{noise, run, Rng};

use std::collections::BTreeMap;
use std::path::Path;

use blockwise::fs;
use blockwise::io::{FileSource, MemSource};
use blockwise::ExtentMap;
use common::{have_all, is_root, restore_onto_random, Loop};

/// Files from empty to many clusters, a directory spanning clusters, nesting; deletions so the
/// later files are fragmented (FAT-chained) as well as contiguous.
fn fill(mnt: &Path) {
    common::damage::write_tree(
        mnt,
        &common::damage::TreeShape {
            step: 33_331,
            modulo: 400_000,
            many: 150,
            many_prefix: "ein langer Dateiname Nummer",
            many_mod: 20_000,
            level_sep: " ",
            deep_base: 5000,
            deep_step: 30_000,
        },
    );
    for i in (0..40).step_by(3) {
        std::fs::remove_file(mnt.join(format!("f{i:02}.bin"))).unwrap();
    }
    // Written in interleaved appends so the allocator has to chain them.
    let mut fa = std::fs::File::create(mnt.join("frag-a.bin")).unwrap();
    let mut fb = std::fs::File::create(mnt.join("frag-b.bin")).unwrap();
    use std::io::Write;
    for i in 0..40 {
        fa.write_all(&noise(50_000, 500 + i)).unwrap();
        fa.sync_all().unwrap();
        fb.write_all(&noise(50_000, 600 + i)).unwrap();
        fb.sync_all().unwrap();
    }
}

/// Just enough exFAT parsing to find files' clusters and the bitmap, independent of the library.
struct Ex {
    fat: u64,
    heap: u64,
    cluster: u64,
    count: u64,
    root: u32,
}

struct Item {
    path: String,
    dir: bool,
    clusters: Vec<u64>,
}

impl Ex {
    fn parse(b: &[u8]) -> Ex {
        let u32_ = |o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
        let sector = 1u64 << b[0x6C];
        Ex {
            fat: u32_(0x50) * sector,
            heap: u32_(0x58) * sector,
            cluster: sector << b[0x6D],
            count: u32_(0x5C),
            root: u32_(0x60) as u32,
        }
    }
    fn off(&self, c: u64) -> usize {
        (self.heap + (c - 2) * self.cluster) as usize
    }
    fn chain(&self, b: &[u8], first: u64, n: u64, contiguous: bool) -> Vec<u64> {
        if first == 0 {
            return Vec::new();
        }
        if contiguous {
            return (first..first + n).collect();
        }
        let mut out = Vec::new();
        let mut c = first;
        while out.len() < n as usize && c >= 2 && c < self.count + 2 {
            out.push(c);
            let o = (self.fat + 4 * c) as usize;
            c = u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
        }
        out
    }
    fn data(&self, b: &[u8], cl: &[u64]) -> Vec<u8> {
        cl.iter()
            .flat_map(|&c| b[self.off(c)..self.off(c) + self.cluster as usize].to_vec())
            .collect()
    }
    /// (bitmap first cluster, length) and every file and directory with its clusters.
    fn items(&self, b: &[u8]) -> ((u64, u64), Vec<Item>) {
        let root = self.chain(b, u64::from(self.root), 1 << 16, false);
        let mut bitmap = (0, 0);
        let mut out = Vec::new();
        let mut todo = vec![(String::new(), self.data(b, &root))];
        while let Some((path, buf)) = todo.pop() {
            let ents: Vec<&[u8]> = buf.chunks_exact(32).collect();
            let mut i = 0;
            while i < ents.len() && ents[i][0] != 0 {
                let e = ents[i];
                i += 1;
                if e[0] == 0x81 {
                    bitmap = (
                        u64::from(u32::from_le_bytes(e[20..24].try_into().unwrap())),
                        u64::from_le_bytes(e[24..32].try_into().unwrap()),
                    );
                }
                if e[0] != 0x85 {
                    continue;
                }
                let dir = e[4] & 0x10 != 0;
                let s = ents[i];
                assert_eq!(s[0], 0xC0);
                let first = u64::from(u32::from_le_bytes(s[20..24].try_into().unwrap()));
                let len = u64::from_le_bytes(s[24..32].try_into().unwrap());
                let name_len = usize::from(s[3]);
                let units: Vec<u16> = (0..name_len)
                    .map(|k| {
                        let n = ents[i + 1 + k / 15];
                        let o = 2 + 2 * (k % 15);
                        u16::from_le_bytes([n[o], n[o + 1]])
                    })
                    .collect();
                let name = String::from_utf16_lossy(&units);
                let cl = self.chain(b, first, len.div_ceil(self.cluster), s[1] & 2 != 0);
                let p = format!("{path}/{name}");
                if dir {
                    todo.push((p.clone(), self.data(b, &cl)));
                }
                out.push(Item {
                    path: p,
                    dir,
                    clusters: cl,
                });
                i += usize::from(e[1]);
            }
        }
        (bitmap, out)
    }
    fn bit(&self, b: &[u8], bm: u64, c: u64) -> bool {
        let o = self.off(bm) + ((c - 2) / 8) as usize;
        b[o] & (1 << ((c - 2) % 8)) != 0
    }
    fn clear(&self, b: &mut [u8], bm: u64, c: u64) {
        let o = self.off(bm) + ((c - 2) / 8) as usize;
        b[o] &= !(1 << ((c - 2) % 8));
    }
    /// The bitmap's map: everything below the heap, set clusters, the tail.
    fn bitmap_map(&self, b: &[u8], bm: u64) -> ExtentMap {
        let mut m = ExtentMap::new();
        m.insert(0, self.heap);
        for c in 2..self.count + 2 {
            if self.bit(b, bm, c) {
                m.insert(self.off(c) as u64, self.off(c) as u64 + self.cluster);
            }
        }
        let end = self.heap + self.count * self.cluster;
        m.insert(end, (b.len() as u64).max(end));
        m
    }
}

fn mounted_tree(dev: &str) -> BTreeMap<String, String> {
    common::damage::mounted_tree("mount.exfat-fuse -o ro", dev)
}

fn exfat_case(size_mib: u64, args: &str, seeds: u64) {
    if !(is_root() && have_all(&["mkfs.exfat", "fsck.exfat", "mount.exfat-fuse"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = common::damage::make_filled(
        dir.path(),
        size_mib,
        &format!("mkfs.exfat {args} '{{img}}' >/dev/null"),
        "mount.exfat-fuse",
        fill,
    ) else {
        return;
    };
    let good = std::fs::read(&img).unwrap();
    let ex = Ex::parse(&good);
    let ((bm, _), items) = ex.items(&good);
    assert!(bm >= 2);
    assert!(items.len() > 150, "tree not found: {} items", items.len());

    // Healthy: nothing added, the map is exactly the bitmap's.
    let u = fs::exfat::used(&MemSource(good.clone())).unwrap();
    let cc = u.cross_check.as_ref().expect("cross-checked");
    eprintln!("exFAT {args} healthy: {cc:?}");
    assert_eq!(cc.added, 0);
    assert!(cc.incomplete.is_none());
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);
    assert_eq!(
        u.used,
        ex.bitmap_map(&good, bm),
        "healthy map is not the bitmap's"
    );

    let dmg = dir.path().join("damaged.img");
    let with_data: Vec<&Item> = items.iter().filter(|i| !i.clusters.is_empty()).collect();
    let big: Vec<&Item> = items.iter().filter(|i| i.clusters.len() >= 4).collect();
    // The fragmented files really are chained, so both allocation kinds are exercised.
    let frag = items.iter().find(|i| i.path == "/frag-a.bin").unwrap();
    assert!(
        frag.clusters.windows(2).any(|w| w[1] != w[0] + 1),
        "frag-a.bin is contiguous"
    );
    for seed in 0..seeds {
        let mut rng = Rng(0xE8FA7 + seed * 104_729 + size_mib);
        let mut b = good.clone();
        let mut what = Vec::new();
        let mut cleared = 0u64;
        let mut must = ExtentMap::new();
        for k in 0..1 + rng.below(3) {
            // Half the time a big file (the fragmented ones are FAT-chained).
            let pool = if rng.below(2) == 0 { &big } else { &with_data };
            // Seed 0 always hits the FAT-chained file.
            let it = if seed == 0 && k == 0 {
                frag
            } else {
                pool[rng.below(pool.len() as u64) as usize]
            };
            let n = it.clusters.len();
            let (from, to) = match rng.below(3) {
                0 => (0, n),
                1 => {
                    let a = rng.below(n as u64) as usize;
                    (a, a + 1 + rng.below((n - a) as u64) as usize)
                }
                _ => (n - 1, n),
            };
            for &c in &it.clusters[from..to] {
                if ex.bit(&b, bm, c) {
                    ex.clear(&mut b, bm, c);
                    cleared += ex.cluster;
                }
                must.insert(ex.off(c) as u64, ex.off(c) as u64 + ex.cluster);
            }
            what.push(format!(
                "{} {} clusters {from}..{to} of {n} cleared",
                if it.dir { "dir" } else { "file" },
                it.path
            ));
        }
        let case = format!("exFAT {args} seed {seed}: {}", what.join("; "));
        std::fs::write(&dmg, &b).unwrap();
        let u = fs::exfat::used(&FileSource::open(&dmg).unwrap()).unwrap();
        common::damage::assert_cross_check_added(
            &case,
            &u,
            cleared,
            &must,
            &ex.bitmap_map(&b, bm),
            "run fsck.exfat",
        );

        let Some((_tmp, lp)) = restore_onto_random(&dmg, &u.used) else {
            return;
        };
        let orig = Loop::attach_offset(&dmg, 0, b.len() as u64).expect("loop device");
        let fsck = |dev: &str| run(&format!("fsck.exfat -n '{dev}'"), dev);
        let fa = fsck(&orig.dev);
        assert_eq!(fa, fsck(&lp.dev), "{case}: fsck.exfat differs");
        let ta = mounted_tree(&orig.dev);
        assert!(ta.len() > 150, "{case}: mount saw {} entries", ta.len());
        assert_eq!(ta, mounted_tree(&lp.dev), "{case}: files differ");
    }
}

#[test]
fn exfat_damaged_bitmap_restore_4k() {
    exfat_case(64, "-c 4K", 6);
}

#[test]
fn exfat_damaged_bitmap_restore_32k() {
    exfat_case(128, "-c 32K", 4);
}

/// A fresh mkfs.exfat image (root directory only, no mount needed); the hostile cases plant
/// entry sets in its root by hand.
fn fresh_exfat() -> Option<(Vec<u8>, Ex)> {
    let b = common::fresh_image("mkfs.exfat", "mkfs.exfat -c 4K '{img}' >/dev/null", 16)?;
    let ex = Ex::parse(&b);
    Some((b, ex))
}

/// Writes a file entry set (file, stream, one name entry) at root entry slot `slot`.
fn plant(b: &mut [u8], ex: &Ex, slot: usize, dir: bool, first: u32, len: u64, flags: u8) {
    let o = ex.off(u64::from(ex.root)) + 32 * slot;
    let e = &mut b[o..o + 96];
    e.fill(0);
    e[0] = 0x85;
    e[1] = 2;
    e[4] = if dir { 0x10 } else { 0x20 };
    e[32] = 0xC0;
    e[33] = flags;
    e[35] = 1;
    e[32 + 8..32 + 16].copy_from_slice(&len.to_le_bytes());
    e[32 + 20..32 + 24].copy_from_slice(&first.to_le_bytes());
    e[32 + 24..32 + 32].copy_from_slice(&len.to_le_bytes());
    e[64] = 0xC1;
    e[66] = b'x';
}

#[test]
fn exfat_cross_check_hostile_entries() {
    let Some((good, ex)) = fresh_exfat() else {
        return;
    };
    let size = good.len() as u64;
    // The first free root slot (after bitmap, up-case, label entries).
    let root = ex.off(u64::from(ex.root));
    let slot = (0..64).find(|&k| good[root + 32 * k] == 0).unwrap();
    let u0 = fs::exfat::used(&MemSource(good.clone())).unwrap();
    assert_eq!(u0.cross_check.as_ref().unwrap().added, 0);
    let free = (2..ex.count + 2)
        .rev()
        .find(|&c| !u0.used.contains(ex.off(c) as u64))
        .unwrap();

    // A contiguous file in free clusters: added, exactly its clusters.
    let mut b = good.clone();
    plant(
        &mut b,
        &ex,
        slot,
        false,
        free as u32 - 3,
        4 * ex.cluster - 10,
        3,
    );
    let u = fs::exfat::used(&MemSource(b)).unwrap();
    assert_eq!(u.cross_check.as_ref().unwrap().added, 4 * ex.cluster);
    assert!(u.warnings.iter().any(|w| w.contains("run fsck.exfat")));

    // A contiguous file running past the heap: clipped, reported, never past the volume.
    let mut b = good.clone();
    plant(&mut b, &ex, slot, false, free as u32, u64::MAX, 3);
    let u = fs::exfat::used(&MemSource(b)).unwrap();
    assert!(
        u.warnings.iter().any(|w| w.contains("outside the heap")),
        "{:?}",
        u.warnings
    );
    assert!(u.used.end() <= size);

    // A first cluster outside the heap: ignored and reported.
    let mut b = good.clone();
    plant(&mut b, &ex, slot, false, 0xFFFF_FF00, 4096, 1);
    let u = fs::exfat::used(&MemSource(b)).unwrap();
    assert_eq!(u.cross_check.as_ref().unwrap().added, 0);
    assert!(u.warnings.iter().any(|w| w.contains("outside the heap")));

    // A directory that is the root itself (a loop), FAT-chained: the walk ends.
    let mut b = good.clone();
    plant(&mut b, &ex, slot, true, ex.root, 1 << 20, 1);
    let u = fs::exfat::used(&MemSource(b)).unwrap();
    assert!(u.cross_check.as_ref().unwrap().incomplete.is_none());

    // A FAT-chained file whose chain loops: the walk ends, the loop's clusters are kept.
    let mut b = good.clone();
    let c = free as u32 - 1;
    plant(&mut b, &ex, slot, false, c, 1 << 30, 1);
    let fo = (ex.fat + 4 * u64::from(c)) as usize;
    b[fo..fo + 4].copy_from_slice(&c.to_le_bytes());
    let u = fs::exfat::used(&MemSource(b)).unwrap();
    assert_eq!(u.cross_check.as_ref().unwrap().added, ex.cluster);

    // Random bytes in the planted entries and the root: never a panic, never past the volume,
    // never less than the bitmap keeps.
    let mut base = good.clone();
    plant(&mut base, &ex, slot, true, free as u32 - 2, 8192, 3);
    plant(&mut base, &ex, slot + 3, false, free as u32 - 8, 20_000, 1);
    let floor = fs::exfat::used(&MemSource(good.clone())).unwrap().used;
    let mut rng = Rng(0xE8_BAD);
    let mut b = base;
    for round in 0..3000 {
        let mut undo = Vec::new();
        for _ in 0..1 + round % 5 {
            let at = root + 32 * slot + rng.below(192) as usize;
            undo.push((at, b[at]));
            b[at] = rng.next() as u8;
        }
        let src = MemSource(b);
        if let Ok(u) = fs::exfat::used(&src) {
            assert!(u.used.end() <= size);
            assert_eq!(floor.subtract(&u.used).total(), 0, "round {round}");
        }
        b = src.0;
        for (at, v) in undo.into_iter().rev() {
            b[at] = v;
        }
    }
}

/// Read cost of the map with its cross-check on a realistic filled volume: a 512 MiB exFAT
/// with 3000 files in 60 directories. Run with
/// `cargo test --release --test damage_exfat -- --ignored --nocapture read_cost`.
#[test]
#[ignore = "measurement; takes a while"]
fn exfat_read_cost() {
    if !(is_root() && have_all(&["mkfs.exfat", "mount.exfat-fuse"])) {
        return;
    }
    common::damage::read_cost(
        "exFAT",
        "mkfs.exfat '{img}' >/dev/null",
        "mount.exfat-fuse",
        fs::exfat::used,
    );
}
