//! The restore proof on a whole partitioned card (the bundled sample: MBR, a bootloader blob at
//! sector 16, FAT32 boot, ext4 root with deleted data in free space): write only the mapped
//! ranges onto a target full of random bytes through a loop device, then both filesystems
//! check clean, every file reads back identical, and the bootloader bytes are there.

mod common;

use std::process::Command;
use std::sync::Arc;

use blockwise::inspect::inspect_source;
use blockwise::map::image_map;
use blockwise::source::{MemSource, ReadAt};
use common::*;

fn fat_files(image: &std::path::Path, offset: u64, out: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -s -n -i '{}@@{offset}' ::/ '{}'",
        image.display(),
        out.display()
    ));
}

#[test]
fn sample_card_restores_from_mapped_ranges_only() {
    for t in ["mcopy", "fsck.vfat", "e2fsck", "losetup", "mount"] {
        if !have(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let data = std::fs::read(&img).unwrap();
    let src: Arc<dyn ReadAt> = Arc::new(MemSource(data.clone()));
    let report = inspect_source(src.clone(), None, "card".into(), vec![]).unwrap();
    let map = image_map(&src, &report);
    eprintln!(
        "mapped {} of {} bytes ({:.1}%) in {} ranges",
        map.mapped,
        map.image_size,
        map.mapped as f64 * 100.0 / map.image_size as f64,
        map.used.len()
    );
    assert!(
        map.mapped < map.image_size,
        "the sample has free space to skip"
    );
    let Some((tdir, lp)) = restore_onto_random(&img, &map.used) else {
        return;
    };
    let target = tdir.path().join("target.img");
    let restored = std::fs::read(&lp.dev).unwrap();
    // Everything before the first partition (MBR + the bootloader at sector 16) is back.
    let p1 = report.partitions[0].start as usize;
    assert!(restored[..p1] == data[..p1], "bootloader area differs");

    // FAT32 boot partition: fsck clean, files identical.
    let p1_off = report.partitions[0].start;
    let fat_lp = Command::new("losetup")
        .args([
            "-f",
            "--show",
            "-r",
            "-o",
            &p1_off.to_string(),
            "--sizelimit",
        ])
        .arg(report.partitions[0].size.to_string())
        .arg(&lp.dev)
        .output()
        .unwrap();
    let fat_dev = String::from_utf8_lossy(&fat_lp.stdout).trim().to_string();
    let fsck = Command::new("fsck.vfat")
        .args(["-n", &fat_dev])
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &fat_dev]).status();
    assert!(
        fsck.status.success(),
        "fsck.vfat: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let (a, b) = (dir.path().join("fat-a"), dir.path().join("fat-b"));
    fat_files(&img, p1_off, &a);
    fat_files(&target, p1_off, &b);
    let ha = tree_hashes(&a);
    assert!(!ha.is_empty());
    assert_eq!(ha, tree_hashes(&b), "FAT files differ");

    // ext4 root: e2fsck clean, files identical through a read-only mount.
    let p2 = &report.partitions[1];
    let ext_lp = Command::new("losetup")
        .args(["-f", "--show", "-o", &p2.start.to_string(), "--sizelimit"])
        .arg(p2.size.to_string())
        .arg(&lp.dev)
        .output()
        .unwrap();
    let ext_dev = String::from_utf8_lossy(&ext_lp.stdout).trim().to_string();
    let fsck = Command::new("e2fsck")
        .args(["-fn", &ext_dev])
        .output()
        .unwrap();
    let mnt = dir.path().join("mnt-b");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-o", "ro,noload", &ext_dev])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    let hb = if mounted {
        tree_hashes(&mnt)
    } else {
        Default::default()
    };
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &ext_dev]).status();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert!(mounted, "restored ext4 mounts");
    // The original's files, through a loop mount of the untouched image.
    let orig = Loop::attach_offset(&img, p2.start, p2.size).expect("loop");
    let mnt_a = dir.path().join("mnt-a");
    std::fs::create_dir_all(&mnt_a).unwrap();
    sh(&format!(
        "mount -o ro,noload {} '{}'",
        orig.dev,
        mnt_a.display()
    ));
    let ha = tree_hashes(&mnt_a);
    sh(&format!("umount '{}'", mnt_a.display()));
    assert!(ha.len() > 3);
    assert_eq!(ha, hb, "ext4 files differ");
}
