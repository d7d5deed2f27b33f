#![no_main]
//! Every filesystem probe over arbitrary bytes: must never panic or allocate without bound.
//! `probe_all` stops at the first match, so each probe is also run on its own: a weak early
//! match must not hide a crash in a later probe.

use blockwise::fs;
use blockwise::io::{MemSource, ReadAt};
use libfuzzer_sys::fuzz_target;

type Probe = fn(&dyn ReadAt) -> blockwise::Result<Option<fs::FsInfo>>;
const PROBES: &[Probe] = &[
    fs::lvm::probe,
    fs::luks::probe_primary,
    fs::luks::probe,
    fs::swap::probe,
    fs::btrfs::probe,
    fs::xfs::probe,
    fs::ext::probe,
    fs::f2fs::probe,
    fs::squashfs::probe,
    fs::udf::probe,
    fs::iso9660::probe,
    fs::ntfs::probe,
    fs::exfat::probe,
    fs::fat::probe,
];

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = fs::probe_all(&src);
    for p in PROBES {
        let _ = p(&src);
    }
});
