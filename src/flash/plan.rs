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

use crate::extent::ExtentMap;

/// The region written last and zeroed first: where tables and boot sectors live.
pub const HEAD: u64 = 1 << 20;

/// The region at the end of a larger target that is zeroed.
pub const TAIL: u64 = 1 << 20;

/// Longest piece of a range read and written as one job.
const PIECE: u64 = 4 << 20;

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
}

impl FlashPlan {
    /// The plan for writing the `map`ped bytes of an image of `image_size` bytes onto a target
    /// of `target_size` bytes, in blocks of `block` bytes (the bmap's block size; a power of
    /// two). The caller has checked that the target holds the image's last mapped byte.
    pub fn new(image_size: u64, target_size: u64, map: &ExtentMap, block: u64) -> FlashPlan {
        let head = HEAD.min(image_size);
        let mut map = map.align_out(block.max(1)).clip(image_size);
        map.insert(0, head);
        let zero_tail = if target_size > image_size {
            image_size.max(target_size.saturating_sub(TAIL))..target_size
        } else {
            target_size..target_size
        };
        FlashPlan {
            image_size,
            target_size,
            map,
            head,
            zero_tail,
        }
    }

    /// Bytes of the image written to each target.
    pub fn mapped(&self) -> u64 {
        self.map.total()
    }

    /// The reads, in ascending order (a stream is read once): the head first, then the mapped
    /// ranges past it, each cut in pieces of at most `PIECE` bytes.
    pub(crate) fn reads(&self) -> Vec<(Range<u64>, Piece)> {
        let mut out = Vec::new();
        if self.head > 0 {
            out.push((0..self.head, Piece::Head));
        }
        let body = self.map.subtract(&ExtentMap::single(0, self.head));
        for e in body.chunks(PIECE) {
            out.push((e.start..e.end, Piece::Body));
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
