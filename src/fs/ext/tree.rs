//! The blocks an inode references: its extended-attribute block, and either its block map
//! (direct blocks, then indirect, double- and triple-indirect blocks) or its extent tree
//! (index and leaf nodes). The tree blocks themselves count as referenced.
//!
//! Tree blocks are not read one inode at a time: every inode first queues its roots, then
//! [`Walker::run`] reads the queue level by level, sorted and coalesced into large reads,
//! each block at most once (a block two inodes claim is walked once; its references are the
//! same either way). A cap on the number of tree blocks bounds the work on hostile images.

use std::collections::HashSet;

use super::bitmap::read_batched;
use super::inode::{Inode, BAD_BLOCKS_INO, RESIZE_INO};
use crate::extent::ExtentMap;
use crate::io::ReadAt;
use crate::util::{le16, le32};

const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on extent tree depth.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Extents longer than this are unwritten (preallocated): still allocated, so still used.
const INIT_MAX_LEN: u16 = 32768;
/// Recorded runs at which they are merged (bounds memory on a badly damaged filesystem).
const COMPACT_AT: usize = 1 << 20;

/// What a queued tree block is expected to hold.
#[derive(Clone, Copy, Debug)]
enum Node {
    /// An extent tree node at this depth (0 = leaf).
    Extent { depth: u16 },
    /// An indirect block: level 1 lists data blocks, 2 lists level-1 blocks, 3 level-2.
    Indirect { level: u8 },
}

/// Collects the blocks a set of inodes references.
pub(super) struct Walker<'a> {
    dev: &'a dyn ReadAt,
    bs: u64,
    /// First block a reference may name (`s_first_data_block`).
    first: u64,
    /// Blocks in the filesystem: references at or past it are invalid.
    end: u64,
    /// Blocks already known to be kept (the bitmaps' verdict, as far as it is known yet):
    /// references inside them need no record, which keeps memory small however large the
    /// filesystem.
    known: ExtentMap,
    /// The run being extended by adjacent additions.
    run: Option<(u64, u64)>,
    /// Referenced runs not wholly inside `known`, unsorted.
    refs: Vec<(u64, u64)>,
    pending: Vec<(u64, Node)>,
    seen: HashSet<u64>,
    cap: u64,
    /// Tree blocks read.
    pub(super) tree_blocks: u64,
    /// The cap was reached: some trees were not walked.
    pub(super) capped: bool,
    /// References outside the filesystem, ignored (as e2fsck ignores them).
    pub(super) invalid: u64,
    /// Tree blocks that were not a valid node, or could not be read.
    pub(super) bad_nodes: u64,
}

impl<'a> Walker<'a> {
    /// A walker over a filesystem of `end` blocks of `bs` bytes whose data blocks start at
    /// `first`, reading at most `cap` tree blocks. References wholly inside `known` (block
    /// numbers) are not recorded.
    pub(super) fn new(
        dev: &'a dyn ReadAt,
        bs: u64,
        first: u64,
        end: u64,
        cap: u64,
        known: ExtentMap,
    ) -> Self {
        Walker {
            dev,
            bs,
            first,
            end,
            known,
            run: None,
            refs: Vec::new(),
            pending: Vec::new(),
            seen: HashSet::new(),
            cap,
            tree_blocks: 0,
            capped: false,
            invalid: 0,
            bad_nodes: 0,
        }
    }

    /// Queues everything inode `ino` references. Its tree blocks are read by [`Self::run`].
    pub(super) fn inode(&mut self, ino: u64, inode: &Inode) {
        if inode.file_acl != 0 {
            self.add(inode.file_acl, 1);
        }
        if ino == BAD_BLOCKS_INO {
            // Mode 0, but its block map lists the bad blocks (and its indirect blocks).
            self.block_map(&inode.i_block);
            return;
        }
        if !inode.has_block_map() {
            return;
        }
        if ino == RESIZE_INO && !inode.uses_extents() {
            // Its tree is the reserved GDT blocks, kept with each superblock copy; like
            // e2fsck, take its own blocks (the double-indirect one) and do not descend.
            for c in inode.i_block.chunks_exact(4) {
                let b = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                if b != 0 {
                    self.add(b, 1);
                }
            }
            return;
        }
        if inode.uses_extents() {
            self.extent_node(&inode.i_block, None);
        } else {
            self.block_map(&inode.i_block);
        }
    }

    /// Reads queued tree blocks until none are left (or the cap is reached).
    pub(super) fn run(&mut self) {
        let dev = self.dev;
        let bs = self.bs;
        while !self.pending.is_empty() {
            let mut batch = std::mem::take(&mut self.pending);
            let room = self.cap.saturating_sub(self.tree_blocks);
            if batch.len() as u64 > room {
                batch.truncate(room as usize);
                self.capped = true;
            }
            self.tree_blocks += batch.len() as u64;
            let mut items: Vec<(u64, u64)> = (0u64..)
                .zip(batch.iter())
                .map(|(k, &(b, _))| (b, k))
                .collect();
            read_batched(dev, bs, &mut items, |k, data| {
                let node = batch[k as usize].1;
                match (data, node) {
                    (None, _) => self.bad_nodes += 1,
                    (Some(d), Node::Extent { depth }) => self.extent_node(d, Some(depth)),
                    (Some(d), Node::Indirect { level }) => self.indirect(d, level),
                }
            });
            if self.capped {
                self.pending.clear();
            }
        }
    }

    /// Runs recorded so far.
    pub(super) fn recorded(&self) -> usize {
        self.refs.len()
    }

    /// Takes `known`, a larger map of kept blocks than the one given so far (more bitmaps
    /// have been read), and drops the recorded runs now wholly inside it.
    pub(super) fn learn(&mut self, known: ExtentMap) {
        self.flush();
        self.known = known;
        let k = &self.known;
        self.refs.retain(|&(s, e)| k.covered(s, e) < e - s);
    }

    /// The referenced block runs not wholly inside `known`, unsorted, possibly overlapping.
    pub(super) fn into_refs(mut self) -> Vec<(u64, u64)> {
        self.flush();
        self.refs
    }

    fn flush(&mut self) {
        if let Some((s, e)) = self.run.take() {
            if self.known.covered(s, e) < e - s {
                self.refs.push((s, e));
                if self.refs.len() >= COMPACT_AT {
                    // Heavy damage: merge what was found so far to bound memory.
                    let m = ExtentMap::from_ranges(self.refs.drain(..));
                    self.refs.extend(m.iter().map(|x| (x.start, x.end)));
                }
            }
        }
    }

    /// Records `len` blocks from `start`, clipped to the filesystem.
    fn add(&mut self, start: u64, len: u64) {
        let e = start.saturating_add(len);
        let (s, e2) = (start.max(self.first), e.min(self.end));
        if s != start || e2 != e {
            self.invalid += 1;
        }
        if s >= e2 {
            return;
        }
        match &mut self.run {
            Some(r) if r.1 == s => r.1 = e2,
            _ => {
                self.flush();
                self.run = Some((s, e2));
            }
        }
    }

    /// A tree block: referenced itself, and read later unless already seen.
    fn queue(&mut self, b: u64, node: Node) {
        if b < self.first || b >= self.end {
            self.invalid += 1;
            return;
        }
        self.add(b, 1);
        if self.seen.insert(b) {
            self.pending.push((b, node));
        }
    }

    fn block_map(&mut self, ib: &[u8]) {
        for i in 0..12 {
            let b = u64::from(le32(ib, i * 4).unwrap_or(0));
            if b != 0 {
                self.add(b, 1);
            }
        }
        for (i, level) in [(12, 1u8), (13, 2), (14, 3)] {
            let b = u64::from(le32(ib, i * 4).unwrap_or(0));
            if b != 0 {
                self.queue(b, Node::Indirect { level });
            }
        }
    }

    fn indirect(&mut self, buf: &[u8], level: u8) {
        for c in buf.chunks_exact(4) {
            let b = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            if b == 0 {
                continue;
            }
            if level <= 1 {
                self.add(b, 1);
            } else {
                self.queue(b, Node::Indirect { level: level - 1 });
            }
        }
    }

    /// An extent node: the 60-byte root in the inode (`expect` = None) or a tree block that
    /// its parent says sits at depth `expect`.
    fn extent_node(&mut self, buf: &[u8], expect: Option<u16>) {
        let g16 = |o| le16(buf, o).unwrap_or(0);
        let (magic, entries, depth) = (g16(0), g16(2), g16(6));
        let bad =
            magic != EXTENT_MAGIC || depth > MAX_EXTENT_DEPTH || expect.is_some_and(|d| d != depth);
        if bad {
            // Nothing here can be trusted to name blocks; e2fsck would clear the inode.
            self.bad_nodes += 1;
            return;
        }
        // Entry counts beyond the node are clipped rather than refused: walking what is
        // there can only keep more.
        let body = buf.get(12..).unwrap_or_default();
        let n = usize::from(entries).min(body.len() / 12);
        for e in body[..n * 12].chunks_exact(12) {
            if depth == 0 {
                let raw_len = le16(e, 4).unwrap_or(0);
                let len = if raw_len > INIT_MAX_LEN {
                    raw_len - INIT_MAX_LEN
                } else {
                    raw_len
                };
                let start =
                    u64::from(le32(e, 8).unwrap_or(0)) | u64::from(le16(e, 6).unwrap_or(0)) << 32;
                if len > 0 {
                    self.add(start, u64::from(len));
                }
            } else {
                let leaf =
                    u64::from(le32(e, 4).unwrap_or(0)) | u64::from(le16(e, 8).unwrap_or(0)) << 32;
                self.queue(leaf, Node::Extent { depth: depth - 1 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    const BS: usize = 1024;

    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put16(b: &mut [u8], o: usize, v: u16) {
        b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn header(b: &mut [u8], entries: u16, max: u16, depth: u16) {
        put16(b, 0, EXTENT_MAGIC);
        put16(b, 2, entries);
        put16(b, 4, max);
        put16(b, 6, depth);
    }
    fn inode(i_block: &[u8], flags: u32) -> Inode {
        let mut r = vec![0u8; 128];
        put16(&mut r, 0, 0o100644);
        put16(&mut r, 0x1A, 1);
        put32(&mut r, 0x20, flags);
        r[0x28..0x28 + i_block.len()].copy_from_slice(i_block);
        Inode::parse(&r, false).unwrap()
    }
    fn refs(w: Walker) -> ExtentMap {
        ExtentMap::from_ranges(w.into_refs())
    }

    #[test]
    fn block_map_with_all_indirection_levels() {
        let mut img = vec![0u8; 64 * BS];
        // IND at 10 -> 11, 12; DIND at 20 -> IND 21 -> 22; TIND at 30 -> 31 -> 32 -> 33.
        put32(&mut img, 10 * BS, 11);
        put32(&mut img, 10 * BS + 4, 12);
        put32(&mut img, 20 * BS, 21);
        put32(&mut img, 21 * BS, 22);
        put32(&mut img, 30 * BS, 31);
        put32(&mut img, 31 * BS, 32);
        put32(&mut img, 32 * BS, 33);
        let mut ib = [0u8; 60];
        put32(&mut ib, 0, 5);
        put32(&mut ib, 4, 6);
        put32(&mut ib, 44, 99); // past the end: ignored
        put32(&mut ib, 48, 10);
        put32(&mut ib, 52, 20);
        put32(&mut ib, 56, 30);
        let src = MemSource(img);
        let mut w = Walker::new(&src, BS as u64, 1, 64, 100, ExtentMap::new());
        w.inode(12, &inode(&ib, 0));
        w.run();
        assert_eq!(w.invalid, 1);
        assert_eq!(w.tree_blocks, 6);
        let want = ExtentMap::from_ranges([(5, 7), (10, 13), (20, 23), (30, 34)]);
        assert_eq!(refs(w), want);
    }

    #[test]
    fn extent_tree_two_levels_and_unwritten_extents() {
        let mut img = vec![0u8; 64 * BS];
        // Leaf at block 8: extents 20..24 (written) and 40..42 (unwritten).
        let leaf = &mut img[8 * BS..9 * BS];
        header(leaf, 2, 84, 0);
        put16(leaf, 12 + 4, 4);
        put32(leaf, 12 + 8, 20);
        put16(leaf, 24 + 4, INIT_MAX_LEN + 2);
        put32(leaf, 24 + 8, 40);
        let mut ib = [0u8; 60];
        header(&mut ib, 1, 4, 1);
        put32(&mut ib, 12 + 4, 8);
        let src = MemSource(img);
        let mut w = Walker::new(&src, BS as u64, 1, 64, 100, ExtentMap::new());
        w.inode(12, &inode(&ib, 0x8_0000));
        w.run();
        assert_eq!(
            refs(w),
            ExtentMap::from_ranges([(8, 9), (20, 24), (40, 42)])
        );
    }

    #[test]
    fn loops_and_wrong_depths_terminate() {
        let mut img = vec![0u8; 16 * BS];
        // An index node at block 3 pointing at itself, claiming depth 1 each time.
        header(&mut img[3 * BS..], 1, 84, 1);
        put32(&mut img, 3 * BS + 12 + 4, 3);
        // An indirect block listing itself as a level-1 block.
        put32(&mut img, 5 * BS, 5);
        let mut ib = [0u8; 60];
        header(&mut ib, 1, 4, 2);
        put32(&mut ib, 12 + 4, 3);
        let src = MemSource(img);
        let mut w = Walker::new(&src, BS as u64, 1, 16, 100, ExtentMap::new());
        w.inode(12, &inode(&ib, 0x8_0000));
        let mut ib2 = [0u8; 60];
        put32(&mut ib2, 52, 5); // DIND at 5, whose entry 5 is then read as an IND
        w.inode(13, &inode(&ib2, 0));
        w.run();
        assert!(w.tree_blocks <= 2, "{}", w.tree_blocks);
        assert!(!w.capped);
    }

    #[test]
    fn references_inside_the_known_map_are_not_recorded() {
        let mut ib = [0u8; 60];
        for (i, b) in [5u32, 6, 7, 20, 21].iter().enumerate() {
            put32(&mut ib, i * 4, *b);
        }
        let src = MemSource(vec![0u8; 64 * BS]);
        let known = ExtentMap::from_ranges([(0, 10)]);
        let mut w = Walker::new(&src, BS as u64, 1, 64, 100, known);
        w.inode(12, &inode(&ib, 0));
        assert_eq!(w.into_refs(), vec![(20, 22)]);
    }

    #[test]
    fn cap_stops_the_walk() {
        let mut img = vec![0u8; 64 * BS];
        for b in 10..40u32 {
            put32(&mut img, 10 * BS + (b as usize - 10) * 4, b + 1);
        }
        let mut ib = [0u8; 60];
        put32(&mut ib, 52, 10); // DIND at 10 lists 30 IND blocks
        let src = MemSource(img);
        let mut w = Walker::new(&src, BS as u64, 1, 64, 5, ExtentMap::new());
        w.inode(12, &inode(&ib, 0));
        w.run();
        assert!(w.capped);
        assert_eq!(w.tree_blocks, 5);
    }
}
