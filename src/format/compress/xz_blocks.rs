//! Random access to multi-block xz files: the index at the end of every stream lists each
//! block's sizes, and blocks are independent, so a read decodes only the blocks it touches.
//! Our own backups are made this way, and so are the files of multi-threaded `xz -T0`.
//!
//! Supported: LZMA2-only filter chains, checks none/CRC32/CRC64/SHA-256, several streams and
//! stream padding. Anything else, or a block larger than [`MAX_BLOCK`], makes [`XzBlocks::open`]
//! decline so the caller streams the file instead.

use std::io;
use std::sync::Arc;

use liblzma::stream::{Action, Filters, Status, Stream};
use sha2::{Digest, Sha256};

use crate::format::frames::{read_through_frames, FrameCache};
use crate::io::{Caps, ReadAt, ReadAtExt};
use crate::util::le32;

/// Largest block decoded into memory; files with larger blocks are streamed.
pub(crate) const MAX_BLOCK: u64 = 64 << 20;
/// Decoded blocks kept.
const CACHED_BLOCKS: usize = 8;
/// Largest index read (each record is a few bytes).
const MAX_INDEX: u64 = 16 << 20;
/// Most streams walked in one file.
const MAX_STREAMS: usize = 100_000;

/// One block as the index describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// Offset of the block header in the file.
    pub(crate) comp_off: u64,
    /// Header + compressed data + check, without padding.
    pub(crate) unpadded: u64,
    /// Decoded offset.
    pub(crate) out_off: u64,
    /// Decoded size.
    pub(crate) out_len: u64,
    /// Check type of its stream (0 none, 1 CRC32, 4 CRC64, 10 SHA-256).
    pub(crate) check: u8,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return None;
            }
            return Some(v);
        }
    }
    None
}

fn check_size(check: u8) -> Option<u64> {
    match check {
        0 => Some(0),
        1 => Some(4),
        4 => Some(8),
        10 => Some(32),
        _ => None,
    }
}

/// The block table of an xz file from its stream footers and indexes (reading a few KiB at
/// the end of each stream). `None` if the structure does not add up.
pub(crate) fn block_table(src: &dyn ReadAt) -> io::Result<Option<Vec<Block>>> {
    let mut end = src.size();
    let mut streams: Vec<Vec<Block>> = Vec::new();
    while end > 0 {
        // Stream padding: zero bytes in multiples of four between and after streams.
        loop {
            if end < 4 {
                return Ok(None);
            }
            if src.read_vec(end - 4, 4)? == [0, 0, 0, 0] {
                end -= 4;
            } else {
                break;
            }
        }
        let Some((start, blocks)) = stream_ending_at(src, end)? else {
            return Ok(None);
        };
        streams.push(blocks);
        if streams.len() > MAX_STREAMS {
            return Ok(None);
        }
        end = start;
    }
    let mut out: Vec<Block> = streams.into_iter().rev().flatten().collect();
    let mut pos = 0u64;
    for b in &mut out {
        b.out_off = pos;
        let Some(p) = pos.checked_add(b.out_len) else {
            return Ok(None);
        };
        pos = p;
    }
    Ok(Some(out))
}

/// The stream whose footer ends at `end`: where it starts, and its blocks (decoded offsets
/// left at 0 for the caller). `None` if footer, index and header do not agree.
fn stream_ending_at(src: &dyn ReadAt, end: u64) -> io::Result<Option<(u64, Vec<Block>)>> {
    if end < 24 {
        return Ok(None);
    }
    let foot = src.read_vec(end - 12, 12)?;
    if foot.get(10..12) != Some(b"YZ")
        || crc32fast::hash(&foot[4..10]) != le32(&foot, 0).unwrap_or(0)
        || foot[8] != 0
    {
        return Ok(None);
    }
    let check = foot[9] & 0x0F;
    let backward = (u64::from(le32(&foot, 4).unwrap_or(0)) + 1) * 4;
    if backward > MAX_INDEX {
        return Ok(None);
    }
    let Some(index_start) = (end - 12).checked_sub(backward) else {
        return Ok(None);
    };
    let idx = src.read_vec(index_start, backward as usize)?;
    let Some((recs, blocks_len)) = index_records(&idx, check) else {
        return Ok(None);
    };
    let Some(stream_start) = index_start
        .checked_sub(blocks_len)
        .and_then(|s| s.checked_sub(12))
    else {
        return Ok(None);
    };
    let head = src.read_vec(stream_start, 12)?;
    if !head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) || head.get(6..8) != foot.get(8..10) {
        return Ok(None);
    }
    let blocks = recs
        .into_iter()
        .map(|r| Block {
            comp_off: stream_start + 12 + r.off,
            unpadded: r.unpadded,
            out_off: 0,
            out_len: r.unc,
            check,
        })
        .collect();
    Ok(Some((stream_start, blocks)))
}

/// One block as an index record gives it.
struct Record {
    /// Offset of the block in its stream's blocks.
    off: u64,
    /// Header + compressed data + check, without padding.
    unpadded: u64,
    /// Decoded size.
    unc: u64,
}

/// The records of an index and the blocks' total padded size; `None` if the index is
/// malformed.
fn index_records(idx: &[u8], check: u8) -> Option<(Vec<Record>, u64)> {
    // Unknown check types still have a size (xz's table); XzBlocks declines them.
    let csize = if check == 0 {
        0
    } else {
        4u64 << ((check - 1) / 3)
    };
    let body = idx.len() - 4;
    if idx[0] != 0 || crc32fast::hash(&idx[..body]) != le32(idx, body).unwrap_or(0) {
        return None;
    }
    let mut p = 1usize;
    let count = varint(idx, &mut p)?;
    // Each record takes at least 2 bytes: the count is bounded by the index we read.
    if count > (body as u64) / 2 {
        return None;
    }
    let mut recs = Vec::with_capacity(count as usize);
    let mut blocks_len: u64 = 0;
    for _ in 0..count {
        let (unpadded, unc) = (varint(idx, &mut p)?, varint(idx, &mut p)?);
        if p > body || unpadded < 8 + csize {
            return None;
        }
        let padded = unpadded.checked_add(3)? & !3;
        recs.push(Record {
            off: blocks_len,
            unpadded,
            unc,
        });
        blocks_len = blocks_len.checked_add(padded)?;
    }
    Some((recs, blocks_len))
}

/// A multi-block xz file as a random-access source.
pub(crate) struct XzBlocks {
    src: Arc<dyn ReadAt>,
    blocks: Vec<Block>,
    size: u64,
    /// Preferred read size: the typical block.
    chunk: u64,
    cache: FrameCache,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// LZMA2 properties byte of a block header, if the chain is LZMA2 alone.
fn parse_header(h: &[u8], b: &Block) -> Result<(u8, u64), String> {
    let hlen = h.len();
    if crc32fast::hash(&h[..hlen - 4]) != le32(h, hlen - 4).unwrap_or(0) {
        return Err("block header CRC32 mismatch".into());
    }
    let flags = h[1];
    if flags & 0x3C != 0 {
        return Err("reserved block flags set".into());
    }
    let mut p = 2usize;
    let mut comp = None;
    if flags & 0x40 != 0 {
        comp = Some(varint(h, &mut p).ok_or("bad compressed size")?);
    }
    if flags & 0x80 != 0 {
        let unc = varint(h, &mut p).ok_or("bad uncompressed size")?;
        if unc != b.out_len {
            return Err(format!("block says {unc} bytes, index says {}", b.out_len));
        }
    }
    if flags & 0x03 != 0 {
        return Err("filter chain other than LZMA2 alone".into());
    }
    let id = varint(h, &mut p).ok_or("bad filter id")?;
    let plen = varint(h, &mut p).ok_or("bad filter properties size")?;
    if id != 0x21 || plen != 1 {
        return Err(format!(
            "filter {id:#x} (only LZMA2 is decoded with random access)"
        ));
    }
    let prop = *h.get(p).ok_or("truncated header")?;
    if prop > 40 {
        return Err("bad LZMA2 dictionary size".into());
    }
    let csize = check_size(b.check).unwrap_or(0);
    let derived = b
        .unpadded
        .checked_sub(hlen as u64 + csize)
        .ok_or("block smaller than its header")?;
    if comp.is_some_and(|c| c != derived) {
        return Err("compressed size disagrees with the index".into());
    }
    Ok((prop, derived))
}

impl XzBlocks {
    /// Reads the block table of `src`. `Ok(None)` if it is not a usable multi-block file
    /// (then stream it).
    #[cfg(test)]
    pub(crate) fn open(src: Arc<dyn ReadAt>) -> io::Result<Option<Self>> {
        match block_table(&*src)? {
            Some(blocks) => Self::from_table(src, blocks),
            None => Ok(None),
        }
    }

    /// Like [`open`](Self::open), with the block table already read by [`block_table`].
    pub(crate) fn from_table(src: Arc<dyn ReadAt>, blocks: Vec<Block>) -> io::Result<Option<Self>> {
        if blocks.iter().any(|b| {
            b.out_len > MAX_BLOCK || b.unpadded > 2 * MAX_BLOCK || check_size(b.check).is_none()
        }) {
            return Ok(None);
        }
        // Decline filter chains we do not decode, judged by the first block.
        if let Some(b) = blocks.first() {
            let h = match Self::header(&*src, b) {
                Ok(h) => h,
                Err(_) => return Ok(None),
            };
            if parse_header(&h, b).is_err() {
                return Ok(None);
            }
        }
        let size = blocks.last().map_or(0, |b| b.out_off + b.out_len);
        let chunk =
            crate::format::frames::typical_chunk(blocks.iter().map(|b| b.out_len).collect());
        Ok(Some(XzBlocks {
            src,
            blocks,
            size,
            chunk,
            cache: FrameCache::new(CACHED_BLOCKS),
        }))
    }

    /// Number of blocks.
    pub(crate) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    fn header(src: &dyn ReadAt, b: &Block) -> io::Result<Vec<u8>> {
        let first = src.read_vec(b.comp_off, 1)?;
        if first[0] == 0 {
            return Err(bad(format!("xz: no block header at offset {}", b.comp_off)));
        }
        let hlen = (usize::from(first[0]) + 1) * 4;
        src.read_vec(b.comp_off, hlen)
    }

    fn decode(&self, i: usize) -> io::Result<Vec<u8>> {
        let b = self.blocks[i];
        let err = |m: String| bad(format!("xz: block {i} at offset {}: {m}", b.comp_off));
        let h = Self::header(&*self.src, &b)?;
        let (prop, comp_len) = parse_header(&h, &b).map_err(err)?;
        let csize = check_size(b.check).unwrap_or(0);
        let padded = (comp_len + 3) & !3;
        let body = self
            .src
            .read_vec(b.comp_off + h.len() as u64, (padded + csize) as usize)?;
        let (comp, rest) = body.split_at(comp_len as usize);
        if rest[..(padded - comp_len) as usize].iter().any(|&x| x != 0) {
            return Err(err("non-zero block padding".into()));
        }
        let stored_check = &rest[(padded - comp_len) as usize..];
        let mut f = Filters::new();
        f.lzma2_properties(&[prop])
            .map_err(|e| err(format!("LZMA2 properties: {e}")))?;
        let mut s = Stream::new_raw_decoder(&f).map_err(|e| err(e.to_string()))?;
        let mut out = Vec::with_capacity(b.out_len as usize);
        let st = s
            .process_vec(comp, &mut out, Action::Finish)
            .map_err(|e| err(format!("corrupt data: {e}")))?;
        if st != Status::StreamEnd || out.len() as u64 != b.out_len || s.total_in() != comp_len {
            return Err(err(format!(
                "decodes to {} bytes, index says {}",
                out.len(),
                b.out_len
            )));
        }
        let ok = match b.check {
            0 => true,
            1 => crc32fast::hash(&out).to_le_bytes()[..] == *stored_check,
            4 => crate::checksum::crc64_xz(&out).to_le_bytes()[..] == *stored_check,
            _ => Sha256::digest(&out)[..] == *stored_check,
        };
        if !ok {
            return Err(err("check mismatch: the data is corrupt".into()));
        }
        Ok(out)
    }
}

impl ReadAt for XzBlocks {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bl = &self.blocks;
        read_through_frames(
            offset,
            buf,
            self.size,
            bl.len(),
            |i| bl[i].out_off,
            |i| bl[i].out_off + bl[i].out_len,
            |i| self.cache.get(i, || self.decode(i)),
        )
    }

    fn caps(&self) -> Caps {
        Caps {
            chunk: self.chunk,
            ..Caps::RANDOM
        }
        .over(self.src.caps())
    }

    fn will_read(&self, ranges: &crate::ExtentMap) {
        let bl = &self.blocks;
        self.src.will_read(&crate::format::frames::stored_ranges(
            ranges,
            bl.len(),
            |i| (bl[i].out_off, bl[i].out_off + bl[i].out_len),
            |i| (bl[i].comp_off, bl[i].comp_off + ((bl[i].unpadded + 3) & !3)),
        ));
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let bl = &self.blocks;
        Some(crate::format::frames::starts_within(
            bl.len(),
            |i| bl[i].out_off,
            start,
            end,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;
    use std::io::Write;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7) % 253) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    fn multi_block(d: &[u8], block: u64, check: liblzma::stream::Check) -> Vec<u8> {
        let s = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(block)
            .preset(1)
            .check(check)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
        e.write_all(d).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn random_reads_match_for_every_check() {
        use liblzma::stream::Check;
        let d = data(3 << 20);
        for check in [Check::None, Check::Crc32, Check::Crc64, Check::Sha256] {
            let xz = multi_block(&d, 1 << 20, check);
            let s = XzBlocks::open(Arc::new(MemSource(xz))).unwrap().unwrap();
            assert_eq!(s.block_count(), 3);
            assert_eq!(s.size(), d.len() as u64);
            for &(off, len) in &[
                (0usize, 10usize),
                ((1 << 20) - 5, 10),
                (3_000_000, 145_728),
                (12345, 2 << 20),
            ] {
                let mut b = vec![0u8; len];
                let n = s.read_at(off as u64, &mut b).unwrap();
                assert_eq!(&b[..n], &d[off..(off + len).min(d.len())]);
            }
        }
    }

    #[test]
    fn concatenated_streams_and_corruption() {
        let d = data(2 << 20);
        let mut xz = multi_block(&d[..1 << 20], 512 << 10, liblzma::stream::Check::Crc64);
        xz.extend_from_slice(&[0; 8]); // stream padding
        xz.extend(multi_block(
            &d[1 << 20..],
            512 << 10,
            liblzma::stream::Check::Crc32,
        ));
        let s = XzBlocks::open(Arc::new(MemSource(xz.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(s.block_count(), 4);
        let mut b = vec![0u8; 100];
        s.read_exact_at((1 << 20) - 50, &mut b).unwrap();
        assert_eq!(&b[..], &d[(1 << 20) - 50..(1 << 20) + 50]);
        // A flipped byte inside a block: a clear error naming the block, never a panic.
        let mut bad = xz.clone();
        bad[200] ^= 0x55;
        let s = XzBlocks::open(Arc::new(MemSource(bad))).unwrap().unwrap();
        let e = s.read_at(0, &mut b).unwrap_err().to_string();
        assert!(e.contains("block 0"), "{e}");
        // A broken index: declined (the caller streams and the decoder reports it).
        let mut bad = xz.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(XzBlocks::open(Arc::new(MemSource(bad))).unwrap().is_none());
        // Truncated file: declined.
        assert!(XzBlocks::open(Arc::new(MemSource(xz[..n - 7].to_vec())))
            .unwrap()
            .is_none());
    }
}
