#![no_main]
//! Every allocation-map reader over arbitrary bytes, called directly (not only after a
//! successful probe), plus the dispatcher for whatever probe_all recognises: never a panic,
//! and the map never leaves the volume.

use blockwise::fs;
use blockwise::io::{MemSource, ReadAt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    // Each driver has one reader, shared by all the types it reports (ext2-4, squashfs 3/4).
    for used in fs::DRIVERS
        .iter()
        .filter_map(|d| d.types.iter().find_map(|(_, u)| *u))
    {
        let _ = used(&src);
    }
    if let Ok(Some(info)) = fs::probe_all(&src) {
        let u = fs::usage(&src, &info);
        assert!(u.used.end() <= src.size(), "map leaves the volume");
    }
});
