#![no_main]
//! Every filesystem probe over arbitrary bytes: must never panic or allocate without bound.

use blockwise::source::MemSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = blockwise::fs::probe_all(&src);
});
