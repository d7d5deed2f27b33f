//! [`Captured`]: the bytes of a stream that were kept as it went by, read as if they were the
//! whole image.
//!
//! A flash of a stream decodes it once, front to back (`stream_skip.rs`). The partition table
//! and the filesystems' allocation metadata are read by the same code the scan runs, over this
//! view: it holds only the byte ranges somebody asked for before they went by. A read that
//! touches any other byte is *lenient*: it gets zeros there instead of an error, and the view
//! records the bytes it wanted and marks the run tainted. A tainted run's result is thrown
//! away; what it wanted tells what to keep when those bytes come by. A run that touched only
//! kept bytes read exactly what it would have read from the whole image, so its result is the
//! scan's. The view also records which kept bytes a run read, so that those nobody reads any
//! more can be dropped ([`Captured::retain`]).

use std::io;
use std::sync::Mutex;

use crate::extent::ExtentMap;
use crate::io::{Access, Caps, ReadAt, SizeKnown, DEFAULT_CHUNK};

/// Most distinct ranges one run may want (or read from what is kept); past it the run is
/// [`Missed::Overflow`] (a reader gone wild on hostile input, or a structure too scattered to
/// follow).
const MAX_WANTED_RANGES: usize = 1 << 16;

/// Most bytes one run may read that were not kept: more could not be kept anyway (the owner
/// is given up). Past it the run is [`Missed::Overflow`] and every further read fails, so a
/// reader that a hostile size field sends through terabytes of zeros stops at once.
const MAX_MISSED_BYTES: u64 = 256 << 20;

/// What one run read that was not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Nothing: every byte it read was kept, so its result stands.
    Nothing,
    /// These bytes (image offsets) were read as zeros.
    Bytes(ExtentMap),
    /// More than [`MAX_WANTED_RANGES`] distinct ranges, or more than [`MAX_MISSED_BYTES`],
    /// were read as zeros.
    Overflow,
}

/// What one run read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunReport {
    /// What it read that was not kept.
    pub(crate) missed: Missed,
    /// The kept bytes it read; `None` when they were too scattered to record (then it may
    /// have read any of them).
    pub(crate) touched: Option<ExtentMap>,
}

/// Log of the current run.
#[derive(Default)]
struct RunLog {
    /// Bytes read as zeros.
    missed: ExtentMap,
    /// Bytes read as zeros, counted as read (overlaps counted again).
    missed_bytes: u64,
    /// The log of misses overflowed: reads fail from then on.
    overflow: bool,
    /// Kept bytes read.
    touched: ExtentMap,
    /// The log of kept bytes read overflowed.
    touched_overflow: bool,
}

/// The kept bytes of an image of (hinted) size `size`, as a [`ReadAt`].
pub(crate) struct Captured {
    /// The size reads are cut at.
    size: u64,
    /// Kept ranges: sorted by offset, disjoint, none touching the next.
    chunks: Vec<(u64, Vec<u8>)>,
    /// Total bytes in `chunks`.
    bytes: u64,
    /// What the current run read that was not kept.
    log: Mutex<RunLog>,
}

impl Captured {
    /// An empty view of an image of `size` bytes.
    pub(crate) fn new(size: u64) -> Self {
        Captured {
            size,
            chunks: Vec::new(),
            bytes: 0,
            log: Mutex::new(RunLog::default()),
        }
    }

    /// Bytes kept.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keeps `data`, the bytes at `offset`. Callers keep bytes in ascending order (a stream
    /// going by); bytes at or before the end of what is kept already are ignored where they
    /// overlap it.
    pub(crate) fn keep(&mut self, offset: u64, data: &[u8]) {
        let end_kept = self
            .chunks
            .last()
            .map_or(0, |(s, d)| s.saturating_add(d.len() as u64));
        let skip = end_kept.saturating_sub(offset);
        let Some(data) = usize::try_from(skip).ok().and_then(|k| data.get(k..)) else {
            return;
        };
        if data.is_empty() {
            return;
        }
        let offset = offset.max(end_kept);
        self.bytes += data.len() as u64;
        match self.chunks.last_mut() {
            Some((s, d)) if s.saturating_add(d.len() as u64) == offset => d.extend_from_slice(data),
            _ => self.chunks.push((offset, data.to_vec())),
        }
    }

    /// Drops every kept byte outside `keep`.
    pub(crate) fn retain(&mut self, keep: &ExtentMap) {
        let ranges = keep.as_slice();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = 0;
        for (start, data) in std::mem::take(&mut self.chunks) {
            let end = start + data.len() as u64;
            // Ranges wholly before this chunk are behind every later chunk too.
            while ranges.get(i).is_some_and(|r| r.end <= start) {
                i += 1;
            }
            let mine: Vec<(u64, u64)> = ranges[i..]
                .iter()
                .take_while(|r| r.start < end)
                .map(|r| (r.start.max(start), r.end.min(end)))
                .collect();
            if mine == [(start, end)] {
                bytes += end - start;
                out.push((start, data));
                continue;
            }
            for (a, b) in mine {
                bytes += b - a;
                out.push((a, data[(a - start) as usize..(b - start) as usize].to_vec()));
            }
        }
        self.chunks = out;
        self.bytes = bytes;
    }

    /// Starts a run: forgets what earlier runs missed.
    pub(crate) fn begin(&self) {
        *self.lock() = RunLog::default();
    }

    /// Ends a run: what it read, kept or not.
    pub(crate) fn finish(&self) -> RunReport {
        let log = std::mem::take(&mut *self.lock());
        let missed = if log.overflow {
            Missed::Overflow
        } else if log.missed.is_empty() {
            Missed::Nothing
        } else {
            Missed::Bytes(log.missed)
        };
        RunReport {
            missed,
            touched: (!log.touched_overflow).then_some(log.touched),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `[start, end)` was read but not kept.
    fn missed(&self, start: u64, end: u64) {
        let mut log = self.lock();
        if log.overflow {
            return;
        }
        log.missed.insert(start, end);
        log.missed_bytes = log.missed_bytes.saturating_add(end - start);
        if log.missed.len() > MAX_WANTED_RANGES || log.missed_bytes > MAX_MISSED_BYTES {
            log.overflow = true;
            log.missed = ExtentMap::new();
        }
    }

    /// Records that `[start, end)` was read from what is kept.
    fn touched(&self, start: u64, end: u64) {
        let mut log = self.lock();
        if log.touched_overflow {
            return;
        }
        log.touched.insert(start, end);
        if log.touched.len() > MAX_WANTED_RANGES {
            log.touched_overflow = true;
            log.touched = ExtentMap::new();
        }
    }
}

impl ReadAt for Captured {
    fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` from the kept bytes, zeros where nothing was kept (recording those).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        if self.lock().overflow {
            return Err(io::Error::other(
                "this run has read too much that was not kept to go on",
            ));
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let end = offset + n as u64;
        let buf = &mut buf[..n];
        // First chunk that ends past `offset`.
        let first = self
            .chunks
            .partition_point(|(s, d)| s + d.len() as u64 <= offset);
        let mut pos = offset;
        for (s, d) in &self.chunks[first..] {
            if *s >= end {
                break;
            }
            if *s > pos {
                buf[(pos - offset) as usize..(*s - offset) as usize].fill(0);
                self.missed(pos, *s);
                pos = *s;
            }
            let upto = end.min(s + d.len() as u64);
            buf[(pos - offset) as usize..(upto - offset) as usize]
                .copy_from_slice(&d[(pos - s) as usize..(upto - s) as usize]);
            self.touched(pos, upto);
            pos = upto;
        }
        if pos < end {
            buf[(pos - offset) as usize..].fill(0);
            self.missed(pos, end);
        }
        Ok(n)
    }

    /// Random access (it is memory), of a size that is only a hint: a GPT's primary is taken
    /// on its word, as for any stream read in one pass, since its backup comes by last.
    fn caps(&self) -> Caps {
        Caps {
            access: Access::Random,
            chunk: DEFAULT_CHUNK,
            size: SizeKnown::Hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kept_bytes_and_records_the_rest() {
        let mut c = Captured::new(100);
        c.keep(10, &[1; 10]);
        c.keep(15, &[9; 10]); // overlaps: only 20..25 is new
        c.keep(40, &[2; 5]);
        assert_eq!(c.bytes(), 20);
        c.begin();
        let mut b = [7u8; 10];
        c.read_at(12, &mut b).unwrap();
        assert_eq!(b, [1, 1, 1, 1, 1, 1, 1, 1, 9, 9]);
        assert_eq!(
            c.finish(),
            RunReport {
                missed: Missed::Nothing,
                touched: Some(ExtentMap::single(12, 22))
            }
        );
        let mut b = [7u8; 30];
        assert_eq!(c.read_at(20, &mut b).unwrap(), 30);
        assert_eq!(&b[..5], &[9; 5]);
        assert_eq!(&b[5..20], &[0; 15]);
        assert_eq!(&b[20..25], &[2; 5]);
        assert_eq!(&b[25..], &[0; 5]);
        assert_eq!(
            c.finish().missed,
            Missed::Bytes(ExtentMap::from_ranges([(25, 40), (45, 50)]))
        );
        // Reads are cut at the size, and nothing past it is wanted.
        c.begin();
        let mut b = [7u8; 30];
        assert_eq!(c.read_at(90, &mut b).unwrap(), 10);
        assert_eq!(c.read_at(100, &mut b).unwrap(), 0);
        assert_eq!(
            c.finish().missed,
            Missed::Bytes(ExtentMap::single(90, 100)),
            "a new run forgets the old one's misses"
        );
    }

    #[test]
    fn retain_drops_what_is_no_longer_needed() {
        let mut c = Captured::new(100);
        c.keep(0, &(0u8..50).collect::<Vec<_>>());
        c.retain(&ExtentMap::from_ranges([(5, 10), (20, 60)]));
        assert_eq!(c.bytes(), 35);
        c.begin();
        let mut b = [0u8; 3];
        c.read_at(8, &mut b).unwrap();
        assert_eq!(b, [8, 9, 0]);
        assert_eq!(c.finish().missed, Missed::Bytes(ExtentMap::single(10, 11)));
    }

    #[test]
    fn scattered_misses_overflow_instead_of_growing() {
        let c = Captured::new(u64::MAX);
        c.begin();
        let mut b = [0u8; 1];
        for i in 0..=MAX_WANTED_RANGES as u64 {
            c.read_at(i * 2, &mut b).unwrap();
        }
        assert_eq!(c.finish().missed, Missed::Overflow);
    }

    #[test]
    fn a_run_reading_too_much_that_was_not_kept_is_stopped() {
        let c = Captured::new(u64::MAX);
        c.begin();
        let mut b = vec![0u8; 64 << 20];
        for i in 0..=MAX_MISSED_BYTES / (64 << 20) {
            assert!(c.read_at(i * (64 << 20), &mut b).is_ok());
        }
        assert!(
            c.read_at(0, &mut b).is_err(),
            "reads fail once it overflowed"
        );
        assert_eq!(c.finish().missed, Missed::Overflow);
        c.begin();
        assert!(c.read_at(0, &mut b).is_ok(), "a new run starts afresh");
    }
}
