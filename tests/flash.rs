//! `blockwise flash` end to end on the bundled sample card (MBR, bootloader blob at sector 16,
//! FAT32 boot, ext4 root, deleted data in free space): written onto reused cards (loop devices
//! over files of random bytes) and files, from our archive, the raw image and streams; every
//! card passes the restore proof. Refusals leave the target's every byte unchanged; failures
//! exit non-zero, say what state the card is in, and leave its first MiB zeroed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const MIB: u64 = 1 << 20;

/// The sample card unpacked, with its two partitions' (start, size) in bytes.
struct Card {
    dir: tempfile::TempDir,
    img: PathBuf,
    parts: [(u64, u64); 2],
}

/// Unpacks the sample; `None` (after a skip) without root or the proof's tools.
fn card() -> Option<Card> {
    if !(is_root() && have_all(&["mcopy", "fsck.vfat", "e2fsck", "losetup", "sfdisk"])) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let parts = common::first_two_partitions(&img);
    Some(Card { dir, img, parts })
}

impl Card {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `blockwise backup` of the card to `name` (its bmap beside it).
    fn archive(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        let o = blockwise()
            .arg("backup")
            .arg(&self.img)
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    }

    /// A reused card: a file of `mib` MiB of random bytes.
    fn reused(&self, name: &str, mib: u64, seed: u64) -> PathBuf {
        let p = self.path(name);
        random_file(&p, mib * MIB, seed);
        p
    }

    /// The restore proof of `target` (a file, or a loop device's backing file).
    fn assert_restored(&self, target: &Path) {
        assert_card_equivalent(&self.img, target, &self.parts);
        common::assert_same_table(&self.img, target);
    }
}

fn flash(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = blockwise();
    c.arg("flash");
    for a in args {
        c.arg(a);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

fn sha(p: &Path) -> String {
    sh(&format!("sha256sum '{}'", p.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The first and last MiB of a file.
fn ends(p: &Path) -> (Vec<u8>, Vec<u8>) {
    let d = std::fs::read(p).unwrap();
    let n = d.len();
    (d[..MIB as usize].to_vec(), d[n - MIB as usize..].to_vec())
}

fn zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

#[test]
fn the_archive_onto_a_reused_card() {
    let Some(c) = card() else { return };
    let zst = c.archive("card.img.zst");
    let back = c.reused("sd.bin", 160, 1);
    let Some(lp) = Loop::attach(&back) else {
        return;
    };
    let o = flash(&[&zst, &lp.dev, &"--yes", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["ok"], true);
    assert_eq!(j["map_source"], "bmap");
    let t = &j["targets"][0];
    assert_eq!(t["kind"], "device");
    assert_eq!(t["verified"], j["mapped_bytes"]);
    assert!(j["mapped_bytes"].as_u64().unwrap() < 40 * MIB);
    // Only the mapped frames were decoded.
    assert!(j["bytes_read"].as_u64().unwrap() < 40 * MIB);
    drop(lp);
    c.assert_restored(&back);
    let (_, tail) = ends(&back);
    assert!(zero(&tail), "the larger card's last MiB is zeroed");
}

#[test]
fn raw_images_and_streams_onto_files() {
    let Some(c) = card() else { return };
    if !have_all(&["gzip", "xz"]) {
        return;
    }
    let gz = c.path("card.img.gz");
    sh(&format!(
        "gzip -c '{}' > '{}'",
        c.img.display(),
        gz.display()
    ));
    let xz = repo().join("samples/card.img.xz");
    let runs = [
        (&c.img, "scan", ""),
        (&gz, "scan", ""),
        (&xz, "scan", ""),
        (&gz, "stream", "--one-pass"),
        (&xz, "stream", "--one-pass"),
    ];
    for (i, (image, source, flag)) in runs.into_iter().enumerate() {
        // A reused file of the image's size, and a new file.
        let reused = c.reused(&format!("t{i}.img"), 128, 10 + i as u64);
        let fresh = c.path(&format!("n{i}.img"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![image, &reused, &fresh, &"--json"];
        if !flag.is_empty() {
            args.push(&flag);
        }
        let o = flash(&args);
        assert!(o.status.success(), "{}: {}", image.display(), stderr(&o));
        let j = json(&o);
        assert_eq!(j["map_source"], source, "{}", image.display());
        if source == "scan" && *image != c.img {
            // A stream is flashed as it is decoded, beside a scan of a second decoder.
            assert!(
                j["stream_notes"].to_string().contains("second decoder"),
                "{j}"
            );
            assert_eq!(
                j["bytes_read"],
                128 * MIB,
                "the flash decodes the stream once"
            );
        }
        if source == "stream" {
            // Decided as it went by: most of the sample's free space is skipped (a full map
            // skips 110 MiB of it), and what was learned is said.
            let skipped = j["stream_skipped"].as_u64().unwrap();
            assert!(skipped > 100 * MIB, "{j}");
            assert!(
                j["stream_notes"].to_string().contains("partition 2: ext4"),
                "{j}"
            );
            assert_eq!(j["bytes_read"], 128 * MIB, "a stream is read once, whole");
        }
        assert_eq!(j["targets"].as_array().unwrap().len(), 2);
        c.assert_restored(&reused);
        c.assert_restored(&fresh);
        let m = std::fs::metadata(&fresh).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.len(), 128 * MIB);
        assert!(
            m.blocks() * 512 < 48 * MIB,
            "a new file target holds holes where nothing is mapped"
        );
    }
    // --no-bmap writes every byte.
    let all = c.path("all.img");
    let o = flash(&[&c.img, &all, &"--no-bmap", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["map_source"], "everything");
    assert_eq!(sha(&all), sha(&c.img));
}

/// A stream whose ext4 keeps its tables in several flex groups: the scan beside the flash
/// ends only at the last one, after the earlier groups' inode tables have gone by. Their
/// spare blocks (and the reserved descriptor copies, the uninitialised bitmaps) are skipped
/// as they pass on the scan's hints, so the flash writes what the tight map keeps, not the
/// whole tables; the target holds every mapped byte.
#[test]
fn a_stream_skips_spare_inode_tables_as_they_pass() {
    if !have_all(&["mkfs.ext4", "gzip", "e2fsck"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("c");
    std::fs::create_dir_all(&content).unwrap();
    for i in 0..30u64 {
        random_file(&content.join(format!("f{i}")), 200_000, 500 + i);
    }
    let img = dir.path().join("e.img");
    sh(&format!(
        "truncate -s 256M '{i}' && mkfs.ext4 -q -F -b 4096 -g 8192 -G 2 -N 16384 -d '{c}' '{i}' \
         && gzip -k -1 '{i}'",
        i = img.display(),
        c = content.display()
    ));
    let map = blockwise::report::inspect_path(&img)
        .unwrap()
        .usage
        .unwrap();
    let left_out: u64 = map.parts.iter().map(|p| p.metadata_left_out).sum();
    assert!(left_out > 4 * MIB, "{left_out} bytes left out");
    let target = dir.path().join("t.img");
    let o = flash(&[&dir.path().join("e.img.gz"), &target, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    let written = j["targets"][0]["written"].as_u64().unwrap();
    assert!(
        written <= map.mapped + MIB,
        "wrote {written} bytes where the map keeps {}: spare tables written: {j}",
        map.mapped
    );
    let (a, b) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(&target).unwrap(),
    );
    for e in map.used.iter() {
        let r = e.start as usize..e.end as usize;
        assert!(
            a[r.clone()] == b[r],
            "mapped bytes {}..{} differ",
            e.start,
            e.end
        );
    }
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// A stream whose ext bitmap calls a file's blocks free (checksums recomputed, so nothing but
/// the cross-check of the skip rule sees it): flashed as it is decoded beside the scan, the
/// file's blocks are on the target all the same.
#[test]
fn a_stream_whose_bitmap_frees_a_file_in_use_still_gets_the_file_written() {
    if !have_all(&["mkfs.ext4", "debugfs", "gzip"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext.img");
    let data = dir.path().join("data.bin");
    random_file(&data, 3 * MIB, 77);
    sh(&format!(
        "truncate -s 64M '{i}' && mkfs.ext4 -q -F -b 4096 '{i}' && \
         debugfs -w -R 'write {d} f' '{i}' >/dev/null 2>&1",
        i = img.display(),
        d = data.display()
    ));
    let blocks: Vec<u64> = sh(&format!(
        "debugfs -R 'blocks /f' '{}' 2>/dev/null",
        img.display()
    ))
    .split_whitespace()
    .map(|b| b.parse().unwrap())
    .collect();
    assert_eq!(blocks.len(), 768, "3 MiB in 4 KiB blocks");
    let cmds = dir.path().join("free.cmds");
    std::fs::write(
        &cmds,
        blocks
            .iter()
            .map(|b| format!("freeb {b} 1\n"))
            .collect::<String>(),
    )
    .unwrap();
    sh(&format!(
        "debugfs -w -f '{}' '{}' >/dev/null 2>&1 && gzip -1 -k '{}'",
        cmds.display(),
        img.display(),
        img.display()
    ));
    let target = dir.path().join("card.img");
    random_file(&target, 64 * MIB, 9);
    let gz = dir.path().join("ext.img.gz");
    let o = flash(&[&gz, &target, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["map_source"], "scan", "{j}");
    assert!(
        j["warnings"]
            .to_string()
            .contains("marked free in the block bitmaps"),
        "the scan says what the bitmap got wrong: {j}"
    );
    let (a, b) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(&target).unwrap(),
    );
    for blk in blocks {
        let r = (blk * 4096) as usize..((blk + 1) * 4096) as usize;
        assert!(
            a[r.clone()] == b[r],
            "block {blk} of the file is not on the target"
        );
    }
}

/// The zram device `/sys/block/zram0`, sized for a test and reset after: a real block device
/// that is not removable (memory, no USB or SD transport). `None` when there is none, or it
/// is in use (sized already: swap, or someone else's).
struct Zram {
    dev: PathBuf,
}

impl Zram {
    fn take(size: u64) -> Option<Zram> {
        let sys = Path::new("/sys/block/zram0");
        let unused = std::fs::read_to_string(sys.join("disksize")).is_ok_and(|s| s.trim() == "0");
        if !unused || !Path::new("/dev/zram0").exists() {
            return None;
        }
        std::fs::write(sys.join("disksize"), size.to_string()).ok()?;
        Some(Zram {
            dev: PathBuf::from("/dev/zram0"),
        })
    }
}

impl Drop for Zram {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/block/zram0/reset", "1");
    }
}

/// A real disk that is not removable is refused without `--force` (every byte unchanged), and
/// written with it.
#[test]
fn a_non_removable_disk_is_refused_without_force() {
    let Some(c) = card() else { return };
    let Some(z) = Zram::take(160 * MIB) else {
        skip(
            Need::Oracle,
            "no unused zram device (/dev/zram0 with disksize 0) to stand for an internal disk",
        );
        return;
    };
    let zst = c.archive("card.img.zst");
    let old = c.reused("old.bin", 160, 21);
    sh(&format!(
        "dd if='{}' of='{}' bs=4M oflag=direct status=none",
        old.display(),
        z.dev.display()
    ));
    let before = sha(&z.dev);
    assert_eq!(before, sha(&old));
    let o = flash(&[&zst, &z.dev, &"--yes"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("not removable"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    assert_eq!(sha(&z.dev), before, "the refused disk changed");
    // --force is what lets it be written; it then holds the card.
    let o = flash(&[&zst, &z.dev, &"--yes", &"--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let copy = c.path("written.img");
    sh(&format!(
        "dd if='{}' of='{}' bs=4M count=32 status=none",
        z.dev.display(),
        copy.display()
    ));
    c.assert_restored(&copy);
}

#[test]
fn refusals_leave_the_target_unchanged() {
    let Some(c) = card() else { return };
    if !have_all(&["mkfs.ext4", "mount"]) {
        return;
    }
    let zst = c.archive("card.img.zst");
    let check = |target: &Path, dev: &str, extra: &[&str], why: &str| {
        let before = sha(target);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&zst, &dev];
        for e in extra {
            args.push(e);
        }
        let o = flash(&args);
        assert_eq!(o.status.code(), Some(4), "{why}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("nothing was written"),
            "{why}: {}",
            stderr(&o)
        );
        assert_eq!(sha(target), before, "{why}: the target changed");
        stderr(&o)
    };

    // No terminal and no --yes.
    let a = c.reused("a.bin", 160, 2);
    let la = Loop::attach(&a).unwrap();
    let e = check(&a, &la.dev, &[], "no terminal");
    assert!(e.contains("--yes"), "{e}");

    // Too small for the image's last mapped byte.
    let small = c.reused("small.bin", 32, 3);
    let ls = Loop::attach(&small).unwrap();
    let e = check(&small, &ls.dev, &["--yes"], "too small");
    assert!(e.contains("too small"), "{e}");

    // Mounted: a filesystem on the whole disk.
    let m = c.path("m.bin");
    sh(&format!(
        "truncate -s 160M '{}' && mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 '{}'",
        m.display(),
        m.display()
    ));
    let lm = Loop::attach(&m).unwrap();
    {
        let _mnt = Mount::new("mount", &lm.dev);
        let e = check(&m, &lm.dev, &["--yes"], "mounted");
        assert!(e.contains("mounted"), "{e}");
    }

    // One partition mounted (a card with partitions, the root mounted).
    let p = c.path("p.bin");
    std::fs::copy(&c.img, &p).unwrap();
    let lp = Loop::attach_with(&p, &["-P"]).unwrap();
    // No udev here: make the partitions' nodes from what the kernel says.
    let name = lp.dev.trim_start_matches("/dev/");
    sh(&format!(
        "partx -a {} 2>/dev/null || true; for d in /sys/block/{name}/{name}p*/dev; do n=$(basename $(dirname $d)); \
         [ -e /dev/$n ] || mknod /dev/$n b $(cut -d: -f1 $d) $(cut -d: -f2 $d); done",
        lp.dev
    ));
    {
        let _mnt = Mount::new("mount", &format!("{}p2", lp.dev));
        let e = check(&p, &lp.dev, &["--yes"], "a partition mounted");
        assert!(e.contains("mounted"), "{e}");
    }

    // The disk holding the image file: the image lives on a filesystem on the target.
    let h = c.path("h.bin");
    sh(&format!(
        "truncate -s 160M '{}' && mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 '{}'",
        h.display(),
        h.display()
    ));
    let lh = Loop::attach(&h).unwrap();
    {
        let mnt = Mount::new("mount", &lh.dev);
        let inner = mnt.path().join("card.img.zst");
        std::fs::copy(&zst, &inner).unwrap();
        // Read-only from here, so that nothing but a flash could change the disk.
        sh(&format!("mount -o remount,ro '{}'", mnt.path().display()));
        let before = sha(&h);
        let o = blockwise()
            .args(["flash", "--yes"])
            .arg(&inner)
            .arg(&lh.dev)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("holds the image"), "{}", stderr(&o));
        sh("sync");
        assert_eq!(sha(&h), before);
        drop(mnt);
    }

    // A partition instead of the disk, the image itself as a file target, a target twice.
    let e = check(&p, &format!("{}p1", lp.dev), &["--yes"], "a partition");
    assert!(e.contains("not a whole disk"), "{e}");
    let before = sha(&zst);
    let o = flash(&[&zst, &zst]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(sha(&zst), before);
    let e = check(&a, &la.dev, &["--yes", la.dev.as_str()], "given twice");
    assert!(e.contains("given twice"), "{e}");
    // A target that is neither a file nor a block device.
    let o = flash(&[&zst, &"/dev/null", &"--yes"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}

/// A loop device over a file on a tmpfs too small for it: writes past the tmpfs's room fail.
struct Cramped {
    mnt: tempfile::TempDir,
    lp: Option<Loop>,
}

impl Cramped {
    fn new(room_mib: u64, size_mib: u64) -> Option<Cramped> {
        let mnt = tempfile::tempdir().unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={room_mib}M tmpfs '{}'",
            mnt.path().display()
        ));
        let f = mnt.path().join("card.bin");
        sh(&format!("truncate -s {size_mib}M '{}'", f.display()));
        let lp = Loop::attach(&f)?;
        Some(Cramped { mnt, lp: Some(lp) })
    }
    fn dev(&self) -> &str {
        &self.lp.as_ref().unwrap().dev
    }
    fn head(&self) -> Vec<u8> {
        let mut b = vec![0u8; MIB as usize];
        use std::io::Read;
        std::fs::File::open(self.mnt.path().join("card.bin"))
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        b
    }
}

impl Drop for Cramped {
    fn drop(&mut self) {
        self.lp.take();
        let _ = Command::new("umount").arg(self.mnt.path()).status();
    }
}

#[test]
fn failures_say_what_state_the_card_is_in() {
    let Some(c) = card() else { return };
    if !have_all(&["gzip", "zstd"]) {
        return;
    }
    let zst = c.archive("card.img.zst");
    let not_ok = |o: &Output, what: &str| {
        let e = stderr(o);
        assert!(!o.status.success(), "{what}: {e}");
        assert!(!e.contains("OK:"), "{what}: a success line: {e}");
        assert!(e.contains("no partition table"), "{what}: {e}");
        e
    };

    // A corrupted frame inside a mapped range of the archive.
    let bad = c.path("bad.img.zst");
    let mut data = std::fs::read(&zst).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&bad, &data).unwrap();
    std::fs::copy(c.path("card.img.zst.bmap"), c.path("bad.img.zst.bmap")).unwrap();
    let t = c.reused("t1.img", 128, 4);
    let o = flash(&[&bad, &t]);
    not_ok(&o, "corrupt frame");
    assert!(zero(&ends(&t).0), "the head is zeroed");

    // A bmap range whose checksum does not match: that range is never written.
    let raw = c.path("raw.img");
    std::fs::copy(&c.img, &raw).unwrap();
    let bm = c.path("raw.img.bmap");
    let o = blockwise()
        .arg("bmap")
        .arg(&raw)
        .arg("-o")
        .arg(&bm)
        .output()
        .unwrap();
    assert!(o.status.success());
    let b = blockwise::bmap::parse(&std::fs::read(&bm).unwrap()).unwrap();
    // The largest range past the head (the head is zeroed first, whatever happens).
    let r = b
        .ranges
        .iter()
        .filter(|r| r.first * b.block_size >= MIB)
        .max_by_key(|r| r.last - r.first)
        .unwrap();
    let at = ((r.first + r.last) / 2 * b.block_size) as usize;
    let mut img = std::fs::read(&raw).unwrap();
    img[at] ^= 1;
    std::fs::write(&raw, &img).unwrap();
    let t = c.reused("t2.img", 128, 5);
    let before = std::fs::read(&t).unwrap();
    let o = flash(&[&raw, &t]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = not_ok(&o, "bmap mismatch");
    assert!(e.contains("does not match its bmap"), "{e}");
    let after = std::fs::read(&t).unwrap();
    let (s, end) = (
        (r.first * b.block_size) as usize,
        ((r.last + 1) * b.block_size) as usize,
    );
    assert!(
        after[s..end] == before[s..end],
        "nothing of the bad range was written"
    );
    assert!(zero(&after[..MIB as usize]));

    // A truncated gzip stream.
    let gz = c.path("cut.img.gz");
    sh(&format!(
        "gzip -c '{}' | head -c 3000000 > '{}'",
        c.img.display(),
        gz.display()
    ));
    let t = c.reused("t3.img", 128, 6);
    let o = flash(&[&gz, &t]);
    not_ok(&o, "truncated gzip");
    assert!(zero(&ends(&t).0));
    // A truncated xz stream (the sample's own .xz, cut).
    let xz = c.path("cut.img.xz");
    let whole = std::fs::read(repo().join("samples/card.img.xz")).unwrap();
    std::fs::write(&xz, &whole[..whole.len() * 2 / 3]).unwrap();
    let t = c.reused("t4.img", 128, 16);
    let o = flash(&[&xz, &t]);
    not_ok(&o, "truncated xz");
    assert!(zero(&ends(&t).0));

    // A card that fails mid-write (its backing tmpfs fills up), alone and beside a good one.
    let Some(cr) = Cramped::new(8, 160) else {
        return;
    };
    let o = flash(&[&zst, &cr.dev(), &"--yes"]);
    not_ok(&o, "failing card");
    assert!(zero(&cr.head()), "the failing card's head is zeroed");
    let Some(cr) = Cramped::new(8, 160) else {
        return;
    };
    let good = c.reused("good.bin", 160, 7);
    let lg = Loop::attach(&good).unwrap();
    let o = flash(&[&zst, &lg.dev, &cr.dev(), &"--yes", &"--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["ok"], false);
    assert_eq!(j["targets"][0]["ok"], true);
    assert_eq!(j["targets"][1]["ok"], false);
    assert!(j["targets"][1]["error"]["message"].as_str().is_some());
    assert!(zero(&cr.head()));
    drop(lg);
    c.assert_restored(&good);
}

#[test]
fn sigint_mid_write_exits_130_with_no_table() {
    let Some(c) = card() else { return };
    let cg = Path::new("/sys/fs/cgroup/blkio");
    if !cg.join("cgroup.procs").exists() {
        skip(Need::Oracle, "no blkio cgroup (v1) to slow the card down");
        return;
    }
    let t = c.reused("slow.bin", 160, 8);
    let Some(lp) = Loop::attach(&t) else { return };
    let mm = sh(&format!("lsblk -dno MAJ:MIN {}", lp.dev))
        .trim()
        .to_string();
    let group = cg.join(format!("blockwise-test-{}", std::process::id()));
    std::fs::create_dir_all(&group).unwrap();
    std::fs::write(
        group.join("blkio.throttle.write_bps_device"),
        format!("{mm} 4194304"),
    )
    .unwrap();
    // Every byte written (--no-bmap) at 4 MB/s: long enough to be interrupted.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}/cgroup.procs'; exec '{}' flash --no-bmap --yes '{}' '{}'",
            group.display(),
            env!("CARGO_BIN_EXE_blockwise"),
            c.img.display(),
            lp.dev
        ))
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    sh(&format!("kill -INT {}", child.id()));
    let o = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir(&group);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(
        e.contains("interrupted") && e.contains("no partition table"),
        "{e}"
    );
    drop(lp);
    assert!(zero(&ends(&t).0), "an interrupted card has no table");
}

#[test]
fn delta_rewrites_only_what_changed() {
    let Some(c) = card() else { return };
    let zst = c.archive("card.img.zst");
    let t = c.reused("d.bin", 160, 9);
    let Some(lp) = Loop::attach(&t) else { return };
    let o = flash(&[&zst, &lp.dev, &"--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = flash(&[&zst, &lp.dev, &"--yes", &"--delta", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    let mapped = j["mapped_bytes"].as_u64().unwrap();
    let r = &j["targets"][0];
    // The card holds the image already: nothing is written, not even the head.
    assert_eq!(r["written"].as_u64().unwrap(), 0, "{r}");
    assert_eq!(r["zeroed"].as_u64().unwrap(), 0, "{r}");
    assert_eq!(r["unchanged"].as_u64().unwrap(), mapped, "{r}");

    // Change one file of the FAT partition in place: only its blocks are written.
    let changed = c.path("changed.img");
    std::fs::copy(&c.img, &changed).unwrap();
    let files = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mdir -b -i '{}@@{}' ::/ | head -20",
        changed.display(),
        c.parts[0].0
    ));
    let name = files
        .lines()
        .find(|l| !l.ends_with('/') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let local = c.path("file");
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i '{}@@{}' '{name}' '{}'",
        changed.display(),
        c.parts[0].0,
        local.display()
    ));
    let len = std::fs::metadata(&local).unwrap().len();
    sh(&format!(
        "printf 'X' | dd of='{}' bs=1 seek=0 conv=notrunc status=none",
        local.display()
    ));
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -o -i '{}@@{}' '{}' '{name}'",
        changed.display(),
        c.parts[0].0,
        local.display()
    ));
    let o = flash(&[&changed, &lp.dev, &"--yes", &"--delta", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w = json(&o)["targets"][0]["written"].as_u64().unwrap();
    eprintln!("changed a {len}-byte file: wrote {w} bytes besides nothing else");
    assert!(
        w > MIB && w <= MIB + len.div_ceil(4096) * 4096 + 64 * 1024,
        "{w}"
    );
    drop(lp);
    let mut c2 = c;
    c2.img = changed;
    c2.assert_restored(&t);
}

#[test]
fn discard_turns_unmapped_ranges_into_holes() {
    let Some(c) = card() else { return };
    use std::os::unix::fs::MetadataExt;
    let zst = c.archive("card.img.zst");
    let t = c.reused("sparse.bin", 160, 11);
    let before = std::fs::metadata(&t).unwrap().blocks() * 512;
    let Some(lp) = Loop::attach(&t) else { return };
    let o = flash(&[&zst, &lp.dev, &"--yes", &"--discard", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    let discarded = j["targets"][0]["discarded"].as_u64().unwrap();
    drop(lp);
    let after = std::fs::metadata(&t).unwrap().blocks() * 512;
    eprintln!("allocated {before} -> {after}, discarded {discarded}");
    assert!(discarded > 100 * MIB, "{discarded}");
    assert!(after < before - 100 * MIB, "{before} -> {after}");
    c.assert_restored(&t);
}

/// A stream that is not what its headers suggest (a bzip2 whose MBR ends at 3 MiB of an 8 MiB
/// image) is flashed again, sized first: the card gets the image's map, nothing else.
#[test]
fn a_stream_that_misleads_its_plan_is_flashed_again() {
    if !have_all(&["sfdisk", "bzip2"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    if !fixture(&format!(
        "truncate -s 8M {dir}/long.img && echo 'start=2048, size=4096, type=83' | \
         sfdisk -q {dir}/long.img && head -c 65536 /dev/urandom | \
         dd of={dir}/long.img bs=64K seek=20 conv=notrunc status=none && \
         bzip2 -k {dir}/long.img"
    )) {
        return;
    }
    let t = d.path().join("t.img");
    random_file(&t, 8 * MIB, 12);
    let old = std::fs::read(&t).unwrap();
    let o = flash(&[&d.path().join("long.img.bz2"), &t]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reading it again"), "{}", stderr(&o));
    let img = std::fs::read(d.path().join("long.img")).unwrap();
    let got = std::fs::read(&t).unwrap();
    assert!(got[..3 * MIB as usize] == img[..3 * MIB as usize]);
    assert!(
        got[3 * MIB as usize..] == old[3 * MIB as usize..],
        "past the last partition nothing is written"
    );
}

/// A checksum file beside the image is checked before any table is written.
#[test]
fn a_checksum_file_vouches_for_the_image() {
    let Some(c) = card() else { return };
    let zst = c.archive("card.img.zst");
    let sum = sha(&zst);
    std::fs::write(c.path("SHA256SUMS"), format!("{sum}  card.img.zst\n")).unwrap();
    let t = c.path("ok.img");
    let o = flash(&[&zst, &t, &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["checksum_file"]["ok"], true, "{j}");
    assert!(j["checksum_file"]["file"]
        .as_str()
        .unwrap()
        .ends_with("SHA256SUMS"));
    c.assert_restored(&t);
    // The wrong sum: stopped before the head, exit 3.
    let wrong: String = sum.chars().rev().collect();
    std::fs::write(c.path("SHA256SUMS"), format!("{wrong}  card.img.zst\n")).unwrap();
    let t = c.reused("bad.img", 128, 13);
    let o = flash(&[&zst, &t]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("SHA256SUMS") && e.contains("no partition table"),
        "{e}"
    );
    assert!(zero(&ends(&t).0));
}

/// `--gpt-to-end` on a larger card: `sgdisk -v` finds nothing wrong; `--check-capacity` on an
/// honest card passes and leaves nothing behind.
/// A 48 MiB GPT image made by sgdisk (an ESP and a Linux partition) in `dir`; `None` after a
/// skip if sgdisk fails.
fn gpt_image(dir: &Path) -> Option<PathBuf> {
    let img = dir.join("gpt.img");
    fixture(&format!(
        "truncate -s 48M '{0}' && sgdisk -o -n 1:2048:+16M -t 1:ef00 -n 2:0:0 -t 2:8300 '{0}' >/dev/null",
        img.display()
    ))
    .then_some(img)
}

#[test]
fn gpt_to_end_and_capacity_on_a_larger_card() {
    if !(is_root() && have_all(&["sgdisk", "losetup"])) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let Some(img) = gpt_image(d.path()) else {
        return;
    };
    let t = d.path().join("card.bin");
    random_file(&t, 96 * MIB, 14);
    let Some(lp) = Loop::attach(&t) else { return };
    let o = flash(&[
        &img,
        &lp.dev,
        &"--yes",
        &"--gpt-to-end",
        &"--check-capacity",
        &"--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let notes = json(&o)["notes"].to_string();
    assert!(notes.contains("capacity checked"), "{notes}");
    let v = Command::new("sgdisk")
        .args(["-v", &lp.dev])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.contains("No problems found"), "{out}");
    // Without it, the backup stays where the image ended.
    let o = flash(&[&img, &lp.dev, &"--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = Command::new("sgdisk")
        .args(["-v", &lp.dev])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&v.stdout).contains("No problems found"));
}

/// A counterfeit card: a FUSE file (`tests/data/fake-card.py`) that reports `size` bytes but
/// wraps every write past `real`'s size onto `real`, under a loop device. Unmounted when
/// dropped (after the caller detached its loop device).
struct FakeCard {
    mnt: PathBuf,
    daemon: std::process::Child,
}

impl FakeCard {
    fn mount(python: &str, real: &Path, mnt: &Path, size: u64) -> Option<FakeCard> {
        std::fs::create_dir_all(mnt).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fake-card.py");
        let daemon = Command::new(python)
            .arg(&script)
            .arg(real)
            .arg(mnt)
            .arg(size.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let card = FakeCard {
            mnt: mnt.to_path_buf(),
            daemon,
        };
        for _ in 0..100 {
            if card.path().exists() {
                return Some(card);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        skip(
            Need::Oracle,
            "the FUSE fake card did not appear (fake-card.py failed)",
        );
        None
    }

    fn path(&self) -> PathBuf {
        self.mnt.join("card")
    }
}

impl Drop for FakeCard {
    fn drop(&mut self) {
        // Root unmounts a FUSE file system like any other; the daemon then exits.
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// `--check-capacity` on a card that lies about its size (it wraps its second half onto its
/// first, as counterfeit cards do; a loop device over a FUSE file that does so is the card):
/// refused before the image is written, and the card holds exactly what it held.
#[test]
fn a_fake_card_that_wraps_around_is_refused() {
    if !(is_root() && have_all(&["sgdisk", "losetup", "python3", "umount"])) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        skip(Need::Oracle, "no /dev/fuse");
        return;
    }
    // A python that has fusepy (Debian's python3-fusepy is for the system's python3).
    let import =
        "-cimport importlib.util as u; exit(not (u.find_spec('fusepy') or u.find_spec('fuse')))";
    let Some(python) = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p)
            .arg(import)
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        skip(Need::Oracle, "fusepy (python3-fusepy) is not installed");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let Some(img) = gpt_image(d.path()) else {
        return;
    };
    // 32 MiB of real flash that says it holds 64 MiB.
    let real = d.path().join("real.bin");
    random_file(&real, 32 * MIB, 15);
    let before = sha(&real);
    let Some(fake) = FakeCard::mount(python, &real, &d.path().join("mnt"), 64 * MIB) else {
        return;
    };
    let Some(card) = Loop::attach(&fake.path()) else {
        return;
    };
    let o = flash(&[&img, &card.dev, &"--yes", &"--check-capacity"]);
    drop(card);
    drop(fake);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("the card is fake"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        sha(&real),
        before,
        "the probed blocks were not all put back"
    );
}

/// VM disks flash like any image: a `.qcow2` (compressed clusters) and a dynamic `.vhdx` of
/// the card, made by qemu-img (a VMDK and a VDI: tests/container_vmdk.rs), onto reused cards through loop devices;
/// only the mapped blocks are written, each card passes the restore proof.
#[test]
fn vm_disks_onto_reused_cards() {
    let Some(c) = card() else { return };
    if !have("qemu-img") {
        skip(Need::Oracle, "qemu-img is needed to make the VM disks");
        return;
    }
    let cases = [("card.qcow2", "-O qcow2 -c"), ("card.vhdx", "-O vhdx")];
    for (i, (name, args)) in cases.into_iter().enumerate() {
        let vm = c.path(name);
        sh(&format!(
            "qemu-img convert -f raw {args} '{}' '{}'",
            c.img.display(),
            vm.display()
        ));
        let back = c.reused(&format!("sd{i}.bin"), 128, 40 + i as u64);
        let Some(lp) = Loop::attach(&back) else {
            return;
        };
        let o = flash(&[&vm, &lp.dev, &"--yes", &"--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["ok"], true, "{name}: {j}");
        let t = &j["targets"][0];
        assert_eq!(t["verified"], j["mapped_bytes"], "{name}: {j}");
        assert!(
            j["mapped_bytes"].as_u64().unwrap() < 40 * MIB,
            "{name}: {j}"
        );
        drop(lp);
        c.assert_restored(&back);
    }
}
