//! A block device opened read-only: its size and logical sector size come from ioctls, because
//! `stat` reports 0 bytes for device nodes.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use super::ReadAt;

/// A block device as a [`ReadAt`] source.
#[derive(Debug)]
pub struct BlockDevice {
    file: File,
    size: u64,
    sector_size: u32,
}

impl BlockDevice {
    /// Opens the block device at `path` read-only and queries its geometry.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::from_file(file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Wraps an open block-device file. Fails (ENOTTY) if it is not a block device.
    pub fn from_file(file: File) -> io::Result<Self> {
        let size = crate::sys::blk_size64(file.as_fd())?;
        let sector_size = crate::sys::blk_sector_size(file.as_fd())?;
        Ok(BlockDevice {
            file,
            size,
            sector_size,
        })
    }

    /// Logical sector size in bytes (512 or 4096 normally).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
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
