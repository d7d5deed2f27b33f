//! Raw CD sectors (a `.bin` track file without, or found before, its CUE sheet): read as the
//! 2048-byte user data of one MODE1 or MODE2 form 1 data track.

use std::sync::Arc;

use std::path::Path;

use super::{
    cue, raw_sector_mode, CdDisc, CdUserData, DiscFile, Segment, Track, TrackMode, CD_SYNC,
    RAW_SECTOR,
};
use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};

impl Format {
    /// Raw 2352-byte CD sectors (a `.bin` track file).
    #[allow(non_upper_case_globals)]
    pub const CdRaw: Format = Format::new("cd-raw", "raw cd sectors (bin)", Kind::Cd);
}

/// Recognises raw CD sectors by the sync pattern of the first two.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::CdRaw
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["bin"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        let h = p.head();
        h.starts_with(&CD_SYNC) && h.get(2352..2364) == Some(&CD_SYNC[..])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let head = src.read_upto(0, RAW_SECTOR as usize)?;
        let mode = raw_sector_mode(&head).unwrap_or(1);
        let name = ctx.path().file_name().and_then(|n| n.to_str());
        let named = ctx
            .sibling_dir()
            .zip(name)
            .is_some_and(|(dir, name)| cue::sheet_names(dir, name));
        if ctx.depth() == 0 && !named {
            ctx.warn(format!(
                "raw CD image without its .cue sheet; track layout guessed (MODE{mode}/2352 data track)"
            ));
        }
        let layer_src = src.clone();
        let user = CdUserData::raw(src, 0, mode, None)?;
        // Inside a sheet's data track (raw sectors where the sheet said cooked ones) the
        // sheet's tracks stand; only a lone BIN has its one track guessed.
        if ctx.cd_tracks.is_empty() {
            let disc = lone_bin_disc(layer_src.clone(), mode, ctx.path());
            ctx.set_cd_tracks(disc.tracks);
        }
        let layer = Layer::stored(
            Format::CdRaw,
            &*layer_src,
            Some(format!("MODE{mode}/2352, {} sectors", user.sectors())),
        );
        Ok(Step::inner(layer, Arc::new(user)))
    }
}

/// A lone BIN as a disc: one MODE1 (`mode` 1) or MODE2 (`mode` 2) track of raw sectors over
/// the whole file, named after `path`.
pub(crate) fn lone_bin_disc(src: Arc<dyn ReadAt>, mode: u8, path: &Path) -> CdDisc {
    let sectors = src.size() / RAW_SECTOR;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut disc = CdDisc {
        tracks: vec![Track {
            number: 1,
            session: 1,
            mode: if mode == 2 {
                TrackMode::Mode2_2352
            } else {
                TrackMode::Mode1_2352
            },
            sector_size: RAW_SECTOR as u32,
            form2: false,
            start: 0,
            length: sectors.min(u64::from(u32::MAX)) as u32,
            index0: None,
            pregap: 0,
            file: name.clone(),
            segments: vec![Segment {
                file: Some(0),
                offset: 0,
                sectors,
            }],
        }],
        files: vec![DiscFile {
            name,
            src,
            swap_audio: false,
        }],
        warnings: Vec::new(),
    };
    disc.detect_forms();
    disc
}
