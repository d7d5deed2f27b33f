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
pub mod blockdev;
pub mod device;
pub mod file;
pub mod overlay;
pub mod sys;

pub use blockdev::{BlockDevice, DirectBlockDevice};
pub use file::FileSource;
pub use overlay::Overlay;

/// Random-access, read-only byte source.
///
/// Implementations must be safe to share between threads; streaming decoders serialise
/// internally.
pub trait ReadAt: Send + Sync {
    /// Length of the source in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`. Returns the number of bytes read, which is
    /// short only at the end of the source (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Byte ranges the source knows hold data (e.g. allocated chunks of a sparse container),
    /// or `None` when it cannot tell. Never used to skip data, only as a hint.
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        None
    }
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

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        (**self).allocated_hint()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
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
    /// Where the window starts in the inner source.
    pub fn offset(&self) -> u64 {
        self.offset
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
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        self.inner.allocated_hint()
    }
}

/// Wraps a source and remembers which byte ranges were read (up to a bound), so a backup can
/// give the metadata that `inspect` reads frames of its own: reading it back from the archive
/// then decodes only small, well-compressed frames.
pub struct Recording<S> {
    inner: S,
    reads: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// Reads remembered by [`Recording`]; past this the rest are not recorded (only a hint).
const MAX_RECORDED_READS: usize = 1 << 20;

impl<S: ReadAt> Recording<S> {
    /// Wraps `inner` with an empty record.
    pub fn new(inner: S) -> Self {
        Recording {
            inner,
            reads: std::sync::Mutex::new(Vec::new()),
        }
    }
    /// The byte ranges read so far.
    pub fn reads(&self) -> crate::ExtentMap {
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
    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        self.inner.allocated_hint()
    }
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

    #[test]
    fn counting_counts() {
        let m = MemSource(vec![7; 4096]);
        let c = Counting::new(&m);
        let mut b = [0u8; 512];
        c.read_exact_at(100, &mut b).unwrap();
        assert_eq!(c.bytes_read(), 512);
    }
}
