//! What a flash writes, and in which order: the [`FlashPlan`].
//!
//! A half-written card must not look good (spec/safety.md): the target's head (its first MiB,
//! where the partition table and boot sector live) is zeroed before anything else is written,
//! the image's mapped ranges past the head are written in ascending order, and the image's head
//! is written last, after everything else is on the target. An interrupted flash leaves a card
//! with no table rather than an old or new table over half-written data. When the target is
//! larger than the image, its last MiB is zeroed too (a stale backup GPT from the card's
//! previous life makes tools report a broken table).

use std::ops::Range;

use crate::bmap::{Bmap, ChecksumType};
use crate::extent::ExtentMap;

/// The region written last and zeroed first: where tables and boot sectors live.
pub const HEAD: u64 = 1 << 20;

/// The region at the end of a larger target that is zeroed.
pub const TAIL: u64 = 1 << 20;

/// Longest piece of a range read and written as one job.
pub(crate) const PIECE: u64 = 4 << 20;

/// Which part of the image a job carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// The image's head (`0..head`), held by each target until everything else is written.
    Head,
    /// Mapped bytes past the head, written where they are read.
    Body,
}

/// The writes of one flash, for an image of `image_size` bytes onto a target of
/// `target_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashPlan {
    /// Size of the decoded image.
    pub image_size: u64,
    /// Size of the target (for a file target: what it will be, at least the image size).
    pub target_size: u64,
    /// Bytes of the image that are written: the mapped ranges (aligned out to the block size,
    /// clipped to the image) and the whole head.
    pub map: ExtentMap,
    /// Length of the head: `HEAD`, or the whole image when smaller.
    pub head: u64,
    /// The target's last bytes zeroed because the image does not reach them (empty when it
    /// does).
    pub zero_tail: Range<u64>,
    /// Checksums the decoded image must match before any byte of their range is written
    /// (a bmap's ranges), ascending and disjoint.
    pub checks: Vec<RangeCheck>,
    /// Bytes written in place of the image's (inside it: in its head) or besides it (past its
    /// end: a GPT's backup moved to the end of a larger target), sorted, disjoint. Written
    /// with the head, after everything else, and read back like the rest.
    pub patches: Vec<(u64, Vec<u8>)>,
    /// True when the map is not known beforehand (a stream without a bmap): every byte is
    /// read, and which parts of each piece are written is decided as the stream goes by.
    pub streaming: bool,
    /// For a streaming plan: the scan running beside it that decides (see
    /// [`super::hints::ScanHints`]); without one, the stream's own metadata is read as it passes.
    pub scan: Option<ScanLink>,
    /// For a streaming plan decided as it goes by (no scan beside it): the user's choices
    /// about the skip rule.
    pub rules: crate::map::MapRules,
}

/// The [`super::hints::ScanHints`] of a scan beside a streaming plan. Two links are equal when they
/// are the same scan.
#[derive(Clone, Debug)]
pub struct ScanLink(pub std::sync::Arc<super::hints::ScanHints>);

impl PartialEq for ScanLink {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ScanLink {}

fn tail(image_size: u64, target_size: u64) -> Range<u64> {
    if target_size > image_size {
        image_size.max(target_size.saturating_sub(TAIL))..target_size
    } else {
        target_size..target_size
    }
}

/// A range of the image and the digest its decoded bytes must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeCheck {
    /// The bytes.
    pub range: Range<u64>,
    /// Their digest, as the bmap gives it (lowercase hex).
    pub digest: String,
    /// The digest's kind.
    pub kind: ChecksumType,
}

impl FlashPlan {
    /// The plan for writing the `map`ped bytes of an image of `image_size` bytes onto a target
    /// of `target_size` bytes, in blocks of `block` bytes (the bmap's block size; a power of
    /// two). The caller has checked that the target holds the image's last mapped byte.
    pub fn new(image_size: u64, target_size: u64, map: &ExtentMap, block: u64) -> FlashPlan {
        let head = HEAD.min(image_size);
        let mut map = map.align_out(block.max(1)).clip(image_size);
        map.insert(0, head);
        let zero_tail = tail(image_size, target_size);
        FlashPlan {
            image_size,
            target_size,
            map,
            head,
            zero_tail,
            checks: Vec::new(),
            patches: Vec::new(),
            streaming: false,
            scan: None,
            rules: crate::map::MapRules::default(),
        }
    }

    /// The plan for writing an image whose map is decided as it streams by
    /// ([`FlashPlan::streaming`]): every byte is read; none is known free yet.
    pub fn streaming(image_size: u64, target_size: u64) -> FlashPlan {
        let mut p = FlashPlan::new(
            image_size,
            target_size,
            &ExtentMap::single(0, image_size),
            1,
        );
        p.streaming = true;
        p
    }

    /// A streaming plan decided by a scan running beside it on a second decoder of the same
    /// image (see [`super::hints::ScanHints`]): the caller runs the scan through
    /// [`ScanHints::watch`](super::hints::ScanHints::watch) and hands its map to
    /// [`ScanHints::finish`](super::hints::ScanHints::finish).
    pub fn streaming_beside(
        image_size: u64,
        target_size: u64,
        hints: std::sync::Arc<super::hints::ScanHints>,
    ) -> FlashPlan {
        let mut p = FlashPlan::streaming(image_size, target_size);
        p.scan = Some(ScanLink(hints));
        p
    }

    /// Adds `bmap`'s range checksums: a range is written only once its decoded bytes match.
    /// Ranges without a checksum are written unchecked.
    pub fn with_checks(mut self, bmap: &Bmap) -> FlashPlan {
        if let Some(kind) = bmap.checksum_type {
            self.checks = bmap
                .ranges
                .iter()
                .filter_map(|r| {
                    let (s, e) =
                        crate::bmap::range_bytes(r.first, r.last, bmap.block_size, bmap.image_size);
                    Some(RangeCheck {
                        range: s..e,
                        digest: r.checksum.clone()?.to_ascii_lowercase(),
                        kind,
                    })
                })
                .filter(|c| !c.range.is_empty() && c.range.end <= self.image_size)
                .collect();
        }
        self
    }

    /// Bytes of the image each target holds once written: the map, the patches past the
    /// image's end included.
    pub fn target_map(&self) -> ExtentMap {
        let mut m = self.map.clone();
        for (at, b) in &self.patches {
            m.insert(*at, at.saturating_add(b.len() as u64));
        }
        m
    }

    /// The bytes zeroed at the end of a target of `target_size` bytes (targets of one run
    /// may differ in size): its last MiB, or what of it lies past the image.
    pub fn tail_for(&self, target_size: u64) -> Range<u64> {
        tail(self.image_size, target_size)
    }

    /// Bytes of the image written to each target.
    pub fn mapped(&self) -> u64 {
        self.map.total()
    }

    /// The reads, in ascending order (a stream is read once): the head first, then the mapped
    /// ranges past it, each cut in pieces of at most `PIECE` bytes.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> Vec<(Range<u64>, Piece)> {
        self.reads_in_units(|_, _| None)
    }

    /// Like `reads`, with pieces also cut where `units(start, end)` says the source's units
    /// (a seekable archive's frames, an xz block) begin: each piece is then decoded by one
    /// reader straight into its own buffer, not read in parts and copied together.
    pub(crate) fn reads_in_units(
        &self,
        units: impl Fn(u64, u64) -> Option<Vec<u64>>,
    ) -> Vec<(Range<u64>, Piece)> {
        let mut out = Vec::new();
        if self.head > 0 {
            out.push((0..self.head, Piece::Head));
        }
        let body = self.map.subtract(&ExtentMap::single(0, self.head));
        // Pieces end where a checked range ends, so that a range's last piece completes it.
        let checks: Vec<u64> = self.checks.iter().map(|c| c.range.end).collect();
        for e in body.iter() {
            let first = checks.partition_point(|&c| c <= e.start);
            let mut cuts: Vec<u64> = checks[first..]
                .iter()
                .copied()
                .take_while(|&c| c < e.end)
                .chain(units(e.start, e.end).unwrap_or_default())
                .filter(|&c| c > e.start && c < e.end)
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut at = e.start;
            for end in cuts.into_iter().chain([e.end]) {
                while at < end {
                    let to = end.min(at.saturating_add(PIECE));
                    out.push((at..to, Piece::Body));
                    at = to;
                }
            }
        }
        out
    }

    /// The byte ranges that read back must match the image: every written byte.
    pub fn written(&self) -> &ExtentMap {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_read_first_and_always_whole() {
        let map = ExtentMap::from_ranges([(4096, 8192), (3 << 20, (3 << 20) + 100)]);
        let p = FlashPlan::new(8 << 20, 16 << 20, &map, 4096);
        let reads = p.reads();
        assert_eq!(reads[0], (0..HEAD, Piece::Head));
        assert_eq!(reads[1], (3 << 20..(3 << 20) + 4096, Piece::Body));
        assert_eq!(reads.len(), 2);
        assert_eq!(p.zero_tail, (15 << 20)..(16 << 20));
        assert_eq!(p.mapped(), HEAD + 4096);
    }

    #[test]
    fn pieces_end_where_units_and_checked_ranges_end() {
        let map = ExtentMap::single(2 << 20, 12 << 20);
        let mut p = FlashPlan::new(16 << 20, 16 << 20, &map, 4096);
        p.checks.push(RangeCheck {
            range: (2 << 20)..(7 << 20),
            digest: String::new(),
            kind: ChecksumType::Sha256,
        });
        let reads = p.reads_in_units(|s, e| {
            Some(
                (0..16u64)
                    .map(|i| i * (3 << 20))
                    .filter(|&b| b > s && b < e)
                    .collect(),
            )
        });
        let mib = |r: &Range<u64>| (r.start >> 20, r.end >> 20);
        let got: Vec<_> = reads.iter().map(|(r, _)| mib(r)).collect();
        assert_eq!(
            got,
            vec![(0, 1), (2, 3), (3, 6), (6, 7), (7, 9), (9, 12)],
            "cut at units (every 3 MiB) and at the checked range's end (7 MiB), at most 4 MiB"
        );
    }

    #[test]
    fn small_images_and_exact_targets() {
        let p = FlashPlan::new(5000, 5000, &ExtentMap::single(100, 200), 512);
        assert_eq!(p.head, 5000);
        assert_eq!(p.reads(), vec![(0..5000, Piece::Head)]);
        assert!(p.zero_tail.is_empty());
        // A target a little larger than the image: only the bytes past the image are zeroed.
        let p = FlashPlan::new(5000, 6000, &ExtentMap::new(), 512);
        assert_eq!(p.zero_tail, 5000..6000);
    }
}
