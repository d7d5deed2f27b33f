//! What the random-access archive readers share (seekable zstd frames, xz blocks): a small LRU
//! of decoded frames, and serving a read from a table of independently decodable frames.

use std::collections::HashMap;

/// Frame starts strictly inside `start..end`, from `count` frames whose `i`-th starts at
/// `out_off(i)` (sorted ascending): what [`crate::io::ReadAt::boundaries`] returns.
pub(crate) fn starts_within(
    count: usize,
    out_off: impl Fn(usize) -> u64,
    start: u64,
    end: u64,
) -> Vec<u64> {
    // First frame starting after `start`, by binary search over the sorted starts.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if out_off(mid) <= start {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo..count).map(out_off).take_while(|&o| o < end).collect()
}

/// The stored (compressed) byte ranges of the frames that hold any byte of `ranges`, from
/// `count` frames tiling the decoded bytes in order, frame `i` decoded at
/// `out(i)` and stored at `stored(i)`: what a reader of `ranges` will fetch from below, for
/// [`crate::io::ReadAt::will_read`].
pub(crate) fn stored_ranges(
    ranges: &crate::ExtentMap,
    count: usize,
    out: impl Fn(usize) -> (u64, u64),
    stored: impl Fn(usize) -> (u64, u64),
) -> crate::ExtentMap {
    let mut m = crate::ExtentMap::new();
    let mut i = 0usize;
    for r in ranges.iter() {
        // First frame ending after the range's start: searched from where the last range
        // left off, so the walk is linear in frames plus ranges.
        let (mut lo, mut hi) = (i, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if out(mid).1 <= r.start {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        i = lo;
        while i < count && out(i).0 < r.end {
            let (s, e) = stored(i);
            m.insert(s, e);
            if out(i).1 > r.end {
                break;
            }
            i += 1;
        }
    }
    m
}

/// The power-of-two read size for frames of these sizes: the most common (median) one.
pub(crate) fn typical_chunk(mut lens: Vec<u64>) -> u64 {
    if lens.is_empty() {
        return crate::io::DEFAULT_CHUNK;
    }
    let mid = lens.len() / 2;
    let (_, m, _) = lens.select_nth_unstable(mid);
    crate::io::chunk_for(*m)
}
use std::io;
use std::sync::{Arc, Mutex};

struct Entry {
    data: Arc<Vec<u8>>,
    used: u64,
}

/// The most recently used decoded frames, shared between threads. Decoding happens outside
/// the lock, so parallel readers decode different frames at once.
pub(crate) struct FrameCache {
    inner: Mutex<(u64, HashMap<usize, Entry>)>,
    cap: usize,
}

impl FrameCache {
    /// A cache holding at most `cap` frames.
    pub(crate) fn new(cap: usize) -> Self {
        FrameCache {
            inner: Mutex::new((0, HashMap::new())),
            cap: cap.max(1),
        }
    }

    /// Whether frame `i` is cached.
    pub(crate) fn contains(&self, i: usize) -> bool {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.1.contains_key(&i)
    }

    /// Frame `i`, from the cache or from `load`.
    pub(crate) fn get(
        &self,
        i: usize,
        load: impl FnOnce() -> io::Result<Vec<u8>>,
    ) -> io::Result<Arc<Vec<u8>>> {
        {
            let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            c.0 += 1;
            let now = c.0;
            if let Some(e) = c.1.get_mut(&i) {
                e.used = now;
                return Ok(e.data.clone());
            }
        }
        let data = Arc::new(load()?);
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.1.len() >= self.cap {
            if let Some((&old, _)) = c.1.iter().min_by_key(|(_, e)| e.used) {
                c.1.remove(&old);
            }
        }
        let used = c.0;
        c.1.insert(
            i,
            Entry {
                data: data.clone(),
                used,
            },
        );
        Ok(data)
    }
}

/// Serves `read_at(offset, buf)` of a `size`-byte source made of frames that tile it in
/// order: `end_of(i)` is frame i's decoded end offset, `start_of(i)` its start, `frame(i)`
/// its decoded bytes.
pub(crate) fn read_through_frames(
    offset: u64,
    buf: &mut [u8],
    size: u64,
    count: usize,
    start_of: impl Fn(usize) -> u64,
    end_of: impl Fn(usize) -> u64,
    frame: impl Fn(usize) -> io::Result<Arc<Vec<u8>>>,
) -> io::Result<usize> {
    if offset >= size || buf.is_empty() {
        return Ok(0);
    }
    let len = (buf.len() as u64).min(size - offset) as usize;
    let mut done = 0usize;
    let mut lo = 0usize;
    let mut hi = count;
    // First frame ending after `offset` (binary search over the tiling).
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if end_of(mid) <= offset {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut i = lo;
    while done < len && i < count {
        let data = frame(i)?;
        let within = (offset + done as u64 - start_of(i)) as usize;
        let avail = data.get(within..).unwrap_or(&[]);
        let n = avail.len().min(len - done);
        if n == 0 {
            break;
        }
        buf[done..done + n].copy_from_slice(&avail[..n]);
        done += n;
        i += 1;
    }
    Ok(done)
}
