//! xz: every stream of a concatenated file. A file whose index lists blocks small enough is
//! read block by block with random access (`xz_blocks`); any other is decoded front to
//! back with liblzma's multi-threaded decoder, its size taken from the index.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use super::xz_blocks::{block_table, Block, XzBlocks};
use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{end_is_cheap, stream_step, Codec, Compressed, SizeFact, StreamEnd};
use crate::io::ReadAt;

impl Format {
    /// xz stream.
    #[allow(non_upper_case_globals)]
    pub const Xz: Format = Format::new("xz", "xz", Kind::Compression);
}

impl Codec {
    /// xz, all streams, multi-threaded when blocks carry sizes.
    #[allow(non_upper_case_globals)]
    pub const Xz: Codec = Codec::new("xz", decoder, |src| {
        Ok(size_fact(block_table(src)?.as_deref()))
    });
}

fn decoder(r: Compressed) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(XzMulti::new(r)?))
}

/// The exact size the index gives, if the file has a usable one.
fn size_fact(blocks: Option<&[Block]>) -> SizeFact {
    match blocks {
        Some(b) => SizeFact::exact(b.last().map_or(0, |l| l.out_off + l.out_len), "xz index"),
        None => SizeFact::Unknown,
    }
}

/// Exact decoded size of an xz file from its stream footers and indexes, reading only a few
/// KiB from the end of each stream. `None` if the structure does not add up (then the caller
/// decodes to learn the size, and the decoder reports the corruption).
pub fn size_from_index(src: &dyn ReadAt) -> io::Result<Option<u64>> {
    Ok(match size_fact(block_table(src)?.as_deref()) {
        SizeFact::Exact { size, .. } => Some(size),
        _ => None,
    })
}

/// Recognises the xz stream header magic.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Xz
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["xz"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let end = ctx.options().stream_end;
        // The index is read once: it either drives random access or gives the stream its size.
        // It sits at the end, which an xz inside a stream opened Deferred does not decode to.
        let blocks = if end == StreamEnd::Eager || end_is_cheap(&*src) {
            block_table(&*src)?
        } else {
            None
        };
        let fact = size_fact(blocks.as_deref());
        if let Some(b) = blocks {
            if let Some(s) = XzBlocks::from_table(src.clone(), b)? {
                let detail = format!(
                    "{} blocks, decodes to {} bytes (random access)",
                    s.block_count(),
                    s.size()
                );
                let layer = Layer::stored(Format::Xz, &*src, Some(detail));
                return Ok(Step::inner(layer, Arc::new(s)));
            }
        }
        stream_step(Format::Xz, Codec::Xz, src, fact, end)
    }
}

/// Decodes concatenated xz streams with liblzma's multi-threaded decoder.
///
/// liblzma's threaded decoder cannot be told to accept concatenated streams through the
/// crate's builder, so each stream gets its own decoder and the stream padding (zero bytes)
/// between them is skipped here.
struct XzMulti<R: BufRead> {
    dec: Option<liblzma::bufread::XzDecoder<R>>,
    done: bool,
}

fn xz_mt_stream() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(64) as u32;
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        // Below this much memory liblzma keeps using threads; above it, it falls back to one
        // thread rather than failing. Without a limit it would also be threaded, but an
        // explicit, generous bound keeps a hostile header from asking for unbounded memory.
        .memlimit_threading(1 << 30)
        .memlimit_stop(4 << 30)
        .decoder()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xz: {e}")))
}

impl<R: BufRead> XzMulti<R> {
    fn new(r: R) -> io::Result<Self> {
        Ok(XzMulti {
            dec: Some(liblzma::bufread::XzDecoder::new_stream(r, xz_mt_stream()?)),
            done: false,
        })
    }
}

impl<R: BufRead> Read for XzMulti<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // End of one stream: skip padding, then start over if more input follows.
            let Some(dec) = self.dec.take() else {
                return Ok(0);
            };
            let mut r = dec.into_inner();
            loop {
                let avail = r.fill_buf()?;
                if avail.is_empty() {
                    self.done = true;
                    return Ok(0);
                }
                let zeros = avail.iter().take_while(|&&b| b == 0).count();
                if zeros == 0 {
                    break;
                }
                r.consume(zeros);
            }
            self.dec = Some(liblzma::bufread::XzDecoder::new_stream(r, xz_mt_stream()?));
        }
    }
}
