#![no_main]
//! Random damage to the ext fixture's block and inode bitmaps and group flags, with every
//! checksum made valid again: the map must still cover every block the inodes reference
//! (the property of tests/ext_xcheck_props.rs, driven by coverage instead of proptest).

#[path = "../../tests/common/ext_damage.rs"]
mod ext_damage;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: &[u8]| {
    let mut img = ext_damage::image();
    ext_damage::damage(&mut img, ops);
    if let Err(e) = ext_damage::check(&img) {
        panic!("{e}");
    }
});
