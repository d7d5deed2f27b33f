//! zstd: frames (and skippable frames) decoded front to back, long windows allowed. Frame and
//! block headers are parsed here, once, for everything that looks inside a zstd file: the
//! decoded size (the sum of the frames' content sizes, no decompression) and our own backups'
//! zero frames (`seekable_zstd`).

use std::io::{self, Read};
use std::sync::Arc;

use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{size_fact, stream_step, Codec, Compressed, SizeFact};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::le32;

impl Format {
    /// zstd frames without a seek table.
    #[allow(non_upper_case_globals)]
    pub const Zstd: Format = Format::new("zstd", "zstd", Kind::Compression);
}

impl Codec {
    /// zstd (frames and skippable frames; long windows allowed).
    #[allow(non_upper_case_globals)]
    pub const Zstd: Codec = Codec::new("zstd", decoder, size);
}

/// Magic number of a zstd frame.
pub(crate) const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Most frames walked to add up a file's size.
const MAX_FRAMES: u32 = 10_000_000;

fn decoder(r: Compressed) -> io::Result<Box<dyn Read + Send>> {
    let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
    // Accept `zstd --long` windows (up to 2 GiB); the default limit rejects them.
    d.window_log_max(31)?;
    Ok(Box::new(d))
}

/// True for the magic numbers of skippable frames (0x184D2A50..5F).
pub(crate) fn is_skippable(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

/// True if `head` opens with a zstd frame, possibly after one skippable frame.
pub(crate) fn starts_with_frame(head: &[u8]) -> bool {
    match le32(head, 0) {
        Some(FRAME_MAGIC) => true,
        Some(m) if is_skippable(m) => {
            let len = le32(head, 4).unwrap_or(0) as usize;
            len.checked_add(8)
                .is_some_and(|next| le32(head, next) == Some(FRAME_MAGIC))
        }
        _ => false,
    }
}

/// A zstd frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Bytes from the magic number to the first block header.
    pub(crate) len: usize,
    /// The frame's decoded size, when the header records it.
    pub(crate) content_size: Option<u64>,
    /// True if a 4-byte content checksum follows the last block.
    pub(crate) checksum: bool,
}

/// Longest frame header: magic, descriptor, window, 4-byte dictionary id, 8-byte size.
pub(crate) const MAX_FRAME_HEADER: usize = 18;

impl FrameHeader {
    /// Parses the frame header at the start of `b`; `None` if `b` does not start with a zstd
    /// frame or is too short to hold its header.
    pub(crate) fn parse(b: &[u8]) -> Option<FrameHeader> {
        if le32(b, 0)? != FRAME_MAGIC {
            return None;
        }
        let fhd = *b.get(4)?;
        let single = fhd & 0x20 != 0;
        let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
        let fcs_len = match fhd >> 6 {
            0 => usize::from(single),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let fcs_off = 5 + usize::from(!single) + dict_len;
        let field = b.get(fcs_off..fcs_off + fcs_len)?;
        let mut v = [0u8; 8];
        v[..fcs_len].copy_from_slice(field);
        let content_size = (fcs_len > 0).then(|| {
            let n = u64::from_le_bytes(v);
            // The 2-byte field is stored minus 256.
            if fcs_len == 2 {
                n + 256
            } else {
                n
            }
        });
        Some(FrameHeader {
            len: fcs_off + fcs_len,
            content_size,
            checksum: fhd & 0x04 != 0,
        })
    }
}

/// A zstd block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    /// True for the frame's last block.
    pub(crate) last: bool,
    /// 0 raw, 1 RLE, 2 compressed, 3 reserved.
    pub(crate) kind: u8,
    /// Block_Size: the decoded size of raw and RLE blocks, the stored size of compressed ones.
    pub(crate) size: u32,
}

impl BlockHeader {
    /// Length of a block header.
    pub(crate) const LEN: usize = 3;

    /// Parses the 3-byte block header at the start of `b`.
    pub(crate) fn parse(b: &[u8]) -> Option<BlockHeader> {
        let h = b.get(..3)?;
        let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
        Some(BlockHeader {
            last: h & 1 != 0,
            kind: ((h >> 1) & 3) as u8,
            size: h >> 3,
        })
    }

    /// Bytes stored after the header (one for an RLE block); `None` for the reserved type.
    pub(crate) fn stored_len(self) -> Option<u64> {
        match self.kind {
            0 | 2 => Some(u64::from(self.size)),
            1 => Some(1),
            _ => None,
        }
    }
}

/// What walking a file's frame headers found.
struct Walk {
    /// Sum of the recorded content sizes.
    total: u64,
    /// True if every frame recorded its content size.
    all_known: bool,
}

/// Walks every frame and block header of `src` (no decompression). `None` if the structure
/// is inconsistent: not zstd throughout, a block past the end, too many frames.
fn walk(src: &dyn ReadAt) -> io::Result<Option<Walk>> {
    let size = src.size();
    let mut w = Walk {
        total: 0,
        all_known: true,
    };
    let mut pos: u64 = 0;
    let mut frames = 0u32;
    while pos < size {
        let h = src.read_upto(pos, MAX_FRAME_HEADER)?;
        let Some(magic) = le32(&h, 0) else {
            return Ok(None);
        };
        if is_skippable(magic) {
            let Some(len) = le32(&h, 4) else {
                return Ok(None);
            };
            pos = match pos.checked_add(8 + u64::from(len)) {
                Some(p) if p <= size => p,
                _ => return Ok(None),
            };
            continue;
        }
        let Some(f) = FrameHeader::parse(&h) else {
            return Ok(None);
        };
        match f.content_size.and_then(|c| w.total.checked_add(c)) {
            Some(t) => w.total = t,
            None => w.all_known = false,
        }
        pos += f.len as u64;
        loop {
            let Some(b) = BlockHeader::parse(&src.read_upto(pos, BlockHeader::LEN)?) else {
                return Ok(None);
            };
            let Some(body) = b.stored_len() else {
                return Ok(None);
            };
            pos = match pos.checked_add(BlockHeader::LEN as u64 + body) {
                Some(p) if p <= size => p,
                _ => return Ok(None),
            };
            if b.last {
                break;
            }
        }
        if f.checksum {
            pos += 4;
        }
        frames += 1;
        if frames > MAX_FRAMES {
            return Ok(None);
        }
    }
    Ok((pos == size).then_some(w))
}

/// What the frame headers say: exact when every frame records its content size, a hint when
/// only some do.
fn size(src: &dyn ReadAt) -> io::Result<SizeFact> {
    Ok(match walk(src)? {
        Some(w) if w.all_known => SizeFact::exact(w.total, "zstd frame headers"),
        Some(w) if w.total > 0 => SizeFact::Hint {
            size: w.total,
            modulus: None,
            origin: "the zstd frames that record their content size",
        },
        _ => SizeFact::Unknown,
    })
}

/// Decoded size of a zstd file: the sum of every frame's content size found by walking frame
/// and block headers (no decompression). `None` if any frame omits its content size or the
/// structure is inconsistent.
pub fn size_from_frames(src: &dyn ReadAt) -> io::Result<Option<u64>> {
    Ok(walk(src)?.filter(|w| w.all_known).map(|w| w.total))
}

/// Recognises a zstd frame (possibly after a skippable frame).
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Zstd
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["zst"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        starts_with_frame(p.head())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let end = ctx.options().stream_end;
        let fact = size_fact(Codec::Zstd, &*src, end)?;
        stream_step(Format::Zstd, Codec::Zstd, src, fact, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_a_real_frame() {
        let f = zstd::bulk::compress(&[7u8; 300], 3).unwrap();
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!(h.content_size, Some(300));
        let b = BlockHeader::parse(&f[h.len..]).unwrap();
        assert!(b.last);
        assert!(FrameHeader::parse(&f[..5]).is_none());
        assert!(FrameHeader::parse(b"\x28\xb5\x2f").is_none());
        let src = crate::io::MemSource([f.clone(), f].concat());
        assert_eq!(size_from_frames(&src).unwrap(), Some(600));
    }
}
