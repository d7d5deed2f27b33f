//! What the pipeline's stages share while a run is on: the [`Shared`] state (the window that
//! bounds memory, the first failure, the buffer pool), where a decoder hands a job ([`Next`]),
//! and the guard that turns a panic into an error. Apart from the façade (`mod.rs`) and the
//! decoders (`decode.rs`) so that both take it from here and neither imports the other.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::buf::{Buf, Pool};
use super::job::{Done, End, Job, Transform, Work};
use crate::Error;

/// State every stage shares.
pub(super) struct Shared {
    pub(super) window: Window,
    /// Jobs after this one are not needed: an earlier job failed (usize::MAX while none has).
    pub(super) limit: AtomicUsize,
    pub(super) bytes_read: AtomicU64,
    /// For a source whose size is a hint: `Some`, holding where it must end, if set.
    pub(super) hinted: Option<Option<End>>,
    pub(super) pool: Arc<Pool>,
}

impl Shared {
    /// Records that job `i` failed, so later jobs are not started.
    pub(super) fn fail_at(&self, i: usize) {
        self.limit.fetch_min(i, Ordering::SeqCst);
    }

    /// True if job `i` is still wanted.
    pub(super) fn wanted(&self, i: usize) -> bool {
        i <= self.limit.load(Ordering::SeqCst)
    }
}

/// The bound on memory: job `i` may be read once `i < delivered + size`, or, with a
/// read-ahead budget, once the jobs from the next one to deliver up to `i` read at most that
/// many bytes (and number fewer than [`MAX_AHEAD`]).
pub(super) struct Window {
    size: usize,
    /// Bytes read by jobs `0..i`, for each `i` (with a budget), and the budget.
    ahead: Option<(Vec<u64>, u64)>,
    delivered: Mutex<usize>,
    moved: Condvar,
    stopped: AtomicBool,
}

/// Most jobs a read-ahead budget lets be read ahead, however small they are.
pub(super) const MAX_AHEAD: usize = 1 << 14;

impl Window {
    pub(super) fn new(size: usize) -> Self {
        Window {
            size: size.max(1),
            ahead: None,
            delivered: Mutex::new(0),
            moved: Condvar::new(),
            stopped: AtomicBool::new(false),
        }
    }

    /// Also lets jobs be read ahead while those not yet delivered read at most `budget`
    /// bytes: a slow sink then never waits for a decoder that was held back, and a decoder
    /// that must decode a long stretch no job reads (a stream's free space) does it while
    /// the sink still works through what was read ahead.
    pub(super) fn with_budget(mut self, read_lens: impl Iterator<Item = u64>, budget: u64) -> Self {
        let mut sums = vec![0u64];
        let mut t = 0u64;
        for n in read_lens {
            t = t.saturating_add(n);
            sums.push(t);
        }
        self.ahead = Some((sums, budget));
        self
    }

    fn may_read(&self, i: usize, delivered: usize) -> bool {
        if i < delivered.saturating_add(self.size) {
            return true;
        }
        match &self.ahead {
            Some((sums, budget)) if i < delivered.saturating_add(MAX_AHEAD) => {
                let (Some(&to), Some(&from)) = (sums.get(i + 1), sums.get(delivered)) else {
                    return false;
                };
                to - from <= *budget
            }
            _ => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until job `i` may be read; false once the pipeline is stopping.
    pub(super) fn wait(&self, i: usize) -> bool {
        let mut d = self.lock();
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return false;
            }
            if self.may_read(i, *d) {
                return true;
            }
            d = self.moved.wait(d).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn advance(&self, delivered: usize) {
        *self.lock() = delivered;
        self.moved.notify_all();
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Taken so that no waiter is between its check and its wait.
        let _d = self.lock();
        self.moved.notify_all();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Where a decoder hands a job's bytes.
pub(super) enum Next<'a, M, T> {
    /// To the transform pool.
    Queue(mpsc::Sender<Work>),
    /// Through the transform on the decoder's own thread, then to the orderer.
    Inline {
        jobs: &'a [Job<M>],
        transform: &'a Transform<'a, M, T>,
        done: mpsc::Sender<Done<T>>,
    },
}

impl<M, T> Clone for Next<'_, M, T> {
    fn clone(&self) -> Self {
        match self {
            Next::Queue(q) => Next::Queue(q.clone()),
            Next::Inline {
                jobs,
                transform,
                done,
            } => Next::Inline {
                jobs,
                transform: *transform,
                done: done.clone(),
            },
        }
    }
}

impl<M, T> Next<'_, M, T> {
    /// Hands on job `i`'s bytes; false once nobody is listening (the run is over).
    pub(super) fn pass(&self, shared: &Shared, i: usize, data: Option<Buf>) -> bool {
        match self {
            Next::Queue(q) => q.send((i, data)).is_ok(),
            Next::Inline {
                jobs,
                transform,
                done,
            } => done.send(apply(jobs, *transform, shared, i, data)).is_ok(),
        }
    }
}

/// Runs the transform on job `i`, a panic included.
pub(super) fn apply<M, T>(
    jobs: &[Job<M>],
    transform: &Transform<'_, M, T>,
    shared: &Shared,
    i: usize,
    data: Option<Buf>,
) -> Done<T> {
    let r = catch("transform", || transform(&jobs[i], data));
    if r.is_err() {
        shared.fail_at(i);
    }
    (i, r)
}

/// Runs `f`, turning a panic into [`Error::Panicked`] for `stage`.
pub(super) fn catch<R>(
    stage: &'static str,
    f: impl FnOnce() -> crate::Result<R>,
) -> crate::Result<R> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panicked(stage, p)))
}

pub(super) fn panicked(stage: &'static str, payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    Error::Panicked { stage, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_small_jobs_be_read_far_ahead_and_big_ones_not() {
        // Jobs of 1, 1, 1, 1, 1, 10, 1 bytes; a window of 2 jobs and a budget of 6 bytes.
        let w = Window::new(2).with_budget([1, 1, 1, 1, 1, 10, 1].into_iter(), 6);
        // Nothing delivered: jobs 0-4 read 5 bytes, within the budget; job 5 would make 15.
        assert!((0..5).all(|i| w.may_read(i, 0)));
        assert!(!w.may_read(5, 0) && !w.may_read(6, 0));
        // Five delivered: the window alone lets jobs 5 and 6 be read, however large.
        assert!(w.may_read(5, 5) && w.may_read(6, 5));
        // Past the last job nothing is readable beyond the window.
        assert!(!w.may_read(9, 5));
        // Without a budget, the window is the only bound.
        let plain = Window::new(2);
        assert!(plain.may_read(1, 0) && !plain.may_read(2, 0));
    }
}
