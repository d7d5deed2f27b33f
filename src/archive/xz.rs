//! Multi-block xz writer.
//!
//! We write the .xz container ourselves (it is small and public: tukaani.org's
//! xz-file-format) around LZMA2 data from liblzma's raw encoder, so that every data segment
//! becomes one independent block, compressed on any core, with its sizes in the block header
//! and the index: plain `xz -d` restores the image, and blockwise decodes only the blocks a
//! read touches ([`crate::format::compress::xz_blocks`]).
//!
//! Check type CRC32: cheap, and the bmap beside the archive carries SHA-256 of the data.
//! Zero runs are not compressed: LZMA2 lets every chunk reset the dictionary and state (control
//! byte ≥ 0xE0), so a zero block is one precomputed chunk of 1 MiB of zeros repeated, and its
//! CRC32 is combined from the CRC32 of that chunk, in O(log n) per chunk.

use std::io;
use std::sync::OnceLock;

use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

use super::codec::{ArchiveWriter, Encoded, Encoder};
use super::plan::DataSegment;
use crate::io::WriteAt;

/// Largest zero run written as one xz block: readers that hold a block in memory stay bounded.
pub(crate) const MAX_ZERO_BLOCK: u64 = 64 << 20;

const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
/// Stream flags: check type CRC32.
const STREAM_FLAGS: [u8; 2] = [0, 0x01];
const CHECK_SIZE: u64 = 4;
const LZMA2_ID: u8 = 0x21;
/// Zeros in our repeated chunk: 1 MiB, which liblzma encodes as exactly one LZMA2 chunk (at
/// 2 MiB, the format's limit, it splits off a small second chunk).
const ZERO_CHUNK: usize = 1 << 20;
/// Dictionary of the zero chunk (what its block header announces).
const ZERO_DICT: u32 = 2 << 20;

/// Valid xz presets.
pub(crate) const LEVELS: std::ops::RangeInclusive<i32> = 0..=9;

/// Dictionary size encoded by LZMA2 properties byte `p` (0..=40).
fn dict_of_prop(p: u8) -> u64 {
    (2 | u64::from(p & 1)) << (p / 2 + 11)
}

/// The smallest LZMA2 properties byte whose dictionary holds `dict` bytes.
fn prop_for_dict(dict: u32) -> u8 {
    (0u8..40)
        .find(|&p| dict_of_prop(p) >= u64::from(dict))
        .unwrap_or(40)
}

fn lzma_err(e: liblzma::stream::Error) -> io::Error {
    io::Error::other(format!("xz encoder: {e}"))
}

/// LZMA2 data for `data` (including the end marker), as liblzma's raw encoder writes it.
fn lzma2_raw(data: &[u8], opts: &LzmaOptions) -> io::Result<Vec<u8>> {
    let mut f = Filters::new();
    f.lzma2(opts);
    let mut s = Stream::new_raw_encoder(&f).map_err(lzma_err)?;
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    let mut input = data;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1 << 16));
        }
        let before = s.total_in();
        let st = s
            .process_vec(input, &mut out, Action::Finish)
            .map_err(lzma_err)?;
        input = &input[(s.total_in() - before) as usize..];
        if st == Status::StreamEnd {
            return Ok(out);
        }
    }
}

/// xz variable-length integer.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One complete block: header, compressed data, padding, CRC32 check. Returns the bytes and
/// the unpadded size the index records.
fn block(compressed: &[u8], uncompressed: u64, prop: u8, check: u32) -> (Vec<u8>, u64) {
    let mut h = vec![0u8, 0xC0]; // size byte (filled below), flags: both sizes, 1 filter
    varint(&mut h, compressed.len() as u64);
    varint(&mut h, uncompressed);
    h.extend_from_slice(&[LZMA2_ID, 1, prop]);
    while (h.len() + 4) % 4 != 0 {
        h.push(0);
    }
    h[0] = ((h.len() + 4) / 4 - 1) as u8;
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    let unpadded = h.len() as u64 + compressed.len() as u64 + CHECK_SIZE;
    let mut b = h;
    b.extend_from_slice(compressed);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&check.to_le_bytes());
    (b, unpadded)
}

/// Compresses one data segment into one independent xz block.
pub(crate) struct BlockEncoder {
    preset: u32,
}

impl BlockEncoder {
    /// An encoder at xz preset `level` (0–9).
    pub fn new(level: i32) -> crate::Result<Self> {
        super::codec::check_level("xz", &LEVELS, level)?;
        Ok(BlockEncoder {
            preset: level as u32,
        })
    }
}

impl Encoder for BlockEncoder {
    fn encode(&self, _seg: &DataSegment, data: &[u8]) -> io::Result<Encoded> {
        let mut opts = LzmaOptions::new_preset(self.preset).map_err(lzma_err)?;
        // A dictionary larger than the block only costs the decoder memory.
        let want = u32::try_from(data.len()).unwrap_or(u32::MAX).max(4096);
        let prop = prop_for_dict(want.min(preset_dict_size(self.preset)));
        opts.dict_size(dict_of_prop(prop) as u32);
        let compressed = lzma2_raw(data, &opts)?;
        let (bytes, unpadded) = block(&compressed, data.len() as u64, prop, crc32fast::hash(data));
        Ok(Encoded {
            bytes,
            aux: unpadded,
            parts: Vec::new(),
        })
    }
}

/// xz's preset dictionary sizes (xz(1): -0 256 KiB … -9 64 MiB).
fn preset_dict_size(preset: u32) -> u32 {
    const KIB: u32 = 1024;
    const MIB: u32 = 1024 * 1024;
    match preset {
        0 => 256 * KIB,
        1 => MIB,
        2 => 2 * MIB,
        3 | 4 => 4 * MIB,
        5 | 6 => 8 * MIB,
        7 => 16 * MIB,
        8 => 32 * MIB,
        _ => 64 * MIB,
    }
}

/// The repeated zero chunk: one LZMA2 chunk of `ZERO_CHUNK` zeros that resets dictionary,
/// state and properties, so it is valid anywhere in a block; and the CRC32 state of its data.
struct ZeroChunk {
    chunk: Vec<u8>,
    crc: crc32fast::Hasher,
}

fn zero_chunk() -> io::Result<&'static ZeroChunk> {
    static Z: OnceLock<Result<ZeroChunk, String>> = OnceLock::new();
    Z.get_or_init(|| {
        let mut opts = LzmaOptions::new_preset(0).map_err(|e| e.to_string())?;
        opts.dict_size(ZERO_DICT);
        let raw = lzma2_raw(&vec![0u8; ZERO_CHUNK], &opts).map_err(|e| e.to_string())?;
        // Exactly one LZMA chunk with dictionary reset + new properties, then the end marker.
        let ok = raw.len() > 7
            && raw[0] >= 0xE0
            && raw.last() == Some(&0)
            && (usize::from(raw[0] & 0x1F) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]))
                + 1
                == ZERO_CHUNK
            && (usize::from(raw[3]) << 8 | usize::from(raw[4])) + 1 + 6 == raw.len() - 1;
        if !ok {
            return Err(format!(
                "liblzma did not encode zeros as one LZMA2 chunk ({} bytes, starting {:02x?})",
                raw.len(),
                &raw[..raw.len().min(8)]
            ));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&vec![0u8; ZERO_CHUNK]);
        Ok(ZeroChunk {
            chunk: raw[..raw.len() - 1].to_vec(),
            crc,
        })
    })
    .as_ref()
    .map_err(|e| io::Error::other(e.clone()))
}

/// A block decoding to `len` zero bytes (`len` ≥ 1), built without compressing.
fn zero_block(len: u64) -> io::Result<(Vec<u8>, u64)> {
    let z = zero_chunk()?;
    let whole = len / ZERO_CHUNK as u64;
    let rest = (len % ZERO_CHUNK as u64) as usize;
    let mut data = Vec::with_capacity(z.chunk.len() * whole as usize + 64);
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..whole {
        data.extend_from_slice(&z.chunk);
        crc.combine(&z.crc);
    }
    if rest > 0 {
        let mut opts = LzmaOptions::new_preset(0).map_err(lzma_err)?;
        opts.dict_size(ZERO_DICT);
        let zeros = vec![0u8; rest];
        // Its first chunk resets the dictionary too, so it may follow the repeated ones.
        data.extend_from_slice(&lzma2_raw(&zeros, &opts)?);
        let mut h = crc32fast::Hasher::new();
        h.update(&zeros);
        crc.combine(&h);
    } else {
        data.push(0);
    }
    Ok(block(&data, len, prop_for_dict(ZERO_DICT), crc.finalize()))
}

/// Writes blocks in order, then the index and stream footer.
#[derive(Default)]
pub(crate) struct XzWriter {
    started: bool,
    /// (unpadded size, uncompressed size) per block.
    records: Vec<(u64, u64)>,
    /// Where the next byte goes.
    pos: u64,
}

impl XzWriter {
    /// A writer for one xz stream.
    pub(crate) fn new() -> Self {
        XzWriter::default()
    }

    fn append(&mut self, out: &mut dyn WriteAt, bytes: &[u8]) -> io::Result<()> {
        out.write_all_at(self.pos, bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn start(&mut self, out: &mut dyn WriteAt) -> io::Result<()> {
        if !self.started {
            let mut h = HEADER_MAGIC.to_vec();
            h.extend_from_slice(&STREAM_FLAGS);
            h.extend_from_slice(&crc32fast::hash(&STREAM_FLAGS).to_le_bytes());
            self.append(out, &h)?;
            self.started = true;
        }
        Ok(())
    }
}

impl ArchiveWriter for XzWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        _data: &[u8],
        enc: &Encoded,
    ) -> io::Result<()> {
        self.start(out)?;
        self.append(out, &enc.bytes)?;
        self.records.push((enc.aux, seg.len as u64));
        Ok(())
    }

    fn zeros(&mut self, out: &mut dyn WriteAt, _offset: u64, mut len: u64) -> io::Result<()> {
        self.start(out)?;
        while len > 0 {
            let n = len.min(MAX_ZERO_BLOCK);
            let (b, unpadded) = zero_block(n)?;
            self.append(out, &b)?;
            self.records.push((unpadded, n));
            len -= n;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn WriteAt, _image_size: u64) -> io::Result<()> {
        self.start(out)?;
        let mut idx = vec![0u8];
        varint(&mut idx, self.records.len() as u64);
        for &(u, n) in &self.records {
            varint(&mut idx, u);
            varint(&mut idx, n);
        }
        while idx.len() % 4 != 0 {
            idx.push(0);
        }
        let crc = crc32fast::hash(&idx);
        idx.extend_from_slice(&crc.to_le_bytes());
        let backward =
            u32::try_from(idx.len() / 4 - 1).map_err(|_| io::Error::other("xz index too large"))?;
        let mut foot = Vec::with_capacity(12);
        foot.extend_from_slice(&[0; 4]);
        foot.extend_from_slice(&backward.to_le_bytes());
        foot.extend_from_slice(&STREAM_FLAGS);
        let c = crc32fast::hash(&foot[4..10]);
        foot[0..4].copy_from_slice(&c.to_le_bytes());
        foot.extend_from_slice(b"YZ");
        self.append(out, &idx)?;
        self.append(out, &foot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn blocks_and_zero_runs_decode_with_liblzma() {
        let mut f: Vec<u8> = Vec::new();
        let mut w = XzWriter::new();
        let e = BlockEncoder::new(6).unwrap();
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7000) as u8)
            .collect();
        let seg = DataSegment {
            offset: 0,
            len: data.len(),
            mapped: vec![],
        };
        let enc = e.encode(&seg, &data).unwrap();
        w.data(&mut f, &seg, &data, &enc).unwrap();
        let zeros = [1u64, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 << 20];
        for z in zeros {
            w.zeros(&mut f, 0, z).unwrap();
        }
        w.finish(&mut f, 0).unwrap();
        let out = decode(&f);
        let total: u64 = data.len() as u64 + zeros.iter().sum::<u64>();
        assert_eq!(out.len() as u64, total);
        assert_eq!(&out[..data.len()], &data[..]);
        assert!(out[data.len()..].iter().all(|&b| b == 0));
        // 64 MiB of zeros costs a few KiB.
        let (b, _) = zero_block(MAX_ZERO_BLOCK).unwrap();
        assert!(b.len() < 64 << 10, "{} bytes", b.len());
    }

    #[test]
    fn empty_image_is_a_valid_xz() {
        let mut f: Vec<u8> = Vec::new();
        let mut w = XzWriter::new();
        w.finish(&mut f, 0).unwrap();
        assert!(decode(&f).is_empty());
    }

    #[test]
    fn levels_are_checked() {
        assert!(BlockEncoder::new(10).is_err());
        assert!(BlockEncoder::new(-1).is_err());
    }
}
