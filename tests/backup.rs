//! `blockwise backup` end to end: archives restore with the stock tools (zstd -d, xz -d,
//! simg2img, cp), the bmap beside them is right and bmaptool takes it, archives are
//! random-access sources for inspect/verify, and failures leave nothing under the final name.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use blockwise::archive::{Backup, BackupOptions};
use blockwise::bmap;
use blockwise::format::{self, OpenOptions};
use blockwise::io::{Counting, FileSource, MemSource, ReadAt};
use common::*;

fn bw(args: &[&str]) -> Output {
    blockwise().args(args).output().expect("run blockwise")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "blockwise failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Sample partitions (start, size) in bytes, as `make-sample.sh` lays them out.
const PARTS: [(u64, u64); 2] = [(8192 * 512, 98304 * 512), (106496 * 512, 155648 * 512)];

/// The map an archive's bmap lists, as bytes.
fn bmap_map(path: &Path) -> (bmap::Bmap, blockwise::ExtentMap) {
    let b = bmap::parse(&std::fs::read(path).unwrap()).unwrap();
    let m = b.extent_map();
    (b, m)
}

/// Every mapped byte equals the original's, every other byte is zero (free space, with its
/// deleted data, must not leak into an archive).
fn assert_restored(original: &Path, restored: &Path, map: &blockwise::ExtentMap) {
    let a = std::fs::read(original).unwrap();
    let b = std::fs::read(restored).unwrap();
    assert_eq!(a.len(), b.len(), "restored size");
    for e in map.iter() {
        let (s, t) = (e.start as usize, (e.end as usize).min(a.len()));
        assert!(a[s..t] == b[s..t], "mapped range {s}..{t} differs");
    }
    for g in map.gaps(a.len() as u64).iter() {
        assert!(
            b[g.start as usize..g.end as usize].iter().all(|&x| x == 0),
            "unmapped range {}..{} is not zero",
            g.start,
            g.end
        );
    }
    // The sample has deleted data in its free space: proof that zeroing did something.
    assert!(a != b, "the sample's free space should hold old data");
}

fn backup_sample(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf, String) {
    let img = dir.join("card.img");
    if !img.exists() {
        unpack_sample(dir);
    }
    let dest = dir.join(name);
    let mut args = vec!["backup", p(&img), p(&dest)];
    args.extend_from_slice(extra);
    let log = ok(&bw(&args));
    (img, dest, log)
}

#[test]
fn zst_archive_restores_with_stock_zstd_and_passes_the_restore_proof() {
    if !(is_root() && have_all(&["zstd", "mcopy", "fsck.vfat", "e2fsck", "losetup", "mount"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, dest, log) = backup_sample(dir.path(), "card.img.zst", &[]);
    assert!(log.contains("seekable zstd"), "{log}");
    let bmap_path = dir.path().join("card.img.zst.bmap");
    assert!(bmap_path.is_file());
    let restored = dir.path().join("restored.img");
    sh(&format!("zstd -q -d '{}' -o '{}'", p(&dest), p(&restored)));
    let (b, map) = bmap_map(&bmap_path);
    assert_eq!(b.image_size, std::fs::metadata(&img).unwrap().len());
    assert_restored(&img, &restored, &map);
    ok(&bw(&["verify", p(&restored), "--bmap", p(&bmap_path)]));
    assert_card_equivalent(&img, &restored, &PARTS);
    // The archive is much smaller than the image.
    let z = std::fs::metadata(&dest).unwrap().len();
    assert!(z * 20 < b.image_size, "archive {z} bytes");
}

#[test]
fn every_format_restores_with_its_stock_tool() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], Option<&str>); 4] = [
        ("c.img.zst", &[], Some("zstd -q -d {in} -o {out}")),
        ("c.img.xz", &[], Some("xz -d -c {in} > {out}")),
        ("c.simg", &[], Some("simg2img {in} {out}")),
        (
            "c.sparse.img",
            &["--format", "img"],
            Some("cp --sparse=always {in} {out}"),
        ),
    ];
    for (name, extra, cmd) in cases {
        let (img, dest, _) = backup_sample(dir.path(), name, extra);
        let bmap_path = PathBuf::from(format!("{}.bmap", dest.display()));
        let (_, map) = bmap_map(&bmap_path);
        // Random access straight from the archive.
        let o = bw(&["verify", p(&dest), "--bmap", p(&bmap_path)]);
        ok(&o);
        let v = String::from_utf8_lossy(&o.stdout);
        assert!(v.contains("OK"), "{name}: {v}");
        let Some(cmd) = cmd else { continue };
        let tool = cmd.split(' ').next().unwrap();
        if !have(tool) {
            continue;
        }
        let restored = dir.path().join(format!("{name}.restored"));
        sh(&cmd
            .replace("{in}", &format!("'{}'", p(&dest)))
            .replace("{out}", &format!("'{}'", p(&restored))));
        assert_restored(&img, &restored, &map);
    }
}

#[test]
fn inspect_of_an_archive_reads_a_small_fraction_and_matches_the_raw_image() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["c.img.zst", "c.img.xz"] {
        let (img, dest, _) = backup_sample(dir.path(), name, &[]);
        let counted = Arc::new(Counting::new(FileSource::open(&dest).unwrap()));
        let src: Arc<dyn ReadAt> = counted.clone();
        let opened = format::open_source(src, name, &OpenOptions::default()).unwrap();
        assert!(opened.random_access(), "{name} is read with random access");
        let r = blockwise::report::inspect_source(opened.source.clone(), None, "c").unwrap();
        let raw = blockwise::report::inspect_path(&img).unwrap();
        assert_eq!(r.partitions.len(), raw.partitions.len());
        assert_eq!(
            r.usage.as_ref().map(|u| u.mapped),
            raw.usage.as_ref().map(|u| u.mapped)
        );
        let size = std::fs::metadata(&dest).unwrap().len();
        let frac = counted.bytes_read() as f64 / size as f64;
        eprintln!(
            "{name}: inspect read {} of {size} archive bytes ({:.2}%)",
            counted.bytes_read(),
            frac * 100.0
        );
        // Backups cut frames around the metadata inspect reads, so this is small; the sample
        // archive is only ~2.6 MB, so the format sniffing (36 KiB) and the frame holding the
        // MBR and the random bootloader blob weigh more here than on a real card
        // (benches/backup_compare.sh measures a 4 GiB one against the 2% goal).
        assert!(
            frac < 0.08,
            "{name}: inspect read {:.1}% of the archive",
            frac * 100.0
        );
    }
}

#[test]
fn bmaptool_copies_the_archive_onto_a_dirty_card() {
    if !(is_root()
        && have_all(&[
            "bmaptool",
            "zstd",
            "losetup",
            "mount",
            "mcopy",
            "fsck.vfat",
            "e2fsck",
        ]))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, dest, _) = backup_sample(dir.path(), "c.img.zst", &[]);
    let target = dir.path().join("target.img");
    random_file(&target, std::fs::metadata(&img).unwrap().len(), 77);
    let Some(lp) = Loop::attach(&target) else {
        return;
    };
    // bmaptool finds c.img.zst.bmap by itself and writes only the mapped blocks.
    sh(&format!("bmaptool copy '{}' {}", p(&dest), lp.dev));
    drop(lp);
    assert_card_equivalent(&img, &target, &PARTS);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (img, dest, _) = backup_sample(dir.path(), "c.img.zst", &[]);
    std::fs::write(&dest, b"precious").unwrap();
    let o = bw(&["backup", p(&img), p(&dest)]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    ok(&bw(&["backup", p(&img), p(&dest), "--force"]));
    assert_ne!(std::fs::read(&dest).unwrap(), b"precious");
    // Never onto the source itself.
    let o = bw(&["backup", p(&img), p(&img), "--force"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("source itself"));
}

/// No file under the final name, and no temporary left behind either.
fn assert_nothing_left(dir: &Path, dest_name: &str) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with(dest_name) && !n.starts_with(&format!(".{dest_name}")),
            "left behind: {n}"
        );
    }
}

#[test]
fn a_full_destination_is_a_clear_error_and_leaves_nothing() {
    if !have("mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    if !m.success() {
        skip(Need::Oracle, "cannot mount a small tmpfs (not root?)");
        return;
    }
    let o = bw(&["backup", p(&img), p(&small.join("c.img.zst"))]);
    let leftovers: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("full"), "{err}");
    assert!(err.contains("nothing was written under"), "{err}");
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn a_corrupt_source_frame_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, dest, _) = backup_sample(dir.path(), "c.img.zst", &[]);
    // Corrupt the largest frame (file data, far from the metadata inspect reads): the backup
    // of that archive fails when it reaches it.
    let mut z = std::fs::read(&dest).unwrap();
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let bad = dir.path().join("bad.img.zst");
    std::fs::write(&bad, &z).unwrap();
    let out = dir.path().join("again.img.zst");
    let o = bw(&["backup", p(&bad), p(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("corrupt") || err.contains("checksum"), "{err}");
    assert!(err.contains("nothing was written under"), "{err}");
    assert_nothing_left(dir.path(), "again.img.zst");
}

#[test]
fn sigint_stops_cleanly_with_exit_130() {
    let dir = tempfile::tempdir().unwrap();
    // An image blockwise cannot see into is all "used": a long, slow backup at level 19.
    let img = dir.path().join("blob.img");
    random_file(&img, 96 << 20, 3);
    let dest = dir.path().join("blob.img.zst");
    let child = Command::new(env!("CARGO_BIN_EXE_blockwise"))
        .args(["backup", p(&img), p(&dest), "--level", "19"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the temporary exists, so the signal lands mid-backup.
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    {
        assert!(t0.elapsed().as_secs() < 30, "backup never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    sh(&format!("kill -INT {}", child.id()));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_nothing_left(dir.path(), "blob.img.zst");
}

/// A source whose reads fail past some offset, like a card with a bad sector.
struct Failing {
    inner: MemSource,
    bad_from: u64,
}

impl ReadAt for Failing {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if offset + buf.len() as u64 > self.bad_from {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read_at(offset, buf)
    }
}

#[test]
fn a_source_read_error_names_the_offset() {
    let data = vec![7u8; 8 << 20];
    let src: Arc<dyn ReadAt> = Arc::new(Failing {
        inner: MemSource(data),
        bad_from: 5 << 20,
    });
    let map = blockwise::ExtentMap::single(0, 8 << 20);
    let mut f = tempfile::tempfile().unwrap();
    let e = Backup::from_source(src, &map, BackupOptions::default())
        .unwrap()
        .run(&mut f, &mut |_| {}, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("read error at byte 4194304"), "{e}");
}

/// A source whose decoder panics past some offset: a bug, not a bad sector.
struct Panicking {
    inner: MemSource,
    from: u64,
}

impl ReadAt for Panicking {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(offset + (buf.len() as u64) <= self.from, "decoder bug");
        self.inner.read_at(offset, buf)
    }
}

#[test]
fn a_panicking_stage_fails_the_backup_instead_of_dropping_its_checksums() {
    // A panic used to be able to end a stage quietly (a dead hasher gave an empty checksum
    // list, i.e. a bmap without checksums); now it is the backup's error.
    let src: Arc<dyn ReadAt> = Arc::new(Panicking {
        inner: MemSource(vec![7u8; 8 << 20]),
        from: 5 << 20,
    });
    let map = blockwise::ExtentMap::single(0, 8 << 20);
    let mut out: Vec<u8> = Vec::new();
    let e = Backup::from_source(src, &map, BackupOptions::default())
        .unwrap()
        .run(&mut out, &mut |_| {}, &AtomicBool::new(false))
        .unwrap_err();
    assert!(
        matches!(&e, blockwise::Error::Panicked { message, .. } if message.contains("decoder bug")),
        "{e}"
    );
}

#[test]
fn refuses_a_device_mounted_read_write() {
    if !(is_root() && have_all(&["mkfs.ext4", "losetup", "mount"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    sh(&format!(
        "truncate -s 16M '{0}' && mkfs.ext4 -q '{0}'",
        p(&img)
    ));
    let Some(lp) = Loop::attach(&img) else {
        return;
    };
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount {} '{}'", lp.dev, p(&mnt)));
    let dest = dir.path().join("fs.img.zst");
    let o = bw(&["backup", &lp.dev, p(&dest)]);
    let ro = {
        sh(&format!("mount -o remount,ro '{}'", p(&mnt)));
        bw(&["backup", &lp.dev, p(&dest)])
    };
    sh(&format!("umount '{}'", p(&mnt)));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("in use") && err.contains("--allow-mounted"),
        "{err}"
    );
    assert!(!dest.exists() || ro.status.success());
    // Mounted read-only, the filesystem cannot change under us: allowed.
    ok(&ro);
}
