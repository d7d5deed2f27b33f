#![no_main]
//! Partition-table reading over arbitrary bytes (MBR, EBR chains, GPT headers and arrays),
//! with no sector-size hint and with 512- and 4096-byte hints. Inputs carrying a GPT are also
//! run with their CRCs repaired so mutations reach the entry parsing. Whatever table is found
//! is also planned for `backup --truncate`.

mod common;

use std::sync::Arc;

use blockwise::io::{MemSource, Overlay, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fn run(data: Vec<u8>) {
    let src = Arc::new(MemSource(data));
    for hint in [None, Some(512), Some(4096)] {
        let Ok(layout) = blockwise::layout::read_layout(&*src, hint) else {
            continue;
        };
        // `backup --truncate` on whatever table was found: the rewrite must stay in range,
        // and the patched view must read back.
        if let Ok(t) = blockwise::archive::truncate::plan_truncation(&*src, &layout) {
            assert!(t.new_size <= src.size());
            let inner: Arc<dyn ReadAt> = src.clone();
            let o = Overlay::new(inner, t.new_size, t.patches)
                .expect("truncation patches are sorted, disjoint and inside the new size");
            let _ = o.read_upto(0, 1 << 16);
            let _ = o.read_upto(o.size().saturating_sub(1 << 16), 1 << 16);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    run(data.to_vec());
    if let Some(fixed) = common::fix_gpt_crcs(data) {
        run(fixed);
    }
});
