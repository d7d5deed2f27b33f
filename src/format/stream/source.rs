//! [`StreamSource`]: a streaming decoder behind [`ReadAt`], with a chunk cache for random reads
//! and fresh decoders for in-order ones.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::codec::{Codec, SizeFact, StreamEnd, CHUNK, MAX_CACHED_CHUNKS};
use super::size::Size;
use crate::io::{Access, Caps, ReadAt, SizeKnown};

/// Chunks cached while learning the size by a full decode pass: the first few MiB, where the
/// partition table and most superblocks live.
const SIZE_PASS_CACHED: u64 = 4;
/// Chunks kept from the end of a full decode pass: the last sector (a trailer) may straddle
/// the last two.
const SIZE_PASS_TAIL: usize = 2;

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

impl State {
    fn new() -> Self {
        State {
            dec: None,
            pos: 0,
            cache: HashMap::new(),
            clock: 0,
            restarts: 0,
            failed: None,
        }
    }

    fn insert(&mut self, idx: u64, data: Arc<Vec<u8>>) {
        if self.cache.len() >= MAX_CACHED_CHUNKS {
            if let Some((&old, _)) = self.cache.iter().min_by_key(|(_, c)| c.used) {
                self.cache.remove(&old);
            }
        }
        self.clock += 1;
        let used = self.clock;
        self.cache.insert(idx, Cached { data, used });
    }
}

/// A [`ReadAt`] over a streaming decompressor. Reads are serialised by an internal mutex;
/// [`sequential`](ReadAt::sequential) readers each run their own decoder.
///
/// Its size is exact, or a hint (opened with `StreamEnd::Deferred` and no exact size in the
/// headers): reads then go on past the hint to the real end, raise the hint as they pass it,
/// and make it exact when they reach the end, whichever reader gets there.
pub struct StreamSource {
    codec: Codec,
    compressed: Arc<dyn ReadAt>,
    size: Size,
    state: Mutex<State>,
    /// Bytes produced by all decoders of this source (tests, diagnostics).
    decoded: AtomicU64,
    /// True if the stream was decoded to its end at open, its last chunks kept.
    tail_cached: bool,
}

impl StreamSource {
    /// Decodes `compressed` with `codec`, opened `StreamEnd::Eager`. `known_size` (e.g. from
    /// a zip directory) is trusted as the decoded size; otherwise it is read from the codec's
    /// headers when they give it exactly, or learnt by decoding once to the end.
    pub fn new(
        codec: Codec,
        compressed: Arc<dyn ReadAt>,
        known_size: Option<u64>,
    ) -> io::Result<Self> {
        let fact = match known_size {
            Some(n) => SizeFact::exact(n, "given"),
            None => codec.size_fact(&*compressed)?,
        };
        Self::open(codec, compressed, fact, StreamEnd::Eager)
    }

    /// Decodes `compressed` with `codec`, whose decoded size `fact` says (read from the codec's
    /// headers or elsewhere). An exact size is trusted; anything else is learnt by decoding
    /// once to the end ([`StreamEnd::Eager`]) or becomes a hint ([`StreamEnd::Deferred`]:
    /// the hint the headers give, or else the compressed size, since a stream that records no
    /// size says nothing better and a disk image is rarely smaller than its compressed form).
    pub(crate) fn open(
        codec: Codec,
        compressed: Arc<dyn ReadAt>,
        fact: SizeFact,
        end: StreamEnd,
    ) -> io::Result<Self> {
        let known = match (fact, end) {
            (SizeFact::Exact { size, origin }, _) => Some(Size::exact(size, origin)),
            (
                SizeFact::Hint {
                    size,
                    modulus,
                    origin,
                },
                StreamEnd::Deferred,
            ) => Some(Size::hint(size, modulus, origin)),
            (SizeFact::Unknown, StreamEnd::Deferred) => Some(Size::hint(
                compressed.size(),
                None,
                "the compressed size (the stream records none)",
            )),
            (_, StreamEnd::Eager) => None,
        };
        let learn = known.is_none();
        let mut s = StreamSource {
            codec,
            compressed,
            size: known.unwrap_or_else(|| Size::exact(0, "")),
            state: Mutex::new(State::new()),
            decoded: AtomicU64::new(0),
            tail_cached: learn,
        };
        if learn {
            let n = s.decode_to_end()?;
            s.size = Size::exact(n, "decoded once to the end");
        }
        Ok(s)
    }

    /// Where the size comes from ("xz index", "decoded once to the end"; for a hint, the
    /// field it was read from).
    pub fn size_origin(&self) -> &'static str {
        self.size.origin()
    }

    /// Number of times decoding restarted from the beginning so far.
    pub fn restarts(&self) -> u64 {
        self.lock().restarts
    }

    /// True if the stream was decoded to its end when opened (to learn its size) and its last
    /// chunks are cached: reading its last sector costs nothing.
    pub(crate) fn tail_cached(&self) -> bool {
        self.tail_cached
    }

    /// Decoded bytes produced so far by every decoder of this source, cached or in order.
    #[cfg(test)]
    pub(crate) fn decoded_bytes(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
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

    fn early_end(&self, at: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} stream ends at decoded offset {at}, but its size was given as {} ({})",
                self.codec.name(),
                self.size.get(),
                self.size.origin()
            ),
        )
    }

    /// Reads from `dec` until `buf` is full or the stream ends, counting what was decoded.
    /// Errors name the decoded offset (`at` is where `buf` starts).
    fn fill(&self, dec: &mut dyn Read, buf: &mut [u8], at: u64) -> io::Result<usize> {
        let (n, err) = read_full(dec, buf);
        self.decoded.fetch_add(n as u64, Ordering::Relaxed);
        match err {
            Some(e) => Err(self.wrap_err(e, at + n as u64)),
            None => Ok(n),
        }
    }

    /// Decodes everything once, counting bytes, caching the first chunks and the last ones.
    fn decode_to_end(&self) -> io::Result<u64> {
        let mut st = self.lock();
        let mut dec = self.codec.decoder(self.compressed.clone())?;
        st.restarts += 1;
        let mut total: u64 = 0;
        let mut tail: Vec<(u64, Arc<Vec<u8>>)> = Vec::new();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = self.fill(&mut *dec, &mut buf, total)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let idx = total / CHUNK as u64;
            let buf = Arc::new(buf);
            if idx < SIZE_PASS_CACHED {
                st.insert(idx, buf.clone());
            }
            tail.push((idx, buf));
            if tail.len() > SIZE_PASS_TAIL {
                tail.remove(0);
            }
            total = total.checked_add(n as u64).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "decoded size overflows u64")
            })?;
            if n < CHUNK {
                // `fill` returns short only at the end.
                break;
            }
        }
        for (idx, data) in tail {
            st.insert(idx, data);
        }
        Ok(total)
    }

    /// Returns decoded chunk `idx`, from the cache or by decoding: `CHUNK` bytes, fewer only
    /// for the last chunk of the stream (none past it).
    fn chunk(&self, st: &mut State, idx: u64) -> io::Result<Arc<Vec<u8>>> {
        st.clock += 1;
        let now = st.clock;
        if let Some(c) = st.cache.get_mut(&idx) {
            c.used = now;
            return Ok(c.data.clone());
        }
        let start = idx * CHUNK as u64;
        let want = if self.size.is_exact() {
            self.size.get().saturating_sub(start).min(CHUNK as u64) as usize
        } else {
            CHUNK
        };
        if want == 0 {
            return Ok(Arc::new(Vec::new()));
        }
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
        if !data.is_empty() {
            st.insert(idx, data.clone());
        }
        Ok(data)
    }

    /// Decodes `want` bytes at decoded offset `start`, restarting the decoder when it is
    /// already past `start`. Short (or empty) only where a stream of hinted size ends.
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
            if self.decode_some(st, &mut buf[..step])? < step {
                return Ok(Vec::new());
            }
        }
        let n = self.decode_some(st, &mut buf[..want])?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Fills `buf` from the decoder, advancing `st.pos`. The end of the stream makes an exact
    /// size that promised more an error, and a hinted size exact; a hint is raised past what
    /// was decoded. On an error or at the end the decoder is dropped (the next read restarts
    /// it) and the error names the offset.
    fn decode_some(&self, st: &mut State, buf: &mut [u8]) -> io::Result<usize> {
        let pos = st.pos;
        let dec = st
            .dec
            .as_mut()
            .ok_or_else(|| io::Error::other("decoder missing"))?;
        let n = match self.fill(&mut **dec, buf, pos) {
            Ok(n) => n,
            Err(e) => {
                st.dec = None;
                return Err(e);
            }
        };
        st.pos += n as u64;
        if n < buf.len() {
            st.dec = None;
            if self.size.is_exact() {
                return Err(self.early_end(st.pos));
            }
            self.size.learn_end(st.pos);
        } else {
            self.size.raise(st.pos);
        }
        Ok(n)
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
        self.size.get()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = if self.size.is_exact() {
            let size = self.size.get();
            if offset >= size {
                return Ok(0);
            }
            (buf.len() as u64).min(size - offset) as usize
        } else {
            // A hint does not bound reads: the stream may go on past it.
            buf.len()
        };
        let mut st = self.lock();
        let mut done = 0usize;
        while done < len {
            let Some(pos) = offset.checked_add(done as u64) else {
                break;
            };
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
            size: if self.size.is_exact() {
                SizeKnown::Exact
            } else {
                SizeKnown::Hint
            },
        }
    }

    fn refine_size_hint(&self, at_least: u64) {
        self.size.raise(at_least);
    }

    fn sequential(&self, offset: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        let mut r = InOrder {
            src: self,
            dec: self.codec.decoder(self.compressed.clone())?,
            pos: 0,
        };
        let skip = if self.size.is_exact() {
            offset.min(self.size.get())
        } else {
            offset
        };
        crate::io::skip_reader(&mut r, skip)?;
        Ok(Box::new(r))
    }
}

/// [`StreamSource::sequential`]: a fresh decoder, cut at an exact size, teaching the source
/// its size when it reaches the end of a hinted one, with errors that name the decoded
/// offset like the random-access path.
struct InOrder<'a> {
    src: &'a StreamSource,
    dec: Box<dyn Read + Send>,
    pos: u64,
}

impl Read for InOrder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = &self.src.size;
        let exact = size.is_exact();
        let want = if exact {
            (buf.len() as u64).min(size.get().saturating_sub(self.pos)) as usize
        } else {
            buf.len()
        };
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.dec.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.src.wrap_err(e, self.pos)),
            }
        };
        self.src.decoded.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            if exact {
                return Err(self.src.early_end(self.pos));
            }
            size.learn_end(self.pos);
            return Ok(0);
        }
        self.pos += n as u64;
        size.raise(self.pos);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemSource, ReadAtExt};
    use std::io::Write;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] & 0x0F)
            .collect()
    }

    fn gzip(d: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(d).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_random_and_backward_reads() {
        let orig = data(3 * CHUNK + 12345);
        let s = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gzip(&orig))), None).unwrap();
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
    fn the_eager_pass_keeps_the_tail() {
        let orig = data(3 * CHUNK + 100);
        let s = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gzip(&orig))), None).unwrap();
        assert_eq!(s.decoded_bytes(), orig.len() as u64);
        let n = orig.len() as u64;
        assert_eq!(s.read_vec(n - 512, 512).unwrap(), &orig[orig.len() - 512..]);
        assert_eq!(s.read_vec(0, 4096).unwrap(), &orig[..4096]);
        assert_eq!(s.decoded_bytes(), n, "head and tail come from the cache");
        assert_eq!(s.restarts(), 1);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let orig = data(2 * CHUNK);
        let mut gz = gzip(&orig);
        gz.truncate(gz.len() / 2);
        let err = StreamSource::new(Codec::Gzip, Arc::new(MemSource(gz)), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("gzip"), "{err}");
    }

    #[test]
    fn known_size_too_big_gives_eof_error() {
        let s = StreamSource::new(
            Codec::Gzip,
            Arc::new(MemSource(gzip(&data(1000)))),
            Some(5000),
        )
        .unwrap();
        let mut b = [0u8; 10];
        let err = s.read_at(4000, &mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn deferred(orig: &[u8], fact: SizeFact) -> StreamSource {
        StreamSource::open(
            Codec::Gzip,
            Arc::new(MemSource(gzip(orig))),
            fact,
            StreamEnd::Deferred,
        )
        .unwrap()
    }

    #[test]
    fn a_deferred_size_is_a_hint_until_random_reads_reach_the_end() {
        let orig = data(2 * CHUNK + 300);
        let len = orig.len() as u64;
        let s = deferred(
            &orig,
            Codec::Gzip.size_fact(&MemSource(gzip(&orig))).unwrap(),
        );
        assert_eq!(s.decoded_bytes(), 0, "nothing decoded at open");
        assert_eq!(s.caps().size, SizeKnown::Hint);
        assert_eq!(s.size(), len, "ISIZE of a small stream is its size");
        // A hint below the truth: reads go on past it and raise it.
        let s = deferred(&orig, SizeFact::Unknown);
        assert!(s.size() < len);
        assert_eq!(
            s.read_vec(CHUNK as u64, 1000).unwrap(),
            &orig[CHUNK..CHUNK + 1000]
        );
        assert_eq!(s.size(), 2 * CHUNK as u64);
        assert_eq!(s.caps().size, SizeKnown::Hint);
        let mut b = vec![0u8; 1000];
        assert_eq!(s.read_at(len - 100, &mut b).unwrap(), 100);
        assert_eq!(&b[..100], &orig[orig.len() - 100..]);
        assert_eq!((s.size(), s.caps().size), (len, SizeKnown::Exact));
        assert_eq!(s.size_origin(), "decoded to the end");
        assert_eq!(s.read_at(len, &mut b).unwrap(), 0);
        // A hint above the truth: the end is found where the data stops.
        let s = deferred(
            &orig,
            SizeFact::Hint {
                size: 10 * CHUNK as u64,
                modulus: None,
                origin: "test",
            },
        );
        assert_eq!(s.read_at(5 * CHUNK as u64, &mut b).unwrap(), 0);
        assert_eq!((s.size(), s.caps().size), (len, SizeKnown::Exact));
    }

    #[test]
    fn a_deferred_size_becomes_exact_when_an_in_order_reader_ends() {
        let orig = data(CHUNK + 77);
        let s = deferred(&orig, SizeFact::Unknown);
        let mut all = Vec::new();
        s.sequential(0).unwrap().read_to_end(&mut all).unwrap();
        assert!(all == orig);
        assert_eq!(s.size(), orig.len() as u64);
        assert_eq!(s.caps().size, SizeKnown::Exact);
        assert_eq!(s.decoded_bytes(), orig.len() as u64);
        // Skipping past a hint that is too small is fine; past the real end is an error.
        let s = deferred(&orig, SizeFact::Unknown);
        let mut rest = Vec::new();
        s.sequential(CHUNK as u64)
            .unwrap()
            .read_to_end(&mut rest)
            .unwrap();
        assert_eq!(rest, &orig[CHUNK..]);
        let s = deferred(&orig, SizeFact::Unknown);
        assert!(s.sequential(10 * CHUNK as u64).is_err());
    }

    #[test]
    fn refining_a_gzip_hint_keeps_it_congruent() {
        let s = deferred(
            &data(100),
            SizeFact::Hint {
                size: 100,
                modulus: Some(1 << 32),
                origin: "test",
            },
        );
        s.refine_size_hint(5_000_000_000);
        assert_eq!(s.size(), 100 + 2 * (1u64 << 32));
    }
}
