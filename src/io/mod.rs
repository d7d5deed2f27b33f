//! The I/O layer: anything with a length that can be read at an offset, and the local things
//! bytes come from and go to.
//!
//! Every reader in blockwise (partition tables, filesystem probes, the bmap and archive
//! writers) works on a [`ReadAt`]. Regular files and block devices are read with `pread`;
//! compressed wrappers and containers ([`crate::format`]) are decoded behind the same trait, so
//! the layers above never know what the bytes came from.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

#[macro_use]
mod read_at;

pub mod atomic;
pub(crate) mod blockdev;
pub mod file;
pub(crate) mod overlay;
pub mod remote;
#[allow(unsafe_code)] // the one module allowed to: ioctls and lseek, each wrapped once
pub mod sys;
pub(crate) mod write;

pub(crate) use blockdev::DirectBlockDevice;
pub use file::FileSource;
pub use overlay::Overlay;
pub(crate) use read_at::within_read_limit;
pub(crate) use read_at::{chunk_for, skip_reader, Access, DEFAULT_CHUNK};
pub use read_at::{Caps, ReadAt, ReadAtExt, SizeKnown, MAX_READ_VEC};
pub use write::WriteAt;

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
    fn note_free(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len);
        if offset < end {
            if let Some(pos) = self.offset.checked_add(offset) {
                self.inner.note_free(pos, end - offset);
            }
        }
    }
    fn will_read(&self, ranges: &crate::ExtentMap) {
        let window = ranges.within(0, self.len);
        self.inner
            .will_read(&crate::ExtentMap::from_ranges(window.iter().filter_map(
                |r| {
                    Some((
                        self.offset.checked_add(r.start)?,
                        self.offset.checked_add(r.end)?,
                    ))
                },
            )));
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

/// For tests: a [`MemSource`] that remembers the offset of every read, in order.
#[cfg(test)]
pub(crate) struct LoggedReads {
    pub(crate) inner: MemSource,
    pub(crate) offsets: std::sync::Mutex<Vec<u64>>,
}

#[cfg(test)]
impl LoggedReads {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        LoggedReads {
            inner: MemSource(bytes),
            offsets: std::sync::Mutex::default(),
        }
    }
}

#[cfg(test)]
impl ReadAt for LoggedReads {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(offset);
        self.inner.read_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::Arc;

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

    /// A source of declared size 100 whose bytes end at 60 (a stream cut short).
    struct EndsEarly(MemSource);
    impl ReadAt for EndsEarly {
        fn size(&self) -> u64 {
            100
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(offset, buf)
        }
    }

    #[test]
    fn struct_reads_tell_a_small_volume_from_a_broken_read() {
        let m = MemSource(vec![1; 60]);
        assert_eq!(m.read_struct(50, 10).unwrap(), [1; 10]);
        let e = m.read_struct(50, 20).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooSmall {
                    offset: 50,
                    len: 20,
                    size: 60
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            m.read_struct(u64::MAX, 1),
            Err(Error::TooSmall { .. })
        ));
        assert_eq!(m.read_struct_upto(50, 20).unwrap().len(), 10);

        let cut = EndsEarly(MemSource(vec![1; 60]));
        let e = cut.read_struct(50, 20).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Read {
                    offset: 50,
                    len: 20,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.chain(),
            "read error at byte 50 (reading 20 bytes): the source ends at byte 60, inside its \
             size of 100"
        );
        assert!(matches!(
            cut.read_struct_upto(50, 100),
            Err(Error::Read { .. })
        ));
        assert!(matches!(
            m.read_struct(0, MAX_READ_VEC + 1),
            Err(Error::Corrupt { .. })
        ));
    }
}
