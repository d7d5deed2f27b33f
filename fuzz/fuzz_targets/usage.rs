#![no_main]
//! Every allocation-map reader over arbitrary bytes, called directly (not only after a
//! successful probe), plus the dispatcher for whatever probe_all recognises: never a panic,
//! and the map never leaves the volume.

use blockwise::fs;
use blockwise::io::{MemSource, ReadAt};
use libfuzzer_sys::fuzz_target;

type UsedFn = fn(&dyn ReadAt) -> blockwise::Result<fs::Usage>;
const READERS: &[UsedFn] = &[
    fs::ext::used,
    fs::fat::used,
    fs::exfat::used,
    fs::ntfs::used,
    fs::xfs::used,
    fs::btrfs::used,
    fs::f2fs::used,
    fs::swap::used,
    fs::squashfs::used,
    fs::iso9660::used,
    fs::udf::used,
];

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    for used in READERS {
        let _ = used(&src);
    }
    if let Ok(Some(info)) = fs::probe_all(&src) {
        let u = fs::usage(&src, &info);
        assert!(u.used.end() <= src.size(), "map leaves the volume");
    }
});
