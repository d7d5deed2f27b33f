//! Raw disk or filesystem images: what is left when no other format recognises the bytes.

use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::ReadAt;

impl Format {
    /// Anything else: a raw disk or filesystem image.
    #[allow(non_upper_case_globals)]
    pub const Raw: Format = Format::new("raw", "raw", Kind::Image);
}

/// Takes anything: last in the registry.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["img", "raw", "dd", "hdd", "sdcard", "wic", "ext4", "fat"]
    }

    fn detect(&self, _p: &Probe<'_>) -> bool {
        true
    }

    fn open(&self, src: Arc<dyn ReadAt>, _ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        Ok(Step::end(Layer::stored(Format::Raw, &*src, None)))
    }
}
