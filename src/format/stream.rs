//! Random access over streaming decompressors.
//!
//! gzip, xz, zstd, bzip2, lz4 and deflate (zip members) can only be decoded forward. A
//! [`StreamSource`] decodes forward on demand: a read at or after the decoder's position
//! decodes up to it, a read behind it restarts from the beginning. The 1 MiB chunks that reads
//! actually asked for are kept in a bounded LRU cache, so the probes' typical pattern (the same
//! partition starts read again and again) does not restart the decoder.
//!
//! The decoded size is taken from the container when that is cheap (xz index, zstd frame
//! headers or seek table, a zip directory entry) and otherwise learnt by decoding once to the
//! end with bounded memory.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

use crate::io::{Access, Caps, ReadAt, ReadAtExt};
use crate::util::{le32, le64};

/// Size of a cached decoded chunk.
pub const CHUNK: usize = 1 << 20;
/// Maximum number of cached chunks (64 MiB in total).
pub const MAX_CACHED_CHUNKS: usize = 64;
/// Chunks cached while learning the size by a full decode pass: the first few MiB, where the
/// partition table and most superblocks live.
const SIZE_PASS_CACHED: u64 = 4;
/// Buffer between the compressed source and the decoder.
const IN_BUF: usize = 256 << 10;

/// A streaming codec [`StreamSource`] can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip, all members.
    Gzip,
    /// xz, all streams, multi-threaded when blocks carry sizes.
    Xz,
    /// zstd (frames and skippable frames; long windows allowed).
    Zstd,
    /// bzip2, all streams.
    Bzip2,
    /// lz4 frame format.
    Lz4,
    /// Raw deflate (a zip member).
    Deflate,
}

impl Codec {
    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
            Codec::Lz4 => "lz4",
            Codec::Deflate => "deflate",
        }
    }

    /// The codec that decodes `f`, if `f` is a compression format.
    pub fn for_format(f: super::Format) -> Option<Codec> {
        use super::Format as F;
        Some(match f {
            F::Gzip => Codec::Gzip,
            F::Xz => Codec::Xz,
            F::Zstd | F::SeekableZstd => Codec::Zstd,
            F::Bzip2 => Codec::Bzip2,
            F::Lz4 => Codec::Lz4,
            _ => return None,
        })
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

/// A fresh decoder of `codec` over `compressed`, from its first byte.
pub fn decoder(codec: Codec, compressed: Arc<dyn ReadAt>) -> io::Result<Box<dyn Read + Send>> {
    let r = BufReader::with_capacity(IN_BUF, ReadAtReader::new(compressed));
    Ok(match codec {
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Codec::Xz => Box::new(XzMulti::new(r)?),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            // Accept `zstd --long` windows (up to 2 GiB); the default limit rejects them.
            d.window_log_max(31)?;
            Box::new(d)
        }
        Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
        Codec::Deflate => Box::new(flate2::bufread::DeflateDecoder::new(r)),
    })
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
    /// as the decoded size; otherwise it is read from the container or learnt by decoding.
    pub fn new(
        codec: Codec,
        compressed: Arc<dyn ReadAt>,
        known_size: Option<u64>,
    ) -> io::Result<Self> {
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
        let cheap = match known_size {
            Some(n) => Some((n, "given")),
            None => match codec {
                Codec::Xz => xz_size_from_index(&*s.compressed)?.map(|n| (n, "xz index")),
                Codec::Zstd => zstd_size(&*s.compressed)?.map(|n| (n, "zstd frame headers")),
                _ => None,
            },
        };
        match cheap {
            Some((n, origin)) => {
                s.size = n;
                s.size_origin = origin;
            }
            None => {
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
        let mut dec = decoder(self.codec, self.compressed.clone())?;
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
            st.dec = Some(decoder(self.codec, self.compressed.clone())?);
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
            dec: decoder(self.codec, self.compressed.clone())?,
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

/// Exact decoded size of an xz file from its stream footers and indexes, reading only a few
/// KiB from the end of each stream. `None` if the structure does not add up (then the caller
/// decodes to learn the size, and the decoder reports the corruption).
pub fn xz_size_from_index(src: &dyn ReadAt) -> io::Result<Option<u64>> {
    Ok(super::xz_blocks::block_table(src)?.map(|b| b.last().map_or(0, |l| l.out_off + l.out_len)))
}

/// Decoded size of a zstd file: the seek table's sum for seekable zstd, else the sum of every
/// frame's content size found by walking frame and block headers (no decompression). `None`
/// if any frame omits its content size or the structure is inconsistent.
pub fn zstd_size(src: &dyn ReadAt) -> io::Result<Option<u64>> {
    if let Some(n) = seekable_zstd_size(src)? {
        return Ok(Some(n));
    }
    let size = src.size();
    let mut pos: u64 = 0;
    let mut total: u64 = 0;
    let mut frames = 0u32;
    while pos < size {
        let h = src.read_upto(pos, 18)?;
        let Some(magic) = le32(&h, 0) else {
            return Ok(None);
        };
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let Some(len) = le32(&h, 4) else {
                return Ok(None);
            };
            pos = match pos.checked_add(8 + u64::from(len)) {
                Some(p) if p <= size => p,
                _ => return Ok(None),
            };
            continue;
        }
        if magic != 0xFD2F_B528 {
            return Ok(None);
        }
        let Some(&fhd) = h.get(4) else {
            return Ok(None);
        };
        let single = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        let did_len = [0usize, 1, 2, 4][(fhd & 3) as usize];
        let fcs_len = match fhd >> 6 {
            0 if single => 1,
            0 => return Ok(None), // content size not recorded
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let fcs_off = 5 + usize::from(!single) + did_len;
        let Some(fcs_bytes) = h.get(fcs_off..fcs_off + fcs_len) else {
            return Ok(None);
        };
        let mut fcs = [0u8; 8];
        fcs[..fcs_len].copy_from_slice(fcs_bytes);
        let mut content = le64(&fcs, 0).unwrap_or(0);
        if fcs_len == 2 {
            content += 256;
        }
        let Some(t) = total.checked_add(content) else {
            return Ok(None);
        };
        total = t;
        pos += (fcs_off + fcs_len) as u64;
        // Walk the blocks to find the frame's end.
        loop {
            let b = src.read_upto(pos, 3)?;
            if b.len() < 3 {
                return Ok(None);
            }
            let bh = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
            let last = bh & 1 != 0;
            let btype = (bh >> 1) & 3;
            let bsize = u64::from(bh >> 3);
            let body = match btype {
                0 | 2 => bsize,
                1 => 1,
                _ => return Ok(None),
            };
            pos = match pos.checked_add(3 + body) {
                Some(p) if p <= size => p,
                _ => return Ok(None),
            };
            if last {
                break;
            }
        }
        if checksum {
            pos += 4;
        }
        frames += 1;
        if frames > 10_000_000 {
            return Ok(None);
        }
    }
    if pos != size {
        return Ok(None);
    }
    Ok(Some(total))
}

/// Sum of decompressed sizes in a seekable-zstd seek table.
pub fn seekable_zstd_size(src: &dyn ReadAt) -> io::Result<Option<u64>> {
    let Some((start, count, checks)) = super::sniff::seek_table_location(src)? else {
        return Ok(None);
    };
    let entry = if checks { 12usize } else { 8 };
    let table_len = (count as usize).saturating_mul(entry);
    if table_len > crate::io::MAX_READ_VEC {
        return Ok(None);
    }
    let t = src.read_vec(start + 8, table_len)?;
    let mut total: u64 = 0;
    let mut comp: u64 = 0;
    for e in t.chunks_exact(entry) {
        let (Some(c), Some(d)) = (le32(e, 0), le32(e, 4)) else {
            return Ok(None);
        };
        let (Some(nc), Some(nt)) = (
            comp.checked_add(u64::from(c)),
            total.checked_add(u64::from(d)),
        ) else {
            return Ok(None);
        };
        comp = nc;
        total = nt;
    }
    // The frames must exactly fill the space before the table.
    if comp != start {
        return Ok(None);
    }
    Ok(Some(total))
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
    fn zero_frames_are_recognised_without_decoding() {
        let f = crate::archive::zstd::zero_frame(5 << 20);
        assert_eq!(zero_frame_size(&f), Some(5 << 20));
        let mut g = f.clone();
        let n = g.len();
        g[n - 1] = 1; // an RLE block of 0x01
        assert_eq!(zero_frame_size(&g), None);
        assert_eq!(zero_frame_size(&f[..n - 2]), None);
        let data = zstd::bulk::compress(&[0u8; 5000], 3).unwrap();
        assert_eq!(
            zero_frame_size(&data),
            None,
            "compressed blocks are decoded normally"
        );
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

/// Largest single frame [`SeekableZstd`] decodes into memory; larger frames make it decline
/// (the caller then falls back to streaming).
pub const MAX_SEEKABLE_FRAME: u64 = 64 << 20;
/// Decoded frames kept by [`SeekableZstd`].
const SEEKABLE_CACHED_FRAMES: usize = 16;

/// One frame of a seekable-zstd file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeekFrame {
    comp_off: u64,
    comp_len: u32,
    out_off: u64,
    out_len: u32,
}

/// Random access to a seekable-zstd file: the seek table maps every decoded offset to an
/// independent frame, so a read decodes only the frames it touches.
pub struct SeekableZstd {
    src: Arc<dyn ReadAt>,
    frames: Vec<SeekFrame>,
    size: u64,
    /// Preferred read size: the typical frame.
    chunk: u64,
    cache: super::frames::FrameCache,
}

impl SeekableZstd {
    /// Reads the seek table of `src`. `Ok(None)` if there is none, or if a frame is too large
    /// to decode in memory (then stream it instead).
    pub fn open(src: Arc<dyn ReadAt>) -> io::Result<Option<Self>> {
        let Some((start, count, checks)) = super::sniff::seek_table_location(&*src)? else {
            return Ok(None);
        };
        let entry = if checks { 12usize } else { 8 };
        let table_len = (count as usize).saturating_mul(entry);
        if table_len > crate::io::MAX_READ_VEC {
            return Ok(None);
        }
        let t = src.read_vec(start + 8, table_len)?;
        // Bounded by the table bytes we just read, so not attacker-sized beyond the file.
        let mut frames = Vec::with_capacity(count as usize);
        let (mut comp, mut out) = (0u64, 0u64);
        for e in t.chunks_exact(entry) {
            let (Some(c), Some(d)) = (le32(e, 0), le32(e, 4)) else {
                return Ok(None);
            };
            if u64::from(d) > MAX_SEEKABLE_FRAME {
                return Ok(None);
            }
            frames.push(SeekFrame {
                comp_off: comp,
                comp_len: c,
                out_off: out,
                out_len: d,
            });
            comp += u64::from(c); // at most 2^32 entries of 2^32: fits in u64
            out += u64::from(d);
        }
        if comp != start {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("seekable zstd: seek table frames cover {comp} bytes, but the table starts at {start}"),
            ));
        }
        frames.retain(|f| f.out_len > 0);
        let chunk =
            super::frames::typical_chunk(frames.iter().map(|f| u64::from(f.out_len)).collect());
        Ok(Some(SeekableZstd {
            src,
            frames,
            size: out,
            chunk,
            cache: super::frames::FrameCache::new(SEEKABLE_CACHED_FRAMES),
        }))
    }

    /// Number of (non-empty) frames.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    fn frame(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        let f = self
            .frames
            .get(i)
            .copied()
            .ok_or_else(|| io::Error::other("frame index out of range"))?;
        self.cache.get(i, || self.decode(i, f))
    }

    fn decode(&self, i: usize, f: SeekFrame) -> io::Result<Vec<u8>> {
        let comp = self.src.read_vec(f.comp_off, f.comp_len as usize)?;
        let out = if zero_frame_size(&comp) == Some(u64::from(f.out_len)) {
            // Free space in our own backups: a zeroed allocation stays untouched (and takes no
            // memory) until read, where decoding would write every byte.
            Ok(vec![0u8; f.out_len as usize])
        } else {
            zstd::bulk::decompress(&comp, f.out_len as usize)
        }
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "seekable zstd: frame {i} at compressed offset {} is corrupt: {e}",
                    f.comp_off
                ),
            )
        })?;
        if out.len() != f.out_len as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "seekable zstd: frame {i} decodes to {} bytes, seek table says {}",
                    out.len(),
                    f.out_len
                ),
            ));
        }
        Ok(out)
    }
}

/// If `frame` is exactly one zstd frame made only of RLE blocks of `0x00` (how backups store
/// free space), the number of zero bytes it decodes to.
fn zero_frame_size(frame: &[u8]) -> Option<u64> {
    if le32(frame, 0)? != 0xFD2F_B528 {
        return None;
    }
    let fhd = *frame.get(4)?;
    let single = fhd & 0x20 != 0;
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    if fhd & 0x04 != 0 {
        // A content checksum would have to be checked: decode normally.
        return None;
    }
    let mut p = 5 + usize::from(!single) + dict_len + fcs_len;
    let mut total = 0u64;
    loop {
        let h = frame.get(p..p + 3)?;
        let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        let (last, kind, size) = (h & 1 != 0, (h >> 1) & 3, u64::from(h >> 3));
        if kind != 1 || *frame.get(p + 3)? != 0 {
            return None;
        }
        total = total.checked_add(size)?;
        p += 4;
        if last {
            break;
        }
    }
    (p == frame.len()).then_some(total)
}

impl ReadAt for SeekableZstd {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let fr = &self.frames;
        super::frames::read_through_frames(
            offset,
            buf,
            self.size,
            fr.len(),
            |i| fr[i].out_off,
            |i| fr[i].out_off + u64::from(fr[i].out_len),
            |i| self.frame(i),
        )
    }

    fn caps(&self) -> Caps {
        Caps {
            chunk: self.chunk,
            ..Caps::RANDOM
        }
        .over(self.src.caps())
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let fr = &self.frames;
        Some(super::frames::starts_within(
            fr.len(),
            |i| fr[i].out_off,
            start,
            end,
        ))
    }
}
