//! The ordered parallel pipeline every bulk pass over an image runs on: backup, bmap and
//! verify today; flash (several targets) and convert next.
//!
//! ```text
//!   jobs, in image order
//!     │
//!     ▼
//!   decoders ──────► transforms ─────► orderer ──┬──► sink (own thread)
//!   read each job's  hash, compress,   the caller's ├──► sink
//!   bytes            on every core     thread       └──► ...
//! ```
//!
//! - **Decoders** read the bytes each [`Job`] names. A random-access source is read by a pool,
//!   its jobs cut at the source's unit boundaries ([`ReadAt::boundaries`]: seekable zstd frames,
//!   xz blocks) and the pieces of one unit read by one thread, so every unit is decoded once and
//!   different units on different cores. A sequential source (gzip, bzip2, ...) is read by one
//!   thread through [`ReadAt::sequential`], front to back, once.
//! - **Transforms** turn a job's bytes into whatever the sinks want (a compressed frame, a
//!   digest), on every core, in any order: a pool of their own behind a sequential source's
//!   one decoder; for a random-access source, each decoder of the pool transforms the jobs it
//!   read, while their bytes are in its cache.
//! - The **orderer**, on the caller's thread, hands each result to every [`Sink`] in job order,
//!   reports progress and polls for cancellation. Each sink runs on its own thread, so a slow
//!   one (a device being written) only holds the others back through the bounded queues.
//!
//! Memory is bounded: a job is not read until it is within a window of jobs after the last one
//! delivered, and each sink queues at most a few. Jobs are read into [`Buf`]s that go back to
//! the run's pool when the last sink drops them, so memory is reused rather than reallocated.
//! The result is the first failure in job order (a read error, a transform or sink error, a
//! panic in any stage, an interruption); nothing is swallowed, and on failure no sink is
//! finished.
//!
//! A stream whose size is only a hint ([`SizeKnown::Hint`]: gzip, bzip2, lz4 opened
//! [`StreamEnd::Deferred`](crate::format::StreamEnd)) is planned with the size its headers
//! suggest. Reading it shows whether that was right: a read the stream ends before fails with
//! [`Error::Replan`], and with [`Pipeline::to_end`] the decoder reads on past the last job to
//! the stream's real end, before that job reaches the sinks, and fails the same way if it is
//! not where the plan put it, or if its last sector is a container's trailer (a fixed VHD
//! read as a raw disk): then no sink is finished, whatever the sink (an archive, a card).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::io::{Access, ReadAt, SizeKnown};
use crate::Error;
use crate::ExtentMap;

mod buf;
mod decode;
mod job;
mod stage;

pub(crate) use buf::{Buf, Pool};
use job::{Done, End, Work};
pub(crate) use job::{Job, Sink, Stats, Transform};
use stage::{apply, catch, panicked, Next, Shared, Window};

/// A configured pipeline over one source.
pub(crate) struct Pipeline<'a> {
    src: &'a dyn ReadAt,
    threads: usize,
    window: Option<usize>,
    cancel: Option<&'a AtomicBool>,
    to_end: Option<End>,
    read_ahead: Option<u64>,
    sink_queue: usize,
}

/// How often the orderer looks at the cancel flag while it waits.
const POLL: Duration = Duration::from_millis(50);

/// Results a sink may have queued before the orderer waits for it.
const SINK_QUEUE: usize = 2;

impl<'a> Pipeline<'a> {
    /// A pipeline reading `src` with one thread per core.
    pub(crate) fn new(src: &'a dyn ReadAt) -> Self {
        Pipeline {
            src,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            window: None,
            cancel: None,
            to_end: None,
            read_ahead: None,
            sink_queue: SINK_QUEUE,
        }
    }

    /// Results each sink may have queued before the orderer waits for it (default 2). A
    /// deeper queue lets a slow sink fall behind by more, so that the others, and the
    /// decoders behind the orderer, go on meanwhile.
    pub(crate) fn sink_queue(mut self, results: usize) -> Self {
        self.sink_queue = results.max(1);
        self
    }

    /// Lets the decoders read ahead of the sinks while the jobs read but not yet delivered
    /// hold at most `bytes` (besides the usual window of jobs): for a slow sink (a card
    /// being written) fed by a stream whose free stretches take the decoder time to cross.
    pub(crate) fn read_ahead(mut self, bytes: u64) -> Self {
        self.read_ahead = Some(bytes);
        self
    }

    /// Decoder and transform threads (each pool; at least 1).
    pub(crate) fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Jobs that may be read ahead of the last one delivered (default: three per thread and
    /// two more, enough to keep every core busy while the sinks work).
    #[cfg(test)]
    pub(crate) fn window(mut self, jobs: usize) -> Self {
        self.window = Some(jobs.max(1));
        self
    }

    /// Stops with [`Error::Interrupted`] once `flag` is set (from a signal handler).
    pub(crate) fn cancel(mut self, flag: &'a AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// For a source whose size is a hint: the size the jobs were planned for. The decoder
    /// reads on from the last job to the stream's end before that job goes to the sinks, and
    /// the run fails with [`Error::Replan`] unless the stream ends at `planned` and its last
    /// sector is no container's trailer (`format::check_tail`); a run without jobs reads the
    /// stream from its start to check the same. No effect on sources of exact size.
    #[allow(clippy::wrong_self_convention)] // a builder setting ("read to the end"), not a conversion
    pub(crate) fn to_end(mut self, planned: u64) -> Self {
        self.to_end = Some(End::Exact(planned));
        self
    }

    /// Like [`to_end`](Self::to_end), for a pass that needs the stream to hold at least
    /// `size` bytes and nothing past them (verify: a device is larger than the image written
    /// to it): the decoder reads on from the last job to `size` only, and the run fails with
    /// [`Error::Replan`] if the stream ends before.
    pub(crate) fn at_least(mut self, size: u64) -> Self {
        self.to_end = Some(End::AtLeast(size));
        self
    }

    /// Runs `jobs` through `transform` into every sink, calling `progress` on this thread
    /// after each job is handed to the sinks. Sinks are finished only if everything succeeded.
    pub(crate) fn run<M: Sync, T: Send + Sync>(
        &self,
        jobs: &[Job<M>],
        transform: &Transform<'_, M, T>,
        sinks: &mut [&mut dyn Sink<M, T>],
        progress: &mut dyn FnMut(&Job<M>),
    ) -> crate::Result<Stats> {
        self.run_gated(jobs, transform, sinks, progress, &mut |_, _| {
            Ok(Gate::Release)
        })
    }

    /// Like [`run`](Self::run), with a `gate` the orderer consults for each result, in job
    /// order, before any sink sees it (see [`Gate`]); an error ends the run with nothing held
    /// reaching a sink. A flash holds a bmap range's pieces until the range's checksum
    /// matches, and drops a stream's pieces that are free whole (they would fill the sinks'
    /// queues, and hold the decoder back, for nothing). The gate bounds what it holds;
    /// results still held after the last job go to the sinks.
    pub(crate) fn run_gated<M: Sync, T: Send + Sync>(
        &self,
        jobs: &[Job<M>],
        transform: &Transform<'_, M, T>,
        sinks: &mut [&mut dyn Sink<M, T>],
        progress: &mut dyn FnMut(&Job<M>),
        gate: &mut GateFn<'_, M, T>,
    ) -> crate::Result<Stats> {
        // A sequential source has one decoder, which must never wait for a transform: the
        // transforms get a pool of their own. A random-access source is decoded by a pool
        // already, and each decoder transforms what it read, while it is in its cache.
        let sequential = self.src.caps().access == Access::Sequential;
        decode::check_jobs(jobs, sequential, sinks.len())?;
        if !sequential {
            // Everything the run will read, said up front: a remote source fetches it ahead,
            // in parallel, and nothing else.
            self.src.will_read(&ExtentMap::from_ranges(
                jobs.iter()
                    .filter_map(|j| j.read.as_ref().map(|r| (r.start, r.end))),
            ));
        }
        // Nothing to read, yet a hinted stream must still end where the plan says.
        if let (true, Some(end), SizeKnown::Hint) =
            (jobs.is_empty(), self.to_end, self.src.caps().size)
        {
            decode::check_empty(self.src, end)?;
        }
        let threads = self.threads.max(1);
        let window = self.window.unwrap_or(threads * 3 + 2);
        let mut win = Window::new(window);
        if let Some(budget) = self.read_ahead {
            win = win.with_budget(jobs.iter().map(Job::read_len), budget);
        }
        let shared = Shared {
            window: win,
            limit: AtomicUsize::new(usize::MAX),
            bytes_read: AtomicU64::new(0),
            hinted: (self.src.caps().size == SizeKnown::Hint).then_some(self.to_end),
            // As many buffers as can be alive at once: the window, each sink's queue and the
            // one it holds, one per decoder.
            // (and a share of what a read-ahead budget lets be read, counted in MiB).
            pool: buf::Pool::new(
                window
                    + sinks.len() * (self.sink_queue + 1)
                    + threads
                    + 1
                    + self
                        .read_ahead
                        .map_or(0, |b| (b >> 20).min(stage::MAX_AHEAD as u64) as usize),
            ),
        };
        let (work_tx, work_rx) = mpsc::channel::<Work>();
        let (done_tx, done_rx) = mpsc::channel::<Done<T>>();
        let work_rx = Mutex::new(work_rx);
        let shared = &shared;
        let pooled_transforms = sequential;

        std::thread::scope(|s| {
            let next = if pooled_transforms {
                Next::Queue(work_tx)
            } else {
                drop(work_tx);
                Next::Inline {
                    jobs,
                    transform,
                    done: done_tx.clone(),
                }
            };
            let mut stages = decode::spawn(s, self.src, jobs, threads, shared, next, &done_tx);
            if pooled_transforms {
                for _ in 0..threads {
                    let done_tx = done_tx.clone();
                    let work_rx = &work_rx;
                    stages.push(
                        s.spawn(move || transform_loop(jobs, work_rx, &done_tx, transform, shared)),
                    );
                }
            }
            drop(done_tx);
            let mut queues = Vec::with_capacity(sinks.len());
            let mut sink_threads = Vec::with_capacity(sinks.len());
            for sink in sinks.iter_mut() {
                let (tx, rx) = mpsc::sync_channel::<Msg<T>>(self.sink_queue);
                queues.push(tx);
                sink_threads.push(s.spawn(move || sink_loop(&mut **sink, jobs, rx)));
            }

            let ordered = catch("orderer", || {
                Ok(deliver(
                    jobs,
                    &done_rx,
                    &queues,
                    shared,
                    progress,
                    gate,
                    self.cancel,
                ))
            })
            .unwrap_or_else(|e| Err(Stop::Failed(e)));
            // Whatever happened, wake and end every stage before looking at the outcome.
            shared.window.stop();
            drop(done_rx);
            drop(queues);
            let mut stage_panic = None;
            for h in stages {
                if let Err(p) = h.join() {
                    stage_panic.get_or_insert(panicked("pipeline stage", p));
                }
            }
            let mut sink_error = None;
            for h in sink_threads {
                let r = h.join().unwrap_or_else(|p| Err(panicked("sink", p)));
                if let Err(e) = r {
                    sink_error.get_or_insert(e);
                }
            }
            match ordered {
                Ok(()) => match sink_error.or(stage_panic) {
                    Some(e) => Err(e),
                    None => Ok(Stats {
                        bytes_read: shared.bytes_read.load(Ordering::Relaxed),
                    }),
                },
                Err(Stop::Failed(e)) => Err(e),
                Err(Stop::SinkGone) => Err(sink_error
                    .unwrap_or_else(|| internal("a sink stopped without saying why".to_string()))),
                Err(Stop::WorkersGone(next)) => Err(stage_panic.unwrap_or_else(|| {
                    internal(format!("the pipeline's workers stopped before job {next}"))
                })),
            }
        })
    }
}

/// A gate: what the orderer asks of each result, in job order (see [`Pipeline::run_gated`]).
pub(crate) type GateFn<'g, M, T> = dyn FnMut(&Job<M>, &Arc<T>) -> crate::Result<Gate> + 'g;

/// What a gate says of a result (see [`Pipeline::run_gated`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Hold it back (with those held before it).
    Hold,
    /// Hand it, and every result held before it, to the sinks.
    Release,
    /// No sink needs it: hand those held before it to the sinks, and drop it.
    Drop,
    /// Hand this many of the held results, oldest first (it among them), to the sinks; hold
    /// the rest.
    ReleaseOldest(usize),
}

/// What the orderer sends a sink.
enum Msg<T> {
    Put(usize, Arc<T>),
    Finish,
}

/// Why the orderer stopped early.
enum Stop {
    /// A job failed (the first in job order), or the run was interrupted.
    Failed(Error),
    /// A sink hung up: its thread's result says why.
    SinkGone,
    /// Every worker ended with job `.0` still missing: a stage died outside its guard.
    WorkersGone(usize),
}

fn transform_loop<M, T>(
    jobs: &[Job<M>],
    work: &Mutex<Receiver<Work>>,
    done: &mpsc::Sender<Done<T>>,
    transform: &Transform<'_, M, T>,
    shared: &Shared,
) {
    loop {
        let next = {
            let rx = work.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok((i, data)) = next else { return };
        if shared.window.is_stopped() {
            return;
        }
        if !shared.wanted(i) {
            continue;
        }
        if done.send(apply(jobs, transform, shared, i, data)).is_err() {
            return;
        }
    }
}

fn sink_loop<M, T>(
    sink: &mut dyn Sink<M, T>,
    jobs: &[Job<M>],
    rx: Receiver<Msg<T>>,
) -> crate::Result<()> {
    for msg in rx {
        match msg {
            Msg::Put(i, item) => catch("sink", || sink.put(&jobs[i], &item))?,
            Msg::Finish => return catch("sink", || sink.finish()),
        }
    }
    // The orderer hung up without finishing: the run failed elsewhere, and that is its result.
    Ok(())
}

/// Hands result `i` to every sink it is for.
fn send<M, T>(
    jobs: &[Job<M>],
    sinks: &[SyncSender<Msg<T>>],
    i: usize,
    item: Arc<T>,
) -> Result<(), Stop> {
    let to = jobs[i].to;
    for (k, q) in sinks.iter().enumerate() {
        if to.is_none_or(|t| t == k) {
            q.send(Msg::Put(i, item.clone()))
                .map_err(|_| Stop::SinkGone)?;
        }
    }
    Ok(())
}

/// The orderer: results in job order, through the gate, to every sink.
#[allow(clippy::too_many_arguments)] // the run's parts, each used once
fn deliver<M, T>(
    jobs: &[Job<M>],
    done: &Receiver<Done<T>>,
    sinks: &[SyncSender<Msg<T>>],
    shared: &Shared,
    progress: &mut dyn FnMut(&Job<M>),
    gate: &mut GateFn<'_, M, T>,
    cancel: Option<&AtomicBool>,
) -> Result<(), Stop> {
    let mut pending: BTreeMap<usize, crate::Result<T>> = BTreeMap::new();
    let mut held: Vec<(usize, Arc<T>)> = Vec::new();
    let mut next = 0usize;
    while next < jobs.len() {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Stop::Failed(Error::Interrupted));
        }
        match done.recv_timeout(POLL) {
            Ok((i, r)) => {
                pending.insert(i, r);
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(Stop::WorkersGone(next)),
        }
        while let Some(r) = pending.remove(&next) {
            let item = Arc::new(r.map_err(Stop::Failed)?);
            held.push((next, item));
            let verdict = catch("gate", || gate(&jobs[next], &held[held.len() - 1].1))
                .map_err(Stop::Failed)?;
            let release = match verdict {
                Gate::Hold => 0,
                Gate::Release => held.len(),
                Gate::Drop => {
                    held.pop();
                    held.len()
                }
                Gate::ReleaseOldest(n) => n.min(held.len()),
            };
            for (i, item) in held.drain(..release) {
                send(jobs, sinks, i, item)?;
            }
            progress(&jobs[next]);
            next += 1;
            shared.window.advance(next);
        }
    }
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(Stop::Failed(Error::Interrupted));
    }
    for (i, item) in held.drain(..) {
        send(jobs, sinks, i, item)?;
    }
    for q in sinks {
        q.send(Msg::Finish).map_err(|_| Stop::SinkGone)?;
    }
    Ok(())
}

fn internal(what: String) -> Error {
    Error::Io(std::io::Error::other(format!("internal error: {what}")))
}

#[cfg(test)]
mod tests;
