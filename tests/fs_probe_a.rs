//! Filesystem probes, group A (ext, FAT, exFAT, NTFS, XFS, btrfs, F2FS, swap).
//!
//! Three kinds of evidence: fixtures made with the real mkfs tools and cross-checked against
//! `blkid -p -o udev`; the util-linux blkid corpus with its expected outputs; and hostile input
//! (corrupted fields, truncation, byte-flip mutation) that must never panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockwise::fs::{self, FsInfo};
use blockwise::source::{MemSource, ReadAt};

type Probe = fn(&dyn ReadAt) -> blockwise::Result<Option<FsInfo>>;

/// Every probe this group owns, in `probe_all` order.
const PROBES: &[(&str, Probe)] = &[
    ("swap", fs::swap::probe),
    ("btrfs", fs::btrfs::probe),
    ("xfs", fs::xfs::probe),
    ("ext", fs::ext::probe),
    ("f2fs", fs::f2fs::probe),
    ("ntfs", fs::ntfs::probe),
    ("exfat", fs::exfat::probe),
    ("fat", fs::fat::probe),
];

/// First probe of this group that recognises `dev`.
fn probe_a(dev: &dyn ReadAt) -> Option<FsInfo> {
    for (name, p) in PROBES {
        match p(dev) {
            Ok(Some(i)) => return Some(i),
            Ok(None) => {}
            Err(e) => eprintln!("  {name}: error {e}"),
        }
    }
    None
}

fn corpus() -> PathBuf {
    PathBuf::from("/work/shared/corpus")
}

fn unxz(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    liblzma::read::XzDecoder::new(f).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Parses `KEY=VALUE` lines of `blkid -o udev`.
fn parse_udev(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Undoes blkid's `\xNN` escaping of `*_ENC` values.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Differences between our answer and blkid's on TYPE, LABEL, UUID (and VERSION /
/// FSBLOCKSIZE when `strict`). Empty = match.
fn compare(info: Option<&FsInfo>, exp: &BTreeMap<String, String>, strict: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let Some(info) = info else {
        return vec![format!("not recognised (blkid: {:?})", exp.get("ID_FS_TYPE"))];
    };
    let want_type = exp.get("ID_FS_TYPE").map(String::as_str);
    if want_type != Some(info.fs_type) {
        diffs.push(format!("TYPE {} vs blkid {:?}", info.fs_type, want_type));
    }
    let want_label = exp
        .get("ID_FS_LABEL_ENC")
        .map(|s| String::from_utf8_lossy(&unescape(s)).into_owned());
    // blkid prints raw label bytes; a non-UTF-8 codepage label cannot be compared textually.
    let label_comparable = want_label.as_ref().is_none_or(|l| !l.contains('\u{FFFD}'));
    if label_comparable && want_label != info.label {
        diffs.push(format!("LABEL {:?} vs blkid {:?}", info.label, want_label));
    }
    let want_uuid = exp.get("ID_FS_UUID").cloned();
    if want_uuid != info.uuid {
        diffs.push(format!("UUID {:?} vs blkid {:?}", info.uuid, want_uuid));
    }
    if strict {
        if let Some(v) = exp.get("ID_FS_VERSION") {
            if Some(v) != info.version.as_ref() {
                diffs.push(format!("VERSION {:?} vs blkid {v:?}", info.version));
            }
        }
        if let Some(v) = exp.get("ID_FS_FSBLOCKSIZE") {
            if Some(v.clone()) != info.block_size.map(|b| b.to_string()) {
                diffs.push(format!("FSBLOCKSIZE {:?} vs blkid {v:?}", info.block_size));
            }
        }
    }
    diffs
}

/// util-linux blkid corpus images for the types this group probes.
#[test]
fn corpus_util_linux_blkid() {
    let dir = corpus().join("util-linux/tests/ts/blkid/images-fs");
    let exp_dir = corpus().join("util-linux/tests/expected/blkid");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: corpus not present at {}", dir.display());
        return;
    };
    let wanted = [
        "ext", "jbd", "fat", "exfat", "ntfs", "xfs", "btrfs", "f2fs", "swap", "tuxonice",
    ];
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".img.xz").map(str::to_string))
        .filter(|n| wanted.iter().any(|w| n.starts_with(w) || n.starts_with("small-fat")))
        .collect();
    names.sort();
    let (mut total, mut ok) = (0, 0);
    let mut report = String::new();
    for name in &names {
        let Ok(text) = std::fs::read_to_string(exp_dir.join(format!("low-probe-{name}"))) else {
            continue;
        };
        let exp = parse_udev(&text);
        let Some(img) = unxz(&dir.join(format!("{name}.img.xz"))) else {
            continue;
        };
        let info = probe_a(&MemSource(img));
        let d = compare(info.as_ref(), &exp, true);
        // Only TYPE/LABEL/UUID count toward the score; VERSION/FSBLOCKSIZE are reported.
        let core = compare(info.as_ref(), &exp, false);
        total += 1;
        if core.is_empty() {
            ok += 1;
        }
        let warn = info.as_ref().map(|i| i.warnings.join(" | ")).unwrap_or_default();
        let status = if d.is_empty() { "ok".into() } else { d.join("; ") };
        report += &format!("{name}: {status} {warn}\n");
    }
    eprintln!("{report}corpus util-linux: {ok}/{total} match on TYPE/LABEL/UUID");
    assert!(total > 0);
    assert!(ok * 100 >= total * 95, "{report}only {ok}/{total} match");
}

/// Images made locally with stock Debian tools, each with blkid's own udev output beside it.
#[test]
fn corpus_generated_locally() {
    let dir = corpus().join("generated-locally");
    let cases = [
        ("ntfs.img.xz", "ntfs.img.blkid-udev.txt"),
        ("f2fs.img.xz", "f2fs.img.blkid-udev.txt"),
        ("base-ext4.img", "base-ext4.img.blkid-udev.txt"),
    ];
    for (img, exp) in cases {
        let Ok(text) = std::fs::read_to_string(dir.join(exp)) else {
            eprintln!("skipped {img}: no oracle");
            continue;
        };
        let path = dir.join(img);
        let data = if img.ends_with(".xz") { unxz(&path) } else { std::fs::read(&path).ok() };
        let Some(data) = data else {
            eprintln!("skipped {img}: unreadable");
            continue;
        };
        let info = probe_a(&MemSource(data));
        let d = compare(info.as_ref(), &parse_udev(&text), true);
        assert!(d.is_empty(), "{img}: {d:?} ({info:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures made with the real mkfs tools, cross-checked against the local blkid.

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// `blkid -p -o udev` of a file, or `None` if blkid is missing or says nothing.
fn blkid(path: &Path) -> Option<BTreeMap<String, String>> {
    let out = Command::new(tool("blkid")?)
        .args(["-p", "-o", "udev"])
        .arg(path)
        .output()
        .ok()?;
    let m = parse_udev(&String::from_utf8_lossy(&out.stdout));
    m.contains_key("ID_FS_TYPE").then_some(m)
}

/// Makes a sparse `size`-byte file, runs `mkfs args... FILE`, probes it and compares with
/// blkid. Returns the probe result for further checks, or `None` when skipped.
fn mkfs_case(size: u64, mkfs: &str, args: &[&str]) -> Option<FsInfo> {
    let Some(prog) = tool(mkfs) else {
        eprintln!("skipped: {mkfs} not installed");
        return None;
    };
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("fs.img");
    std::fs::File::create(&path).ok()?.set_len(size).ok()?;
    let out = Command::new(prog).args(args).arg(&path).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "skipped: {mkfs} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let data = std::fs::read(&path).ok()?;
    let info = probe_a(&MemSource(data));
    let what = format!("{mkfs} {args:?}");
    let info = info.unwrap_or_else(|| panic!("{what}: not recognised"));
    assert!(info.warnings.is_empty(), "{what}: unexpected warnings {:?}", info.warnings);
    assert!(info.size.is_some_and(|s| s <= size), "{what}: size {:?}", info.size);
    match blkid(&path) {
        Some(exp) => {
            let d = compare(Some(&info), &exp, true);
            assert!(d.is_empty(), "{what}: {d:?}\n{info:?}");
            // blkid 2.38's BLOCK_SIZE is the fs block for these; for FAT/NTFS/XFS it is a sector.
            if matches!(info.fs_type, "ext2" | "ext3" | "ext4" | "btrfs" | "f2fs") {
                let bs = exp.get("ID_FS_BLOCK_SIZE").cloned();
                assert_eq!(bs, info.block_size.map(|b| b.to_string()), "{what}: block size");
            }
        }
        None => eprintln!("{what}: blkid unavailable, probe-only check"),
    }
    Some(info)
}

#[test]
fn mkfs_ext_variants() {
    let u = "0d5e0c9a-1111-4222-8333-944455556666";
    let cases: &[(&str, &[&str], &str, &[&str])] = &[
        ("mkfs.ext4", &["-q", "-F", "-L", "plain4", "-U", u], "ext4", &["extents", "has_journal"]),
        (
            "mkfs.ext4",
            &["-q", "-F", "-L", "csum64", "-O", "64bit,metadata_csum"],
            "ext4",
            &["64bit", "metadata_csum"],
        ),
        ("mkfs.ext4", &["-q", "-F", "-O", "bigalloc", "-C", "16384"], "ext4", &["bigalloc"]),
        ("mkfs.ext4", &["-q", "-F", "-b", "1024", "-L", "k1"], "ext4", &[]),
        ("mkfs.ext4", &["-q", "-F", "-b", "2048", "-L", "k2"], "ext4", &[]),
        ("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", "-L", "nojournal"], "ext4", &[]),
        ("mkfs.ext4", &["-q", "-F", "-O", "meta_bg,^resize_inode"], "ext4", &["meta_bg"]),
        ("mkfs.ext2", &["-q", "-F", "-L", "two"], "ext2", &[]),
        ("mkfs.ext3", &["-q", "-F", "-L", "three"], "ext3", &["has_journal"]),
    ];
    for (mkfs, args, ty, feats) in cases {
        let Some(info) = mkfs_case(64 << 20, mkfs, args) else { continue };
        assert_eq!(info.fs_type, *ty, "{args:?}");
        for f in *feats {
            assert!(info.features.iter().any(|x| x == f), "{args:?}: no {f} in {:?}", info.features);
        }
        assert_eq!(info.size, Some(64 << 20));
    }
}

#[test]
fn mkfs_fat_variants() {
    let cases: &[(u64, &[&str], &str)] = &[
        (2 << 20, &["-F", "12", "-n", "FLOPPY12", "-i", "DEADBEEF"], "FAT12"),
        (32 << 20, &["-F", "16", "-n", "SIXTEEN"], "FAT16"),
        (64 << 20, &["-F", "32", "-n", "THIRTYTWO"], "FAT32"),
        (64 << 20, &["-F", "32", "-S", "4096"], "FAT32"),
        (64 << 20, &["-F", "32", "-s", "8", "-n", "lower case"], "FAT32"),
    ];
    for (size, args, ver) in cases {
        let Some(info) = mkfs_case(*size, "mkfs.vfat", args) else { continue };
        assert_eq!(info.version.as_deref(), Some(*ver), "{args:?}");
    }
}

#[test]
fn mkfs_exfat() {
    mkfs_case(64 << 20, "mkfs.exfat", &["-L", "exlabel"]);
    mkfs_case(64 << 20, "mkfs.exfat", &["-L", "Grün", "-c", "4096"]);
    mkfs_case(64 << 20, "mkfs.exfat", &[]);
}

#[test]
fn mkfs_ntfs() {
    let info = mkfs_case(32 << 20, "mkfs.ntfs", &["-q", "-Q", "-F", "-L", "ntfslabel"]);
    if let Some(i) = info {
        assert_eq!(i.version.as_deref(), Some("3.1"));
    }
    mkfs_case(32 << 20, "mkfs.ntfs", &["-q", "-Q", "-F", "-c", "8192", "-s", "4096"]);
    mkfs_case(32 << 20, "mkfs.ntfs", &["-q", "-Q", "-F", "-L", "Überlänge-Ünïcödé"]);
}

#[test]
fn mkfs_xfs() {
    if let Some(i) = mkfs_case(300 << 20, "mkfs.xfs", &["-q", "-f", "-L", "xfslab"]) {
        assert_eq!(i.version.as_deref(), Some("5"));
    }
    mkfs_case(300 << 20, "mkfs.xfs", &["-q", "-f", "-b", "size=1024", "-m", "crc=0"]);
}

#[test]
fn mkfs_btrfs() {
    mkfs_case(120 << 20, "mkfs.btrfs", &["-q", "-f", "-L", "btrlab"]);
    mkfs_case(120 << 20, "mkfs.btrfs", &["-q", "-f", "-n", "65536"]);
}

#[test]
fn mkfs_f2fs() {
    mkfs_case(64 << 20, "mkfs.f2fs", &["-q", "-f", "-l", "f2lab"]);
    mkfs_case(64 << 20, "mkfs.f2fs", &["-q", "-f"]);
}

#[test]
fn mkswap_variants() {
    let u = "d4c310f8-6014-4afc-a47a-785ede6dcc28";
    if let Some(i) = mkfs_case(4 << 20, "mkswap", &["-q", "-L", "swaplab", "-U", u]) {
        assert_eq!(i.size, Some(4 << 20));
        assert_eq!(i.block_size, Some(4096));
    }
    mkfs_case(4 << 20, "mkswap", &["-q", "-p", "16384"]);
}
