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
