//! ext2/3/4 used-block maps, proven with the real tools: write only the mapped blocks of an
//! image onto random garbage, then `e2fsck -fn` must be clean and every file must read back
//! identical. Also checks tightness against dumpe2fs, hostile metadata and the read volume.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use blockwise::fs::{probe_all, usage, Usage};
use blockwise::io::{Counting, FileSource};
use common::{have, have_all, is_root, restore_onto_random, sh, tree_hashes, Loop, Mount};

/// Loop devices and mounts are a shared machine resource; one proof at a time keeps
/// `losetup -f` from racing and failures readable.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn have_tools(root: bool) -> bool {
    let ok = have_all(&["mkfs.ext4", "dumpe2fs", "e2fsck"]);
    ok && (!root || (is_root() && have_all(&["losetup", "mount", "python3"])))
}

/// Real-world contents: random data, many small files, nested directories, a symlink, a
/// hardlink, an xattr big enough to need its own block, a sparse file, and deleted files
/// whose freed blocks still hold old data.
fn fill(img: &Path) {
    let lp = Loop::attach(img).expect("loop device");
    let m = Mount::new("mount -o rw,noinit_itable", &lp.dev);
    let d = m.path().display();
    sh(&format!(
        "cd '{d}' && head -c 3000000 /dev/urandom > big.bin \
         && mkdir -p a/b/c && for i in $(seq 1 150); do echo \"file $i $RANDOM\" > a/b/f$i; done \
         && for i in $(seq 1 20); do head -c $((i * 1500)) /dev/urandom > a/b/c/r$i; done \
         && ln -s big.bin link && ln big.bin hard && echo xattr > x.txt \
         && head -c 1000000 /dev/urandom > junk1 && head -c 1500000 /dev/urandom > a/junk2 \
         && dd if=/dev/urandom of=sparse bs=4096 count=3 seek=500 status=none && sync"
    ));
    // Needs its own EA block: larger than the in-inode space, smaller than a 1 KiB block.
    sh(&format!(
        "python3 -c \"import os; os.setxattr('{d}/x.txt', 'user.blob', b'Q' * 700)\""
    ));
    sh(&format!("cd '{d}' && sync && rm junk1 a/junk2 && sync"));
    drop(m);
    drop(lp);
}

/// (blocks in use as dumpe2fs counts them, block size).
fn dumpe2fs_used(img: &Path) -> (u64, u64) {
    let out = sh(&format!("dumpe2fs -h '{}' 2>/dev/null", img.display()));
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("dumpe2fs has no {name}"))
            .trim()
            .parse()
            .unwrap()
    };
    let blocks = field("Block count:");
    let free = field("Free blocks:");
    (blocks - free, field("Block size:"))
}

/// The union of every group's "Free blocks:" list from dumpe2fs, as bytes.
fn dumpe2fs_free(img: &Path, bs: u64) -> blockwise::ExtentMap {
    let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
    // Under bigalloc a range ends at the first block of its last free cluster.
    let cluster = out
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .map_or(bs, |c| c.trim().parse().unwrap());
    let mut m = blockwise::ExtentMap::new();
    for l in out.lines() {
        // Per-group lists are indented; the header's "Free blocks:" is a count.
        let Some(list) = l.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for r in list.split(", ").filter(|r| !r.is_empty()) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            m.insert(a * bs, b * bs + cluster);
        }
    }
    m
}

fn compute(img: &Path) -> Usage {
    let src = FileSource::open(img).unwrap();
    let info = probe_all(&src).unwrap().expect("ext recognised");
    usage(&src, &info)
}

/// What the restored copy goes through after its first `e2fsck`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lazy {
    /// Grown at once, with whatever the restore left in the spare table blocks.
    No,
    /// Mounted first until the kernel's lazy-init thread has zeroed the tables not flagged
    /// ITABLE_ZEROED, then grown.
    InitFirst,
}

/// Which slots of each group's inode table are, or were, in use: `inodes per group −
/// unused inodes` per group (meaningful only with descriptor checksums).
fn high_water_marks(dev: &str) -> Vec<u64> {
    let out = sh(&format!("dumpe2fs '{dev}' 2>/dev/null"));
    let ipg: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Inodes per group:"))
        .expect("inodes per group")
        .trim()
        .parse()
        .unwrap();
    out.lines()
        .filter_map(|l| {
            // "N free blocks, N free inodes, N directories[, N unused inodes]": dumpe2fs
            // leaves the count out when it is 0 (and always without descriptor checksums).
            let (_, rest) = l.trim().split_once(" free inodes, ")?;
            let unused = rest
                .split_once(" directories, ")
                .and_then(|(_, u)| u.strip_suffix(" unused inodes"))
                .map_or(0, |u| u.trim().parse().unwrap());
            Some(ipg - unused)
        })
        .collect()
}

/// 2000 new files and directories: 100 top-level directories (the Orlov allocator spreads
/// them over the groups), each with 4 subdirectories and 15 small files.
fn grow(root: &Path) {
    sh(&format!(
        "cd '{}' && for d in $(seq 1 100); do mkdir n$d; for s in 1 2 3 4; do mkdir n$d/s$s; done; \
         for f in $(seq 1 15); do printf 'new %s/%s %0500d' $d $f $f > n$d/s$((f % 4 + 1))/f$f; done; \
         done && sync",
        root.display()
    ));
}

fn fsck_clean(dev: &str, when: &str) -> Result<(), String> {
    let fsck = Command::new("e2fsck").args(["-fn", dev]).output().unwrap();
    if fsck.status.success() {
        return Ok(());
    }
    Err(format!(
        "e2fsck {when} failed ({})\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    ))
}

/// Waits until no `ext4lazyinit` thread runs (it exits once every table it was asked to zero
/// is zeroed).
fn wait_for_lazyinit() {
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(300));
    while sh("cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^ext4lazyinit$' || true").trim() != "0" {
        assert!(
            t0.elapsed().as_secs() < 120,
            "ext4lazyinit still running after 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The restore proof: `map` of `img` onto random garbage; `e2fsck -fn` clean; the kernel
/// mounts it and 2000 new files and directories are created on it (and on the source, the
/// same); `e2fsck -fn` clean again; every old and new file reads back identical. Returns the
/// number of groups whose inode high-water mark rose past the one the copy was restored with.
fn prove_restore(img: &Path, map: &blockwise::ExtentMap, lazy: Lazy) -> Result<usize, String> {
    let (tdir, target) = restore_onto_random(img, map).expect("loop device");
    fsck_clean(&target.dev, "on the restored copy")?;
    // With inode checksums, the garbage the copy holds past each high-water mark is told
    // from inodes: the copy maps exactly as its source, with nothing to warn about (a card
    // restored from a tight map, or by bmaptool from a sparse image, is not "damaged").
    let head = sh(&format!("dumpe2fs -h '{}' 2>/dev/null", img.display()));
    if head.contains("metadata_csum") && lazy == Lazy::No {
        let again = compute(&tdir.path().join("target.img"));
        if !again.warnings.is_empty() || again.used != *map {
            return Err(format!(
                "the restored copy maps differently ({} vs {} bytes): {:?}",
                again.used.total(),
                map.total(),
                again.warnings
            ));
        }
    }
    if lazy == Lazy::InitFirst {
        let m = Mount::new("mount -o rw,init_itable=0", &target.dev);
        wait_for_lazyinit();
        drop(m);
        fsck_clean(&target.dev, "after the kernel's lazy init")?;
    }
    let before = high_water_marks(&target.dev);
    let src_lp = Loop::attach(img).expect("loop device");
    for dev in [&src_lp.dev, &target.dev] {
        let m = Mount::new("mount -o rw,noinit_itable", dev);
        grow(m.path());
    }
    fsck_clean(&target.dev, "after 2000 new files and directories")?;
    let after = high_water_marks(&target.dev);
    let rose = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    eprintln!("high-water marks before {before:?}, after {after:?}");

    let a = Mount::new("mount -o ro", &src_lp.dev);
    let b = Mount::new("mount -o ro", &target.dev);
    let ha = tree_hashes(a.path());
    let hb = tree_hashes(b.path());
    assert!(ha.len() > 1670, "only {} files in the source", ha.len());
    if ha != hb {
        let differ = ha
            .iter()
            .filter(|(k, v)| hb.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .take(5)
            .collect::<Vec<_>>();
        return Err(format!(
            "restored files differ ({} vs {} files; first differing: {differ:?})",
            ha.len(),
            hb.len()
        ));
    }
    let xa = sh(&format!(
        "python3 -c \"import os; print(len(os.getxattr('{}/x.txt', 'user.blob')))\"",
        b.path().display()
    ));
    if xa.trim() != "700" {
        return Err("xattr lost".into());
    }
    drop(b);
    // Growing the filesystem takes reserved descriptor blocks into use and writes their
    // copies (left out of the map as no one reads them before): grow the copy to four times
    // its size with resize2fs, then e2fsck and every file again. (Offline: the kernel's
    // online resize needs CAP_SYS_RESOURCE, which the test machines do not grant root.)
    if head.contains("resize_inode") {
        let reserved_before = dumpe2fs_reserved(&target.dev);
        let backing = tdir.path().join("target.img");
        let size = std::fs::metadata(&backing).unwrap().len();
        sh(&format!(
            "truncate -s {} '{}' && losetup -c '{}'",
            size * 4,
            backing.display(),
            target.dev
        ));
        sh(&format!("resize2fs -f '{}' 2>&1", target.dev));
        fsck_clean(&target.dev, "after growing it")?;
        let after = dumpe2fs_reserved(&target.dev);
        let b = Mount::new("mount -o ro", &target.dev);
        if tree_hashes(b.path()) != ha {
            return Err("files differ after growing it".into());
        }
        eprintln!(
            "grown to {} bytes; reserved GDT blocks {reserved_before} before, {after} after",
            size * 4
        );
    }
    Ok(rose)
}

/// "Reserved GDT blocks:" from dumpe2fs -h.
fn dumpe2fs_reserved(dev: &str) -> String {
    sh(&format!("dumpe2fs -h '{dev}' 2>/dev/null"))
        .lines()
        .find_map(|l| l.strip_prefix("Reserved GDT blocks:"))
        .unwrap_or("none")
        .trim()
        .to_string()
}

/// mkfs on a sparse file, fill, map, check tightness, restore onto random, fsck, grow,
/// fsck, compare.
fn restore_proof(name: &str, size: &str, mkfs: &str, check: impl Fn(&Path)) {
    restore_proof_with(name, size, mkfs, check, Lazy::No);
}

/// `mkfs` on a sparse file of `size` in `dir`, `check`ed, then [`fill`]ed.
fn filled_image(dir: &Path, size: &str, mkfs: &str, check: impl Fn(&Path)) -> PathBuf {
    let img = dir.join("fs.img");
    sh(&format!("truncate -s {size} '{}'", img.display()));
    sh(&format!("{mkfs} -F -q '{}'", img.display()));
    check(&img);
    fill(&img);
    img
}

fn restore_proof_with(name: &str, size: &str, mkfs: &str, check: impl Fn(&Path), lazy: Lazy) {
    if !have_tools(true) {
        return;
    }
    let _g = lock();
    let work = tempfile::tempdir().unwrap();
    let img = filled_image(work.path(), size, mkfs, check);

    let u = compute(&img);
    assert!(u.from_fs, "{name}: map not from the fs: {:?}", u.warnings);
    assert!(u.warnings.is_empty(), "{name}: warnings {:?}", u.warnings);
    let (used_blocks, bs) = dumpe2fs_used(&img);
    let mapped = u.used.total();
    let used_bytes = used_blocks * bs;
    let slack = if bs == 1024 { 1024 } else { 0 };
    let spare = &u.unread_metadata;
    eprintln!(
        "TIGHTNESS {name}: mapped {mapped} bytes, dumpe2fs used {used_bytes} bytes ({:.4}x), \
         {} ranges, {} bytes of inode tables left out",
        mapped as f64 / used_bytes as f64,
        u.used.len(),
        spare.total()
    );
    assert!(
        mapped as f64 <= used_bytes as f64 * 1.01 + slack as f64,
        "{name}: mapped {mapped} > 1.01 × {used_bytes}"
    );

    // Exactly the complement of what dumpe2fs lists as free, block for block, less the
    // inode-table blocks no inode can occupy (so nothing it calls used is missing but those).
    let expected = dumpe2fs_free(&img, bs).gaps(std::fs::metadata(&img).unwrap().len());
    assert!(
        u.used.intersect(spare).is_empty(),
        "{name}: spare table blocks also mapped"
    );
    assert_eq!(
        u.used.union(spare),
        expected,
        "{name}: map and spare tables differ from dumpe2fs's free lists"
    );
    let head = sh(&format!("dumpe2fs -h '{}' 2>/dev/null", img.display()));
    let lazy_hints = head.contains("metadata_csum") || head.contains("uninit_bg");
    assert_eq!(
        !spare.is_empty(),
        lazy_hints && head.contains("has_journal"),
        "{name}: inode tables must be left out exactly when descriptors are checksummed and \
         there is a journal"
    );

    let rose = prove_restore(&img, &u.used, lazy).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("GROWN {name}: {rose} groups' inode high-water marks rose past the restored one");
    let groups = high_water_marks(&img.display().to_string()).len();
    if lazy_hints && groups > 2 {
        assert!(
            rose >= 2,
            "{name}: the new files went past the old high-water mark in {rose} groups only"
        );
    }
}

fn no_check(_: &Path) {}

#[test]
fn restore_ext4_default() {
    restore_proof("ext4", "64M", "mkfs.ext4", no_check);
}

#[test]
fn restore_ext4_no_64bit() {
    restore_proof("ext4 ^64bit", "64M", "mkfs.ext4 -O ^64bit", no_check);
}

/// Tables never zeroed by mke2fs (no discard, lazy init): the restored copy is mounted until
/// the kernel's lazy-init thread has zeroed them, past what the tight map kept, and only then
/// grown.
#[test]
fn restore_ext4_after_lazy_init() {
    restore_proof_with(
        "ext4 lazy, nodiscard, after ext4lazyinit",
        "64M",
        "mkfs.ext4 -E lazy_itable_init=1,nodiscard",
        |img| {
            let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
            let zeroed = out.matches("ITABLE_ZEROED").count();
            assert_eq!(
                zeroed, 0,
                "mke2fs zeroed {zeroed} tables; the test needs none"
            );
        },
        Lazy::InitFirst,
    );
}

/// The proof can fail: the tight map less one inode-table block that holds in-use inodes
/// (the one holding the inodes of a/b/f1 and its neighbours) does not survive it.
#[test]
fn restore_proof_fails_without_an_in_use_table_block() {
    if !have_tools(true) || !have("debugfs") {
        return;
    }
    let _g = lock();
    let work = tempfile::tempdir().unwrap();
    let img = filled_image(work.path(), "64M", "mkfs.ext4", no_check);
    let u = compute(&img);
    let (_, bs) = dumpe2fs_used(&img);
    let imap = sh(&format!(
        "debugfs -R 'imap /a/b/f1' '{}' 2>/dev/null",
        img.display()
    ));
    let block: u64 = imap
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("no table block in {imap:?}"));
    let table_block = blockwise::ExtentMap::single(block * bs, (block + 1) * bs);
    assert_eq!(
        u.used.intersect(&table_block),
        table_block,
        "the tight map keeps the block"
    );
    let r = prove_restore(&img, &u.used.subtract(&table_block), Lazy::No);
    eprintln!("without table block {block}: {r:?}");
    assert!(
        r.is_err(),
        "the proof passed without an in-use inode-table block"
    );
}

#[test]
fn restore_ext4_no_flex_bg() {
    restore_proof("ext4 ^flex_bg", "64M", "mkfs.ext4 -O ^flex_bg", no_check);
}

#[test]
fn restore_ext4_meta_bg_64bit() {
    restore_proof(
        "ext4 meta_bg,64bit,^resize_inode",
        "96M",
        "mkfs.ext4 -O meta_bg,64bit,^resize_inode -g 2048 -b 4096",
        no_check,
    );
}

#[test]
fn restore_ext4_bigalloc() {
    restore_proof(
        "ext4 bigalloc 16k",
        "128M",
        "mkfs.ext4 -O bigalloc -C 16384",
        no_check,
    );
}

#[test]
fn restore_ext4_1k() {
    restore_proof("ext4 1k", "48M", "mkfs.ext4 -b 1024", no_check);
}

#[test]
fn restore_ext4_2k() {
    restore_proof("ext4 2k", "48M", "mkfs.ext4 -b 2048", no_check);
}

#[test]
fn restore_ext4_no_journal() {
    restore_proof(
        "ext4 ^has_journal",
        "64M",
        "mkfs.ext4 -O ^has_journal",
        no_check,
    );
}

#[test]
fn restore_ext2() {
    restore_proof("ext2", "48M", "mkfs.ext2", no_check);
}

#[test]
fn restore_ext3() {
    restore_proof("ext3", "48M", "mkfs.ext3", no_check);
}

#[test]
fn restore_ext4_gdt_csum_sparse_super2() {
    restore_proof(
        "ext4 uninit_bg,sparse_super2,^metadata_csum",
        "96M",
        "mkfs.ext4 -O ^metadata_csum,uninit_bg,sparse_super2 -g 4096",
        no_check,
    );
}

#[test]
fn restore_ext4_block_uninit() {
    restore_proof(
        "ext4 512M lazy (BLOCK_UNINIT)",
        "512M",
        "mkfs.ext4 -E lazy_itable_init=1 -g 8192",
        |img| {
            let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
            let n = out.matches("BLOCK_UNINIT").count();
            eprintln!("{n} groups are BLOCK_UNINIT");
            assert!(n > 10, "expected BLOCK_UNINIT groups, found {n}");
        },
    );
}

// ------------------------------------------------------------------------------------------
// Hostile metadata. These need mkfs.ext4 but neither root nor loop devices.
// ------------------------------------------------------------------------------------------

/// A 16 MiB ext4 image with 4 KiB blocks and 4 groups of 1024 blocks; returns its path.
fn small_image(dir: &Path, features: &str) -> PathBuf {
    let img = dir.join("small.img");
    sh(&format!("truncate -s 16M '{}'", img.display()));
    sh(&format!(
        "mkfs.ext4 -F -q -b 4096 -g 1024 -N 256 {features} '{}'",
        img.display()
    ));
    img
}

fn patch(img: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read_at(img: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(img).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

/// Byte offset of group `g`'s descriptor in the primary table (4 KiB blocks, GDT at block 1).
fn desc_off(img: &Path, g: u64) -> u64 {
    let sb = read_at(img, 1024, 1024);
    let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap());
    let ds = if incompat & 0x80 != 0 {
        u64::from(u16::from_le_bytes(sb[0xFE..0x100].try_into().unwrap()))
    } else {
        32
    };
    4096 + g * ds
}

fn group_covered(u: &Usage, g: u64) -> bool {
    let (s, e) = (g * 1024 * 4096, (g + 1) * 1024 * 4096);
    u.used.covered(s, e) == e - s
}

#[test]
fn corrupt_bitmap_location_keeps_group() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No descriptor checksums, so only the location check can catch it.
    let img = small_image(dir.path(), "-O ^metadata_csum,^uninit_bg");
    let clean = compute(&img);
    assert!(
        clean.from_fs && clean.warnings.is_empty(),
        "{:?}",
        clean.warnings
    );
    assert!(!group_covered(&clean, 3), "group 3 should have free blocks");

    // Past the end of the fs.
    patch(&img, desc_off(&img, 3), &0xFFFF_FFF0u32.to_le_bytes());
    let u = compute(&img);
    assert!(group_covered(&u, 3));
    assert!(!u.warnings.is_empty());
    assert!(u.used.covered(0, clean.used.end()) >= clean.used.total());

    // Block 0: the boot block and superblock, never a bitmap.
    patch(&img, desc_off(&img, 3), &0u32.to_le_bytes());
    let u = compute(&img);
    assert!(group_covered(&u, 3), "{:?}", u.warnings);
    assert!(!u.warnings.is_empty());

    // Inode table running off the end of the filesystem.
    patch(
        &img,
        desc_off(&img, 3),
        &clean_bitmap_block(&img).to_le_bytes(),
    );
    patch(&img, desc_off(&img, 3) + 8, &4095u32.to_le_bytes());
    let u = compute(&img);
    assert!(group_covered(&u, 3), "{:?}", u.warnings);
    assert!(!u.warnings.is_empty());
}

/// Group 3's block bitmap location as mkfs placed it (flex_bg: right after group 2's).
fn clean_bitmap_block(img: &Path) -> u32 {
    let d = read_at(img, desc_off(img, 2), 4);
    u32::from_le_bytes(d.try_into().unwrap()) + 1
}

#[test]
fn corrupt_checksums_keep_group() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path(), "-O metadata_csum,64bit");
    let clean = compute(&img);
    assert!(
        clean.from_fs && clean.warnings.is_empty(),
        "{:?}",
        clean.warnings
    );
    assert!(!group_covered(&clean, 3));

    // Flip a bitmap bit of group 3: its checksum no longer matches.
    let off = desc_off(&img, 3);
    let d = read_at(&img, off, 64);
    let bb = u64::from(u32::from_le_bytes(d[0..4].try_into().unwrap()))
        | u64::from(u32::from_le_bytes(d[0x20..0x24].try_into().unwrap())) << 32;
    let flags = u16::from_le_bytes(d[0x12..0x14].try_into().unwrap());
    if flags & 2 == 0 {
        let byte = read_at(&img, bb * 4096 + 100, 1)[0];
        patch(&img, bb * 4096 + 100, &[byte ^ 0x10]);
        let u = compute(&img);
        assert!(group_covered(&u, 3), "{:?}", u.warnings);
        assert!(u.warnings.iter().any(|w| w.contains("checksum")));
        patch(&img, bb * 4096 + 100, &[byte]);
    }

    // Damage the descriptor itself (flags): descriptor checksum mismatch.
    patch(&img, off + 0x12, &(flags ^ 0x2).to_le_bytes());
    let u = compute(&img);
    assert!(group_covered(&u, 3), "{:?}", u.warnings);
    assert!(u.warnings.iter().any(|w| w.contains("checksum")));
}

#[test]
fn absurd_desc_size_keeps_everything() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path(), "-O 64bit");
    for ds in [3u16, 0, 4096, 96] {
        patch(&img, 1024 + 0xFE, &ds.to_le_bytes());
        let u = compute(&img);
        assert!(!u.from_fs, "desc_size {ds}");
        assert_eq!(u.used.total(), 16 << 20);
        assert!(!u.warnings.is_empty());
    }
}

#[test]
fn needs_recovery_keeps_everything() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path(), "");
    let sb = read_at(&img, 1024, 1024);
    let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap());
    patch(&img, 1024 + 0x60, &(incompat | 4).to_le_bytes());
    let u = compute(&img);
    assert!(!u.from_fs);
    assert_eq!(u.used.total(), 16 << 20);
    assert!(u.warnings.iter().any(|w| w.contains("needs_recovery")));
}

#[test]
fn hostile_superblock_fields_never_panic() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path(), "-O 64bit,meta_bg,^resize_inode");

    // Every 32-bit superblock field and the first descriptors, set to a few nasty values.
    for off in (1024..2048u64)
        .step_by(4)
        .chain((4096..4096 + 256).step_by(4))
    {
        for v in [0u32, 1, 0xFFFF_FFFF, 0x8000_0000, 7, 1024] {
            let orig = read_at(&img, off, 4);
            patch(&img, off, &v.to_le_bytes());
            let src = FileSource::open(&img).unwrap();
            // Straight to the reader: a probe would turn some of these away first.
            if let Ok(u) = blockwise::fs::ext::used(&src) {
                assert!(!u.used.is_empty());
            }
            if let Ok(Some(info)) = probe_all(&src) {
                assert!(usage(&src, &info).used.end() <= 16 << 20);
            }
            patch(&img, off, &orig);
        }
    }
}

#[test]
fn reads_little_on_a_big_sparse_fs() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("d")).unwrap();
    for i in 0..20 {
        std::fs::write(content.join(format!("d/f{i}")), vec![i as u8; 10_000 * i]).unwrap();
    }
    let img = dir.path().join("big.img");
    sh(&format!("truncate -s 4G '{}'", img.display()));
    sh(&format!(
        "mkfs.ext4 -F -q -d '{}' '{}'",
        content.display(),
        img.display()
    ));
    let src = Counting::new(FileSource::open(&img).unwrap());
    let info = probe_all(&src).unwrap().unwrap();
    let before = src.bytes_read();
    let t = std::time::Instant::now();
    let u = usage(&src, &info);
    let el = t.elapsed();
    let read = src.bytes_read() - before;
    eprintln!(
        "4 GiB ext4: used() read {read} bytes in {} calls, {el:?}; mapped {} bytes",
        src.calls(),
        u.used.total()
    );
    assert!(u.from_fs, "{:?}", u.warnings);
    assert!(read < 2 << 20, "read {read} bytes");
    let (used_blocks, bs) = dumpe2fs_used(&img);
    assert!(u.used.total() as f64 <= (used_blocks * bs) as f64 * 1.01);
}

/// What a forward-only decoder (a `.gz` image being scanned) pays for a sequence of reads:
/// the bytes it decodes, from the start again for every read behind its position.
struct Forward<S> {
    inner: S,
    /// (decoder position, bytes decoded, furthest byte read)
    state: Mutex<(u64, u64, u64)>,
}

impl<S: blockwise::io::ReadAt> blockwise::io::ReadAt for Forward<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        let end = offset + n as u64;
        let mut st = self.state.lock().unwrap();
        let from = if offset >= st.0 { st.0 } else { 0 };
        if end > st.0 || offset < st.0 {
            st.1 += end.saturating_sub(from);
            st.0 = end;
        }
        st.2 = st.2.max(end);
        Ok(n)
    }
}

/// With flex_bg, each flex group's bitmaps and inode tables lie together at its start: the
/// map reads them in one pass front to back, so a stream is decoded once (not once for the
/// block bitmaps of every flex group, again for the inode bitmaps, again for the tables).
#[test]
fn metadata_is_read_in_one_forward_pass() {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("d")).unwrap();
    for i in 0..40 {
        std::fs::write(
            content.join(format!("d/f{i}")),
            vec![i as u8 + 1; 30_000 * i],
        )
        .unwrap();
    }
    let img = dir.path().join("flex.img");
    sh(&format!("truncate -s 4G '{}'", img.display()));
    // 32 groups of 128 MiB, 4 flex groups of 8: bitmaps and tables at 0, 1, 2 and 3 GiB.
    sh(&format!(
        "mkfs.ext4 -F -q -G 8 -d '{}' '{}'",
        content.display(),
        img.display()
    ));
    let src = Forward {
        inner: FileSource::open(&img).unwrap(),
        state: Mutex::new((0, 0, 0)),
    };
    let info = probe_all(&src).unwrap().unwrap();
    *src.state.lock().unwrap() = (0, 0, 0);
    let u = usage(&src, &info);
    assert!(u.from_fs, "{:?}", u.warnings);
    let (_, decoded, furthest) = *src.state.lock().unwrap();
    eprintln!(
        "4 GiB ext4, 4 flex groups: a stream would decode {decoded} bytes to read up to {furthest}"
    );
    assert!(
        furthest > 3 << 30,
        "the last flex group's metadata was not read: {furthest}"
    );
    assert!(
        decoded < furthest + (furthest >> 4),
        "decoded {decoded} bytes for metadata ending at {furthest}: more than one pass"
    );
}

#[test]
fn restore_ext4_meta_bg_1k_many_uninit_groups() {
    restore_proof(
        "ext4 1k meta_bg lazy (256 groups)",
        "256M",
        "mkfs.ext4 -b 1024 -O meta_bg,^resize_inode -E lazy_itable_init=1",
        |img| {
            let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
            assert!(out.matches("BLOCK_UNINIT").count() > 10);
        },
    );
}

/// Layouts the kernel here cannot mount (64 KiB blocks) or that need no mount to prove the
/// map: populated by `mke2fs -d`, the map must equal dumpe2fs's complement of free blocks.
/// `mkfs` (`mke2fs -d`) on a sparse file of `size` in `dir`, holding 40 files of up to 117 KB.
fn populated_image(dir: &Path, size: &str, mkfs: &str) -> PathBuf {
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("d/e")).unwrap();
    for i in 0..40usize {
        let body: Vec<u8> = (0..i * 3001).map(|k| (k * 31 + i) as u8).collect();
        std::fs::write(content.join(format!("d/e/f{i}")), body).unwrap();
    }
    let img = dir.join("fs.img");
    sh(&format!("truncate -s {size} '{}'", img.display()));
    sh(&format!(
        "{mkfs} -F -q -d '{}' '{}' 2>&1",
        content.display(),
        img.display()
    ));
    img
}

fn exact_against_dumpe2fs(name: &str, size: &str, mkfs: &str) {
    if !have_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = populated_image(dir.path(), size, mkfs);
    let u = compute(&img);
    assert!(
        u.from_fs && u.warnings.is_empty(),
        "{name}: {:?}",
        u.warnings
    );
    let (used_blocks, bs) = dumpe2fs_used(&img);
    let expected = dumpe2fs_free(&img, bs).gaps(std::fs::metadata(&img).unwrap().len());
    eprintln!(
        "EXACT {name}: mapped {} bytes, dumpe2fs used {} bytes",
        u.used.total(),
        used_blocks * bs
    );
    assert!(u.used.intersect(&u.unread_metadata).is_empty());
    assert_eq!(
        u.used.union(&u.unread_metadata),
        expected,
        "{name}: map and spare inode tables differ from dumpe2fs's free lists"
    );
}

#[test]
fn exact_64k_blocks() {
    exact_against_dumpe2fs("64k blocks", "256M", "mkfs.ext4 -b 65536");
}

#[test]
fn exact_bigalloc_1k_blocks() {
    exact_against_dumpe2fs(
        "bigalloc 1k/4k",
        "64M",
        "mkfs.ext4 -b 1024 -O bigalloc -C 4096",
    );
}

#[test]
fn exact_no_sparse_super() {
    exact_against_dumpe2fs(
        "ext4 ^sparse_super",
        "64M",
        "mkfs.ext4 -O ^sparse_super,^resize_inode -g 2048",
    );
}

#[test]
fn exact_sparse_super2_one_backup() {
    exact_against_dumpe2fs(
        "ext4 sparse_super2 num_backup_sb=1",
        "128M",
        "mkfs.ext4 -O sparse_super2 -E num_backup_sb=1 -g 1024",
    );
}

#[test]
fn exact_flex_bg_16_uninit_2k() {
    exact_against_dumpe2fs(
        "ext4 2k flex_bg 4, 64bit, many groups",
        "1G",
        "mkfs.ext4 -b 2048 -G 4 -O 64bit -g 2048",
    );
}

#[test]
fn exact_truncated_last_group() {
    // 100 MiB + 12 KiB: the last group is a stub of three blocks.
    exact_against_dumpe2fs(
        "ext4 stub last group",
        "102412K",
        "mkfs.ext4 -b 4096 -g 8192",
    );
}

/// Every group's bitmaps and inode table as dumpe2fs lists them, as byte ranges.
fn dumpe2fs_metadata(img: &Path, bs: u64) -> Vec<(u64, u64)> {
    let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
    let mut v = Vec::new();
    for l in out.lines() {
        for key in ["Block bitmap at ", "Inode bitmap at ", "Inode table at "] {
            if let Some(rest) = l.trim().strip_prefix(key) {
                let r = rest.split_whitespace().next().unwrap();
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                v.push((a * bs, (b + 1) * bs));
            }
        }
    }
    v
}

/// A BLOCK_UNINIT group that hosts other groups' bitmaps and inode tables (flex_bg): mke2fs
/// never leaves one like that, but nothing forbids it, and its own bitmap would not list them.
#[test]
fn block_uninit_group_holding_flex_metadata() {
    if !have_tools(false) || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("flex.img");
    sh(&format!("truncate -s 64M '{}'", img.display()));
    sh(&format!(
        "mkfs.ext4 -F -q -b 4096 -g 2048 -G 4 -N 1024 -O ^has_journal '{}'",
        img.display()
    ));
    let meta = dumpe2fs_metadata(&img, 4096);
    assert!(meta.len() >= 24);
    // Group 4 hosts the metadata of groups 4..7; flag it BLOCK_UNINIT with a valid checksum.
    let cmds = dir.path().join("cmds");
    std::fs::write(&cmds, "set_bg 4 flags 7\nset_bg 4 checksum calc\n").unwrap();
    sh(&format!(
        "debugfs -w -n -f '{}' '{}' 2>&1",
        cmds.display(),
        img.display()
    ));
    assert!(sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display())).contains("BLOCK_UNINIT"));
    let u = compute(&img);
    assert!(u.from_fs && u.warnings.is_empty(), "{:?}", u.warnings);
    for (s, e) in meta {
        assert_eq!(u.used.covered(s, e), e - s, "metadata [{s}, {e}) dropped");
    }
    // The rest of group 4 is free by the flag's definition and must not be kept.
    let g4 = (8192 * 4096, 10240 * 4096);
    assert!(u.used.covered(g4.0, g4.1) < (g4.1 - g4.0) / 2);
}

/// Hints that disagree with the group's own counters or bitmap (each forged with a valid
/// descriptor checksum) are damage: no table anywhere in the volume is left out, while the
/// same filesystem unforged leaves out most of them.
#[test]
fn disagreeing_hints_keep_every_inode_table() {
    if !have_tools(false) || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = populated_image(dir.path(), "64M", "mkfs.ext4 -b 4096 -g 4096 -N 8192");
    let healthy = compute(&base);
    assert!(healthy.warnings.is_empty(), "{:?}", healthy.warnings);
    assert!(
        healthy.unread_metadata.total() > 1 << 20,
        "the healthy filesystem leaves out {} bytes",
        healthy.unread_metadata.total()
    );
    let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", base.display()));
    let last = out
        .lines()
        .filter(|l| {
            l.strip_prefix("Group ")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count()
        - 1;
    let ipg: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Inodes per group:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for (what, cmds) in [
        // Fewer slots in use than inodes allocated in group 0.
        (
            "itable_unused above the free count",
            format!("set_bg 0 itable_unused {}", ipg - 2),
        ),
        // INODE_UNINIT over a group that has inodes (its counters say so).
        (
            "INODE_UNINIT with inodes in use",
            "set_bg 0 flags 5".to_string(),
        ),
        // A bit set past the mark: the bitmap says an inode lives where the hint says none.
        ("inode bitmap past the mark", format!("seti <{}>", ipg - 2)),
        // More unused slots than the group has (e2fsck resets it).
        (
            "itable_unused above the group",
            format!(
                "set_bg 0 free_inodes_count {0}\nset_bg 0 itable_unused {0}",
                ipg + 5
            ),
        ),
        // BLOCK_UNINIT on the last group (e2fsck clears it and reads the bitmap).
        (
            "BLOCK_UNINIT on the last group",
            format!("set_bg {last} flags 7"),
        ),
    ] {
        let img = dir.path().join("forged.img");
        std::fs::copy(&base, &img).unwrap();
        let script = dir.path().join("cmds");
        std::fs::write(
            &script,
            format!("{cmds}\nset_bg 0 checksum calc\nset_bg {last} checksum calc\n"),
        )
        .unwrap();
        sh(&format!(
            "debugfs -w -f '{}' '{}' >/dev/null 2>&1",
            script.display(),
            img.display()
        ));
        let u = compute(&img);
        assert!(
            u.unread_metadata.is_empty(),
            "{what}: {} bytes of inode tables left out",
            u.unread_metadata.total()
        );
        assert!(u.used.total() >= healthy.used.union(&healthy.unread_metadata).total() - (1 << 20));
    }
}

/// Under meta_bg no group reserves descriptor blocks after its superblock copy, whatever
/// `s_reserved_gdt_blocks` says (old mke2fs made such filesystems): what lies there (a meta
/// group's descriptor block, file data) is kept, and the files restore.
#[test]
fn meta_bg_with_a_reserve_count_keeps_what_follows_each_superblock() {
    if !have_tools(true) || !have("debugfs") {
        return;
    }
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let img = filled_image(
        dir.path(),
        "64M",
        "mkfs.ext4 -b 1024 -O meta_bg,^resize_inode",
        no_check,
    );
    sh(&format!(
        "debugfs -w -R 'ssv reserved_gdt_blocks 64' '{}' >/dev/null 2>&1",
        img.display()
    ));
    let u = compute(&img);
    // The blocks after group 1's superblock copy stay mapped.
    let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
    let sb1: u64 = out
        .split("Backup superblock at ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("group 1's superblock copy");
    let after = blockwise::ExtentMap::single((sb1 + 1) * 1024, (sb1 + 65) * 1024);
    assert!(
        u.unread_metadata.intersect(&after).is_empty(),
        "blocks after the superblock copy at {sb1} left out"
    );
    let (_t, target) = restore_onto_random(&img, &u.used).expect("loop device");
    let src = Loop::attach(&img).expect("loop device");
    let a = Mount::new("mount -o ro", &src.dev);
    let b = Mount::new("mount -o ro", &target.dev);
    assert_eq!(
        tree_hashes(a.path()),
        tree_hashes(b.path()),
        "restored files differ"
    );
}

/// A file claiming a block of a reserved-descriptor copy (damage: e2fsck calls it multiply
/// claimed) keeps it, as it keeps a spare inode-table block it claims: what a file reads is
/// never left out.
#[test]
fn a_file_in_a_reserve_copy_keeps_it() {
    if !have_tools(false) || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = populated_image(dir.path(), "64M", "mkfs.ext4 -b 1024 -O ^extent,^64bit");
    let out = sh(&format!("dumpe2fs '{}' 2>/dev/null", img.display()));
    let reserve: u64 = out
        .split("Group 1:")
        .nth(1)
        .and_then(|g| g.split("Reserved GDT blocks at ").nth(1))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("group 1's reserved GDT copy");
    let healthy = compute(&img);
    let block = blockwise::ExtentMap::single((reserve + 5) * 1024, (reserve + 6) * 1024);
    assert_eq!(
        healthy.unread_metadata.intersect(&block),
        block,
        "the reserve copy is left out when nothing claims it"
    );
    sh(&format!(
        "debugfs -w -R 'sif /d/e/f3 block[0] {}' '{}' >/dev/null 2>&1",
        reserve + 5,
        img.display()
    ));
    let u = compute(&img);
    assert_eq!(
        u.used.intersect(&block),
        block,
        "block {} of the reserve copy, now a file's, left out",
        reserve + 5
    );
}
