//! ISO9660 images in 2048-byte sectors: the end of the chain, probed as a whole-disk
//! filesystem (plus any isohybrid MBR or GPT) by the layers above.

use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::ReadAt;

impl Format {
    /// ISO9660 image in 2048-byte sectors.
    #[allow(non_upper_case_globals)]
    pub const Iso9660: Format = Format::new("iso9660", "iso9660", Kind::Image);
}

/// Recognises the primary volume descriptor's `CD001` at sector 16.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Iso9660
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["iso"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().get(32769..32774) == Some(b"CD001")
    }

    fn open(&self, src: Arc<dyn ReadAt>, _ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        Ok(Step::end(Layer::stored(Format::Iso9660, &*src, None)))
    }
}
