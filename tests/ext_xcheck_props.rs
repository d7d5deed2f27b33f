//! Property: for any damage to an ext image's block and inode bitmaps and group flags (with
//! every checksum made valid again, so nothing looks damaged), the map still covers every
//! block the image's inodes reference. The same check runs as the fuzz target `ext_xcheck`.

#[path = "common/ext_damage.rs"]
mod ext_damage;

use proptest::prelude::*;

#[test]
fn undamaged_fixture_is_covered_and_checksums_round_trip() {
    let img = ext_damage::image();
    ext_damage::check(&img).unwrap();
    // Recomputing every checksum of an undamaged image changes nothing.
    let mut again = img.clone();
    ext_damage::damage(&mut again, &[]);
    assert!(img == again, "checksum recomputation differs from mke2fs's");
}

#[test]
fn every_bitmap_zeroed_and_every_group_block_uninit() {
    let mut img = ext_damage::image();
    let mut ops = Vec::new();
    for g in 0..8u8 {
        ops.extend_from_slice(&[g, 2, 0, 0]);
        ops.extend_from_slice(&[g, 5, 2, 0]);
    }
    ext_damage::damage(&mut img, &ops);
    ext_damage::check(&img).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn map_covers_every_referenced_block(ops in proptest::collection::vec(any::<u8>(), 0..96)) {
        let mut img = ext_damage::image();
        ext_damage::damage(&mut img, &ops);
        if let Err(e) = ext_damage::check(&img) {
            return Err(TestCaseError::fail(e));
        }
    }
}
