//! [`Checks`]: a bmap's range checksums, checked on every core while an image is flashed.
//!
//! A range's pieces are held back until its decoded bytes match its checksum (spec/safety.md,
//! *Writing a target*). SHA-256 is serial within a range, and hashing every range on the
//! pipeline's orderer made it the bottleneck of a flash that is not waiting for a card (the
//! bench card's archive onto a loop device over tmpfs: 0.85 s, 0.52 s with a bmap without
//! checksums). So ranges are dealt to lanes, a thread each, that hash side by side: range `i`
//! to lane `i % lanes`, its pieces in order. The pieces of a range wait, held, for their
//! lane's verdict while the next ranges' pieces go to the other lanes; the held pieces are
//! handed on, oldest first, as soon as every range they touch has matched.
//!
//! A range longer than [`HOLD`] is not held (the card's head is still zeroed while it is
//! written): its verdict is waited for when its last piece has been handed to its lane, so a
//! mismatch stops the flash there, as before. What is held at once is bounded by [`HOLD`]
//! too: past it, the orderer waits for verdicts.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;

use super::plan::RangeCheck;
use crate::bmap::Hasher;
use crate::checksum::hex;
use crate::pipeline::Gate;

/// Pieces of one checked range held back, at most, before they are written: a range longer
/// than this is written as it comes and its checksum compared at its end (the card's head is
/// still zeroed then, so a mismatch leaves no table). Also the most held at once.
pub(crate) const HOLD: u64 = 256 << 20;

/// What the orderer sends a lane.
enum Msg<T> {
    /// Bytes `from..to` of a piece belong to check `.0`.
    Feed(usize, Arc<T>, usize, usize),
    /// Check `.0` has had all its bytes.
    End(usize),
}

/// The checks of one flash, their lanes, and the pieces the pipeline holds for them.
pub(crate) struct Checks<'a, T> {
    checks: &'a [RangeCheck],
    lanes: Vec<Sender<Msg<T>>>,
    /// Each lane's digests, as (check, lowercase hex).
    verdicts: Receiver<(usize, String)>,
    /// First check whose end has not been handed to its lane.
    next: usize,
    /// Checks `0..verified` have matched.
    verified: usize,
    /// Checks that matched out of order.
    matched: BTreeSet<usize>,
    /// The pieces the pipeline holds, oldest first, and their bytes.
    held: VecDeque<Range<u64>>,
    held_bytes: u64,
}

impl<'a, T: Send + Sync + 'a> Checks<'a, T> {
    /// Starts `lanes` hashing threads in `scope` for `checks` (sorted, disjoint); `bytes`
    /// gives a piece's decoded image bytes. No thread without checks.
    pub(crate) fn start<'scope>(
        scope: &'scope Scope<'scope, 'a>,
        checks: &'a [RangeCheck],
        lanes: usize,
        bytes: fn(&T) -> &[u8],
    ) -> Checks<'a, T> {
        let (tx, verdicts) = channel();
        let lanes = if checks.is_empty() { 0 } else { lanes.max(1) };
        let lanes = (0..lanes)
            .map(|_| {
                let (to_lane, rx) = channel::<Msg<T>>();
                let tx = tx.clone();
                scope.spawn(move || lane(rx, checks, bytes, &tx));
                to_lane
            })
            .collect();
        Checks {
            checks,
            lanes,
            verdicts,
            next: 0,
            verified: 0,
            matched: BTreeSet::new(),
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Whether there is nothing to check.
    pub(crate) fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Takes the piece `r` (held by the pipeline as it comes) holding `item`, and says how
    /// many of the held pieces, oldest first, may go on. `last`: no piece comes after it, so
    /// every verdict is waited for. Fails when a range does not match.
    pub(crate) fn gate(&mut self, r: Range<u64>, item: &Arc<T>, last: bool) -> crate::Result<Gate> {
        self.held_bytes += r.end - r.start;
        self.held.push_back(r.clone());
        while let Some(c) = self.checks.get(self.next) {
            if c.range.start >= r.end {
                break;
            }
            let from = c.range.start.max(r.start);
            let to = c.range.end.min(r.end);
            if from < to {
                let (a, b) = ((from - r.start) as usize, (to - r.start) as usize);
                self.send(self.next, Msg::Feed(self.next, item.clone(), a, b))?;
            }
            if c.range.end > r.end {
                break;
            }
            self.send(self.next, Msg::End(self.next))?;
            self.next += 1;
            if c.range.end - c.range.start > HOLD {
                // Not held: its pieces went on as they came. Stop here if it was wrong.
                while self.verified < self.next {
                    self.take(true)?;
                }
            }
        }
        self.take(false)?;
        while (last || self.held_bytes > HOLD) && self.verified < self.next {
            self.take(true)?;
        }
        let free_to = match self.checks.get(self.verified) {
            None => u64::MAX,
            // In progress and not held: its pieces go as they come.
            Some(c) if self.verified == self.next && c.range.end - c.range.start > HOLD => {
                c.range.end
            }
            Some(c) => c.range.start,
        };
        let mut n = 0;
        while let Some(p) = self.held.front() {
            if p.end > free_to && !last {
                break;
            }
            self.held_bytes -= p.end - p.start;
            self.held.pop_front();
            n += 1;
        }
        Ok(if n == 0 {
            Gate::Hold
        } else {
            Gate::ReleaseOldest(n)
        })
    }

    fn send(&self, check: usize, m: Msg<T>) -> crate::Result<()> {
        self.lanes[check % self.lanes.len()]
            .send(m)
            .map_err(|_| lost("a checksum lane stopped"))
    }

    /// Takes the verdicts that have come (with `block`, at least one).
    fn take(&mut self, block: bool) -> crate::Result<()> {
        let mut first = if block {
            Some(
                self.verdicts
                    .recv()
                    .map_err(|_| lost("the checksum lanes stopped"))?,
            )
        } else {
            None
        };
        while let Some((i, got)) = first.take().or_else(|| self.verdicts.try_recv().ok()) {
            let c = &self.checks[i];
            if got != c.digest {
                return Err(crate::Error::Mismatch {
                    offset: c.range.start,
                    len: c.range.end - c.range.start,
                    detail: format!(
                        "the image does not match its bmap at bytes {}..{} (checksum {}, \
                         the bmap says {}); that range was not written",
                        c.range.start, c.range.end, got, c.digest
                    ),
                });
            }
            self.matched.insert(i);
            while self.matched.remove(&self.verified) {
                self.verified += 1;
            }
        }
        Ok(())
    }
}

/// One lane: hashes the bytes it is fed, a check at a time, and says each digest.
fn lane<T>(
    rx: Receiver<Msg<T>>,
    checks: &[RangeCheck],
    bytes: fn(&T) -> &[u8],
    out: &Sender<(usize, String)>,
) {
    let mut h: Option<Hasher> = None;
    for m in rx {
        match m {
            Msg::Feed(i, item, a, b) => h
                .get_or_insert_with(|| Hasher::new(checks[i].kind))
                .update(&bytes(&item)[a..b]),
            Msg::End(i) => {
                let d = h
                    .take()
                    .unwrap_or_else(|| Hasher::new(checks[i].kind))
                    .finalize_reset();
                if out.send((i, hex(&d))).is_err() {
                    return;
                }
            }
        }
    }
}

fn lost(what: &str) -> crate::Error {
    crate::Error::Io(std::io::Error::other(format!("internal error: {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmap::ChecksumType;

    fn check(range: Range<u64>, data: &[u8]) -> RangeCheck {
        let mut h = Hasher::new(ChecksumType::Sha256);
        h.update(&data[range.start as usize..range.end as usize]);
        RangeCheck {
            range,
            digest: hex(&h.finalize_reset()),
            kind: ChecksumType::Sha256,
        }
    }

    fn as_bytes(v: &Vec<u8>) -> &[u8] {
        v
    }

    /// Feeds `data` in pieces of `step` bytes; returns how many pieces were handed on after
    /// each, or the error.
    fn run(checks: &[RangeCheck], data: &[u8], step: usize) -> crate::Result<Vec<usize>> {
        std::thread::scope(|s| {
            let mut c = Checks::start(s, checks, 2, as_bytes);
            let mut out = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let end = (at + step).min(data.len());
                let item = Arc::new(data[at..end].to_vec());
                let g = c.gate(at as u64..end as u64, &item, end == data.len())?;
                out.push(match g {
                    Gate::ReleaseOldest(n) => n,
                    _ => 0,
                });
                at = end;
            }
            Ok(out)
        })
    }

    #[test]
    fn a_range_is_held_until_it_matches_and_everything_goes_in_the_end() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let checks = [
            check(100..400, &data),
            check(400..450, &data),
            check(600..900, &data),
        ];
        let released = run(&checks, &data, 100).unwrap();
        // Piece 0..100 is before any check: it may go at once.
        assert!(released[0] >= 1, "{released:?}");
        assert_eq!(released.iter().sum::<usize>(), 10, "every piece goes on");
    }

    #[test]
    fn a_range_that_does_not_match_stops_the_run_before_it_goes_on() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut checks = [check(100..400, &data), check(400..900, &data)];
        checks[1].digest = "00".repeat(32);
        let e = run(&checks, &data, 100).unwrap_err();
        assert!(e.to_string().contains("400..900"), "{e}");
    }
}
