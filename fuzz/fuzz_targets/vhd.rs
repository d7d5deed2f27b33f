#![no_main]
//! VHD and VHDX over arbitrary bytes: opening (footer, dynamic header, BAT, parent locators;
//! headers, region table, metadata, log, BAT) and reading the disk in bounded samples must not
//! panic, hang or allocate in proportion to a number read from the input.

use std::path::Path;
use std::sync::Arc;

use blockwise::format::{Format, OpenCtx, OpenOptions, DRIVERS};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = OpenOptions::default();
    for d in DRIVERS {
        if d.format() != Format::Vhd && d.format() != Format::Vhdx {
            continue;
        }
        let mut ctx = OpenCtx::new(&opts, Path::new("fuzz"), None);
        let Ok(step) = d.open(Arc::new(MemSource(data.to_vec())), &mut ctx) else {
            continue;
        };
        let Some(disk) = step.inner else {
            continue;
        };
        let _ = disk.allocated_hint();
        // The head, the tail and 16 places between, 64 KiB each at most.
        let size = disk.size();
        for k in 0..=17u64 {
            let at = match k {
                0 => 0,
                17 => size.saturating_sub(65536),
                k => size / 17 * k,
            };
            let _ = disk.read_upto(at, 65536);
        }
    }
});
