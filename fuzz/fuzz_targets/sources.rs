#![no_main]
//! Format sniffing and container/sparse/CUE header parsing over arbitrary bytes: none of it
//! may panic, hang or allocate in proportion to a number read from the input.

use std::sync::Arc;

use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use blockwise::format::{android_sparse, cd, container, open, sniff, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = MemSource(data.to_vec());
    let _ = sniff::sniff(&src);
    let _ = sniff::sniff_head(data);
    let _ = sniff::looks_like_cue(data);

    // Android sparse: index and, if it parses, read a little of the expansion.
    if let Ok(s) = android_sparse::AndroidSparse::open(Arc::new(src.clone())) {
        let n = s.size().min(1 << 16) as usize;
        let _ = s.read_upto(0, n);
        let _ = s.read_upto(s.size().saturating_sub(100), 100);
        let _ = s.allocated_hint();
    }

    // CUE sheets (lossy text), and a CD user-data view over the bytes.
    let _ = cd::parse_cue(&String::from_utf8_lossy(data));
    let _ = cd::raw_sector_mode(data);
    if let Ok(u) = cd::CdUserData::raw(Arc::new(src.clone()), 0, 1, None) {
        let _ = u.read_upto(0, 4096);
    }

    // Every container header parser, whatever the sniffer said.
    for f in [
        Format::Qcow,
        Format::Qcow2,
        Format::Vhd,
        Format::Vhdx,
        Format::VmdkSparse,
        Format::VmdkDescriptor,
        Format::Vdi,
        Format::Dmg,
    ] {
        let _ = container::inspect(&src, f);
    }

    // Size discovery from xz indexes and zstd frame headers.
    let _ = blockwise::format::stream::xz_size_from_index(&src);
    let _ = blockwise::format::stream::zstd_size(&src);

    // Random access through an xz index and a seekable-zstd seek table: read a little at both
    // ends, so block headers, checks and frames are all parsed.
    if let Ok(Some(x)) = blockwise::format::XzBlocks::open(Arc::new(src.clone())) {
        let _ = x.read_upto(0, 4096);
        let _ = x.read_upto(x.size().saturating_sub(4096), 4096);
    }
    if let Ok(Some(z)) = blockwise::format::SeekableZstd::open(Arc::new(src.clone())) {
        let _ = z.read_upto(0, 4096);
        let _ = z.read_upto(z.size().saturating_sub(4096), 4096);
    }

    // The whole opening pipeline over the bytes.
    if let Ok(o) = open::open_source(Arc::new(src), "fuzz", &open::OpenOptions::default()) {
        let _ = o.source.read_upto(0, 4096);
    }
});
