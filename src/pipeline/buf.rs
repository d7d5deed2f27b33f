//! The buffers jobs are read into, recycled.
//!
//! A run reads gigabytes in buffers of a few MiB that are allocated on one thread and dropped
//! on another (the last sink). Left to the allocator, their memory keeps going back to the
//! system and coming back as fresh pages, each faulted in and zeroed again: measurably slower
//! than the single-reader backup this pipeline replaced. A [`Buf`] returns its memory to the
//! run's pool when dropped, so the next job reads into pages already mapped.
//!
//! The bytes start on a page. The allocator hands out large blocks 16 bytes past a page
//! boundary, and the kernel copies a file's pages into such a buffer three times slower than
//! into an aligned one on AMD Zen (its `rep movsb` leaves the fast path when destination and
//! source are a few bytes apart modulo 4 KiB): `verify` of a cached image spent twice the
//! system time of the reader it replaced until the buffers were aligned. On a page, a buffer
//! is also what a device opened `O_DIRECT` takes as it is: a flash writes it to the card
//! without copying it into a bounce buffer first.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Buffers larger than this are not kept: a pool of a few dozen is then at most a few hundred
/// MiB even for the largest jobs, and jobs are normally a few MiB.
const MAX_KEPT: usize = 16 << 20;

/// Where a buffer's bytes start: a page (see the module notes).
const ALIGN: usize = 4096;

/// A job's bytes. Derefs to the bytes; goes back to its pool when dropped.
pub(crate) struct Buf {
    /// The memory; the bytes are `start..start + len` of it.
    bytes: Vec<u8>,
    start: usize,
    len: usize,
    pool: Option<Arc<Pool>>,
}

impl Buf {
    /// `len` bytes of `bytes`' memory (grown as needed), starting on the next page wherever
    /// the allocator put the block.
    fn within(mut bytes: Vec<u8>, len: usize, pool: Option<Arc<Pool>>) -> Buf {
        bytes.resize(len + ALIGN, 0);
        let start = (ALIGN - bytes.as_ptr() as usize % ALIGN) % ALIGN;
        Buf {
            bytes,
            start,
            len,
            pool,
        }
    }

    /// The bytes as a plain vector, leaving the pool.
    #[cfg(test)]
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.pool = None;
        let mut v = std::mem::take(&mut self.bytes);
        v.truncate(self.start + self.len);
        v.drain(..self.start);
        v
    }
}

impl From<Vec<u8>> for Buf {
    /// A buffer of no pool (dropped as any vector).
    fn from(bytes: Vec<u8>) -> Self {
        Buf {
            len: bytes.len(),
            bytes,
            start: 0,
            pool: None,
        }
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.len)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.put(std::mem::take(&mut self.bytes));
        }
    }
}

/// Spare buffers of one run.
pub(crate) struct Pool {
    spare: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    /// A pool keeping at most `keep` spare buffers (about as many as a run has in flight).
    pub(crate) fn new(keep: usize) -> Arc<Self> {
        Arc::new(Pool {
            spare: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A buffer of `len` bytes. A recycled one still holds an earlier job's bytes: callers
    /// overwrite all of it (a read fills it or fails, and a failed buffer is dropped).
    pub(crate) fn get(self: &Arc<Self>, len: usize) -> Buf {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        Buf::within(spare.unwrap_or_default(), len, Some(self.clone()))
    }

    fn put(&self, bytes: Vec<u8>) {
        if bytes.capacity() > MAX_KEPT {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.keep {
            spare.push(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let pool = Pool::new(2);
        let a = pool.get(1000);
        let at = a.as_ptr();
        drop(a);
        let mut b = pool.get(800);
        assert_eq!(b.as_ptr(), at, "the spare buffer is reused");
        assert_eq!(b.len(), 800);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0, "bytes start on a page");
        b[0] = 7;
        b[799] = 9;
        let v = b.into_vec();
        assert_eq!((v.len(), v[0], v[799]), (800, 7, 9));
        assert!(
            pool.spare.lock().unwrap().is_empty(),
            "into_vec leaves the pool"
        );
        for _ in 0..5 {
            drop(pool.get(10));
        }
        let held: Vec<Buf> = (0..5).map(|_| pool.get(10)).collect();
        drop(held);
        assert_eq!(pool.spare.lock().unwrap().len(), 2, "at most `keep` spares");
        drop(pool.get(MAX_KEPT + 1));
        assert_eq!(
            pool.spare.lock().unwrap().len(),
            1,
            "huge buffers are not kept"
        );
    }
}
