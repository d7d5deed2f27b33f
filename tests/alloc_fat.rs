//! Used-block maps of FAT12/16/32, exFAT and NTFS, proven by restoring only the mapped bytes
//! onto random garbage and letting the filesystem's own tools judge the result.
//!
//! Each case: mkfs on a file, fill it with real files (random data, many small files, nested
//! directories, long names), delete some so freed clusters still hold old data, map the image
//! with `probe_all` + `usage`, write only the map onto a random-filled target through a loop
//! device, then run the fs's checker and compare every file's SHA-256. Cases skip with a
//! printed reason when not root, without loop devices or without the tools (and fail instead
//! under `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use blockwise::fs;
use blockwise::io::{FileSource, MemSource};
use common::{
    have, have_all, is_root, restore_onto_random, seeded_bytes, sh, tree_hashes, Loop, Mount,
};

const MIB: u64 = 1 << 20;

fn write(path: &Path, len: usize, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, seeded_bytes(len, seed)).unwrap();
}

/// A file tree of roughly `budget` bytes: one big file, many small ones, nested directories,
/// long names (ASCII for FAT so mtools needs no locale; Unicode where a mount writes them).
/// Returns the paths (relative) to delete later.
fn make_tree(root: &Path, budget: u64, unicode: bool) -> Vec<String> {
    let big = (budget / 3) as usize;
    write(&root.join("big.bin"), big, 1);
    write(&root.join("keep-big.bin"), big / 2, 2);
    let mut doomed = vec!["big.bin".to_string()];
    let n_small = 150usize;
    let each = ((budget / 6) as usize / n_small).max(64);
    for i in 0..n_small {
        let rel = format!("small/f{i:03}.txt");
        write(&root.join(&rel), 1 + (i * 7919) % each, 100 + i as u64);
        if i % 3 == 0 {
            doomed.push(rel);
        }
    }
    let mut deep = root.join("nest");
    for d in 0..6 {
        deep = deep.join(format!("level {d} directory"));
        write(
            &deep.join(format!("file at depth {d}.dat")),
            3000 + d * 1111,
            50 + d as u64,
        );
    }
    for i in 0..20 {
        let name = if unicode {
            format!("Ein sehr langer Dateiname mit Ümläuten und Leerzeichen Nummer {i}.bin")
        } else {
            format!("A Rather Long File Name With Spaces And MixedCase number {i}.bin")
        };
        write(
            &root.join("long names").join(name),
            5000 + i * 997,
            300 + i as u64,
        );
    }
    doomed
}

/// Files added after the deletions, so some freed clusters are reused and some keep old data.
fn make_after(root: &Path, budget: u64) {
    write(&root.join("after/late.bin"), (budget / 10) as usize, 9);
    for i in 0..10 {
        write(
            &root.join(format!("after/l{i}.txt")),
            700 * (i + 1),
            900 + i as u64,
        );
    }
}

/// Maps `image` and checks the map is built from the filesystem's own metadata.
fn map_image(image: &Path, want: &str) -> fs::Usage {
    let src = FileSource::open(image).unwrap();
    let info = fs::probe_all(&src).unwrap().expect("filesystem recognised");
    assert_eq!(info.fs_type.name(), want);
    let u = fs::usage(&src, &info);
    assert!(u.from_fs, "map not from fs metadata: {:?}", u.warnings);
    u
}

fn assert_same(expected: &BTreeMap<String, String>, got: &BTreeMap<String, String>, what: &str) {
    assert_eq!(expected.len(), got.len(), "{what}: file count differs");
    for (k, v) in expected {
        assert_eq!(got.get(k), Some(v), "{what}: {k} differs or is missing");
    }
}

/// Prints and checks tightness: mapped bytes may exceed what the fs says is in use only by
/// its metadata plus 1% of the volume.
fn check_tight(what: &str, mapped: u64, fs_used: u64, metadata: u64, volume: u64) {
    eprintln!(
        "{what}: mapped {mapped} bytes, fs reports {fs_used} used + {metadata} metadata \
         ({:.1}% of {volume})",
        100.0 * mapped as f64 / volume as f64
    );
    assert!(
        mapped <= fs_used + metadata + volume / 100,
        "{what}: map is not tight: {mapped} > {fs_used} + {metadata} + 1%"
    );
}

// ---------------------------------------------------------------------------------------------
// FAT

fn mtools(cmd: &str) -> String {
    sh(&format!("MTOOLS_SKIP_CHECK=1 MTOOLS_NO_VFAT=0 {cmd}"))
}

fn fat_tools() -> bool {
    is_root()
        && have_all(&[
            "mkfs.vfat",
            "fsck.vfat",
            "mcopy",
            "mdel",
            "mdeltree",
            "mdir",
        ])
}

/// `fsck.vfat -n -v` on `dev`: panics unless clean; returns (used clusters, cluster bytes,
/// data start bytes).
fn fsck_fat(dev: &str) -> (u64, u64, u64) {
    let out = Command::new("fsck.vfat")
        .args(["-n", "-v", dev])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck.vfat -n {dev} failed:\n{text}");
    // fsck.fat does not flag every oddity with its exit status in -n mode; look for its
    // messages about repairs it would have made.
    for bad in [
        "Free cluster summary wrong",
        "Dirty bit is set",
        "has a large number of bad",
    ] {
        assert!(!text.contains(bad), "fsck.vfat complains ({bad}):\n{text}");
    }
    let mut used = 0;
    let mut cluster = 0;
    let mut data = 0;
    for l in text.lines() {
        if let Some((_, tail)) = l.rsplit_once(" files, ") {
            used = tail.split('/').next().unwrap().trim().parse().unwrap();
        }
        let num = |l: &str| -> u64 { l.split_whitespace().next().unwrap().parse().unwrap() };
        if l.contains("bytes per cluster") {
            cluster = num(l);
        }
        if l.contains("Data area starts at byte") {
            data = l
                .split_whitespace()
                .nth(5)
                .unwrap()
                .parse()
                .unwrap_or_default();
        }
    }
    (used, cluster, data)
}

/// One FAT restore proof.
fn fat_case(fat_bits: u32, size_mib: u64, sector: u32, spc: u32, fill: bool) {
    if !fat_tools() {
        return;
    }
    let what = format!(
        "FAT{fat_bits} {size_mib} MiB, {sector}-byte sectors, {spc} sectors/cluster, fill={fill}"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat.img");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sh(&format!(
        "mkfs.vfat -C -F {fat_bits} -S {sector} -s {spc} -n BLKWISE '{}' {} >/dev/null",
        img.display(),
        size_mib * 1024
    ));
    let i = img.display();
    if fill {
        let budget = size_mib * MIB * 6 / 10;
        let doomed = make_tree(&src, budget, false);
        mtools(&format!(
            "cd '{}' && mcopy -i '{i}' -s -Q * ::/",
            src.display()
        ));
        let list: Vec<String> = doomed.iter().map(|d| format!("'::/{d}'")).collect();
        mtools(&format!("mdel -i '{i}' {}", list.join(" ")));
        for d in &doomed {
            std::fs::remove_file(src.join(d)).unwrap();
        }
        mtools(&format!(
            "mdeltree -i '{i}' '::/nest/level 0 directory/level 1 directory/level 2 directory'"
        ));
        std::fs::remove_dir_all(
            src.join("nest/level 0 directory/level 1 directory/level 2 directory"),
        )
        .unwrap();
        make_after(&src, budget);
        mtools(&format!(
            "mcopy -i '{i}' -s -Q '{}' ::/",
            src.join("after").display()
        ));
    } else {
        // The trap: a fresh FAT whose root directory and free FAT entries are all zero.
        write(&src.join("HELLO.TXT"), 1234, 7);
        write(&src.join("second file.bin"), 70000, 8);
        mtools(&format!(
            "cd '{}' && mcopy -i '{i}' -Q * ::/",
            src.display()
        ));
    }
    let expected = tree_hashes(&src);

    let u = map_image(&img, "vfat");
    let mapped = u.used.total();
    let Some((_tmp, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    let (used_clusters, cbytes, data_start) = fsck_fat(&lp.dev);
    let out = tempfile::tempdir().unwrap();
    mtools(&format!(
        "mcopy -i '{}' -s -n ::/ '{}'",
        lp.dev,
        out.path().display()
    ));
    let got = tree_hashes(out.path());
    assert_same(&expected, &got, &what);
    // mcopy of an empty root directory listing must show only our files: garbage entries
    // would appear as extra names.
    let listing = mtools(&format!("mdir -i '{}' -b -/ ::/", lp.dev));
    assert_eq!(
        listing.lines().filter(|l| !l.ends_with('/')).count(),
        expected.len(),
        "{what}: unexpected directory entries:\n{listing}"
    );
    let volume = std::fs::metadata(&img).unwrap().len();
    let tail = cbytes; // partial last cluster
    check_tight(
        &what,
        mapped,
        used_clusters * cbytes,
        data_start + tail,
        volume,
    );
}

#[test]
fn fat12_restore() {
    fat_case(12, 4, 512, 4, true);
}

#[test]
fn fat16_restore() {
    fat_case(16, 64, 512, 4, true);
}

#[test]
fn fat32_restore_512b_clusters() {
    fat_case(32, 96, 512, 1, true);
}

#[test]
fn fat32_restore_2k_clusters() {
    fat_case(32, 160, 512, 4, true);
}

#[test]
fn fat32_restore_4k_sectors() {
    fat_case(32, 300, 4096, 1, true);
}

#[test]
fn fat_fresh_onto_garbage() {
    fat_case(12, 2, 512, 1, false);
    fat_case(16, 32, 512, 4, false);
    fat_case(32, 100, 512, 1, false);
}

/// A small FAT16 image built by mkfs.vfat, in memory.
fn fat16_bytes() -> Option<Vec<u8>> {
    if !have("mkfs.vfat") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.img");
    sh(&format!(
        "mkfs.vfat -C -F 16 -s 4 '{}' 16384 >/dev/null",
        img.display()
    ));
    Some(std::fs::read(&img).unwrap())
}

#[test]
fn fat_corrupt_inputs_keep_everything() {
    let Some(good) = fat16_bytes() else { return };
    let size = good.len() as u64;

    // FAT size 0: not a FAT the reader can trust.
    let mut b = good.clone();
    b[0x16..0x18].copy_from_slice(&0u16.to_le_bytes());
    let src = MemSource(b);
    assert!(fs::fat::used(&src).is_err());

    // Cluster count beyond what the FAT can describe: shrink the FAT to one sector, so the
    // data region grows and most clusters have no entry. They must be kept.
    let mut b = good.clone();
    b[0x16..0x18].copy_from_slice(&1u16.to_le_bytes());
    let src = MemSource(b);
    let u = fs::fat::used(&src).expect("map");
    assert!(!u.warnings.is_empty());
    // 2 FATs of 1 sector: 256 entries, 254 clusters of 2 KiB described; the rest is kept.
    let reserved = u64::from(u16::from_le_bytes([good[0x0E], good[0x0F]])) * 512;
    let root = 512 * 32;
    let data = reserved + 2 * 512 + root;
    let described_end = data + 254 * 2048;
    assert_eq!(u.used.covered(described_end, size), size - described_end);

    // Truncated image: FAT entries past the end of the source count as used, and the
    // dispatcher keeps everything past the fs's declared size.
    let src = MemSource(good[..4096].to_vec());
    if let Ok(u) = fs::fat::used(&src) {
        assert_eq!(u.used.covered(0, 4096), 4096);
    }

    // Hostile BPB fields of every kind: never a panic.
    for off in 0x0B..0x30 {
        for v in [0u8, 1, 0x7F, 0x80, 0xFF] {
            let mut b = good.clone();
            b[off] = v;
            let src = MemSource(b);
            if let Ok(Some(info)) = fs::probe_all(&src) {
                let u = fs::usage(&src, &info);
                assert!(u.used.total() > 0);
            }
            let _ = fs::fat::used(&src);
        }
    }
}

#[test]
fn fat_bad_and_reserved_entries_are_kept() {
    let Some(mut b) = fat16_bytes() else { return };
    let reserved = usize::from(u16::from_le_bytes([b[0x0E], b[0x0F]])) * 512;
    // Mark cluster 10 bad in the first FAT only: any copy saying "not free" keeps it.
    b[reserved + 20..reserved + 22].copy_from_slice(&0xFFF7u16.to_le_bytes());
    let fat_len = usize::from(u16::from_le_bytes([b[0x16], b[0x17]])) * 512;
    let data = (reserved + 2 * fat_len + 512 * 32) as u64;
    let src = MemSource(b);
    let u = fs::fat::used(&src).unwrap();
    let c10 = data + 8 * 2048;
    assert_eq!(u.used.covered(c10, c10 + 2048), 2048);
    // Cluster 11 is free and must not be mapped.
    assert_eq!(u.used.covered(c10 + 2048, c10 + 4096), 0);
}

// ---------------------------------------------------------------------------------------------
// NTFS and exFAT (filled through a mount)

/// Fills a mounted filesystem the same way for NTFS and exFAT: tree, deletions, late files.
fn fill_mounted(mnt: &Path, src: &Path, budget: u64) {
    let doomed = make_tree(src, budget, true);
    sh(&format!("cp -r '{}'/. '{}'/", src.display(), mnt.display()));
    for d in &doomed {
        std::fs::remove_file(mnt.join(d)).unwrap();
        std::fs::remove_file(src.join(d)).unwrap();
    }
    let gone = "nest/level 0 directory/level 1 directory/level 2 directory";
    std::fs::remove_dir_all(mnt.join(gone)).unwrap();
    std::fs::remove_dir_all(src.join(gone)).unwrap();
    make_after(src, budget);
    sh(&format!(
        "cp -r '{}' '{}'/",
        src.join("after").display(),
        mnt.display()
    ));
}

/// One NTFS restore proof; `args` go to mkfs.ntfs.
fn ntfs_case(size_mib: u64, args: &str) {
    if !(is_root() && have_all(&["mkfs.ntfs", "ntfs-3g", "ntfsfix", "ntfs-3g.probe"])) {
        return;
    }
    let what = format!("NTFS {size_mib} MiB, mkfs.ntfs {args}");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ntfs.img");
    let src = dir.path().join("src");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    sh(&format!(
        "mkfs.ntfs -F -Q -q {args} -L blkwise '{}'",
        img.display()
    ));
    let fs_used;
    {
        let Some(lp) = Loop::attach(&img) else { return };
        let m = Mount::new("mount -t ntfs-3g", &lp.dev);
        fill_mounted(m.path(), &src, size_mib * MIB / 2);
        fs_used = m.df_used();
    }
    let expected = tree_hashes(&src);
    let u = map_image(&img, "ntfs");
    let mapped = u.used.total();
    let Some((_tmp, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    // The backup boot sector lies past the declared size; others' flashers drop it.
    let vol = std::fs::read(&img).unwrap();
    let ss = usize::from(u16::from_le_bytes([vol[0x0B], vol[0x0C]]));
    let own = fs::ntfs::used(&FileSource::open(&img).unwrap()).unwrap();
    let last = vol.len() as u64 - ss as u64;
    assert_eq!(
        own.used.covered(last, last + ss as u64),
        ss as u64,
        "{what}: backup boot"
    );
    let target = std::fs::read(&lp.dev).unwrap();
    assert_eq!(
        &target[vol.len() - ss..],
        &vol[vol.len() - ss..],
        "{what}: backup boot"
    );
    drop(target);
    sh(&format!("ntfsfix -n '{}'", lp.dev));
    sh(&format!("ntfs-3g.probe --readwrite '{}'", lp.dev));
    let m = Mount::new("mount -t ntfs-3g -o ro", &lp.dev);
    let got = tree_hashes(m.path());
    assert_same(&expected, &got, &what);
    let volume = size_mib * MIB;
    // df counts every allocated cluster, metadata included; the extra is the backup boot
    // sector and the partial cluster at the end.
    check_tight(&what, mapped, fs_used, 64 << 10, volume);
}

#[test]
fn ntfs_restore_default() {
    ntfs_case(200, "");
}

#[test]
fn ntfs_restore_4k_clusters_512_sectors() {
    ntfs_case(200, "-c 4096 -s 512");
}

#[test]
fn ntfs_restore_512b_clusters() {
    ntfs_case(64, "-c 512");
}

#[test]
fn ntfs_restore_64k_clusters() {
    ntfs_case(300, "-c 65536");
}

#[test]
fn ntfs_restore_4k_sectors() {
    ntfs_case(200, "-s 4096 -c 4096");
}

/// A small NTFS image from mkfs.ntfs, in memory, with the offset of MFT record 6.
fn ntfs_bytes() -> Option<(Vec<u8>, usize)> {
    let b = common::fresh_image("mkfs.ntfs", "mkfs.ntfs -F -Q -q '{img}'", 16)?;
    let ss = u64::from(u16::from_le_bytes([b[0x0B], b[0x0C]]));
    let cluster = ss * u64::from(b[0x0D]);
    let mft = u64::from_le_bytes(b[0x30..0x38].try_into().unwrap()) * cluster;
    let rec = 1u64 << (256 - u32::from(b[0x40]));
    Some((b, (mft + 6 * rec) as usize))
}

/// Offset (in the image) of the mapping pairs of record 6's unnamed $DATA.
fn bitmap_runs(b: &[u8], rec: usize) -> usize {
    let mut off = rec + usize::from(u16::from_le_bytes([b[rec + 0x14], b[rec + 0x15]]));
    loop {
        let ty = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        let len = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
        assert_ne!(ty, 0xFFFF_FFFF, "no $DATA in record 6");
        if ty == 0x80 && b[off + 9] == 0 {
            assert_eq!(b[off + 8], 1, "$Bitmap is resident");
            return off + usize::from(u16::from_le_bytes([b[off + 0x20], b[off + 0x21]]));
        }
        off += len;
    }
}

fn keeps_everything(b: Vec<u8>) {
    let size = b.len() as u64;
    let src = MemSource(b);
    assert!(fs::ntfs::used(&src).is_err());
    let info = fs::probe_all(&src).unwrap().expect("still NTFS");
    let u = fs::usage(&src, &info);
    assert!(!u.from_fs);
    assert_eq!(u.used.total(), size);
}

#[test]
fn ntfs_corrupt_inputs() {
    let Some((good, rec)) = ntfs_bytes() else {
        return;
    };
    let src = MemSource(good.clone());
    let u = fs::ntfs::used(&src).expect("clean image maps");
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);

    // Fixup mismatch: the sequence number at the end of the record's first stride is torn.
    let mut b = good.clone();
    b[rec + 510] ^= 0x55;
    keeps_everything(b);

    // A $Bitmap run pointing past the volume.
    let mut b = good.clone();
    let r = bitmap_runs(&b, rec);
    let (ln, on) = (usize::from(b[r] & 0x0F), usize::from(b[r] >> 4));
    for i in 0..on {
        b[r + 1 + ln + i] = if i + 1 == on { 0x7F } else { 0xFF };
    }
    keeps_everything(b);

    // A sparse run (no offset bytes) would read as "all free".
    let mut b = good.clone();
    let r = bitmap_runs(&b, rec);
    let ln = usize::from(b[r] & 0x0F);
    b[r] &= 0x0F;
    b[r + 1 + ln] = 0;
    keeps_everything(b);

    // Record 6 replaced by something else.
    let mut b = good.clone();
    b[rec..rec + 4].copy_from_slice(b"BAAD");
    keeps_everything(b);

    // Every byte of the boot sector and record 6 set to hostile values: never a panic, and a
    // map that covers the backup boot sector whenever one is produced.
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut b = good.clone();
    for round in 0..3000 {
        let mut undo = Vec::new();
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = if x & 1 == 0 {
                (x >> 8) as usize % 512
            } else {
                rec + (x >> 8) as usize % 1024
            };
            undo.push((at, b[at]));
            b[at] = (x >> 40) as u8;
        }
        let size = b.len() as u64;
        let src = MemSource(b);
        if let Ok(u) = fs::ntfs::used(&src) {
            assert!(u.used.total() > 0);
        }
        if let Ok(Some(info)) = fs::probe_all(&src) {
            let u = fs::usage(&src, &info);
            if info.fs_type.name() == "ntfs" {
                assert_eq!(u.used.covered(size - 512, size), 512);
            }
        }
        b = src.0;
        for (at, v) in undo.into_iter().rev() {
            b[at] = v;
        }
    }
}

/// One exFAT restore proof; `args` go to mkfs.exfat.
fn exfat_case(size_mib: u64, args: &str) {
    if !(is_root() && have_all(&["mkfs.exfat", "fsck.exfat", "mount.exfat-fuse"])) {
        return;
    }
    let what = format!("exFAT {size_mib} MiB, mkfs.exfat {args}");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("exfat.img");
    let src = dir.path().join("src");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(size_mib * MIB)
        .unwrap();
    sh(&format!(
        "mkfs.exfat {args} -L blkwise '{}' >/dev/null",
        img.display()
    ));
    let fs_used;
    {
        let Some(lp) = Loop::attach(&img) else { return };
        let m = Mount::new("mount.exfat-fuse", &lp.dev);
        fill_mounted(m.path(), &src, size_mib * MIB / 2);
        fs_used = m.df_used();
    }
    sh(&format!("fsck.exfat -n '{}'", img.display()));
    let expected = tree_hashes(&src);
    let u = map_image(&img, "exfat");
    assert!(u.warnings.is_empty(), "{what}: {:?}", u.warnings);
    let mapped = u.used.total();
    let Some((_tmp, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    sh(&format!("fsck.exfat -n '{}'", lp.dev));
    let m = Mount::new("mount.exfat-fuse -o ro", &lp.dev);
    let got = tree_hashes(m.path());
    assert_same(&expected, &got, &what);
    // df counts allocated clusters; below the heap (boot regions, FAT) is the metadata.
    let b = std::fs::read(&img).unwrap();
    let heap = u64::from(u32::from_le_bytes(b[0x58..0x5C].try_into().unwrap())) << b[0x6C];
    check_tight(&what, mapped, fs_used, heap + (1 << 20), size_mib * MIB);
}

#[test]
fn exfat_restore_default() {
    exfat_case(200, "");
}

#[test]
fn exfat_restore_4k_clusters() {
    exfat_case(128, "-c 4K");
}

#[test]
fn exfat_restore_128k_clusters() {
    exfat_case(300, "-c 128K");
}

#[test]
fn exfat_corrupt_inputs() {
    if !have("mkfs.exfat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("e.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    sh(&format!("mkfs.exfat -c 4K '{}' >/dev/null", img.display()));
    let good = std::fs::read(&img).unwrap();
    let size = good.len() as u64;
    let u = fs::exfat::used(&MemSource(good.clone())).expect("clean image maps");
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);
    assert!(u.used.total() < size / 4, "fresh volume mostly free");

    let err = |b: Vec<u8>| assert!(fs::exfat::used(&MemSource(b)).is_err());
    // Root directory outside the heap.
    let mut b = good.clone();
    b[0x60..0x64].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    err(b);
    // Two FATs claimed, one bitmap present (TexFAT needs both).
    let mut b = good.clone();
    b[0x6E] = 2;
    err(b);
    // Bitmap entry pointing past the heap: find it in the root directory.
    let heap = u64::from(u32::from_le_bytes(good[0x58..0x5C].try_into().unwrap())) << good[0x6C];
    let root_c = u64::from(u32::from_le_bytes(good[0x60..0x64].try_into().unwrap()));
    let cbytes = 1u64 << (good[0x6C] + good[0x6D]);
    let root = (heap + (root_c - 2) * cbytes) as usize;
    let ent = (0..cbytes as usize / 32)
        .map(|i| root + 32 * i)
        .find(|&o| good[o] == 0x81)
        .expect("bitmap entry");
    let mut b = good.clone();
    b[ent + 20..ent + 24].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    err(b);
    // A cluster count beyond the volume is clamped, never trusted.
    let mut b = good.clone();
    b[0x5C..0x60].copy_from_slice(&u32::MAX.to_le_bytes());
    if let Ok(u) = fs::exfat::used(&MemSource(b)) {
        assert!(!u.warnings.is_empty());
    }
    // Hostile bytes in the boot sector and root directory: never a panic.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut b = good.clone();
    for round in 0..3000 {
        let mut undo = Vec::new();
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = if x & 1 == 0 {
                (x >> 8) as usize % 512
            } else {
                root + (x >> 8) as usize % 256
            };
            undo.push((at, b[at]));
            b[at] = (x >> 40) as u8;
        }
        let src = MemSource(b);
        let _ = fs::exfat::used(&src);
        if let Ok(Some(info)) = fs::probe_all(&src) {
            assert!(fs::usage(&src, &info).used.total() > 0);
        }
        b = src.0;
        for (at, v) in undo.into_iter().rev() {
            b[at] = v;
        }
    }
}
