//! A source with some bytes replaced and a new length: how `backup --truncate` presents an
//! image whose partition table was rewritten for its new end, without touching the original.

use std::io;
use std::sync::Arc;

use super::read_at::ReadAt;

/// `inner`, cut (or extended) to `size` bytes, with `patches` laid over it.
pub struct Overlay {
    inner: Arc<dyn ReadAt>,
    size: u64,
    patches: Vec<(u64, Vec<u8>)>,
}

impl Overlay {
    /// Lays `patches` (offset, bytes) over `inner` and reports `size` bytes. Patches must be
    /// sorted, disjoint and inside `size`. Bytes inside `size` but past the end of `inner`
    /// that no patch covers read as zeros.
    pub fn new(
        inner: Arc<dyn ReadAt>,
        size: u64,
        patches: Vec<(u64, Vec<u8>)>,
    ) -> io::Result<Self> {
        let mut end = 0u64;
        for (off, b) in &patches {
            let e = off
                .checked_add(b.len() as u64)
                .filter(|&e| e <= size)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "patch past the end"))?;
            if *off < end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "patches overlap or are not sorted",
                ));
            }
            end = e;
        }
        Ok(Overlay {
            inner,
            size,
            patches,
        })
    }
}

impl ReadAt for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let buf = &mut buf[..n];
        let inner_end = self.inner.size();
        let from_inner = if offset < inner_end {
            ((inner_end - offset) as usize).min(n)
        } else {
            0
        };
        let mut done = 0;
        while done < from_inner {
            let r = self
                .inner
                .read_at(offset + done as u64, &mut buf[done..from_inner])?;
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source shorter than it said",
                ));
            }
            done += r;
        }
        buf[from_inner..].fill(0);
        let end = offset + n as u64;
        let first = self
            .patches
            .partition_point(|(o, b)| o + b.len() as u64 <= offset);
        for (o, b) in &self.patches[first..] {
            if *o >= end {
                break;
            }
            let s = (*o).max(offset);
            let e = (o + b.len() as u64).min(end);
            buf[(s - offset) as usize..(e - offset) as usize]
                .copy_from_slice(&b[(s - o) as usize..(e - o) as usize]);
        }
        Ok(n)
    }

    fn caps(&self) -> super::read_at::Caps {
        super::read_at::Caps {
            size: super::read_at::SizeKnown::Exact,
            ..self.inner.caps()
        }
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        self.inner
            .boundaries(start, end.min(self.size).min(self.inner.size()))
    }

    fn will_read(&self, ranges: &crate::ExtentMap) {
        self.inner
            .will_read(&ranges.within(0, self.size.min(self.inner.size())))
    }

    fn allocated_hint(&self) -> Option<crate::ExtentMap> {
        let mut a = self.inner.allocated_hint()?.clip(self.size);
        for (off, b) in &self.patches {
            a.insert(*off, off + b.len() as u64);
        }
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemSource, ReadAtExt};

    #[test]
    fn patches_cut_and_straddling_reads() {
        let inner: Arc<dyn ReadAt> = Arc::new(MemSource((0..100u8).collect()));
        let o = Overlay::new(
            inner.clone(),
            60,
            vec![(10, vec![0xAA; 5]), (50, vec![0xBB; 10])],
        )
        .unwrap();
        assert_eq!(o.size(), 60);
        let mut b = vec![0u8; 60];
        o.read_exact_at(0, &mut b).unwrap();
        assert_eq!(&b[8..16], &[8, 9, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 15]);
        assert_eq!(
            &b[48..60],
            &[48, 49, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB, 0xBB]
        );
        let mut c = [0u8; 3];
        o.read_exact_at(13, &mut c).unwrap();
        assert_eq!(c, [0xAA, 0xAA, 15]);
        assert_eq!(o.read_at(60, &mut c).unwrap(), 0);
        // Longer than the source: zeros past its end.
        let o = Overlay::new(inner.clone(), 110, vec![(105, vec![1])]).unwrap();
        let mut d = [9u8; 12];
        o.read_exact_at(98, &mut d).unwrap();
        assert_eq!(d, [98, 99, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        // Bad patch lists.
        assert!(Overlay::new(inner.clone(), 60, vec![(55, vec![0; 10])]).is_err());
        assert!(Overlay::new(inner.clone(), 60, vec![(10, vec![0; 5]), (12, vec![0])]).is_err());
        assert!(Overlay::new(inner, 60, vec![(u64::MAX, vec![0; 5])]).is_err());
    }
}
