//! Running a [`FlashPlan`]: writing its targets on the pipeline, reading them back, and
//! writing their heads last.
//!
//! The image is decoded once; every target is a sink on its own thread, so one slow card holds
//! the others back only through the bounded queues. A target whose writes fail is dropped
//! (its error kept for the report) while the others finish; the run fails only when none is
//! left, or when the image itself fails (a read error, a bmap range whose checksum does not
//! match: that range is never written). Each piece's digest (XXH3-128) is taken from the decoded bytes as
//! they go by, so the read-back compares what the medium holds with what was meant to be
//! written. The order per target (spec/safety.md, *Writing a target*): head zeroed, body
//! written, synced, read back (a bad piece rewritten and read once more), then the tail
//! zeroed, the head and any patch past the image written, synced and read back.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::check::Checks;
use super::hints::Known;
use super::plan::{FlashPlan, Piece, HEAD, PIECE};
use super::stream_skip::StreamSkip;
use super::target::Target;
use crate::bmap::{digest, hash_ranges, DigestKind, Reach};
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt, WriteAt};
use crate::pipeline::{Buf, Gate, Job, Pipeline, Sink};

/// Granularity of `--delta`'s comparison: a block that differs is written whole.
const DELTA_BLOCK: usize = 4096;

/// What a flash needs of a target besides writing: reading what it holds now (`--delta`),
/// reading its medium (the read-back), and discarding ranges (`--discard`).
pub trait FlashTarget: WriteAt {
    /// Size in bytes (a file target: what it is now, at least the image size).
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset` as the target holds them now.
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// A reader of the medium, past any cache (called after a sync).
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>>;
    /// Declares `len` bytes at `offset` unused; returns the bytes discarded (0 when the
    /// target cannot).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        let _ = (offset, len);
        Ok(0)
    }
}

impl FlashTarget for Target {
    fn size(&self) -> u64 {
        Target::size(self)
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        // A device reads its medium (O_DIRECT); a file reads through its cache, which is
        // what it holds.
        self.current().read_exact_at(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        Ok(Box::new(self.reader()?))
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        Target::discard(self, offset, len)
    }
}

/// Memory as a target (tests, examples).
impl FlashTarget for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        Bytes(self).read_exact_at(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        Ok(Box::new(Bytes(self)))
    }
}

/// Borrowed bytes as a source.
struct Bytes<'a>(&'a [u8]);

impl ReadAt for Bytes<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let src = self.0.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

/// A byte range a target holds from the image, and the digest of what was written there
/// (XXH3-128, 16 bytes little-endian: the read-back compares a card with what was written;
/// the image itself is checked against its bmap's SHA-256 before it is written).
pub type WrittenPiece = ((u64, u64), Vec<u8>);

/// How a plan is run.
#[derive(Clone, Debug)]
pub struct FlashOptions {
    /// Read every written range back from the medium and compare (default on).
    pub verify: bool,
    /// Read each mapped range of the target first and write only the blocks that differ.
    pub delta: bool,
    /// Discard the ranges of the target the image does not map (`BLKDISCARD`, holes).
    pub discard: bool,
}

impl Default for FlashOptions {
    fn default() -> Self {
        FlashOptions {
            verify: true,
            delta: false,
            discard: false,
        }
    }
}

/// Where a flash is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Decoding the image and writing every target.
    Write,
    /// Reading a target back.
    Verify,
}

/// A progress report: `done` of `total` bytes of `stage`, for one target (`Some(i)`), or, in
/// the write stage, for the decoder that feeds all of them (`None`; each target also reports
/// what it has written, `Some(i)`, behind it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Which target, when the stage is per target.
    pub target: Option<usize>,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Why a target was dropped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetError {
    /// What was being done: "zeroing the head", "writing", "syncing", "verifying", "writing
    /// the head".
    pub doing: String,
    /// The byte where it failed.
    pub offset: u64,
    /// The error.
    pub message: String,
    /// True when the target read back different bytes than were written (twice).
    pub mismatch: bool,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.doing, self.offset, self.message
        )
    }
}

/// What happened to one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TargetReport {
    /// Image bytes written to it (with `--delta`, only those that differed).
    pub written: u64,
    /// Bytes of zeros written (its head before the image's, and its tail past the image).
    pub zeroed: u64,
    /// Bytes discarded.
    pub discarded: u64,
    /// With `--delta`: bytes read from the target to compare.
    pub delta_read: u64,
    /// With `--delta`: bytes not written because the target held them already.
    pub unchanged: u64,
    /// Bytes read back and found equal to what was written.
    pub verified: u64,
    /// Bytes that read back wrong once and were written again.
    pub rewritten: u64,
    /// Why it was dropped, if it was; then its head is zeroed or partly written: no table.
    pub error: Option<TargetError>,
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Per target, in the order given.
    pub targets: Vec<TargetReport>,
    /// The byte ranges each target holds from the image, in order, and the digest of each:
    /// what [`read_back`] checks a target against.
    pub pieces: Vec<WrittenPiece>,
    /// Bytes of the image found free as it streamed by, and not written.
    pub skipped: u64,
    /// What the streaming map learned (per partition: known where, or given up and why).
    pub notes: Vec<String>,
    /// Bytes read from the image.
    pub bytes_read: u64,
}

/// A piece's bytes and their digest, shared by every target.
struct Chunk {
    data: Buf,
    /// The bytes with the plan's patches applied, when one falls in the piece.
    patched: Option<Vec<u8>>,
    /// Digest of what is written (`patched`, else `data`).
    digest: Vec<u8>,
    /// Parts of the piece found free as the stream went by: not written. Set by the gate
    /// before any sink sees the piece.
    free: OnceLock<ExtentMap>,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        self.patched.as_deref().unwrap_or(&self.data)
    }
}

/// One target: its head zeroed before the run, writes the body where it is read, keeps the
/// image's head for the end (its tail is zeroed just before the head is written).
struct TargetSink<'a> {
    out: &'a mut dyn FlashTarget,
    plan: &'a FlashPlan,
    opts: &'a FlashOptions,
    head: Option<Vec<u8>>,
    /// Whether its head has been zeroed (at the start; with `--delta`, before its first write).
    head_zeroed: bool,
    /// End of the image bytes handled so far (for `--discard` of what lies between).
    cursor: u64,
    report: TargetReport,
    /// Targets still being written; the run stops when it reaches zero.
    live: &'a AtomicUsize,
    /// Its index among the targets, for its own progress reports.
    index: usize,
    progress: &'a (dyn Fn(&Progress) + Sync),
    /// Image bytes it has dealt with (written, kept for the end, or skipped as free) ...
    done: u64,
    /// ... of these (`plan.mapped()`).
    total: u64,
}

impl TargetSink<'_> {
    /// Records the target's failure; an error only when it was the last one left.
    fn fail(&mut self, doing: &str, at: u64, e: io::Error) -> crate::Result<()> {
        if self.report.error.is_none() {
            let err = TargetError {
                doing: doing.to_string(),
                offset: at,
                message: e.to_string(),
                mismatch: false,
            };
            self.report.error = Some(err.clone());
            if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                return Err(crate::Error::Io(io::Error::new(
                    e.kind(),
                    format!("every target failed; the last: {err}"),
                )));
            }
        }
        Ok(())
    }

    /// Zeros `range` of the target (with `--delta`, only where it is not zero already).
    fn zero(&mut self, range: Range<u64>, always: bool) -> io::Result<()> {
        let zeros = vec![0u8; HEAD.min(range.end - range.start) as usize];
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(zeros.len() as u64) as usize;
            if !always && self.opts.delta {
                let mut cur = vec![0u8; n];
                self.out.read_current(at, &mut cur)?;
                self.report.delta_read += n as u64;
                if cur.iter().all(|&b| b == 0) {
                    at += n as u64;
                    continue;
                }
                self.zero_head()?;
            }
            self.out.write_all_at(at, &zeros[..n])?;
            self.report.zeroed += n as u64;
            at += n as u64;
        }
        Ok(())
    }

    /// Zeroes the head before anything else is written. With `--delta` that is put off until
    /// the first byte that differs: a card that already holds the image is not written at
    /// all, and one that is written has no table while it is.
    fn start(&mut self) -> io::Result<()> {
        if self.opts.delta {
            return Ok(());
        }
        self.zero_head()
    }

    /// Zeroes the target's head and syncs, once.
    fn zero_head(&mut self) -> io::Result<()> {
        if self.head_zeroed {
            return Ok(());
        }
        let size = self.out.size();
        self.zero(0..HEAD.min(size), true)?;
        self.out.sync()?;
        self.head_zeroed = true;
        Ok(())
    }

    /// Writes `data` at `at`; with `--delta`, only the blocks the target does not hold yet.
    fn put_bytes(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        if !self.opts.delta {
            self.out.write_all_at(at, data)?;
            self.report.written += data.len() as u64;
            return Ok(());
        }
        let mut cur = vec![0u8; data.len()];
        self.out.read_current(at, &mut cur)?;
        self.report.delta_read += data.len() as u64;
        let mut i = 0;
        while i < data.len() {
            let end = (i + DELTA_BLOCK).min(data.len());
            if data[i..end] == cur[i..end] {
                self.report.unchanged += (end - i) as u64;
                i = end;
                continue;
            }
            // A run of differing blocks, written at once.
            let mut j = end;
            while j < data.len() {
                let e = (j + DELTA_BLOCK).min(data.len());
                if data[j..e] == cur[j..e] {
                    break;
                }
                j = e;
            }
            self.zero_head()?;
            self.out.write_all_at(at + i as u64, &data[i..j])?;
            self.report.written += (j - i) as u64;
            i = j;
        }
        Ok(())
    }

    /// Discards `range` when asked to; failures to discard are not failures of the flash.
    fn discard(&mut self, range: Range<u64>) {
        if self.opts.discard && range.start < range.end {
            if self.zero_head().is_err() {
                return;
            }
            if let Ok(n) = self.out.discard(range.start, range.end - range.start) {
                self.report.discarded += n;
            }
        }
    }
}

impl Sink<Piece, Chunk> for TargetSink<'_> {
    fn put(&mut self, job: &Job<Piece>, item: &Chunk) -> crate::Result<()> {
        if self.report.error.is_some() {
            return Ok(());
        }
        let r = job.read.clone().unwrap_or(0..0);
        let gap_from = self.cursor;
        match job.meta {
            Piece::Head => self.head = Some(item.bytes().to_vec()),
            Piece::Body => {
                self.discard(self.cursor..r.start);
                let free = item.free.get().cloned().unwrap_or_default();
                let keep = ExtentMap::single(r.start, r.end).subtract(&free);
                for e in free.iter() {
                    self.discard(e.start..e.end);
                }
                let bytes = item.bytes();
                for e in keep.iter() {
                    let part = &bytes[(e.start - r.start) as usize..(e.end - r.start) as usize];
                    if let Err(err) = self.put_bytes(e.start, part) {
                        return self.fail("writing", e.start, err);
                    }
                }
                // A second pass goes back over ranges the first skipped: never back over
                // what is written (a discard runs from here to the end).
                self.cursor = self.cursor.max(r.end);
            }
        }
        // A slow card lags behind the decoder and the others: its own count. A streaming
        // plan counts every byte of the image, and its pieces free whole never come here.
        let from = if self.plan.streaming {
            gap_from.min(r.start)
        } else {
            r.start
        };
        self.done += r.end - from;
        (self.progress)(&Progress {
            stage: Stage::Write,
            target: Some(self.index),
            done: self.done,
            total: self.total,
        });
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        if self.report.error.is_some() {
            return Ok(());
        }
        let size = self.out.size();
        let end = self.plan.tail_for(size).start.min(size).max(self.cursor);
        self.discard(self.cursor..end);
        if let Err(e) = self.out.sync() {
            return self.fail("syncing", 0, e);
        }
        Ok(())
    }
}

/// Keeps every written range's digest, in order.
struct Recorder<'a>(&'a Mutex<Vec<WrittenPiece>>);

impl Sink<Piece, Chunk> for Recorder<'_> {
    fn put(&mut self, job: &Job<Piece>, item: &Chunk) -> crate::Result<()> {
        let r = job.read.clone().unwrap_or(0..0);
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match item.free.get().filter(|f| !f.is_empty()) {
            // A streaming plan's pieces are not digested as they are read (most of a stream
            // is free and never written): the written ones are, here.
            None if item.digest.is_empty() => {
                out.push(((r.start, r.end), digest(DigestKind::Xxh3, item.bytes())))
            }
            None => out.push(((r.start, r.end), item.digest.clone())),
            Some(free) => {
                for e in ExtentMap::single(r.start, r.end).subtract(free).iter() {
                    let b = &item.bytes()[(e.start - r.start) as usize..(e.end - r.start) as usize];
                    out.push(((e.start, e.end), digest(DigestKind::Xxh3, b)));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// `data` (the image's bytes at `at`) with the patches that fall in it applied, if any does.
fn patched(patches: &[(u64, Vec<u8>)], at: u64, data: &[u8]) -> Option<Vec<u8>> {
    let end = at + data.len() as u64;
    let mut out: Option<Vec<u8>> = None;
    for (p, bytes) in patches {
        let pend = p.saturating_add(bytes.len() as u64);
        let (from, to) = ((*p).max(at), pend.min(end));
        if from < to {
            let o = out.get_or_insert_with(|| data.to_vec());
            o[(from - at) as usize..(to - at) as usize]
                .copy_from_slice(&bytes[(from - p) as usize..(to - p) as usize]);
        }
    }
    out
}

/// Runs `plan` from `src` (the decoded image) onto every target, decoding once, and returns
/// what happened to each. `progress` is called from several threads; `cancel` stops the run
/// with [`crate::Error::Interrupted`] (the targets then hold zeroed heads: no table).
///
/// Fails when reading the image fails, when a bmap range does not match (nothing of it
/// written), or when every target has failed; a target that fails while others go on is
/// reported in its [`TargetReport`], a target that reads back wrong too (`mismatch`).
pub fn run(
    src: &dyn ReadAt,
    plan: &FlashPlan,
    targets: &mut [&mut dyn FlashTarget],
    opts: &FlashOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: Option<&AtomicBool>,
) -> crate::Result<Report> {
    run_checked(src, plan, targets, opts, progress, cancel, &mut || Ok(()))
}

/// Like [`run`], and calls `before_head` once every target's body is written and read back,
/// before any head is written: an error there (the image's checksum file disagrees, see
/// [`super::SumCheck`]) ends the run with every target's head still zeroed.
pub fn run_checked(
    src: &dyn ReadAt,
    plan: &FlashPlan,
    targets: &mut [&mut dyn FlashTarget],
    opts: &FlashOptions,
    progress: &(dyn Fn(&Progress) + Sync),
    cancel: Option<&AtomicBool>,
    before_head: &mut dyn FnMut() -> crate::Result<()>,
) -> crate::Result<Report> {
    let jobs: Vec<Job<Piece>> = plan
        .reads_in_units(|s, e| src.boundaries(s, e))
        .into_iter()
        .map(|(r, p)| Job {
            read: Some(r),
            meta: p,
            to: None,
        })
        .collect();
    let transform = |job: &Job<Piece>, data: Option<Buf>| {
        let data = data.unwrap_or_else(|| Buf::from(Vec::new()));
        let at = job.read.as_ref().map_or(0, |r| r.start);
        let patched = patched(&plan.patches, at, &data);
        // A streaming plan's piece is digested only once it is known to be written (below).
        let digest = if plan.streaming {
            Vec::new()
        } else {
            digest(DigestKind::Xxh3, patched.as_deref().unwrap_or(&data))
        };
        Ok(Chunk {
            data,
            patched,
            digest,
            free: OnceLock::new(),
        })
    };
    let live = AtomicUsize::new(targets.len());
    let mut sinks: Vec<TargetSink> = targets
        .iter_mut()
        .enumerate()
        .map(|(index, out)| TargetSink {
            out: &mut **out,
            plan,
            opts,
            head: None,
            head_zeroed: false,
            cursor: plan.head,
            report: TargetReport::default(),
            live: &live,
            index,
            progress,
            done: 0,
            total: plan.mapped(),
        })
        .collect();
    // Every target's head (and tail) is zeroed before the image is read at all: from here on,
    // whatever happens, no target holds a table.
    for t in sinks.iter_mut() {
        if let Err(e) = t.start() {
            t.fail("zeroing the head", 0, e)?;
        }
    }
    let pieces = Mutex::new(Vec::with_capacity(jobs.len()));
    let total = plan.mapped();
    let mut done = 0u64;
    // The decoder's progress, of both passes.
    let mut decoded = |j: &Job<Piece>| {
        done += j.read_len();
        progress(&Progress {
            stage: Stage::Write,
            target: None,
            done,
            total,
        });
    };
    // A stream without a bmap: which parts of each piece are free is decided as it goes by,
    // by the scan beside it, or from what went by before it.
    let beside = plan.scan.as_ref().map(|l| l.0.clone());
    let mut skip = (plan.streaming && beside.is_none())
        .then(|| StreamSkip::new(plan.image_size, None).with_rules(plan.rules));
    let mut skipped = 0u64;
    // Skipped on a hint, before the scan's map was known.
    let mut provisional = ExtentMap::new();
    let mut scan_failed: Option<String> = None;
    let last_job = jobs.len().saturating_sub(1);
    let mut job_no = 0usize;
    let stats = std::thread::scope(|scope| {
        // A bmap's range checksums, hashed on lanes of their own (`check.rs`).
        let lanes = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut checks = Checks::start(scope, &plan.checks, lanes, |c: &Chunk| &c.data);
        let mut record = Recorder(&pieces);
        let mut refs = sinks_and(&mut sinks, &mut record);
        pipeline(src, cancel).to_end(plan.image_size).run_gated(
            &jobs,
            &transform,
            &mut refs,
            &mut decoded,
            &mut |j, c: &Arc<Chunk>| {
                let r = j.read.clone().unwrap_or(0..0);
                let last = job_no == last_job;
                job_no += 1;
                if !checks.is_empty() {
                    return checks.gate(r, c, last);
                }
                if let (Some(b), Piece::Body) = (&beside, &j.meta) {
                    let free = match b.wait_for(r.start, r.end, cancel) {
                        None => return Err(crate::Error::Interrupted),
                        Some(Known::Map(m)) => {
                            ExtentMap::single(r.start, r.end).subtract(&m.within(r.start, r.end))
                        }
                        Some(Known::Failed(why)) => {
                            scan_failed.get_or_insert(why);
                            ExtentMap::new()
                        }
                        Some(Known::Free(f)) => {
                            for e in f.iter() {
                                provisional.insert(e.start, e.end);
                            }
                            f
                        }
                    };
                    skipped += free.total();
                    let _ = c.free.set(free);
                }
                if let Some(s) = skip.as_mut() {
                    if j.meta == Piece::Body {
                        let free = s.known_free(r.clone());
                        skipped += free.total();
                        // Set once, here, before any sink sees the piece.
                        let _ = c.free.set(free);
                    }
                    s.feed(r.start, &c.data);
                }
                // A piece free whole goes to no sink: it would wait in their queues behind
                // the pieces being written, and hold the decoder back with it.
                let whole = c.free.get().is_some_and(|f| f.total() == r.end - r.start);
                Ok(if whole && r.end > r.start {
                    Gate::Drop
                } else {
                    Gate::Release
                })
            },
        )
    })?;
    let mut notes = skip.map(|s| s.notes()).unwrap_or_default();
    let mut bytes_read = stats.bytes_read;
    if let Some(b) = &beside {
        // Whatever was skipped on a hint that the scan's map keeps is written now, before
        // anything is read back and before any head.
        let fin = b.wait_done(cancel).ok_or(crate::Error::Interrupted)?;
        let missed = match &fin {
            Ok(m) => provisional.intersect(m),
            Err(why) => {
                scan_failed.get_or_insert(why.clone());
                provisional.clone()
            }
        };
        notes.extend(beside_notes(&provisional, &missed, scan_failed.as_deref()));
        if !missed.is_empty() {
            let jobs: Vec<Job<Piece>> = missed
                .chunks(PIECE)
                .map(|e| Job {
                    read: Some(e.start..e.end),
                    meta: Piece::Body,
                    to: None,
                })
                .collect();
            let mut record = Recorder(&pieces);
            let mut refs = sinks_and(&mut sinks, &mut record);
            let again = pipeline(src, cancel).run(&jobs, &transform, &mut refs, &mut decoded)?;
            bytes_read += again.bytes_read;
            skipped -= missed.total();
        }
    }
    let mut pieces = pieces.into_inner().unwrap_or_else(|p| p.into_inner());
    // A second pass's pieces among the first's: read back in order.
    pieces.sort_by_key(|((s, _), _)| *s);
    let (head, body): (Vec<_>, Vec<_>) = pieces
        .iter()
        .cloned()
        .partition(|((s, _), _)| *s < plan.head);
    // The patches past the image, written with the head.
    let extra: Vec<WrittenPiece> = plan
        .patches
        .iter()
        .filter(|(at, _)| *at >= plan.image_size)
        .map(|(at, b)| ((*at, at + b.len() as u64), digest(DigestKind::Xxh3, b)))
        .collect();
    let verify_total: u64 = [&body, &head, &extra]
        .iter()
        .flat_map(|p| p.iter())
        .map(|((s, e), _)| e - s)
        .sum();
    // Every target's body is read back before any head is written, and `before_head` says
    // whether heads may be written at all (a checksum file that vouches for the image).
    each_live(&mut sinks, |i, t| {
        verify_body(i, t, src, &body, verify_total, progress)
    });
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(crate::Error::Interrupted);
    }
    before_head()?;
    each_live(&mut sinks, |i, t| {
        write_head(i, t, src, &head, &extra, verify_total, progress)
    });
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(crate::Error::Interrupted);
    }
    let mut all = body;
    all.splice(0..0, head);
    all.extend(extra);
    Ok(Report {
        targets: sinks.into_iter().map(|s| s.report).collect(),
        pieces: all,
        skipped,
        notes,
        bytes_read,
    })
}

/// The pipeline a flash runs on: reading ahead as [`read_ahead_budget`] says, stopped by
/// `cancel`. Each target's queue holds as much again for a stream (pieces of at most 4 MiB: a
/// card that is still writing does not hold the decoder back either), and 64 pieces for a
/// random-access source: a bmap range, held until its checksum matches, is handed over whole,
/// and a queue shorter than that made the hashing wait for the card's writes.
fn pipeline<'a>(src: &'a dyn ReadAt, cancel: Option<&'a AtomicBool>) -> Pipeline<'a> {
    let budget = read_ahead_budget(src);
    let queue = if src.caps().access == crate::io::Access::Random {
        64
    } else {
        (budget >> 22).clamp(2, 256) as usize
    };
    let p = Pipeline::new(src).read_ahead(budget).sink_queue(queue);
    match cancel {
        Some(c) => p.cancel(c),
        None => p,
    }
}

/// Every target, then `record`, as the pipeline's sinks.
fn sinks_and<'s, 'a: 's, 'b: 's>(
    sinks: &'s mut [TargetSink<'a>],
    record: &'s mut Recorder<'b>,
) -> Vec<&'s mut dyn Sink<Piece, Chunk>> {
    let mut refs: Vec<&mut dyn Sink<Piece, Chunk>> = sinks
        .iter_mut()
        .map(|s| s as &mut dyn Sink<Piece, Chunk>)
        .collect();
    refs.push(record);
    refs
}

/// What a flash beside a scan says of it: how much was skipped on the hints, and what the
/// scan's map then sent to a second pass.
fn beside_notes(provisional: &ExtentMap, missed: &ExtentMap, failed: Option<&str>) -> Vec<String> {
    let mut out = vec![format!(
        "mapped by a scan of a second decoder beside the flash: {} bytes were skipped as they \
         went by because a bitmap or FAT already called them free",
        provisional.total()
    )];
    if let Some(why) = failed {
        out.push(format!(
            "the scan beside the flash failed ({why}): everything it had not mapped was written"
        ));
    }
    if !missed.is_empty() {
        out.push(format!(
            "{} bytes in {} ranges that a bitmap or FAT called free are in use (the \
             cross-check found files in them, or no map was made): written in a second pass \
             over the stream, from byte {}",
            missed.total(),
            missed.len(),
            missed.as_slice().first().map_or(0, |e| e.start)
        ));
    }
    out
}

/// Runs `f` on every target still live, one thread each.
fn each_live<'a>(sinks: &mut [TargetSink<'a>], f: impl Fn(usize, &mut TargetSink<'a>) + Sync) {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = sinks
            .iter_mut()
            .enumerate()
            .filter(|(_, t)| t.report.error.is_none())
            .map(|(i, t)| s.spawn(move || f(i, t)))
            .collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
}

/// After the pipeline: reads the body back, rewriting a bad piece once.
fn verify_body(
    index: usize,
    t: &mut TargetSink<'_>,
    src: &dyn ReadAt,
    body: &[WrittenPiece],
    total: u64,
    progress: &(dyn Fn(&Progress) + Sync),
) {
    if t.opts.verify {
        let mut verified = 0;
        if let Err(e) = check(index, t, src, body, &mut verified, total, progress) {
            t.report.error = Some(e);
        }
    }
}

/// Zeroes the tail, writes the patches past the image and the head, and reads those back.
fn write_head(
    index: usize,
    t: &mut TargetSink<'_>,
    src: &dyn ReadAt,
    head_pieces: &[WrittenPiece],
    extra: &[WrittenPiece],
    total: u64,
    progress: &(dyn Fn(&Progress) + Sync),
) {
    let plan = t.plan;
    // The tail now, when the image's size is sure (a stream's is known at its end): a stale
    // backup GPT must be gone before the new table appears.
    let size = t.out.size();
    if let Err(e) = t.zero(plan.tail_for(size), false) {
        t.report.error = Some(io_error("zeroing the tail", plan.tail_for(size).start, e));
        return;
    }
    let head = t.head.take().unwrap_or_default();
    if !t.head_zeroed && unchanged(t, &head) {
        // `--delta`, and the card holds the image already, head and patches included.
        t.report.unchanged += head.len() as u64;
    } else if let Err(e) = t.zero_head().and_then(|()| put_head(t, &head)) {
        t.report.error = Some(io_error("writing the head", 0, e));
        return;
    }
    if t.opts.verify {
        let last: Vec<_> = head_pieces.iter().chain(extra).cloned().collect();
        let mut verified = t.report.verified;
        if let Err(e) = check(index, t, src, &last, &mut verified, total, progress) {
            t.report.error = Some(e);
        }
    }
}

/// True when the target holds `head` and every patch past the image already.
fn unchanged(t: &TargetSink<'_>, head: &[u8]) -> bool {
    let holds = |at: u64, want: &[u8]| {
        let mut cur = vec![0u8; want.len()];
        t.out.read_current(at, &mut cur).is_ok() && cur == want
    };
    holds(0, head)
        && t.plan
            .patches
            .iter()
            .filter(|(at, _)| *at >= t.plan.image_size)
            .all(|(at, b)| holds(*at, b))
}

/// Writes the patches past the image, then the head, and syncs.
fn put_head(t: &mut TargetSink<'_>, head: &[u8]) -> io::Result<()> {
    let plan = t.plan;
    for (at, bytes) in plan.patches.iter().filter(|(at, _)| *at >= plan.image_size) {
        t.out.write_all_at(*at, bytes)?;
        t.report.written += bytes.len() as u64;
    }
    t.out.write_all_at(0, head)?;
    t.out.sync()?;
    t.report.written += head.len() as u64;
    Ok(())
}

fn io_error(doing: &str, offset: u64, e: io::Error) -> TargetError {
    TargetError {
        doing: doing.to_string(),
        offset,
        message: e.to_string(),
        mismatch: false,
    }
}

/// Reads `pieces` back from the target's medium; a piece that differs is written again from
/// the image (the plan's patches applied) and read once more.
fn check(
    index: usize,
    t: &mut TargetSink<'_>,
    src: &dyn ReadAt,
    pieces: &[WrittenPiece],
    verified: &mut u64,
    total: u64,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(), TargetError> {
    let bad = compare(t.out, pieces, verified, index, total, progress)?;
    t.report.verified = *verified;
    if bad.is_empty() {
        return Ok(());
    }
    t.zero_head()
        .map_err(|err| io_error("zeroing the head before a rewrite", 0, err))?;
    for &i in &bad {
        let ((s, e), _) = &pieces[i];
        let data = original(src, t.plan, *s, *e).map_err(|err| TargetError {
            doing: "reading the image again to rewrite a bad range".into(),
            offset: *s,
            message: err.to_string(),
            mismatch: false,
        })?;
        t.out
            .write_all_at(*s, &data)
            .map_err(|err| io_error("rewriting a range that read back wrong", *s, err))?;
        t.report.rewritten += e - s;
    }
    t.out
        .sync()
        .map_err(|err| io_error("syncing the rewritten ranges", 0, err))?;
    let again: Vec<_> = bad.iter().map(|&i| pieces[i].clone()).collect();
    let mut ignore = 0;
    let still = compare(t.out, &again, &mut ignore, index, total, &|_| {})?;
    *verified += again.iter().map(|((s, e), _)| e - s).sum::<u64>();
    t.report.verified = *verified;
    match still.first() {
        None => Ok(()),
        Some(&i) => {
            let ((s, e), _) = again[i];
            Err(TargetError {
                doing: "verifying".into(),
                offset: s,
                message: format!(
                    "bytes {s}..{e} read back different from what was written, twice (the \
                     card or its reader is failing)"
                ),
                mismatch: true,
            })
        }
    }
}

/// The bytes a target should hold at `start..end`: the image's, with the plan's patches.
fn original(src: &dyn ReadAt, plan: &FlashPlan, start: u64, end: u64) -> crate::Result<Vec<u8>> {
    let mut data = vec![0u8; (end - start) as usize];
    let in_image = end.min(plan.image_size).saturating_sub(start) as usize;
    src.read_exact_at(start, &mut data[..in_image])
        .map_err(|source| crate::Error::Read {
            offset: start,
            len: in_image as u64,
            source,
        })?;
    Ok(patched(&plan.patches, start, &data).unwrap_or(data))
}

/// Indexes of the pieces whose bytes on the medium differ from their digests.
fn compare(
    out: &dyn FlashTarget,
    pieces: &[WrittenPiece],
    verified: &mut u64,
    index: usize,
    total: u64,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Vec<usize>, TargetError> {
    if pieces.is_empty() {
        return Ok(Vec::new());
    }
    let medium = out
        .medium()
        .map_err(|e| io_error("opening the target to read it back", 0, e))?;
    let ranges: Vec<(u64, u64)> = pieces.iter().map(|(r, _)| *r).collect();
    let base = *verified;
    let done = AtomicUsize::new(0);
    let report = |n: u64| {
        let d = done.fetch_add(n as usize, Ordering::Relaxed) as u64 + n;
        progress(&Progress {
            stage: Stage::Verify,
            target: Some(index),
            done: base + d,
            total,
        });
    };
    let got = hash_ranges(
        &*medium,
        &ranges,
        DigestKind::Xxh3,
        &report,
        Reach::AtLeast(0),
    )
    .map_err(|e| TargetError {
        doing: "reading back".into(),
        offset: match &e {
            crate::Error::Read { offset, .. } => *offset,
            _ => 0,
        },
        message: e.chain(),
        mismatch: false,
    })?;
    let mut bad = Vec::new();
    for (i, (((s, e), want), got)) in pieces.iter().zip(got).enumerate() {
        if *want == got {
            *verified += e - s;
        } else {
            bad.push(i);
        }
    }
    Ok(bad)
}

/// Reads every written piece back from `target` and returns the offset of the first piece
/// whose bytes differ from what was written, or `None` when all match.
pub fn read_back(target: &dyn ReadAt, report: &Report) -> crate::Result<Option<u64>> {
    let ranges: Vec<(u64, u64)> = report.pieces.iter().map(|(r, _)| *r).collect();
    let got = hash_ranges(
        target,
        &ranges,
        DigestKind::Xxh3,
        &|_| {},
        Reach::AtLeast(0),
    )?;
    Ok(report
        .pieces
        .iter()
        .zip(got)
        .find(|((_, want), got)| want != got)
        .map(|(((start, _), _), _)| *start))
}

/// How many bytes of the image the decoder may hold ahead of the targets: enough that a
/// stream's long free stretches (decoded, not written) are crossed while the cards still
/// write what was read before them, so a flash takes the writing time rather than writing
/// plus decoding. 256 MiB is seconds of a fast card; never more than an eighth of the
/// memory available.
///
/// A random-access source is read only where it is mapped, with nothing free to cross: a
/// few pieces ahead keep the cards busy, and every buffer more is memory faulted in and
/// zeroed once for nothing (page faults and zeroing of the pipeline's buffers were about 5%
/// of an unthrottled flash's CPU samples in perf with 256 MiB).
fn read_ahead_budget(src: &dyn ReadAt) -> u64 {
    const MOST: u64 = 256 << 20;
    const RANDOM: u64 = 32 << 20;
    if src.caps().access == crate::io::Access::Random {
        return RANDOM;
    }
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    available.map_or(32 << 20, |kib| kib.saturating_mul(1024 / 8).min(MOST))
}
