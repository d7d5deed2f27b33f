//! The FAT cross-check, proven on damaged images: zero FAT entries (in every copy) under files'
//! and directories' clusters, so the allocation map calls them free while directory entries
//! still reference them, then map the image, restore only the mapped bytes onto random garbage
//! and compare what the filesystem's own tools see on the damaged original and on the restored
//! copy:
//!
//! - `fsck.fat -n` prints the same report (it reports the damage: "Contains a free cluster");
//! - `mcopy -s` copies the same files with the same errors (mtools refuses to follow a chain
//!   into a free cluster);
//! - a `fusefat` read-only mount (a FUSE FAT driver that, like the Linux one, reads a file's or
//!   directory's first cluster without asking the FAT) reads every file byte-for-byte the same.
//!
//! Without the cross-check the last one fails: the referenced clusters would be left out and
//! come back as garbage. On the undamaged image the cross-check must add nothing and the map
//! must be exactly the FAT's (every cluster non-zero in some copy, plus everything before the
//! data region and the partial tail). Cases skip with a printed reason when a tool or root is
//! missing (and fail instead under `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).

mod common;

use common::damage::{noise, read_tree, run, Rng};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use blockwise::fs;
use blockwise::io::{FileSource, MemSource};
use blockwise::ExtentMap;
use common::{have_all, is_root, restore_onto_random, sh, Loop};

fn tools() -> bool {
    is_root() && have_all(&["mkfs.vfat", "fsck.vfat", "mcopy", "fusefat", "fusermount"])
}

/// A tree with files of 0 bytes to several clusters, a directory big enough to span clusters,
/// and nesting.
fn make_tree(root: &Path) {
    common::damage::write_tree(
        root,
        &common::damage::TreeShape {
            step: 3331,
            modulo: 40_000,
            many: 70,
            many_prefix: "a file with a long name",
            many_mod: 9000,
            level_sep: "",
            deep_base: 2000,
            deep_step: 3000,
        },
    );
}

/// Just enough FAT parsing to find files' chains and change FAT entries, independent of the
/// library.
struct Fat {
    bps: u64,
    spc: u64,
    reserved: u64,
    nfats: u64,
    fat_len: u64,
    root_entries: u64,
    root_cluster: u32,
    bits: u32,
    clusters: u64,
    total: u64,
}

struct Item {
    path: String,
    dir: bool,
    chain: Vec<u32>,
}

impl Fat {
    fn parse(b: &[u8]) -> Fat {
        let u16_ = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_ = |o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
        let bps = u16_(0x0B);
        let spc = u64::from(b[0x0D]);
        let reserved = u16_(0x0E);
        let nfats = u64::from(b[0x10]);
        let root_entries = u16_(0x11);
        let total = if u16_(0x13) != 0 {
            u16_(0x13)
        } else {
            u32_(0x20)
        };
        let fat_len = if u16_(0x16) != 0 {
            u16_(0x16)
        } else {
            u32_(0x24)
        };
        let root_secs = (root_entries * 32).div_ceil(bps);
        let data = reserved + nfats * fat_len + root_secs;
        let clusters = (total - data) / spc;
        let bits = if u16_(0x16) == 0 {
            32
        } else if clusters < 4085 {
            12
        } else {
            16
        };
        Fat {
            bps,
            spc,
            reserved,
            nfats,
            fat_len,
            root_entries,
            root_cluster: u32_(0x2C) as u32,
            bits,
            clusters,
            total,
        }
    }
    fn cbytes(&self) -> u64 {
        self.bps * self.spc
    }
    fn data_start(&self) -> u64 {
        (self.reserved + self.nfats * self.fat_len + (self.root_entries * 32).div_ceil(self.bps))
            * self.bps
    }
    fn cluster_off(&self, c: u32) -> usize {
        (self.data_start() + (u64::from(c) - 2) * self.cbytes()) as usize
    }
    fn entry(&self, b: &[u8], copy: u64, n: u32) -> u32 {
        let base = ((self.reserved + copy * self.fat_len) * self.bps) as usize;
        let n = n as usize;
        match self.bits {
            12 => {
                let o = base + n * 3 / 2;
                let v = u32::from(u16::from_le_bytes([b[o], b[o + 1]]));
                if n % 2 == 0 {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
            16 => u32::from(u16::from_le_bytes([b[base + 2 * n], b[base + 2 * n + 1]])),
            _ => {
                u32::from_le_bytes(b[base + 4 * n..base + 4 * n + 4].try_into().unwrap())
                    & 0x0FFF_FFFF
            }
        }
    }
    fn set(&self, b: &mut [u8], n: u32, v: u32) {
        for copy in 0..self.nfats {
            let base = ((self.reserved + copy * self.fat_len) * self.bps) as usize;
            let n = n as usize;
            match self.bits {
                12 => {
                    let o = base + n * 3 / 2;
                    let mut w = u16::from_le_bytes([b[o], b[o + 1]]);
                    if n % 2 == 0 {
                        w = (w & 0xF000) | (v as u16 & 0xFFF);
                    } else {
                        w = (w & 0x000F) | ((v as u16) << 4);
                    }
                    b[o..o + 2].copy_from_slice(&w.to_le_bytes());
                }
                16 => b[base + 2 * n..base + 2 * n + 2].copy_from_slice(&(v as u16).to_le_bytes()),
                _ => {
                    let o = base + 4 * n;
                    let old = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
                    let new = (old & 0xF000_0000) | (v & 0x0FFF_FFFF);
                    b[o..o + 4].copy_from_slice(&new.to_le_bytes());
                }
            }
        }
    }
    fn eoc(&self, v: u32) -> bool {
        v >= match self.bits {
            12 => 0xFF8,
            16 => 0xFFF8,
            _ => 0x0FFF_FFF8,
        }
    }
    fn chain(&self, b: &[u8], first: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = first;
        while c >= 2 && u64::from(c) < self.clusters + 2 && out.len() < 1 << 20 {
            out.push(c);
            let v = self.entry(b, 0, c);
            if v < 2 || self.eoc(v) {
                break;
            }
            c = v;
        }
        out
    }
    /// Every file and directory below the root, with its chain.
    fn items(&self, b: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        let root: Vec<u8> = if self.bits == 32 {
            self.chain(b, self.root_cluster)
                .iter()
                .flat_map(|&c| {
                    let o = self.cluster_off(c);
                    b[o..o + self.cbytes() as usize].to_vec()
                })
                .collect()
        } else {
            let o = ((self.reserved + self.nfats * self.fat_len) * self.bps) as usize;
            b[o..o + (self.root_entries * 32) as usize].to_vec()
        };
        let mut todo = vec![(String::new(), root)];
        while let Some((path, buf)) = todo.pop() {
            for e in buf.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                if e[0] == 0xE5 || e[11] & 0x3F == 0x0F || e[11] & 0x08 != 0 || e[0] == b'.' {
                    continue;
                }
                let name = String::from_utf8_lossy(&e[0..11]).to_string();
                let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
                let hi = if self.bits == 32 {
                    u32::from(u16::from_le_bytes([e[20], e[21]]))
                } else {
                    0
                };
                let first = hi << 16 | lo;
                let dir = e[11] & 0x10 != 0;
                let chain = if first == 0 {
                    Vec::new()
                } else {
                    self.chain(b, first)
                };
                let p = format!("{path}/{name}");
                if dir {
                    let data: Vec<u8> = chain
                        .iter()
                        .flat_map(|&c| {
                            let o = self.cluster_off(c);
                            b[o..o + self.cbytes() as usize].to_vec()
                        })
                        .collect();
                    todo.push((p.clone(), data));
                }
                out.push(Item {
                    path: p,
                    dir,
                    chain,
                });
            }
        }
        out
    }
    /// The map the FAT alone gives: everything before the data region, every cluster non-zero
    /// in any copy, the partial tail.
    fn fat_map(&self, b: &[u8]) -> ExtentMap {
        let mut m = ExtentMap::new();
        m.insert(0, self.data_start());
        for c in 2..self.clusters as u32 + 2 {
            if (0..self.nfats).any(|k| self.entry(b, k, c) != 0) {
                let o = self.cluster_off(c) as u64;
                m.insert(o, o + self.cbytes());
            }
        }
        let tail = self.data_start() + self.clusters * self.cbytes();
        m.insert(tail, (self.total * self.bps).max(tail));
        m
    }
}

/// `fsck.vfat -n`: success, and its report with the device named DEV.
fn fsck(path: &str) -> (bool, String) {
    run(&format!("fsck.vfat -n '{path}'"), path)
}

/// mcopy -s of the whole volume: success, messages and the files it wrote.
fn mcopy_all(image: &str, out: &Path) -> (bool, String, BTreeMap<String, String>) {
    std::fs::create_dir_all(out).unwrap();
    let (ok, text) = run(
        &format!(
            "MTOOLS_SKIP_CHECK=1 mcopy -s -n -i '{image}' ::/ '{}'",
            out.display()
        ),
        image,
    );
    (ok, text, read_tree(out))
}

/// Every file read through a fusefat read-only mount.
fn fusefat_tree(image: &str) -> BTreeMap<String, String> {
    let mnt = tempfile::tempdir().unwrap();
    sh(&format!(
        "fusefat -o ro '{image}' '{}' >/dev/null",
        mnt.path().display()
    ));
    let t = read_tree(mnt.path());
    let _ = Command::new("fusermount")
        .arg("-u")
        .arg(mnt.path())
        .status();
    t
}

/// Damages `b` in one of several ways chosen by `rng`; returns what was done and the bytes of
/// the clusters whose entries were zeroed.
fn damage(fat: &Fat, b: &mut [u8], items: &[Item], rng: &mut Rng) -> (String, u64) {
    let mut what = Vec::new();
    let mut zeroed = 0u64;
    let victims = 1 + rng.below(3);
    for _ in 0..victims {
        let cands: Vec<&Item> = items.iter().filter(|i| !i.chain.is_empty()).collect();
        let it = cands[rng.below(cands.len() as u64) as usize];
        let chain = fat.chain(b, it.chain[0]);
        if chain.is_empty() || fat.entry(b, 0, chain[0]) == 0 {
            continue;
        }
        let kind = rng.below(3);
        let from = match kind {
            0 => 0,
            1 => rng.below(chain.len() as u64) as usize,
            _ => chain.len() - 1,
        };
        for &c in &chain[from..] {
            fat.set(b, c, 0);
            zeroed += fat.cbytes();
        }
        what.push(format!(
            "{} {} clusters {}..{} zeroed",
            if it.dir { "dir" } else { "file" },
            it.path,
            from,
            chain.len()
        ));
    }
    (what.join("; "), zeroed)
}

fn fat_case(bits: u32, size_kib: u64, spc: u32, seeds: u64) {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat.img");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sh(&format!(
        "mkfs.vfat -C -F {bits} -s {spc} -n DAMAGE '{}' {size_kib} >/dev/null",
        img.display()
    ));
    make_tree(&src);
    sh(&format!(
        "cd '{}' && MTOOLS_SKIP_CHECK=1 mcopy -i '{}' -s -Q * ::/",
        src.display(),
        img.display()
    ));
    let good = std::fs::read(&img).unwrap();
    let fat = Fat::parse(&good);
    assert_eq!(fat.bits, bits);
    let items = fat.items(&good);
    assert!(items.len() > 100, "tree not found: {} items", items.len());

    // Healthy: nothing added, the map is exactly the FAT's.
    let u = fs::fat::used(&MemSource(good.clone())).unwrap();
    let cc = u.cross_check.as_ref().expect("cross-checked");
    eprintln!("FAT{bits} healthy: {cc:?}");
    assert_eq!(cc.added, 0);
    assert!(cc.incomplete.is_none());
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);
    assert_eq!(
        u.used,
        fat.fat_map(&good),
        "healthy map differs from the FAT's"
    );

    let dmg = dir.path().join("damaged.img");
    for seed in 0..seeds {
        let mut rng = Rng(0xFA7 + seed * 7919 + u64::from(bits));
        let mut b = good.clone();
        let (what, zeroed) = damage(&fat, &mut b, &items, &mut rng);
        let case = format!("FAT{bits} seed {seed}: {what}");
        std::fs::write(&dmg, &b).unwrap();
        let u = fs::fat::used(&FileSource::open(&dmg).unwrap()).unwrap();
        let cc = u.cross_check.clone().expect("cross-checked");
        eprintln!("{case}\n  -> {cc:?}");
        assert!(cc.added > 0, "{case}: nothing added");
        assert!(
            cc.added <= zeroed,
            "{case}: added {} > zeroed {zeroed}",
            cc.added
        );
        assert!(cc.incomplete.is_none());
        assert!(
            u.warnings.iter().any(|w| w.contains("run fsck.fat")),
            "{case}: {:?}",
            u.warnings
        );
        // The map is the FAT's plus only what was added.
        assert_eq!(u.used.subtract(&fat.fat_map(&b)).total(), cc.added);

        let Some((_tmp, lp)) = restore_onto_random(&dmg, &u.used) else {
            return;
        };
        // The original through a loop device too, so the tools' messages match.
        let orig = Loop::attach_offset(&dmg, 0, b.len() as u64).expect("loop device");
        let dmg_s = orig.dev.clone();
        assert_eq!(fsck(&dmg_s), fsck(&lp.dev), "{case}: fsck.fat differs");
        let (a_ok, a_msg, a_files) = mcopy_all(&dmg_s, &dir.path().join(format!("a{seed}")));
        let (b_ok, b_msg, b_files) = mcopy_all(&lp.dev, &dir.path().join(format!("b{seed}")));
        assert_eq!((a_ok, &a_msg), (b_ok, &b_msg), "{case}: mcopy differs");
        assert_eq!(a_files, b_files, "{case}: mcopy files differ");
        let fa = fusefat_tree(&dmg_s);
        assert!(fa.len() > 20, "{case}: fusefat saw {} entries", fa.len());
        assert_eq!(fa, fusefat_tree(&lp.dev), "{case}: fusefat reads differ");
    }
}

#[test]
fn fat12_damaged_fat_restore() {
    fat_case(12, 4096, 4, 6);
}

#[test]
fn fat16_damaged_fat_restore() {
    fat_case(16, 32 * 1024, 4, 6);
}

#[test]
fn fat32_damaged_fat_restore() {
    fat_case(32, 64 * 1024, 1, 6);
}

/// A small FAT32 image with a few files and directories, built without root.
fn small_fat32() -> Option<(Vec<u8>, Fat, Vec<Item>)> {
    if !have_all(&["mkfs.vfat", "mcopy"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.img");
    let src = dir.path().join("src");
    for i in 0..12 {
        let p = src.join(format!("d{}/f{i}.bin", i % 3));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, noise(700 * i, i as u64)).unwrap();
    }
    sh(&format!(
        "mkfs.vfat -C -F 32 -s 1 '{}' 40000 >/dev/null && cd '{}' && \
         MTOOLS_SKIP_CHECK=1 mcopy -i '{}' -s -Q * ::/",
        img.display(),
        src.display(),
        img.display()
    ));
    let b = std::fs::read(&img).unwrap();
    let fat = Fat::parse(&b);
    let items = fat.items(&b);
    Some((b, fat, items))
}

#[test]
fn fat_cross_check_hostile_directories() {
    let Some((good, fat, items)) = small_fat32() else {
        return;
    };
    let size = good.len() as u64;
    let data = fat.data_start();
    let map_of = |b: Vec<u8>| fs::fat::used(&MemSource(b)).expect("map");

    // A directory whose chain loops onto itself: the walk ends, nothing is added.
    let d = items.iter().find(|i| i.dir).unwrap();
    let mut b = good.clone();
    fat.set(&mut b, d.chain[0], d.chain[0]);
    let u = map_of(b);
    let cc = u.cross_check.unwrap();
    assert_eq!(cc.added, 0);
    assert!(cc.incomplete.is_none());

    // A subdirectory entry that points at its parent (the root): a directory loop.
    let mut b = good.clone();
    let root_off = fat.cluster_off(fat.root_cluster);
    let ent = (0..16)
        .map(|k| root_off + 32 * k)
        .find(|&o| b[o + 11] & 0x10 != 0 && b[o] != b'.')
        .unwrap();
    b[ent + 20..ent + 22].copy_from_slice(&((fat.root_cluster >> 16) as u16).to_le_bytes());
    b[ent + 26..ent + 28].copy_from_slice(&(fat.root_cluster as u16).to_le_bytes());
    let u = map_of(b);
    assert_eq!(u.cross_check.unwrap().added, 0);

    // A file entry pointing past the data region is ignored and reported, not trusted.
    let f = items
        .iter()
        .find(|i| !i.dir && !i.chain.is_empty())
        .unwrap();
    let mut b = good.clone();
    let parent = items
        .iter()
        .find(|i| i.dir && f.path.starts_with(&i.path))
        .unwrap();
    let po = fat.cluster_off(parent.chain[0]);
    let name = &f.path[f.path.rfind('/').unwrap() + 1..];
    let fe = (0..fat.cbytes() as usize / 32)
        .map(|k| po + 32 * k)
        .find(|&o| &b[o..o + 11] == name.as_bytes())
        .unwrap();
    b[fe + 20..fe + 22].copy_from_slice(&0x0FFFu16.to_le_bytes());
    let u = map_of(b);
    assert_eq!(u.cross_check.as_ref().unwrap().added, 0);
    assert!(
        u.warnings.iter().any(|w| w.contains("outside")),
        "{:?}",
        u.warnings
    );

    // The root directory cluster outside the FAT: the walk cannot start, so every cluster of
    // the data region is kept.
    let mut b = good.clone();
    b[0x2C..0x30].copy_from_slice(&0x0FFF_FF00u32.to_le_bytes());
    let u = map_of(b);
    let cc = u.cross_check.unwrap();
    assert!(cc.incomplete.is_some());
    let end = data + fat.clusters * fat.cbytes();
    assert_eq!(u.used.covered(data, end), end - data);

    // Random bytes in the FAT and the directories: never a panic, never a map past the volume,
    // never less than the FAT alone keeps.
    let mut dirs: Vec<usize> = items
        .iter()
        .filter(|i| i.dir)
        .map(|i| fat.cluster_off(i.chain[0]))
        .collect();
    dirs.push(root_off);
    let fat0 = (fat.reserved * fat.bps) as usize;
    let mut rng = Rng(0xBAD_FA7);
    let mut b = good.clone();
    for round in 0..3000 {
        let mut undo = Vec::new();
        for _ in 0..1 + round % 6 {
            let at = if rng.below(2) == 0 {
                fat0 + rng.below(256) as usize
            } else {
                dirs[rng.below(dirs.len() as u64) as usize] + rng.below(512) as usize
            };
            undo.push((at, b[at]));
            b[at] = rng.next() as u8;
        }
        let floor = fat.fat_map(&b);
        let src = MemSource(b);
        let u = fs::fat::used(&src).expect("map");
        assert!(u.used.end() <= size);
        assert_eq!(floor.subtract(&u.used).total(), 0, "round {round}");
        b = src.0;
        for (at, v) in undo.into_iter().rev() {
            b[at] = v;
        }
    }
}

/// Read cost of the map with its cross-check on a realistic filled volume: a 256 MiB FAT32
/// with 400 files in 20 directories. Prints bytes read against bytes mapped. Run with
/// `cargo test --release --test damage_fat -- --ignored --nocapture read_cost`.
#[test]
#[ignore = "measurement; takes a while"]
fn fat32_read_cost() {
    if !have_all(&["mkfs.vfat", "mcopy"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    let src = dir.path().join("src");
    for i in 0..400u64 {
        let p = src.join(format!("dir{:02}/file {i:03}.bin", i % 20));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, noise((1 + (i * 7919) % 600) as usize * 1000, i)).unwrap();
    }
    sh(&format!(
        "mkfs.vfat -C -F 32 '{}' {} >/dev/null && cd '{}' && \
         MTOOLS_SKIP_CHECK=1 mcopy -i '{}' -s -Q * ::/",
        img.display(),
        256 * 1024,
        src.display(),
        img.display()
    ));
    let c = blockwise::io::Counting::new(FileSource::open(&img).unwrap());
    let u = fs::fat::used(&c).unwrap();
    let fat = Fat::parse(&std::fs::read(&img).unwrap());
    eprintln!(
        "FAT32: the FAT copies the allocation map reads are {} bytes ({} clusters of {})",
        fat.nfats * fat.fat_len * fat.bps,
        fat.clusters,
        fat.cbytes()
    );
    eprintln!(
        "FAT32 256 MiB, 400 files: read {} bytes in {} calls, mapped {} bytes ({:.3}%); {:?}",
        c.bytes_read(),
        c.calls(),
        u.used.total(),
        100.0 * c.bytes_read() as f64 / u.used.total() as f64,
        u.cross_check
    );
}
