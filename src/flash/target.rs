//! Flash targets: a block device (opened `O_EXCL | O_DIRECT`, written through an aligned
//! bounce buffer) or a regular file (created or extended, never cut), behind [`WriteAt`] for
//! the writer and with a reader that reaches the medium for the read-back.
//!
//! A device is pinned by its [`Identity`] (device number and size, and the serial or WWN the
//! caller read from `/sys`): [`Target::open`] refuses a node that is no longer the disk the
//! safety check judged, so a card swapped between the check and the first write is refused,
//! not written.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::io::{DirectBlockDevice, ReadAt, WriteAt};

/// Size of the aligned buffer a device is written through: large enough that the card sees
/// long sequential writes.
const BOUNCE: usize = 8 << 20;

/// Alignment of the bounce buffer's address (a page satisfies every device's DMA rules).
const ALIGN: usize = 4096;

/// What a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A block device node.
    Device,
    /// A regular file (created if missing).
    File,
}

/// What pins a device between the safety check and the first write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The device number (`st_rdev`).
    pub rdev: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// A page-aligned buffer of fixed length.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + ALIGN];
        let start = (ALIGN - raw.as_ptr() as usize % ALIGN) % ALIGN;
        Aligned { raw, start, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// An open flash target.
pub struct Target {
    path: PathBuf,
    kind: TargetKind,
    file: File,
    size: u64,
    sector: u64,
    bounce: Option<Aligned>,
    /// A device's reads: its descriptor duplicated, read through the crate's `O_DIRECT`
    /// reader.
    direct: Option<DirectBlockDevice>,
    created: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .finish()
    }
}

impl Target {
    /// Opens `path` for writing an image of `image_size` bytes.
    ///
    /// A block device is opened `O_RDWR | O_EXCL | O_DIRECT` (`O_EXCL` fails with `EBUSY`
    /// while anything else holds it exclusively: a mount, a device-mapper table, another
    /// flash), and must match `pin` when given. A regular file is created if missing and
    /// extended to `image_size` if shorter (holes), never cut; anything else is refused.
    pub fn open(path: &Path, image_size: u64, pin: Option<&Identity>) -> crate::Result<Target> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        match meta {
            Some(m) if m.file_type().is_block_device() => Self::open_device(path, pin),
            Some(m) if m.is_file() => Self::open_file(path, image_size, false),
            None => Self::open_file(path, image_size, true),
            Some(_) => Err(crate::Error::Refused {
                reason: format!(
                    "{} is neither a block device nor a regular file",
                    path.display()
                ),
            }),
        }
    }

    fn open_device(path: &Path, pin: Option<&Identity>) -> crate::Result<Target> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL | libc::O_DIRECT)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    crate::Error::Refused {
                        reason: format!(
                            "{} is in use (opened exclusively by a mount, a device mapper or \
                             another program)",
                            path.display()
                        ),
                    }
                } else {
                    crate::Error::Io(e)
                }
            })?;
        let size = crate::io::sys::blk_size64(file.as_fd())?;
        let sector = u64::from(crate::io::sys::blk_sector_size(file.as_fd())?);
        let rdev = file.metadata()?.rdev();
        let direct = DirectBlockDevice::from_file(file.try_clone()?)?;
        if let Some(p) = pin {
            let now = Identity { rdev, size };
            if &now != p {
                return Err(crate::Error::Refused {
                    reason: format!(
                        "{} changed since it was checked (device {} of {} bytes, now {} of {}): \
                         was the card swapped? nothing was written",
                        path.display(),
                        p.rdev,
                        p.size,
                        now.rdev,
                        now.size
                    ),
                });
            }
        }
        Ok(Target {
            path: path.to_path_buf(),
            kind: TargetKind::Device,
            file,
            size,
            sector,
            bounce: Some(Aligned::new(BOUNCE)),
            direct: Some(direct),
            created: false,
        })
    }

    fn open_file(path: &Path, image_size: u64, create: bool) -> crate::Result<Target> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < image_size {
            file.set_len(image_size)?;
        }
        Ok(Target {
            path: path.to_path_buf(),
            kind: TargetKind::File,
            file,
            size: len.max(image_size),
            sector: 512,
            bounce: None,
            direct: None,
            created: create,
        })
    }

    /// The identity of the block device at `path` as it is now (for pinning it before the
    /// safety check).
    pub fn identify(path: &Path) -> crate::Result<Identity> {
        let file = File::open(path)?;
        Ok(Identity {
            rdev: file.metadata()?.rdev(),
            size: crate::io::sys::blk_size64(file.as_fd())?,
        })
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device or file.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// Size in bytes (a file target: at least the image size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True for a file target that did not exist before.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Declares `len` bytes at `offset` unused: `BLKDISCARD` on a device (narrowed to whole
    /// sectors), a punched hole in a file. Returns the bytes discarded.
    pub fn discard(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        let end = offset.saturating_add(len).min(self.size);
        let start = offset.div_ceil(self.sector).saturating_mul(self.sector);
        let end = end / self.sector * self.sector;
        if end <= start {
            return Ok(0);
        }
        match self.kind {
            TargetKind::Device => {
                crate::io::sys::blk_discard(self.file.as_fd(), start, end - start)?
            }
            TargetKind::File => crate::io::sys::punch_hole(self.file.as_fd(), start, end - start)?,
        }
        Ok(end - start)
    }

    /// Asks the kernel to read a device's new partition table (`BLKRRPART`). Nothing to do for
    /// a file. The error (a disk whose partitions are busy, a loop device without partition
    /// scanning) is for the caller to report, not a failure of the flash.
    pub fn reread_partitions(&self) -> io::Result<()> {
        match self.kind {
            TargetKind::Device => crate::io::sys::blk_reread_partitions(self.file.as_fd()),
            TargetKind::File => Ok(()),
        }
    }

    /// A reader of what the medium holds: `O_DIRECT` reads of a device, and for a file its
    /// cached pages dropped first (after a sync) so that the disk is read.
    pub fn reader(&self) -> io::Result<TargetReader<'_>> {
        if self.kind == TargetKind::File {
            self.file.sync_data()?;
            crate::io::sys::drop_cache(self.file.as_fd())?;
        }
        Ok(TargetReader { t: self })
    }

    /// A reader of what the target holds now: `O_DIRECT` reads of a device, a file's reads
    /// through its cache (what it holds, without the cost of a sync).
    pub fn current(&self) -> TargetReader<'_> {
        TargetReader { t: self }
    }

    /// Writes `buf` at `offset` (a multiple of the sector size, and so is the length unless
    /// the write ends at the device's end) through the bounce buffer; partial sectors at
    /// either end are read first and merged.
    fn write_device(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let ss = self.sector;
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "write of {} bytes at {offset} past the device's end ({})",
                        buf.len(),
                        self.size
                    ),
                )
            })?;
        // Whole sectors from a buffer on a page (the pipeline's are): written as they are.
        if offset % ss == 0 && buf.len() as u64 % ss == 0 && buf.as_ptr() as usize % ALIGN == 0 {
            return self.file.write_all_at(buf, offset);
        }
        let Some(bounce) = self.bounce.as_mut() else {
            return Err(io::Error::other("device target without a buffer"));
        };
        let mut at = offset / ss * ss;
        while at < end {
            let chunk_end = (at + BOUNCE as u64)
                .min(end.div_ceil(ss) * ss)
                .min(self.size);
            let n = (chunk_end - at) as usize;
            let b = &mut bounce.bytes()[..n];
            let data_from = at.max(offset);
            let data_to = chunk_end.min(end);
            // Sectors only partly covered by `buf` keep their other bytes.
            if data_from > at || data_to < chunk_end {
                read_full(&self.file, at, b)?;
            }
            b[(data_from - at) as usize..(data_to - at) as usize]
                .copy_from_slice(&buf[(data_from - offset) as usize..(data_to - offset) as usize]);
            self.file.write_all_at(b, at)?;
            at = chunk_end;
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `at` (an `O_DIRECT` descriptor needs aligned `buf`).
fn read_full(file: &File, at: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], at + got as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the target ends at byte {}", at + got as u64),
            ));
        }
        got += n;
    }
    Ok(())
}

impl WriteAt for Target {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match self.kind {
            TargetKind::Device => self.write_device(offset, buf),
            TargetKind::File => self.file.write_all_at(buf, offset),
        }
    }

    /// Only extends a file target; a device's size is fixed.
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if self.kind == TargetKind::File && len > self.size {
            self.file.set_len(len)?;
            self.size = len;
        }
        Ok(())
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        match self.kind {
            TargetKind::File => crate::io::sys::start_writeback(self.file.as_fd()),
            TargetKind::Device => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A target reads as it holds now ([`Target::current`]): what `check_capacity` writes and
/// reads back through.
impl ReadAt for Target {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.current().read_at(offset, buf)
    }
}

/// Reads a [`Target`] from its medium ([`Target::reader`]).
pub struct TargetReader<'a> {
    t: &'a Target,
}

impl ReadAt for TargetReader<'_> {
    fn size(&self) -> u64 {
        self.t.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.t;
        if offset >= t.size || buf.is_empty() {
            return Ok(0);
        }
        match &t.direct {
            Some(d) => d.read_at(offset, buf),
            None => {
                let want = (buf.len() as u64).min(t.size - offset) as usize;
                t.file.read_at(&mut buf[..want], offset)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ReadAtExt;

    #[test]
    fn a_file_target_is_extended_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.img");
        std::fs::write(&p, vec![7u8; 10_000]).unwrap();
        let mut t = Target::open(&p, 4096, None).unwrap();
        assert_eq!(
            (t.size(), t.kind(), t.created()),
            (10_000, TargetKind::File, false)
        );
        t.write_all_at(100, b"abc").unwrap();
        t.sync().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 10_000);
        let r = t.reader().unwrap();
        assert_eq!(r.read_vec(99, 5).unwrap(), b"\x07abc\x07");

        let q = dir.path().join("new.img");
        let t = Target::open(&q, 1 << 20, None).unwrap();
        assert!(t.created());
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 1 << 20);
        assert!(
            std::fs::metadata(&q).unwrap().blocks() < 8,
            "a new file target is a hole"
        );
    }

    #[test]
    fn punching_a_file_target_frees_its_space() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.img");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let mut t = Target::open(&p, 1 << 20, None).unwrap();
        assert_eq!(t.discard(4096, 65536).unwrap(), 65536);
        t.sync().unwrap();
        let r = t.reader().unwrap();
        assert_eq!(r.read_vec(4096, 65536).unwrap(), vec![0u8; 65536]);
        assert_eq!(r.read_vec(4095, 1).unwrap(), [1]);
    }

    #[test]
    fn other_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Target::open(dir.path(), 1, None),
            Err(crate::Error::Refused { .. })
        ));
    }
}
