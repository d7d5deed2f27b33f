//! Seekable zstd writer.
//!
//! Every data segment becomes one independent zstd frame (with its content size and XXH64
//! content checksum, so `zstd -d` checks it); every zero run becomes a frame of RLE blocks that
//! we build by hand, 4 bytes per 128 KiB, so a GiB of free space costs 32 KiB and no CPU. The
//! file ends with the seek table of the zstd "seekable format" (a skippable frame), which every
//! zstd decoder ignores and blockwise reads for random access ([`crate::format::SeekableZstd`]).

use std::cell::RefCell;
use std::io;

use super::codec::{ArchiveWriter, Encoded, Encoder};
use super::plan::DataSegment;
use crate::io::WriteAt;

/// Largest zero run written as one frame: small enough that a reader holding a whole frame
/// in memory (ours, or another tool's) stays bounded.
pub(crate) const MAX_ZERO_FRAME: u64 = 64 << 20;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// zstd's Block_Maximum_Size: an RLE block regenerates at most this many bytes.
const MAX_BLOCK: u64 = 128 << 10;

/// Valid compression levels (zstd's own range, without the negative "fast" levels, which
/// cost ratio for speed we do not need: the frames compress on every core).
pub(crate) const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// Compresses one data segment into one zstd frame.
pub(crate) struct FrameEncoder {
    level: i32,
}

impl FrameEncoder {
    /// An encoder at zstd `level` (1–22).
    pub fn new(level: i32) -> crate::Result<Self> {
        super::codec::check_level("zstd", &LEVELS, level)?;
        Ok(FrameEncoder { level })
    }
}

thread_local! {
    // One compression context per worker thread, reused across frames: creating a context
    // per 2 MiB frame would cost more than compressing zeros.
    static CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

impl Encoder for FrameEncoder {
    fn encode(&self, _seg: &DataSegment, data: &[u8]) -> io::Result<Encoded> {
        CCTX.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(self.level) {
                let mut z = zstd::bulk::Compressor::new(self.level)?;
                z.include_checksum(true)?;
                z.include_contentsize(true)?;
                *c = Some((self.level, z));
            }
            let (_, z) = c.as_mut().expect("context just created");
            let bytes = z.compress(data)?;
            Ok(Encoded {
                bytes,
                aux: 0,
                parts: Vec::new(),
            })
        })
    }
}

/// A zstd frame that decodes to `len` zero bytes (`len` at most [`MAX_ZERO_FRAME`]): a frame
/// header with a 128 KiB window and the content size, then RLE blocks of zeros.
pub(crate) fn zero_frame(len: u64) -> Vec<u8> {
    debug_assert!(len <= u64::from(u32::MAX));
    let blocks = len.div_ceil(MAX_BLOCK).max(1);
    let mut f = Vec::with_capacity(10 + blocks as usize * 4);
    f.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame_Header_Descriptor: 4-byte Frame_Content_Size, not single-segment, no checksum,
    // no dictionary. Not single-segment so the window stays 128 KiB: a decoder's window is
    // what `zstd -d` limits (128 MiB by default), not the content size.
    f.push(0b1000_0000);
    // Window_Descriptor: 2^(10 + 7) = 128 KiB.
    f.push(7 << 3);
    f.extend_from_slice(&(len as u32).to_le_bytes());
    let mut left = len;
    loop {
        let n = left.min(MAX_BLOCK);
        left -= n;
        let last = u32::from(left == 0);
        // Block_Header: Last_Block (bit 0), Block_Type RLE = 1 (bits 1-2), Block_Size.
        let h = last | (1 << 1) | ((n as u32) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(0);
        if left == 0 {
            break;
        }
    }
    f
}

/// Appends frames in order and ends the file with the seek table.
#[derive(Default)]
pub(crate) struct SeekableWriter {
    /// (compressed size, decompressed size) per frame.
    frames: Vec<(u32, u32)>,
    /// Where the next frame goes.
    pos: u64,
}

impl SeekableWriter {
    /// A writer for one seekable zstd file.
    pub(crate) fn new() -> Self {
        SeekableWriter::default()
    }

    fn push(&mut self, out: &mut dyn WriteAt, frame: &[u8], decoded: u64) -> io::Result<()> {
        let (Ok(c), Ok(d)) = (u32::try_from(frame.len()), u32::try_from(decoded)) else {
            return Err(io::Error::other(
                "zstd frame larger than the seek table can describe",
            ));
        };
        out.write_all_at(self.pos, frame)?;
        self.pos += frame.len() as u64;
        self.frames.push((c, d));
        Ok(())
    }
}

impl ArchiveWriter for SeekableWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        _data: &[u8],
        enc: &Encoded,
    ) -> io::Result<()> {
        self.push(out, &enc.bytes, seg.len as u64)
    }

    fn zeros(&mut self, out: &mut dyn WriteAt, _offset: u64, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let n = len.min(MAX_ZERO_FRAME);
            self.push(out, &zero_frame(n), n)?;
            len -= n;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn WriteAt, _image_size: u64) -> io::Result<()> {
        out.write_all_at(
            self.pos,
            &crate::format::compress::seekable_zstd::SeekTable::encode(&self.frames)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_frames_decode_with_stock_zstd() {
        for len in [1u64, 4096, MAX_BLOCK, MAX_BLOCK + 1, 3 * MAX_BLOCK, 5 << 20] {
            let f = zero_frame(len);
            let out = zstd::stream::decode_all(&f[..]).unwrap();
            assert_eq!(out.len() as u64, len);
            assert!(out.iter().all(|&b| b == 0));
        }
        assert_eq!(zero_frame(1 << 30).len(), 10 + 8192 * 4);
    }
}
