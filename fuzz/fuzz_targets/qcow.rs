#![no_main]
//! qcow and qcow2 images from arbitrary bytes: the header, the L1/L2 tables and every kind of
//! cluster (stored, compressed, zero, subclusters) read through the virtual disk. None of it
//! may panic, hang or allocate in proportion to a number read from the input.

use std::path::Path;
use std::sync::Arc;

use blockwise::format::{OpenCtx, OpenOptions, DRIVERS};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

/// Disks up to this size are read whole; larger ones at a sample of offsets.
const READ_WHOLE: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    // The magic is given: mutations go to the fields behind it.
    let mut bytes = data.to_vec();
    if bytes.len() >= 4 {
        bytes[..4].copy_from_slice(b"QFI\xfb");
    }
    let opts = OpenOptions::default();
    for d in DRIVERS
        .iter()
        .filter(|d| matches!(d.format().name(), "qcow" | "qcow2"))
    {
        let mut ctx = OpenCtx::new(&opts, Path::new("fuzz.qcow2"), None);
        let Ok(step) = d.open(Arc::new(MemSource(bytes.clone())), &mut ctx) else {
            continue;
        };
        let Some(disk) = step.inner else { continue };
        let _ = disk.allocated_hint();
        let size = disk.size();
        let mut buf = vec![0u8; 1 << 20];
        if size <= READ_WHOLE {
            let mut at = 0;
            while at < size {
                match disk.read_at(at, &mut buf) {
                    Ok(n) if n > 0 => at += n as u64,
                    // A bad cluster: go on past it.
                    _ => at += buf.len() as u64,
                }
            }
        } else {
            for k in 0..64u64 {
                let at = size / 64 * k + (k * 12_345) % 4096;
                let _ = disk.read_upto(at, 70_000);
            }
            let _ = disk.read_upto(size - 1, 1);
        }
    }
});
