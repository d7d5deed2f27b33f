//! 7-Zip archives: identified only (extract the image first).

use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::ReadAt;

impl Format {
    /// 7-Zip archive.
    #[allow(non_upper_case_globals)]
    pub const SevenZip: Format = Format::new("seven-zip", "7z", Kind::Archive);
}

/// Recognises the 7z signature.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::SevenZip
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["7z"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        ctx.warn("7z archive: not decoded by this version; extract the image first");
        Ok(Step::end(Layer::stored(Format::SevenZip, &*src, None)))
    }
}
