//! Random access over streaming decompressors.
//!
//! gzip, xz, zstd, bzip2, lz4 and deflate (zip members) can only be decoded forward. A
//! [`StreamSource`] decodes forward on demand: a read at or after the decoder's position
//! decodes up to it, a read behind it restarts from the beginning. The 1 MiB chunks that reads
//! actually asked for are kept in a bounded LRU cache, so the probes' typical pattern (the same
//! partition starts read again and again) does not restart the decoder.
//!
//! The decoded size is taken from the codec's headers when they give it exactly (xz index,
//! zstd frame headers, a zip directory entry) and otherwise learnt by decoding once to the end
//! with bounded memory. Each codec ([`Codec`]) is defined in its format's file.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use super::{Format, Layer, Step};
use crate::io::{Access, Caps, ReadAt};

/// Size of a cached decoded chunk.
pub const CHUNK: usize = 1 << 20;
/// Maximum number of cached chunks (64 MiB in total).
pub const MAX_CACHED_CHUNKS: usize = 64;
/// Chunks cached while learning the size by a full decode pass: the first few MiB, where the
/// partition table and most superblocks live.
const SIZE_PASS_CACHED: u64 = 4;
/// Buffer between the compressed source and the decoder.
const IN_BUF: usize = 256 << 10;

/// A streaming codec [`StreamSource`] can decode: how to start a decoder over the compressed
/// bytes, and what its headers say about the decoded size. Each codec is defined in its
/// format's file (`Codec::Gzip` in `compress/gzip.rs`).
#[derive(Clone, Copy)]
pub struct Codec {
    name: &'static str,
    decoder: fn(Compressed) -> io::Result<Box<dyn Read + Send>>,
    size: fn(&dyn ReadAt) -> io::Result<SizeFact>,
}

/// The compressed bytes as a decoder reads them.
pub type Compressed = BufReader<ReadAtReader>;

impl Codec {
    /// A codec called `name` (in messages), started by `decoder`, whose headers give `size`.
    pub(crate) const fn new(
        name: &'static str,
        decoder: fn(Compressed) -> io::Result<Box<dyn Read + Send>>,
        size: fn(&dyn ReadAt) -> io::Result<SizeFact>,
    ) -> Codec {
        Codec {
            name,
            decoder,
            size,
        }
    }

    /// Name used in messages.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// What the headers of `compressed` say about its decoded size.
    pub fn size_fact(self, compressed: &dyn ReadAt) -> io::Result<SizeFact> {
        (self.size)(compressed)
    }

    /// A fresh decoder over `compressed`, from its first byte.
    pub fn decoder(self, compressed: Arc<dyn ReadAt>) -> io::Result<Box<dyn Read + Send>> {
        (self.decoder)(BufReader::with_capacity(
            IN_BUF,
            ReadAtReader::new(compressed),
        ))
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// What a compressed stream's own fields say about its decoded size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeFact {
    /// The exact size, and where it was read ("xz index").
    Exact {
        /// Decoded bytes.
        size: u64,
        /// Where the size comes from, for messages.
        origin: &'static str,
    },
    /// A size the stream cannot promise (gzip's ISIZE, a first frame's content size).
    Hint {
        /// The hinted size.
        size: u64,
        /// The hint is only the size modulo this (gzip's ISIZE: 2^32).
        modulus: Option<u64>,
        /// Where the hint comes from, for messages.
        origin: &'static str,
    },
    /// Nothing is said.
    Unknown,
}

impl SizeFact {
    /// An exact size from `origin`.
    pub fn exact(size: u64, origin: &'static str) -> SizeFact {
        SizeFact::Exact { size, origin }
    }
}

/// Sequential `Read` over a [`ReadAt`], starting at offset 0.
pub struct ReadAtReader {
    src: Arc<dyn ReadAt>,
    pos: u64,
}

impl ReadAtReader {
    /// A reader positioned at the start of `src`.
    pub fn new(src: Arc<dyn ReadAt>) -> Self {
        ReadAtReader { src, pos: 0 }
    }
}

impl Read for ReadAtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(self.pos, buf)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

struct Cached {
    data: Arc<Vec<u8>>,
    used: u64,
}

struct State {
    dec: Option<Box<dyn Read + Send>>,
    /// Decoded offset the decoder has reached.
    pos: u64,
    cache: HashMap<u64, Cached>,
    clock: u64,
    /// Times decoding restarted from the beginning (tests, diagnostics).
    restarts: u64,
    /// Where decoding failed for good (corrupt or truncated data) and why. Decoding is
    /// deterministic, so every later read at or past this offset would restart from the
    /// beginning only to fail at the same place: a probe pattern of many reads there would
    /// cost one full decode each. They fail at once instead.
    failed: Option<(u64, io::ErrorKind, String)>,
}

/// A [`ReadAt`] over a streaming decompressor. Reads are serialised by an internal mutex.
pub struct StreamSource {
    codec: Codec,
    compressed: Arc<dyn ReadAt>,
    size: u64,
    /// Where the size came from, for messages ("xz index", "decoded once").
    size_origin: &'static str,
    state: Mutex<State>,
}

impl StreamSource {
    /// Decodes `compressed` with `codec`. `known_size` (e.g. from a zip directory) is trusted
    /// as the decoded size; otherwise it is read from the codec's headers when they give it
    /// exactly, or learnt by decoding once to the end.
    pub fn new(
        codec: Codec,
        compressed: Arc<dyn ReadAt>,
        known_size: Option<u64>,
    ) -> io::Result<Self> {
        let fact = match known_size {
            Some(n) => SizeFact::exact(n, "given"),
            None => codec.size_fact(&*compressed)?,
        };
        Self::open(codec, compressed, fact)
    }

    /// Decodes `compressed` with `codec`, whose decoded size `fact` says (the caller read it
    /// from the codec's headers or elsewhere): an exact size is trusted, anything else is
    /// learnt by decoding once to the end.
    pub fn open(codec: Codec, compressed: Arc<dyn ReadAt>, fact: SizeFact) -> io::Result<Self> {
        let mut s = StreamSource {
            codec,
            compressed,
            size: 0,
            size_origin: "given",
            state: Mutex::new(State {
                dec: None,
                pos: 0,
                cache: HashMap::new(),
                clock: 0,
                restarts: 0,
                failed: None,
            }),
        };
        match fact {
            SizeFact::Exact { size, origin } => {
                s.size = size;
                s.size_origin = origin;
            }
            SizeFact::Hint { .. } | SizeFact::Unknown => {
                s.size = s.decode_to_end()?;
                s.size_origin = "decoded once to the end";
            }
        }
        Ok(s)
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// How the decoded size was learnt.
    pub fn size_origin(&self) -> &'static str {
        self.size_origin
    }

    /// Number of times decoding restarted from the beginning so far.
    pub fn restarts(&self) -> u64 {
        self.lock().restarts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters: the worst case is a decoder at an unknown position, which we reset.
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                g.dec = None;
                g.pos = 0;
                g
            }
        }
    }

    fn wrap_err(&self, e: io::Error, at: u64) -> io::Error {
        let kind = match e.kind() {
            io::ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
            io::ErrorKind::Interrupted => io::ErrorKind::Interrupted,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(
            kind,
            format!(
                "{} stream corrupt or truncated near decoded offset {at}: {e}",
                self.codec.name()
            ),
        )
    }

    /// Decodes everything once, counting bytes, caching the first chunks.
    fn decode_to_end(&self) -> io::Result<u64> {
        let mut st = self.lock();
        let mut dec = self.codec.decoder(self.compressed.clone())?;
        st.restarts += 1;
        let mut total: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let (n, err) = read_full(&mut *dec, &mut buf);
            if let Some(e) = err {
                return Err(self.wrap_err(e, total + n as u64));
            }
            if n == 0 {
                break;
            }
            let idx = total / CHUNK as u64;
            if n == CHUNK && total % CHUNK as u64 == 0 && idx < SIZE_PASS_CACHED {
                st.clock += 1;
                let used = st.clock;
                st.cache.insert(
                    idx,
                    Cached {
                        data: Arc::new(buf.clone()),
                        used,
                    },
                );
            }
            total = total.checked_add(n as u64).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "decoded size overflows u64")
            })?;
            if n < CHUNK {
                // read_full returns short only at the end.
                break;
            }
        }
        Ok(total)
    }

    /// Returns decoded chunk `idx`, from the cache or by decoding.
    fn chunk(&self, st: &mut State, idx: u64) -> io::Result<Arc<Vec<u8>>> {
        st.clock += 1;
        let now = st.clock;
        if let Some(c) = st.cache.get_mut(&idx) {
            c.used = now;
            return Ok(c.data.clone());
        }
        let start = idx * CHUNK as u64;
        let want = (self.size - start).min(CHUNK as u64) as usize;
        if let Some((at, kind, msg)) = &st.failed {
            if start.saturating_add(want as u64) > *at {
                return Err(io::Error::new(*kind, msg.clone()));
            }
        }
        let data = match self.decode_chunk(st, start, want) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                // Chunks are decoded whole and from chunk boundaries, so `st.pos` is the start
                // of the chunk that cannot be completed. Interrupted is transient; anything
                // else marks where this stream breaks.
                if e.kind() != io::ErrorKind::Interrupted {
                    let at = st.pos;
                    if st.failed.as_ref().is_none_or(|(f, _, _)| at < *f) {
                        st.failed = Some((at, e.kind(), e.to_string()));
                    }
                }
                return Err(e);
            }
        };
        if st.cache.len() >= MAX_CACHED_CHUNKS {
            if let Some((&old, _)) = st.cache.iter().min_by_key(|(_, c)| c.used) {
                st.cache.remove(&old);
            }
        }
        st.cache.insert(
            idx,
            Cached {
                data: data.clone(),
                used: now,
            },
        );
        Ok(data)
    }

    /// Decodes `want` bytes at decoded offset `start`, restarting the decoder when it is
    /// already past `start`.
    fn decode_chunk(&self, st: &mut State, start: u64, want: usize) -> io::Result<Vec<u8>> {
        if st.dec.is_none() || st.pos > start {
            st.dec = Some(self.codec.decoder(self.compressed.clone())?);
            st.pos = 0;
            st.restarts += 1;
        }
        let mut buf = vec![0u8; CHUNK];
        // Skip forward to the chunk, decoding into the scratch buffer.
        while st.pos < start {
            let step = (start - st.pos).min(CHUNK as u64) as usize;
            self.decode_exact(st, &mut buf[..step])?;
        }
        self.decode_exact(st, &mut buf[..want])?;
        buf.truncate(want);
        Ok(buf)
    }

    /// Fills `buf` from the decoder, advancing `st.pos`. On an error or a premature end the
    /// decoder is dropped (the next read restarts it) and the error names the offset.
    fn decode_exact(&self, st: &mut State, buf: &mut [u8]) -> io::Result<()> {
        let pos = st.pos;
        let dec = st
            .dec
            .as_mut()
            .ok_or_else(|| io::Error::other("decoder missing"))?;
        let (n, err) = read_full(&mut **dec, buf);
        if let Some(e) = err {
            st.dec = None;
            return Err(self.wrap_err(e, pos + n as u64));
        }
        st.pos += n as u64;
        if n < buf.len() {
            st.dec = None;
            return Err(self.early_end(st.pos));
        }
        Ok(())
    }

    fn early_end(&self, at: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} stream ends at decoded offset {at}, but its size was given as {} ({})",
                self.codec.name(),
                self.size,
                self.size_origin
            ),
        )
    }
}

/// Reads until `buf` is full or the reader ends. Returns the bytes read and, if the reader
/// failed, the error (so the caller can name the exact offset where decoding broke).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

impl ReadAt for StreamSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset) as usize;
        let mut st = self.lock();
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let c = self.chunk(&mut st, idx)?;
            let avail = c.get(within..).unwrap_or(&[]);
            if avail.is_empty() {
                break;
            }
            let n = avail.len().min(len - done);
            buf[done..done + n].copy_from_slice(&avail[..n]);
            done += n;
        }
        Ok(done)
    }

    fn caps(&self) -> Caps {
        Caps {
            access: Access::Sequential,
            chunk: CHUNK as u64,
            ..Caps::RANDOM
        }
    }

    fn sequential(&self, offset: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        let mut r = InOrder {
            src: self,
            dec: self.codec.decoder(self.compressed.clone())?,
            pos: 0,
        };
        crate::io::skip_reader(&mut r, offset.min(self.size))?;
        Ok(Box::new(r))
    }
}

/// [`StreamSource::sequential`]: a fresh decoder, cut at the size and with errors that name
/// the decoded offset, like the random-access path.
struct InOrder<'a> {
    src: &'a StreamSource,
    dec: Box<dyn Read + Send>,
    pos: u64,
}

impl Read for InOrder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.src.size - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = loop {
            match self.dec.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.src.wrap_err(e, self.pos)),
            }
        };
        if n == 0 {
            return Err(self.src.early_end(self.pos));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The layer of a compression `format` decoded as one stream with `codec`, whose decoded size
/// `fact` says: the decoder and the layer's detail ("decodes to N bytes (size from xz index)").
pub(crate) fn stream_step(
    format: Format,
    codec: Codec,
    src: Arc<dyn ReadAt>,
    fact: SizeFact,
) -> crate::Result<Step> {
    let s = StreamSource::open(codec, src.clone(), fact)?;
    let detail = format!(
        "decodes to {} bytes (size from {})",
        s.size(),
        s.size_origin()
    );
    Ok(Step::inner(
        Layer::stored(format, &*src, Some(detail)),
        Arc::new(s),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;
    use std::io::Write;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] & 0x0F)
            .collect()
    }

    #[test]
    fn gzip_random_and_backward_reads() {
        let orig = data(3 * CHUNK + 12345);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&orig).unwrap();
        let gz = e.finish().unwrap();
        let s = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gz)), None).unwrap();
        assert_eq!(s.size(), orig.len() as u64);
        for &(off, len) in &[
            (CHUNK * 2 + 5, 70000),
            (10, 100),
            (CHUNK * 3, 20000),
            (0, 5),
        ] {
            let mut b = vec![0u8; len];
            let n = s.read_at(off as u64, &mut b).unwrap();
            let end = (off + len).min(orig.len());
            assert_eq!(&b[..n], &orig[off..end]);
        }
        let mut b = [0u8; 4];
        assert_eq!(s.read_at(orig.len() as u64, &mut b).unwrap(), 0);
        assert_eq!(s.caps().access, Access::Sequential);
        // The in-order reader is a fresh decoder: it neither uses nor restarts the cached one.
        let restarts = s.restarts();
        let mut all = Vec::new();
        s.sequential(CHUNK as u64 + 7)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, &orig[CHUNK + 7..]);
        assert_eq!(s.restarts(), restarts);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let orig = data(2 * CHUNK);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&orig).unwrap();
        let mut gz = e.finish().unwrap();
        gz.truncate(gz.len() / 2);
        let err = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gz)), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("gzip"), "{err}");
    }

    #[test]
    fn known_size_too_big_gives_eof_error() {
        let orig = data(1000);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&orig).unwrap();
        let gz = e.finish().unwrap();
        let s = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gz)), Some(5000)).unwrap();
        let mut b = [0u8; 10];
        let err = s.read_at(4000, &mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
