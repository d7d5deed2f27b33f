//! Android sparse images (`img2simg`, fastboot): random access to the expanded image.
//!
//! The chunk list is read once into an index mapping output blocks to RAW file ranges, FILL
//! patterns or zeros (DONT_CARE). Every number in the file is checked against the others and
//! against the file length before anything proportional to it is allocated.

use std::io;
use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{Caps, ReadAt, ReadAtExt, SizeKnown};
use crate::util::{le16, le32};
use crate::{Error, ExtentMap};

impl Format {
    /// Android sparse image (img2simg).
    #[allow(non_upper_case_globals)]
    pub const AndroidSparse: Format =
        Format::new("android-sparse", "android sparse", Kind::Container);
}

/// Magic number at offset 0 (little-endian 0xED26FF3A).
pub(crate) const MAGIC: u32 = 0xED26_FF3A;
const CHUNK_RAW: u16 = 0xCAC1;
const CHUNK_FILL: u16 = 0xCAC2;
const CHUNK_DONT_CARE: u16 = 0xCAC3;
const CHUNK_CRC32: u16 = 0xCAC4;

/// Upper bound on chunks we index (real images have thousands; this caps the index memory).
pub(crate) const MAX_CHUNKS: u32 = 1 << 22;
/// Upper bound on the block size (real images use 4096).
pub(crate) const MAX_BLOCK_SIZE: u32 = 1 << 26;
/// Upper bound on header sizes we skip over.
const MAX_HEADER: u16 = 4096;

/// What a run of output blocks holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkData {
    /// Bytes stored in the file at this offset.
    Raw(u64),
    /// A repeated 4-byte pattern (little-endian as stored).
    Fill([u8; 4]),
    /// Not stored: reads as zeros.
    DontCare,
}

/// One indexed chunk: output bytes `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Output offset in bytes.
    pub(crate) start: u64,
    /// Output length in bytes.
    pub(crate) len: u64,
    /// Where the bytes come from.
    pub(crate) data: ChunkData,
}

/// Recognises the sparse magic and expands the image.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::AndroidSparse
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["simg"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        le32(p.head(), 0) == Some(MAGIC)
    }

    fn open(&self, src: Arc<dyn ReadAt>, _ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let s = AndroidSparse::open(src.clone())?;
        let h = *s.header();
        let layer = Layer::stored(
            Format::AndroidSparse,
            &*src,
            Some(format!(
                "block size {}, {} blocks, {} chunks, expands to {} bytes",
                h.block_size,
                h.total_blocks,
                h.total_chunks,
                s.size()
            )),
        );
        Ok(Step::inner(layer, Arc::new(s)))
    }
}

/// Parsed header facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Format version (major, minor).
    pub(crate) version: (u16, u16),
    /// Size of the file header (28 or more).
    pub(crate) header_size: u16,
    /// Size of each chunk header (12 or more).
    pub(crate) chunk_header_size: u16,
    /// Output block size in bytes.
    pub(crate) block_size: u32,
    /// Output blocks.
    pub(crate) total_blocks: u32,
    /// Chunks in the file.
    pub(crate) total_chunks: u32,
}

/// Parses and validates the 28-byte (or longer) file header.
pub(crate) fn parse_header(b: &[u8]) -> crate::Result<Header> {
    let bad = |d: String| Error::corrupt("android sparse header", d);
    if le32(b, 0) != Some(MAGIC) {
        return Err(Error::Format(
            "not an android sparse image (bad magic)".into(),
        ));
    }
    let g16 = |o| le16(b, o).ok_or_else(|| bad("header too short".into()));
    let g32 = |o| le32(b, o).ok_or_else(|| bad("header too short".into()));
    let h = Header {
        version: (g16(4)?, g16(6)?),
        header_size: g16(8)?,
        chunk_header_size: g16(10)?,
        block_size: g32(12)?,
        total_blocks: g32(16)?,
        total_chunks: g32(20)?,
    };
    if h.version.0 != 1 {
        return Err(Error::Unsupported(format!(
            "android sparse major version {}",
            h.version.0
        )));
    }
    if !(28..=MAX_HEADER).contains(&h.header_size) {
        return Err(bad(format!("file header size {}", h.header_size)));
    }
    if !(12..=MAX_HEADER).contains(&h.chunk_header_size) {
        return Err(bad(format!("chunk header size {}", h.chunk_header_size)));
    }
    if h.block_size == 0 || h.block_size % 4 != 0 || h.block_size > MAX_BLOCK_SIZE {
        return Err(bad(format!("block size {}", h.block_size)));
    }
    if h.total_chunks > MAX_CHUNKS {
        return Err(bad(format!(
            "{} chunks (limit {MAX_CHUNKS})",
            h.total_chunks
        )));
    }
    Ok(h)
}

/// Builds the chunk index of the sparse image in `src`.
pub(crate) fn index(src: &dyn ReadAt) -> crate::Result<(Header, Vec<Chunk>)> {
    let head = src.read_upto(0, 28)?;
    let h = parse_header(&head)?;
    // A file whose length is only a hint (inside a stream opened Deferred) is checked by its
    // reads instead: one past the real end fails.
    let exact = src.caps().size == SizeKnown::Exact;
    let file_len = if exact { src.size() } else { u64::MAX };
    let bad = |d: String| Error::corrupt("android sparse image", d);
    // Every chunk needs at least its header in the file: this bounds the chunk count by the
    // file length before we reserve any memory for the index.
    let min_bytes =
        u64::from(h.header_size) + u64::from(h.total_chunks) * u64::from(h.chunk_header_size);
    if min_bytes > file_len {
        return Err(bad(format!(
            "{} chunks cannot fit in a {file_len}-byte file",
            h.total_chunks
        )));
    }
    let total_out = u64::from(h.total_blocks) * u64::from(h.block_size);
    let reserve = if exact {
        h.total_chunks
    } else {
        h.total_chunks.min(1 << 16)
    };
    let mut chunks = Vec::with_capacity(reserve as usize);
    let mut pos = u64::from(h.header_size);
    let mut out: u64 = 0;
    for i in 0..h.total_chunks {
        let (data, len, total) = chunk_at(src, &h, i, pos)?;
        pos = pos
            .checked_add(total)
            .filter(|&p| p <= file_len)
            .ok_or_else(|| {
                bad(format!(
                    "chunk {i} runs past the end of the {file_len}-byte file"
                ))
            })?;
        let Some(data) = data.filter(|_| len > 0) else {
            continue;
        };
        if out + len > total_out {
            return Err(bad(format!(
                "chunks describe more than the header's {} blocks",
                h.total_blocks
            )));
        }
        chunks.push(Chunk {
            start: out,
            len,
            data,
        });
        out += len;
    }
    if out != total_out {
        return Err(bad(format!(
            "chunks cover {} blocks, header says {}",
            out / u64::from(h.block_size),
            h.total_blocks
        )));
    }
    Ok((h, chunks))
}

/// Chunk `i`, whose header is at file offset `pos`: what it holds (`None` for a CRC32
/// chunk), its output length and its total length in the file.
fn chunk_at(
    src: &dyn ReadAt,
    h: &Header,
    i: u32,
    pos: u64,
) -> crate::Result<(Option<ChunkData>, u64, u64)> {
    let c = src.read_vec(pos, 12)?;
    let ty = le16(&c, 0).unwrap_or(0);
    let blocks = u64::from(le32(&c, 4).unwrap_or(0));
    let total = u64::from(le32(&c, 8).unwrap_or(0));
    let chs = u64::from(h.chunk_header_size);
    let data_at = pos + chs;
    let len = blocks * u64::from(h.block_size); // both < 2^32 and 2^26: no overflow
    let expect = |extra: u64, what: &str| -> crate::Result<()> {
        if total != chs + extra {
            return Err(Error::corrupt(
                "android sparse image",
                format!(
                    "chunk {i} ({what}) at file offset {pos}: total size {total}, expected {}",
                    chs + extra
                ),
            ));
        }
        Ok(())
    };
    let data = match ty {
        CHUNK_RAW => {
            expect(len, "raw")?;
            Some(ChunkData::Raw(data_at))
        }
        CHUNK_FILL => {
            expect(4, "fill")?;
            let p = src.read_vec(data_at, 4)?;
            let mut pat = [0u8; 4];
            pat.copy_from_slice(&p);
            Some(ChunkData::Fill(pat))
        }
        CHUNK_DONT_CARE => {
            expect(0, "don't care")?;
            Some(ChunkData::DontCare)
        }
        CHUNK_CRC32 => {
            expect(4, "crc32")?;
            None
        }
        t => {
            return Err(Error::corrupt(
                "android sparse image",
                format!("chunk {i} at file offset {pos}: unknown type {t:#06x}"),
            ))
        }
    };
    Ok((data, len, total))
}

/// The expanded image of an Android sparse file.
pub struct AndroidSparse {
    src: Arc<dyn ReadAt>,
    header: Header,
    chunks: Vec<Chunk>,
    size: u64,
    /// True if the file has decoding units of its own (a sparse image inside a seekable zstd
    /// or a multi-block xz), which RAW chunks carry over.
    inner_units: bool,
}

impl AndroidSparse {
    /// Indexes the sparse image in `src`.
    pub fn open(src: Arc<dyn ReadAt>) -> crate::Result<Self> {
        let (header, chunks) = index(&*src)?;
        let size = u64::from(header.total_blocks) * u64::from(header.block_size);
        let inner_units = src.boundaries(0, src.size()).is_some();
        Ok(AndroidSparse {
            src,
            header,
            chunks,
            size,
            inner_units,
        })
    }

    /// The file header.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }
}

impl ReadAt for AndroidSparse {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset) as usize;
        let mut done = 0usize;
        // First chunk whose end is past `offset`.
        let mut i = self.chunks.partition_point(|c| c.start + c.len <= offset);
        while done < len {
            let Some(c) = self.chunks.get(i) else {
                break;
            };
            let pos = offset + done as u64;
            let within = pos - c.start;
            let n = ((c.len - within) as usize).min(len - done);
            let out = &mut buf[done..done + n];
            match c.data {
                ChunkData::Raw(at) => self.src.read_exact_at(at + within, out)?,
                ChunkData::Fill(p) => {
                    for (k, b) in out.iter_mut().enumerate() {
                        *b = p[(within as usize + k) % 4];
                    }
                }
                ChunkData::DontCare => out.fill(0),
            }
            done += n;
            i += 1;
        }
        Ok(done)
    }

    fn allocated_hint(&self) -> Option<ExtentMap> {
        Some(ExtentMap::from_ranges(
            self.chunks
                .iter()
                .filter(|c| c.data != ChunkData::DontCare)
                .map(|c| (c.start, c.start + c.len)),
        ))
    }

    fn caps(&self) -> Caps {
        // Random where the file is, read in the file's own units; the size is the header's.
        Caps {
            size: SizeKnown::Exact,
            ..self.src.caps()
        }
    }

    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        // No units of its own (FILL and DONT_CARE decode nothing); the file's units show
        // through RAW chunks, shifted to where those chunks land in the image.
        if !self.inner_units {
            return None;
        }
        let mut out = Vec::new();
        let first = self.chunks.partition_point(|c| c.start + c.len <= start);
        for c in self.chunks[first..].iter().take_while(|c| c.start < end) {
            let ChunkData::Raw(at) = c.data else {
                continue;
            };
            let lo = start.max(c.start) - c.start;
            let hi = end.min(c.start + c.len) - c.start;
            let inner = self.src.boundaries(at + lo, at + hi)?;
            out.extend(inner.into_iter().map(|b| c.start + (b - at)));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    fn hdr(blocks: u32, chunks: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&28u16.to_le_bytes());
        v.extend_from_slice(&12u16.to_le_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(&blocks.to_le_bytes());
        v.extend_from_slice(&chunks.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }
    fn ch(v: &mut Vec<u8>, ty: u16, blocks: u32, total: u32) {
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&blocks.to_le_bytes());
        v.extend_from_slice(&total.to_le_bytes());
    }

    #[test]
    fn expands_raw_fill_dontcare() {
        let mut v = hdr(4, 4);
        ch(&mut v, CHUNK_RAW, 1, 20);
        v.extend_from_slice(b"ABCDEFGH");
        ch(&mut v, CHUNK_FILL, 2, 16);
        v.extend_from_slice(b"wxyz");
        ch(&mut v, CHUNK_DONT_CARE, 1, 12);
        ch(&mut v, CHUNK_CRC32, 0, 16);
        v.extend_from_slice(&[0; 4]);
        let s = AndroidSparse::open(Arc::new(MemSource(v))).unwrap();
        assert_eq!(s.size(), 32);
        let all = s.read_vec(0, 32).unwrap();
        assert_eq!(&all, b"ABCDEFGHwxyzwxyzwxyzwxyz\0\0\0\0\0\0\0\0");
        assert_eq!(s.read_vec(10, 4).unwrap(), b"yzwx");
        assert_eq!(s.allocated_hint().unwrap().total(), 24);
    }

    #[test]
    fn rejects_lies() {
        // more chunks than the file can hold
        assert!(AndroidSparse::open(Arc::new(MemSource(hdr(1, 1000)))).is_err());
        // blocks mismatch
        let mut v = hdr(2, 1);
        ch(&mut v, CHUNK_DONT_CARE, 1, 12);
        assert!(AndroidSparse::open(Arc::new(MemSource(v))).is_err());
        // raw chunk past the end
        let mut v = hdr(1, 1);
        ch(&mut v, CHUNK_RAW, 1, 20);
        assert!(AndroidSparse::open(Arc::new(MemSource(v))).is_err());
        // huge block count
        let mut v = hdr(u32::MAX, 1);
        ch(&mut v, CHUNK_DONT_CARE, u32::MAX, 12);
        assert!(AndroidSparse::open(Arc::new(MemSource(v))).is_ok());
    }

    /// A file with units every 16 bytes (as a seekable archive would have).
    struct Units(MemSource);
    impl ReadAt for Units {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_at(offset, buf)
        }
        fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
            Some(
                (1..100)
                    .map(|i| i * 16)
                    .filter(|&b| b > start && b < end)
                    .collect(),
            )
        }
    }

    #[test]
    fn units_of_the_file_show_through_raw_chunks() {
        // block size 8: DONT_CARE 1 block, RAW 4 blocks (file bytes 52..84), DONT_CARE 1.
        let mut v = hdr(6, 3);
        ch(&mut v, CHUNK_DONT_CARE, 1, 12);
        ch(&mut v, CHUNK_RAW, 4, 12 + 32);
        v.extend_from_slice(&[5; 32]);
        ch(&mut v, CHUNK_DONT_CARE, 1, 12);
        let plain = AndroidSparse::open(Arc::new(MemSource(v.clone()))).unwrap();
        assert_eq!(plain.boundaries(0, 48), None);
        let s = AndroidSparse::open(Arc::new(Units(MemSource(v)))).unwrap();
        // File units at 64 and 80 land at 8 + (64 - 52) = 20 and 36.
        assert_eq!(s.boundaries(0, 48), Some(vec![20, 36]));
        assert_eq!(s.boundaries(21, 48), Some(vec![36]));
        assert_eq!(s.boundaries(40, 48), Some(vec![]));
    }
}
