//! qcow2 writer (version 3): what QEMU runs and `qemu-img check` finds clean.
//!
//! The plan hands this writer whole clusters (segments aligned to the cluster size), in
//! image order. The [`ClusterEncoder`] classifies each cluster on any core (all zero, stored
//! as it is, or compressed) and the [`Qcow2Writer`] lays the file out as the data arrives:
//!
//! ```text
//!   cluster 0      header (104 bytes + the compression-type byte, 112) and the end of the
//!                  header extensions
//!   clusters 1..   the L1 table, sized for the whole disk up front
//!   then, in image order: each L2 table just before the first cluster it maps, data
//!                  clusters, compressed clusters packed byte after byte
//!   at the end     the refcount blocks (16-bit), then the refcount table
//! ```
//!
//! Only one L2 table is held in memory (data arrive in order, so a table is complete when
//! the next one starts), plus one 16-bit refcount per cluster of the output file (the output
//! of a 2 TiB disk full of data at 64 KiB clusters: 64 MiB). Free space is left unallocated
//! (L2 entry 0, or no L2 table at all); a mapped cluster that is all zeros is a zero cluster
//! (flag bit 0, version 3), so it costs no data and still reads as zeros. Every cluster the
//! file holds is referenced exactly as often as its refcount says: a host cluster shared by
//! compressed clusters counts each of them, as qemu's own check does.

use std::cell::RefCell;
use std::io;

use super::codec::{
    check_level, ArchiveWriter, ClusterCompression, ContainerOptions, Encoded, Encoder,
};
use super::plan::DataSegment;
use super::sparse::all_zero;
use crate::io::WriteAt;

const MAGIC: u32 = 0x5146_49FB;
/// Header bytes written: the version 3 header (104), the compression type byte, padding to a
/// multiple of 8 (qemu writes the same length).
const HEADER_LEN: u32 = 112;
/// L1/L2 entry flag: the cluster's refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// L2 entry flag: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// L2 entry flag (version 3): the cluster reads as zeros.
const ZERO: u64 = 1;
/// Incompatible feature bit 3: the header's compression type field is not zlib.
const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
/// qemu refuses larger L1 tables (QCOW_MAX_L1_SIZE).
const MAX_L1_BYTES: u64 = 32 << 20;
/// Part size the encoder reports for a cluster stored as it is.
const STORED: u32 = u32::MAX;

/// zlib levels (0 would store, which an uncompressed qcow2 does better).
pub(crate) const ZLIB_LEVELS: std::ops::RangeInclusive<i32> = 1..=9;

/// Classifies (and, if asked, compresses) each cluster of a segment; runs on any core.
pub(crate) struct ClusterEncoder {
    cluster: usize,
    compress: Option<(ClusterCompression, i32)>,
}

impl ClusterEncoder {
    /// An encoder for `cluster`-byte clusters, compressing with `compress` at `level`.
    pub(crate) fn new(opts: &ContainerOptions, level: i32) -> crate::Result<Self> {
        let compress = match opts.compress {
            Some(ClusterCompression::Zlib) => {
                check_level("zlib", &ZLIB_LEVELS, level)?;
                Some((ClusterCompression::Zlib, level))
            }
            Some(ClusterCompression::Zstd) => {
                check_level("zstd", &super::zstd::LEVELS, level)?;
                Some((ClusterCompression::Zstd, level))
            }
            None => None,
        };
        Ok(ClusterEncoder {
            cluster: opts.cluster_size as usize,
            compress,
        })
    }
}

thread_local! {
    // One context per worker thread for each codec, reused across clusters (a context per
    // 64 KiB cluster would cost more than the compression).
    static ZLIB: RefCell<Option<(i32, flate2::Compress)>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// `data` compressed as qcow2 wants it, if that takes at most `limit` bytes.
fn compress(
    codec: ClusterCompression,
    level: i32,
    data: &[u8],
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(limit);
    match codec {
        ClusterCompression::Zlib => ZLIB.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                // Raw deflate with a 4 KiB window: qemu inflates with windowBits -12, and a
                // longer distance would be "too far back" for it.
                let z = flate2::Compress::new_with_window_bits(
                    flate2::Compression::new(level as u32),
                    false,
                    12,
                );
                *c = Some((level, z));
            }
            let (_, z) = c.as_mut().expect("context just created");
            z.reset();
            let st = z
                .compress_vec(data, &mut out, flate2::FlushCompress::Finish)
                .map_err(|e| io::Error::other(format!("zlib: {e}")))?;
            Ok((st == flate2::Status::StreamEnd).then_some(out))
        }),
        ClusterCompression::Zstd => ZSTD.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let (_, z) = c.as_mut().expect("context just created");
            // Too small an output buffer is an error: the cluster does not shrink enough.
            Ok(z.compress_to_buffer(data, &mut out).ok().map(|_| out))
        }),
    }
}

impl Encoder for ClusterEncoder {
    /// `parts`: per cluster, 0 (all zero), [`STORED`], or the length of its compressed bytes
    /// in `bytes`.
    fn encode(&self, _seg: &DataSegment, data: &[u8]) -> io::Result<Encoded> {
        let mut enc = Encoded::default();
        let mut padded = Vec::new();
        for chunk in data.chunks(self.cluster) {
            if all_zero(chunk) {
                enc.parts.push(0);
                continue;
            }
            let Some((codec, level)) = self.compress else {
                enc.parts.push(STORED);
                continue;
            };
            // The last cluster of a disk that ends inside it is compressed whole, as qemu
            // does: readers decompress a full cluster.
            let input = if chunk.len() < self.cluster {
                padded.clear();
                padded.extend_from_slice(chunk);
                padded.resize(self.cluster, 0);
                &padded[..]
            } else {
                chunk
            };
            match compress(codec, level, input, self.cluster - 1)? {
                Some(c) if !c.is_empty() => {
                    enc.parts.push(c.len() as u32);
                    enc.bytes.extend_from_slice(&c);
                }
                _ => enc.parts.push(STORED),
            }
        }
        Ok(enc)
    }
}

/// The L2 table being filled.
struct L2 {
    /// Its index in the L1 table.
    index: usize,
    /// Where it goes in the file.
    host: u64,
    entries: Vec<u64>,
}

/// Lays out the qcow2 file as clusters arrive in image order.
pub(crate) struct Qcow2Writer {
    cluster_bits: u32,
    cluster: u64,
    size: u64,
    compression: Option<ClusterCompression>,
    l1: Vec<u64>,
    l1_offset: u64,
    l2: Option<L2>,
    /// Next free byte of the file (compressed clusters pack; anything else starts on a
    /// cluster boundary).
    pos: u64,
    /// Refcount of every cluster of the file so far.
    refs: Vec<u16>,
}

impl Qcow2Writer {
    /// A writer for a disk of `size` bytes.
    pub(crate) fn new(size: u64, opts: &ContainerOptions) -> crate::Result<Self> {
        let c = u64::from(opts.cluster_size);
        if !c.is_power_of_two() || !(512..=2 << 20).contains(&c) {
            return Err(crate::Error::Unsupported(format!(
                "qcow2 cluster size {c}: it must be a power of two from 512 bytes to 2 MiB"
            )));
        }
        let cluster_bits = c.trailing_zeros();
        let per_l2 = c / 8;
        let l1_entries = size.div_ceil(c * per_l2);
        if l1_entries * 8 > MAX_L1_BYTES {
            return Err(crate::Error::Unsupported(format!(
                "a {size}-byte disk needs a qcow2 L1 table larger than qemu accepts (32 MiB) at {c}-byte clusters; use larger clusters"
            )));
        }
        let l1_clusters = (l1_entries * 8).div_ceil(c).max(1);
        Ok(Qcow2Writer {
            cluster_bits,
            cluster: c,
            size,
            compression: opts.compress,
            l1: vec![0; l1_entries as usize],
            l1_offset: c,
            l2: None,
            pos: (1 + l1_clusters) * c,
            refs: vec![1; 1 + l1_clusters as usize],
        })
    }

    fn bump(&mut self, cluster: u64) -> io::Result<()> {
        let i = usize::try_from(cluster).map_err(|_| io::Error::other("qcow2 file too large"))?;
        if i >= self.refs.len() {
            self.refs.resize(i + 1, 0);
        }
        self.refs[i] = self.refs[i]
            .checked_add(1)
            .ok_or_else(|| io::Error::other("a qcow2 cluster's refcount would pass 65535"))?;
        Ok(())
    }

    /// A fresh cluster at the end of the file.
    fn alloc_cluster(&mut self) -> io::Result<u64> {
        let host = self.pos.div_ceil(self.cluster) * self.cluster;
        self.pos = host + self.cluster;
        self.bump(host >> self.cluster_bits)?;
        Ok(host)
    }

    fn flush_l2(&mut self, out: &mut dyn WriteAt) -> io::Result<()> {
        if let Some(t) = self.l2.take() {
            out.write_all_at(t.host, &be64s(&t.entries))?;
        }
        Ok(())
    }

    /// Sets the L2 entry of guest cluster `idx`, starting its L2 table if needed.
    fn set(&mut self, out: &mut dyn WriteAt, idx: u64, entry: u64) -> io::Result<()> {
        let per_l2 = self.cluster / 8;
        let l1i = (idx / per_l2) as usize;
        if self.l2.as_ref().map(|t| t.index) != Some(l1i) {
            self.flush_l2(out)?;
            let host = self.alloc_cluster()?;
            self.l1[l1i] = host | COPIED;
            self.l2 = Some(L2 {
                index: l1i,
                host,
                entries: vec![0; per_l2 as usize],
            });
        }
        let t = self.l2.as_mut().expect("table just started");
        t.entries[(idx % per_l2) as usize] = entry;
        Ok(())
    }

    fn header(&self, refcount_table: u64, refcount_clusters: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN as usize + 8];
        let put32 =
            |h: &mut Vec<u8>, at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |h: &mut Vec<u8>, at: usize, v: u64| h[at..at + 8].copy_from_slice(&v.to_be_bytes());
        put32(&mut h, 0, MAGIC);
        put32(&mut h, 4, 3);
        put32(&mut h, 20, self.cluster_bits);
        put64(&mut h, 24, self.size);
        put32(&mut h, 36, self.l1.len() as u32);
        put64(&mut h, 40, self.l1_offset);
        put64(&mut h, 48, refcount_table);
        put32(&mut h, 56, refcount_clusters);
        let zstd = self.compression == Some(ClusterCompression::Zstd);
        put64(&mut h, 72, if zstd { INCOMPAT_COMPRESSION_TYPE } else { 0 });
        put32(&mut h, 96, 4); // refcount_order: 16-bit refcounts
        put32(&mut h, 100, HEADER_LEN);
        h[104] = u8::from(zstd); // compression type: 0 zlib, 1 zstd
                                 // Bytes 112..120: the end-of-extensions marker (type 0, length 0), already zero.
        h
    }
}

/// Big-endian u64s as bytes.
fn be64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn overlaps(seg: &DataSegment, start: u64, end: u64) -> bool {
    seg.mapped.iter().any(|e| e.start < end && e.end > start)
}

impl ArchiveWriter for Qcow2Writer {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        enc: &Encoded,
    ) -> io::Result<()> {
        let c = self.cluster;
        if seg.offset % c != 0 || enc.parts.len() != data.len().div_ceil(c as usize) {
            return Err(io::Error::other(format!(
                "internal error: qcow2 writer given a segment at {} not cut on clusters",
                seg.offset
            )));
        }
        let mut at = 0usize;
        // Stored clusters go to consecutive host clusters (unless an L2 table comes between):
        // they are written as one run, not a write per cluster.
        let mut run: Option<(u64, usize, usize)> = None; // (host, data start, data end)
        for (k, &part) in enc.parts.iter().enumerate() {
            let start = seg.offset + k as u64 * c;
            let end = (start + c).min(seg.end());
            let idx = start >> self.cluster_bits;
            match part {
                0 if overlaps(seg, start, end) => self.set(out, idx, ZERO)?,
                0 => {}
                STORED => {
                    let host = self.alloc_cluster()?;
                    let s = k * c as usize;
                    let e = s + (end - start) as usize;
                    run = match run {
                        Some((h, rs, re)) if h + (re - rs) as u64 == host && re == s => {
                            Some((h, rs, e))
                        }
                        other => {
                            if let Some((h, rs, re)) = other {
                                out.write_all_at(h, &data[rs..re])?;
                            }
                            Some((host, s, e))
                        }
                    };
                    self.set(out, idx, host | COPIED)?;
                }
                n => {
                    let bytes = enc.bytes.get(at..at + n as usize).ok_or_else(|| {
                        io::Error::other("internal error: qcow2 parts past the encoded bytes")
                    })?;
                    at += n as usize;
                    let host = self.pos;
                    out.write_all_at(host, bytes)?;
                    let last = host + u64::from(n) - 1;
                    for cl in (host >> self.cluster_bits)..=(last >> self.cluster_bits) {
                        self.bump(cl)?;
                    }
                    self.pos = last + 1;
                    // The entry counts the 512-byte sectors after the first that the data
                    // touches, in the bits above the host offset.
                    let extra = (last >> 9) - (host >> 9);
                    let shift = 62 - (self.cluster_bits - 8);
                    self.set(out, idx, COMPRESSED | (extra << shift) | host)?;
                }
            }
        }
        if let Some((h, rs, re)) = run {
            out.write_all_at(h, &data[rs..re])?;
        }
        Ok(())
    }

    fn zeros(&mut self, _out: &mut dyn WriteAt, _offset: u64, _len: u64) -> io::Result<()> {
        // Free space: unallocated clusters.
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn WriteAt, _image_size: u64) -> io::Result<()> {
        self.flush_l2(out)?;
        out.write_all_at(self.l1_offset, &be64s(&self.l1))?;
        let c = self.cluster;
        let n = self.pos.div_ceil(c);
        // The refcount blocks and table cover themselves: grow both until they do.
        let per_block = c / 2;
        let per_table = c / 8;
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = n + blocks + table;
            let b = total.div_ceil(per_block);
            let t = b.div_ceil(per_table);
            if (b, t) == (blocks, table) {
                break;
            }
            (blocks, table) = (b, t);
        }
        for cl in n..n + blocks + table {
            self.bump(cl)?;
        }
        self.refs.resize((n + blocks + table) as usize, 0);
        for b in 0..blocks {
            let from = (b * per_block) as usize;
            let to = (from + per_block as usize).min(self.refs.len());
            let mut blk = vec![0u8; c as usize];
            for (i, r) in self.refs[from..to].iter().enumerate() {
                blk[2 * i..2 * i + 2].copy_from_slice(&r.to_be_bytes());
            }
            out.write_all_at((n + b) * c, &blk)?;
        }
        let mut tbl = vec![0u64; (table * per_table) as usize];
        for b in 0..blocks {
            tbl[b as usize] = (n + b) * c;
        }
        let table_at = (n + blocks) * c;
        out.write_all_at(table_at, &be64s(&tbl))?;
        let refcount_clusters =
            u32::try_from(table).map_err(|_| io::Error::other("qcow2 refcount table too large"))?;
        out.write_all_at(0, &self.header(table_at, refcount_clusters))?;
        out.set_len(table_at + table * c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Extent;

    fn seg(offset: u64, len: usize) -> DataSegment {
        DataSegment {
            offset,
            len,
            mapped: vec![Extent {
                start: offset,
                end: offset + len as u64,
            }],
        }
    }

    fn refcount_of(file: &[u8], cluster: u64) -> u16 {
        let table = u64::from_be_bytes(file[48..56].try_into().unwrap()) as usize;
        let c = 1u64 << u32::from_be_bytes(file[20..24].try_into().unwrap());
        let block = u64::from_be_bytes(file[table..table + 8].try_into().unwrap()) as usize;
        let i = block + 2 * cluster as usize;
        assert!(cluster < c / 2);
        u16::from_be_bytes(file[i..i + 2].try_into().unwrap())
    }

    #[test]
    fn every_cluster_of_the_file_is_counted_once_or_per_compressed_user() {
        for compress in [
            None,
            Some(ClusterCompression::Zlib),
            Some(ClusterCompression::Zstd),
        ] {
            let opts = ContainerOptions {
                cluster_size: 4096,
                compress,
            };
            let size = 1 << 20;
            let e = ClusterEncoder::new(&opts, 3).unwrap();
            let mut w = Qcow2Writer::new(size, &opts).unwrap();
            let mut f: Vec<u8> = Vec::new();
            let mut d = vec![0u8; 64 << 10];
            for (i, b) in d.iter_mut().enumerate().skip(4096) {
                *b = (i % 7) as u8;
            }
            let s = seg(0, d.len());
            let enc = e.encode(&s, &d).unwrap();
            assert_eq!(enc.parts[0], 0);
            w.data(&mut f, &s, &d, &enc).unwrap();
            w.zeros(&mut f, d.len() as u64, size - d.len() as u64)
                .unwrap();
            w.finish(&mut f, size).unwrap();
            assert_eq!(f.len() % 4096, 0);
            let clusters = f.len() as u64 / 4096;
            for cl in 0..clusters {
                assert!(
                    refcount_of(&f, cl) >= 1,
                    "{compress:?}: cluster {cl} unreferenced"
                );
            }
            if compress.is_some() {
                // 15 compressible clusters share far fewer host clusters.
                assert!(clusters < 8, "{compress:?}: {clusters} clusters");
            }
        }
    }

    #[test]
    fn bad_cluster_sizes_are_refused() {
        for c in [256u32, 3000, 4 << 20] {
            let o = ContainerOptions {
                cluster_size: c,
                compress: None,
            };
            assert!(Qcow2Writer::new(1 << 20, &o).is_err());
        }
    }
}
