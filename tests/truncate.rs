//! `backup --truncate`: images end at their last partition; a GPT gets a new backup header and
//! array at the new end that `sgdisk -v` accepts; partition contents are untouched. And the
//! same rewrite the other way, `flash --gpt-to-end`: a GPT image on a larger target gets its
//! backup at the target's end.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blockwise::archive::truncate::plan_truncation;
use blockwise::io::{FileSource, Overlay, ReadAt, ReadAtExt};
use blockwise::layout::read_layout;
use common::*;

/// Applies `plan_truncation` to `img` and writes the result to `out`; returns the new size.
fn truncate_to(img: &Path, out: &Path, sector: Option<u32>) -> u64 {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(img).unwrap());
    let layout = read_layout(&*src, sector).unwrap();
    let t = plan_truncation(&*src, &layout).unwrap();
    let o = Overlay::new(src, t.new_size, t.patches).unwrap();
    let mut buf = vec![0u8; t.new_size as usize];
    o.read_exact_at(0, &mut buf).unwrap();
    std::fs::write(out, &buf).unwrap();
    t.new_size
}

fn partitions_equal(a: &Path, b: &Path, sector: Option<u32>) {
    let sa = FileSource::open(a).unwrap();
    let sb = FileSource::open(b).unwrap();
    let la = read_layout(&sa, sector).unwrap();
    let lb = read_layout(&sb, sector).unwrap();
    assert!(lb.warnings.is_empty(), "warnings: {:?}", lb.warnings);
    assert_eq!(la.partitions.len(), lb.partitions.len());
    for (p, q) in la.partitions.iter().zip(&lb.partitions) {
        assert_eq!((p.start, p.size), (q.start, q.size));
        let mut x = vec![0u8; p.size as usize];
        let mut y = vec![0u8; q.size as usize];
        sa.read_exact_at(p.start, &mut x).unwrap();
        sb.read_exact_at(q.start, &mut y).unwrap();
        assert!(x == y, "partition {} differs", p.index);
    }
}

fn sgdisk_clean(img: &str) {
    let o = Command::new("sgdisk").args(["-v", img]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
}

/// `g.img` in `dir`: `size` bytes of seeded garbage under a GPT made by sgdisk, with an 8 MiB
/// ESP at sector 2048 and a 20 MiB partition named root after it.
fn esp_and_root(dir: &Path, size: u64, seed: u64) -> std::path::PathBuf {
    let img = dir.join("g.img");
    random_file(&img, size, seed);
    sh(&format!(
        "sgdisk -Z '{0}' >/dev/null 2>&1; sgdisk -o -n1:2048:+8M -t1:ef00 -n2:0:+20M -c2:root '{0}' >/dev/null",
        img.display()
    ));
    img
}

#[test]
fn gpt_512_gets_a_new_backup_at_its_new_end() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = esp_and_root(dir.path(), 64 << 20, 9);
    let out = dir.path().join("t.img");
    let n = truncate_to(&img, &out, None);
    assert_eq!(n, (59392 + 33) * 512);
    sgdisk_clean(out.to_str().unwrap());
    partitions_equal(&img, &out, None);
    assert_eq!(
        sh(&format!("sgdisk -p '{}' | tail -2", img.display())),
        sh(&format!("sgdisk -p '{}' | tail -2", out.display()))
    );
    // Truncating again changes nothing.
    let again = dir.path().join("t2.img");
    assert_eq!(truncate_to(&out, &again, None), n);
}

#[test]
fn gpt_4096_byte_sectors() {
    if !have_all(&["sgdisk", "losetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("g4k.img");
    random_file(&img, 64 << 20, 10);
    let Some(lp) = Loop::attach_with(&img, &["--sector-size", "4096"]) else {
        return;
    };
    let made = Command::new("sgdisk")
        .args(["-o", "-n1:256:+8M", "-n2:0:+16M", &lp.dev])
        .output()
        .unwrap();
    drop(lp);
    assert!(made.status.success());
    let out = dir.path().join("t4k.img");
    let n = truncate_to(&img, &out, Some(4096));
    assert_eq!(n % 4096, 0);
    assert!(n < 30 << 20, "new size {n}");
    partitions_equal(&img, &out, Some(4096));
    // sgdisk reads a file with 512-byte sectors; check through a 4096-byte loop device.
    let lp = Loop::attach_with(&out, &["--sector-size", "4096"]).expect("loop device");
    let v = Command::new("sgdisk")
        .args(["-v", &lp.dev])
        .output()
        .unwrap();
    drop(lp);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
}

/// Writes `img` to a new file of `target` bytes as a flash with `--gpt-to-end` would: the
/// image, then the patches over it.
fn flash_gpt_to_end(img: &Path, out: &Path, target: u64) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let src = FileSource::open(img).unwrap();
    let m = blockwise::flash::gpt_to_end(&src, target).unwrap();
    std::fs::copy(img, out).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    f.set_len(target).unwrap();
    for (at, bytes) in &m.patches {
        f.write_all_at(bytes, *at).unwrap();
    }
    m.notes
}

#[test]
fn gpt_to_end_on_a_larger_target_is_clean_for_sgdisk() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = esp_and_root(dir.path(), 40 << 20, 15);
    let out = dir.path().join("card.img");
    let target = 100 << 20;
    let notes = flash_gpt_to_end(&img, &out, target);
    assert!(
        notes.iter().any(|n| n.contains("protective MBR")),
        "{notes:?}"
    );
    sgdisk_clean(out.to_str().unwrap());
    let layout = read_layout(&FileSource::open(&out).unwrap(), None).unwrap();
    let g = layout.gpt.unwrap();
    assert_eq!(g.backup_lba, target / 512 - 1);
    assert_eq!(g.last_usable_lba, target / 512 - 34);
    let table = |p: &Path| sh(&format!("sgdisk -p '{}' | tail -2", p.display()));
    assert_eq!(table(&img), table(&out));
    // The image itself, without the patches, is what sgdisk complains about.
    let plain = dir.path().join("plain.img");
    std::fs::copy(&img, &plain).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&plain)
        .unwrap()
        .set_len(target)
        .unwrap();
    let v = sh(&format!("sgdisk -v '{}' || true", plain.display()));
    assert!(!v.contains("No problems found"), "{v}");
}

#[test]
fn mbr_ends_at_the_last_logical_partition() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    random_file(&img, 64 << 20, 11);
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=8192, type=c\\nstart=10240, size=40960, type=5\\nstart=12288, size=8192, type=83\\nstart=22528, size=4096, type=83\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let out = dir.path().join("t.img");
    // The extended container ends at sector 51200, after its last logical (26624).
    assert_eq!(truncate_to(&img, &out, None), 51200 * 512);
    partitions_equal(&img, &out, None);
    let table = |p: &Path| sh(&format!("sfdisk -d '{}' | grep -o 'start=.*'", p.display()));
    assert_eq!(table(&img), table(&out));
}

#[test]
fn no_table_is_refused_and_partitions_past_the_end_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("blank.img");
    random_file(&img, 1 << 20, 12);
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let src = FileSource::open(&img).unwrap();
    let l = read_layout(&src, None).unwrap();
    let e = plan_truncation(&src, &l).unwrap_err().to_string();
    assert!(e.contains("no partition table"), "{e}");

    if !have("sfdisk") {
        return;
    }
    let big = dir.path().join("big.img");
    random_file(&big, 16 << 20, 13);
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=20000, type=83\\n' | sfdisk -q '{}'",
        big.display()
    ));
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(4 << 20).unwrap();
    let src = FileSource::open(&big).unwrap();
    let l = read_layout(&src, None).unwrap();
    let e = plan_truncation(&src, &l).unwrap_err().to_string();
    assert!(
        e.contains("needs a partition table it can trust") && e.contains("past the end"),
        "{e}"
    );
}

#[test]
fn backup_truncate_end_to_end() {
    if !have_all(&["sgdisk", "zstd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("g.img");
    random_file(&img, 48 << 20, 14);
    sh(&format!(
        "sgdisk -Z '{0}' >/dev/null 2>&1; sgdisk -o -n1:2048:+16M '{0}' >/dev/null",
        img.display()
    ));
    let dest = dir.path().join("g.img.zst");
    let o = Command::new(env!("CARGO_BIN_EXE_blockwise"))
        .args(["backup", "--truncate", "--json"])
        .arg(&img)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let new_size = j["image_size"].as_u64().unwrap();
    assert_eq!(new_size, (34816 + 33) * 512);
    assert_eq!(j["original_size"].as_u64(), Some(48 << 20));
    let restored = dir.path().join("r.img");
    sh(&format!(
        "zstd -q -d '{}' -o '{}'",
        dest.display(),
        restored.display()
    ));
    assert_eq!(std::fs::metadata(&restored).unwrap().len(), new_size);
    sgdisk_clean(restored.to_str().unwrap());
    let b =
        blockwise::bmap::parse(&std::fs::read(dir.path().join("g.img.zst.bmap")).unwrap()).unwrap();
    assert_eq!(b.image_size, new_size);
    partitions_equal(&img, &restored, None);
}
