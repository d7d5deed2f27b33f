//! The only place blockwise uses `unsafe`: ioctls on block devices and `lseek` for holes.
//!
//! Each function wraps exactly one system call, checks its return value and hands back a plain
//! Rust value, so the rest of the crate stays free of `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// From <linux/fs.h>. `_IOR(0x12, 114, size_t)` and `_IO(0x12, 104)`; the values are fixed by the
// kernel ABI (BLKGETSIZE64 encodes sizeof(size_t) = 8 on every 64-bit Linux target).
#[cfg(target_pointer_width = "64")]
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
#[cfg(target_pointer_width = "32")]
const BLKGETSIZE64: libc::c_ulong = 0x8004_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;
// `_IO(0x12, 95)` and `_IO(0x12, 119)`.
const BLKRRPART: libc::c_ulong = 0x125f;
const BLKDISCARD: libc::c_ulong = 0x1277;

/// Size in bytes of the block device open on `fd` (`BLKGETSIZE64`).
pub(crate) fn blk_size64(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: `fd` is a valid open descriptor for the lifetime of the borrow, and BLKGETSIZE64
    // writes exactly one u64 through the pointer, which points at a live, aligned u64.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Logical sector size in bytes of the block device open on `fd` (`BLKSSZGET`).
pub(crate) fn blk_sector_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: `fd` is valid for the borrow; BLKSSZGET writes one C int through the pointer,
    // which points at a live, aligned c_int.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            BLKSSZGET as _,
            &mut size as *mut libc::c_int,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(size)
        .ok()
        .filter(|&s| s >= 512 && s.is_power_of_two())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("device reports an implausible logical sector size {size}"),
            )
        })
}

/// Next offset at or after `from` that holds data (`SEEK_DATA`), or `None` past the last data.
pub(crate) fn seek_data(fd: BorrowedFd<'_>, from: u64) -> io::Result<Option<u64>> {
    seek_whence(fd, from, libc::SEEK_DATA)
}

/// Next hole at or after `from` (`SEEK_HOLE`); the end of the file counts as a hole.
pub(crate) fn seek_hole(fd: BorrowedFd<'_>, from: u64) -> io::Result<Option<u64>> {
    seek_whence(fd, from, libc::SEEK_HOLE)
}

fn seek_whence(fd: BorrowedFd<'_>, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let Ok(off) = libc::off_t::try_from(from) else {
        return Ok(None);
    };
    // SAFETY: lseek only moves the file offset of a descriptor we borrow; no memory is passed.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data/hole at or after `from`.
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and `_exit` on the second signal so a
    // user can always get out even if the program is stuck in a blocking write.
    if INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Catches SIGINT and SIGTERM from now on: the first sets the returned flag (long operations
/// poll it, stop, and clean up their temporary files), the second exits at once with 130.
pub fn catch_interrupts() -> &'static std::sync::atomic::AtomicBool {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only touches an atomic and calls `_exit`.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    &INTERRUPTED
}

/// Starts writing back the file's dirty pages without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` over the whole file). A long write that ends in `fsync` calls this
/// now and then so the disk works while we compress, instead of all at once at the end.
/// Errors are ignored by callers: the final `fsync` is what guarantees durability.
pub(crate) fn start_writeback(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sync_file_range takes a descriptor we borrow and plain integers.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to read the partition table of the whole disk open on `fd` again
/// (`BLKRRPART`), so the partitions a flash wrote appear as devices. Fails with `EBUSY` while
/// a partition of the disk is in use, and `EINVAL` on a device without partitions (a loop
/// device attached without `-P`): callers report, never fail on it.
pub(crate) fn blk_reread_partitions(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is valid for the borrow; BLKRRPART takes no argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), BLKRRPART as _, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells the block device open on `fd` that `len` bytes at `offset` are unused
/// (`BLKDISCARD`): a card's controller may erase them ahead of time. What they read as
/// afterwards is up to the device. Both must be multiples of the logical sector size.
pub(crate) fn blk_discard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: `fd` is valid for the borrow; BLKDISCARD reads two u64 through the pointer,
    // which points at a live, aligned array of two u64.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), BLKDISCARD as _, range.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Frees the file space of `len` bytes at `offset`, which then reads as zeros, keeping the
/// file's size (`fallocate` with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`).
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range too large to punch",
        ));
    };
    // SAFETY: fallocate takes a descriptor we borrow and plain integers.
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops the file's clean cached pages (`posix_fadvise(POSIX_FADV_DONTNEED)` over the whole
/// file), so that reading it next reads the medium: how a file target's read-back checks the
/// disk rather than the cache it was written through. Dirty pages are not dropped: sync first.
pub(crate) fn drop_cache(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: posix_fadvise takes a descriptor we borrow and plain integers.
    let r = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}
