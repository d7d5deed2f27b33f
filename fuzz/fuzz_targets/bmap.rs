#![no_main]
//! The bmap reader over arbitrary bytes: a clear error or a map whose ranges are ascending,
//! disjoint and inside the image — never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = blockwise::bmap::parse(data) {
        let mut prev: Option<u64> = None;
        for r in &b.ranges {
            assert!(r.first <= r.last && r.last < b.blocks_count);
            assert!(prev.is_none_or(|p| r.first > p));
            prev = Some(r.last);
        }
        let _ = b.extent_map();
    }
});
