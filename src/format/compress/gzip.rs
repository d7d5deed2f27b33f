//! gzip (RFC 1952), all members of a multi-member file.

use std::io::{self, Read};
use std::sync::Arc;

use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{size_fact, stream_step, Codec, Compressed, SizeFact};
use crate::io::ReadAt;

impl Format {
    /// gzip stream (RFC 1952), possibly multi-member.
    #[allow(non_upper_case_globals)]
    pub const Gzip: Format = Format::new("gzip", "gzip", Kind::Compression);
}

impl Codec {
    /// gzip, all members.
    #[allow(non_upper_case_globals)]
    pub const Gzip: Codec = Codec::new("gzip", decoder, size);
}

fn decoder(r: Compressed) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
}

/// The size field (ISIZE) that ends the file: only a hint, since it is the size of the last
/// member alone, modulo 4 GiB.
fn size(src: &dyn ReadAt) -> io::Result<SizeFact> {
    use crate::io::ReadAtExt;
    // Header (10) and trailer (8) at least.
    if src.size() < 18 {
        return Ok(SizeFact::Unknown);
    }
    let t = src.read_upto(src.size() - 4, 4)?;
    Ok(match crate::util::le32(&t, 0) {
        Some(n) => SizeFact::Hint {
            size: u64::from(n),
            modulus: Some(1 << 32),
            origin: "the gzip size field (modulo 4 GiB)",
        },
        None => SizeFact::Unknown,
    })
}

/// Recognises the gzip magic with the deflate method.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Gzip
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["gz"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(&[0x1F, 0x8B, 0x08])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let end = ctx.options().stream_end;
        let fact = size_fact(Codec::Gzip, &*src, end)?;
        stream_step(Format::Gzip, Codec::Gzip, src, fact, end)
    }
}
