//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod damage;

use std::path::{Path, PathBuf};
use std::process::Command;

/// True if `tool` runs; otherwise prints why the calling test skips.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: `{tool}` is not installed");
    }
    ok
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        o.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled sample card image, unpacked into `dir`.
pub fn unpack_sample(dir: &Path) -> PathBuf {
    let xz = std::fs::read(repo().join("samples/card.img.xz")).expect("sample");
    let mut dec = liblzma::read::XzDecoder::new(&xz[..]);
    let out = dir.join("card.img");
    let mut f = std::fs::File::create(&out).unwrap();
    std::io::copy(&mut dec, &mut f).unwrap();
    out
}

/// `blkid -p -o udev` of a file, as key/value pairs.
pub fn blkid(path: &Path, offset: Option<u64>) -> Vec<(String, String)> {
    let off = offset.map(|o| format!("-O {o}")).unwrap_or_default();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("blkid -p -o udev {off} '{}'", path.display()))
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Value of `key` in blkid output.
pub fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The shared corpus of real images: `$BLOCKWISE_CORPUS`, else `shared/corpus` beside the
/// repository (where CI puts it), else the development machines' `/work/shared/corpus`.
pub fn corpus() -> PathBuf {
    if let Some(p) = std::env::var_os("BLOCKWISE_CORPUS") {
        return PathBuf::from(p);
    }
    let beside = repo().join("../shared/corpus");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/corpus")
}

/// A loop device attached to a file; detached on drop.
pub struct Loop {
    /// `/dev/loopN`.
    pub dev: String,
}

impl Loop {
    /// Attaches `file` read-write; `None` (with a printed reason) if loop devices are
    /// unavailable (not root, no loop module).
    pub fn attach(file: &Path) -> Option<Loop> {
        Self::losetup(file, &[])
    }

    fn losetup(file: &Path, extra: &[&str]) -> Option<Loop> {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .args(extra)
            .arg(file)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!(
                "SKIP: cannot create a loop device: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Some(Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Writes `size` bytes of seeded pseudo-random garbage to `path` (a reused card's contents).
pub fn random_file(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// The restore proof's write step: copies only `map`'s ranges of `image` onto a same-sized
/// target pre-filled with random bytes, through a loop device. Returns the attached target
/// (keep it alive while checking) and its backing file's directory.
pub fn restore_onto_random(
    image: &Path,
    map: &blockwise::ExtentMap,
) -> Option<(tempfile::TempDir, Loop)> {
    use std::os::unix::fs::FileExt;
    let size = std::fs::metadata(image).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.img");
    random_file(&target, size, 0x5eed ^ size);
    let lp = Loop::attach(&target)?;
    let src = std::fs::File::open(image).unwrap();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .open(&lp.dev)
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for e in map.chunks(1 << 20) {
        let n = e.len() as usize;
        src.read_exact_at(&mut buf[..n], e.start).unwrap();
        dst.write_all_at(&buf[..n], e.start).unwrap();
    }
    dst.sync_all().unwrap();
    Some((dir, lp))
}

/// SHA-256 of every regular file under `root`, keyed by relative path.
pub fn tree_hashes(root: &Path) -> std::collections::BTreeMap<String, String> {
    let out = sh(&format!(
        "cd '{}' && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
        root.display()
    ));
    out.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.to_string(), h.to_string()))
        .collect()
}

impl Loop {
    /// Attaches `len` bytes of `file` from `offset` (one partition) read-only.
    pub fn attach_offset(file: &Path, offset: u64, len: u64) -> Option<Loop> {
        let (o, l) = (offset.to_string(), len.to_string());
        Self::losetup(file, &["-r", "-o", &o, "--sizelimit", &l])
    }
}

/// Undoes libblkid's `\xHH` escaping (as in `ID_FS_LABEL_ENC`) and reads the bytes as UTF-8.
pub fn blkid_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The restore proof's check step for a two-partition card like the bundled sample (FAT boot,
/// ext4 root): everything before the first partition is identical, both filesystems check
/// clean, and every file of `restored` reads back identical to `original`'s.
/// `parts` are (start, size) in bytes. Needs root, loop devices, mtools, fsck.vfat, e2fsck.
pub fn assert_card_equivalent(original: &Path, restored: &Path, parts: &[(u64, u64); 2]) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let head = |p: &Path| {
        let mut b = vec![0u8; parts[0].0 as usize];
        std::fs::File::open(p).unwrap().read_exact(&mut b).unwrap();
        b
    };
    assert!(
        head(original) == head(restored),
        "bootloader area before the first partition differs"
    );

    // FAT boot partition: fsck clean, files identical.
    let (p1, p1_len) = parts[0];
    let fat = Loop::attach_offset(restored, p1, p1_len).expect("loop device");
    let fsck = Command::new("fsck.vfat")
        .args(["-n", &fat.dev])
        .output()
        .unwrap();
    drop(fat);
    assert!(
        fsck.status.success(),
        "fsck.vfat: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let fat_files = |image: &Path, out: &Path| {
        std::fs::create_dir_all(out).unwrap();
        sh(&format!(
            "MTOOLS_SKIP_CHECK=1 mcopy -s -n -i '{}@@{p1}' ::/ '{}'",
            image.display(),
            out.display()
        ));
        tree_hashes(out)
    };
    let fa = fat_files(original, &dir.path().join("fat-a"));
    assert!(!fa.is_empty());
    assert_eq!(
        fa,
        fat_files(restored, &dir.path().join("fat-b")),
        "FAT files differ"
    );

    // ext4 root: e2fsck clean, files identical through read-only mounts.
    let (p2, p2_len) = parts[1];
    let ext = Loop::attach_offset(restored, p2, p2_len).expect("loop device");
    let fsck = Command::new("e2fsck")
        .args(["-fn", &ext.dev])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let ext_files = |dev: &str, name: &str| {
        let mnt = dir.path().join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&format!("mount -o ro,noload {dev} '{}'", mnt.display()));
        let h = tree_hashes(&mnt);
        sh(&format!("umount '{}'", mnt.display()));
        h
    };
    let hb = ext_files(&ext.dev, "mnt-b");
    drop(ext);
    let orig = Loop::attach_offset(original, p2, p2_len).expect("loop device");
    let ha = ext_files(&orig.dev, "mnt-a");
    assert!(ha.len() > 3);
    assert_eq!(ha, hb, "ext4 files differ");
}

/// Builds raw MODE1/2352 sectors around 2048-byte user data (sync, header, data, zero EDC/ECC).
pub fn to_raw_mode1(iso: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (lba, s) in iso.chunks(2048).enumerate() {
        let mut sec = vec![0u8; 2352];
        sec[..12].copy_from_slice(&[
            0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
        ]);
        let a = lba + 150;
        let bcd = |v: usize| ((v / 10) << 4 | (v % 10)) as u8;
        sec[12] = bcd(a / 75 / 60);
        sec[13] = bcd(a / 75 % 60);
        sec[14] = bcd(a % 75);
        sec[15] = 1;
        sec[16..16 + s.len()].copy_from_slice(s);
        out.extend_from_slice(&sec);
    }
    out
}

/// The bytes of a fresh `mib` MiB image made by `mkfs` (`{img}` stands for its path), or
/// `None` (with the reason printed) when `tool` is not installed.
pub fn fresh_image(tool: &str, mkfs: &str, mib: u64) -> Option<Vec<u8>> {
    if !have(tool) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fresh.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    sh(&mkfs.replace("{img}", &img.display().to_string()));
    Some(std::fs::read(&img).unwrap())
}
