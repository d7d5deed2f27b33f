//! The I/O layer: anything with a length that can be read at an offset, and the local things
//! bytes come from and go to.
//!
//! Every reader in blockwise (partition tables, filesystem probes, the bmap and archive
//! writers) works on a [`ReadAt`]. Regular files and block devices are read with `pread`;
//! compressed wrappers and containers ([`crate::format`]) are decoded behind the same trait, so
//! the layers above never know what the bytes came from.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub mod atomic;
pub(crate) mod blockdev;
pub(crate) mod device;
pub mod file;
pub(crate) mod overlay;
#[allow(unsafe_code)] // the one module allowed to: ioctls and lseek, each wrapped once
pub mod sys;
pub(crate) mod write;

pub(crate) use blockdev::DirectBlockDevice;
pub use file::FileSource;
pub use overlay::Overlay;
pub use write::WriteAt;

/// How a source is best read. Consumers (the pipeline, verify, the probes) adapt to it instead
/// of being told by whoever opened the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Any offset is cheap to read: files, devices, indexed archives (seekable zstd, xz with
    /// several blocks), Android sparse, stored zip members.
    Random,
    /// Decoded front to back (gzip, single-block xz, bzip2, lz4, deflate): a read behind the
    /// decoder's position restarts it. Read such a source once, in order, through
    /// [`ReadAt::sequential`].
    Sequential,
}

/// Whether [`ReadAt::size`] is the exact length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeKnown {
    /// The size is exact.
    Exact,
    /// The size is a hint until the source has been read to its end (gzip's ISIZE is the size
    /// modulo 4 GiB; a stream without any size field). Reads are not cut at a hint: they go on
    /// to the real end, where the source learns its size and reports it exact from then on. A
    /// consumer that assumed the hint must check it against what it finds.
    Hint,
}

/// What a source can do, as it describes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Random or sequential-only.
    pub(crate) access: Access,
    /// Preferred size of one read in bytes (a frame or block of an indexed archive; large
    /// sequential requests for files and devices). Always a power of two, at least 4 KiB.
    pub(crate) chunk: u64,
    /// Whether the size is exact or a hint.
    pub size: SizeKnown,
}

impl Caps {
    /// A random-access source of exact size, read in 4 MiB requests (files, devices, memory).
    pub(crate) const RANDOM: Caps = Caps {
        access: Access::Random,
        chunk: DEFAULT_CHUNK,
        size: SizeKnown::Exact,
    };
}

impl Caps {
    /// The caps of a decoder over `inner` that is itself random-access: random only if
    /// `inner` is (a sparse image inside a gzip stream is still read front to back).
    pub(crate) fn over(self, inner: Caps) -> Caps {
        Caps {
            access: if inner.access == Access::Sequential {
                Access::Sequential
            } else {
                self.access
            },
            ..self
        }
    }
}

/// Preferred read size of sources that have no structure of their own (files, devices).
pub(crate) const DEFAULT_CHUNK: u64 = 4 << 20;

/// Rounds a unit size (a frame, an xz block) to the power-of-two chunk size [`Caps::chunk`]
/// promises, between 4 KiB and 64 MiB.
pub(crate) fn chunk_for(unit: u64) -> u64 {
    unit.clamp(4096, 64 << 20).next_power_of_two().min(64 << 20)
}

/// Random-access, read-only byte source.
///
/// Implementations must be safe to share between threads; streaming decoders serialise
/// internally. Beyond `size` and `read_at`, a source describes itself ([`caps`](Self::caps),
/// [`boundaries`](Self::boundaries), [`allocated_hint`](Self::allocated_hint)) and can hand out
/// an in-order reader ([`sequential`](Self::sequential)); every wrapper forwards these, clipped
/// to its window.
pub trait ReadAt: Send + Sync {
    /// Length of the source in bytes (a hint when [`Caps::size`] says so).
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`. Returns the number of bytes read, which is
    /// short only at the end of the source (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// How the source is best read.
    fn caps(&self) -> Caps {
        Caps::RANDOM
    }

    /// Offsets strictly inside `start..end` where an independently decodable unit (a seekable
    /// zstd frame, an xz block) begins, sorted; `None` if the source has no such structure.
    /// Splitting reads at these offsets means no unit is decoded twice.
    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let _ = (start, end);
        None
    }

    /// Byte ranges the source knows hold data (e.g. allocated chunks of a sparse container),
    /// or `None` when it cannot tell. Never used to skip data, only as a hint.
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        None
    }

    /// Tells a source whose size is a hint ([`SizeKnown::Hint`]) that it holds at least
    /// `at_least` bytes (a bmap's image size, a partition table's extent), so it can raise
    /// the hint to the smallest size its own fields allow (gzip's ISIZE is the size modulo
    /// 4 GiB: the smallest `ISIZE + k·4 GiB` not below the bound). Sources of exact size
    /// ignore it.
    fn refine_size_hint(&self, at_least: u64) {
        let _ = at_least;
    }

    /// An in-order reader of the bytes from `offset` to the end. Sequential sources return a
    /// fresh decoder that bypasses their random-access cache (one decode, no restarts); the
    /// default reads through [`read_at`](Self::read_at) in `Caps::chunk` pieces.
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        Ok(Box::new(AtReader {
            src: self,
            pos: offset,
        }))
    }
}

/// The default [`ReadAt::sequential`]: reads at a moving offset.
struct AtReader<'a, T: ?Sized> {
    src: &'a T,
    pos: u64,
}

impl<T: ReadAt + ?Sized> io::Read for AtReader<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Skips `n` bytes of an in-order reader (for sources whose decoder can only start at 0).
pub(crate) fn skip_reader(r: &mut dyn io::Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut io::Read::take(r, n), &mut io::sink())?;
    if got < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ends at {got}, before offset {n}"),
        ));
    }
    Ok(())
}

/// Convenience methods every [`ReadAt`] gets.
pub trait ReadAtExt: ReadAt {
    /// Fills `buf` from `offset`, failing with `UnexpectedEof` if the source ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let pos = offset
                .checked_add(done as u64)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
            match self.read_at(pos, &mut buf[done..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "source ends at {} (wanted {} bytes at {offset})",
                            self.size(),
                            buf.len()
                        ),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new vector. `len` is bounded by [`MAX_READ_VEC`]
    /// so a hostile size field cannot make us allocate without limit.
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if len > MAX_READ_VEC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing to read {len} bytes in one piece (limit {MAX_READ_VEC})"),
            ));
        }
        let mut v = vec![0u8; len];
        self.read_exact_at(offset, &mut v)?;
        Ok(v)
    }

    /// Like [`read_vec`](Self::read_vec) but returns what exists: short (possibly empty) at the
    /// end of the source instead of failing.
    fn read_upto(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let avail = self.size().saturating_sub(offset).min(len as u64) as usize;
        self.read_vec(offset, avail)
    }
}

impl<T: ReadAt + ?Sized> ReadAtExt for T {}

/// Largest single buffer [`ReadAtExt::read_vec`] will allocate (64 MiB).
pub const MAX_READ_VEC: usize = 64 << 20;

/// Forwards everything a [`ReadAt`] has to `$inner` (wrappers that change nothing about the
/// bytes' positions).
macro_rules! forward_caps {
    ($s:ident, $inner:expr) => {
        fn caps(&$s) -> Caps {
            $inner.caps()
        }
        fn boundaries(&$s, start: u64, end: u64) -> Option<Vec<u64>> {
            $inner.boundaries(start, end)
        }
        fn allocated_hint(&$s) -> Option<crate::ExtentMap> {
            $inner.allocated_hint()
        }
        fn refine_size_hint(&$s, at_least: u64) {
            $inner.refine_size_hint(at_least)
        }
    };
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    forward_caps!(self, (**self));
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        (**self).sequential(offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    forward_caps!(self, (**self));
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        (**self).sequential(offset)
    }
}

/// An in-memory source (tests, small decoded images, fuzzing).
#[derive(Clone, Debug, Default)]
pub struct MemSource(pub Vec<u8>);

impl ReadAt for MemSource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= self.0.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// A window `[offset, offset+len)` of another source: a partition, or a container's payload.
/// Reads never cross the window's end, even if the inner source is longer.
#[derive(Clone)]
pub struct Slice<S> {
    inner: S,
    offset: u64,
    len: u64,
}

impl<S: ReadAt> Slice<S> {
    /// A window of `len` bytes at `offset`. The window may extend past the end of `inner`
    /// (a truncated image); reads then come back short, exactly as from a short file.
    pub fn new(inner: S, offset: u64, len: u64) -> Self {
        Slice { inner, offset, len }
    }
}

impl<S: ReadAt> ReadAt for Slice<S> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - offset) as usize;
        let Some(pos) = self.offset.checked_add(offset) else {
            return Ok(0);
        };
        self.inner.read_at(pos, &mut buf[..n])
    }
    fn caps(&self) -> Caps {
        // A window's length is fixed by whoever cut it, whatever the inner size is.
        Caps {
            size: SizeKnown::Exact,
            ..self.inner.caps()
        }
    }
    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let end = end.min(self.len);
        if start >= end {
            return Some(Vec::new());
        }
        let b = self.inner.boundaries(
            self.offset.checked_add(start)?,
            self.offset.checked_add(end)?,
        )?;
        Some(b.into_iter().map(|x| x - self.offset).collect())
    }
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        let end = self.offset.saturating_add(self.len);
        let a = self.inner.allocated_hint()?;
        let window = crate::ExtentMap::single(self.offset, end);
        Some(crate::ExtentMap::from_ranges(
            a.intersect(&window)
                .iter()
                .map(|r| (r.start - self.offset, r.end - self.offset)),
        ))
    }
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        let len = self.len.saturating_sub(offset);
        let pos = self.offset.saturating_add(offset.min(self.len));
        Ok(Box::new(io::Read::take(self.inner.sequential(pos)?, len)))
    }
}

/// Counts the bytes read through it; tests use it to prove a command reads only what it needs.
pub struct Counting<S> {
    inner: S,
    bytes: AtomicU64,
    calls: AtomicU64,
}

impl<S: ReadAt> Counting<S> {
    /// Wraps `inner` with zeroed counters.
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            bytes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }
    /// Bytes returned so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// `read_at` calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl<S: ReadAt> ReadAt for Counting<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }
    forward_caps!(self, self.inner);
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        Ok(Box::new(CountingReader {
            inner: self.inner.sequential(offset)?,
            of: self,
        }))
    }
}

/// An in-order reader that adds what it reads to its [`Counting`]'s total.
struct CountingReader<'a, S> {
    inner: Box<dyn io::Read + Send + 'a>,
    of: &'a Counting<S>,
}

impl<S> io::Read for CountingReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.of.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.of.calls.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }
}

/// Wraps a source and remembers which byte ranges were read (up to a bound), so a backup can
/// give the metadata that `inspect` reads frames of its own: reading it back from the archive
/// then decodes only small, well-compressed frames.
pub(crate) struct Recording<S> {
    inner: S,
    reads: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// Reads remembered by [`Recording`]; past this the rest are not recorded (only a hint).
const MAX_RECORDED_READS: usize = 1 << 20;

impl<S: ReadAt> Recording<S> {
    /// Wraps `inner` with an empty record.
    pub(crate) fn new(inner: S) -> Self {
        Recording {
            inner,
            reads: std::sync::Mutex::new(Vec::new()),
        }
    }
    /// The byte ranges read so far.
    pub(crate) fn reads(&self) -> crate::ExtentMap {
        let r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        crate::ExtentMap::from_ranges(r.iter().copied())
    }
}

impl<S: ReadAt> ReadAt for Recording<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        if n > 0 {
            let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() < MAX_RECORDED_READS {
                r.push((offset, offset.saturating_add(n as u64)));
            }
        }
        Ok(n)
    }
    // Not `sequential`: what is read in order through the default reader is recorded too.
    forward_caps!(self, self.inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_clamps_to_window() {
        let m = MemSource((0u8..100).collect());
        let s = Slice::new(&m, 90, 20);
        let mut b = [0u8; 20];
        assert_eq!(s.read_at(0, &mut b).unwrap(), 10);
        assert_eq!(b[0], 90);
        assert!(s.read_exact_at(0, &mut b).is_err());
        assert_eq!(s.read_at(25, &mut b).unwrap(), 0);
    }

    #[test]
    fn read_vec_is_bounded() {
        let m = MemSource(vec![0; 10]);
        assert!(m.read_vec(0, MAX_READ_VEC + 1).is_err());
        assert_eq!(m.read_upto(5, 100).unwrap().len(), 5);
    }

    /// A source with units every 100 bytes and data in 250..400.
    struct Framed(MemSource);
    impl ReadAt for Framed {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(offset, buf)
        }
        fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
            Some(
                (1..10)
                    .map(|i| i * 100)
                    .filter(|&b| b > start && b < end)
                    .collect(),
            )
        }
        fn allocated_hint(&self) -> Option<crate::ExtentMap> {
            Some(crate::ExtentMap::single(250, 400))
        }
    }

    #[test]
    fn slice_forwards_caps_in_its_own_coordinates() {
        let f = Framed(MemSource((0..1000u32).map(|i| i as u8).collect()));
        let s = Slice::new(&f, 150, 300);
        assert_eq!(s.boundaries(0, 300), Some(vec![50, 150, 250]));
        assert_eq!(s.boundaries(60, 1000), Some(vec![150, 250]));
        assert_eq!(s.allocated_hint().unwrap().as_slice()[0].start, 100);
        assert_eq!(s.allocated_hint().unwrap().total(), 150);
        let a: Arc<dyn ReadAt> = Arc::new(Slice::new(&f, 150, 300));
        assert_eq!(a.boundaries(0, 300), Some(vec![50, 150, 250]));
        let mut v = Vec::new();
        io::Read::read_to_end(&mut s.sequential(290).unwrap(), &mut v).unwrap();
        assert_eq!(v, [184u8, 185, 186, 187, 188, 189, 190, 191, 192, 193]);
        assert_eq!(s.caps(), Caps::RANDOM);
    }

    #[test]
    fn counting_counts() {
        let m = MemSource(vec![7; 4096]);
        let c = Counting::new(&m);
        let mut b = [0u8; 512];
        c.read_exact_at(100, &mut b).unwrap();
        assert_eq!(c.bytes_read(), 512);
        let mut v = Vec::new();
        io::Read::read_to_end(&mut c.sequential(4000).unwrap(), &mut v).unwrap();
        assert_eq!(c.bytes_read(), 512 + 96);
    }
}
