//! Cutting an image into the segments an archive is made of.
//!
//! Data segments start where mapped bytes start and hold at most `frame_size` bytes; unmapped
//! gaps shorter than `merge_gap` stay inside a data segment (zeroed, they cost nothing once
//! compressed, and fewer segments mean longer sequential reads), longer gaps become zero runs
//! of at most `max_zero` bytes each.

use crate::extent::{Extent, ExtentMap};

/// How to cut the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlanOptions {
    /// Largest data segment, in bytes.
    pub(crate) frame_size: usize,
    /// Unmapped gaps shorter than this are kept inside a data segment.
    pub(crate) merge_gap: u64,
    /// Largest zero run, in bytes.
    pub(crate) max_zero: u64,
    /// Segments start and end at multiples of this (but for the image's end), the bytes
    /// they gain unmapped: a container of clusters (qcow2) then receives whole clusters, each
    /// encoded on any core. 1 (or 0) for none.
    pub(crate) align: u64,
}

/// A stretch of the image holding mapped bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DataSegment {
    /// Image offset of the first byte.
    pub(crate) offset: u64,
    /// Length in bytes (at most the plan's `frame_size`).
    pub(crate) len: usize,
    /// The mapped byte ranges inside it, absolute, sorted, disjoint; the first starts at
    /// `offset` and the last ends at `offset + len` (with an `align`ed plan, they may start
    /// after and end before). Everything else in the segment is zero.
    pub(crate) mapped: Vec<Extent>,
}

impl DataSegment {
    /// End offset (exclusive).
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

/// One piece of the image, in image order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Mapped bytes to read and store.
    Data(DataSegment),
    /// Unmapped bytes, stored as zeros or holes.
    Zero {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Segment {
    /// Image offset of the segment.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> u64 {
        match self {
            Segment::Data(d) => d.offset,
            Segment::Zero { offset, .. } => *offset,
        }
    }

    /// Length in bytes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        match self {
            Segment::Data(d) => d.len as u64,
            Segment::Zero { len, .. } => *len,
        }
    }

    /// True for an empty segment (never produced by [`plan`]).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts `[0, size)` into segments: every byte of `map` (clipped to `size`) lies in a data
/// segment, and the segments tile the image exactly, in order.
#[cfg(test)]
pub(crate) fn plan(size: u64, map: &ExtentMap, o: &PlanOptions) -> Vec<Segment> {
    plan_with_cuts(size, map, &[], o)
}

/// Like [`plan`], and no data segment spans one of `cuts` (sorted offsets): a new segment
/// starts there. Backups cut around the metadata inspect reads, so reading it back from an
/// archive decodes small frames of metadata rather than frames mostly of file data.
pub(crate) fn plan_with_cuts(
    size: u64,
    map: &ExtentMap,
    cuts: &[u64],
    o: &PlanOptions,
) -> Vec<Segment> {
    if o.align <= 1 {
        return plan_exact(size, map, cuts, o);
    }
    // Plan the shape of the map widened to whole units, with cuts and frames on unit
    // edges, then give each data segment the exact mapped ranges inside it: what the widening
    // added stays unmapped, so it is zeroed like any free byte.
    let a = o.align;
    let exact = map.clip(size);
    let shape = exact.align_out(a).clip(size);
    let mut unit_cuts: Vec<u64> = cuts.iter().map(|c| c - c % a).collect();
    unit_cuts.dedup();
    let frame = ((o.frame_size as u64 / a).max(1) * a) as usize;
    let wide = PlanOptions {
        frame_size: frame,
        align: 1,
        ..*o
    };
    let mut segs = plan_exact(size, &shape, &unit_cuts, &wide);
    for s in &mut segs {
        if let Segment::Data(d) = s {
            d.mapped = exact.within(d.offset, d.end()).iter().collect();
        }
    }
    segs
}

fn plan_exact(size: u64, map: &ExtentMap, cuts: &[u64], o: &PlanOptions) -> Vec<Segment> {
    let frame = (o.frame_size.max(1)) as u64;
    let max_zero = o.max_zero.max(1);
    let map = map.clip(size);
    let mut ext = map.iter().peekable();
    let mut out = Vec::new();
    let mut pos = 0u64;
    // The part of the current extent not yet placed (an extent longer than a frame is
    // placed a frame at a time).
    let mut cur: Option<Extent> = ext.next();
    while let Some(first) = cur {
        push_zero(&mut out, pos, first.start, max_zero);
        let start = first.start;
        let next_cut = cuts
            .get(cuts.partition_point(|&c| c <= start))
            .copied()
            .unwrap_or(u64::MAX);
        let limit = start.saturating_add(frame).min(next_cut);
        let mut mapped = Vec::new();
        let mut end = start;
        while let Some(e) = cur {
            if !mapped.is_empty() && (e.start >= limit || e.start - end >= o.merge_gap) {
                break;
            }
            let take_end = e.end.min(limit);
            mapped.push(Extent {
                start: e.start,
                end: take_end,
            });
            end = take_end;
            if take_end < e.end {
                cur = Some(Extent {
                    start: take_end,
                    end: e.end,
                });
                break;
            }
            cur = ext.next();
        }
        out.push(Segment::Data(DataSegment {
            offset: start,
            len: (end - start) as usize,
            mapped,
        }));
        pos = end;
    }
    push_zero(&mut out, pos, size, max_zero);
    out
}

fn push_zero(out: &mut Vec<Segment>, mut from: u64, to: u64, max_zero: u64) {
    while from < to {
        let n = (to - from).min(max_zero);
        out.push(Segment::Zero {
            offset: from,
            len: n,
        });
        from += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(size: u64, map: &ExtentMap, o: &PlanOptions) -> Vec<Segment> {
        let segs = plan(size, map, o);
        let mut pos = 0u64;
        let mut covered = ExtentMap::new();
        for s in &segs {
            assert_eq!(s.offset(), pos, "segments tile the image: {segs:?}");
            assert!(!s.is_empty());
            match s {
                Segment::Data(d) => {
                    assert!(d.len <= o.frame_size);
                    assert_eq!(d.mapped.first().map(|e| e.start), Some(d.offset));
                    assert_eq!(d.mapped.last().map(|e| e.end), Some(d.end()));
                    for e in &d.mapped {
                        covered.insert(e.start, e.end);
                    }
                }
                Segment::Zero { len, .. } => assert!(*len <= o.max_zero),
            }
            pos += s.len();
        }
        assert_eq!(pos, size);
        assert_eq!(covered, map.clip(size));
        segs
    }

    #[test]
    fn long_extent_is_split_and_gaps_merge() {
        let o = PlanOptions {
            frame_size: 100,
            merge_gap: 10,
            max_zero: 1000,
            align: 1,
        };
        let map = ExtentMap::from_ranges([(0, 250), (255, 260), (300, 310)]);
        let segs = check(5000, &map, &o);
        assert_eq!(segs.len(), 10, "{segs:?}");
        assert_eq!(segs[2].len(), 60); // 200..260 with the 5-byte gap inside
        assert!(matches!(
            segs[3],
            Segment::Zero {
                offset: 260,
                len: 40
            }
        ));
        assert!(matches!(
            segs[5],
            Segment::Zero {
                offset: 310,
                len: 1000
            }
        ));
    }

    #[test]
    fn empty_map_is_all_zero_runs() {
        let o = PlanOptions {
            frame_size: 100,
            merge_gap: 10,
            max_zero: 64,
            align: 1,
        };
        let segs = check(200, &ExtentMap::new(), &o);
        assert_eq!(segs.len(), 4);
    }

    #[test]
    fn cuts_start_new_segments() {
        let o = PlanOptions {
            frame_size: 100,
            merge_gap: 50,
            max_zero: 1000,
            align: 1,
        };
        let map = ExtentMap::from_ranges([(0, 90), (95, 180)]);
        let segs = plan_with_cuts(200, &map, &[30, 95, 150], &o);
        let starts: Vec<u64> = segs.iter().map(|s| s.offset()).collect();
        assert_eq!(starts, vec![0, 30, 90, 95, 150, 180]);
    }

    proptest! {
        #[test]
        fn tiles_and_covers_with_cuts(ranges in proptest::collection::vec((0u64..5000, 1u64..400), 0..30),
                            mut cuts in proptest::collection::vec(0u64..6000, 0..20),
                            size in 0u64..6000, frame in 1usize..300) {
            cuts.sort_unstable();
            let map = ExtentMap::from_ranges(ranges.into_iter().map(|(s, l)| (s, s + l)));
            let o = PlanOptions { frame_size: frame, merge_gap: 20, max_zero: 700, align: 1 };
            let segs = plan_with_cuts(size, &map, &cuts, &o);
            let mut pos = 0;
            for s in &segs {
                prop_assert_eq!(s.offset(), pos);
                pos += s.len();
                if let Segment::Data(d) = s {
                    prop_assert!(!cuts.iter().any(|&c| c > d.offset && c < d.end()));
                }
            }
            prop_assert_eq!(pos, size);
        }

        #[test]
        fn aligned_plans_tile_on_unit_edges(ranges in proptest::collection::vec((0u64..5000, 1u64..400), 0..30),
                            mut cuts in proptest::collection::vec(0u64..6000, 0..10),
                            size in 0u64..6000, frame in 1usize..300, align in 1u64..90) {
            cuts.sort_unstable();
            let map = ExtentMap::from_ranges(ranges.into_iter().map(|(s, l)| (s, s + l)));
            let o = PlanOptions { frame_size: frame, merge_gap: 20, max_zero: 700, align };
            let segs = plan_with_cuts(size, &map, &cuts, &o);
            let mut pos = 0;
            let mut covered = ExtentMap::new();
            for s in &segs {
                prop_assert_eq!(s.offset(), pos);
                pos += s.len();
                if let Segment::Data(d) = s {
                    prop_assert!(d.offset % align == 0);
                    prop_assert!(d.end() % align == 0 || d.end() == size);
                    for e in &d.mapped {
                        prop_assert!(e.start >= d.offset && e.end <= d.end());
                        covered.insert(e.start, e.end);
                    }
                }
            }
            prop_assert_eq!(pos, size);
            prop_assert_eq!(covered, map.clip(size));
        }

        #[test]
        fn tiles_and_covers(ranges in proptest::collection::vec((0u64..5000, 1u64..400), 0..30),
                            size in 0u64..6000, frame in 1usize..300, gap in 0u64..50, mz in 1u64..500) {
            let map = ExtentMap::from_ranges(ranges.into_iter().map(|(s, l)| (s, s + l)));
            check(size, &map, &PlanOptions { frame_size: frame, merge_gap: gap, max_zero: mz, align: 1 });
        }
    }
}
