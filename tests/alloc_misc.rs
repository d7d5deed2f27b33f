//! Used-block maps for XFS, btrfs, F2FS, swap, squashfs and ISO 9660, proven the hard way:
//! real tools build and fill a filesystem (then delete files so stale data sits in free
//! space), only the mapped bytes are written onto a target full of random garbage, and the
//! filesystem's own checker and a read-only mount (or extraction) must find every file intact.
//!
//! Needs root, loop devices and the tools; each test prints why it skips otherwise (and fails
//! instead under `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use blockwise::checksum::crc32c;
use blockwise::fs::{self, Usage};
use blockwise::io::file::FileSource;
use blockwise::io::ReadAt;
use common::{
    have, have_all, is_root, restore_onto_random, seeded_bytes, sh, skip, tree_hashes, Loop, Mount,
    Need,
};

/// A file with some bytes replaced in memory: corrupt variants of a big image without copies.
struct Patched<'a> {
    base: &'a FileSource,
    patches: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Patched<'_> {
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.base.read_at(offset, buf)?;
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let p = at + i as u64;
                if p >= offset && p < offset + n as u64 {
                    buf[(p - offset) as usize] = *b;
                }
            }
        }
        Ok(n)
    }
}

/// Writes `len` pseudo-random bytes seeded by `seed` to `path`.
fn random_bytes(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, seeded_bytes(len, seed)).unwrap();
}

/// A tree of big random files, many small ones and nested directories, plus files named
/// `junk*` meant to be deleted after they were written into the filesystem.
fn populate(root: &Path, big: usize) {
    for i in 0..4 {
        random_bytes(&root.join(format!("big{i}.bin")), big, i as u64 + 1);
        random_bytes(&root.join(format!("junk_big{i}.bin")), big, i as u64 + 100);
    }
    for d in 0..12 {
        let dir = root.join(format!("dir{d}/sub{}", d % 3));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            let len = (d * 997 + f * 131) % 20000 + 1;
            random_bytes(&dir.join(format!("f{f}.dat")), len, (d * 100 + f) as u64);
            if f % 4 == 0 {
                random_bytes(
                    &dir.join(format!("junk{f}.dat")),
                    len * 3,
                    (d * 7 + f) as u64,
                );
            }
        }
    }
}

/// Deletes the `junk*` files under `root`.
fn delete_junk(root: &Path) {
    sh(&format!(
        "find '{}' -name 'junk*' -type f -delete && sync",
        root.display()
    ));
}

fn map_of(image: &Path) -> (fs::FsInfo, Usage) {
    let src = FileSource::open(image).unwrap();
    let info = fs::probe_all(&src).unwrap().expect("filesystem recognised");
    let u = fs::usage(&src, &info);
    eprintln!(
        "{}: mapped {} of {} bytes ({:.1}%), {} extents, from_fs={}, warnings={:?}",
        info.fs_type,
        u.used.total(),
        src.size(),
        100.0 * u.used.total() as f64 / src.size() as f64,
        u.used.len(),
        u.from_fs,
        u.warnings
    );
    (info, u)
}

/// Mounts `dev` read-only at a fresh directory and returns its file hashes.
fn ro_hashes(dev: &str, fstype: &str, extra: &str) -> BTreeMap<String, String> {
    let m = Mount::new(&format!("mount -t {fstype} -o ro{extra}"), dev);
    tree_hashes(m.path())
}

/// Image of `size` bytes made by `mkfs` (given the image path), mounted, filled, junk
/// deleted, unmounted. Returns the image dir and the expected file hashes; `None` after a
/// [`skip`] when no loop device can be had or the kernel cannot mount it, unless
/// `kernel_may_refuse` (then only a note: the caller proves what it can without a mount).
fn mounted_image(
    size: u64,
    mkfs: &str,
    fstype: &str,
    big: usize,
    kernel_may_refuse: bool,
) -> Option<(
    tempfile::TempDir,
    std::path::PathBuf,
    BTreeMap<String, String>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    sh(&format!("truncate -s {size} '{}'", img.display()));
    sh(&format!("{mkfs} '{}'", img.display()));
    let lp = Loop::attach(&img)?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", fstype, &lp.dev])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        let why = format!("this kernel cannot mount the {fstype} made by `{mkfs}`");
        if kernel_may_refuse {
            eprintln!("NOTE: {why}");
        } else {
            skip(Need::Oracle, why);
        }
        return None;
    }
    populate(&mnt, big);
    sh("sync");
    delete_junk(&mnt);
    let expected = tree_hashes(&mnt);
    if fstype == "btrfs" {
        // Tightness reference: device bytes inside chunks, as btrfs itself reports them.
        let out = sh(&format!("btrfs filesystem usage -b '{}'", mnt.display()));
        let alloc = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Device allocated:"))
            .unwrap()
            .trim()
            .to_string();
        std::fs::write(dir.path().join("allocated"), alloc).unwrap();
    }
    sh(&format!("umount '{}'", mnt.display()));
    drop(lp);
    Some((dir, img, expected))
}

fn mounted_tools_ok(tools: &[&str]) -> bool {
    is_root() && have_all(tools)
}

/// The XFS restore proof; `kernel_may_refuse` for v4, which kernels built without
/// CONFIG_XFS_SUPPORT_V4 (deprecated, off in current distribution kernels) cannot mount.
fn xfs_case(mkfs: &str, kernel_may_refuse: bool) {
    if !mounted_tools_ok(&["mkfs.xfs", "xfs_repair", "xfs_db"]) {
        return;
    }
    let Some((_d, img, expected)) =
        mounted_image(512 << 20, mkfs, "xfs", 24 << 20, kernel_may_refuse)
    else {
        return;
    };
    let (info, u) = map_of(&img);
    assert_eq!(info.fs_type.name(), "xfs");
    assert!(u.from_fs, "XFS map fell back: {:?}", u.warnings);
    // Tightness: used blocks per xfs_db (dblocks - fdblocks) include the log.
    let out = sh(&format!(
        "xfs_db -r -c 'sb 0' -c 'p dblocks fdblocks blocksize' '{}'",
        img.display()
    ));
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let fs_used = (field("dblocks") - field("fdblocks")) * field("blocksize");
    eprintln!(
        "xfs: mapped {} vs used per superblock {fs_used}",
        u.used.total()
    );
    assert!(
        u.used.total() >= fs_used * 99 / 100 || u.used.total() >= fs_used.saturating_sub(64 << 10)
    );
    assert!(u.used.total() <= fs_used + fs_used / 100 + (1 << 20));
    let Some((_t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    sh(&format!("xfs_repair -n '{}'", lp.dev));
    assert_eq!(ro_hashes(&lp.dev, "xfs", ",norecovery"), expected);
}

#[test]
fn xfs_v5_restore_proof() {
    xfs_case("mkfs.xfs -q -f -d agcount=4", false);
}

#[test]
fn xfs_v5_small_blocks_no_reflink_restore_proof() {
    xfs_case(
        "mkfs.xfs -q -f -b size=1024 -m reflink=0,finobt=0 -d agcount=7",
        false,
    );
}

#[test]
fn xfs_v5_sparse_inodes_many_ags_restore_proof() {
    xfs_case("mkfs.xfs -q -f -i sparse=1 -d agcount=6 -l size=64m", false);
}

#[test]
fn xfs_v4_restore_proof() {
    if !have("mkfs.xfs") {
        return;
    }
    // Newer xfsprogs refuse v4 unless asked; skip if this one cannot make it at all.
    let probe = tempfile::tempdir().unwrap();
    let p = probe.path().join("p.img");
    sh(&format!("truncate -s 300M '{}'", p.display()));
    let ok = std::process::Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "crc=0"])
        .arg(&p)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip(Need::Oracle, "mkfs.xfs cannot make v4 (crc=0) filesystems");
        return;
    }
    xfs_case("mkfs.xfs -q -f -m crc=0 -d agcount=5", true);
    // The kernel may lack v4 support (then the above only noted it): still prove the v4 tree
    // walk on the fresh filesystem, whose free space is random garbage after restore.
    let (_, u) = map_of(&p);
    assert!(u.from_fs, "{:?}", u.warnings);
    if let Some((_t, lp)) = restore_onto_random(&p, &u.used) {
        sh(&format!("xfs_repair -n '{}'", lp.dev));
    }
}

fn btrfs_case(mkfs: &str) {
    if !mounted_tools_ok(&["mkfs.btrfs", "btrfs"]) {
        return;
    }
    let Some((d, img, expected)) = mounted_image(512 << 20, mkfs, "btrfs", 24 << 20, false) else {
        return;
    };
    let (info, u) = map_of(&img);
    assert_eq!(info.fs_type.name(), "btrfs");
    assert!(u.from_fs, "btrfs map fell back: {:?}", u.warnings);
    let alloc: u64 = std::fs::read_to_string(d.path().join("allocated"))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "btrfs: mapped {} vs allocated chunks {alloc}",
        u.used.total()
    );
    // Chunks plus the first MiB and the 64 MiB superblock mirror (if outside every chunk).
    assert!(u.used.total() <= alloc + (1 << 20) + 4096);
    assert!(u.used.total() >= alloc);
    let Some((_t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    sh(&format!("btrfs check --readonly '{}'", lp.dev));
    assert_eq!(ro_hashes(&lp.dev, "btrfs", ""), expected);
}

#[test]
fn btrfs_default_restore_proof() {
    btrfs_case("mkfs.btrfs -q -f");
}

#[test]
fn btrfs_single_restore_proof() {
    btrfs_case("mkfs.btrfs -q -f -m single -d single");
}

/// Hostile btrfs chunk metadata: refused, everything kept, no panic.
#[test]
fn btrfs_corrupt_inputs_keep_everything() {
    if !have("mkfs.btrfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("b.img");
    sh(&format!("truncate -s 256M '{}'", img.display()));
    sh(&format!("mkfs.btrfs -q -f '{}'", img.display()));
    let base = FileSource::open(&img).unwrap();
    assert!(fs::btrfs::used(&base).unwrap().from_fs);
    let sb = std::fs::read(&img).unwrap()[65536..65536 + 4096].to_vec();
    // Re-signs a patched superblock so only the semantic checks can catch the damage.
    let resign = |patch: &dyn Fn(&mut Vec<u8>)| -> Vec<(u64, Vec<u8>)> {
        let mut b = sb.clone();
        patch(&mut b);
        let c = crc32c(&b[32..]);
        b[..4].copy_from_slice(&c.to_le_bytes());
        vec![(65536, b)]
    };
    let stripe_off = 0x32B + 17 + 48 + 8;
    let cases: Vec<(&str, Patches)> = vec![
        (
            "system chunk stripe past the device",
            resign(&|b| b[stripe_off..stripe_off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes())),
        ),
        ("absurd chunk root level", resign(&|b| b[0xC7] = 200)),
        (
            "chunk root outside every system chunk",
            resign(&|b| b[0x58..0x60].copy_from_slice(&(7u64 << 50).to_le_bytes())),
        ),
        (
            "sys_chunk_array length absurd",
            resign(&|b| b[0xA0..0xA4].copy_from_slice(&9999u32.to_le_bytes())),
        ),
        ("two devices", resign(&|b| b[0x88] = 2)),
        ("bad checksum", vec![(65536 + 0x58, vec![1])]),
    ];
    for (what, patches) in cases {
        let src = Patched {
            base: &base,
            patches,
        };
        assert!(fs::btrfs::used(&src).is_err(), "{what}: accepted");
    }
    let mut x = 0x9876_5432u64;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = 65536 + (x % 4096) as usize;
        let _ = fs::btrfs::used(&Patched {
            base: &base,
            patches: resign(&|b| b[at - 65536] ^= (x >> 40) as u8 | 1),
        });
    }
}

type Patches = Vec<(u64, Vec<u8>)>;

/// Every regular file's SHA-256 in the F2FS on `dev`, keyed like `tree_hashes`, read without
/// mounting (this kernel has no f2fs). `dump.f2fs -n 0~-1` writes the NAT to `./dump_nat`;
/// every entry with nid == ino is an inode. `dump.f2fs -i 0x<nid>` prints its fields, and for
/// a regular file asks whether to dump the data: answered `y`, f2fs-tools 1.15 writes it to
/// `./lost_found/<i_name>` in the working directory (a fresh one per inode, since names
/// repeat). Paths come from the `i_pino`/`i_name` chain up to the root inode 3 (sload gives
/// every file one link), so a file whose data or node blocks were not restored shows up as a
/// wrong hash, a missing path, or a dump.f2fs failure.
fn f2fs_dump_hashes(dev: &Path) -> BTreeMap<String, String> {
    use rayon::prelude::*;
    use sha2::{Digest, Sha256};
    use std::process::{Command, Stdio};
    const ROOT: u64 = 3;
    let work = tempfile::tempdir().unwrap();
    let dump = |cwd: &Path, args: &[&str]| -> String {
        let mut c = Command::new("dump.f2fs")
            .args(args)
            .arg(dev)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Only regular files ask; others exit without reading (a broken pipe is fine).
        let _ = c.stdin.take().unwrap().write_all(b"y\n");
        let o = c.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "dump.f2fs {args:?} failed:\n{out}\n{err}"
        );
        out + &err
    };
    dump(work.path(), &["-n", "0~-1"]);
    let nat = std::fs::read_to_string(work.path().join("dump_nat")).unwrap();
    let inodes: Vec<u64> = nat
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                ["nid:", nid, "ino:", ino, ..] if nid == ino => nid.parse().ok(),
                _ => None,
            }
        })
        .collect();
    assert!(inodes.contains(&ROOT), "no root inode in the NAT:\n{nat}");
    // nid -> (mode, parent, name, SHA-256 of the dumped data for a regular file)
    type Node = (u64, u64, String, Option<String>);
    let nodes: BTreeMap<u64, Node> = inodes
        .par_iter()
        .map(|&nid| {
            let cwd = work.path().join(nid.to_string());
            std::fs::create_dir(&cwd).unwrap();
            let out = dump(&cwd, &["-i", &format!("{nid:#x}")]);
            let field = |name: &str| {
                out.lines()
                    .find(|l| l.split_whitespace().next() == Some(name))
                    .and_then(|l| Some(l[l.find('[')? + 1..l.rfind(']')?].to_string()))
                    .unwrap_or_else(|| panic!("inode {nid}: no {name} in\n{out}"))
            };
            let num = |name: &str| -> u64 {
                let v = field(name);
                v.rsplit(':').next().unwrap().trim().parse().unwrap()
            };
            // The root inode carries no name (dump prints no i_name line for it).
            let name = if nid == ROOT {
                String::new()
            } else {
                field("i_name")
            };
            let mode = num("i_mode");
            let hash = (mode & 0o170000 == 0o100000).then(|| {
                let data = std::fs::read(cwd.join("lost_found").join(&name))
                    .unwrap_or_else(|e| panic!("inode {nid} ({name}): no dumped data: {e}"));
                Sha256::digest(&data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            });
            (nid, (mode, num("i_pino"), name, hash))
        })
        .collect();
    let mut got = BTreeMap::new();
    for (&nid, (_, _, _, hash)) in &nodes {
        let Some(hash) = hash else { continue };
        let mut parts = Vec::new();
        let mut at = nid;
        while at != ROOT {
            let (_, parent, name, _) = nodes
                .get(&at)
                .unwrap_or_else(|| panic!("inode {nid}: ancestor {at} not in the NAT"));
            assert!(parts.len() < 64, "inode {nid}: parent loop");
            parts.push(name.as_str());
            at = *parent;
        }
        parts.push(".");
        parts.reverse();
        assert!(
            got.insert(parts.join("/"), hash.clone()).is_none(),
            "two inodes at {}",
            parts.join("/")
        );
    }
    got
}

/// Panics naming only the files whose hash differs or that one side lacks.
fn same_files(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    assert!(!want.is_empty(), "{what}: no source files to compare");
    let bad: Vec<String> = want
        .iter()
        .filter(|(p, h)| got.get(*p) != Some(h))
        .map(|(p, h)| format!("{p}: want {h}, got {:?}", got.get(p)))
        .chain(
            got.keys()
                .filter(|p| !want.contains_key(*p))
                .map(|p| format!("{p}: not in the source")),
        )
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} files differ:\n{}",
        bad.len(),
        want.len(),
        bad.join("\n")
    );
}

#[test]
fn f2fs_restore_proof() {
    if !mounted_tools_ok(&["mkfs.f2fs", "sload.f2fs", "fsck.f2fs", "dump.f2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    populate(&src, 16 << 20);
    delete_junk(&src);
    let expected = tree_hashes(&src);
    let img = dir.path().join("f.img");
    sh(&format!("truncate -s 512M '{}'", img.display()));
    sh(&format!("mkfs.f2fs -q -f -l blockwise '{}'", img.display()));
    sh(&format!(
        "sload.f2fs -f '{}' '{}'",
        src.display(),
        img.display()
    ));
    // Control: the dump method reads the original image back to exactly the source tree.
    same_files(
        &f2fs_dump_hashes(&img),
        &expected,
        "dump of the original image",
    );
    let (info, u) = map_of(&img);
    assert_eq!(info.fs_type.name(), "f2fs");
    assert!(u.from_fs, "F2FS map fell back: {:?}", u.warnings);
    let data: u64 = expected.len() as u64 * 4096 + (4 * (16 << 20));
    eprintln!(
        "f2fs: mapped {} vs file data at least {data}",
        u.used.total()
    );
    assert!(u.used.total() < 400 << 20);
    let Some((_t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    sh(&format!("fsck.f2fs -f --dry-run '{}'", lp.dev));
    // This kernel cannot mount f2fs, so the content check reads the restore with dump.f2fs.
    same_files(
        &f2fs_dump_hashes(Path::new(&lp.dev)),
        &expected,
        "dump of the restored image",
    );
    eprintln!("f2fs: all {} files match after restore", expected.len());
}

/// Hostile XFS metadata must make the reader refuse (everything kept), never panic or drop.
#[test]
fn xfs_corrupt_inputs_keep_everything() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    sh(&format!("truncate -s 320M '{}'", img.display()));
    sh(&format!("mkfs.xfs -q -f -d agcount=2 '{}'", img.display()));
    let base = FileSource::open(&img).unwrap();
    let good = fs::xfs::used(&base).unwrap();
    assert!(good.from_fs);
    let head = std::fs::read(&img).unwrap()[..4096].to_vec();
    let bs = u32::from_be_bytes(head[4..8].try_into().unwrap()) as u64;
    let sect = u16::from_be_bytes(head[102..104].try_into().unwrap()) as u64;
    let s = sect as usize;
    let root = u32::from_be_bytes(head[s + 16..s + 20].try_into().unwrap()) as u64;
    let be = |v: u32| v.to_be_bytes().to_vec();
    let cases: Vec<(&str, Patches)> = vec![
        ("absurd levels", vec![(sect + 28, be(200))]),
        (
            // A root that is a node pointing at itself (v5: the CRC catches it first, the
            // level/visited checks are the backstop).
            "self loop",
            vec![
                (root * bs + 4, vec![0, 1, 0, 1]),
                (root * bs + 56 + 8 * ((bs - 56) / 12), be(root as u32)),
                (sect + 28, be(2)),
            ],
        ),
        ("extent past the AG", vec![(root * bs + 56, be(u32::MAX))]),
        ("root outside the AG", vec![(sect + 16, be(u32::MAX))]),
        ("needsrepair", vec![(216, be(0x10 | 0x1 | 0x2 | 0x8))]),
        ("realtime", vec![(16, vec![0, 0, 0, 0, 0, 0, 0, 1])]),
    ];
    for (what, patches) in cases {
        let src = Patched {
            base: &base,
            patches,
        };
        assert!(fs::xfs::used(&src).is_err(), "{what}: accepted");
        let u = fs::usage(&src, &fs::probe_all(&src).unwrap().unwrap());
        assert_eq!(u.used.total(), src.size(), "{what}: dropped bytes");
    }
    // Random byte flips in the first AG's metadata never panic.
    let mut x = 0x1234_5678u64;
    for _ in 0..500 {
        let mut patches = Vec::new();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            patches.push((x % (64 * bs), vec![(x >> 40) as u8]));
        }
        let _ = fs::xfs::used(&Patched {
            base: &base,
            patches,
        });
    }
}

#[test]
fn swap_restore_proof() {
    if !mounted_tools_ok(&["mkswap", "blkid"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.img");
    common::random_file(&img, 64 << 20, 7);
    sh(&format!("mkswap -L bwswap '{}'", img.display()));
    let (info, u) = map_of(&img);
    assert!(u.from_fs);
    assert_eq!(u.used.total(), 4096);
    let Some((_t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    let want = common::blkid(&img, None);
    let got = common::blkid(Path::new(&lp.dev), None);
    for k in ["ID_FS_TYPE", "ID_FS_LABEL", "ID_FS_UUID"] {
        assert_eq!(common::get(&got, k), common::get(&want, k), "{k}");
    }
    assert_eq!(common::get(&got, "ID_FS_LABEL"), Some("bwswap"));
    assert_eq!(info.label.as_deref(), Some("bwswap"));
}

#[test]
fn squashfs_restore_proof() {
    if !mounted_tools_ok(&["mksquashfs", "unsquashfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    populate(&src, 2 << 20);
    let expected = tree_hashes(&src);
    let img = dir.path().join("q.img");
    sh(&format!(
        "mksquashfs '{}' '{}' -quiet -no-progress",
        src.display(),
        img.display()
    ));
    // A partition bigger than the image: the tail is free.
    sh(&format!("truncate -s 64M '{}'", img.display()));
    let (_, u) = map_of(&img);
    assert!(u.from_fs);
    let Some((t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    let out = t.path().join("x");
    sh(&format!(
        "unsquashfs -q -n -d '{}' '{}'",
        out.display(),
        lp.dev
    ));
    assert_eq!(tree_hashes(&out), expected);
}

#[test]
fn iso9660_restore_proof() {
    if !mounted_tools_ok(&["xorriso"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    populate(&src, 2 << 20);
    let expected = tree_hashes(&src);
    let img = dir.path().join("i.iso");
    sh(&format!(
        "xorriso -outdev '{}' -joliet on -map '{}' / -commit 2>/dev/null",
        img.display(),
        src.display()
    ));
    let (info, u) = map_of(&img);
    assert_eq!(info.fs_type.name(), "iso9660");
    assert!(u.from_fs);
    let Some((t, lp)) = restore_onto_random(&img, &u.used) else {
        return;
    };
    // Extract with xorriso: kernels built without iso9660 cannot mount it.
    let out = t.path().join("x");
    sh(&format!(
        "xorriso -osirrox on -indev 'stdio:{}' -extract / '{}' 2>&1",
        lp.dev,
        out.display()
    ));
    assert_eq!(tree_hashes(&out), expected);
}
