//! Partition tables that are present but unusable, or empty, never shrink the map
//! (spec/safety.md): a broken GPT behind a protective MBR, GPT headers claiming absurd entry
//! counts, entries outside the usable area, MBR partitions past the end of the image or over
//! the table itself keep every byte; an all-zero MBR in front of a whole-disk ext2 is mapped
//! by the filesystem (as blkid reports both), and a whole-disk ext2 beside a real MBR table
//! keeps its blocks past the partitions. Tables are made with sgdisk/sfdisk, filesystems
//! with mke2fs, damage is a byte patch; each is proven by restoring only the mapped bytes
//! onto garbage (e2fsck output and every file identical).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use blockwise::report::inspect_path;
use common::{have, have_all, sh};

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC of the GPT header at `off` (92 bytes).
fn fix_header_crc(b: &mut [u8], off: usize) {
    b[off + 16..off + 20].fill(0);
    let crc = crc32fast::hash(&b[off..off + 92]);
    put_u32(b, off + 16, crc);
}

/// A 16 MiB GPT disk with one ext4 partition holding 5 MB of files, built without root by
/// `mke2fs -d` into the partition's bytes.
fn gpt_disk(dir: &Path) -> Option<PathBuf> {
    if !have_all(&["sgdisk", "mke2fs"]) {
        return None;
    }
    let img = dir.join("gpt.img");
    common::random_file(&img, 16 << 20, 3);
    sh(&format!(
        "sgdisk -Z '{0}' >/dev/null 2>&1; sgdisk -n 1:2048:30719 -t 1:8300 '{0}' >/dev/null",
        img.display()
    ));
    fill_ext(&img, 2048 * 512, (30720 - 2048) * 512, "-t ext4", 5);
    Some(img)
}

/// Makes an ext filesystem of `len` bytes at `offset` in `img`, filled with `mb` MB of
/// seeded files.
fn fill_ext(img: &Path, offset: u64, len: u64, args: &str, mb: usize) {
    let dir = img.parent().unwrap().join(format!("src-{offset}"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut x = 0x1234_5678u64 ^ offset;
    for i in 0..mb * 4 {
        let data: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("sub/f{i}")), data).unwrap();
    }
    let part = img.with_extension(format!("part{offset}"));
    sh(&format!(
        "mke2fs -q -F {args} -d '{}' '{}' {}k",
        dir.display(),
        part.display(),
        len / 1024
    ));
    sh(&format!(
        "dd if='{}' of='{}' bs=64k seek={}B conv=notrunc,sparse status=none oflag=seek_bytes",
        part.display(),
        img.display(),
        offset
    ));
}

fn mapped(img: &Path) -> (u64, u64, blockwise::report::Report) {
    let r = inspect_path(img).unwrap();
    let u = r.usage.as_ref().unwrap();
    (u.mapped, u.image_size, r)
}

fn assert_whole(img: &Path, why: &str) {
    let (m, size, r) = mapped(img);
    assert_eq!(m, size, "{why}: {:?}", r.warnings);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains(why) && w.ends_with("every byte of the image is kept")),
        "{why}: {:?}",
        r.warnings
    );
    let head = blockwise_headline(img);
    assert!(
        head.contains("partition table present but unusable; every byte kept"),
        "{head}"
    );
}

fn blockwise_headline(img: &Path) -> String {
    let o = common::blockwise()
        .arg("inspect")
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn broken_gpt_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = gpt_disk(dir.path()) else {
        return;
    };
    let good = std::fs::read(&img).unwrap();
    // Before the damage: the ext4 map leaves most of the disk out.
    let (m, size, _) = mapped(&img);
    assert!(m < size * 3 / 4, "{m} of {size}");

    // Primary header CRC broken, backup header zeroed.
    let mut b = good.clone();
    b[512 + 60] ^= 0xFF;
    let end = b.len();
    b[end - 512..].fill(0);
    std::fs::write(&img, &b).unwrap();
    assert_whole(&img, "GPT unusable: primary header corrupt (CRC mismatch");

    // Valid CRCs, 0xFFFFFFFF entries in both headers.
    let mut b = good.clone();
    for off in [512, end - 512] {
        put_u32(&mut b, off + 80, u32::MAX);
        fix_header_crc(&mut b, off);
    }
    std::fs::write(&img, &b).unwrap();
    assert_whole(&img, "absurd partition entry array");

    // A valid GPT whose entry starts over the header and entry array (LBA 1).
    let mut b = good.clone();
    for (hdr, arr) in [(512usize, 1024usize), (end - 512, end - 33 * 512)] {
        b[arr + 32..arr + 40].copy_from_slice(&1u64.to_le_bytes());
        let crc = crc32fast::hash(&b[arr..arr + 128 * 128]);
        put_u32(&mut b, hdr + 88, crc);
        fix_header_crc(&mut b, hdr);
    }
    std::fs::write(&img, &b).unwrap();
    assert_whole(&img, "lies outside the usable range");
}

#[test]
fn mbr_partitions_past_the_end_or_over_the_table_keep_everything() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("mbr.img");
    common::random_file(&img, 8 << 20, 5);
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=8192, type=83\\n' | sfdisk -q '{}'",
        img.display()
    ));
    // sfdisk refuses to write it, so the size is patched in: past the end of the image.
    let mut b = std::fs::read(&img).unwrap();
    put_u32(&mut b, 446 + 12, 40000);
    std::fs::write(&img, &b).unwrap();
    assert_whole(&img, "past the end of the image");

    put_u32(&mut b, 446 + 8, 0);
    put_u32(&mut b, 446 + 12, 4096);
    std::fs::write(&img, &b).unwrap();
    assert_whole(&img, "over the partition table itself");
}

/// The restore proof for a whole-disk ext image: same e2fsck output, same files.
fn assert_restores(img: &Path, map: &blockwise::ExtentMap, work: &Path) {
    use std::os::unix::fs::FileExt;
    let out = work.join("restored.img");
    common::restore_to_file(img, map, &out, 77);
    let fsck = |p: &Path| {
        let o = Command::new("e2fsck").arg("-fn").arg(p).output().unwrap();
        String::from_utf8_lossy(&o.stdout).replace(&*p.to_string_lossy(), "IMG")
    };
    assert_eq!(fsck(img), fsck(&out));
    let dump = |p: &Path, d: &str| {
        let d = work.join(d);
        std::fs::create_dir_all(&d).unwrap();
        sh(&format!(
            "debugfs -R 'rdump / {}' '{}' 2>/dev/null",
            d.display(),
            p.display()
        ));
        common::tree_hashes(&d)
    };
    let a = dump(img, "a");
    assert!(a.len() >= 10, "{a:?}");
    assert_eq!(a, dump(&out, "b"));
    // The boot code and the (empty) table in sector 0 come back too.
    let mut s0 = [0u8; 512];
    let mut r0 = [0u8; 512];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut s0, 0)
        .unwrap();
    std::fs::File::open(&out)
        .unwrap()
        .read_exact_at(&mut r0, 0)
        .unwrap();
    assert_eq!(s0, r0);
}

#[test]
fn empty_mbr_in_front_of_a_whole_disk_ext2() {
    if !have_all(&["mke2fs", "debugfs", "e2fsck"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    common::random_file(&img, 24 << 20, 9);
    fill_ext(&img, 0, 24 << 20, "-t ext2", 4);
    // Boot code, an all-zero partition table and the signature, as a bootloader install
    // onto a whole-disk filesystem leaves them.
    let mut b = std::fs::read(&img).unwrap();
    for (i, x) in b[..440].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(37) | 1;
    }
    b[446..510].fill(0);
    b[510] = 0x55;
    b[511] = 0xAA;
    std::fs::write(&img, &b).unwrap();
    if have("blkid") {
        let out = sh(&format!("blkid -p -o udev '{}' || true", img.display()));
        assert!(out.contains("ID_FS_TYPE=ext2"), "{out}");
    }
    let (m, size, r) = mapped(&img);
    assert!(m < size / 2 && m > 4 << 20, "{m} of {size}");
    assert_eq!(
        r.whole_disk.as_ref().map(|f| f.fs_type.name()),
        Some("ext2")
    );
    assert_eq!(
        blockwise_headline(&img),
        format!(
            "{}: ext2 filesystem on the whole disk (MBR with no partitions)",
            img.display()
        )
    );
    let map = r.usage.as_ref().unwrap().used.clone();
    assert_restores(&img, &map, dir.path());
}

#[test]
fn whole_disk_ext2_beside_an_mbr_table_keeps_its_blocks() {
    if !have_all(&["mke2fs", "debugfs", "e2fsck"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    common::random_file(&img, 24 << 20, 10);
    fill_ext(&img, 0, 24 << 20, "-t ext2", 6);
    // A stale table naming one small partition in the middle of the filesystem.
    let mut b = std::fs::read(&img).unwrap();
    b[446 + 4] = 0x83;
    put_u32(&mut b, 446 + 8, 2048);
    put_u32(&mut b, 446 + 12, 2048);
    b[510] = 0x55;
    b[511] = 0xAA;
    std::fs::write(&img, &b).unwrap();
    let (_, _, r) = mapped(&img);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("a whole-disk ext2 filesystem and a partition table")),
        "{:?}",
        r.warnings
    );
    let head = blockwise_headline(&img);
    assert!(
        head.ends_with("raw disk image (MBR, 1 partition, and a whole-disk ext2)"),
        "{head}"
    );
    let map = r.usage.as_ref().unwrap().used.clone();
    assert_restores(&img, &map, dir.path());
    // --truncate would cut the filesystem's blocks past the partition: refused.
    let out = dir.path().join("t.img.zst");
    let o = common::blockwise()
        .args(["backup", "--truncate"])
        .arg(&img)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("past the last partition are in use"), "{err}");
    assert!(!out.exists());
}
