#![no_main]
//! Partition-table reading over arbitrary bytes (MBR, EBR chains, GPT headers and arrays),
//! with no sector-size hint and with 512- and 4096-byte hints. Inputs carrying a GPT are also
//! run with their CRCs repaired so mutations reach the entry parsing.

mod common;

use blockwise::source::MemSource;
use libfuzzer_sys::fuzz_target;

fn run(data: Vec<u8>) {
    let src = MemSource(data);
    let _ = blockwise::layout::read_layout(&src, None);
    let _ = blockwise::layout::read_layout(&src, Some(512));
    let _ = blockwise::layout::read_layout(&src, Some(4096));
}

fuzz_target!(|data: &[u8]| {
    run(data.to_vec());
    if let Some(fixed) = common::fix_gpt_crcs(data) {
        run(fixed);
    }
});
