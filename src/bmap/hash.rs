//! Range checksums computed on the [`pipeline`](crate::pipeline): what `bmap` writes and
//! `verify` and `backup` check.
//!
//! A range that fits in one piece is hashed whole by a transform, so short ranges hash on every
//! core. A longer range is cut into pieces (at the source's unit boundaries, so each piece is
//! one frame of a seekable archive) that a sink hashes in order: SHA-256 is serial within a
//! range, but the decoding of the pieces runs ahead in parallel.

use sha2::{Digest, Sha256};

use super::{ChecksumType, Progress};
use crate::io::ReadAt;
use crate::pipeline::{Buf, Job, Pipeline, Sink};

/// A running digest of either kind a bmap uses.
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub(crate) fn new(t: ChecksumType) -> Self {
        match t {
            ChecksumType::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            ChecksumType::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub(crate) fn finalize_reset(&mut self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize_reset().to_vec(),
            Hasher::Sha256(h) => h.finalize_reset().to_vec(),
        }
    }
}

/// The digest of `data` alone.
fn digest(t: ChecksumType, data: &[u8]) -> Vec<u8> {
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
    pub(crate) fn new(ranges: &'a [(u64, u64)], t: ChecksumType) -> Self {
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

/// Which part of which range a job reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    range: usize,
    /// The job is the whole range: a transform hashes it.
    whole: bool,
}

/// What a transform hands the hashing sink.
enum Hashed {
    Digest(Vec<u8>),
    Bytes(Buf),
}

/// The in-order side: pieces of long ranges hashed in order, whole digests collected.
struct HashSink<'a>(Option<RangeHasher<'a>>);

impl Sink<Piece, Hashed> for HashSink<'_> {
    fn put(&mut self, job: &Job<Piece>, item: &Hashed) -> crate::Result<()> {
        let h = self
            .0
            .as_mut()
            .ok_or_else(|| internal("hashing sink used after it finished".into()))?;
        match item {
            Hashed::Digest(d) => h.whole(job.meta.range, d.clone()),
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
/// 8 MiB so buffers stay small and a range of a few frames is still cut per frame.
fn piece_len(src: &dyn ReadAt) -> u64 {
    src.caps().chunk.clamp(1 << 20, 8 << 20)
}

/// One job per range that fits in a piece; longer ranges cut where the source's units begin,
/// then every `piece` bytes.
fn plan(src: &dyn ReadAt, ranges: &[(u64, u64)], piece: u64) -> Vec<Job<Piece>> {
    let mut jobs = Vec::with_capacity(ranges.len());
    for (i, &(s, e)) in ranges.iter().enumerate() {
        if e - s <= piece {
            jobs.push(Job {
                read: Some(s..e),
                meta: Piece {
                    range: i,
                    whole: true,
                },
            });
            continue;
        }
        let cuts = src.boundaries(s, e).unwrap_or_default();
        let mut from = s;
        for to in cuts.into_iter().chain([e]) {
            while from < to {
                let end = to.min(from + piece);
                jobs.push(Job {
                    read: Some(from..end),
                    meta: Piece {
                        range: i,
                        whole: false,
                    },
                });
                from = end;
            }
        }
    }
    jobs
}

/// The digest with `t` of every byte range of `src` (sorted, disjoint), in order, computed on
/// the pipeline; `progress` gets the bytes of each piece once it is handed to the hasher.
pub(crate) fn hash_ranges(
    src: &dyn ReadAt,
    ranges: &[(u64, u64)],
    t: ChecksumType,
    progress: Progress,
) -> crate::Result<Vec<Vec<u8>>> {
    let jobs = plan(src, ranges, piece_len(src));
    let transform = |job: &Job<Piece>, data: Option<Buf>| {
        let data = data.unwrap_or_else(|| Buf::from(Vec::new()));
        Ok(if job.meta.whole {
            Hashed::Digest(digest(t, &data))
        } else {
            Hashed::Bytes(data)
        })
    };
    let mut sink = HashSink(Some(RangeHasher::new(ranges, t)));
    Pipeline::new(src).run(&jobs, &transform, &mut [&mut sink], &mut |j| {
        progress(j.read_len())
    })?;
    sink.0
        .take()
        .ok_or_else(|| internal("hashing sink lost".into()))?
        .finish()
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
        let jobs = plan(&src, &[(0, 10), (20, 45), (50, 50)], 10);
        let reads: Vec<_> = jobs
            .iter()
            .map(|j| (j.read.clone().unwrap(), j.meta.range, j.meta.whole))
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
            let got = hash_ranges(&src, &ranges, t, &|_| {}).unwrap();
            let want: Vec<Vec<u8>> = ranges
                .iter()
                .map(|&(s, e)| digest(t, &data[s as usize..e as usize]))
                .collect();
            assert_eq!(got, want);
        }
    }
}
