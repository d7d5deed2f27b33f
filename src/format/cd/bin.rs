//! Raw CD sectors (a `.bin` track file without, or found before, its CUE sheet): read as the
//! 2048-byte user data of one MODE1 or MODE2 form 1 data track.

use std::sync::Arc;

use super::{cue, raw_sector_mode, CdUserData, Track, TrackMode, CD_SYNC, RAW_SECTOR};
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
        ctx.set_cd_tracks(vec![Track {
            number: 1,
            mode: if mode == 2 {
                TrackMode::Mode2_2352
            } else {
                TrackMode::Mode1_2352
            },
            file: 0,
            index0: None,
            start: 0,
            pregap: 0,
        }]);
        let layer = Layer::stored(
            Format::CdRaw,
            &*layer_src,
            Some(format!("MODE{mode}/2352, {} sectors", user.sectors())),
        );
        Ok(Step::inner(layer, Arc::new(user)))
    }
}
