//! A regular file read with `pread`, so many threads can read at once without a shared cursor.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::read_at::ReadAt;

/// A regular file as a [`ReadAt`] source. The size is taken once at open time: images are not
/// expected to change while they are read, and a fixed size keeps every layer above consistent.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    /// Opens `path` read-only. The error is the system's, without the path: the caller, who
    /// knows what the file is for, names it.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::from_file(File::open(path)?)
    }

    /// Wraps an already opened file; its current length is the source size.
    pub(crate) fn from_file(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(FileSource { file, size })
    }
}

impl ReadAt for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        pread_within(&self.file, self.size, offset, buf)
    }
}

/// `pread` that never reads past `size` (the length we reported, even if the file or device
/// grew meanwhile) and retries on `EINTR`.
pub(crate) fn pread_within(
    file: &File,
    size: u64,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    if offset >= size || buf.is_empty() {
        return Ok(0);
    }
    let n = (buf.len() as u64).min(size - offset) as usize;
    loop {
        match file.read_at(&mut buf[..n], offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ReadAtExt;
    use std::io::Write;

    #[test]
    fn reads_and_clamps() {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(&(0u8..=255).collect::<Vec<_>>()).unwrap();
        let f = FileSource::open(t.path()).unwrap();
        assert_eq!(f.size(), 256);
        let mut b = [0u8; 16];
        f.read_exact_at(250, &mut b[..6]).unwrap();
        assert_eq!(b[0], 250);
        assert_eq!(f.read_at(250, &mut b).unwrap(), 6);
        assert_eq!(f.read_at(256, &mut b).unwrap(), 0);
        assert_eq!(f.read_at(u64::MAX, &mut b).unwrap(), 0);
    }
}
