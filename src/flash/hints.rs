//! [`ScanHints`]: what a scan of the same image, running on a second decoder beside the flash
//! of a stream, has learned so far.
//!
//! A stream without a bmap (a single-block `.xz`, a `.gz`) cannot be mapped before it is
//! written without decoding it twice: an ext root is mapped only once its last inode table
//! has gone by, gigabytes in, and a scan first holds the cards idle all that time. Instead the
//! flash decodes the stream once for the cards while a scan decodes it again on another core,
//! and the readers of that scan say what they find free as they go ([`ReadAt::note_free`]: a
//! group's block bitmap, a FAT's free clusters). With `flex_bg` a group's bitmap comes before
//! its data, so the scan knows a block's bitmap before the flash's decoder reaches the block.
//!
//! Until the scan ends, a piece is skipped where a bitmap called it free: *provisionally*, as
//! the bitmap is not the whole story (the cross-check of the skip rule in spec/safety.md
//! keeps blocks an inode references though its bitmap calls them free). Once the scan ends,
//! its map, the map a scan first would have made, decides every piece that follows, and
//! whatever was skipped provisionally but that map keeps is written in a second pass over the
//! stream before any head is written. When the scan fails, everything skipped is written in
//! that pass. Every byte the full map keeps is written either way; the hints only decide how
//! much is written twice over the stream, which on a healthy image is nothing.
//!
//! The flash's decoder never passes the scan's: a piece waits until the scan's decoder has gone
//! past its end (or the scan has ended), so what the scan's readers learned from the metadata
//! before it is known when it is decided.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::extent::ExtentMap;
use crate::io::{Access, Caps, ReadAt};

/// How often a wait looks at the cancel flag.
const POLL: Duration = Duration::from_millis(50);

/// The scan's decoder is told to step forward in reads this far apart, so that how far it has
/// got is known while it decodes towards a read far ahead.
const STEP: u64 = 4 << 20;

/// Hints are kept block by block (free hints shrunk inward to whole blocks of this size).
const BLOCK: u64 = 4096;

/// Most free ranges kept; hints past it are dropped (they are hints: the bytes are written).
const MAX_RANGES: usize = 1 << 20;

/// What a scan beside a stream's flash has learned so far (see the module documentation).
#[derive(Default)]
pub struct ScanHints {
    state: Mutex<State>,
    changed: Condvar,
    /// Set when the flash no longer needs the scan: its next read fails.
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    /// How far the scan's decoder has got.
    reached: u64,
    /// Free by the hints folded so far ...
    free: ExtentMap,
    /// ... and hints not yet folded in.
    pending: Vec<(u64, u64)>,
    /// Ranges kept (`free` + `pending`), to bound them.
    ranges: usize,
    /// The scan's map, or why there is none, once it has ended.
    done: Option<Result<Arc<ExtentMap>, String>>,
}

/// What is known of a piece of the image when it is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// The scan has ended: the image's map.
    Map(Arc<ExtentMap>),
    /// The scan failed (why): nothing is known free.
    Failed(String),
    /// Still scanning: these bytes of the piece were called free (provisionally).
    Free(ExtentMap),
}

impl ScanHints {
    /// Nothing known yet.
    pub fn new() -> Arc<ScanHints> {
        Arc::new(ScanHints::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `src` (a second decoder of the image being flashed) as the scan is to read it: its
    /// progress and its readers' [`ReadAt::note_free`] come here.
    pub fn watch(self: &Arc<Self>, src: Arc<dyn ReadAt>) -> Arc<dyn ReadAt> {
        Arc::new(Watched {
            inner: src,
            hints: self.clone(),
        })
    }

    /// The scan has ended: with the image's map, as `map::image_map` makes it (in image
    /// bytes, aligned out to whole 4 KiB blocks by the caller or not: it is aligned here), or
    /// why there is none. The first call counts.
    pub fn finish(&self, map: Result<ExtentMap, String>) {
        let mut st = self.lock();
        if st.done.is_none() {
            st.done = Some(map.map(|m| Arc::new(m.align_out(BLOCK))));
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The flash no longer needs the scan (it ended, or failed): the scan's next read fails.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn moved(&self, to: u64) {
        let mut st = self.lock();
        if to > st.reached {
            st.reached = to;
            drop(st);
            self.changed.notify_all();
        }
    }

    fn add_free(&self, offset: u64, len: u64) {
        let start = offset.div_ceil(BLOCK).saturating_mul(BLOCK);
        let end = offset.saturating_add(len) / BLOCK * BLOCK;
        if end <= start {
            return;
        }
        let mut st = self.lock();
        if st.ranges < MAX_RANGES {
            st.pending.push((start, end));
            st.ranges += 1;
        }
    }

    /// Waits until the scan's decoder has got to `end` or the scan has ended, and says what
    /// is known of `start..end` then; `None` once `cancel` is set.
    pub(crate) fn wait_for(
        &self,
        start: u64,
        end: u64,
        cancel: Option<&AtomicBool>,
    ) -> Option<Known> {
        self.wait_until(cancel, |st| match &st.done {
            Some(Ok(m)) => Some(Known::Map(m.clone())),
            Some(Err(why)) => Some(Known::Failed(why.clone())),
            None if st.reached >= end => {
                fold(st);
                Some(Known::Free(st.free.within(start, end)))
            }
            None => None,
        })
    }

    /// Waits for the scan to end: its map, or why there is none; `None` once `cancel` is set.
    pub(crate) fn wait_done(
        &self,
        cancel: Option<&AtomicBool>,
    ) -> Option<Result<Arc<ExtentMap>, String>> {
        self.wait_until(cancel, |st| st.done.clone())
    }

    /// Waits until `ready` has an answer, looking again whenever the scan moves on; `None`
    /// once `cancel` is set.
    fn wait_until<R>(
        &self,
        cancel: Option<&AtomicBool>,
        mut ready: impl FnMut(&mut State) -> Option<R>,
    ) -> Option<R> {
        let mut st = self.lock();
        loop {
            if let Some(r) = ready(&mut st) {
                return Some(r);
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return None;
            }
            st = self
                .changed
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Folds the pending hints into the free map (sorted once, merged in one pass).
fn fold(st: &mut State) {
    if st.pending.is_empty() {
        return;
    }
    let new = ExtentMap::from_ranges(std::mem::take(&mut st.pending));
    st.free = st.free.union(&new);
    st.ranges = st.free.len();
}

impl std::fmt::Debug for ScanHints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        let done = match &st.done {
            None => "scanning".to_string(),
            Some(Ok(m)) => format!("{} bytes mapped", m.total()),
            Some(Err(why)) => format!("failed: {why}"),
        };
        f.debug_struct("ScanHints")
            .field("reached", &st.reached)
            .field("done", &done)
            .finish()
    }
}

/// The scan's source: reports how far it has read, and what its readers call free.
struct Watched {
    inner: Arc<dyn ReadAt>,
    hints: Arc<ScanHints>,
}

impl Watched {
    fn check(&self) -> io::Result<()> {
        if self.hints.stopped() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the flash this scan ran beside has ended",
            ));
        }
        Ok(())
    }
}

impl ReadAt for Watched {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        // A stream decodes everything before `offset` to get there: step through it, so the
        // flash's decoder, waiting on this one, follows close behind rather than waiting
        // for the whole way.
        if self.inner.caps().access == Access::Sequential {
            let mut at = (self.hints.lock().reached / STEP + 1) * STEP;
            let mut one = [0u8; 1];
            while at < offset {
                self.check()?;
                if self.inner.read_at(at - 1, &mut one)? == 0 {
                    break;
                }
                self.hints.moved(at);
                at += STEP;
            }
        }
        let n = self.inner.read_at(offset, buf)?;
        self.hints.moved(offset.saturating_add(n as u64));
        Ok(n)
    }

    fn caps(&self) -> Caps {
        self.inner.caps()
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        self.inner.boundaries(start, end)
    }

    fn allocated_hint(&self) -> Option<ExtentMap> {
        self.inner.allocated_hint()
    }

    fn refine_size_hint(&self, at_least: u64) {
        self.inner.refine_size_hint(at_least)
    }

    fn will_read(&self, ranges: &ExtentMap) {
        self.inner.will_read(ranges)
    }

    fn note_free(&self, offset: u64, len: u64) {
        self.hints.add_free(offset, len);
    }
    // Not `sequential`: what is read in order goes through `read_at`, and is seen.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    #[test]
    fn a_piece_waits_for_the_scan_to_pass_it_and_gets_what_was_called_free() {
        let h = ScanHints::new();
        let src = h.watch(Arc::new(MemSource(vec![0u8; 1 << 20])));
        src.note_free(8192 + 100, 3 * 4096); // shrunk inward to 12288..20480
        let mut b = [0u8; 16];
        src.read_at(65536 - 16, &mut b).unwrap();
        assert_eq!(
            h.wait_for(0, 65536, None),
            Some(Known::Free(ExtentMap::single(12288, 20480)))
        );
        // Not reached yet, and cancelled: no answer.
        let cancel = AtomicBool::new(true);
        assert_eq!(h.wait_for(65536, 131072, Some(&cancel)), None);
        h.finish(Ok(ExtentMap::single(0, 100)));
        assert_eq!(
            h.wait_for(65536, 131072, None),
            Some(Known::Map(Arc::new(ExtentMap::single(0, 4096))))
        );
        h.finish(Err("late".into()));
        assert!(matches!(h.wait_done(None), Some(Ok(_))));
    }

    #[test]
    fn a_waiting_piece_is_answered_when_the_scan_gets_there_on_another_thread() {
        let h = ScanHints::new();
        let src = h.watch(Arc::new(MemSource(vec![0u8; 1 << 20])));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            src.note_free(0, 1 << 20);
            let mut b = [0u8; 1];
            src.read_at((1 << 20) - 1, &mut b).unwrap();
        });
        assert_eq!(
            h.wait_for(4096, 8192, None),
            Some(Known::Free(ExtentMap::single(4096, 8192)))
        );
        t.join().unwrap();
    }

    #[test]
    fn a_stopped_scan_fails_its_next_read() {
        let h = ScanHints::new();
        let src = h.watch(Arc::new(MemSource(vec![0u8; 4096])));
        h.stop();
        let mut b = [0u8; 1];
        assert_eq!(
            src.read_at(0, &mut b).unwrap_err().kind(),
            io::ErrorKind::Interrupted
        );
    }
}
