//! The L1 and L2 tables of a qcow or qcow2 image, read once at open and turned into runs:
//! per distinct L2 table, a sorted list of pieces (stored bytes, a compressed cluster, zeros,
//! "ask the backing file"), contiguous clusters merged, so a read of contiguous clusters is
//! one read of the file and [`Layout::run_at`] is an index and a binary search.

use std::io::{self, Read};
use std::sync::Arc;

use super::header::{Codec, Header};
use crate::format::container::virt::{read_table, Layout, Run};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::be64;
use crate::{Error, ExtentMap};

/// Most pieces kept for the whole image (24 bytes each, 96 MiB): a hostile or absurdly
/// fragmented image is refused rather than held.
const MAX_PIECES: usize = 4 << 20;

/// Offset bits of a qcow2 L1 or standard L2 entry (bits 9 to 55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// qcow2: the cluster is compressed.
const COMPRESSED_V2: u64 = 1 << 62;
/// qcow: the cluster is compressed.
const COMPRESSED_V1: u64 = 1 << 63;
/// qcow2 standard L2 entry: the cluster reads as zeros.
const ZERO_FLAG: u64 = 1;

/// What one piece of an L2 table's span holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Not in this image: the backing file's bytes, or zeros.
    Parent,
    /// Zeros, whatever the backing file holds.
    Zero,
    /// Stored as is from this byte of the image on.
    Stored(u64),
    /// One compressed cluster; the value is its L2 descriptor, also its unit number.
    Coded(u64),
}

/// A piece: `kind` from `start` (bytes into its table's span) to the next piece's start.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: u64,
    kind: Kind,
}

/// One distinct L2 table, as pieces covering `len` bytes of disk.
struct Table {
    pieces: Vec<Piece>,
    len: u64,
}

/// Largest zstd window accepted in a compressed cluster (8 MiB: four of the largest
/// clusters).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// No L2 table behind an L1 entry.
const NO_TABLE: u32 = u32::MAX;

/// The disk of a qcow or qcow2 image, as its tables describe it.
pub(super) struct QcowLayout {
    src: Arc<dyn ReadAt>,
    size: u64,
    cluster_bits: u32,
    /// log2 of the bytes one L2 table maps.
    span_bits: u32,
    version: u32,
    codec: Codec,
    /// Per L1 entry the disk needs and the file holds: its table in `tables`, or
    /// [`NO_TABLE`]. Entries past the end of the file (a cut image) are not kept: no table.
    l1: Vec<u32>,
    tables: Vec<Table>,
}

/// Appends `kind` at `start`, merged into the last piece when it continues it.
fn push(pieces: &mut Vec<Piece>, start: u64, kind: Kind) {
    if let Some(last) = pieces.last() {
        let goes_on = match (last.kind, kind) {
            (Kind::Parent, Kind::Parent) | (Kind::Zero, Kind::Zero) => true,
            (Kind::Stored(a), Kind::Stored(b)) => a.checked_add(start - last.start) == Some(b),
            _ => false,
        };
        if goes_on {
            return;
        }
    }
    pieces.push(Piece { start, kind });
}

impl QcowLayout {
    /// Reads the L1 table and every distinct L2 table it points at, checking each pointer
    /// against the file. Damage that still reads (a last cluster cut short by the end of the
    /// file) is reported through `warn`.
    pub(super) fn build(
        h: &Header,
        src: Arc<dyn ReadAt>,
        warn: &mut dyn FnMut(String),
    ) -> crate::Result<QcowLayout> {
        let cb = h.cluster_bits;
        let span_bits = cb + h.l2_bits;
        let size = h.disk_size();
        let needed = h.size.div_ceil(1u64 << span_bits);
        // An L1 table cut short by the end of the file (a truncated image) reads as qemu
        // reads it: the missing entries are zeros, no L2 table. Its size is bounded by the
        // header's check, and only the part inside the file is read.
        let l1_len = needed * 8;
        let inside = src.size().saturating_sub(h.l1_offset).min(l1_len);
        let l1_bytes = if inside == 0 {
            Vec::new()
        } else {
            read_table(&*src, "qcow L1 table", h.l1_offset, inside)?
        };
        if inside < l1_len {
            warn(format!(
                "the L1 table ({needed} entries at byte {}) reaches past the end of the file \
                 ({} bytes): its missing entries read as unallocated, as qemu reads them",
                h.l1_offset,
                src.size()
            ));
        }
        let mut me = QcowLayout {
            src,
            size,
            cluster_bits: cb,
            span_bits,
            version: h.version,
            codec: h.codec,
            l1: Vec::with_capacity(l1_bytes.len() / 8),
            tables: Vec::new(),
        };
        let file_len = me.src.size();
        let entry_bytes: u64 = if h.extended_l2 { 16 } else { 8 };
        let table_bytes = entry_bytes << h.l2_bits;
        let per_table = 1u64 << h.l2_bits;
        // Distinct tables by (offset, entries used): L1 entries sharing a table share its
        // pieces; only the last L1 entry may use fewer entries than a whole table.
        let mut seen: std::collections::HashMap<(u64, u64), u32> = Default::default();
        let mut pieces_total = 0usize;
        let mut cut_short = 0u64;
        for (i, e) in l1_bytes.chunks_exact(8).enumerate() {
            let e = be64(e, 0).unwrap_or(0);
            let off = if h.version == 1 { e } else { e & OFFSET_MASK };
            if off == 0 {
                me.l1.push(NO_TABLE);
                continue;
            }
            if h.version >= 2 && off & ((1 << cb) - 1) != 0 {
                return Err(Error::corrupt(
                    "qcow L1 table",
                    format!("entry {i}: L2 table offset {off} is not cluster-aligned"),
                ));
            }
            if off
                .checked_add(table_bytes)
                .is_none_or(|end| end > file_len)
            {
                return Err(Error::corrupt(
                    "qcow L1 table",
                    format!(
                        "entry {i}: L2 table at byte {off} ({table_bytes} bytes) reaches past \
                         the end of the file ({file_len} bytes)"
                    ),
                ));
            }
            let base = (i as u64) << span_bits;
            let used = per_table.min((h.size - base).div_ceil(1 << cb));
            if let Some(&t) = seen.get(&(off, used)) {
                me.l1.push(t);
                continue;
            }
            let raw = read_table(&*me.src, "qcow L2 table", off, table_bytes)?;
            let table = me.compile(h, i, &raw, used, file_len, &mut cut_short)?;
            pieces_total += table.pieces.len();
            if pieces_total > MAX_PIECES {
                return Err(Error::Unsupported(format!(
                    "qcow image too fragmented: more than {MAX_PIECES} separate runs of \
                     clusters (at L1 entry {i})"
                )));
            }
            let t = u32::try_from(me.tables.len()).unwrap_or(NO_TABLE - 1);
            me.tables.push(table);
            seen.insert((off, used), t);
            me.l1.push(t);
        }
        if cut_short > 0 {
            warn(format!(
                "{cut_short} cluster(s) end past the end of the file (truncated image?): \
                 their missing bytes read as zeros"
            ));
        }
        Ok(me)
    }

    /// The pieces of one L2 table (`raw`, reached from L1 entry `l1i`), its first `used`
    /// entries.
    fn compile(
        &self,
        h: &Header,
        l1i: usize,
        raw: &[u8],
        used: u64,
        file_len: u64,
        cut_short: &mut u64,
    ) -> crate::Result<Table> {
        let cb = self.cluster_bits;
        let cs = 1u64 << cb;
        let bad = |j: u64, what: String| {
            Error::corrupt(
                "qcow L2 table",
                format!("L1 entry {l1i}, L2 entry {j}: {what}"),
            )
        };
        let mut pieces = Vec::new();
        let stride = if h.extended_l2 { 16 } else { 8 };
        for j in 0..used {
            let at = (j * stride) as usize;
            let e = be64(raw, at).unwrap_or(0);
            let start = j << cb;
            let compressed = if h.version == 1 {
                e & COMPRESSED_V1 != 0
            } else {
                e & COMPRESSED_V2 != 0
            };
            if compressed {
                let (coff, _) = self.compressed_extent(e);
                if coff >= file_len {
                    return Err(bad(
                        j,
                        format!(
                            "compressed cluster at byte {coff} lies past the end of the file \
                             ({file_len} bytes)"
                        ),
                    ));
                }
                push(&mut pieces, start, Kind::Coded(e));
                continue;
            }
            let off = if h.version == 1 { e } else { e & OFFSET_MASK };
            // One stored stretch of `len` bytes from `host`, cut where the file ends.
            let mut stored = |pieces: &mut Vec<Piece>, s: u64, host: u64, len: u64| {
                if host >= file_len {
                    return Err(bad(
                        j,
                        format!(
                            "cluster at byte {host} lies past the end of the file \
                             ({file_len} bytes)"
                        ),
                    ));
                }
                push(pieces, s, Kind::Stored(host));
                if host + len > file_len {
                    *cut_short += 1;
                    push(pieces, s + (file_len - host), Kind::Zero);
                }
                Ok(())
            };
            if h.extended_l2 {
                let bitmap = be64(raw, at + 8).unwrap_or(0);
                let sc = cs / 32;
                for k in 0..32u64 {
                    let alloc = bitmap >> k & 1 != 0;
                    let zero = bitmap >> (32 + k) & 1 != 0;
                    let s = start + k * sc;
                    match (alloc, zero) {
                        (true, true) => {
                            return Err(bad(
                                j,
                                format!("subcluster {k} is marked both allocated and zero"),
                            ))
                        }
                        (true, false) if off == 0 => {
                            return Err(bad(
                                j,
                                format!("subcluster {k} is allocated in a cluster with no offset"),
                            ))
                        }
                        (true, false) => stored(&mut pieces, s, off + k * sc, sc)?,
                        (false, true) => push(&mut pieces, s, Kind::Zero),
                        (false, false) => push(&mut pieces, s, Kind::Parent),
                    }
                }
                continue;
            }
            if h.version >= 2 && e & ZERO_FLAG != 0 {
                push(&mut pieces, start, Kind::Zero);
            } else if off == 0 {
                push(&mut pieces, start, Kind::Parent);
            } else {
                if h.version >= 2 && off & (cs - 1) != 0 {
                    return Err(bad(
                        j,
                        format!("cluster offset {off} is not cluster-aligned"),
                    ));
                }
                stored(&mut pieces, start, off, cs)?;
            }
        }
        pieces.shrink_to_fit();
        Ok(Table {
            pieces,
            len: used << cb,
        })
    }

    /// Where a compressed cluster's bytes are in the file and how many there are at most
    /// (bounded by the descriptor's field widths: under 2 clusters).
    fn compressed_extent(&self, e: u64) -> (u64, u64) {
        let cb = self.cluster_bits;
        if self.version == 1 {
            let shift = 63 - cb;
            (e & ((1 << shift) - 1), (e >> shift) & ((1 << cb) - 1))
        } else {
            // Offset in the low bits, then the count of 512-byte sectors after the first.
            let shift = 62 - (cb - 8);
            let off = e & ((1 << shift) - 1);
            let sectors = ((e >> shift) & ((1 << (cb - 8)) - 1)) + 1;
            (off, sectors * 512 - (off & 511))
        }
    }

    /// The ranges of the disk whose pieces satisfy `want` (and, with `none`, the spans of
    /// L1 entries without a table). Exact up to [`MAX_PIECES`] ranges; past that (many L1
    /// entries sharing fragmented tables) whole spans, which only widens a hint.
    fn ranges(&self, want: fn(Kind) -> bool, none: bool) -> ExtentMap {
        let span = 1u64 << self.span_bits;
        let mut m = ExtentMap::new();
        let mut count = 0usize;
        for (i, &t) in self.l1.iter().enumerate() {
            let base = (i as u64) << self.span_bits;
            if t == NO_TABLE {
                if none {
                    m.insert(base, base + span);
                }
                continue;
            }
            let table = &self.tables[t as usize];
            count += table.pieces.len();
            if count > MAX_PIECES {
                return self.coarse(want, none);
            }
            for (k, p) in table.pieces.iter().enumerate() {
                if want(p.kind) {
                    let end = table.pieces.get(k + 1).map_or(table.len, |n| n.start);
                    m.insert(base + p.start, base + end);
                }
            }
        }
        if none {
            m.insert((self.l1.len() as u64) << self.span_bits, self.size);
        }
        m.clip(self.size)
    }

    /// [`Self::ranges`] by whole L2 spans.
    fn coarse(&self, want: fn(Kind) -> bool, none: bool) -> ExtentMap {
        let span = 1u64 << self.span_bits;
        let mut m = ExtentMap::new();
        for (i, &t) in self.l1.iter().enumerate() {
            let base = (i as u64) << self.span_bits;
            let hit = match self.tables.get(t as usize) {
                None => none,
                Some(table) => table.pieces.iter().any(|p| want(p.kind)),
            };
            if hit {
                m.insert(base, base + span);
            }
        }
        if none {
            m.insert((self.l1.len() as u64) << self.span_bits, self.size);
        }
        m.clip(self.size)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Layout for QcowLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let i = (offset >> self.span_bits) as usize;
        let rel = offset & ((1u64 << self.span_bits) - 1);
        let span_left = (1u64 << self.span_bits) - rel;
        if offset >= self.size {
            return Err(invalid(format!("byte {offset} lies past the qcow disk")));
        }
        let t = self.l1.get(i).copied().unwrap_or(NO_TABLE);
        let Some(table) = self.tables.get(t as usize) else {
            return Ok((Run::Parent, span_left));
        };
        let k = table.pieces.partition_point(|p| p.start <= rel);
        let Some(p) = k.checked_sub(1).and_then(|k| table.pieces.get(k)) else {
            return Err(invalid(format!(
                "byte {offset}: no qcow L2 piece covers it"
            )));
        };
        let end = table.pieces.get(k).map_or(table.len, |n| n.start);
        if end <= rel {
            return Err(invalid(format!(
                "byte {offset} lies past the entries of its qcow L2 table"
            )));
        }
        let skip = rel - p.start;
        let run = match p.kind {
            Kind::Parent => Run::Parent,
            Kind::Zero => Run::Zero,
            Kind::Stored(at) => Run::Stored {
                file: 0,
                at: at + skip,
            },
            Kind::Coded(unit) => Run::Coded { unit, skip },
        };
        Ok((run, end - rel))
    }

    fn decode(&self, unit: u64) -> io::Result<Vec<u8>> {
        let cs = 1usize << self.cluster_bits;
        let (off, len) = self.compressed_extent(unit);
        // The last compressed cluster may end before its last sector does.
        let len = len.min(self.src.size().saturating_sub(off));
        let input = self.src.read_vec(off, len as usize)?;
        let mut out = vec![0u8; cs];
        let what = || format!("qcow compressed cluster at byte {off} ({len} bytes)");
        match self.codec {
            Codec::Deflate => {
                let mut d = flate2::Decompress::new(false);
                d.decompress(&input, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| invalid(format!("{}: {e}", what())))?;
                if d.total_out() != cs as u64 {
                    return Err(invalid(format!(
                        "{}: inflates to {} bytes, not a cluster of {cs}",
                        what(),
                        d.total_out()
                    )));
                }
            }
            Codec::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(&input[..])
                    .map_err(|e| invalid(format!("{}: {e}", what())))?
                    .single_frame();
                // A frame may claim a window of up to 128 MiB, which the decoder would
                // allocate; qemu's frames code one cluster (2 MiB at most) and need no more.
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|e| invalid(format!("{}: {e}", what())))?;
                d.read_exact(&mut out)
                    .map_err(|e| invalid(format!("{}: zstd: {e}", what())))?;
            }
        }
        Ok(out)
    }

    fn stored(&self) -> ExtentMap {
        self.ranges(|k| matches!(k, Kind::Stored(_) | Kind::Coded(_)), false)
    }

    fn parent_ranges(&self) -> ExtentMap {
        self.ranges(|k| k == Kind::Parent, true)
    }

    fn unit_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}
