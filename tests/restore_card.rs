//! The restore proof on a whole partitioned card (the bundled sample: MBR, a bootloader blob at
//! sector 16, FAT32 boot, ext4 root with deleted data in free space): write only the mapped
//! ranges onto a target full of random bytes through a loop device, then both filesystems
//! check clean, every file reads back identical, and the bootloader bytes are there.

mod common;

use std::sync::Arc;

use blockwise::io::{MemSource, ReadAt};
use blockwise::map::image_map;
use blockwise::scan::scan_source;
use common::*;

#[test]
fn sample_card_restores_from_mapped_ranges_only() {
    if !(is_root() && have_all(&["mcopy", "fsck.vfat", "e2fsck", "losetup", "mount"])) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let data = std::fs::read(&img).unwrap();
    let src: Arc<dyn ReadAt> = Arc::new(MemSource(data.clone()));
    let scan = scan_source(src.clone(), None).unwrap();
    let map = image_map(&scan).unwrap();
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
    drop(lp);
    let parts = [
        (
            scan.layout.partitions[0].start,
            scan.layout.partitions[0].size,
        ),
        (
            scan.layout.partitions[1].start,
            scan.layout.partitions[1].size,
        ),
    ];
    assert_card_equivalent(&img, &target, &parts);
}
