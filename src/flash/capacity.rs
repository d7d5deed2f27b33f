//! `--check-capacity`: find counterfeit cards before flashing them.
//!
//! A fake card reports more capacity than it has: writes past its real size wrap around onto
//! lower addresses (its controller ignores the high address bits) or are dropped, and a flash
//! onto it "succeeds" with a filesystem that loses data later. [`check_capacity`] writes a
//! distinct pattern to a few blocks spread over the whole reported size, reads them back and
//! compares: a wrapped block shows another block's pattern (each pattern names its offset and a
//! nonce of this run), a dropped one shows anything else. Every block's original bytes are read
//! first and written back at the end, so the check leaves the target as it was. (A check cut
//! short leaves patterns in the probed blocks, the target's first one among them: like an
//! interrupted flash, a card with no partition table.)
//!
//! It is a quick probe, not a surface test: the blocks are the first and last of the target,
//! one at every power of two from 1 MiB, and three between the highest power of two and the
//! end. Cards that drop writes past their real size, and cards that wrap at a power of two
//! (the usual kind), are caught; a card that wraps at another size may pass (f3probe or
//! h2testw write every block).

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use crate::io::{ReadAt, ReadAtExt, WriteAt};
use crate::util::human_bytes;

/// The lowest power of two probed; below it only the target's first block is.
const FIRST_POWER: u64 = 1 << 20;

/// Smallest and largest probe block (every block's original bytes are held: at most 49 of
/// them, on a disk of 2^64 bytes).
const BLOCK_RANGE: std::ops::RangeInclusive<u64> = 512..=(1 << 20);

/// Marks a block written by this check (the nonce and offset follow it).
const MAGIC: &[u8; 8] = b"BWCAPCHK";

/// Probe blocks between the highest power of two below the size and the size, both
/// excluded.
const NEAR_END: u64 = 3;

/// What the capacity check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Every probe read back what was written to it.
    pub ok: bool,
    /// Blocks written and read back.
    pub probes: usize,
    /// The lowest offset whose block did not keep its own pattern: the card holds at most
    /// this many bytes. Of blocks that share storage (each shows the pattern of the last one
    /// written), the lowest is taken as real and the others as bad.
    pub first_bad: Option<u64>,
    /// The offset whose pattern was found at `first_bad` (or whose storage it shares): where
    /// writes to `first_bad` land. `None` when the write was simply lost.
    pub aliased_to: Option<u64>,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first_bad, self.aliased_to) {
            (None, _) => write!(
                f,
                "capacity checked: {} blocks across the card read back as written",
                self.probes
            ),
            (Some(bad), Some(to)) => write!(
                f,
                "the card is fake: what is written at {} reappears at {}; its real capacity is \
                 at most {}",
                human_bytes(bad),
                if to == 0 {
                    "its start".to_string()
                } else {
                    human_bytes(to)
                },
                human_bytes(bad)
            ),
            (Some(bad), None) => write!(
                f,
                "the card is fake: writes at {} do not read back; its real capacity is at most {}",
                human_bytes(bad),
                human_bytes(bad)
            ),
        }
    }
}

/// Checks that a target of `size` bytes (what it reports) really holds that much, probing
/// blocks of `block` bytes (a power of two from 512 bytes to 1 MiB, at least the target's
/// logical sector size). Writes patterns, syncs ([`WriteAt::sync`]), reads them back, then
/// writes every block's original bytes back and syncs again.
///
/// `t` must be opened so that reads reach the medium (`O_DIRECT` for a device, as for
/// [`read_back`](super::read_back)): read through a cache, every block reads back what was
/// written and the check proves nothing.
///
/// A failing read, write or sync is an error (after the blocks written so far are restored, as
/// far as the target lets them be); a restore that fails is an error that says where a test
/// pattern may be left.
pub fn check_capacity<T: ReadAt + WriteAt + ?Sized>(
    t: &mut T,
    size: u64,
    block: u64,
) -> crate::Result<Capacity> {
    if !block.is_power_of_two() || !BLOCK_RANGE.contains(&block) {
        return Err(crate::Error::Unsupported(format!(
            "--check-capacity: a probe block of {block} bytes (a power of two from 512 bytes to 1 MiB)"
        )));
    }
    if size < block {
        return Err(crate::Error::Unsupported(format!(
            "--check-capacity: the target ({size} bytes) is smaller than one probe block ({block} bytes)"
        )));
    }
    let offsets = probe_offsets(size, block);
    let len = block as usize; // at most 1 MiB
    let nonce = nonce();

    // The original bytes of every block, before anything is written.
    let mut originals = Vec::with_capacity(offsets.len());
    for &at in &offsets {
        originals.push(read_block(t, at, len)?);
    }

    // Patterns, written in ascending order; `written` blocks are restored whatever happens.
    let mut written = 0;
    let mut failure = None;
    for &at in &offsets {
        written += 1; // a failed write may have changed part of the block
        if let Err(e) = t.write_all_at(at, &pattern(nonce, at, len)) {
            failure = Some(context(e, "writing a test pattern", at));
            break;
        }
    }
    if failure.is_none() {
        if let Err(e) = t.sync() {
            failure = Some(context(e, "syncing the test patterns", 0));
        }
    }
    let mut found = Vec::new();
    if failure.is_none() {
        for &at in &offsets {
            match read_block(t, at, len) {
                Ok(back) => found.push(whose(&back, nonce, len)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }

    let restored = restore(t, &offsets[..written], &originals[..written]);
    match (failure, restored) {
        (None, Ok(())) => Ok(judge(&offsets, &found)),
        (Some(e), Ok(())) | (None, Err(e)) => Err(e),
        (Some(e), Err(r)) => Err(crate::Error::Io(io::Error::other(format!(
            "{}; and then {}",
            e.chain(),
            r.chain()
        )))),
    }
}

/// The probed offsets, ascending and disjoint, each `block` bytes inside `size`: the first
/// block, every power of two from [`FIRST_POWER`] below the size (aligned down to the block),
/// [`NEAR_END`] evenly between the highest of them and the end, and the last block.
fn probe_offsets(size: u64, block: u64) -> Vec<u64> {
    let align = |x: u64| x / block * block;
    let mut all = vec![0];
    let mut top = 0;
    let mut p = FIRST_POWER;
    while p < size {
        all.push(align(p));
        top = p;
        match p.checked_mul(2) {
            Some(n) => p = n,
            None => break,
        }
    }
    let step = (size - top) / (NEAR_END + 1);
    for j in 1..=NEAR_END {
        if let Some(at) = step.checked_mul(j).and_then(|s| top.checked_add(s)) {
            all.push(align(at));
        }
    }
    // Aligned and distinct, they are disjoint; the last block (maybe unaligned) is kept and
    // whatever overlaps it is not.
    let last = size - block;
    all.sort_unstable();
    all.dedup();
    all.retain(|&at| at.checked_add(block).is_some_and(|end| end <= last));
    all.push(last);
    all
}

/// Which blocks failed, from whose pattern each read back ([`whose`]): those that read back
/// another probe's pattern share its storage (the lowest of each such group is taken as real),
/// those that read back anything else lost their write.
fn judge(offsets: &[u64], found: &[Option<u64>]) -> Capacity {
    // Each probe's group, named by its lowest member.
    let mut group: BTreeMap<u64, u64> = offsets.iter().map(|&o| (o, o)).collect();
    let mut lost = Vec::new();
    for (&at, &back) in offsets.iter().zip(found) {
        match back {
            Some(o) if o == at => {}
            Some(o) if group.contains_key(&o) => {
                let (a, b) = (root(&group, at), root(&group, o));
                let (lo, hi) = (a.min(b), a.max(b));
                group.insert(hi, lo);
            }
            _ => lost.push(at),
        }
    }
    // (bad offset, where it lands)
    let mut bad: Vec<(u64, Option<u64>)> = lost.into_iter().map(|o| (o, None)).collect();
    for &o in offsets {
        let r = root(&group, o);
        if r != o {
            bad.push((o, Some(r)));
        }
    }
    let first = bad.into_iter().min();
    Capacity {
        ok: first.is_none(),
        probes: offsets.len(),
        first_bad: first.map(|(o, _)| o),
        aliased_to: first.and_then(|(_, to)| to),
    }
}

/// The lowest member of `o`'s group.
fn root(group: &BTreeMap<u64, u64>, mut o: u64) -> u64 {
    // Links only ever point lower, so this ends.
    while let Some(&up) = group.get(&o) {
        if up == o {
            break;
        }
        o = up;
    }
    o
}

/// The offset whose pattern of this run `back` is, exactly; `None` for anything else.
fn whose(back: &[u8], nonce: u64, len: usize) -> Option<u64> {
    if back.get(..8)? != MAGIC || crate::util::le64(back, 8)? != nonce {
        return None;
    }
    let at = crate::util::le64(back, 16)?;
    (back == pattern(nonce, at, len).as_slice()).then_some(at)
}

/// The block written at `at`: [`MAGIC`], the nonce and the offset, then bytes that depend on
/// all of them (so no two blocks of a run and no two runs look alike).
fn pattern(nonce: u64, at: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    let mut x = nonce ^ at.rotate_left(32);
    while out.len() < len {
        x = splitmix64(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One step of SplitMix64: a well-mixed 64-bit sequence.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value no earlier run used: the standard library's per-process random hash keys, mixed
/// with the time.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// Reads the `len`-byte block at `at`.
fn read_block<T: ReadAt + ?Sized>(t: &T, at: u64, len: usize) -> crate::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    t.read_exact_at(at, &mut buf)
        .map_err(|source| crate::Error::Read {
            offset: at,
            len: len as u64,
            source,
        })?;
    Ok(buf)
}

/// Writes the original bytes back, last written first, and syncs.
fn restore<T: WriteAt + ?Sized>(
    t: &mut T,
    offsets: &[u64],
    originals: &[Vec<u8>],
) -> crate::Result<()> {
    let mut failed = Vec::new();
    let mut first_error = None;
    for (&at, bytes) in offsets.iter().zip(originals).rev() {
        if let Err(e) = t.write_all_at(at, bytes) {
            failed.push(at);
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = t.sync() {
        failed.extend_from_slice(offsets);
        first_error.get_or_insert(e);
    }
    match first_error {
        None => Ok(()),
        Some(e) => {
            failed.sort_unstable();
            failed.dedup();
            let list: Vec<String> = failed.iter().map(u64::to_string).collect();
            Err(crate::Error::Io(io::Error::new(
                e.kind(),
                format!(
                    "--check-capacity: restoring the probed blocks failed ({e}); a test pattern may be left at byte {}",
                    list.join(", ")
                ),
            )))
        }
    }
}

/// An I/O error that says what was being done, and where.
fn context(e: io::Error, what: &str, at: u64) -> crate::Error {
    crate::Error::Io(io::Error::new(
        e.kind(),
        format!("--check-capacity: {what} at byte {at}: {e}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const PAGE: u64 = 4096;

    /// How a mock card treats addresses past its real size.
    #[derive(Clone, Copy)]
    enum Past {
        /// Modulo the real size, for reads and writes alike.
        Wrap,
        /// Writes dropped, reads zero.
        Drop,
    }

    /// A card reporting `claimed` bytes and holding `real`, stored sparsely in pages (missing
    /// pages read as zeros).
    struct Card {
        pages: Mutex<BTreeMap<u64, Vec<u8>>>,
        claimed: u64,
        real: u64,
        past: Past,
        syncs: usize,
    }

    impl Card {
        fn new(claimed: u64, real: u64, past: Past) -> Card {
            Card {
                pages: Mutex::new(BTreeMap::new()),
                claimed,
                real,
                past,
                syncs: 0,
            }
        }

        /// Where byte `addr` is kept, if anywhere.
        fn physical(&self, addr: u64) -> Option<u64> {
            match self.past {
                _ if addr < self.real => Some(addr),
                Past::Wrap => Some(addr % self.real),
                Past::Drop => None,
            }
        }

        /// The stored bytes, without all-zero pages.
        fn snapshot(&self) -> BTreeMap<u64, Vec<u8>> {
            let p = self.pages.lock().unwrap();
            p.iter()
                .filter(|(_, v)| v.iter().any(|&b| b != 0))
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        }
    }

    impl ReadAt for Card {
        fn size(&self) -> u64 {
            self.claimed
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.claimed.saturating_sub(offset)) as usize;
            let pages = self.pages.lock().unwrap();
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self
                    .physical(offset + i as u64)
                    .and_then(|a| pages.get(&(a / PAGE)).map(|p| p[(a % PAGE) as usize]))
                    .unwrap_or(0);
            }
            Ok(n)
        }
    }

    impl WriteAt for Card {
        fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            let pages = self.pages.get_mut().unwrap();
            for (i, &b) in buf.iter().enumerate() {
                let addr = offset + i as u64;
                if addr >= self.claimed {
                    return Err(io::Error::other("past the end"));
                }
                let a = match self.past {
                    _ if addr < self.real => addr,
                    Past::Wrap => addr % self.real,
                    Past::Drop => continue,
                };
                pages
                    .entry(a / PAGE)
                    .or_insert_with(|| vec![0; PAGE as usize])[(a % PAGE) as usize] = b;
            }
            Ok(())
        }
        fn set_len(&mut self, _len: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.syncs += 1;
            Ok(())
        }
    }

    /// Fills a few pages of `card` with recognisable bytes: the "previous contents".
    fn fill(card: &mut Card, at: &[u64]) {
        for &a in at {
            let bytes: Vec<u8> = (0..PAGE * 2).map(|i| (i as u8) ^ (a as u8) | 1).collect();
            card.write_all_at(a, &bytes).unwrap();
        }
    }

    #[test]
    fn an_honest_card_passes_and_is_left_as_it_was() {
        let size = (3 << 30) + 5 * PAGE + 100; // not a power of two, not block-aligned
        let mut card = Card::new(size, size, Past::Wrap);
        fill(
            &mut card,
            &[0, 1 << 20, 1 << 30, (2 << 30) + 12345, size - 2 * PAGE],
        );
        let before = card.snapshot();
        let c = check_capacity(&mut card, size, PAGE).unwrap();
        assert!(
            c.ok && c.first_bad.is_none() && c.aliased_to.is_none(),
            "{c:?}"
        );
        // 0, 1 MiB .. 2 GiB (12 powers), 3 between 2 GiB and the end, the last block.
        assert_eq!(c.probes, 1 + 12 + 3 + 1);
        assert_eq!(card.snapshot(), before);
        assert_eq!(card.syncs, 2);
        assert!(
            c.to_string().starts_with("capacity checked: 17 blocks"),
            "{c}"
        );
    }

    #[test]
    fn a_card_that_wraps_is_caught_where_it_wraps() {
        let mut card = Card::new(16 << 30, 8 << 30, Past::Wrap);
        fill(&mut card, &[0, 4096 * 7, 4 << 30]);
        let before = card.snapshot();
        let c = check_capacity(&mut card, 16 << 30, PAGE).unwrap();
        assert!(!c.ok);
        assert_eq!((c.first_bad, c.aliased_to), (Some(8 << 30), Some(0)));
        assert_eq!(
            c.to_string(),
            "the card is fake: what is written at 8.0 GiB reappears at its start; its real capacity is at most 8.0 GiB"
        );
        // The wrapped writes landed on real blocks; those were put back.
        assert_eq!(card.snapshot(), before);
    }

    #[test]
    fn a_card_that_drops_writes_is_caught_at_the_first_lost_block() {
        let mut card = Card::new(16 << 30, 12 << 30, Past::Drop);
        fill(&mut card, &[0, 1 << 20]);
        let before = card.snapshot();
        let c = check_capacity(&mut card, 16 << 30, 64 << 10).unwrap();
        assert_eq!(
            (c.ok, c.first_bad, c.aliased_to),
            (false, Some(12 << 30), None)
        );
        assert_eq!(
            c.to_string(),
            "the card is fake: writes at 12.0 GiB do not read back; its real capacity is at most 12.0 GiB"
        );
        assert_eq!(card.snapshot(), before);
    }

    #[test]
    fn probes_are_disjoint_and_inside() {
        for (size, block) in [
            (4096, 4096),
            (10_000, 4096),
            (5 << 20, 1 << 20),
            (u64::MAX, 4096),
        ] {
            let o = probe_offsets(size, block);
            assert!(!o.is_empty());
            assert!(o.windows(2).all(|w| w[0] + block <= w[1]), "{size}: {o:?}");
            assert!(o.iter().all(|&a| a + block <= size));
            assert_eq!(*o.last().unwrap(), size - block);
        }
        assert_eq!(probe_offsets(10_000, 4096), [0, 10_000 - 4096]);
    }

    #[test]
    fn bad_arguments_and_failing_targets_are_errors() {
        let mut card = Card::new(1 << 20, 1 << 20, Past::Wrap);
        assert!(check_capacity(&mut card, 1 << 20, 1000).is_err());
        assert!(check_capacity(&mut card, 256, 512).is_err());
        // A target that fails a write: the blocks written before it are restored.
        struct Failing(Card, u64);
        impl ReadAt for Failing {
            fn size(&self) -> u64 {
                self.0.size()
            }
            fn read_at(&self, o: u64, b: &mut [u8]) -> io::Result<usize> {
                self.0.read_at(o, b)
            }
        }
        impl WriteAt for Failing {
            fn write_all_at(&mut self, o: u64, b: &[u8]) -> io::Result<()> {
                if o == self.1 {
                    return Err(io::Error::other("bad sector"));
                }
                self.0.write_all_at(o, b)
            }
            fn set_len(&mut self, _: u64) -> io::Result<()> {
                Ok(())
            }
        }
        let mut f = Failing(Card::new(64 << 20, 64 << 20, Past::Wrap), 8 << 20);
        fill(&mut f.0, &[0, 1 << 20]);
        let before = f.0.snapshot();
        let e = check_capacity(&mut f, 64 << 20, PAGE)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--check-capacity: writing a test pattern at byte 8388608: bad sector; and then --check-capacity: restoring the probed blocks failed (bad sector); a test pattern may be left at byte 8388608"),
            "{e}"
        );
        assert_eq!(f.0.snapshot(), before);
    }
}
