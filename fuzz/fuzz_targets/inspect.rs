#![no_main]
//! The whole `inspect` pipeline (layout, then probes of every partition) over arbitrary bytes.

use std::sync::Arc;

use blockwise::source::MemSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = Arc::new(MemSource(data.to_vec()));
    let _ = blockwise::inspect::inspect_source(src, None, "fuzz".into(), Vec::new());
});
