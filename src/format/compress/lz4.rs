//! LZ4 frame format.

use std::io::{self, Read};
use std::sync::Arc;

use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{size_fact, stream_step, Codec, Compressed, SizeFact};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le32, le64};

impl Format {
    /// LZ4 frame format.
    #[allow(non_upper_case_globals)]
    pub const Lz4: Format = Format::new("lz4", "lz4", Kind::Compression);
}

impl Codec {
    /// lz4 frame format.
    #[allow(non_upper_case_globals)]
    pub(crate) const Lz4: Codec = Codec::new("lz4", decoder, size);
}

const MAGIC: u32 = 0x184D_2204;

fn decoder(r: Compressed) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(lz4_flex::frame::FrameDecoder::new(r)))
}

/// The first frame's content size, when its descriptor carries one: only a hint, since more
/// frames may follow.
fn size(src: &dyn ReadAt) -> io::Result<SizeFact> {
    let h = src.read_upto(0, 14)?;
    let flg = h.get(4).copied().unwrap_or(0);
    Ok(match le64(&h, 6) {
        Some(n) if le32(&h, 0) == Some(MAGIC) && flg & 0x08 != 0 => SizeFact::Hint {
            size: n,
            modulus: None,
            origin: "the lz4 frame content size",
        },
        _ => SizeFact::Unknown,
    })
}

/// Recognises the LZ4 frame magic.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Lz4
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["lz4"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        le32(p.head(), 0) == Some(MAGIC)
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let end = ctx.options().stream_end;
        let fact = size_fact(Codec::Lz4, &*src, end)?;
        stream_step(Format::Lz4, Codec::Lz4, src, fact, end)
    }
}
