//! `ExtentMap`: the one currency of blockwise. A set of byte ranges that matter, kept sorted,
//! disjoint and coalesced (no two ranges touch), so every operation is a linear merge.

use std::fmt;

use serde::Serialize;

/// A half-open byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Extent {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Extent {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Sorted, disjoint, non-adjacent byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExtentMap {
    ranges: Vec<Extent>,
}

impl ExtentMap {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map holding the single range `[start, end)` (empty if `end <= start`).
    pub fn single(start: u64, end: u64) -> Self {
        let mut m = Self::new();
        m.insert(start, end);
        m
    }

    /// Builds a map from ranges in any order, overlapping or not.
    pub fn from_ranges<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut v: Vec<Extent> = iter
            .into_iter()
            .filter(|&(s, e)| e > s)
            .map(|(s, e)| Extent { start: s, end: e })
            .collect();
        v.sort_unstable();
        Self::from_sorted_unchecked_merge(v)
    }

    fn from_sorted_unchecked_merge(v: Vec<Extent>) -> Self {
        let mut out: Vec<Extent> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        ExtentMap { ranges: out }
    }

    /// Adds `[start, end)`. Appending in ascending order (the common case when walking a
    /// bitmap) is amortised O(1); inserting in the middle is O(n).
    pub fn insert(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if start >= last.start {
                if start <= last.end {
                    last.end = last.end.max(end);
                } else {
                    self.ranges.push(Extent { start, end });
                }
                return;
            }
        } else {
            self.ranges.push(Extent { start, end });
            return;
        }
        // Out of order: first range whose end reaches `start`, then swallow everything that
        // overlaps or touches the new range.
        let i = self.ranges.partition_point(|r| r.end < start);
        let mut j = i;
        let mut s = start;
        let mut e = end;
        while j < self.ranges.len() && self.ranges[j].start <= e {
            s = s.min(self.ranges[j].start);
            e = e.max(self.ranges[j].end);
            j += 1;
        }
        self.ranges.splice(i..j, [Extent { start: s, end: e }]);
    }

    /// Ranges in ascending order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Extent> + '_ {
        self.ranges.iter().copied()
    }

    /// The ranges as a slice.
    pub fn as_slice(&self) -> &[Extent] {
        &self.ranges
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True if no byte is in the map.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(Extent::len).sum()
    }

    /// First byte past the last range (0 for an empty map).
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.end)
    }

    /// True if `offset` lies inside a range.
    pub fn contains(&self, offset: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= offset);
        self.ranges.get(i).is_some_and(|r| r.start <= offset)
    }

    /// Bytes of `[start, end)` covered by the map.
    pub fn covered(&self, start: u64, end: u64) -> u64 {
        if end <= start {
            return 0;
        }
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges[i..]
            .iter()
            .take_while(|r| r.start < end)
            .map(|r| r.end.min(end) - r.start.max(start))
            .sum()
    }

    /// The part of the map inside `[start, end)`, found by binary search.
    pub fn within(&self, start: u64, end: u64) -> ExtentMap {
        if end <= start {
            return ExtentMap::new();
        }
        let i = self.ranges.partition_point(|r| r.end <= start);
        ExtentMap {
            ranges: self.ranges[i..]
                .iter()
                .take_while(|r| r.start < end)
                .map(|r| Extent {
                    start: r.start.max(start),
                    end: r.end.min(end),
                })
                .collect(),
        }
    }

    /// Every byte in `self` or `other`.
    pub fn union(&self, other: &ExtentMap) -> ExtentMap {
        let mut v = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let (mut a, mut b) = (
            self.ranges.iter().peekable(),
            other.ranges.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x.start <= y.start {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            v.push(*next.expect("peeked"));
        }
        Self::from_sorted_unchecked_merge(v)
    }

    /// Every byte in both `self` and `other`.
    pub fn intersect(&self, other: &ExtentMap) -> ExtentMap {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (x, y) = (self.ranges[i], other.ranges[j]);
            let s = x.start.max(y.start);
            let e = x.end.min(y.end);
            if s < e {
                out.push(Extent { start: s, end: e });
            }
            if x.end < y.end {
                i += 1;
            } else {
                j += 1;
            }
        }
        // Pieces of disjoint inputs are disjoint, but two pieces can touch when one input
        // has adjacent... it cannot (inputs are coalesced), so `out` is already canonical.
        ExtentMap { ranges: out }
    }

    /// Every byte in `self` but not in `other`.
    pub fn subtract(&self, other: &ExtentMap) -> ExtentMap {
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut j = 0;
        for &r in &self.ranges {
            let mut s = r.start;
            while j < other.ranges.len() && other.ranges[j].end <= s {
                j += 1;
            }
            let mut k = j;
            while s < r.end {
                match other.ranges.get(k) {
                    Some(o) if o.start < r.end => {
                        if o.start > s {
                            out.push(Extent {
                                start: s,
                                end: o.start,
                            });
                        }
                        s = s.max(o.end);
                        k += 1;
                    }
                    _ => {
                        out.push(Extent {
                            start: s,
                            end: r.end,
                        });
                        break;
                    }
                }
            }
        }
        ExtentMap { ranges: out }
    }

    /// The complement within `[0, size)`: the bytes not in the map.
    pub fn gaps(&self, size: u64) -> ExtentMap {
        ExtentMap::single(0, size).subtract(self)
    }

    /// Clips the map to `[0, size)`.
    pub(crate) fn clip(&self, size: u64) -> ExtentMap {
        self.intersect(&ExtentMap::single(0, size))
    }

    /// Moves every range by `delta` bytes (a partition's map into image coordinates).
    /// Ranges that would overflow are cut at `u64::MAX`.
    pub(crate) fn shifted(&self, delta: u64) -> ExtentMap {
        let ranges = self
            .ranges
            .iter()
            .filter_map(|r| {
                let s = r.start.checked_add(delta)?;
                Some(Extent {
                    start: s,
                    end: r.end.saturating_add(delta),
                })
            })
            .filter(|r| r.end > r.start)
            .collect();
        ExtentMap { ranges }
    }

    /// Widens every range outward to multiples of `block` (a partial block is a used block),
    /// then merges ranges that now touch. `block` must be non-zero.
    pub fn align_out(&self, block: u64) -> ExtentMap {
        assert!(block > 0, "block size must be non-zero");
        let v = self
            .ranges
            .iter()
            .map(|r| Extent {
                start: r.start - r.start % block,
                end: r.end.div_ceil(block).saturating_mul(block),
            })
            .collect();
        Self::from_sorted_unchecked_merge(v)
    }

    /// Iterates the map as inclusive block-number ranges of `block` bytes (after
    /// [`align_out`](Self::align_out)), the form bmap files use.
    pub fn block_ranges(&self, block: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        assert!(block > 0, "block size must be non-zero");
        self.ranges.iter().map(move |r| {
            let first = r.start / block;
            let last = r.end.div_ceil(block) - 1;
            (first, last)
        })
    }

    /// Splits ranges so none is longer than `max` bytes (for sizing I/O requests).
    pub fn chunks(&self, max: u64) -> impl Iterator<Item = Extent> + '_ {
        assert!(max > 0, "chunk size must be non-zero");
        self.ranges.iter().flat_map(move |r| {
            let n = r.len().div_ceil(max);
            (0..n).map(move |i| {
                // `i * max < r.len()`, so `s` stays inside the range; `s + max` can pass
                // u64::MAX for a range near the top (it would wrap in release builds).
                let s = r.start + i * max;
                Extent {
                    start: s,
                    end: s.saturating_add(max).min(r.end),
                }
            })
        })
    }
}

impl FromIterator<(u64, u64)> for ExtentMap {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        Self::from_ranges(iter)
    }
}

impl fmt::Display for ExtentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_touching_and_out_of_order() {
        let mut m = ExtentMap::new();
        m.insert(10, 20);
        m.insert(30, 40);
        m.insert(20, 30);
        assert_eq!(m.as_slice(), &[Extent { start: 10, end: 40 }]);
        m.insert(0, 5);
        m.insert(3, 11);
        assert_eq!(m.as_slice(), &[Extent { start: 0, end: 40 }]);
        m.insert(50, 50);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn subtract_and_gaps() {
        let m = ExtentMap::from_ranges([(0, 100), (200, 300)]);
        let cut = ExtentMap::from_ranges([(50, 250)]);
        assert_eq!(
            m.subtract(&cut),
            ExtentMap::from_ranges([(0, 50), (250, 300)])
        );
        assert_eq!(
            m.gaps(400),
            ExtentMap::from_ranges([(100, 200), (300, 400)])
        );
    }

    #[test]
    fn align_and_blocks() {
        let m = ExtentMap::from_ranges([(1, 2), (4097, 4098), (10000, 10001)]);
        let a = m.align_out(4096);
        assert_eq!(a, ExtentMap::from_ranges([(0, 12288)]));
        assert_eq!(a.block_ranges(4096).collect::<Vec<_>>(), vec![(0, 2)]);
    }

    #[test]
    fn chunks_split() {
        let m = ExtentMap::from_ranges([(0, 10)]);
        let c: Vec<_> = m.chunks(4).map(|e| (e.start, e.end)).collect();
        assert_eq!(c, vec![(0, 4), (4, 8), (8, 10)]);
    }
}
