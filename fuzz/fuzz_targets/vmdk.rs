#![no_main]
//! VMDK (sparse extents, streamOptimized, descriptors), VDI and tar/.ova over arbitrary bytes:
//! open each through its driver, then read the disk in bounded samples (start, end and spread
//! offsets), its allocated hint included. Nothing may panic, hang or allocate in proportion to
//! a number read from the input.

use std::path::Path;
use std::sync::Arc;

use blockwise::format::{self, Format, OpenCtx, OpenOptions, DRIVERS};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let opts = OpenOptions::default();
    for d in DRIVERS.iter().filter(|d| {
        [Format::VmdkSparse, Format::VmdkDescriptor, Format::Vdi, Format::Tar].contains(&d.format())
    }) {
        let mut ctx = OpenCtx::new(&opts, Path::new("fuzz"), None);
        let Ok(step) = d.open(Arc::new(src.clone()), &mut ctx) else {
            continue;
        };
        let Some(disk) = step.inner else { continue };
        let _ = disk.allocated_hint();
        let size = disk.size();
        for i in 0..16u64 {
            let at = size / 16 * i;
            let _ = disk.read_upto(at, 64 << 10);
        }
        let _ = disk.read_upto(size.saturating_sub(4096), 4096);
    }
    // The whole opening loop too (a tar holding a VMDK goes on into it).
    if let Ok(o) = format::open_source(Arc::new(src), "fuzz", &opts) {
        let _ = o.source.read_upto(0, 64 << 10);
    }
});
