//! Seekable zstd: ordinary zstd frames followed by a skippable frame holding a seek table
//! (per frame: compressed size, decompressed size, optional checksum; then frame count,
//! descriptor and magic). Every zstd decoder ignores the table, so the file is plain `.zst` to
//! other tools; blockwise reads it with random access, one frame at a time. The table is read
//! ([`SeekTable::read`]) and written ([`SeekTable::encode`], for the archive writer) here and
//! nowhere else.

use std::io;
use std::sync::{Arc, OnceLock};

use super::zstd::{starts_with_frame, BlockHeader, FrameHeader, MAX_FRAME_HEADER};
use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::frames;
use crate::format::kind::{Format, Kind};
use crate::format::stream::{Codec, SizeFact, StreamSource};
use crate::io::{Caps, ReadAt, ReadAtExt};
use crate::util::le32;
use crate::ExtentMap;

impl Format {
    /// zstd frames followed by a seekable-format seek table.
    #[allow(non_upper_case_globals)]
    pub const SeekableZstd: Format =
        Format::new("seekable-zstd", "zstd (seekable)", Kind::Compression);
}

/// Magic of the skippable frame that holds the seek table.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Magic that ends the seek table.
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Frame count, descriptor and magic.
const FOOTER_LEN: u64 = 9;

/// Largest single frame [`SeekableZstd`] decodes into memory; larger frames make it decline
/// (the caller then falls back to streaming).
pub(crate) const MAX_SEEKABLE_FRAME: u64 = 64 << 20;
/// Decoded frames kept by [`SeekableZstd`].
const SEEKABLE_CACHED_FRAMES: usize = 16;
/// Most bytes one RLE block of a zero frame stands for (zstd's block maximum).
const ZERO_BLOCK: u64 = 128 << 10;

/// Where a seek table sits, from its footer: the skippable frame's offset, the frame count and
/// whether entries carry checksums. `None` if the footer or the frame around it is not there.
fn locate(src: &dyn ReadAt) -> io::Result<Option<(u64, u32, bool)>> {
    let size = src.size();
    if size < 8 + FOOTER_LEN {
        return Ok(None);
    }
    let foot = src.read_upto(size - FOOTER_LEN, FOOTER_LEN as usize)?;
    if le32(&foot, 5) != Some(SEEKABLE_MAGIC) {
        return Ok(None);
    }
    let (Some(count), Some(&desc)) = (le32(&foot, 0), foot.get(4)) else {
        return Ok(None);
    };
    // Reserved bits must be zero (bits 2..6 per the format).
    if desc & 0x7C != 0 {
        return Ok(None);
    }
    let checks = desc & 0x80 != 0;
    let entry = if checks { 12u64 } else { 8 };
    let Some(table) = u64::from(count)
        .checked_mul(entry)
        .and_then(|t| t.checked_add(FOOTER_LEN))
    else {
        return Ok(None);
    };
    let Some(start) = size.checked_sub(table).and_then(|s| s.checked_sub(8)) else {
        return Ok(None);
    };
    let hdr = src.read_upto(start, 8)?;
    if le32(&hdr, 0) != Some(SKIPPABLE_MAGIC) || le32(&hdr, 4).map(u64::from) != Some(table) {
        return Ok(None);
    }
    Ok(Some((start, count, checks)))
}

/// A seek table: the compressed and decompressed size of every frame, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeekTable {
    frames: Vec<(u32, u32)>,
}

impl SeekTable {
    /// Reads the seek table at the end of `src`. `Ok(None)` if there is none (or it is too
    /// large to read in one piece); an `InvalidData` error if its frames do not exactly fill
    /// the file before it: then it is only an index gone wrong, and the frames are still plain
    /// zstd.
    pub(crate) fn read(src: &dyn ReadAt) -> io::Result<Option<SeekTable>> {
        let Some((start, count, checks)) = locate(src)? else {
            return Ok(None);
        };
        let entry = if checks { 12usize } else { 8 };
        let table_len = (count as usize).saturating_mul(entry);
        if table_len > crate::io::MAX_READ_VEC {
            return Ok(None);
        }
        let t = src.read_vec(start + 8, table_len)?;
        // Bounded by the table bytes just read, so not attacker-sized beyond the file.
        let mut frames = Vec::with_capacity(count as usize);
        let mut comp = 0u64;
        for e in t.chunks_exact(entry) {
            let (Some(c), Some(d)) = (le32(e, 0), le32(e, 4)) else {
                return Ok(None);
            };
            frames.push((c, d));
            comp += u64::from(c); // at most 2^32 entries of 2^32: fits in u64
        }
        if comp != start {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("seekable zstd: seek table frames cover {comp} bytes, but the table starts at {start}"),
            ));
        }
        Ok(Some(SeekTable { frames }))
    }

    /// `(compressed, decompressed)` size of every frame, in file order.
    #[cfg(test)]
    pub(crate) fn frames(&self) -> &[(u32, u32)] {
        &self.frames
    }

    /// Total decoded size.
    pub(crate) fn decoded_size(&self) -> u64 {
        self.frames.iter().map(|&(_, d)| u64::from(d)).sum()
    }

    /// The skippable frame holding the seek table for `frames` (`(compressed, decompressed)`
    /// sizes in file order), to append after them. No per-frame checksums: our data frames
    /// carry zstd's own content checksum.
    pub(crate) fn encode(frames: &[(u32, u32)]) -> io::Result<Vec<u8>> {
        let count = u32::try_from(frames.len())
            .map_err(|_| io::Error::other("too many frames for a seek table"))?;
        let body = frames
            .len()
            .checked_mul(8)
            .and_then(|n| n.checked_add(FOOTER_LEN as usize))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| io::Error::other("seek table too large"))?;
        let mut t = Vec::with_capacity(body as usize + 8);
        t.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        t.extend_from_slice(&body.to_le_bytes());
        for &(c, d) in frames {
            t.extend_from_slice(&c.to_le_bytes());
            t.extend_from_slice(&d.to_le_bytes());
        }
        t.extend_from_slice(&count.to_le_bytes());
        t.push(0);
        t.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        Ok(t)
    }
}

/// Recognises zstd frames ending in a seek table.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::SeekableZstd
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["zst"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        starts_with_frame(p.head())
            && p.source()
                .is_some_and(|s| locate(s).is_ok_and(|l| l.is_some()))
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let fact = match SeekTable::read(&*src) {
            Ok(Some(t)) => {
                let fact = SizeFact::exact(t.decoded_size(), "zstd seek table");
                if let Some(s) = SeekableZstd::from_table(src.clone(), t) {
                    let detail = format!(
                        "{} independent frames, decodes to {} bytes",
                        s.frame_count(),
                        s.size()
                    );
                    let layer = Layer::stored(Format::SeekableZstd, &*src, Some(detail));
                    return Ok(Step::inner(layer, Arc::new(s)));
                }
                // Frames too large to decode one at a time: stream them like plain zstd.
                fact
            }
            Ok(None) => Codec::Zstd.size_fact(&*src)?,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                ctx.warn(format!(
                    "{e}; the seek table is ignored and the frames streamed"
                ));
                Codec::Zstd.size_fact(&*src)?
            }
            Err(e) => return Err(e.into()),
        };
        let s = StreamSource::open(Codec::Zstd, src.clone(), fact, ctx.options().stream_end)?;
        let detail = format!("decodes to {} bytes (streamed)", s.size());
        let layer = Layer::stored(Format::SeekableZstd, &*src, Some(detail));
        let free = s.tail_cached();
        Ok(Step::inner(layer, Arc::new(s)).with_free_tail(free))
    }
}

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
pub(crate) struct SeekableZstd {
    src: Arc<dyn ReadAt>,
    frames: Vec<SeekFrame>,
    size: u64,
    /// Preferred read size: the typical frame.
    chunk: u64,
    cache: frames::FrameCache,
    /// The frames that are not zero frames, found on first ask.
    data: OnceLock<ExtentMap>,
}

impl SeekableZstd {
    /// Reads the seek table of `src`. `Ok(None)` if there is none, or if a frame is too large
    /// to decode in memory (then stream it instead); an `InvalidData` error if the table does
    /// not match the frames.
    #[cfg(test)]
    pub(crate) fn open(src: Arc<dyn ReadAt>) -> io::Result<Option<Self>> {
        Ok(SeekTable::read(&*src)?.and_then(|t| Self::from_table(src, t)))
    }

    /// Random access to `src` through its seek table `t`; `None` if a frame is too large to
    /// decode in memory.
    pub(crate) fn from_table(src: Arc<dyn ReadAt>, t: SeekTable) -> Option<Self> {
        let mut fr = Vec::with_capacity(t.frames.len());
        let (mut comp, mut out) = (0u64, 0u64);
        for &(c, d) in &t.frames {
            if u64::from(d) > MAX_SEEKABLE_FRAME {
                return None;
            }
            if d > 0 {
                fr.push(SeekFrame {
                    comp_off: comp,
                    comp_len: c,
                    out_off: out,
                    out_len: d,
                });
            }
            comp += u64::from(c);
            out += u64::from(d);
        }
        let chunk = frames::typical_chunk(fr.iter().map(|f| u64::from(f.out_len)).collect());
        Some(SeekableZstd {
            src,
            frames: fr,
            size: out,
            chunk,
            cache: frames::FrameCache::new(SEEKABLE_CACHED_FRAMES),
            data: OnceLock::new(),
        })
    }

    /// The decoded ranges of every frame but the zero frames our backups store free space in.
    /// A zero frame is 4 bytes per 128 KiB block after its header, so only frames that small
    /// are read to check; a frame that cannot be read counts as data.
    fn data_frames(&self) -> ExtentMap {
        let small = |f: &SeekFrame| {
            let blocks = u64::from(f.out_len).div_ceil(ZERO_BLOCK).max(1);
            u64::from(f.comp_len) <= MAX_FRAME_HEADER as u64 + 4 * blocks
        };
        // Only the small frames are read (a zero frame is a few bytes per 128 KiB): said up
        // front, so a remote archive fetches just those bytes, in parallel.
        self.src.will_read(&ExtentMap::from_ranges(
            self.frames
                .iter()
                .filter(|f| small(f))
                .map(|f| (f.comp_off, f.comp_off + u64::from(f.comp_len))),
        ));
        let mut m = ExtentMap::new();
        for f in &self.frames {
            let zero = small(f)
                && self
                    .src
                    .read_vec(f.comp_off, f.comp_len as usize)
                    .is_ok_and(|c| zero_frame_size(&c) == Some(u64::from(f.out_len)));
            if !zero {
                m.insert(f.out_off, f.out_off + u64::from(f.out_len));
            }
        }
        m
    }

    /// Number of (non-empty) frames.
    pub(crate) fn frame_count(&self) -> usize {
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
        .map_err(|e| corrupt(i, f, e))?;
        decoded_len(i, f, out.len())?;
        Ok(out)
    }

    /// Decodes frame `i` straight into `out` (exactly its length), past the cache. The
    /// compressed bytes are read into a buffer the thread keeps (no fresh zeroed allocation
    /// per frame).
    fn decode_into(&self, i: usize, f: SeekFrame, out: &mut [u8]) -> io::Result<()> {
        thread_local! {
            static COMP: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let len = f.comp_len as usize;
        crate::io::within_read_limit(len)?;
        let n = COMP.with(|c| -> io::Result<usize> {
            let mut comp = c.borrow_mut();
            if comp.len() < len {
                comp.resize(len, 0);
            }
            let comp_bytes = &mut comp[..len];
            self.src.read_exact_at(f.comp_off, comp_bytes)?;
            if zero_frame_size(comp_bytes) == Some(u64::from(f.out_len)) {
                out.fill(0);
                Ok(out.len())
            } else {
                zstd::bulk::decompress_to_buffer(comp_bytes, out).map_err(|e| corrupt(i, f, e))
            }
        })?;
        decoded_len(i, f, n)
    }
}

fn corrupt(i: usize, f: SeekFrame, e: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "seekable zstd: frame {i} at compressed offset {} is corrupt: {e}",
            f.comp_off
        ),
    )
}

/// Fails unless frame `i` decoded to the length its seek table entry says.
fn decoded_len(i: usize, f: SeekFrame, got: usize) -> io::Result<()> {
    if got != f.out_len as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "seekable zstd: frame {i} decodes to {got} bytes, seek table says {}",
                f.out_len
            ),
        ));
    }
    Ok(())
}

/// If `frame` is exactly one zstd frame made only of RLE blocks of `0x00` (how backups store
/// free space), the number of zero bytes it decodes to.
fn zero_frame_size(frame: &[u8]) -> Option<u64> {
    let h = FrameHeader::parse(frame)?;
    if h.checksum {
        // A content checksum would have to be checked: decode normally.
        return None;
    }
    let mut p = h.len;
    let mut total = 0u64;
    loop {
        let b = BlockHeader::parse(frame.get(p..)?)?;
        if b.kind != 1 || *frame.get(p + BlockHeader::LEN)? != 0 {
            return None;
        }
        total = total.checked_add(u64::from(b.size))?;
        p += BlockHeader::LEN + 1;
        if b.last {
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
        // A read of exactly one whole frame (the pipeline cuts its reads where frames begin)
        // is decoded straight into the caller's buffer: the frame is read once, and a copy
        // through the cache would be one more pass over its bytes.
        let i = fr.partition_point(|f| f.out_off < offset);
        if let Some(&f) = fr.get(i) {
            if f.out_off == offset
                && f.out_len > 0
                && buf.len() == f.out_len as usize
                && !self.cache.contains(i)
            {
                self.decode_into(i, f, buf)?;
                return Ok(buf.len());
            }
        }
        frames::read_through_frames(
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

    fn allocated_hint(&self) -> Option<ExtentMap> {
        Some(self.data.get_or_init(|| self.data_frames()).clone())
    }

    fn will_read(&self, ranges: &ExtentMap) {
        let fr = &self.frames;
        self.src.will_read(&frames::stored_ranges(
            ranges,
            fr.len(),
            |i| (fr[i].out_off, fr[i].out_off + u64::from(fr[i].out_len)),
            |i| (fr[i].comp_off, fr[i].comp_off + u64::from(fr[i].comp_len)),
        ));
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let fr = &self.frames;
        Some(frames::starts_within(
            fr.len(),
            |i| fr[i].out_off,
            start,
            end,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn seek_table_round_trip() {
        let frames = [(10u32, 100u32), (4, 0), (7, 70)];
        let mut file = vec![0u8; 21];
        file[..4].copy_from_slice(&0xFD2F_B528u32.to_le_bytes());
        file.extend(SeekTable::encode(&frames).unwrap());
        let src = crate::io::MemSource(file.clone());
        let t = SeekTable::read(&src).unwrap().unwrap();
        assert_eq!(t.frames(), &frames);
        assert_eq!(t.decoded_size(), 170);
        // Frames that do not fill the space before the table: an index gone wrong.
        let mut short = file[1..].to_vec();
        short[0] = 0x28;
        let e = SeekTable::read(&crate::io::MemSource(short)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // No footer: no table.
        assert_eq!(
            SeekTable::read(&crate::io::MemSource(file[..30].to_vec())).unwrap(),
            None
        );
    }

    #[test]
    fn zero_frames_are_not_in_the_allocated_hint() {
        let data = zstd::bulk::compress(&[7u8; 1000], 3).unwrap();
        let zeros = crate::archive::zstd::zero_frame(300 << 10);
        let mut file = Vec::new();
        let mut table = Vec::new();
        for (f, n) in [(&data, 1000u32), (&zeros, 300 << 10), (&data, 1000)] {
            file.extend_from_slice(f);
            table.push((f.len() as u32, n));
        }
        file.extend(SeekTable::encode(&table).unwrap());
        let s = SeekableZstd::open(Arc::new(crate::io::MemSource(file)))
            .unwrap()
            .unwrap();
        let a = s.allocated_hint().unwrap();
        let end = 2000 + (300 << 10);
        assert_eq!(a, ExtentMap::from_ranges([(0, 1000), (end - 1000, end)]));
        assert_eq!(s.read_vec(1000, 10).unwrap(), [0; 10]);
    }

    /// Remembers what it was told it will be read.
    struct Told(crate::io::MemSource, std::sync::Mutex<Vec<ExtentMap>>);
    impl ReadAt for Told {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(offset, buf)
        }
        fn will_read(&self, ranges: &ExtentMap) {
            self.1.lock().unwrap().push(ranges.clone());
        }
    }

    #[test]
    fn a_plan_reaches_the_file_as_the_frames_holding_it() {
        // Bytes that do not compress, so the data frames are not mistaken for zero frames.
        let mut x = 1u32;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let data = zstd::bulk::compress(&noise, 3).unwrap();
        let zeros = crate::archive::zstd::zero_frame(300 << 10);
        let mut file = Vec::new();
        let mut table = Vec::new();
        for (f, n) in [
            (&data, 1000u32),
            (&zeros, 300 << 10),
            (&data, 1000),
            (&data, 1000),
        ] {
            file.extend_from_slice(f);
            table.push((f.len() as u32, n));
        }
        file.extend(SeekTable::encode(&table).unwrap());
        let told = Arc::new(Told(crate::io::MemSource(file), Default::default()));
        let s = SeekableZstd::open(told.clone()).unwrap().unwrap();
        let (d, z) = (data.len() as u64, zeros.len() as u64);
        // The map of the allocated frames reads only the small ones, and says so first.
        s.allocated_hint().unwrap();
        assert_eq!(
            told.1.lock().unwrap().last().unwrap(),
            &ExtentMap::single(d, d + z)
        );
        // Bytes in the first frame and across the third and fourth: those frames' bytes.
        let third = 1000 + (300 << 10);
        s.will_read(&ExtentMap::from_ranges([
            (10, 20),
            (third + 999, third + 1001),
        ]));
        assert_eq!(
            told.1.lock().unwrap().last().unwrap(),
            &ExtentMap::from_ranges([(0, d), (d + z, d + z + 2 * d)])
        );
    }
}
