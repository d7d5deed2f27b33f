//! The pipeline's vocabulary: a [`Job`], what a [`Sink`] and a [`Transform`] are, the
//! [`Stats`] of a run and the bounds on reads. Apart from the pipeline's façade (`mod.rs`) and
//! its stages so that both take these from here and neither imports the other.

use std::ops::Range;

use super::buf::Buf;

/// One unit of work, in image order: the bytes to read (if any) and what the stages need to
/// know about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Job<M> {
    /// Source bytes the job needs, or `None` for a job that carries no data (a run of zeros
    /// an archive records without reading). At most [`MAX_JOB`] bytes. A sequential source is
    /// read once, front to back, so its jobs' reads must be ascending and disjoint; a
    /// random-access source's may come in any order (pieces of a unit best one after another,
    /// so that the unit is decoded once).
    pub read: Option<Range<u64>>,
    /// The caller's description of the job (an archive segment, a piece of a bmap range).
    pub meta: M,
    /// The one sink this job is for (sinks sharing the work as lanes, such as the hashers of
    /// different ranges), or `None` for every sink. A lane's queue then holds only its own
    /// jobs, so a busy lane does not stall the others.
    pub to: Option<usize>,
}

impl<M> Job<M> {
    /// Bytes the job reads.
    pub fn read_len(&self) -> u64 {
        self.read.as_ref().map_or(0, |r| r.end - r.start)
    }
}

/// Largest read of one job: the buffers in flight are bounded by this times the window.
pub(crate) const MAX_JOB: u64 = crate::io::MAX_READ_VEC as u64;

/// A consumer of the transformed jobs, in job order (an archive writer, a hasher, a device).
pub(crate) trait Sink<M, T>: Send {
    /// Takes job `job`'s result. Called once per job, in job order.
    fn put(&mut self, job: &Job<M>, item: &T) -> crate::Result<()>;
    /// Called once after the last job, and only if every job was delivered.
    fn finish(&mut self) -> crate::Result<()>;
}

/// What a transform does with a job: its bytes (`None` for a job without a read) in, the item
/// every sink receives out.
pub(crate) type Transform<'a, M, T> = dyn Fn(&Job<M>, Option<Buf>) -> crate::Result<T> + Sync + 'a;

/// A job's bytes on their way from a decoder to the transforms.
pub(super) type Work = (usize, Option<Buf>);

/// A job's result on its way to the orderer.
pub(super) type Done<T> = (usize, crate::Result<T>);

/// What a finished run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Bytes handed out by the decoders (the jobs' reads; bytes a sequential source decodes
    /// only to skip them are not counted).
    pub bytes_read: u64,
}

/// Where a hinted stream must end: what [`Pipeline::to_end`](super::Pipeline::to_end) and [`Pipeline::at_least`](super::Pipeline::at_least) set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// At exactly this size.
    Exact(u64),
    /// At this size or later.
    AtLeast(u64),
}

/// How many of a hinted stream's last bytes the decoder keeps: a sector, where trailers
/// (a fixed VHD's footer, a DMG's `koly`) sit.
pub(crate) const TAIL: usize = 512;
