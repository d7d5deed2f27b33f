//! A VMDK sparse extent: the hosted `KDMV` format (monolithicSparse, streamOptimized, the
//! pieces of twoGbMaxExtentSparse) and the ESX `COWD` format (vmfsSparse). Both are a grain
//! directory (GD) of grain tables (GT) of grain entries (GTE), each the sector in the file
//! where a grain of the disk is stored: 0 is "not here" (the parent, or zeros), 1 is a zero
//! grain when the header says zero grains are in use, anything else a sector.
//!
//! Every number is hostile: the directory is sized against the file before it is read, grain
//! tables are read one at a time (a small cache serves reads), and what the tables say is
//! checked against the file when it is used.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use crate::format::container::virt::read_table;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};
use crate::{Error, ExtentMap};

/// VMDK sizes and offsets are in 512-byte sectors.
pub(super) const SECTOR: u64 = 512;

/// The header's directory offset when the directory is found through the footer.
const GD_AT_END: u64 = u64::MAX;

/// Most grain-directory entries taken (64 MiB of directory): 4 PiB of disk with the usual
/// 512-entry tables of 64 KiB grains, and still 8 GiB with the smallest grains possible.
const MAX_GD_ENTRIES: u64 = 16 << 20;

/// Largest grain: 1 GiB, as qemu.
const MAX_GRAIN_SECTORS: u64 = 0x20_0000;

/// Largest compressed grain decoded: a decoded grain is held in memory.
const MAX_CODED_GRAIN: u64 = 16 << 20;

/// Grain tables kept in memory for reads.
const GT_CACHE: usize = 64;

/// Ranges recorded for the allocation map before it is given up for "all of it" (a hostile
/// pattern of alternating grains would otherwise grow it without bound).
const MAX_RANGES: usize = 1 << 20;

/// Flag bits of a `KDMV` header.
const FLAG_RGD: u32 = 1 << 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_MARKERS: u32 = 1 << 17;

/// What the header of a sparse extent says.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    /// `KDMV` (hosted) or `COWD` (ESX).
    pub(crate) magic: &'static str,
    /// Format version.
    pub(crate) version: u32,
    /// Size of the extent, in sectors.
    pub(crate) capacity: u64,
    /// Grain size, in sectors.
    pub(crate) grain: u64,
    /// The embedded descriptor: offset and size in sectors, if any.
    pub(crate) descriptor: Option<(u64, u64)>,
    /// Entries per grain table.
    pub(crate) gtes: u64,
    /// Sector of the grain directory.
    pub(crate) gd_offset: u64,
    /// Grains are deflate-compressed (streamOptimized).
    pub(crate) compressed: bool,
    /// Grains are preceded by a 12-byte marker (LBA, size).
    pub(crate) markers: bool,
    /// Entry 1 means a zero grain.
    pub(crate) zero_grain: bool,
    /// The directory was found through the footer at the end of the file.
    pub(crate) from_footer: bool,
    /// A redundant directory is kept (not read: qemu reads the primary one alone).
    pub(crate) redundant: bool,
}

fn corrupt(what: &'static str, detail: String) -> Error {
    Error::corrupt(what, detail)
}

/// Parses the `KDMV` header fields of `h` (the sector starting with the magic).
fn kdmv(h: &[u8], name: &str) -> crate::Result<Header> {
    let short = || corrupt("vmdk header", format!("{name}: shorter than one sector"));
    let version = le32(h, 4).ok_or_else(short)?;
    let flags = le32(h, 8).ok_or_else(short)?;
    let capacity = le64(h, 12).ok_or_else(short)?;
    let grain = le64(h, 20).ok_or_else(short)?;
    let desc_off = le64(h, 28).ok_or_else(short)?;
    let desc_len = le64(h, 36).ok_or_else(short)?;
    let gtes = u64::from(le32(h, 44).ok_or_else(short)?);
    let gd_offset = le64(h, 56).ok_or_else(short)?;
    let algo = le16(h, 77).ok_or_else(short)?;
    Ok(Header {
        magic: "KDMV",
        version,
        capacity,
        grain,
        descriptor: (desc_off != 0 && desc_len != 0).then_some((desc_off, desc_len)),
        gtes,
        gd_offset,
        // As qemu: the algorithm field decides, not flag bit 16.
        compressed: algo == 1,
        markers: flags & FLAG_MARKERS != 0,
        zero_grain: flags & FLAG_ZERO_GRAIN != 0,
        from_footer: false,
        redundant: flags & FLAG_RGD != 0,
    })
}

/// Reads the header of the sparse extent in `src` (`name` for messages), following a
/// streamOptimized file's footer when the header puts the directory at the end.
pub(crate) fn header(src: &dyn ReadAt, name: &str) -> crate::Result<Header> {
    let h = src.read_upto(0, SECTOR as usize)?;
    if h.starts_with(b"COWD") {
        let short = || {
            corrupt(
                "vmdk COWD header",
                format!("{name}: shorter than one sector"),
            )
        };
        let f = |off| le32(&h, off).map(u64::from).ok_or_else(short);
        return Ok(Header {
            magic: "COWD",
            version: f(4)? as u32,
            capacity: f(12)?,
            grain: f(16)?,
            descriptor: None,
            gtes: 4096,
            gd_offset: f(20)?,
            compressed: false,
            markers: false,
            zero_grain: false,
            from_footer: false,
            redundant: false,
        });
    }
    if !h.starts_with(b"KDMV") {
        return Err(Error::Format(format!("{name}: not a VMDK sparse extent")));
    }
    let mut hd = kdmv(&h, name)?;
    if hd.gd_offset == GD_AT_END {
        // streamOptimized written front to back: the footer (a footer marker, a copy of the
        // header with the real directory offset, an end-of-stream marker) ends the file.
        let size = src.size();
        let at = size.checked_sub(3 * SECTOR).ok_or_else(|| {
            corrupt(
                "vmdk footer",
                format!("{name}: the header puts the grain directory in the footer, but the file is only {size} bytes"),
            )
        })?;
        let f = src.read_vec(at, 3 * SECTOR as usize)?;
        let marker_ok = le32(&f, 8) == Some(0) && le32(&f, 12) == Some(3);
        let eos_ok =
            le64(&f, 1024) == Some(0) && le32(&f, 1032) == Some(0) && le32(&f, 1036) == Some(0);
        if !marker_ok || !f[512..].starts_with(b"KDMV") || !eos_ok {
            return Err(corrupt(
                "vmdk footer",
                format!(
                    "{name}: the header puts the grain directory in the footer, but the last \
                     1536 bytes (at byte {at}) are not a footer marker, header and \
                     end-of-stream marker"
                ),
            ));
        }
        hd = kdmv(&f[512..1024], name)?;
        hd.from_footer = true;
        if hd.gd_offset == GD_AT_END {
            return Err(corrupt(
                "vmdk footer",
                format!("{name}: the footer too puts the grain directory at the end"),
            ));
        }
    }
    Ok(hd)
}

/// What a stretch of a sparse extent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// Not in this extent: the parent's, or zeros.
    Parent,
    /// A zero grain.
    Zero,
    /// Stored as is at this byte of the extent file.
    Stored(u64),
    /// Inside the compressed grain whose entry is `gte`, `skip` bytes into it.
    Coded { gte: u32, skip: u64 },
}

/// A least-recently-used set of grain tables, by sector.
#[derive(Default)]
struct GtCache {
    tables: Vec<(u32, Arc<Vec<u32>>, u64)>,
    tick: u64,
}

/// An opened sparse extent.
pub(crate) struct Sparse {
    src: Arc<dyn ReadAt>,
    name: String,
    /// Bytes of disk the extent holds.
    pub(super) size: u64,
    /// Grain size in bytes.
    pub(super) grain: u64,
    gtes: u64,
    gd: Vec<u32>,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
    cache: Mutex<GtCache>,
    /// What the extent stores, relative to its start.
    pub(super) stored: ExtentMap,
    /// What the extent leaves to the parent.
    pub(super) parent: ExtentMap,
    /// Grains whose entries point past the end of the file.
    pub(super) past_eof: u64,
    /// The header read.
    pub(super) header: Header,
}

/// Appends `[s, e)` to a sorted range list, merging with the last range when they touch.
fn push(v: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    if let Some(last) = v.last_mut() {
        if last.1 == s {
            last.1 = e;
            return;
        }
    }
    v.push((s, e));
}

impl Sparse {
    /// Opens the sparse extent in `src` described by `h`: checks the header's numbers, reads
    /// the grain directory and every grain table once to learn what is stored where.
    pub(crate) fn open(src: Arc<dyn ReadAt>, name: &str, h: Header) -> crate::Result<Sparse> {
        let hdr = |d: String| corrupt("vmdk header", format!("{name}: {d}"));
        if h.magic == "KDMV" && h.version > 3 {
            return Err(Error::Unsupported(format!(
                "{name}: VMDK sparse extent version {}",
                h.version
            )));
        }
        if h.grain == 0 {
            return Err(hdr("grain size 0 sectors".into()));
        }
        if !h.grain.is_power_of_two() {
            return Err(hdr(format!(
                "grain size {} sectors is not a power of two",
                h.grain
            )));
        }
        if h.grain > MAX_GRAIN_SECTORS {
            return Err(hdr(format!(
                "grain size {} sectors is more than 1 GiB",
                h.grain
            )));
        }
        let grain = h.grain * SECTOR;
        if h.compressed && grain > MAX_CODED_GRAIN {
            return Err(hdr(format!(
                "compressed grains of {} bytes: more than the {} MiB decoded here",
                grain,
                MAX_CODED_GRAIN >> 20
            )));
        }
        if h.gtes == 0 || h.gtes > 4096 || (h.magic == "KDMV" && h.gtes > 512) {
            return Err(hdr(format!("{} entries per grain table", h.gtes)));
        }
        let size = h
            .capacity
            .checked_mul(SECTOR)
            .ok_or_else(|| hdr(format!("capacity {} sectors overflows", h.capacity)))?;
        let span = h.gtes * grain;
        let entries = size.div_ceil(span);
        if entries > MAX_GD_ENTRIES {
            return Err(corrupt(
                "vmdk grain directory",
                format!(
                    "{name}: capacity {} sectors needs {entries} grain-directory entries, more \
                     than the {MAX_GD_ENTRIES} taken",
                    h.capacity
                ),
            ));
        }
        let gd_at = h.gd_offset.checked_mul(SECTOR).ok_or_else(|| {
            corrupt(
                "vmdk grain directory",
                format!("{name}: offset {} sectors overflows", h.gd_offset),
            )
        })?;
        let raw =
            read_table(&*src, "vmdk grain directory", gd_at, entries * 4).map_err(|e| match e {
                Error::Corrupt { what, detail } => corrupt(what, format!("{name}: {detail}")),
                e => e,
            })?;
        let gd: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut s = Sparse {
            src,
            name: name.to_string(),
            size,
            grain,
            gtes: h.gtes,
            gd,
            compressed: h.compressed,
            markers: h.markers,
            zero_grain: h.zero_grain,
            cache: Mutex::default(),
            stored: ExtentMap::new(),
            parent: ExtentMap::new(),
            past_eof: 0,
            header: h,
        };
        s.scan()?;
        Ok(s)
    }

    /// Reads every grain table once: the allocation maps, and the grains that lie past the
    /// end of the file. Two directory entries naming one table are refused (a real extent
    /// never shares tables, and it would let a small file describe a huge disk).
    fn scan(&mut self) -> crate::Result<()> {
        let span = self.gtes * self.grain;
        let file_size = self.src.size();
        let mut seen: HashMap<u32, usize> = HashMap::new();
        let mut stored: Vec<(u64, u64)> = Vec::new();
        let mut parent: Vec<(u64, u64)> = Vec::new();
        let mut coarse = false;
        let grain_sectors = self.grain / SECTOR;
        for (i, &gt) in self.gd.iter().enumerate() {
            let start = i as u64 * span;
            let end = (start + span).min(self.size);
            if gt == 0 {
                push(&mut parent, start, end);
                continue;
            }
            if let Some(j) = seen.insert(gt, i) {
                return Err(corrupt(
                    "vmdk grain directory",
                    format!(
                        "{}: entries {j} and {i} both point at the grain table at sector {gt}",
                        self.name
                    ),
                ));
            }
            let table = self.table(gt)?;
            for (k, &e) in table.iter().enumerate() {
                let gs = start + k as u64 * self.grain;
                if gs >= end {
                    break;
                }
                let ge = (gs + self.grain).min(end);
                match self.kind(e) {
                    Piece::Parent => push(&mut parent, gs, ge),
                    Piece::Zero => {}
                    _ => {
                        let at = u64::from(e) * SECTOR;
                        let need = if self.compressed {
                            12
                        } else {
                            grain_sectors * SECTOR
                        };
                        if at + need > file_size {
                            self.past_eof += 1;
                        }
                        push(&mut stored, gs, ge);
                    }
                }
            }
            if stored.len() + parent.len() > MAX_RANGES {
                coarse = true;
                break;
            }
        }
        if coarse {
            // Too fragmented to keep exactly: say everything is stored (a superset only makes
            // readers read more, never skip data).
            self.stored = ExtentMap::single(0, self.size);
            self.parent = ExtentMap::new();
        } else {
            self.stored = ExtentMap::from_ranges(stored);
            self.parent = ExtentMap::from_ranges(parent);
        }
        Ok(())
    }

    /// What a grain entry means.
    fn kind(&self, e: u32) -> Piece {
        match e {
            0 => Piece::Parent,
            1 if self.zero_grain => Piece::Zero,
            _ if self.compressed => Piece::Coded { gte: e, skip: 0 },
            _ => Piece::Stored(u64::from(e) * SECTOR),
        }
    }

    /// The grain table at sector `gt`, read (and checked against the file) or cached.
    fn table(&self, gt: u32) -> crate::Result<Arc<Vec<u32>>> {
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.tick += 1;
            let t = c.tick;
            if let Some(e) = c.tables.iter_mut().find(|e| e.0 == gt) {
                e.2 = t;
                return Ok(e.1.clone());
            }
        }
        let at = u64::from(gt) * SECTOR;
        let len = self.gtes * 4;
        if at.checked_add(len).is_none_or(|e| e > self.src.size()) {
            return Err(corrupt(
                "vmdk grain table",
                format!(
                    "{}: the table at sector {gt} (byte {at}, {len} bytes) lies past the end of \
                     the file ({} bytes)",
                    self.name,
                    self.src.size()
                ),
            ));
        }
        let raw = self.src.read_vec(at, len as usize)?;
        let t: Arc<Vec<u32>> = Arc::new(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let tick = c.tick;
        if c.tables.len() >= GT_CACHE {
            if let Some((i, _)) = c.tables.iter().enumerate().min_by_key(|(_, e)| e.2) {
                c.tables.swap_remove(i);
            }
        }
        c.tables.push((gt, t.clone(), tick));
        Ok(t)
    }

    /// What lies at byte `o` of the extent (below its size) and for how long: contiguous
    /// grains of one kind are one piece, up to the end of their grain table.
    pub(super) fn piece_at(&self, o: u64) -> io::Result<(Piece, u64)> {
        let span = self.gtes * self.grain;
        let gi = o / span;
        let span_end = ((gi + 1) * span).min(self.size);
        let gt = self.gd.get(gi as usize).copied().unwrap_or(0);
        if gt == 0 {
            return Ok((Piece::Parent, span_end - o));
        }
        let table = self.table(gt).map_err(io::Error::other)?;
        let k = ((o % span) / self.grain) as usize;
        let skip = o % self.grain;
        let e = table[k];
        let first = self.kind(e);
        let mut len = self.grain - skip;
        let piece = match first {
            Piece::Stored(at) => Piece::Stored(at + skip),
            Piece::Coded { gte, .. } => Piece::Coded { gte, skip },
            p => p,
        };
        // Compressed grains are one unit each; the others run on while the next grain is of
        // the same kind (and, when stored, right after this one in the file).
        if !matches!(first, Piece::Coded { .. }) {
            let mut prev = e;
            for &n in &table[k + 1..] {
                let same = match (first, self.kind(n)) {
                    (Piece::Stored(_), Piece::Stored(_)) => {
                        u64::from(n) == u64::from(prev) + self.grain / SECTOR
                    }
                    (a, b) => a == b,
                };
                if !same {
                    break;
                }
                len += self.grain;
                prev = n;
            }
        }
        let len = len.min(span_end - o);
        if let Piece::Stored(at) = piece {
            let fsize = self.src.size();
            if at.checked_add(len).is_none_or(|e| e > fsize) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "corrupt vmdk grain table: {}: the grain for byte {o} of the extent, at \
                         byte {at} of the file, lies past its end ({fsize} bytes)",
                        self.name
                    ),
                ));
            }
        }
        Ok((piece, len))
    }

    /// Decodes the compressed grain whose entry is `gte`.
    pub(super) fn decode(&self, gte: u32) -> io::Result<Vec<u8>> {
        let bad = |d: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt vmdk grain: {}: {d}", self.name),
            )
        };
        let at = u64::from(gte) * SECTOR;
        let fsize = self.src.size();
        let limit = 2 * self.grain;
        let data = if self.markers {
            let m = self.src.read_upto(at, 12)?;
            let size = le32(&m, 8).ok_or_else(|| {
                bad(format!(
                    "the grain marker at byte {at} lies past the end of the file ({fsize} bytes)"
                ))
            })?;
            let size = u64::from(size);
            if size == 0 || size > limit {
                return Err(bad(format!(
                    "the grain marker at byte {at} says {size} compressed bytes, more than a \
                     {}-byte grain can take (or none)",
                    self.grain
                )));
            }
            if at + 12 + size > fsize {
                return Err(bad(format!(
                    "the grain marker at byte {at} says {size} compressed bytes, past the end \
                     of the file ({fsize} bytes)"
                )));
            }
            self.src.read_vec(at + 12, size as usize)?
        } else {
            if at >= fsize {
                return Err(bad(format!(
                    "the grain at byte {at} lies past the end of the file ({fsize} bytes)"
                )));
            }
            self.src.read_upto(at, limit as usize)?
        };
        let mut out = Vec::with_capacity(self.grain as usize);
        flate2::read::ZlibDecoder::new(&data[..])
            .take(self.grain + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("the grain at byte {at} does not inflate: {e}")))?;
        if out.len() as u64 > self.grain {
            return Err(bad(format!(
                "the grain at byte {at} inflates to more than a grain ({} bytes)",
                self.grain
            )));
        }
        Ok(out)
    }

    /// Total disk bytes this extent stores itself.
    pub(super) fn describe(&self) -> String {
        let h = &self.header;
        let mut d = format!(
            "{} version {}, grain {}",
            h.magic,
            h.version,
            crate::util::human_bytes(self.grain)
        );
        if h.compressed {
            d += ", deflate-compressed grains";
        }
        if h.from_footer {
            d += ", directory in the footer";
        }
        if h.redundant {
            d += ", redundant directory";
        }
        d
    }
}
