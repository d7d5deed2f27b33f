#![no_main]
//! Format sniffing and container/sparse/CUE header parsing over arbitrary bytes.

use blockwise::source::MemSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = blockwise::source::sniff::sniff(&src);
});
