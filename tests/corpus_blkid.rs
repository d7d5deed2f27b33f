//! Scores `blockwise::fs::probe_all` against util-linux's own blkid oracle.
//!
//! For every `tests/expected/blkid/low-probe-NAME` whose `ID_FS_TYPE` is in scope, the image
//! `tests/ts/blkid/images-fs/NAME.img.xz` is decompressed and probed; TYPE, LABEL and UUID are
//! compared with the expected file. A missing `ID_FS_LABEL`/`ID_FS_UUID` must be `None` on our
//! side too.
//!
//! Decisions on ambiguous cases (kept here so the score means the same thing over time):
//! * LABEL is compared with the *raw* label, i.e. `ID_FS_LABEL_ENC` with its `\xHH` escapes
//!   undone. `ID_FS_LABEL` is udev's "safe" form (spaces → `_`), which nobody stores on disk.
//! * In scope: ext2, ext3, ext4, jbd (ext journal device; the ext probe should say so),
//!   vfat, exfat, ntfs, xfs, btrfs, f2fs, swap, swsuspend (hibernation image in a swap area;
//!   the swap probe's business), squashfs, squashfs3, iso9660, udf, crypto_LUKS, LVM2_member.
//! * Out of scope: `xfs_external_log` (a bare XFS log device, not a filesystem we map) and every
//!   format we have no probe for (bcache, md RAID, hfs, ...).
//! * Multi-session discs (`iso-multi-genisoimage-174` etc.): util-linux probes one image with a
//!   `session_offset` hint per session, the number being the session start in 2048-byte
//!   sectors. We probe the window of the image starting at that sector, which is what a caller
//!   holding one session's track would hand us.
//!
//! The corpus is optional: without it the test prints why and passes (and fails instead under
//! `BLOCKWISE_REQUIRE_CORPUS=1`). Not a percentage: the misses must be exactly
//! [`EXPECTED_MISSES`], so a new miss and a fixed one both fail until the list (and the count
//! README.md quotes) is updated.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockwise::io::{MemSource, ReadAt, Slice};

const IN_SCOPE: &[&str] = &[
    "ext2",
    "ext3",
    "ext4",
    "jbd",
    "vfat",
    "exfat",
    "ntfs",
    "xfs",
    "btrfs",
    "f2fs",
    "swap",
    "swsuspend",
    "squashfs",
    "squashfs3",
    "iso9660",
    "udf",
    "crypto_LUKS",
    "LVM2_member",
];

/// Every in-scope image whose TYPE/LABEL/UUID we do not match, with why.
const EXPECTED_MISSES: &[(&str, &str)] = &[(
    "fat32_cp850_O_tilde",
    "FAT label in code page 850: we decode it to Unicode, blkid prints the raw bytes",
)];

/// How many images are in scope; README.md quotes the score as
/// `IN_SCOPE_IMAGES - EXPECTED_MISSES.len()` of `IN_SCOPE_IMAGES` ("75 of the 76").
const IN_SCOPE_IMAGES: usize = 76;

/// Out-of-scope images one of our probes claims anyway (name, the type we say, why that is
/// right or harmless): a new claim may be a false positive, so it fails until listed.
const OUT_OF_SCOPE_CLAIMS: &[(&str, &str, &str)] = &[(
    "xfs-log",
    "xfs_external_log",
    "an external XFS log device, named as blkid names it; out of scope only because there is no filesystem to map",
)];

/// Finds the image for an expected-output name and the byte offset to probe at.
fn image_for(images: &Path, name: &str) -> Option<(PathBuf, u64)> {
    let direct = images.join(format!("{name}.img.xz"));
    if direct.exists() {
        return Some((direct, 0));
    }
    // "<fs>-multi-<tool>-<sector>" lives in "<fs>-multi-<s0>-<s1>-...-<tool>.img.xz".
    let (head, sector) = name.rsplit_once('-')?;
    let sector: u64 = sector.parse().ok()?;
    let (fs, tool) = head.split_once("-multi-")?;
    let prefix = format!("{fs}-multi-");
    let suffix = format!("-{tool}.img.xz");
    for e in std::fs::read_dir(images).ok()?.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if let Some(mid) = f
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(&suffix))
        {
            if mid.split('-').any(|s| s.parse() == Ok(sector)) {
                return Some((e.path(), sector * 2048));
            }
        }
    }
    None
}

struct Row {
    name: String,
    ty: String,
    expected: String,
    got: String,
    ok: bool,
}

fn show(t: &str, l: &Option<String>, u: &Option<String>) -> String {
    format!(
        "{t} L={} U={}",
        l.as_deref().unwrap_or("-"),
        u.as_deref().unwrap_or("-")
    )
}

#[test]
fn blkid_corpus_score() {
    let (Some(expected_dir), Some(images)) = (
        common::corpus_file("util-linux/tests/expected/blkid"),
        common::corpus_file("util-linux/tests/ts/blkid/images-fs"),
    ) else {
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(&expected_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_prefix("low-probe-").map(str::to_string))
        .collect();
    names.sort();

    let mut rows = Vec::new();
    let mut false_positives = Vec::new();
    let mut cache: BTreeMap<PathBuf, Arc<MemSource>> = BTreeMap::new();
    for name in names {
        let Ok(text) = std::fs::read_to_string(expected_dir.join(format!("low-probe-{name}")))
        else {
            continue;
        };
        let exp = common::parse_udev(&text);
        let Some(ty) = exp.get("ID_FS_TYPE").cloned() else {
            continue;
        };
        if !IN_SCOPE.contains(&ty.as_str()) {
            // Informational: a probe claiming an image blkid calls something else is a false
            // positive worth knowing about (not scored: we have no probe for the real type).
            if let Some((path, 0)) = image_for(&images, &name) {
                if let Some(v) = common::unxz(&path) {
                    if let Ok(Some(fs)) = blockwise::fs::probe_all(&MemSource(v)) {
                        false_positives.push((name, ty, fs.fs_type.to_string()));
                    }
                }
            }
            continue;
        }
        let e_label = exp
            .get("ID_FS_LABEL_ENC")
            .map(|s| common::blkid_unescape(s));
        let e_uuid = exp.get("ID_FS_UUID_ENC").map(|s| common::blkid_unescape(s));
        let expected = show(&ty, &e_label, &e_uuid);
        let got = match image_for(&images, &name) {
            None => "(image missing)".to_string(),
            Some((path, off)) => {
                let mem = match cache.get(&path) {
                    Some(m) => m.clone(),
                    None => match common::unxz(&path) {
                        Some(v) => {
                            let m = Arc::new(MemSource(v));
                            cache.insert(path.clone(), m.clone());
                            m
                        }
                        None => {
                            rows.push(Row {
                                name,
                                ty,
                                expected,
                                got: "(xz error)".to_string(),
                                ok: false,
                            });
                            continue;
                        }
                    },
                };
                let len = mem.size().saturating_sub(off);
                let dev = Slice::new(mem, off, len);
                match blockwise::fs::probe_all(&dev) {
                    Ok(Some(fs)) => show(fs.fs_type.name(), &fs.label, &fs.uuid),
                    Ok(None) => "(none)".to_string(),
                    Err(e) => format!("(error: {e})"),
                }
            }
        };
        let ok = got == expected;
        rows.push(Row {
            name,
            ty,
            expected,
            got,
            ok,
        });
    }

    println!("{:<52} {:<4} {:<60} GOT", "NAME", "OK", "EXPECTED");
    for r in &rows {
        let mark = if r.ok { "ok" } else { "MISS" };
        println!("{:<52} {:<4} {:<60} {}", r.name, mark, r.expected, r.got);
    }
    let mut per_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &rows {
        let e = per_type.entry(r.ty.as_str()).or_default();
        e.1 += 1;
        if r.ok {
            e.0 += 1;
        }
    }
    println!("\nper type:");
    for (t, (ok, all)) in &per_type {
        println!("  {t:<14} {ok}/{all}");
    }
    let ok = rows.iter().filter(|r| r.ok).count();
    let all = rows.len();
    let pct = if all == 0 {
        100.0
    } else {
        ok as f64 * 100.0 / all as f64
    };
    println!("\nscore: {ok}/{all} = {pct:.1}%");
    let misses: Vec<(String, String)> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            (
                r.name.clone(),
                format!("expected {}, got {}", r.expected, r.got),
            )
        })
        .collect();
    let claims: Vec<String> = false_positives
        .iter()
        .map(|(n, ty, ours)| format!("{n} ({ty}) -> {ours}"))
        .collect();
    println!(
        "out-of-scope images claimed by a probe ({}): {}",
        claims.len(),
        claims.join(", ")
    );
    assert_eq!(
        all, IN_SCOPE_IMAGES,
        "the in-scope set changed: update IN_SCOPE_IMAGES and the score README.md quotes"
    );
    common::assert_misses("util-linux blkid corpus", &misses, EXPECTED_MISSES);
    let unexpected: Vec<&String> = claims
        .iter()
        .zip(&false_positives)
        .filter(|(_, (n, _, ours))| {
            !OUT_OF_SCOPE_CLAIMS
                .iter()
                .any(|(en, eours, _)| en == n && eours == ours)
        })
        .map(|(c, _)| c)
        .collect();
    let gone: Vec<&str> = OUT_OF_SCOPE_CLAIMS
        .iter()
        .filter(|(en, eours, _)| {
            !false_positives
                .iter()
                .any(|(n, _, ours)| en == n && eours == ours)
        })
        .map(|(en, _, _)| *en)
        .collect();
    assert!(
        unexpected.is_empty() && gone.is_empty(),
        "out-of-scope claims differ from OUT_OF_SCOPE_CLAIMS: new {unexpected:?}, gone {gone:?}"
    );
}
