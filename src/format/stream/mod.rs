//! Random access over streaming decompressors.
//!
//! gzip, xz, zstd, bzip2, lz4 and deflate (zip members) can only be decoded forward. A
//! [`StreamSource`] decodes forward on demand: a read at or after the decoder's position
//! decodes up to it, a read behind it restarts from the beginning. The 1 MiB chunks that reads
//! actually asked for are kept in a bounded LRU cache, so the probes' typical pattern (the same
//! partition starts read again and again) does not restart the decoder.
//!
//! The decoded size is taken from the codec's headers when they give it exactly (xz index,
//! zstd frame headers, a zip directory entry). Otherwise `StreamEnd` decides: learnt at open
//! by decoding once to the end with bounded memory, or reported as a hint (gzip's size field,
//! lz4's content size, the compressed size) that becomes exact when a reader reaches the end.
//! Each codec ([`Codec`]) is defined in its format's file.

use std::io;
use std::sync::Arc;

use crate::format::driver::{Layer, Step};
use crate::format::kind::Format;
use crate::io::{ReadAt, SizeKnown};

pub(crate) mod codec;
mod size;
mod source;

pub(crate) use codec::{end_is_cheap, Compressed, ReadAtReader, SizeFact, StreamEnd};
pub use codec::{Codec, CHUNK};
pub use source::StreamSource;

/// The layer of a compression `format` decoded as one stream with `codec`, whose headers say
/// `fact` about its decoded size: the decoder and the layer's detail ("decodes to N bytes
/// (size from xz index)").
pub(crate) fn stream_step(
    format: Format,
    codec: Codec,
    src: Arc<dyn ReadAt>,
    fact: SizeFact,
    end: StreamEnd,
) -> crate::Result<Step> {
    let s = StreamSource::open(codec, src.clone(), fact, end)?;
    let detail = match s.caps().size {
        SizeKnown::Exact => format!(
            "decodes to {} bytes (size from {})",
            s.size(),
            s.size_origin()
        ),
        SizeKnown::Hint => format!(
            "size learnt while decoding (hint: {} bytes, from {})",
            s.size(),
            s.size_origin()
        ),
    };
    let free = s.tail_cached();
    Ok(Step::inner(Layer::stored(format, &*src, Some(detail)), Arc::new(s)).with_free_tail(free))
}

/// What `codec`'s headers in `src` say about its decoded size. With [`StreamEnd::Deferred`], a
/// compressed source that is itself a stream is not decoded to its end for a size field.
pub(crate) fn size_fact(codec: Codec, src: &dyn ReadAt, end: StreamEnd) -> io::Result<SizeFact> {
    if end == StreamEnd::Eager || end_is_cheap(src) {
        codec.size_fact(src)
    } else {
        Ok(SizeFact::Unknown)
    }
}
