#![no_main]
//! CD sheets and images over arbitrary bytes: CUE and cdrdao TOC text (resolved with every
//! file they name read from the same bytes) and Nero images (footer, chunk list), then reads
//! of every track's user data at both ends. None of it may panic, hang or allocate in
//! proportion to a number read from the input.

use std::sync::Arc;

use blockwise::format::cd::{cue, nrg, toc, CdDisc};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fn read_tracks(d: &CdDisc) {
    for i in 0..d.tracks.len() {
        let t = &d.tracks[i];
        let _ = (t.start_msf(), t.length_msf(), t.user_sector());
        if let Some(data) = d.track_data(i) {
            let _ = data.read_upto(0, 8192);
            let _ = data.read_upto(data.size().saturating_sub(5000), 8192);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ReadAt> = Arc::new(MemSource(data.to_vec()));
    let _ = cue::looks_like_cue(data);
    let _ = toc::looks_like_toc(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(s) = cue::parse_cue(&text) {
        if let Ok(d) = s.resolve_over(src.clone()) {
            read_tracks(&d);
        }
    }
    if let Ok(s) = toc::parse_toc(&text) {
        if let Ok(d) = s.resolve_over(src.clone()) {
            read_tracks(&d);
        }
    }
    if let Ok(d) = nrg::parse_nrg(src) {
        read_tracks(&d);
    }
});
