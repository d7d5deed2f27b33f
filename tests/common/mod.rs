//! Helpers shared by the integration tests, and the one way a test skips.
//!
//! A test that needs something it cannot make itself (a program, root, a loop device, a FUSE
//! or kernel mount, a corpus file) asks for it here: [`have`], [`is_root`], [`Loop::attach`],
//! [`corpus_file`], or [`skip`] for anything else. Without the variables below such a test
//! prints `SKIP: why` and passes, so a developer without the tools can still run the suite.
//! CI (`.ci/run`) sets them, and then the same call fails the test: a proof whose oracle is
//! missing must not pass without having run.
//!
//! - `BLOCKWISE_REQUIRE_ORACLES=1`: a missing tool, root, loop device, mount or FUSE fails.
//! - `BLOCKWISE_REQUIRE_CORPUS=1`: a missing file of the shared corpus fails.
#![allow(dead_code)]

pub mod damage;
pub mod proxy;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Under this variable a missing tool, root, loop device, mount or FUSE fails the test.
pub const REQUIRE_ORACLES: &str = "BLOCKWISE_REQUIRE_ORACLES";
/// Under this variable a missing file of the shared corpus fails the test.
pub const REQUIRE_CORPUS: &str = "BLOCKWISE_REQUIRE_CORPUS";

/// What a test needs and cannot make itself; each kind has its own variable, because CI always
/// has the tools (it installs them) but may run where the corpus was not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A program the test builds fixtures with or checks against, or what the machine must
    /// allow: root, loop devices, mounts, FUSE, a kernel driver.
    Oracle,
    /// A file of the shared corpus ([`corpus`]).
    Corpus,
}

impl Need {
    /// The variable that makes this need a requirement.
    pub fn variable(self) -> &'static str {
        match self {
            Need::Oracle => REQUIRE_ORACLES,
            Need::Corpus => REQUIRE_CORPUS,
        }
    }

    /// True when the variable is set to anything but empty or `0`.
    pub fn required(self) -> bool {
        std::env::var(self.variable()).is_ok_and(|v| !v.is_empty() && v != "0")
    }
}

/// The one way a test skips: prints `SKIP: reason` (the caller then returns or leaves out the
/// part that needed it), or panics when the need's variable is set.
#[track_caller]
pub fn skip(need: Need, reason: impl std::fmt::Display) {
    let var = need.variable();
    if need.required() {
        panic!("REQUIRED, NOT SKIPPED: {reason} ({var}=1 makes this a failure; provide it, or unset {var} to skip)");
    }
    eprintln!("SKIP: {reason} (set {var}=1 to make this a failure)");
}

/// True if `tool` is on the PATH; otherwise [`skip`]s (a failure under the variable).
#[track_caller]
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v '{tool}'"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(Need::Oracle, format_args!("`{tool}` is not installed"));
    }
    ok
}

/// True if every one of `tools` is installed (each missing one is named).
#[track_caller]
pub fn have_all(tools: &[&str]) -> bool {
    // Every missing tool is reported, not only the first (`all` would stop there).
    let found: Vec<bool> = tools.iter().map(|t| have(t)).collect();
    found.iter().all(|&f| f)
}

/// True when running as root (loop devices, mounts and FUSE need it); otherwise [`skip`]s.
#[track_caller]
pub fn is_root() -> bool {
    // `id -u` rather than geteuid(): the tests need no unsafe code.
    let ok = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !ok {
        skip(
            Need::Oracle,
            "not root (loop devices, mounts and FUSE need it)",
        );
    }
    ok
}

/// Runs a shell command that makes a fixture with an installed tool; false (after a [`skip`])
/// if it fails, for tools that may refuse on some machines (a kernel or sandbox limit).
#[track_caller]
pub fn fixture(cmd: &str) -> bool {
    match Command::new("sh").arg("-c").arg(cmd).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            skip(
                Need::Oracle,
                format_args!(
                    "`{cmd}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            false
        }
        Err(e) => {
            skip(Need::Oracle, format_args!("cannot run `{cmd}`: {e}"));
            false
        }
    }
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
/// `.ci/run` looks in the same places and exports what it found as `BLOCKWISE_CORPUS`.
/// Tests reach files through [`corpus_file`], which skips (or fails) when one is absent.
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

/// `rel` inside the [`corpus`] if it exists; otherwise [`skip`]s (a failure under
/// `BLOCKWISE_REQUIRE_CORPUS`). Works for files and directories alike.
#[track_caller]
pub fn corpus_file(rel: &str) -> Option<PathBuf> {
    let p = corpus().join(rel);
    if p.exists() {
        return Some(p);
    }
    skip(
        Need::Corpus,
        format_args!(
            "corpus file {rel} is absent (looked in {})",
            corpus().display()
        ),
    );
    None
}

/// Checks a scored run against its pinned list of expected misses (name, one-line reason): a
/// new miss and a fixed one both fail, so a score can neither slip nor improve unnoticed.
/// `misses` are (name, what differed) as the run found them.
#[track_caller]
pub fn assert_misses(what: &str, misses: &[(String, String)], expected: &[(&str, &str)]) {
    let new: Vec<String> = misses
        .iter()
        .filter(|(n, _)| !expected.iter().any(|(e, _)| e == n))
        .map(|(n, d)| format!("  new miss {n}: {d}"))
        .collect();
    let fixed: Vec<String> = expected
        .iter()
        .filter(|(e, _)| !misses.iter().any(|(n, _)| n == e))
        .map(|(e, why)| format!("  no longer a miss {e} (pinned because: {why})"))
        .collect();
    assert!(
        new.is_empty() && fixed.is_empty(),
        "{what}: the misses differ from the pinned list; fix the regression or update the list \
         (and any count quoted in README.md):\n{}",
        [new, fixed].concat().join("\n")
    );
}

/// An `.xz` file decompressed, or `None` if it cannot be read or decoded.
pub fn unxz(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    liblzma::read::XzDecoder::new(f)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// `KEY=VALUE` lines (as `blkid -o udev` prints them and util-linux's expected files hold them).
pub fn parse_udev(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The `blockwise` binary built with the tests.
pub fn blockwise() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blockwise"))
}

/// Deterministic xorshift64 (13, 7, 17), so mutation runs reproduce without an extra crate.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `len` bytes of seeded xorshift64 output: incompressible file contents for fixtures.
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&x.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A loop device attached to a file; detached on drop.
pub struct Loop {
    /// `/dev/loopN`.
    pub dev: String,
}

impl Loop {
    /// Attaches `file` read-write; `None` after a [`skip`] if loop devices are unavailable (not
    /// root, no loop module, no `losetup`).
    #[track_caller]
    pub fn attach(file: &Path) -> Option<Loop> {
        Self::attach_with(file, &[])
    }

    /// Attaches `file` read-only.
    #[track_caller]
    pub fn attach_read_only(file: &Path) -> Option<Loop> {
        Self::attach_with(file, &["-r"])
    }

    /// Attaches `len` bytes of `file` from `offset` (one partition) read-only.
    #[track_caller]
    pub fn attach_offset(file: &Path, offset: u64, len: u64) -> Option<Loop> {
        let (o, l) = (offset.to_string(), len.to_string());
        Self::attach_with(file, &["-r", "-o", &o, "--sizelimit", &l])
    }

    /// Attaches `file` with extra `losetup` options (e.g. `--sector-size 4096`).
    #[track_caller]
    pub fn attach_with(file: &Path, extra: &[&str]) -> Option<Loop> {
        let o = match Command::new("losetup")
            .args(["-f", "--show"])
            .args(extra)
            .arg(file)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                skip(Need::Oracle, format_args!("cannot run losetup: {e}"));
                return None;
            }
        };
        if !o.status.success() {
            skip(
                Need::Oracle,
                format_args!(
                    "cannot create a loop device ({extra:?}): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
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
    let mut x = XorShift(seed | 1);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            c.copy_from_slice(&x.next().to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Copies `map`'s ranges of `image` into `dst` at the same offsets (the restore proof's write
/// step: what a flasher given this map writes).
pub fn copy_mapped(image: &Path, dst: &std::fs::File, map: &blockwise::ExtentMap) {
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(image).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for e in map.chunks(1 << 20) {
        let n = e.len() as usize;
        src.read_exact_at(&mut buf[..n], e.start).unwrap();
        dst.write_all_at(&buf[..n], e.start).unwrap();
    }
    dst.sync_all().unwrap();
}

/// The restore proof without a device: `out` becomes a same-sized file of seeded garbage
/// (`seed`) with only `map`'s ranges of `image` written over it.
pub fn restore_to_file(image: &Path, map: &blockwise::ExtentMap, out: &Path, seed: u64) {
    random_file(out, std::fs::metadata(image).unwrap().len(), seed);
    let dst = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    copy_mapped(image, &dst, map);
}

/// The restore proof's write step: copies only `map`'s ranges of `image` onto a same-sized
/// target pre-filled with random bytes, through a loop device. Returns the attached target
/// (keep it alive while checking) and its backing file's directory; `None` after a [`skip`]
/// when no loop device can be had.
#[track_caller]
pub fn restore_onto_random(
    image: &Path,
    map: &blockwise::ExtentMap,
) -> Option<(tempfile::TempDir, Loop)> {
    let size = std::fs::metadata(image).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.img");
    random_file(&target, size, 0x5eed ^ size);
    let lp = Loop::attach(&target)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .open(&lp.dev)
        .unwrap();
    copy_mapped(image, &dst, map);
    Some((dir, lp))
}

/// A filesystem mounted at a fresh directory, unmounted on drop so a failing assertion leaves
/// no mount behind.
pub struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    /// Runs `{cmd} '{dev}' '{dir}'`, e.g. `Mount::new("mount -t ntfs-3g -o ro", dev)`.
    pub fn new(cmd: &str, dev: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        sh(&format!("{cmd} '{dev}' '{}'", dir.path().display()));
        Mount { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes in use as `df` sees them.
    pub fn df_used(&self) -> u64 {
        sh(&format!(
            "sync; df -B1 --output=used '{}' | tail -1",
            self.path().display()
        ))
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
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
/// `None` (after a [`skip`]) when `tool` is not installed.
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

/// Byte offset and length of the first two partitions of `img` (a card: boot and root), as
/// `sfdisk -J` reads its table.
pub fn first_two_partitions(img: &Path) -> [(u64, u64); 2] {
    let dump = sh(&format!("sfdisk -J '{}'", img.display()));
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let p = &v["partitiontable"]["partitions"];
    let part = |i: usize| {
        (
            p[i]["start"].as_u64().unwrap() * 512,
            p[i]["size"].as_u64().unwrap() * 512,
        )
    };
    [part(0), part(1)]
}

/// Asserts that `a` and `b` hold the same partition table (`sfdisk -d`, device names aside).
pub fn assert_same_table(a: &Path, b: &Path) {
    let table = |p: &Path| {
        sh(&format!("sfdisk -d '{}'", p.display()))
            .lines()
            .filter(|l| !l.starts_with("device:"))
            .map(|l| {
                l.split_once(':')
                    .map_or(l.to_string(), |(_, r)| r.to_string())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(table(a), table(b), "sfdisk -d differs");
}
