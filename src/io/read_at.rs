//! The source trait and what a source says of itself: [`ReadAt`] and [`ReadAtExt`], [`Caps`]
//! ([`Access`], [`SizeKnown`], chunk sizes), the default in-order reader, the forwarding
//! of [`ReadAt`] through `Arc` and `&`, and the `forward_caps!` macro for wrappers.
//!
//! Apart from the `io` façade (`io/mod.rs`, which re-exports all of it) so that the local
//! sources (`file`, `blockdev`, `overlay`) import the trait from here and the façade, which
//! names those sources, and they never import each other.

use std::io;
use std::sync::Arc;

use crate::Error;

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
    pub chunk: u64,
    /// Whether the size is exact or a hint.
    pub size: SizeKnown,
}

impl Caps {
    /// A random-access source of exact size, read in 4 MiB requests (files, devices, memory).
    pub const RANDOM: Caps = Caps {
        access: Access::Random,
        chunk: DEFAULT_CHUNK,
        size: SizeKnown::Exact,
    };
}

impl Caps {
    /// The caps of a decoder over `inner` that is itself random-access: random only if
    /// `inner` is (a sparse image inside a gzip stream is still read front to back).
    pub fn over(self, inner: Caps) -> Caps {
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

    /// A reader's word that `len` bytes at `offset` hold nothing its filesystem uses, as far
    /// as what it has read so far says (a block bitmap's free blocks, a FAT's free clusters,
    /// before any cross-check against the files). A hint, never a promise: the cross-check
    /// may still find blocks in use there. Sources ignore it; wrappers forward it in their
    /// own terms; a flash of a stream listens (`flash::ScanHints`), to skip those bytes as
    /// they pass, provisionally.
    fn note_free(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// A reader's word that it is about to read `ranges`, in order (flash, backup and convert
    /// pass their whole map before they start). A source that fetches from far away (a web
    /// server, a bucket) fetches exactly those bytes ahead of the reader, in parallel;
    /// decoders pass it on in their own terms (the frames or blocks holding those bytes);
    /// everything else ignores it. Only a hint: reads outside `ranges` still work.
    fn will_read(&self, ranges: &crate::ExtentMap) {
        let _ = ranges;
    }

    /// An in-order reader of the bytes from `offset` to the end. Sequential sources return a
    /// fresh decoder that bypasses their random-access cache (one decode, no restarts); the
    /// default reads through [`read_at`](Self::read_at) in [`Caps::chunk`] pieces.
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
        within_read_limit(len)?;
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

    /// Reads the on-disk structure of `buf.len()` bytes at `offset` (a superblock, a table, a
    /// bitmap), telling apart the two ways that can fail, for the readers of partition tables
    /// and filesystems:
    ///
    /// - [`Error::TooSmall`]: the source ends at its size before the structure does: the
    ///   volume is too small to hold it (for a probe: not this format);
    /// - [`Error::Read`], naming `offset`: the source failed, or ended early inside its own
    ///   size (a truncated or corrupt compressed stream, a bad sector).
    ///
    /// A source whose size is a hint ([`SizeKnown::Hint`]) is read on to its real end, as by
    /// [`read_exact_at`](Self::read_exact_at); where it ended is asked after the read.
    fn read_struct_into(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
        let got = read_struct_part(self, offset, buf)?;
        if got < buf.len() {
            return Err(Error::TooSmall {
                offset,
                len: buf.len() as u64,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Like [`read_struct_into`](Self::read_struct_into), into a new vector. `len` is bounded
    /// by [`MAX_READ_VEC`] (a larger one is a corrupt size field).
    fn read_struct(&self, offset: u64, len: usize) -> crate::Result<Vec<u8>> {
        let mut v = struct_buf(offset, len)?;
        self.read_struct_into(offset, &mut v)?;
        Ok(v)
    }

    /// Like [`read_struct`](Self::read_struct) but returns what exists: short (possibly
    /// empty) where the source ends at its size. Failing reads and a source that ends early
    /// inside its size are still [`Error::Read`].
    fn read_struct_upto(&self, offset: u64, len: usize) -> crate::Result<Vec<u8>> {
        let want = self.size().saturating_sub(offset).min(len as u64) as usize;
        let mut v = struct_buf(offset, want)?;
        let got = read_struct_part(self, offset, &mut v)?;
        v.truncate(got);
        Ok(v)
    }
}

impl<T: ReadAt + ?Sized> ReadAtExt for T {}

/// Fills `buf` from `offset` until it is full or the source ends at its size; returns the
/// bytes read. A failing read, or an end before [`size`](ReadAt::size), is
/// [`Error::Read`] for the whole request.
fn read_struct_part<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    buf: &mut [u8],
) -> crate::Result<usize> {
    let len = buf.len() as u64;
    let failed = |source| Error::Read {
        offset,
        len,
        source,
    };
    let mut done = 0;
    while done < buf.len() {
        let Some(pos) = offset.checked_add(done as u64) else {
            break; // nothing lies past u64::MAX: the source has ended
        };
        match src.read_at(pos, &mut buf[done..]) {
            Ok(0) => {
                // Asked after the read: a hinted size has become exact at the real end.
                let size = src.size();
                if pos < size {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the source ends at byte {pos}, inside its size of {size}"),
                    )));
                }
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(done)
}

/// A zeroed buffer for a structure of `len` bytes at `offset`, refused above [`MAX_READ_VEC`].
fn struct_buf(offset: u64, len: usize) -> crate::Result<Vec<u8>> {
    if len > MAX_READ_VEC {
        return Err(Error::corrupt(
            "size field",
            format!("{len} bytes at byte {offset} asked for in one read (limit {MAX_READ_VEC})"),
        ));
    }
    Ok(vec![0u8; len])
}

/// Fails unless `len` bytes may be read in one piece ([`MAX_READ_VEC`]): the bound a hostile
/// size field meets before anything is allocated for it.
pub(crate) fn within_read_limit(len: usize) -> io::Result<()> {
    if len > MAX_READ_VEC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("refusing to read {len} bytes in one piece (limit {MAX_READ_VEC})"),
        ));
    }
    Ok(())
}

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
        fn note_free(&$s, offset: u64, len: u64) {
            $inner.note_free(offset, len)
        }
        fn will_read(&$s, ranges: &crate::ExtentMap) {
            $inner.will_read(ranges)
        }
    };
}

/// A pointer to a source is that source: everything forwarded, nothing clipped.
macro_rules! forward_through_pointer {
    ($($ptr:ty),*) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $ptr {
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
    )*};
}

forward_through_pointer!(Arc<T>, &T);
