//! Range checksums computed on the [`pipeline`](crate::pipeline): what `bmap` writes and
//! `verify` and `backup` check.
//!
//! A range that fits in one piece is hashed whole by a transform, on whichever core read it. A
//! longer range is cut into pieces (where the source's units begin, so a piece of a seekable
//! archive is one frame) that a sink hashes in order: SHA-256 is serial within a range, but
//! the pieces are decoded ahead, in parallel. A random-access source's ranges are dealt to
//! one lane per thread, each with its own hashing sink, and the lanes' pieces interleaved, so
//! long ranges are hashed side by side too; a sequential source has one lane, in image
//! order.

use sha2::{Digest, Sha256};

use super::model::{ChecksumType, Progress};
use crate::io::{Access, ReadAt, ReadAtExt};
use crate::pipeline::{Buf, Job, Pipeline, Pool, Sink};

/// What ranges are digested with: either kind a bmap uses, or XXH3-128, with which a flash
/// compares what a card reads back with what was written (at memory speed: a card that reads
/// back wrong is failing, not forging; the image itself is checked against its bmap's
/// SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DigestKind {
    Sha1,
    Sha256,
    Xxh3,
}

impl From<ChecksumType> for DigestKind {
    fn from(t: ChecksumType) -> Self {
        match t {
            ChecksumType::Sha1 => DigestKind::Sha1,
            ChecksumType::Sha256 => DigestKind::Sha256,
        }
    }
}

/// A running digest of a [`DigestKind`].
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
    Xxh3(Box<twox_hash::XxHash3_128>),
}

impl Hasher {
    pub(crate) fn new(t: impl Into<DigestKind>) -> Self {
        match t.into() {
            DigestKind::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            DigestKind::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestKind::Xxh3 => Hasher::Xxh3(Box::default()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Xxh3(h) => h.write(data),
        }
    }

    pub(crate) fn finalize_reset(&mut self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize_reset().to_vec(),
            Hasher::Sha256(h) => h.finalize_reset().to_vec(),
            Hasher::Xxh3(h) => {
                let d = h.finish_128().to_le_bytes().to_vec();
                **h = twox_hash::XxHash3_128::new();
                d
            }
        }
    }
}

/// The digest of `data` alone.
pub(crate) fn digest(t: impl Into<DigestKind>, data: &[u8]) -> Vec<u8> {
    let t = t.into();
    if t == DigestKind::Xxh3 {
        return twox_hash::XxHash3_128::oneshot(data).to_le_bytes().to_vec();
    }
    let mut h = Hasher::new(t);
    h.update(data);
    h.finalize_reset()
}

/// Digests of sorted, disjoint byte ranges from bytes fed in image order. A feed may hold part
/// of a range, several ranges, or bytes between them (which are not hashed).
pub(crate) struct RangeHasher<'a> {
    ranges: &'a [(u64, u64)],
    next: usize,
    h: Hasher,
    digests: Vec<Vec<u8>>,
}

impl<'a> RangeHasher<'a> {
    pub(crate) fn new(ranges: &'a [(u64, u64)], t: impl Into<DigestKind>) -> Self {
        RangeHasher {
            ranges,
            next: 0,
            h: Hasher::new(t),
            digests: Vec::with_capacity(ranges.len()),
        }
    }

    /// Hashes the bytes at `offset`.
    pub(crate) fn feed(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        while let Some(&(rs, re)) = self.ranges.get(self.next) {
            if rs >= end && rs < re {
                break;
            }
            let a = rs.max(offset);
            let b = re.min(end);
            if b > a {
                self.h
                    .update(&data[(a - offset) as usize..(b - offset) as usize]);
            }
            if re > end {
                break;
            }
            self.digests.push(self.h.finalize_reset());
            self.next += 1;
        }
    }

    /// Takes the digest of range `i`, hashed in one piece elsewhere; `i` must be the range
    /// the hasher is at.
    pub(crate) fn whole(&mut self, i: usize, digest: Vec<u8>) -> crate::Result<()> {
        if i != self.next {
            return Err(internal(format!(
                "range {i} was hashed whole while range {} was due",
                self.next
            )));
        }
        self.digests.push(digest);
        self.next += 1;
        Ok(())
    }

    /// The digests, one per range; fails unless every range was hashed.
    pub(crate) fn finish(self) -> crate::Result<Vec<Vec<u8>>> {
        if self.next != self.ranges.len() {
            return Err(internal(format!(
                "{} of {} ranges were hashed",
                self.next,
                self.ranges.len()
            )));
        }
        Ok(self.digests)
    }
}

fn internal(what: String) -> crate::Error {
    crate::Error::Io(std::io::Error::other(format!("internal error: {what}")))
}

/// Where a stream of hinted size must end for [`hash_ranges`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reach {
    /// Exactly here.
    Exact(u64),
    /// Here or later.
    AtLeast(u64),
}

/// Which part of which range a job reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// The range's index among its lane's ranges (the job's `to` is the lane).
    local: usize,
    /// The job is the whole range: a transform hashes it.
    whole: bool,
}

/// What a transform hands the hashing sinks.
enum Hashed {
    Digest(Vec<u8>),
    Bytes(Buf),
}

/// One lane's hasher: its ranges' pieces in order, whole digests collected.
struct LaneSink<'a> {
    hasher: Option<RangeHasher<'a>>,
}

impl Sink<Piece, Hashed> for LaneSink<'_> {
    fn put(&mut self, job: &Job<Piece>, item: &Hashed) -> crate::Result<()> {
        let h = self
            .hasher
            .as_mut()
            .ok_or_else(|| internal("hashing sink used after it finished".into()))?;
        match item {
            Hashed::Digest(d) => h.whole(job.meta.local, d.clone()),
            Hashed::Bytes(b) => {
                h.feed(job.read.as_ref().map_or(0, |r| r.start), b);
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// Longest piece of a range read as one job: the source's preferred read, kept between 1 and
/// 8 MiB so buffers stay small (and in the caches) and a range of a few frames is still cut
/// per frame.
fn piece_len(src: &dyn ReadAt) -> u64 {
    src.caps().chunk.clamp(1 << 20, 8 << 20)
}

/// The ranges one lane hashes.
#[derive(Clone, Default)]
struct Lane {
    /// Ascending byte ranges.
    ranges: Vec<(u64, u64)>,
    /// Their indexes in the caller's list.
    index: Vec<usize>,
}

/// The ranges dealt to lanes, and the jobs reading them.
struct Plan {
    lanes: Vec<Lane>,
    jobs: Vec<Job<Piece>>,
}

/// Deals `ranges` to `lanes` lanes, each range to the least loaded so far, and cuts them into
/// jobs: one per range that fits in a piece; longer ranges cut where the source's units
/// begin, then every `piece` bytes. The lanes' jobs are interleaved by bytes, a unit's pieces
/// kept together so that one thread decodes it once.
fn plan(src: &dyn ReadAt, ranges: &[(u64, u64)], piece: u64, lanes: usize) -> Plan {
    let lanes = lanes.max(1);
    let mut dealt = vec![Lane::default(); lanes];
    let mut load = vec![0u64; lanes];
    // Per lane, groups of jobs (the pieces of one unit) in order.
    let mut groups: Vec<std::collections::VecDeque<Vec<Job<Piece>>>> =
        vec![std::collections::VecDeque::new(); lanes];
    for (i, &(s, e)) in ranges.iter().enumerate() {
        let lane = (0..lanes).min_by_key(|&l| load[l]).unwrap_or(0);
        load[lane] += e - s;
        let local = dealt[lane].ranges.len();
        dealt[lane].ranges.push((s, e));
        dealt[lane].index.push(i);
        let job = |read: std::ops::Range<u64>, whole| Job {
            read: Some(read),
            meta: Piece { local, whole },
            to: Some(lane),
        };
        if e - s <= piece {
            groups[lane].push_back(vec![job(s..e, true)]);
            continue;
        }
        let cuts = src.boundaries(s, e).unwrap_or_default();
        let mut from = s;
        for to in cuts.into_iter().chain([e]) {
            let mut group = Vec::new();
            while from < to {
                let end = to.min(from + piece);
                group.push(job(from..end, false));
                from = end;
            }
            groups[lane].push_back(group);
        }
    }
    let mut jobs = Vec::new();
    let mut emitted = vec![0u64; lanes];
    while let Some(lane) = (0..lanes)
        .filter(|&l| !groups[l].is_empty())
        .min_by_key(|&l| emitted[l])
    {
        for j in groups[lane].pop_front().into_iter().flatten() {
            emitted[lane] += j.read_len();
            jobs.push(j);
        }
    }
    Plan { lanes: dealt, jobs }
}

/// The digest with `t` of every byte range of `src` (sorted, disjoint), in order, computed on
/// the pipeline; `progress` gets the bytes hashed as it goes.
///
/// `end` is the image size the ranges were planned for, for a stream of hinted size: with
/// [`Reach::Exact`] (a bmap records the size) the stream is read to its end and checked
/// ([`Pipeline::to_end`], [`crate::format::check_tail`]); with [`Reach::AtLeast`] (verify),
/// read to that size only.
pub(crate) fn hash_ranges(
    src: &dyn ReadAt,
    ranges: &[(u64, u64)],
    t: impl Into<DigestKind>,
    progress: Progress,
    end: Reach,
) -> crate::Result<Vec<Vec<u8>>> {
    let t = t.into();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let caps = src.caps();
    if caps.access == Access::Random && src.boundaries(0, 1).is_none() {
        return hash_whole(src, ranges, t, progress, threads);
    }
    // A stream is read once, in order: its ranges cannot be hashed side by side.
    let lanes = if caps.access == Access::Sequential {
        1
    } else {
        threads
    };
    let plan = plan(src, ranges, piece_len(src), lanes);
    let transform = |job: &Job<Piece>, data: Option<Buf>| {
        let data = data.unwrap_or_else(|| Buf::from(Vec::new()));
        Ok(if job.meta.whole {
            Hashed::Digest(digest(t, &data))
        } else {
            Hashed::Bytes(data)
        })
    };
    let mut sinks: Vec<LaneSink> = plan
        .lanes
        .iter()
        .map(|l| LaneSink {
            hasher: Some(RangeHasher::new(&l.ranges, t)),
        })
        .collect();
    let mut refs: Vec<&mut dyn Sink<Piece, Hashed>> = sinks
        .iter_mut()
        .map(|s| s as &mut dyn Sink<Piece, Hashed>)
        .collect();
    let pipeline = match end {
        Reach::Exact(n) => Pipeline::new(src).to_end(n),
        Reach::AtLeast(n) => Pipeline::new(src).at_least(n),
    }
    .threads(threads);
    pipeline.run(&plan.jobs, &transform, &mut refs, &mut |j| {
        progress(j.read_len())
    })?;
    let mut out = vec![Vec::new(); ranges.len()];
    for (sink, lane) in sinks.iter_mut().zip(&plan.lanes) {
        let digests = sink
            .hasher
            .take()
            .ok_or_else(|| internal("hashing sink lost".into()))?
            .finish()?;
        for (d, &i) in digests.into_iter().zip(&lane.index) {
            out[i] = d;
        }
    }
    Ok(out)
}

/// Collects one digest per job, in order.
struct Digests(Vec<Vec<u8>>);

impl Sink<(u64, u64), Vec<u8>> for Digests {
    fn put(&mut self, _job: &Job<(u64, u64)>, item: &Vec<u8>) -> crate::Result<()> {
        self.0.push(item.clone());
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// Hashes each range whole, by one worker reading it in order, the ranges on every core: for
/// a source without units to decode (a file, a device), where reading costs a copy and
/// nothing else. Cutting ranges there only hands bytes from the core that read them to the
/// one that hashes them: measured a third slower than reading and hashing on one core.
fn hash_whole(
    src: &dyn ReadAt,
    ranges: &[(u64, u64)],
    t: DigestKind,
    progress: Progress,
    threads: usize,
) -> crate::Result<Vec<Vec<u8>>> {
    let piece = piece_len(src);
    let jobs: Vec<Job<(u64, u64)>> = ranges
        .iter()
        .map(|&r| Job {
            read: None,
            meta: r,
            to: None,
        })
        .collect();
    // Buffers recycled across ranges: a flash's read-back hashes thousands of ranges of a
    // few MiB, and a fresh zeroed buffer for each cost more than hashing them.
    let pool = Pool::new(threads + 1);
    let transform = |job: &Job<(u64, u64)>, _: Option<Buf>| {
        let (s, e) = job.meta;
        let mut buf = pool.get(piece.min(e.saturating_sub(s)) as usize);
        let mut h = Hasher::new(t);
        let mut pos = s;
        while pos < e {
            let n = (e - pos).min(piece) as usize;
            src.read_exact_at(pos, &mut buf[..n])
                .map_err(|source| crate::Error::Read {
                    offset: pos,
                    len: n as u64,
                    source,
                })?;
            h.update(&buf[..n]);
            progress(n as u64);
            pos += n as u64;
        }
        Ok(h.finalize_reset())
    };
    let mut sink = Digests(Vec::with_capacity(ranges.len()));
    Pipeline::new(src)
        .threads(threads)
        .run(&jobs, &transform, &mut [&mut sink], &mut |_| {})?;
    Ok(sink.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    fn sha(data: &[u8]) -> Vec<u8> {
        Sha256::digest(data).to_vec()
    }

    #[test]
    fn feeds_of_any_shape_give_the_range_digests() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ranges = [(0u64, 10), (10, 4000), (5000, 5001), (6000, 10_000)];
        let want: Vec<Vec<u8>> = ranges
            .iter()
            .map(|&(s, e)| sha(&data[s as usize..e as usize]))
            .collect();
        for step in [1usize, 7, 999, 4096, 10_000] {
            let mut h = RangeHasher::new(&ranges, ChecksumType::Sha256);
            for (k, c) in data.chunks(step).enumerate() {
                h.feed((k * step) as u64, c);
            }
            assert_eq!(h.finish().unwrap(), want, "feeds of {step}");
        }
        // Gaps between ranges need not be fed at all.
        let mut h = RangeHasher::new(&ranges, ChecksumType::Sha256);
        for &(s, e) in &ranges {
            h.feed(s, &data[s as usize..e as usize]);
        }
        assert_eq!(h.finish().unwrap(), want);
        // Stopping short is an error, not a shorter list.
        let mut h = RangeHasher::new(&ranges, ChecksumType::Sha256);
        h.feed(0, &data[..4000]);
        assert!(h.finish().is_err());
    }

    #[test]
    fn long_ranges_are_cut_short_ones_kept_whole() {
        let src = MemSource(vec![0; 100]);
        let p = plan(&src, &[(0, 10), (20, 45), (50, 50)], 10, 1);
        let reads: Vec<_> = p
            .jobs
            .iter()
            .map(|j| (j.read.clone().unwrap(), j.meta.local, j.meta.whole))
            .collect();
        assert_eq!(
            reads,
            vec![
                (0..10, 0, true),
                (20..30, 1, false),
                (30..40, 1, false),
                (40..45, 1, false),
                (50..50, 2, true)
            ]
        );
    }

    /// A source of 1 KiB units.
    struct Units(MemSource);
    impl ReadAt for Units {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read_at(offset, buf)
        }
        fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
            Some(
                (start / 1024 + 1..)
                    .map(|u| u * 1024)
                    .take_while(|&b| b < end)
                    .collect(),
            )
        }
    }

    #[test]
    fn lanes_share_the_bytes_and_interleave_by_unit() {
        let src = Units(MemSource(vec![0; 1 << 20]));
        // A long range, then short ones, then another long one.
        let ranges = [(0, 8192), (9000, 9100), (9200, 9300), (10_240, 14_336)];
        let p = plan(&src, &ranges, 512, 2);
        assert_eq!(p.lanes[0].index, vec![0]);
        assert_eq!(p.lanes[1].index, vec![1, 2, 3]);
        let lanes: Vec<usize> = p.jobs.iter().map(|j| j.to.unwrap()).collect();
        // Units of 1 KiB in pieces of 512: two pieces a unit, kept together.
        assert_eq!(&lanes[..8], &[0, 0, 1, 1, 1, 1, 0, 0]);
        for w in p.jobs.windows(2) {
            let (a, b) = (w[0].read.clone().unwrap(), w[1].read.clone().unwrap());
            if w[0].to == w[1].to {
                assert!(a.end <= b.start, "a lane reads in order");
            }
        }
        let total: u64 = p.jobs.iter().map(|j| j.read_len()).sum();
        assert_eq!(total, ranges.iter().map(|(s, e)| e - s).sum::<u64>());
    }

    #[test]
    fn pipeline_digests_match_serial_ones_for_both_kinds() {
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 253) as u8).collect();
        let src = MemSource(data.clone());
        let ranges = [
            (0u64, 4096),
            (1 << 20, 13 << 20),
            ((13 << 20) + 1, 20 << 20),
        ];
        for t in [ChecksumType::Sha256, ChecksumType::Sha1] {
            let got = hash_ranges(&src, &ranges, t, &|_| {}, Reach::AtLeast(0)).unwrap();
            let want: Vec<Vec<u8>> = ranges
                .iter()
                .map(|&(s, e)| digest(t, &data[s as usize..e as usize]))
                .collect();
            assert_eq!(got, want);
        }
    }
}
