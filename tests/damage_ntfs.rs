//! The NTFS cross-check, proven on damaged images: clear `$Bitmap` bits under the runs of
//! files' `$DATA` and directories' `$INDEX_ALLOCATION` (the bitmap then calls those clusters
//! free while MFT records still reference them), map the image, restore only the mapped bytes
//! onto random garbage, and compare the damaged original with the restored copy:
//!
//! - `ntfsfix -n` and `ntfscluster -i` print the same reports;
//! - every file read through a read-only ntfs-3g mount is identical, byte for byte.
//!
//! Without the cross-check the second fails. On the undamaged image the cross-check adds
//! nothing and the map is exactly the bitmap's. Cases skip with a printed reason when a tool or
//! root is missing.

mod common;

use common::damage::{noise, run, Rng};

use std::collections::BTreeMap;
use std::path::Path;

use blockwise::fs;
use blockwise::io::{FileSource, MemSource};
use blockwise::ExtentMap;
use common::{have_all, is_root, restore_onto_random, sh, Loop};

/// Files from empty to many clusters, a big directory (non-resident index), nesting, and
/// fragmented files written in interleaved appends.
fn fill(mnt: &Path) {
    common::damage::write_tree(
        mnt,
        &common::damage::TreeShape {
            step: 33_331,
            modulo: 400_000,
            many: 300,
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
    // Holes, then a big file that has to fill them.
    for i in (0..300).step_by(2) {
        std::fs::remove_file(mnt.join(format!("many/ein langer Dateiname Nummer {i:03}.dat")))
            .unwrap();
    }
    sh("sync");
    std::fs::write(mnt.join("holes.bin"), noise(1_500_000, 77)).unwrap();
    use std::io::Write;
    let mut fa = std::fs::File::create(mnt.join("frag-a.bin")).unwrap();
    let mut fb = std::fs::File::create(mnt.join("frag-b.bin")).unwrap();
    for i in 0..40 {
        fa.write_all(&noise(50_000, 500 + i)).unwrap();
        fa.sync_all().unwrap();
        fb.write_all(&noise(50_000, 600 + i)).unwrap();
        fb.sync_all().unwrap();
    }
}

/// Just enough NTFS parsing to find the runs of every record in use, independent of the
/// library.
struct Nt {
    cluster: u64,
    record: u64,
    mft: u64,
}

/// Type, name length and `(lcn, len)` runs of a non-resident attribute.
type AttrRuns = (u32, u8, Vec<(u64, u64)>);

/// A record in use and the runs `(lcn, len)` of one non-resident attribute.
struct Item {
    record: u64,
    ty: u32,
    runs: Vec<(u64, u64)>,
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}

impl Nt {
    fn parse(b: &[u8]) -> Nt {
        let cluster = le16(b, 0x0B) * u64::from(b[0x0D]);
        let cpr = b[0x40] as i8;
        let record = if cpr > 0 {
            cluster * cpr as u64
        } else {
            1 << (-cpr)
        };
        let mft = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) * cluster;
        Nt {
            cluster,
            record,
            mft,
        }
    }
    /// A record with fixups applied, or `None` if not a FILE record.
    fn fixed(&self, b: &[u8], off: u64) -> Option<Vec<u8>> {
        let mut r = b[off as usize..(off + self.record) as usize].to_vec();
        if &r[0..4] != b"FILE" {
            return None;
        }
        let (usa, n) = (le16(&r, 4) as usize, le16(&r, 6) as usize);
        for i in 1..n {
            let (a, bb) = (r[usa + 2 * i], r[usa + 2 * i + 1]);
            r[i * 512 - 2] = a;
            r[i * 512 - 1] = bb;
        }
        Some(r)
    }
    /// Non-resident attributes of a record: (type, name length, runs).
    fn runs(r: &[u8]) -> Vec<AttrRuns> {
        let mut out = Vec::new();
        let mut off = le16(r, 0x14) as usize;
        while le32(r, off) != 0xFFFF_FFFF {
            let len = le32(r, off + 4) as usize;
            let a = &r[off..off + len];
            if a[8] == 1 {
                let mut p = le16(a, 0x20) as usize;
                let mut lcn = 0i64;
                let mut runs = Vec::new();
                while a[p] != 0 {
                    let (ln, on) = (usize::from(a[p] & 15), usize::from(a[p] >> 4));
                    let mut l = 0u64;
                    for k in (0..ln).rev() {
                        l = l << 8 | u64::from(a[p + 1 + k]);
                    }
                    if on > 0 {
                        let mut d = 0i64;
                        for k in (0..on).rev() {
                            d = d << 8 | i64::from(a[p + 1 + ln + k]);
                        }
                        if a[p + ln + on] & 0x80 != 0 {
                            d -= 1i64 << (8 * on);
                        }
                        lcn += d;
                        runs.push((lcn as u64, l));
                    }
                    p += 1 + ln + on;
                }
                out.push((le32(a, 0) as u32, a[9], runs));
            }
            off += len;
        }
        out
    }
    /// Every non-resident attribute of every record in use, and $Bitmap's runs.
    fn items(&self, b: &[u8]) -> (Vec<Item>, Vec<(u64, u64)>) {
        let r0 = self.fixed(b, self.mft).unwrap();
        let mft_runs = Nt::runs(&r0)
            .into_iter()
            .find(|(t, n, _)| *t == 0x80 && *n == 0)
            .unwrap()
            .2;
        let mut out = Vec::new();
        let mut bitmap = Vec::new();
        let mut idx = 0u64;
        for (lcn, len) in mft_runs {
            let (s, e) = (lcn * self.cluster, (lcn + len) * self.cluster);
            let mut off = s;
            while off + self.record <= e {
                if let Some(r) = self.fixed(b, off) {
                    if le16(&r, 0x16) & 1 != 0 {
                        for (ty, name_len, runs) in Nt::runs(&r) {
                            if idx == 6 && ty == 0x80 && name_len == 0 {
                                bitmap = runs.clone();
                            }
                            out.push(Item {
                                record: idx,
                                ty,
                                runs,
                            });
                        }
                    }
                }
                off += self.record;
                idx += 1;
            }
        }
        (out, bitmap)
    }
    fn bit_at(&self, bitmap: &[(u64, u64)], c: u64) -> usize {
        let byte = c / 8;
        let mut v = 0;
        for &(lcn, len) in bitmap {
            let bytes = len * self.cluster;
            if byte < v + bytes {
                return (lcn * self.cluster + byte - v) as usize;
            }
            v += bytes;
        }
        panic!("cluster {c} beyond $Bitmap")
    }
    fn bit(&self, b: &[u8], bm: &[(u64, u64)], c: u64) -> bool {
        b[self.bit_at(bm, c)] & (1 << (c % 8)) != 0
    }
    fn clear(&self, b: &mut [u8], bm: &[(u64, u64)], c: u64) {
        let o = self.bit_at(bm, c);
        b[o] &= !(1 << (c % 8));
    }
    /// The bitmap's map: set clusters, the partial tail and the backup boot sector.
    fn bitmap_map(&self, b: &[u8], bm: &[(u64, u64)]) -> ExtentMap {
        let total = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) * le16(b, 0x0B);
        let clusters = total / self.cluster;
        let mut m = ExtentMap::new();
        for c in 0..clusters {
            if self.bit(b, bm, c) {
                m.insert(c * self.cluster, (c + 1) * self.cluster);
            }
        }
        m.insert(
            clusters * self.cluster,
            (total + le16(b, 0x0B)).min(b.len() as u64),
        );
        m
    }
}

fn mounted_tree(dev: &str) -> BTreeMap<String, String> {
    common::damage::mounted_tree("mount -t ntfs-3g -o ro", dev)
}

fn ntfs_case(size_mib: u64, args: &str, seeds: u64) {
    if !(is_root() && have_all(&["mkfs.ntfs", "ntfs-3g", "ntfsfix", "ntfscluster"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = common::damage::make_filled(
        dir.path(),
        size_mib,
        &format!("mkfs.ntfs -F -Q -q {args} '{{img}}'"),
        "mount -t ntfs-3g",
        fill,
    ) else {
        return;
    };
    let good = std::fs::read(&img).unwrap();
    let nt = Nt::parse(&good);
    let (items, bm) = nt.items(&good);
    assert!(!bm.is_empty());
    // File data and directory indexes of the files we wrote (records past the system ones).
    let victims: Vec<&Item> = items
        .iter()
        .filter(|i| i.record >= 24 && (i.ty == 0x80 || i.ty == 0xA0) && !i.runs.is_empty())
        .collect();
    assert!(victims.len() > 100, "only {} victims", victims.len());
    let frag = *victims.iter().max_by_key(|i| i.runs.len()).unwrap();
    assert!(frag.runs.len() > 3, "no fragmented file");

    let u = fs::ntfs::used(&MemSource(good.clone())).unwrap();
    let cc = u.cross_check.as_ref().expect("cross-checked");
    eprintln!("NTFS {args} healthy: {cc:?}");
    assert_eq!(cc.added, 0);
    assert!(cc.incomplete.is_none());
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);
    assert_eq!(
        u.used,
        nt.bitmap_map(&good, &bm),
        "healthy map is not the bitmap's"
    );

    let dmg = dir.path().join("damaged.img");
    for seed in 0..seeds {
        let mut rng = Rng(0x47F5 + seed * 15_485_863 + size_mib);
        let mut b = good.clone();
        let mut what = Vec::new();
        let mut cleared = 0u64;
        let mut must = ExtentMap::new();
        for k in 0..1 + rng.below(3) {
            let it = if seed == 0 && k == 0 {
                frag
            } else {
                victims[rng.below(victims.len() as u64) as usize]
            };
            let all: Vec<u64> = it.runs.iter().flat_map(|&(l, n)| l..l + n).collect();
            let n = all.len();
            let (from, to) = match rng.below(3) {
                0 => (0, n),
                1 => {
                    let a = rng.below(n as u64) as usize;
                    (a, a + 1 + rng.below((n - a) as u64) as usize)
                }
                _ => (n - 1, n),
            };
            for &c in &all[from..to] {
                if nt.bit(&b, &bm, c) {
                    nt.clear(&mut b, &bm, c);
                    cleared += nt.cluster;
                }
                must.insert(c * nt.cluster, (c + 1) * nt.cluster);
            }
            what.push(format!(
                "record {} {:#x} clusters {from}..{to} of {n} cleared",
                it.record, it.ty
            ));
        }
        let case = format!("NTFS {args} seed {seed}: {}", what.join("; "));
        std::fs::write(&dmg, &b).unwrap();
        let u = fs::ntfs::used(&FileSource::open(&dmg).unwrap()).unwrap();
        common::damage::assert_cross_check_added(
            &case,
            &u,
            cleared,
            &must,
            &nt.bitmap_map(&b, &bm),
            "run chkdsk",
        );

        let Some((_tmp, lp)) = restore_onto_random(&dmg, &u.used) else {
            return;
        };
        let orig = Loop::attach_offset(&dmg, 0, b.len() as u64).expect("loop device");
        let check = |dev: &str| {
            (
                run(&format!("ntfsfix -n '{dev}'"), dev),
                run(&format!("ntfscluster -i -f '{dev}'"), dev),
            )
        };
        assert_eq!(
            check(&orig.dev),
            check(&lp.dev),
            "{case}: ntfsfix/ntfscluster differ"
        );
        let ta = mounted_tree(&orig.dev);
        assert!(ta.len() > 150, "{case}: mount saw {} entries", ta.len());
        assert_eq!(ta, mounted_tree(&lp.dev), "{case}: files differ");
    }
}

#[test]
fn ntfs_damaged_bitmap_restore_4k() {
    ntfs_case(96, "", 6);
}

#[test]
fn ntfs_damaged_bitmap_restore_512b() {
    ntfs_case(64, "-c 512", 4);
}

/// A fresh 16 MiB mkntfs image (no mount needed).
fn fresh_ntfs() -> Option<Vec<u8>> {
    common::fresh_image("mkfs.ntfs", "mkfs.ntfs -F -Q -q '{img}'", 16)
}

#[test]
fn ntfs_cross_check_hostile_records() {
    let Some(good) = fresh_ntfs() else { return };
    let size = good.len() as u64;
    let nt = Nt::parse(&good);
    let (_, bm) = nt.items(&good);
    let u0 = fs::ntfs::used(&MemSource(good.clone())).unwrap();
    let cc = u0.cross_check.as_ref().unwrap();
    assert_eq!(cc.added, 0);
    assert!(cc.incomplete.is_none(), "{cc:?}");

    // Clearing $Bitmap's bits under $LogFile (record 2): the MFT still references them.
    let r2 = nt.fixed(&good, nt.mft + 2 * nt.record).unwrap();
    let (_, _, log) = Nt::runs(&r2)
        .into_iter()
        .find(|(t, _, _)| *t == 0x80)
        .unwrap();
    let mut b = good.clone();
    let mut cleared = 0;
    for &(l, n) in &log {
        for c in l..l + n {
            nt.clear(&mut b, &bm, c);
            cleared += nt.cluster;
        }
    }
    let u = fs::ntfs::used(&MemSource(b)).unwrap();
    assert_eq!(u.cross_check.as_ref().unwrap().added, cleared);

    // A torn in-use record (its first stride lacks the sequence number): nothing can say what
    // it referenced, so every cluster is kept.
    let mut b = good.clone();
    let r3 = (nt.mft + 3 * nt.record) as usize;
    b[r3 + 510] ^= 0x55;
    let u = fs::ntfs::used(&MemSource(b)).unwrap();
    let cc = u.cross_check.as_ref().unwrap();
    assert!(cc.incomplete.is_some());
    assert_eq!(u.used.covered(0, size), size);

    // A runlist pointing past the volume: ignored and reported, never past the volume.
    let mut b = good.clone();
    let mut off = le16(&r2, 0x14) as usize;
    while le32(&r2, off) != 0x80 {
        off += le32(&r2, off + 4) as usize;
    }
    let runs = r2_abs(&nt, 2) + off + le16(&r2, off + 0x20) as usize;
    let (ln, on) = (usize::from(b[runs] & 15), usize::from(b[runs] >> 4));
    for i in 0..on {
        b[runs + 1 + ln + i] = if i + 1 == on { 0x7F } else { 0xFF };
    }
    let u = fs::ntfs::used(&MemSource(b)).unwrap();
    assert!(
        u.warnings.iter().any(|w| w.contains("past the volume")),
        "{:?}",
        u.warnings
    );
    assert!(u.used.end() <= size + 512);

    // Random bytes in the first 16 records: never a panic, never less than the bitmap keeps.
    let floor = u0.used.clone();
    let mut rng = Rng(0x0047_F5BA);
    let mut b = good.clone();
    let mft = nt.mft as usize;
    let span = 16 * nt.record;
    for round in 0..3000 {
        let mut undo = Vec::new();
        for _ in 0..1 + round % 4 {
            let at = mft + rng.below(span) as usize;
            undo.push((at, b[at]));
            b[at] = rng.next() as u8;
        }
        let src = MemSource(b);
        if let Ok(u) = fs::ntfs::used(&src) {
            assert!(u.used.end() <= size + 512);
            // $Bitmap itself may have been hit; only compare when record 6 is intact.
            if undo
                .iter()
                .all(|&(at, _)| (at - mft) / nt.record as usize != 6)
            {
                assert_eq!(floor.subtract(&u.used).total(), 0, "round {round}");
            }
        }
        b = src.0;
        for (at, v) in undo.into_iter().rev() {
            b[at] = v;
        }
    }
}

/// Byte offset in the image of record `n` (the first records are contiguous).
fn r2_abs(nt: &Nt, n: u64) -> usize {
    (nt.mft + n * nt.record) as usize
}

/// Read cost of the map with its cross-check on a realistic filled volume: a 512 MiB NTFS
/// with 3000 files in 60 directories. Run with
/// `cargo test --release --test damage_ntfs -- --ignored --nocapture read_cost`.
#[test]
#[ignore = "measurement; takes a while"]
fn ntfs_read_cost() {
    if !(is_root() && have_all(&["mkfs.ntfs", "ntfs-3g"])) {
        return;
    }
    common::damage::read_cost(
        "NTFS",
        "mkfs.ntfs -F -Q -q '{img}'",
        "mount -t ntfs-3g",
        fs::ntfs::used,
    );
}
