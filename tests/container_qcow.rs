//! qcow (v1) and qcow2 (v2, v3) decoded as random-access sources, against qemu: every image is
//! made in the test by `qemu-img`/`qemu-io` from the bundled sample card (or by hand for the
//! hostile headers) and must read byte for byte as `qemu-img convert -O raw` writes it.
//! Tests whose tool is missing print why and return (and fail instead under
//! `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockwise::format::{open, Format, OpenOptions};
use blockwise::io::{ReadAt, ReadAtExt};
use common::{blockwise, fixture, have_all, sh, unpack_sample};

fn tools() -> bool {
    have_all(&["qemu-img", "qemu-io"])
}

/// Opens `p` and compares every byte of the disk with what `qemu-img convert -O raw` makes of
/// it; returns the warnings.
#[track_caller]
fn same_as_qemu(p: &Path) -> Vec<String> {
    same_as_qemu_via(p, &p.with_extension("qemu.raw"))
}

/// [`same_as_qemu`], qemu-img's output written to `raw` (and removed after).
#[track_caller]
fn same_as_qemu_via(p: &Path, raw: &Path) -> Vec<String> {
    sh(&format!(
        "qemu-img convert -O raw '{}' '{}'",
        p.display(),
        raw.display()
    ));
    let want = std::fs::read(raw).unwrap();
    let o = open(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        matches!(o.chain[0].format, f if f == Format::Qcow2 || f.name() == "qcow"),
        "{:?}",
        o.chain
    );
    let src = &o.source;
    assert_eq!(src.size(), want.len() as u64, "{}: size", p.display());
    // Chunks of an odd size, so reads straddle clusters and runs.
    let step = (1 << 20) + 4096 + 512;
    let mut at = 0usize;
    while at < want.len() {
        let n = step.min(want.len() - at);
        let got = src.read_vec(at as u64, n).unwrap();
        assert!(
            got == want[at..at + n],
            "{}: differs from qemu-img in bytes {at}..{}",
            p.display(),
            at + n
        );
        at += n;
    }
    // And a few small reads at odd places.
    for off in [
        1u64,
        511,
        65535,
        65537,
        (1 << 20) - 3,
        want.len() as u64 - 7,
    ] {
        if off < want.len() as u64 {
            let n = 9.min(want.len() - off as usize);
            assert_eq!(
                src.read_vec(off, n).unwrap(),
                &want[off as usize..off as usize + n]
            );
        }
    }
    std::fs::remove_file(raw).unwrap();
    o.warnings
}

/// The sample card, unpacked in `dir`, and a path beside it.
fn card(dir: &Path) -> (PathBuf, String) {
    let img = unpack_sample(dir);
    let s = img.display().to_string();
    (img, s)
}

fn qemu_io(img: &Path, fmt: &str, cmds: &[&str]) {
    let c: Vec<String> = cmds.iter().map(|c| format!("-c '{c}'")).collect();
    sh(&format!(
        "qemu-io -f {fmt} {} '{}'",
        c.join(" "),
        img.display()
    ));
}

#[test]
fn qcow2_versions_and_cluster_sizes() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    for (name, opts) in [
        ("v2", "-o compat=0.10"),
        ("v3", "-o compat=1.1"),
        ("c512", "-o cluster_size=512"),
        ("c2m", "-o cluster_size=2M"),
        ("v2c512", "-o compat=0.10,cluster_size=512"),
    ] {
        let q = d.path().join(format!("{name}.qcow2"));
        sh(&format!(
            "qemu-img convert -f raw -O qcow2 {opts} {img} '{}'",
            q.display()
        ));
        let w = same_as_qemu(&q);
        assert!(w.is_empty(), "{name}: {w:?}");
    }
}

#[test]
fn compressed_clusters_zlib_and_zstd() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    for (name, opts) in [
        ("zlib", "-c"),
        ("zlib512", "-c -o cluster_size=512"),
        ("zlib2m", "-c -o cluster_size=2M"),
        ("zlibv2", "-c -o compat=0.10"),
        ("zstd", "-c -o compression_type=zstd"),
        ("zstd4k", "-c -o compression_type=zstd,cluster_size=4k"),
    ] {
        let q = d.path().join(format!("{name}.qcow2"));
        if !fixture(&format!(
            "qemu-img convert -f raw -O qcow2 {opts} {img} '{}'",
            q.display()
        )) {
            continue;
        }
        same_as_qemu(&q);
        let o = open(&q, &OpenOptions::default()).unwrap();
        if name.starts_with("zstd") {
            assert!(o.chain[0].detail.as_deref().unwrap().contains("zstd"));
        }
    }
}

#[test]
fn qcow_version_1() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    let q = d.path().join("plain.qcow");
    sh(&format!(
        "qemu-img convert -f raw -O qcow {img} '{}'",
        q.display()
    ));
    same_as_qemu(&q);
    let o = open(&q, &OpenOptions::default()).unwrap();
    assert_eq!(o.chain[0].format.name(), "qcow");
    // Compressed clusters (qemu-img convert -c refuses qcow; qemu-io writes them one cluster
    // at a time), beside stored ones.
    let c = d.path().join("compressed.qcow");
    sh(&format!("qemu-img create -q -f qcow '{}' 16M", c.display()));
    qemu_io(
        &c,
        "qcow",
        &[
            "write -c -P 0x41 0 4k",
            "write -c -P 0x42 8k 4k",
            "write -P 0x43 12k 4k",
            "write -c -P 0x44 9M 4k",
        ],
    );
    same_as_qemu(&c);
    // A qcow over a qcow2 backing file, with writes of its own.
    let base = d.path().join("base.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {img} '{}'",
        base.display()
    ));
    let top = d.path().join("top.qcow");
    sh(&format!(
        "qemu-img create -q -f qcow -b base.qcow2 -F qcow2 '{}'",
        top.display()
    ));
    qemu_io(
        &top,
        "qcow",
        &["write -P 0x33 1M 8k", "write -P 0x44 70M 100k"],
    );
    same_as_qemu(&top);
}

#[test]
fn zero_clusters() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    let q = d.path().join("z.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {img} '{}'",
        q.display()
    ));
    // Zero writes over data: zero flags (kept allocated or not), and a partial-cluster one.
    qemu_io(
        &q,
        "qcow2",
        &[
            "write -z 0 128k",
            "write -z -u 4M 1M",
            "write -z 55M 3k",
            "write -z 60M 4M",
        ],
    );
    let o = open(&q, &OpenOptions::default()).unwrap();
    let before = o.source.allocated_hint().unwrap();
    same_as_qemu(&q);
    assert!(!before.contains(0), "a zero cluster is not stored");
}

#[test]
fn backing_files_overlay_and_chain() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    let base = d.path().join("base.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {img} '{}'",
        base.display()
    ));
    let top = d.path().join("top.qcow2");
    sh(&format!(
        "cd '{}' && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2",
        d.path().display()
    ));
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0x5a 1M 64k",
            "write -z 3M 128k",
            "write -P 0x77 70M 1000k",
        ],
    );
    same_as_qemu(&top);
    let o = open(&top, &OpenOptions::default()).unwrap();
    let detail = o.chain[0].detail.clone().unwrap();
    assert!(
        detail.contains("backing file \"base.qcow2\" (qcow2)"),
        "{detail}"
    );
    // The allocated hint includes what the base holds below unwritten clusters.
    let hint = o.source.allocated_hint().unwrap();
    assert!(hint.contains(1 << 20) && hint.contains(0));

    // A chain of 3: base ← mid ← top3, each with writes; mid in its own directory, named by
    // a relative path.
    std::fs::create_dir(d.path().join("sub")).unwrap();
    sh(&format!(
        "cd '{}' && qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/mid.qcow2 && \
         qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 top3.qcow2",
        d.path().display()
    ));
    let mid = d.path().join("sub/mid.qcow2");
    qemu_io(&mid, "qcow2", &["write -P 0x11 2M 256k", "write -z 8M 64k"]);
    let top3 = d.path().join("top3.qcow2");
    qemu_io(
        &top3,
        "qcow2",
        &["write -P 0x22 2M 64k", "write -P 0x23 9M 4k"],
    );
    same_as_qemu(&top3);
}

#[test]
fn size_in_part_sectors_rounds_down_like_qemu() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let q = d.path().join("odd.qcow2");
    sh(&format!("qemu-img create -q -f qcow2 '{}' 1M", q.display()));
    qemu_io(&q, "qcow2", &["write -P 7 0 4k"]);
    // Size field: 1000 bytes.
    let mut f = std::fs::read(&q).unwrap();
    f[24..32].copy_from_slice(&1000u64.to_be_bytes());
    std::fs::write(&q, f).unwrap();
    same_as_qemu(&q);
}

#[test]
fn backing_file_smaller_than_the_image() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    sh(&format!("truncate -s 50M {img}"));
    let top = d.path().join("grown.qcow2");
    sh(&format!(
        "cd '{}' && qemu-img create -q -f qcow2 -b card.img -F raw grown.qcow2 128M",
        d.path().display()
    ));
    qemu_io(&top, "qcow2", &["write -P 0x66 49M 2M"]);
    same_as_qemu(&top);
}

#[test]
fn extended_l2_subclusters() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, img) = card(d.path());
    let base = d.path().join("base.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {img} '{}'",
        base.display()
    ));
    // 64 KiB clusters: subclusters of 2 KiB. Some subclusters written, some zeroed, the rest
    // left to the base; one standalone image too (unallocated reads zeros there).
    for (name, backing) in [("xl2top.qcow2", true), ("xl2.qcow2", false)] {
        let q = d.path().join(name);
        let b = if backing {
            "-b base.qcow2 -F qcow2"
        } else {
            ""
        };
        sh(&format!(
            "cd '{}' && qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k {b} {name} 128M",
            d.path().display()
        ));
        qemu_io(
            &q,
            "qcow2",
            &[
                "write -P 0x5a 4k 2k",
                "write -P 0x5b 10k 6k",
                "write -z 20k 4k",
                "write -P 0x5c 1M 3k",
                "write -z 1030k 2k",
                "write -P 0x5d 4194304 65536",
                "write -z 70M 64k",
                "write -P 0x5e 106504k 2k",
            ],
        );
        let o = open(&q, &OpenOptions::default()).unwrap();
        assert!(o.chain[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("extended L2"));
        same_as_qemu(&q);
    }
    // Extended L2 by conversion, with compression, and with 2 MiB clusters.
    for (name, opts) in [
        ("xl2c.qcow2", "-c -o extended_l2=on,cluster_size=128k"),
        ("xl22m.qcow2", "-o extended_l2=on,cluster_size=2M"),
    ] {
        let q = d.path().join(name);
        sh(&format!(
            "qemu-img convert -f raw -O qcow2 {opts} {img} '{}'",
            q.display()
        ));
        same_as_qemu(&q);
    }
}

#[test]
fn inspect_backup_and_bmap_of_a_qcow2_card() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (raw, img) = card(d.path());
    let q = d.path().join("card.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 -c {img} '{}'",
        q.display()
    ));
    let out = blockwise().arg("inspect").arg(&q).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("qcow2 → raw disk image (MBR, 2 partitions)"),
        "{text}"
    );
    assert!(
        text.contains("vfat FAT32 \"bootfs\"") && text.contains("ext4"),
        "{text}"
    );

    // A backup of the qcow2 is the backup of the raw card, bmap and all.
    for (src, dst) in [(&raw, "a.img"), (&q, "b.img")] {
        let out = blockwise()
            .arg("backup")
            .arg(src)
            .arg(d.path().join(dst))
            .args(["--format", "img"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = std::fs::read(d.path().join("a.img")).unwrap();
    let b = std::fs::read(d.path().join("b.img")).unwrap();
    assert!(a == b, "backup of the qcow2 differs from the raw card's");
    assert_eq!(
        std::fs::read(d.path().join("a.img.bmap")).unwrap(),
        std::fs::read(d.path().join("b.img.bmap")).unwrap()
    );
    // The bmap of a qcow2 describes the disk inside it: the raw card's bmap. Under a name
    // bmaptool would pair with the qcow2 itself (card.bmap) it is refused (exit 4), since
    // bmaptool copies a qcow2 file as it is.
    let out = blockwise()
        .arg("bmap")
        .arg(&q)
        .arg("-o")
        .arg(d.path().join("card.bmap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blockwise convert"));
    assert!(!d.path().join("card.bmap").exists());
    for (src, dst) in [(&raw, "raw.bmap"), (&q, "disk.img.bmap")] {
        let out = blockwise()
            .arg("bmap")
            .arg(src)
            .arg("-o")
            .arg(d.path().join(dst))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ranges = |n: &str| {
        std::fs::read_to_string(d.path().join(n))
            .unwrap()
            .lines()
            .filter(|l| l.contains("<Range") || l.contains("ImageSize"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ranges("raw.bmap"), ranges("disk.img.bmap"));
}

#[test]
fn encrypted_and_external_data_are_refused() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let enc = d.path().join("enc.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 --object secret,id=s0,data=pw -o encrypt.format=luks,encrypt.key-secret=s0 '{}' 8M",
        enc.display()
    ));
    let e = open(&enc, &OpenOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("encrypted") && e.contains("LUKS"), "{e}");

    let ext = d.path().join("ext.qcow2");
    sh(&format!(
        "cd '{}' && qemu-img create -q -f qcow2 -o data_file=ext.raw ext.qcow2 8M",
        d.path().display()
    ));
    let e = open(&ext, &OpenOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("external data file"), "{e}");
}

#[test]
fn corpus_samples() {
    // binwalk's signature sample: the first 512 bytes of a 1 KiB qcow2 (binwalk calls it
    // encrypted; its crypt_method is 0). Its L1 table lies past the end of the file, which
    // qemu reads as zeros: so do we, with a warning.
    if let Some(p) = common::corpus_file("binwalk/tests/inputs/qcow.bin") {
        if !tools() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let w = same_as_qemu_via(&p, &d.path().join("bw.raw"));
        assert!(w.iter().any(|w| w.contains("L1 table")), "{w:?}");
    }
}

/// Every file of the shared corpus that starts with the qcow magic (whichever sources the
/// copy holds: dfvfs, sleuthkit, bwLehrpool, binwalk...): read as qemu-img reads it, or
/// refused where qemu-img refuses it.
#[test]
fn every_qcow_in_the_corpus() {
    let Some(root) = common::corpus_file(".") else {
        return;
    };
    if !tools() {
        return;
    }
    let mut found = vec![];
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                dirs.push(p);
            } else if ft.is_file() {
                let mut head = [0u8; 4];
                let ok = std::fs::File::open(&p)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                    .is_ok();
                if ok && &head == b"QFI\xfb" {
                    found.push(p);
                }
            }
        }
    }
    eprintln!("{} qcow files in the corpus", found.len());
    let d = tempfile::tempdir().unwrap();
    for p in found {
        let raw = d.path().join("out.raw");
        let qemu = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&p)
            .arg(&raw)
            .output()
            .unwrap();
        if qemu.status.success() {
            std::fs::remove_file(&raw).unwrap();
            eprintln!("{}: {:?}", p.display(), same_as_qemu_via(&p, &raw));
        } else {
            let ours = open(&p, &OpenOptions::default()).and_then(|o| {
                Ok(o.source
                    .read_vec(0, o.source.size().min(1 << 30) as usize)?)
            });
            assert!(
                ours.is_err(),
                "{}: qemu-img refuses it ({}), blockwise reads it",
                p.display(),
                String::from_utf8_lossy(&qemu.stderr).trim()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile headers, built by hand: version 3, 64 KiB clusters unless said; header in cluster 0,
// L1 in cluster 1, L2 tables and data after.

const CB: u32 = 16;
const CS: usize = 1 << CB;

struct Hand {
    cluster_bits: u32,
    size: u64,
    l1_size: u32,
    l1: Vec<u64>,
    /// Clusters after the L1 (cluster 2 on).
    clusters: Vec<Vec<u8>>,
    backing: Option<String>,
}

impl Hand {
    fn new(size: u64) -> Hand {
        Hand {
            cluster_bits: CB,
            size,
            l1_size: 1,
            l1: vec![0],
            clusters: vec![],
            backing: None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let cs = CS;
        let mut f = vec![0u8; 2 * cs];
        f[0..4].copy_from_slice(b"QFI\xfb");
        f[4..8].copy_from_slice(&3u32.to_be_bytes());
        if let Some(b) = &self.backing {
            f[8..16].copy_from_slice(&512u64.to_be_bytes());
            f[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            f[512..512 + b.len()].copy_from_slice(b.as_bytes());
        }
        f[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        f[24..32].copy_from_slice(&self.size.to_be_bytes());
        f[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        f[40..48].copy_from_slice(&(cs as u64).to_be_bytes());
        f[96..100].copy_from_slice(&4u32.to_be_bytes());
        f[100..104].copy_from_slice(&104u32.to_be_bytes());
        for (i, e) in self.l1.iter().enumerate() {
            f[cs + i * 8..cs + i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        for c in &self.clusters {
            let mut c = c.clone();
            c.resize(cs, 0);
            f.extend_from_slice(&c);
        }
        f
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.bytes()).unwrap();
        p
    }
}

/// An L2 table of big-endian entries.
fn l2(entries: &[(usize, u64)]) -> Vec<u8> {
    let mut t = vec![0u8; CS];
    for &(i, e) in entries {
        t[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    t
}

/// Opens `p`, expecting a quick refusal whose message holds every one of `words`.
#[track_caller]
fn refused(p: &Path, words: &[&str]) -> String {
    let t = Instant::now();
    let e = match open(p, &OpenOptions::default()) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(t.elapsed() < Duration::from_secs(5), "slow refusal");
    for w in words {
        assert!(e.contains(w), "{w:?} not in: {e}");
    }
    e
}

#[test]
fn hostile_l1_size_of_gigabytes() {
    let d = tempfile::tempdir().unwrap();
    let mut h = Hand::new(1 << 30);
    h.l1_size = u32::MAX;
    refused(
        &h.write(d.path(), "l1.qcow2"),
        &["L1 table", "4294967295 entries"],
    );
    // The most qemu allows (4 Mi entries, 32 MiB, a 2 PiB disk) in a 128 KiB file: only the
    // entries inside the file are read; the rest are unallocated, with a warning.
    let mut h = Hand::new(1 << 51);
    h.l1_size = 4 << 20;
    let t = Instant::now();
    let o = open(&h.write(d.path(), "l1max.qcow2"), &OpenOptions::default()).unwrap();
    assert_eq!(o.source.size(), 1 << 51);
    assert_eq!(o.source.read_vec((1 << 50) + 3, 4).unwrap(), vec![0; 4]);
    assert!(
        o.warnings.iter().any(|w| w.contains("L1 table")),
        "{:?}",
        o.warnings
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn hostile_l2_table_past_the_end_of_the_file() {
    let d = tempfile::tempdir().unwrap();
    let mut h = Hand::new(1 << 30);
    h.l1_size = 2;
    h.l1 = vec![0, 1 << 40];
    refused(
        &h.write(d.path(), "l2.qcow2"),
        &["L1 table", "entry 1", "past the end"],
    );
    // A data cluster past the end, named by its L1 and L2 entries.
    let mut h = Hand::new(1 << 20);
    h.l1 = vec![2 * CS as u64];
    h.clusters = vec![l2(&[(3, 1 << 30)])];
    refused(
        &h.write(d.path(), "data.qcow2"),
        &["L1 entry 0, L2 entry 3", "past the end"],
    );
}

#[test]
fn hostile_l1_entries_sharing_one_l2_table() {
    let d = tempfile::tempdir().unwrap();
    // 4096 L1 entries (2 TiB of disk) all pointing at one L2 table whose 8192 entries all name
    // the same data cluster: every cluster a run of its own, 32 Mi runs were they all kept.
    let n = 4096;
    let mut h = Hand::new((n as u64) << (CB + CB - 3));
    h.l1_size = n as u32;
    h.l1 = vec![2 * CS as u64; n];
    let data = 3 * CS as u64;
    let entries: Vec<(usize, u64)> = (0..CS / 8).map(|i| (i, data)).collect();
    let mut fill = vec![0u8; CS];
    fill[..5].copy_from_slice(b"hello");
    h.clusters = vec![l2(&entries), fill];
    let p = h.write(d.path(), "shared.qcow2");
    let t = Instant::now();
    let o = open(&p, &OpenOptions::default()).unwrap();
    let src = &o.source;
    assert_eq!(src.size(), 2 << 40);
    assert_eq!(src.read_vec(0, 5).unwrap(), b"hello");
    assert_eq!(src.read_vec((1 << 40) + (7 << CB), 5).unwrap(), b"hello");
    let hint = src.allocated_hint().unwrap();
    assert!(hint.contains(12345 << CB));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn hostile_cluster_bits() {
    let d = tempfile::tempdir().unwrap();
    for cb in [8, 22, 63] {
        let mut h = Hand::new(1 << 20);
        h.cluster_bits = cb;
        refused(
            &h.write(d.path(), &format!("cb{cb}.qcow2")),
            &["cluster_bits", &cb.to_string()],
        );
    }
}

#[test]
fn hostile_backing_chain_that_loops() {
    let d = tempfile::tempdir().unwrap();
    let mut a = Hand::new(1 << 20);
    a.backing = Some("b.qcow2".into());
    a.write(d.path(), "a.qcow2");
    let mut b = Hand::new(1 << 20);
    b.backing = Some("a.qcow2".into());
    b.write(d.path(), "b.qcow2");
    refused(&d.path().join("a.qcow2"), &["loops", "a.qcow2", "b.qcow2"]);
    // Itself as its own backing file.
    let mut s = Hand::new(1 << 20);
    s.backing = Some("self.qcow2".into());
    refused(&s.write(d.path(), "self.qcow2"), &["loops"]);
}

#[test]
fn hostile_backing_file_missing() {
    let d = tempfile::tempdir().unwrap();
    let mut h = Hand::new(1 << 20);
    h.backing = Some("gone-base.qcow2".into());
    refused(
        &h.write(d.path(), "orphan.qcow2"),
        &["backing file", "gone-base.qcow2"],
    );
}

#[test]
fn hostile_size_overflowing_64_bits() {
    let d = tempfile::tempdir().unwrap();
    let mut h = Hand::new(u64::MAX);
    h.l1_size = u32::MAX;
    refused(
        &h.write(d.path(), "huge.qcow2"),
        &["l1_size", &u64::MAX.to_string()],
    );
}

#[test]
fn hostile_compressed_cluster_claiming_a_huge_size() {
    let d = tempfile::tempdir().unwrap();
    // Compressed, every size bit set (the most the field can say: 256 sectors, 2 clusters),
    // data at the start of cluster 3, the file ending soon after.
    let shift = 62 - (CB - 8);
    let e = (1u64 << 62) | (((1u64 << (CB - 8)) - 1) << shift) | (3 * CS as u64);
    let mut h = Hand::new(1 << 20);
    h.l1 = vec![2 * CS as u64];
    h.clusters = vec![l2(&[(0, e)]), vec![0x55; 100]];
    let p = h.write(d.path(), "cz.qcow2");
    let t = Instant::now();
    // Opening reads the first sector, in that cluster: the garbage does not inflate, and
    // the error says where.
    let err = match open(&p, &OpenOptions::default()) {
        Ok(o) => o
            .source
            .read_vec(0, 4096)
            .expect_err("garbage does not inflate")
            .to_string(),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("compressed cluster at byte 196608"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // A compressed cluster past the end of the file is refused at open, by its entries.
    let mut h = Hand::new(1 << 20);
    h.l1 = vec![2 * CS as u64];
    h.clusters = vec![l2(&[(1, (1 << 62) | (1 << 40))])];
    refused(
        &h.write(d.path(), "cz2.qcow2"),
        &["L1 entry 0, L2 entry 1", "compressed"],
    );
}

#[test]
fn damage_that_still_reads_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    // Dirty and corrupt bits, and a last data cluster cut short by the end of the file.
    let mut h = Hand::new(1 << 20);
    h.l1 = vec![2 * CS as u64];
    h.clusters = vec![l2(&[(0, 3 * CS as u64)])];
    let mut f = h.bytes();
    f[72..80].copy_from_slice(&3u64.to_be_bytes());
    f.extend_from_slice(b"partial");
    let p = d.path().join("dirty.qcow2");
    std::fs::write(&p, &f).unwrap();
    let o = open(&p, &OpenOptions::default()).unwrap();
    let w = o.warnings.join("\n");
    assert!(
        w.contains("dirty") && w.contains("corrupt") && w.contains("past the end"),
        "{w}"
    );
    let mut want = b"partial".to_vec();
    want.resize(CS + 10, 0);
    assert_eq!(o.source.read_vec(0, CS + 10).unwrap(), want);
    // An unknown incompatible bit is refused, naming it.
    f[72..80].copy_from_slice(&(1u64 << 9).to_be_bytes());
    std::fs::write(&p, &f).unwrap();
    refused(&p, &["incompatible feature", "bit 9"]);
}

/// Read speed against `qemu-img convert -O raw`, on a 1 GiB disk (half random data, half
/// never written), plain and compressed, both writing it to a raw file
/// (zeros as holes, no fsync), ours on one thread. Not run by default:
/// `cargo test --release --test container_qcow -- --ignored --nocapture read_speed`.
#[test]
#[ignore]
fn read_speed_against_qemu_img() {
    if !tools() {
        return;
    }
    let d =
        tempfile::tempdir_in(std::env::var("QCOW_BENCH_DIR").unwrap_or("/var/tmp".into())).unwrap();
    let raw = d.path().join("src.raw");
    sh(&format!(
        "head -c 512M /dev/urandom > '{0}' && truncate -s 1G '{0}'",
        raw.display()
    ));
    for (name, opts) in [
        ("plain", ""),
        ("zlib", "-c"),
        ("zstd", "-c -o compression_type=zstd"),
    ] {
        let q = d.path().join(format!("{name}.qcow2"));
        sh(&format!(
            "qemu-img convert -f raw -O qcow2 {opts} '{}' '{}'",
            raw.display(),
            q.display()
        ));
        // Both write the raw disk into a file (no fsync), zeros left as holes.
        let out = d.path().join("out.raw");
        let t = Instant::now();
        sh(&format!(
            "qemu-img convert -O raw '{}' '{}'",
            q.display(),
            out.display()
        ));
        let qemu = t.elapsed();
        std::fs::remove_file(&out).unwrap();
        let t = Instant::now();
        let o = open(&q, &OpenOptions::default()).unwrap();
        let f = std::fs::File::create(&out).unwrap();
        f.set_len(o.source.size()).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        let mut at = 0;
        while at < o.source.size() {
            let n = o.source.read_at(at, &mut buf).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                std::os::unix::fs::FileExt::write_all_at(&f, &buf[..n], at).unwrap();
            }
            at += n as u64;
        }
        let ours = t.elapsed();
        std::fs::remove_file(&out).unwrap();
        eprintln!("{name}: qemu-img convert -O raw {qemu:.2?}, blockwise read+write {ours:.2?}");
    }
}
