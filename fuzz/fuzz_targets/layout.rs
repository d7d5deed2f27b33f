#![no_main]
//! Partition-table reading over arbitrary bytes (MBR, EBR chains, GPT headers and arrays),
//! with no sector-size hint and with 512- and 4096-byte hints.

use blockwise::source::MemSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = blockwise::layout::read_layout(&src, None);
    let _ = blockwise::layout::read_layout(&src, Some(512));
    let _ = blockwise::layout::read_layout(&src, Some(4096));
});
