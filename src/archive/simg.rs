//! Android sparse writer (`.simg`, version 1.0): what fastboot flashes and `simg2img` expands.
//!
//! Mapped blocks become RAW chunks, mapped blocks that are all zero FILL chunks of 0 (as
//! img2simg writes them), unmapped blocks DONT_CARE chunks, so a flasher skips them. Chunks
//! of one kind are merged. The file header's block and chunk counts are known only at the
//! end, so it is written last, over a placeholder. No CRC32 chunk: it is optional, simg2img
//! does not need it, and the bmap written beside the archive carries SHA-256 of the data.

use std::io;

use super::codec::{ArchiveWriter, Encoded};
use super::plan::DataSegment;
use crate::io::WriteAt;

const MAGIC: u32 = 0xED26_FF3A;
const FILE_HEADER: u64 = 28;
const CHUNK_HEADER: u64 = 12;
const RAW: u16 = 0xCAC1;
const FILL: u16 = 0xCAC2;
const DONT_CARE: u16 = 0xCAC3;
/// Largest chunk we write, in bytes of image: keeps `total_sz` (u32) far from overflowing.
const MAX_CHUNK_BYTES: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Raw,
    Fill,
    DontCare,
}

/// The chunk being built.
#[derive(Clone, Copy, Debug)]
struct Run {
    kind: Kind,
    blocks: u64,
    /// For RAW: where its header goes (the data follows it).
    header_at: u64,
}

/// Writes RAW/FILL chunks for mapped data and DONT_CARE for unmapped space.
pub(crate) struct SimgWriter {
    bs: u64,
    total_blocks: u32,
    /// Next write position in the output.
    pos: u64,
    run: Option<Run>,
    chunks: u64,
    /// A block that segments have only partly delivered (image offsets not block-aligned).
    partial: Vec<u8>,
    partial_mapped: bool,
    /// Image offset the next delivered byte has (checks that input arrives in order).
    next_offset: u64,
}

impl SimgWriter {
    /// A writer for an image of `image_size` bytes, with the largest block size of 4096,
    /// 2048, 1024 and 512 that divides it (the format cannot describe a partial last block).
    pub(crate) fn new(image_size: u64) -> crate::Result<Self> {
        let bs = [4096u64, 2048, 1024, 512]
            .into_iter()
            .find(|b| image_size % b == 0)
            .ok_or_else(|| {
                crate::Error::Unsupported(format!(
                    "an Android sparse image holds whole blocks of at least 512 bytes, and {image_size} bytes is not a multiple of 512; use another format"
                ))
            })?;
        let total_blocks = u32::try_from(image_size / bs).map_err(|_| {
            crate::Error::Unsupported(format!(
                "{image_size} bytes is too large for an Android sparse image (at most 2^32 blocks of {bs} bytes)"
            ))
        })?;
        Ok(SimgWriter {
            bs,
            total_blocks,
            pos: FILE_HEADER,
            run: None,
            chunks: 0,
            partial: Vec::new(),
            partial_mapped: false,
            next_offset: 0,
        })
    }

    /// Block size chosen for this image.
    #[cfg(test)]
    pub(crate) fn block_size(&self) -> u64 {
        self.bs
    }

    fn chunk_header(kind: u16, blocks: u64, total: u64) -> io::Result<[u8; 12]> {
        let (Ok(b), Ok(t)) = (u32::try_from(blocks), u32::try_from(total)) else {
            return Err(io::Error::other("Android sparse chunk too large"));
        };
        let mut h = [0u8; 12];
        h[0..2].copy_from_slice(&kind.to_le_bytes());
        h[4..8].copy_from_slice(&b.to_le_bytes());
        h[8..12].copy_from_slice(&t.to_le_bytes());
        Ok(h)
    }

    /// Ends the current chunk, writing whatever it still owes.
    fn close(&mut self, out: &mut dyn WriteAt) -> io::Result<()> {
        let Some(r) = self.run.take() else {
            return Ok(());
        };
        match r.kind {
            Kind::Raw => {
                let h = Self::chunk_header(RAW, r.blocks, CHUNK_HEADER + r.blocks * self.bs)?;
                out.write_all_at(r.header_at, &h)?;
            }
            Kind::Fill => {
                let h = Self::chunk_header(FILL, r.blocks, CHUNK_HEADER + 4)?;
                out.write_all_at(self.pos, &h)?;
                out.write_all_at(self.pos + CHUNK_HEADER, &0u32.to_le_bytes())?;
                self.pos += CHUNK_HEADER + 4;
            }
            Kind::DontCare => {
                let h = Self::chunk_header(DONT_CARE, r.blocks, CHUNK_HEADER)?;
                out.write_all_at(self.pos, &h)?;
                self.pos += CHUNK_HEADER;
            }
        }
        self.chunks += 1;
        Ok(())
    }

    /// Appends `blocks` blocks of `kind` (`raw` holds their bytes for RAW).
    fn emit(
        &mut self,
        out: &mut dyn WriteAt,
        kind: Kind,
        mut blocks: u64,
        raw: &[u8],
    ) -> io::Result<()> {
        let max = MAX_CHUNK_BYTES / self.bs;
        let mut raw = raw;
        while blocks > 0 {
            let fits = matches!(self.run, Some(r) if r.kind == kind && r.blocks < max);
            if !fits {
                self.close(out)?;
                let header_at = self.pos;
                if kind == Kind::Raw {
                    self.pos += CHUNK_HEADER;
                }
                self.run = Some(Run {
                    kind,
                    blocks: 0,
                    header_at,
                });
            }
            let r = self.run.as_mut().expect("run just opened");
            let n = blocks.min(max - r.blocks);
            r.blocks += n;
            if kind == Kind::Raw {
                let bytes = (n * self.bs) as usize;
                out.write_all_at(self.pos, &raw[..bytes])?;
                self.pos += bytes as u64;
                raw = &raw[bytes..];
            }
            blocks -= n;
        }
        Ok(())
    }

    fn classify(block: &[u8], mapped: bool) -> Kind {
        if !mapped {
            Kind::DontCare
        } else if block.iter().all(|&b| b == 0) {
            Kind::Fill
        } else {
            Kind::Raw
        }
    }

    /// Feeds `len` bytes at the current position: `data` for a data segment (with its mapped
    /// extents), `None` for unmapped zeros.
    fn feed(
        &mut self,
        out: &mut dyn WriteAt,
        offset: u64,
        len: u64,
        data: Option<(&[u8], &DataSegment)>,
    ) -> io::Result<()> {
        if offset != self.next_offset {
            return Err(io::Error::other(format!(
                "Android sparse writer got bytes at {offset}, expected {}",
                self.next_offset
            )));
        }
        let bs = self.bs;
        let mut at = 0u64;
        while at < len {
            let off = offset + at;
            let in_block = off % bs;
            let n = (bs - in_block).min(len - at);
            let mapped = data.is_some_and(|(_, seg)| {
                seg.mapped.iter().any(|e| e.start < off + n && e.end > off)
            });
            if in_block == 0 && n == bs && self.partial.is_empty() {
                match data {
                    None => {
                        // A whole run of unmapped blocks at once: free space can be GiBs.
                        let blocks = (len - at) / bs;
                        self.emit(out, Kind::DontCare, blocks, &[])?;
                        at += blocks * bs;
                        continue;
                    }
                    Some((bytes, seg)) => {
                        // Consecutive whole blocks of the same kind go out in one write.
                        let s = (off - seg.offset) as usize;
                        let kind = Self::classify(&bytes[s..s + bs as usize], mapped);
                        let mut end = s + bs as usize;
                        while end + bs as usize <= bytes.len() {
                            let o = seg.offset + end as u64;
                            let m = seg.mapped.iter().any(|e| e.start < o + bs && e.end > o);
                            if Self::classify(&bytes[end..end + bs as usize], m) != kind {
                                break;
                            }
                            end += bs as usize;
                        }
                        let blocks = (end - s) as u64 / bs;
                        self.emit(out, kind, blocks, &bytes[s..end])?;
                        at += blocks * bs;
                        continue;
                    }
                }
            }
            // A piece of a block: collect it until the block is complete.
            match data {
                Some((bytes, seg)) => {
                    let s = (off - seg.offset) as usize;
                    self.partial.extend_from_slice(&bytes[s..s + n as usize]);
                }
                None => self.partial.resize(self.partial.len() + n as usize, 0),
            }
            self.partial_mapped |= mapped;
            if self.partial.len() as u64 == bs {
                let block = std::mem::take(&mut self.partial);
                let kind = Self::classify(&block, self.partial_mapped);
                self.emit(out, kind, 1, &block)?;
                self.partial_mapped = false;
            }
            at += n;
        }
        self.next_offset = offset + len;
        Ok(())
    }
}

impl ArchiveWriter for SimgWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        _enc: &Encoded,
    ) -> io::Result<()> {
        self.feed(out, seg.offset, data.len() as u64, Some((data, seg)))
    }

    fn zeros(&mut self, out: &mut dyn WriteAt, offset: u64, len: u64) -> io::Result<()> {
        self.feed(out, offset, len, None)
    }

    fn finish(&mut self, out: &mut dyn WriteAt, image_size: u64) -> io::Result<()> {
        if self.next_offset != image_size || !self.partial.is_empty() {
            return Err(io::Error::other(format!(
                "Android sparse writer: image ends at {image_size}, data ended at {}",
                self.next_offset
            )));
        }
        self.close(out)?;
        let chunks = u32::try_from(self.chunks)
            .map_err(|_| io::Error::other("too many Android sparse chunks"))?;
        let mut h = [0u8; FILE_HEADER as usize];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&1u16.to_le_bytes());
        h[6..8].copy_from_slice(&0u16.to_le_bytes());
        h[8..10].copy_from_slice(&(FILE_HEADER as u16).to_le_bytes());
        h[10..12].copy_from_slice(&(CHUNK_HEADER as u16).to_le_bytes());
        h[12..16].copy_from_slice(&(self.bs as u32).to_le_bytes());
        h[16..20].copy_from_slice(&self.total_blocks.to_le_bytes());
        h[20..24].copy_from_slice(&chunks.to_le_bytes());
        out.write_all_at(0, &h)?;
        out.set_len(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Extent;
    use crate::format::container::android_sparse::AndroidSparse as AndroidSparseReader;
    use crate::io::{MemSource, ReadAt, ReadAtExt};
    use std::sync::Arc;

    fn seg(offset: u64, len: usize, mapped: &[(u64, u64)]) -> DataSegment {
        DataSegment {
            offset,
            len,
            mapped: mapped
                .iter()
                .map(|&(start, end)| Extent { start, end })
                .collect(),
        }
    }

    #[test]
    fn chunks_read_back_with_our_reader() {
        // 3 MiB + 512: block size 512; a segment not aligned to it, zero and non-zero blocks.
        let size = (3 << 20) + 512;
        let mut w = SimgWriter::new(size).unwrap();
        assert_eq!(w.block_size(), 512);
        let mut f: Vec<u8> = Vec::new();
        let mut d = vec![0u8; 5000];
        d[100] = 1;
        d[4000..4100].fill(7);
        w.zeros(&mut f, 0, 1000).unwrap();
        w.data(
            &mut f,
            &seg(1000, 5000, &[(1000, 6000)]),
            &d,
            &Encoded::default(),
        )
        .unwrap();
        w.zeros(&mut f, 6000, size - 6000).unwrap();
        w.finish(&mut f, size).unwrap();
        let r = AndroidSparseReader::open(Arc::new(MemSource(f))).unwrap();
        assert_eq!(r.size(), size);
        let mut back = vec![0u8; 8192];
        r.read_exact_at(0, &mut back).unwrap();
        assert_eq!(&back[1000..6000], &d[..]);
        assert!(back[..1000].iter().all(|&b| b == 0));
        assert!(back[6000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sizes_it_cannot_express_are_refused() {
        assert!(SimgWriter::new(1000).is_err());
        assert_eq!(SimgWriter::new(0).unwrap().block_size(), 4096);
        assert_eq!(SimgWriter::new(6144).unwrap().block_size(), 2048);
    }
}
