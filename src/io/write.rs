//! The write side of the I/O layer: anything bytes can be written to at an offset.
//!
//! Sinks (archive writers today, flash targets next) write through [`WriteAt`], never through
//! a concrete `File`, so the same writer serves a temporary file, a block device or memory.
//! Appending formats (zstd frames, xz blocks) keep their own position; formats that patch a
//! header at the end (Android sparse) or leave holes (sparse raw) write where they need to.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A destination written at byte offsets.
pub trait WriteAt: Send {
    /// Writes all of `buf` at `offset`, extending the destination if needed.
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;

    /// Sets the length to `len` bytes: cuts, or extends with zeros (a file extends with a
    /// hole, which reads as zeros and costs no space).
    fn set_len(&mut self, len: u64) -> io::Result<()>;

    /// Starts writing back what was written so far, without waiting. Long writes that end in
    /// `fsync` call this now and then, so the disk works while the pipeline computes instead
    /// of all at once at the end. A hint: destinations without a cache ignore it.
    fn start_writeback(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Waits until everything written so far is on the medium (`fdatasync`): what a flash does
    /// before it writes the image's head, and before it reports success. Destinations without
    /// a medium (memory) have nothing to wait for.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteAt for File {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        super::sys::start_writeback(std::os::fd::AsFd::as_fd(self))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl WriteAt for Vec<u8> {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| too_large(offset))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| too_large(offset))?;
        if end > self.len() {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.resize(usize::try_from(len).map_err(|_| too_large(len))?, 0);
        Ok(())
    }
}

fn too_large(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("offset {at} does not fit in memory"),
    )
}

/// A pointer to a destination is that destination.
macro_rules! forward_through_pointer {
    ($($ptr:ty),*) => {$(
        impl<W: WriteAt + ?Sized> WriteAt for $ptr {
            fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
                (**self).write_all_at(offset, buf)
            }
            fn set_len(&mut self, len: u64) -> io::Result<()> {
                (**self).set_len(len)
            }
            fn start_writeback(&mut self) -> io::Result<()> {
                (**self).start_writeback()
            }
            fn sync(&mut self) -> io::Result<()> {
                (**self).sync()
            }
        }
    )*};
}

forward_through_pointer!(&mut W, Box<W>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_and_file_agree() {
        let mut v: Vec<u8> = Vec::new();
        let mut f = tempfile::tempfile().unwrap();
        for out in [&mut v as &mut dyn WriteAt, &mut f] {
            out.write_all_at(10, b"abc").unwrap();
            out.write_all_at(2, b"xy").unwrap();
            out.write_all_at(13, b"tail").unwrap();
            out.set_len(20).unwrap();
            out.start_writeback().unwrap();
        }
        let mut back = Vec::new();
        std::io::Seek::rewind(&mut f).unwrap();
        std::io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!(v, back);
        assert_eq!(&v[..], b"\0\0xy\0\0\0\0\0\0abctail\0\0\0");
    }
}
