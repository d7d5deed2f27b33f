//! bzip2, all streams of a concatenated file. It has no size field.

use std::io::{self, Read};
use std::sync::Arc;

use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{stream_step, Codec, Compressed, SizeFact};
use crate::io::ReadAt;

impl Format {
    /// bzip2 stream.
    #[allow(non_upper_case_globals)]
    pub const Bzip2: Format = Format::new("bzip2", "bzip2", Kind::Compression);
}

impl Codec {
    /// bzip2, all streams.
    #[allow(non_upper_case_globals)]
    pub(crate) const Bzip2: Codec = Codec::new("bzip2", decoder, |_| Ok(SizeFact::Unknown));
}

fn decoder(r: Compressed) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(r)))
}

/// Recognises `BZh` with a block size digit and the first block's magic.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Bzip2
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["bz2"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        let h = p.head();
        h.starts_with(b"BZh")
            && h.get(3).is_some_and(|c| (b'1'..=b'9').contains(c))
            && h.get(4..10) == Some(&[0x31, 0x41, 0x59, 0x26, 0x53, 0x59][..])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let end = ctx.options().stream_end;
        stream_step(Format::Bzip2, Codec::Bzip2, src, SizeFact::Unknown, end)
    }
}
