//! Batched block reads, the run-length walk over ext bitmaps, and the free-block hints a
//! stream being flashed skips on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::io::{ReadAt, ReadAtExt};

/// Tells `dev` that blocks `from..to` are free (by their bitmap, or as metadata the map will
/// likely leave out): a hint [`ReadAt::note_free`] passes to a stream being flashed.
pub(super) fn hint_free(dev: &dyn ReadAt, bs: u64, from: u64, to: u64) {
    if to > from {
        if let (Some(at), Some(len)) = (from.checked_mul(bs), (to - from).checked_mul(bs)) {
            dev.note_free(at, len);
        }
    }
}

/// Largest single read when batching adjacent bitmap or descriptor blocks.
const MAX_BATCH: u64 = 4 << 20;

/// Reads one block for each `(block, key)` item, coalescing runs of adjacent blocks into
/// single reads (flex_bg packs bitmaps and descriptor blocks together), and hands each block
/// to `f` — or `None` when it could not be read. Items are visited in block order.
pub(super) fn read_batched(
    dev: &dyn ReadAt,
    bs: u64,
    items: &mut [(u64, u64)],
    mut f: impl FnMut(u64, Option<&[u8]>),
) {
    read_in_order(dev, bs, items.iter().copied(), |key, data, _| f(key, data));
}

/// Like [`read_batched`], for reads that lead to more reads: `f` may push further
/// `(block, key)` items, which join the ones still waiting. Blocks are read in ascending
/// order, so one pass reads a filesystem's metadata front to back (an inode table comes
/// after its inode bitmap): a stream is decoded once instead of once per kind of metadata
/// (bitmaps of every group, then tables). Items pushed behind what was already read are
/// read in a second pass, in order, not one by one as they come.
pub(super) fn read_in_order<K: Ord + Copy>(
    dev: &dyn ReadAt,
    bs: u64,
    items: impl IntoIterator<Item = (u64, K)>,
    mut f: impl FnMut(K, Option<&[u8]>, &mut Vec<(u64, K)>),
) {
    let mut waiting: BinaryHeap<Reverse<(u64, K)>> = items.into_iter().map(Reverse).collect();
    // Items pushed behind what was already read wait for another pass in order, rather than
    // sending the reader back (a stream would decode from its start once per such item).
    let mut behind: Vec<(u64, K)> = Vec::new();
    let max_run = (MAX_BATCH / bs).max(1);
    let mut run: Vec<(u64, K)> = Vec::new();
    let mut pushed: Vec<(u64, K)> = Vec::new();
    loop {
        let Some(Reverse(first)) = waiting.pop() else {
            if behind.is_empty() {
                return;
            }
            waiting.extend(behind.drain(..).map(Reverse));
            continue;
        };
        let start = first.0;
        run.clear();
        run.push(first);
        while let Some(&Reverse((b, _))) = waiting.peek() {
            let last = run[run.len() - 1].0;
            // Adjacent or repeated blocks join the run.
            if b > last.saturating_add(1) || b - start >= max_run {
                break;
            }
            if let Some(Reverse(item)) = waiting.pop() {
                run.push(item);
            }
        }
        let nblocks = run[run.len() - 1].0 - start + 1;
        let data = start
            .checked_mul(bs)
            .and_then(|off| dev.read_struct(off, (nblocks * bs) as usize).ok());
        for &(b, key) in &run {
            let piece = data.as_ref().map(|d| {
                let o = ((b - start) * bs) as usize;
                &d[o..o + bs as usize]
            });
            match piece {
                Some(p) => f(key, Some(p), &mut pushed),
                None => {
                    // The run failed (e.g. it reaches past a truncated volume): retry this
                    // block alone so one bad block does not condemn its neighbours.
                    let one = b
                        .checked_mul(bs)
                        .and_then(|off| dev.read_struct(off, bs as usize).ok());
                    f(key, one.as_deref(), &mut pushed);
                }
            }
        }
        for item in pushed.drain(..) {
            if item.0 < start {
                behind.push(item);
            } else {
                waiting.push(Reverse(item));
            }
        }
    }
}

/// Calls `f(start, end)` for each run of set bits among the first `nbits` bits of `bm`
/// (little-endian bit order, as ext bitmaps are). Bits past the buffer count as clear.
pub(super) fn bitmap_runs(bm: &[u8], nbits: u64, mut f: impl FnMut(u64, u64)) {
    let mut run: Option<u64> = None;
    let mut base = 0u64;
    for chunk in bm.chunks(8) {
        if base >= nbits {
            break;
        }
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let mut word = u64::from_le_bytes(w);
        let valid = (nbits - base).min(64);
        if valid < 64 {
            word &= (1u64 << valid) - 1;
        }
        let mut pos = 0u64;
        while pos < 64 {
            let rest = word >> pos;
            match run {
                None => {
                    if rest == 0 {
                        break;
                    }
                    pos += u64::from(rest.trailing_zeros());
                    run = Some(base + pos);
                }
                Some(s) => {
                    // Bits shifted in above the word are zeros; invert only real bits.
                    let inv = !rest & (u64::MAX >> pos);
                    if inv == 0 {
                        break;
                    }
                    pos += u64::from(inv.trailing_zeros());
                    f(s, base + pos);
                    run = None;
                }
            }
        }
        base += 64;
    }
    if let Some(s) = run {
        f(s, nbits.min(base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_reads_ahead_join_the_pass_and_those_behind_make_a_second_one() {
        let dev = crate::io::LoggedReads::new(vec![0u8; 64 * 1024]);
        let mut seen = Vec::new();
        read_in_order(&dev, 1024, [(20u64, 20u64), (10, 10)], |key, data, more| {
            assert!(data.is_some());
            seen.push(key);
            if key == 20 {
                // One ahead, two behind (adjacent: read together).
                more.extend([(40, 40), (6, 6), (5, 5)]);
            }
        });
        assert_eq!(seen, vec![10, 20, 40, 5, 6]);
        let reads = dev.offsets.lock().unwrap().clone();
        assert_eq!(reads, vec![10 * 1024, 20 * 1024, 40 * 1024, 5 * 1024]);
    }

    fn naive(bm: &[u8], nbits: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for i in 0..nbits {
            let set = bm
                .get((i / 8) as usize)
                .is_some_and(|b| b >> (i % 8) & 1 == 1);
            if set {
                match out.last_mut() {
                    Some(l) if l.1 == i => l.1 = i + 1,
                    _ => out.push((i, i + 1)),
                }
            }
        }
        out
    }

    #[test]
    fn bitmap_runs_match_naive() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for len in [0usize, 1, 7, 8, 9, 64, 65, 130, 1024] {
            for density in 0..4 {
                let bm: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        match density {
                            0 => 0,
                            1 => 0xFF,
                            2 => (x as u8) & (x >> 8) as u8,
                            _ => x as u8,
                        }
                    })
                    .collect();
                for nbits in [
                    0,
                    1,
                    5,
                    (len * 8) as u64,
                    (len * 8).saturating_sub(3) as u64,
                    len as u64 * 8 + 40,
                ] {
                    let mut got = Vec::new();
                    bitmap_runs(&bm, nbits, |a, b| got.push((a, b)));
                    assert_eq!(
                        got,
                        naive(&bm, nbits),
                        "len {len} density {density} nbits {nbits}"
                    );
                }
            }
        }
    }
}
