#![no_main]
//! Format recognition and every format driver over arbitrary bytes: none of it may panic,
//! hang or allocate in proportion to a number read from the input.

use std::path::Path;
use std::sync::Arc;

use blockwise::format::cd::{self, cue};
use blockwise::format::compress::{xz, zstd};
use blockwise::format::container::android_sparse;
use blockwise::format::{self, OpenCtx, OpenOptions, DRIVERS};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = format::sniff(&src);
    let _ = format::trailer_format(data);
    let _ = cue::looks_like_cue(data);

    // Android sparse: index and, if it parses, read a little of the expansion.
    if let Ok(s) = android_sparse::AndroidSparse::open(Arc::new(src.clone())) {
        let n = s.size().min(1 << 16) as usize;
        let _ = s.read_upto(0, n);
        let _ = s.read_upto(s.size().saturating_sub(100), 100);
        let _ = s.allocated_hint();
    }

    // CUE sheets (lossy text), and a CD user-data view over the bytes.
    let _ = cue::parse_cue(&String::from_utf8_lossy(data));
    let _ = cd::raw_sector_mode(data);
    if let Ok(u) = cd::CdUserData::raw(Arc::new(src.clone()), 0, 1, None) {
        let _ = u.read_upto(0, 4096);
    }

    // Every driver, whatever the bytes are recognised as: header parsers, indexes (xz blocks,
    // zstd seek tables) and decoders. Read a little at both ends of what each opens, so block
    // headers, checks and frames are all parsed.
    let opts = OpenOptions::default();
    for d in DRIVERS {
        let mut ctx = OpenCtx::new(&opts, Path::new("fuzz"), None);
        if let Ok(step) = d.open(Arc::new(src.clone()), &mut ctx) {
            if let Some(inner) = step.inner {
                let _ = inner.read_upto(0, 4096);
                let _ = inner.read_upto(inner.size().saturating_sub(4096), 4096);
            }
        }
    }

    // Size discovery from xz indexes and zstd frame headers.
    let _ = xz::size_from_index(&src);
    let _ = zstd::size_from_frames(&src);

    // The whole opening loop over the bytes.
    if let Ok(o) = format::open_source(Arc::new(src), "fuzz", &opts) {
        let _ = o.source.read_upto(0, 4096);
    }
});
