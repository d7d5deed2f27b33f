#![no_main]
//! Every filesystem probe over arbitrary bytes: must never panic or allocate without bound.
//! `probe_all` stops at the first match, so each driver's probe is also run on its own: a weak
//! early match must not hide a crash in a later probe.

use blockwise::fs;
use blockwise::io::MemSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = fs::probe_all(&src);
    for d in fs::DRIVERS {
        let _ = (d.probe)(&src);
    }
});
