//! Writing a [`FlashPlan`] to its targets on the pipeline, and reading them back.
//!
//! The image is decoded once; every target is a sink on its own thread, so one slow card holds
//! the others back only through the bounded queues. A target whose writes fail is dropped
//! (its error kept for the report) while the others finish; the run fails only when none is
//! left. Each piece's SHA-256 is taken from the decoded bytes as they go by, so the read-back
//! compares what the target holds with what was meant to be written.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::plan::{FlashPlan, Piece, HEAD};
use crate::bmap::{hash_ranges, ChecksumType, Reach};
use crate::io::{ReadAt, WriteAt};
use crate::pipeline::{Buf, Job, Pipeline, Sink};

/// What happened to one target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetOutcome {
    /// Image bytes written to it.
    pub written: u64,
    /// Bytes of zeros written (its head before the image's, and its tail past the image).
    pub zeroed: u64,
    /// Why it was dropped, if it was: the first write or sync that failed, with its offset.
    pub error: Option<String>,
}

/// A finished write of every target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Per target, in the order given.
    pub targets: Vec<TargetOutcome>,
    /// The byte ranges written, in order, and the SHA-256 of each as decoded: what
    /// [`read_back`] checks a target against.
    pub pieces: Vec<((u64, u64), Vec<u8>)>,
}

/// A piece's bytes and their digest, shared by every target.
struct Chunk {
    data: Buf,
    digest: Vec<u8>,
}

/// One target: zeroes its head and tail at the first piece, writes the body where it is read,
/// keeps the image's head and writes it at the end, after a sync.
struct TargetSink<'a> {
    out: &'a mut dyn WriteAt,
    plan: &'a FlashPlan,
    head: Option<Vec<u8>>,
    started: bool,
    outcome: TargetOutcome,
    /// Targets still being written; the run stops when it reaches zero.
    live: &'a AtomicUsize,
}

impl TargetSink<'_> {
    /// Records the target's failure; an error only when it was the last one left.
    fn fail(&mut self, what: &str, at: u64, e: io::Error) -> crate::Result<()> {
        if self.outcome.error.is_none() {
            self.outcome.error = Some(format!("{what} at byte {at}: {e}"));
            if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                return Err(crate::Error::Io(io::Error::new(
                    e.kind(),
                    format!("every target failed; the last: {what} at byte {at}: {e}"),
                )));
            }
        }
        Ok(())
    }

    /// Zeros `range` of the target in pieces of at most the head's size.
    fn zero(&mut self, range: std::ops::Range<u64>) -> io::Result<()> {
        let zeros = vec![0u8; HEAD.min(range.end - range.start) as usize];
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(zeros.len() as u64) as usize;
            self.out.write_all_at(at, &zeros[..n])?;
            self.outcome.zeroed += n as u64;
            at += n as u64;
        }
        Ok(())
    }

    fn start(&mut self) -> io::Result<()> {
        self.zero(0..HEAD.min(self.plan.target_size))?;
        self.zero(self.plan.zero_tail.clone())?;
        self.out.sync()
    }
}

impl Sink<Piece, Chunk> for TargetSink<'_> {
    fn put(&mut self, job: &Job<Piece>, item: &Chunk) -> crate::Result<()> {
        if self.outcome.error.is_some() {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            if let Err(e) = self.start() {
                return self.fail("zeroing the head", 0, e);
            }
        }
        let at = job.read.as_ref().map_or(0, |r| r.start);
        match job.meta {
            Piece::Head => self.head = Some(item.data.to_vec()),
            Piece::Body => {
                if let Err(e) = self.out.write_all_at(at, &item.data) {
                    return self.fail("writing", at, e);
                }
                self.outcome.written += item.data.len() as u64;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        if self.outcome.error.is_some() {
            return Ok(());
        }
        if let Err(e) = self.out.sync() {
            return self.fail("syncing", 0, e);
        }
        if let Some(head) = self.head.take() {
            if let Err(e) = self.out.write_all_at(0, &head) {
                return self.fail("writing the head", 0, e);
            }
            self.outcome.written += head.len() as u64;
            if let Err(e) = self.out.sync() {
                return self.fail("syncing the head", 0, e);
            }
        }
        Ok(())
    }
}

/// Writes `plan` from `src` (the decoded image) to every target, decoding once. `progress`
/// gets the image bytes handed to the targets; `cancel` stops the run with
/// [`crate::Error::Interrupted`] (the targets then hold zeroed heads: no table).
///
/// Fails only when reading the image fails, or when every target has failed; a target that
/// fails while others go on is reported in its [`TargetOutcome`].
pub fn write(
    src: &dyn ReadAt,
    plan: &FlashPlan,
    targets: &mut [&mut dyn WriteAt],
    progress: &mut dyn FnMut(u64),
    cancel: Option<&AtomicBool>,
) -> crate::Result<Written> {
    let reads = plan.reads();
    let jobs: Vec<Job<Piece>> = reads
        .iter()
        .map(|(r, p)| Job {
            read: Some(r.clone()),
            meta: p.clone(),
            to: None,
        })
        .collect();
    let transform = |_: &Job<Piece>, data: Option<Buf>| {
        use sha2::Digest;
        let data = data.unwrap_or_else(|| Buf::from(Vec::new()));
        let digest = sha2::Sha256::digest(&data[..]).to_vec();
        Ok(Chunk { data, digest })
    };
    let live = AtomicUsize::new(targets.len());
    let mut sinks: Vec<TargetSink> = targets
        .iter_mut()
        .map(|out| TargetSink {
            out: &mut **out,
            plan,
            head: None,
            started: false,
            outcome: TargetOutcome::default(),
            live: &live,
        })
        .collect();
    let digests = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    {
        let mut refs: Vec<&mut dyn Sink<Piece, Chunk>> = sinks
            .iter_mut()
            .map(|s| s as &mut dyn Sink<Piece, Chunk>)
            .collect();
        let mut record = Recorder(&digests);
        refs.push(&mut record);
        let mut pipeline = Pipeline::new(src).to_end(plan.image_size);
        if let Some(c) = cancel {
            pipeline = pipeline.cancel(c);
        }
        pipeline.run(&jobs, &transform, &mut refs, &mut |j| {
            progress(j.read_len())
        })?;
    }
    let digests = digests.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(Written {
        targets: sinks.into_iter().map(|s| s.outcome).collect(),
        pieces: reads
            .iter()
            .map(|(r, _)| (r.start, r.end))
            .zip(digests)
            .collect(),
    })
}

/// Keeps every piece's digest, in order.
struct Recorder<'a>(&'a std::sync::Mutex<Vec<Vec<u8>>>);

impl Sink<Piece, Chunk> for Recorder<'_> {
    fn put(&mut self, _job: &Job<Piece>, item: &Chunk) -> crate::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item.digest.clone());
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// Reads every written piece back from `target` (open it so that reads reach the medium, not a
/// cache: `O_DIRECT` for a device) and returns the offset of the first piece whose bytes differ
/// from what was written, or `None` when all match.
pub fn read_back(target: &dyn ReadAt, written: &Written) -> crate::Result<Option<u64>> {
    let ranges: Vec<(u64, u64)> = written.pieces.iter().map(|(r, _)| *r).collect();
    let got = hash_ranges(
        target,
        &ranges,
        ChecksumType::Sha256,
        &|_| {},
        Reach::AtLeast(0),
    )?;
    Ok(written
        .pieces
        .iter()
        .zip(got)
        .find(|((_, want), got)| want != got)
        .map(|(((start, _), _), _)| *start))
}
