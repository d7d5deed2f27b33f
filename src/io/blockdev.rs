//! A block device opened read-only: its size and logical sector size come from ioctls, because
//! `stat` reports 0 bytes for device nodes.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use super::read_at::ReadAt;

/// A block device as a [`ReadAt`] source.
#[derive(Debug)]
pub(crate) struct BlockDevice {
    file: File,
    size: u64,
    sector_size: u32,
}

impl BlockDevice {
    /// Opens the block device at `path` read-only and queries its geometry. The error is the
    /// system's, without the path: the caller names the device.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::from_file(File::open(path)?)
    }

    /// Wraps an open block-device file. Fails (ENOTTY) if it is not a block device.
    pub(crate) fn from_file(file: File) -> io::Result<Self> {
        let size = crate::io::sys::blk_size64(file.as_fd())?;
        let sector_size = crate::io::sys::blk_sector_size(file.as_fd())?;
        Ok(BlockDevice {
            file,
            size,
            sector_size,
        })
    }

    /// Logical sector size in bytes (512 or 4096 normally).
    pub(crate) fn sector_size(&self) -> u32 {
        self.sector_size
    }
}

/// A block device read with `O_DIRECT`, for long sequential reads (backups): the page cache is
/// bypassed, so reading a whole card neither evicts everything else nor costs a copy, and the
/// data comes from the device, not from a cache that may be stale after the card was rewritten
/// elsewhere. Reads are widened to whole logical sectors through an aligned bounce buffer.
#[derive(Debug)]
pub(crate) struct DirectBlockDevice {
    direct: File,
    size: u64,
    sector_size: u32,
}

/// Alignment of the bounce buffer's address: a page, which satisfies every device's DMA
/// alignment requirement.
const DIRECT_BUF_ALIGN: usize = 4096;

impl DirectBlockDevice {
    /// Opens `path` read-only with `O_DIRECT`. The error is the system's, without the path:
    /// the caller names the device.
    pub fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        Self::from_file(file)
    }

    /// Wraps a block device already open with `O_DIRECT` (a flash target's descriptor,
    /// duplicated: reads of the card it is writing reach the medium).
    pub(crate) fn from_file(file: File) -> io::Result<Self> {
        let size = crate::io::sys::blk_size64(file.as_fd())?;
        let sector_size = crate::io::sys::blk_sector_size(file.as_fd())?;
        Ok(DirectBlockDevice {
            direct: file,
            size,
            sector_size,
        })
    }

    /// Fills `buf` (on a page, whole sectors) from sector-aligned `at`, short only at the end.
    fn read_sectors(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0usize;
        while got < buf.len() {
            let r = super::file::pread_within(
                &self.direct,
                self.size,
                at + got as u64,
                &mut buf[got..],
            )?;
            if r == 0 {
                break;
            }
            got += r;
        }
        Ok(got)
    }
}

impl ReadAt for DirectBlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - offset);
        let ss = u64::from(self.sector_size);
        let start = offset / ss * ss;
        let end = (offset + want)
            .div_ceil(ss)
            .saturating_mul(ss)
            .min(self.size);
        let n = usize::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "read too large"))?;
        // Whole sectors into a buffer on a page (the pipeline's are): read as they are.
        if start == offset && n as u64 == want && buf.as_ptr() as usize % DIRECT_BUF_ALIGN == 0 {
            return self.read_sectors(start, &mut buf[..n]);
        }
        let mut raw = vec![0u8; n + DIRECT_BUF_ALIGN];
        let shift =
            (DIRECT_BUF_ALIGN - raw.as_ptr() as usize % DIRECT_BUF_ALIGN) % DIRECT_BUF_ALIGN;
        let bounce = &mut raw[shift..shift + n];
        let got = self.read_sectors(start, bounce)?;
        let skip = (offset - start) as usize;
        let avail = got.saturating_sub(skip).min(want as usize);
        buf[..avail].copy_from_slice(&bounce[skip..skip + avail]);
        Ok(avail)
    }
}

impl ReadAt for BlockDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        super::file::pread_within(&self.file, self.size, offset, buf)
    }
}
