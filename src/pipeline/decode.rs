//! The decoders: getting each job's bytes out of the source, as the source prefers.
//!
//! A random-access source is read by a pool. Each job's read is cut where one of the source's
//! units begins ([`ReadAt::boundaries`]), and consecutive pieces inside one unit form one task
//! for one thread: the unit is decoded once (the later pieces come from the source's cache of
//! recent units), and the next unit is decoded by another thread at the same time. A job cut
//! into pieces is put back together by whichever thread reads its last piece.
//!
//! A sequential source is read by one thread through [`ReadAt::sequential`], skipping what no
//! job reads by decoding past it: one decoder, front to back, never restarted.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use super::buf::Buf;
use super::job::{Done, End, Job, MAX_JOB, TAIL};
use super::stage::{catch, Next, Shared};
use crate::io::{Access, ReadAt, ReadAtExt};
use crate::Error;

/// A job cut into more pieces than this is read whole instead: a source whose units are tiny
/// would otherwise cost more in bookkeeping than a second decode of an edge unit.
const MAX_PIECES: usize = 64;

/// Two pieces further apart than this are taken to lie in different units without asking the
/// source (asking lists every unit start in between).
const MAX_UNIT_SPAN: u64 = 256 << 20;

/// Scratch buffer for skipping through a sequential source.
const SKIP_BUF: usize = 1 << 20;

/// Refuses job lists the decoders cannot serve with bounded memory (reads over [`MAX_JOB`],
/// and for a sequential source, read once front to back, reads that are not ascending and
/// disjoint) and jobs for a sink that is not there.
pub(super) fn check_jobs<M>(jobs: &[Job<M>], sequential: bool, sinks: usize) -> crate::Result<()> {
    let mut end = 0u64;
    for (i, j) in jobs.iter().enumerate() {
        if j.to.is_some_and(|t| t >= sinks) {
            return Err(invalid(format!(
                "internal error: pipeline job {i} is for sink {:?} of {sinks}",
                j.to
            )));
        }
        let Some(r) = &j.read else { continue };
        if r.end < r.start || r.end - r.start > MAX_JOB || (sequential && r.start < end) {
            return Err(invalid(format!(
                "internal error: pipeline job {i} reads {}..{}: reads must be at most \
                 {MAX_JOB} bytes, and ascending and disjoint from a sequential source",
                r.start, r.end
            )));
        }
        end = r.end;
    }
    Ok(())
}

fn invalid(what: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, what))
}

/// Starts the decoder threads: a pool for a random-access source, one thread for a
/// sequential one. They end when every job is read or the pipeline stops.
pub(super) fn spawn<'scope, 'env, M: Sync, T: Send + 'scope>(
    s: &'scope Scope<'scope, 'env>,
    src: &'env dyn ReadAt,
    jobs: &'env [Job<M>],
    threads: usize,
    shared: &'env Shared,
    next: Next<'env, M, T>,
    done: &Sender<Done<T>>,
) -> Vec<ScopedJoinHandle<'scope, ()>> {
    if src.caps().access == Access::Sequential {
        let done = done.clone();
        return vec![s.spawn(move || in_order(src, jobs, shared, &next, &done))];
    }
    let planner = Arc::new(Mutex::new(Planner::new(src, jobs)));
    let assembly = Arc::new(Assembly::default());
    (0..threads)
        .map(|_| {
            let (planner, assembly) = (planner.clone(), assembly.clone());
            let (next, done) = (next.clone(), done.clone());
            s.spawn(move || pooled(src, &planner, &assembly, shared, &next, &done))
        })
        .collect()
}

/// Reads `r` of `src` in one piece.
fn read_range(src: &dyn ReadAt, r: &Range<u64>, shared: &Shared) -> crate::Result<Buf> {
    let len = r.end - r.start;
    let mut buf = shared.pool.get(len as usize);
    src.read_exact_at(r.start, &mut buf)
        .map_err(|source| Error::Read {
            offset: r.start,
            len,
            source,
        })?;
    Ok(buf)
}

/// One step of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// A job without a read: goes straight to the transforms.
    Pass(usize),
    /// Piece `idx` of `count` of job `job`'s read.
    Piece {
        job: usize,
        idx: usize,
        count: usize,
        range: Range<u64>,
    },
}

impl Step {
    fn job(&self) -> usize {
        match self {
            Step::Pass(j) | Step::Piece { job: j, .. } => *j,
        }
    }
}

/// Cuts the jobs into tasks, in job order, as the pool asks for them.
struct Planner<'a, M> {
    src: &'a dyn ReadAt,
    jobs: &'a [Job<M>],
    next_job: usize,
    queue: VecDeque<Step>,
}

impl<'a, M> Planner<'a, M> {
    fn new(src: &'a dyn ReadAt, jobs: &'a [Job<M>]) -> Self {
        Planner {
            src,
            jobs,
            next_job: 0,
            queue: VecDeque::new(),
        }
    }

    /// The steps of the next job, queued.
    fn refill(&mut self) -> bool {
        let Some(job) = self.jobs.get(self.next_job) else {
            return false;
        };
        let i = self.next_job;
        self.next_job += 1;
        let Some(r) = &job.read else {
            self.queue.push_back(Step::Pass(i));
            return true;
        };
        let mut cuts = self.src.boundaries(r.start, r.end).unwrap_or_default();
        if cuts.len() >= MAX_PIECES {
            cuts.clear();
        }
        let count = cuts.len() + 1;
        let mut from = r.start;
        for (idx, to) in cuts.into_iter().chain([r.end]).enumerate() {
            self.queue.push_back(Step::Piece {
                job: i,
                idx,
                count,
                range: from..to,
            });
            from = to;
        }
        true
    }

    fn pop(&mut self) -> Option<Step> {
        if self.queue.is_empty() && !self.refill() {
            return None;
        }
        self.queue.pop_front()
    }

    fn peek(&mut self) -> Option<&Step> {
        if self.queue.is_empty() && !self.refill() {
            return None;
        }
        self.queue.front()
    }

    /// True if no unit of the source starts in `(a, b]`: a piece starting at `b` is in the
    /// same unit as one starting at `a`. Sources without units have every piece apart.
    fn same_unit(&self, a: u64, b: u64) -> bool {
        b >= a
            && b - a <= MAX_UNIT_SPAN
            && self
                .src
                .boundaries(a, b.saturating_add(1))
                .is_some_and(|c| c.is_empty())
    }

    /// The next task: one step, or consecutive pieces inside one unit of the source.
    fn next_task(&mut self) -> Option<Vec<Step>> {
        let first = self.pop()?;
        let Step::Piece { range, .. } = &first else {
            return Some(vec![first]);
        };
        let unit_from = range.start;
        let mut task = vec![first];
        while let Some(Step::Piece { range, .. }) = self.peek() {
            let at = range.start;
            if !self.same_unit(unit_from, at) {
                break;
            }
            task.extend(self.pop());
        }
        Some(task)
    }
}

/// Jobs read in several pieces, waiting for the rest.
#[derive(Default)]
struct Assembly {
    parts: Mutex<HashMap<usize, Parts>>,
}

struct Parts {
    got: Vec<Option<Buf>>,
    missing: usize,
    /// The failure of the job's first failed piece, by piece order, so the error a job
    /// reports does not depend on which thread was faster.
    error: Option<(usize, Error)>,
}

/// Where a job stands after one of its pieces was read.
enum Piece {
    /// Every piece is in: the job's bytes.
    Whole(Buf),
    /// Every piece is resolved and one failed: the job's error.
    Failed(Error),
    /// Pieces are still out.
    Waiting,
}

impl Assembly {
    /// Adds the outcome of piece `idx` of `count` of job `job`.
    fn add(
        &self,
        shared: &Shared,
        job: usize,
        idx: usize,
        count: usize,
        r: crate::Result<Buf>,
    ) -> Piece {
        if count == 1 {
            return match r {
                Ok(b) => Piece::Whole(b),
                Err(e) => Piece::Failed(e),
            };
        }
        let done = {
            let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            let p = parts.entry(job).or_insert_with(|| Parts {
                got: std::iter::repeat_with(|| None).take(count).collect(),
                missing: count,
                error: None,
            });
            match r {
                Ok(b) => p.got[idx] = Some(b),
                Err(e) => {
                    if p.error.as_ref().is_none_or(|(at, _)| idx < *at) {
                        p.error = Some((idx, e));
                    }
                }
            }
            p.missing -= 1;
            if p.missing > 0 {
                return Piece::Waiting;
            }
            match parts.remove(&job) {
                Some(p) => p,
                None => return Piece::Waiting,
            }
        };
        if let Some((_, e)) = done.error {
            return Piece::Failed(e);
        }
        let mut whole = shared
            .pool
            .get(done.got.iter().flatten().map(|p| p.len()).sum());
        let mut at = 0;
        for piece in done.got.iter().flatten() {
            whole[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        Piece::Whole(whole)
    }
}

/// A decoder of the pool: takes tasks in order until there are none or the run stops.
fn pooled<M, T>(
    src: &dyn ReadAt,
    planner: &Mutex<Planner<'_, M>>,
    assembly: &Assembly,
    shared: &Shared,
    next: &Next<'_, M, T>,
    done: &Sender<Done<T>>,
) {
    loop {
        let task = {
            let mut p = planner.lock().unwrap_or_else(|p| p.into_inner());
            p.next_task()
        };
        let Some(task) = task else { return };
        for step in task {
            let i = step.job();
            // Tasks come in job order: once one job is not wanted, no later one is.
            if !shared.wanted(i) || !shared.window.wait(i) {
                return;
            }
            let Step::Piece {
                idx, count, range, ..
            } = step
            else {
                if !next.pass(shared, i, None) {
                    return;
                }
                continue;
            };
            let r = catch("decoder", || read_range(src, &range, shared));
            match &r {
                Ok(piece) => {
                    shared
                        .bytes_read
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
                // Later jobs are not started; this one fails once all its pieces are in.
                Err(_) => shared.fail_at(i),
            }
            let sent = match assembly.add(shared, i, idx, count, r) {
                Piece::Whole(b) => next.pass(shared, i, Some(b)),
                Piece::Failed(e) => done.send((i, Err(e))).is_ok(),
                Piece::Waiting => true,
            };
            if !sent {
                return;
            }
        }
    }
}

/// The one decoder of a sequential source.
fn in_order<M, T>(
    src: &dyn ReadAt,
    jobs: &[Job<M>],
    shared: &Shared,
    next: &Next<'_, M, T>,
    done: &Sender<Done<T>>,
) {
    let mut reader = InOrder {
        src,
        reader: None,
        pos: 0,
        tail: shared.hinted.map(|_| Vec::with_capacity(2 * TAIL)),
    };
    for (i, job) in jobs.iter().enumerate() {
        if !shared.wanted(i) || !shared.window.wait(i) {
            return;
        }
        let last = i + 1 == jobs.len();
        let data = catch("decoder", || {
            let data = match &job.read {
                None => None,
                Some(r) => {
                    let b = reader.read(r, shared)?;
                    shared
                        .bytes_read
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    Some(b)
                }
            };
            // The last job goes to the sinks only once the stream's end is where the plan put
            // it, so a wrong plan finishes no sink.
            if let (true, Some(Some(end))) = (last, shared.hinted) {
                reader.read_to_end(end)?;
            }
            Ok(data)
        });
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                shared.fail_at(i);
                let _ = done.send((i, Err(e)));
                return;
            }
        };
        if !next.pass(shared, i, data) {
            return;
        }
    }
}

/// For a run without jobs over a source of hinted size: reads the stream to its end, which
/// must be where `end` says (a plan of nothing for a gzip whose header says 0 bytes, the size
/// of a 4 GiB image modulo 2^32, must not pass for the whole image).
pub(super) fn check_empty(src: &dyn ReadAt, end: End) -> crate::Result<()> {
    let mut r = InOrder {
        src,
        reader: None,
        pos: 0,
        tail: Some(Vec::new()),
    };
    r.reader(0).map_err(|source| Error::Read {
        offset: 0,
        len: 0,
        source,
    })?;
    r.read_to_end(end)
}

/// A source's in-order reader, opened at the first read.
struct InOrder<'a> {
    src: &'a dyn ReadAt,
    reader: Option<Box<dyn Read + Send + 'a>>,
    pos: u64,
    /// For a source whose size is a hint: the last bytes read (at most `2 * TAIL`, cut back
    /// to `TAIL` when full), so its end is known without reading back.
    tail: Option<Vec<u8>>,
}

impl<'a> InOrder<'a> {
    /// The reader, opened at `at` if it is not yet.
    fn reader(&mut self, at: u64) -> io::Result<&mut (dyn Read + Send + 'a)> {
        if self.reader.is_none() {
            self.reader = Some(self.src.sequential(at)?);
            self.pos = at;
        }
        self.reader
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("the in-order reader did not open"))
    }

    /// Fills `buf` from the current position; the count is short only where the stream ends.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.pos;
        let rd = self.reader(at)?;
        let mut n = 0;
        while n < buf.len() {
            match rd.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        if let Some(t) = &mut self.tail {
            keep_tail(t, &buf[..n]);
        }
        Ok(n)
    }

    /// The error for a hinted stream that ended at `self.pos`, before the end of `r`, or a plain
    /// short read for a source whose size is exact.
    fn ended(&self, planned: Option<u64>, r: &Range<u64>) -> Error {
        if self.tail.is_some() {
            return replan(planned.unwrap_or(r.end), self.pos);
        }
        Error::Read {
            offset: r.start,
            len: r.end - r.start,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the source ends at {}, before {}", self.pos, r.end),
            ),
        }
    }

    fn read(&mut self, r: &Range<u64>, shared: &Shared) -> crate::Result<Buf> {
        let len = r.end - r.start;
        let at = |offset: u64, len: u64| {
            move |source| Error::Read {
                offset,
                len,
                source,
            }
        };
        self.reader(r.start).map_err(at(r.start, len))?;
        let planned = match shared.hinted.flatten() {
            Some(End::Exact(n)) => Some(n),
            _ => None,
        };
        let mut scratch = Vec::new();
        while self.pos < r.start {
            let gap = r.start - self.pos;
            scratch.resize(SKIP_BUF.min(gap as usize), 0);
            let from = self.pos;
            if self.fill(&mut scratch).map_err(at(from, gap))? < scratch.len() {
                return Err(self.ended(planned, r));
            }
        }
        let mut buf = shared.pool.get(len as usize);
        if self.fill(&mut buf).map_err(at(r.start, len))? < buf.len() {
            return Err(self.ended(planned, r));
        }
        Ok(buf)
    }

    /// Reads from the current position to the stream's end, which must be where `end` says;
    /// for an exact end, its last sector must be no container's trailer.
    fn read_to_end(&mut self, end: End) -> crate::Result<()> {
        let mut scratch = vec![0u8; SKIP_BUF];
        loop {
            let want = match end {
                End::AtLeast(n) if self.pos >= n => break,
                End::AtLeast(n) => scratch.len().min((n - self.pos) as usize),
                End::Exact(_) => scratch.len(),
            };
            let from = self.pos;
            let got = self
                .fill(&mut scratch[..want])
                .map_err(|source| Error::Read {
                    offset: from,
                    len: want as u64,
                    source,
                })?;
            if got < want {
                break;
            }
        }
        match end {
            End::Exact(planned) if self.pos != planned => Err(replan(planned, self.pos)),
            End::AtLeast(n) if self.pos < n => Err(replan(n, self.pos)),
            End::AtLeast(_) => Ok(()),
            // The last sector decides whether the stream was the raw disk it was taken for.
            End::Exact(_) => {
                let t = self.tail.take().unwrap_or_default();
                crate::format::check_tail(Some(&t[t.len().saturating_sub(TAIL)..]))
            }
        }
    }
}

/// Keeps the last bytes of a stream in `t`: appends `b`'s last [`TAIL`], cutting `t` back to
/// [`TAIL`] bytes when it would pass twice that.
pub(super) fn keep_tail(t: &mut Vec<u8>, b: &[u8]) {
    let b = &b[b.len().saturating_sub(TAIL)..];
    if t.len() + b.len() > 2 * TAIL {
        let cut = (t.len() + b.len()).saturating_sub(TAIL).min(t.len());
        t.drain(..cut);
    }
    t.extend_from_slice(b);
}

/// A hinted stream ended at `actual`, not where the plan put its end.
fn replan(planned: u64, actual: u64) -> Error {
    Error::Replan {
        size: Some(actual),
        reason: format!(
            "the decoded image is {} bytes, not the {planned} planned from its headers",
            if actual < planned {
                format!("only {actual}")
            } else {
                actual.to_string()
            }
        ),
    }
}
