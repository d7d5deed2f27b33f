//! What every sheet driver (CUE, cdrdao TOC, Nero) does once it has its disc: the layer naming
//! the tracks, with the first data track's user data inside. Apart from the `cd` façade
//! (`mod.rs`), which the format driver types import, so that the two never import each other.

use std::path::Path;
use std::sync::Arc;

use super::CdDisc;
use crate::format::driver::{Layer, OpenCtx, Step};
use crate::format::kind::Format;
use crate::io::{ReadAt, ReadAtExt};

/// Opens a text sheet of `format` (at most `max` bytes) whose files lie beside it: its text is
/// read, `resolve` parses it and finds its files in the directory, and [`sheet_step`] makes
/// the layer. A sheet inside an archive or in memory cannot reach its files: the chain ends
/// with its layer.
pub(crate) fn open_sheet(
    format: Format,
    max: usize,
    src: &dyn ReadAt,
    ctx: &mut OpenCtx<'_>,
    resolve: impl FnOnce(&str, &Path) -> crate::Result<CdDisc>,
) -> crate::Result<Step> {
    let Some(dir) = ctx.sibling_dir().map(Path::to_path_buf) else {
        return Ok(Step::end(Layer::stored(format, src, None)));
    };
    let text = src.read_upto(0, max)?;
    let disc = resolve(&String::from_utf8_lossy(&text), &dir)?;
    sheet_step(format, src, disc, ctx)
}

/// The step a sheet driver returns: its own layer (naming the tracks) and the first data
/// track's user data inside, or the end of the chain for an audio CD. The tracks are recorded
/// for `inspect`.
pub(crate) fn sheet_step(
    format: Format,
    src: &dyn ReadAt,
    disc: CdDisc,
    ctx: &mut OpenCtx<'_>,
) -> crate::Result<Step> {
    let layer = Layer::stored(format, src, Some(disc.summary()));
    for w in &disc.warnings {
        ctx.warn(w.clone());
    }
    for t in &disc.tracks {
        if t.length == 0 {
            ctx.warn(format!(
                "track {} ({}) holds no sectors: its file {:?} ends before it starts",
                t.number,
                t.mode.name(),
                t.file
            ));
        }
    }
    // An audio CD opens to nothing: no data track holds a disk image, and the sheet's own
    // bytes are not one either.
    let step = if let Some(t) = disc.first_data_track() {
        let mut step = Step::inner(layer, disc.data_source()?);
        // A sheet names the file of its data track: shown as a layer of its own (a Nero
        // image holds its sectors itself).
        let file = t
            .segments
            .iter()
            .find_map(|s| s.file)
            .and_then(|f| disc.files.get(f));
        if let Some(f) = file.filter(|_| format != Format::Nrg) {
            step.layers.push(Layer::stored(
                Format::CdRaw,
                &*f.src,
                Some(format!(
                    "{} sectors of {} bytes",
                    t.mode.name(),
                    t.sector_size
                )),
            ));
        }
        step
    } else {
        Step::inner(layer, Arc::new(crate::io::MemSource(Vec::new())))
    };
    ctx.set_cd_tracks(disc.tracks);
    Ok(step)
}
