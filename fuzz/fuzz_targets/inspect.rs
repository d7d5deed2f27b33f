#![no_main]
//! The whole `inspect` pipeline (layout, then probes of every partition) over arbitrary bytes.
//! Inputs carrying a GPT are also run with their CRCs repaired so mutations reach partitions.

mod common;

use std::sync::Arc;

use blockwise::io::MemSource;
use libfuzzer_sys::fuzz_target;

fn run(data: Vec<u8>) {
    let src = Arc::new(MemSource(data));
    let _ = blockwise::report::inspect_source(src, None, "fuzz");
}

fuzz_target!(|data: &[u8]| {
    run(data.to_vec());
    if let Some(fixed) = common::fix_gpt_crcs(data) {
        run(fixed);
    }
});
