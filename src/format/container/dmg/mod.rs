//! Apple UDIF disk images (DMG), decoded with random access: recognised by the `koly` trailer
//! in the last 512 bytes, whose XML plist holds the `blkx` block tables (one per partition,
//! each a `mish` header and its 40-byte chunk entries); every chunk is raw, zeros, or one
//! compressed unit (ADC, zlib, bzip2, LZFSE, LZMA) decoded whole.
//!
//! What is read, and how it is checked:
//!
//! - the trailer: version 4, size 512, one segment, data fork and plist inside the file and
//!   before the trailer, the plist at most [`MAX_PLIST`];
//! - each block table: `mish` version 1, its entry count against its length, every chunk
//!   inside its table's sectors and its bytes inside the data fork, sector numbers and byte
//!   offsets in checked arithmetic;
//! - across tables: chunks sorted by disk position and refused where two overlap (naming
//!   both), gaps read as zeros; the disk is as long as the trailer's sector count, or as the
//!   last chunk when the trailer says less (with a warning);
//! - a compressed chunk covers at most [`MAX_CHUNK`] of disk and must decode to exactly its
//!   sectors: more or less is an error naming the chunk, and no decoder is let write more.
//!
//! Not supported (clear errors): segmented images (`.dmgpart` files), images whose block
//! tables are only in a resource fork (no XML plist), encrypted images (no `koly` trailer at
//! the end: they read as raw bytes).

pub mod adc;
mod plist;

use std::io::{self, Read};
use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::{read_table, Layout, Run, VirtualDisk};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, be64};
use crate::{Error, ExtentMap};

impl Format {
    /// Apple UDIF disk image (DMG, "koly" trailer).
    #[allow(non_upper_case_globals)]
    pub const Dmg: Format = Format::new("dmg", "dmg (udif)", Kind::Container);
}

/// Bytes per DMG sector: every sector number and count in the format counts these.
const SECTOR: u64 = 512;

/// The XML plist is read whole; real ones take a few KiB to a few MiB (40 bytes of table,
/// as base64, per chunk of usually 1 MiB of disk).
pub const MAX_PLIST: u64 = 64 << 20;

/// Disk bytes one compressed chunk may cover: Apple's tools write 1 MiB (2048 sectors); a
/// chunk is decoded whole into memory, so a claim above this is refused at open.
pub const MAX_CHUNK: u64 = 32 << 20;

/// Size of a `mish` block table header, before its 40-byte entries.
const MISH_HEADER: usize = 204;

/// Size of one block table entry.
const MISH_ENTRY: usize = 40;

/// Decoder memory allowed for an LZMA (xz) chunk: enough for `xz -9e`'s 64 MiB dictionary.
const LZMA_MEMLIMIT: u64 = 128 << 20;

/// Recognises and decodes DMGs by their trailer.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Dmg
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["dmg"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.tail().is_some_and(|t| self.trailer(t))
    }

    fn trailer(&self, last: &[u8]) -> bool {
        // Version 4, header size 512: the only UDIF trailer there is.
        last.len() >= 512 && {
            let k = &last[last.len() - 512..];
            k.starts_with(b"koly") && be32(k, 4) == Some(4) && be32(k, 8) == Some(512)
        }
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let (info, disk) = open_disk(src.clone(), &mut |w| ctx.warn(w))?;
        Ok(super::disk_step(info, &*src, disk))
    }
}

/// The fields of the `koly` trailer this reader uses.
#[derive(Debug, Clone, Copy)]
struct Koly {
    data_fork: (u64, u64),
    rsrc_fork: (u64, u64),
    xml: (u64, u64),
    segments: u32,
    sectors: u64,
}

fn bad_koly(detail: impl Into<String>) -> Error {
    Error::corrupt("dmg koly trailer", detail)
}

/// Reads and checks the trailer of `src`.
fn koly(src: &dyn ReadAt) -> crate::Result<Koly> {
    let size = src.size();
    let at = size.checked_sub(512).ok_or_else(|| {
        Error::Format(format!(
            "not a DMG: {size} bytes is shorter than a koly trailer"
        ))
    })?;
    let k = src.read_vec(at, 512)?;
    if !k.starts_with(b"koly") {
        return Err(Error::Format(
            "not a DMG: the last 512 bytes are not a koly trailer".into(),
        ));
    }
    let f32 = |o| be32(&k, o).unwrap_or(0);
    let f64 = |o| be64(&k, o).unwrap_or(0);
    if f32(4) != 4 {
        return Err(Error::Unsupported(format!(
            "dmg koly trailer version {} (only version 4 exists)",
            f32(4)
        )));
    }
    if f32(8) != 512 {
        return Err(bad_koly(format!("header size {} (must be 512)", f32(8))));
    }
    let kol = Koly {
        data_fork: (f64(24), f64(32)),
        rsrc_fork: (f64(40), f64(48)),
        xml: (f64(216), f64(224)),
        segments: f32(60),
        sectors: f64(492),
    };
    let inside = |what: &str, (off, len): (u64, u64)| -> crate::Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= at => Ok(()),
            _ => Err(bad_koly(format!(
                "{what} ({len} bytes at byte {off}) reaches past the trailer at byte {at}"
            ))),
        }
    };
    inside("data fork", kol.data_fork)?;
    inside("XML plist", kol.xml)?;
    if kol.segments > 1 {
        return Err(Error::Unsupported(format!(
            "segmented DMG ({} segments in .dmgpart files)",
            kol.segments
        )));
    }
    Ok(kol)
}

/// What one chunk of the disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// Zero-fill (type 0) or ignored (type 2): reads as zeros, nothing stored.
    Zero,
    /// Stored as is (type 1).
    Raw,
    /// Apple Data Compression (0x80000004).
    Adc,
    /// zlib (0x80000005).
    Zlib,
    /// bzip2 (0x80000006).
    Bzip2,
    /// LZFSE (0x80000007).
    Lzfse,
    /// LZMA, as an xz stream (0x80000008).
    Lzma,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Zero => "zero",
            Codec::Raw => "raw",
            Codec::Adc => "ADC",
            Codec::Zlib => "zlib",
            Codec::Bzip2 => "bzip2",
            Codec::Lzfse => "LZFSE",
            Codec::Lzma => "LZMA",
        }
    }
}

/// One chunk, placed on the disk and in the file.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// First disk byte it covers.
    start: u64,
    /// Disk bytes it covers.
    len: u64,
    codec: Codec,
    /// Its stored bytes in the file: offset and length.
    at: u64,
    stored: u64,
    /// Which block table (index into `DmgLayout::tables`) and which entry of it.
    table: u32,
    entry: u32,
}

/// The disk of a DMG as chunks sorted by position.
struct DmgLayout {
    src: Arc<dyn ReadAt>,
    chunks: Vec<Chunk>,
    /// Block table names, for messages.
    tables: Vec<String>,
    size: u64,
    unit: u64,
}

impl DmgLayout {
    /// "chunk 3 of blkx table 1 (\"disk image (Apple_HFS : 4)\")": how errors name a chunk.
    fn name(&self, c: &Chunk) -> String {
        chunk_name(&self.tables, c)
    }
}

fn chunk_name(tables: &[String], c: &Chunk) -> String {
    let t = tables.get(c.table as usize).map_or("", String::as_str);
    format!(
        "chunk {} of blkx table {} ({t:?}, {} sectors at sector {})",
        c.entry,
        c.table,
        c.len / SECTOR,
        c.start / SECTOR
    )
}

/// Reads at most `limit + 1` bytes from `r`: one more than allowed tells "too long" without
/// letting a decoder produce the rest.
fn read_bounded(r: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(1 << 20));
    r.take(limit + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// Decodes one chunk's stored bytes with `codec`, producing at most `want + 1` bytes.
fn decode_chunk(codec: Codec, data: &[u8], want: u64) -> io::Result<Vec<u8>> {
    let limit = usize::try_from(want).map_err(io::Error::other)?;
    match codec {
        Codec::Adc => {
            adc::decode(data, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        Codec::Zlib => read_bounded(flate2::read::ZlibDecoder::new(data), want),
        Codec::Bzip2 => read_bounded(bzip2::read::BzDecoder::new(data), want),
        Codec::Lzma => {
            let s = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                .map_err(io::Error::other)?;
            read_bounded(liblzma::read::XzDecoder::new_stream(data, s), want)
        }
        Codec::Lzfse => {
            let mut d = lzfse_rust::LzfseRingDecoder::default();
            read_bounded(d.reader_bytes(data), want)
        }
        Codec::Zero | Codec::Raw => Err(io::Error::other("not a compressed chunk")),
    }
}

impl Layout for DmgLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let i = self.chunks.partition_point(|c| c.start + c.len <= offset);
        match self.chunks.get(i) {
            Some(c) if c.start <= offset => {
                let skip = offset - c.start;
                let left = c.len - skip;
                let run = match c.codec {
                    Codec::Zero => Run::Zero,
                    Codec::Raw => Run::Stored {
                        file: 0,
                        at: c.at + skip,
                    },
                    _ => Run::Coded {
                        unit: i as u64,
                        skip,
                    },
                };
                Ok((run, left))
            }
            // A gap between chunks (or after the last one): no table covers it, zeros.
            Some(c) => Ok((Run::Zero, c.start - offset)),
            None => Ok((Run::Zero, self.size.saturating_sub(offset).max(1))),
        }
    }

    fn decode(&self, unit: u64) -> io::Result<Vec<u8>> {
        let c = usize::try_from(unit)
            .ok()
            .and_then(|u| self.chunks.get(u))
            .ok_or_else(|| io::Error::other(format!("dmg: no chunk {unit}")))?;
        let data = self.src.read_vec(c.at, c.stored as usize)?;
        let fail = |detail: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("dmg {}: {detail}", self.name(c)),
            )
        };
        let out = decode_chunk(c.codec, &data, c.len)
            .map_err(|e| fail(format!("{} data does not decode: {e}", c.codec.name())))?;
        if out.len() as u64 != c.len {
            let got = if out.len() as u64 > c.len {
                "more".to_string()
            } else {
                format!("only {} bytes", out.len())
            };
            return Err(fail(format!(
                "{} data decodes to {got}, not the {} bytes its sectors need",
                c.codec.name(),
                c.len
            )));
        }
        Ok(out)
    }

    fn stored(&self) -> ExtentMap {
        ExtentMap::from_ranges(
            self.chunks
                .iter()
                .filter(|c| c.codec != Codec::Zero)
                .map(|c| (c.start, c.start + c.len)),
        )
    }

    fn parent_ranges(&self) -> ExtentMap {
        ExtentMap::new()
    }

    fn unit_size(&self) -> u64 {
        self.unit
    }
}

fn bad_table(detail: impl Into<String>) -> Error {
    Error::corrupt("dmg blkx table", detail)
}

/// The chunks of block table `t` (decoded `mish` bytes `m`), placed on the disk and in the
/// file, appended to `out`. Terminators and comments are skipped; zero-length chunks too.
fn read_mish(
    m: &[u8],
    t: u32,
    name: &str,
    kol: &Koly,
    file_size: u64,
    out: &mut Vec<Chunk>,
) -> crate::Result<()> {
    let who = || format!("blkx table {t} ({name:?})");
    if m.len() < MISH_HEADER || &m[..4] != b"mish" {
        return Err(bad_table(format!(
            "{}: not a mish block table ({} bytes)",
            who(),
            m.len()
        )));
    }
    let version = be32(m, 4).unwrap_or(0);
    if version != 1 {
        return Err(Error::Unsupported(format!(
            "dmg {}: mish version {version} (only 1 is known)",
            who()
        )));
    }
    let first = be64(m, 8).unwrap_or(0);
    let count = be64(m, 16).unwrap_or(0);
    let data_off = be64(m, 24).unwrap_or(0);
    let n = be32(m, 200).unwrap_or(0) as usize;
    let need = n
        .checked_mul(MISH_ENTRY)
        .and_then(|b| b.checked_add(MISH_HEADER));
    if need.is_none_or(|need| need > m.len()) {
        return Err(bad_table(format!(
            "{}: {n} chunk entries claimed, {} bytes hold only {}",
            who(),
            m.len(),
            (m.len() - MISH_HEADER) / MISH_ENTRY
        )));
    }
    let (fork, fork_len) = kol.data_fork;
    let fork_end = fork + fork_len; // checked against the file by `koly`
    for e in 0..n {
        let b = MISH_HEADER + e * MISH_ENTRY;
        let kind = be32(m, b).unwrap_or(0);
        let sector = be64(m, b + 8).unwrap_or(0);
        let sectors = be64(m, b + 16).unwrap_or(0);
        let off = be64(m, b + 24).unwrap_or(0);
        let stored = be64(m, b + 32).unwrap_or(0);
        let codec = match kind {
            0x0000_0000 | 0x0000_0002 => Codec::Zero,
            0x0000_0001 => Codec::Raw,
            0x8000_0004 => Codec::Adc,
            0x8000_0005 => Codec::Zlib,
            0x8000_0006 => Codec::Bzip2,
            0x8000_0007 => Codec::Lzfse,
            0x8000_0008 => Codec::Lzma,
            0x7fff_fffe | 0xffff_ffff => continue,
            k => {
                return Err(Error::Unsupported(format!(
                    "dmg {} chunk {e}: chunk type {k:#010x}",
                    who()
                )))
            }
        };
        if sectors == 0 {
            continue;
        }
        let chunk_who = || format!("{} chunk {e} ({})", who(), codec.name());
        // Inside its table's sectors, and on a disk whose byte offsets fit 64 bits.
        let end_in_table = sector.checked_add(sectors);
        if end_in_table.is_none_or(|end| end > count) {
            return Err(bad_table(format!(
                "{}: sectors {sector}+{sectors} reach past the table's {count} sectors",
                chunk_who()
            )));
        }
        let start = first
            .checked_add(sector)
            .and_then(|s| s.checked_mul(SECTOR));
        let len = sectors.checked_mul(SECTOR);
        let (Some(start), Some(len)) = (start, len) else {
            return Err(bad_table(format!(
                "{}: sector {first}+{sector} ({sectors} sectors) overflows 64-bit byte offsets",
                chunk_who()
            )));
        };
        if start.checked_add(len).is_none() {
            return Err(bad_table(format!("{}: ends past 2^64 bytes", chunk_who())));
        }
        let mut at = 0;
        if codec != Codec::Zero {
            let a = fork.checked_add(data_off).and_then(|a| a.checked_add(off));
            match a.and_then(|a| Some((a, a.checked_add(stored)?))) {
                Some((a, end)) if end <= fork_end && end <= file_size => at = a,
                _ => {
                    return Err(bad_table(format!(
                        "{}: {stored} bytes at data-fork offset {data_off}+{off} reach past \
                         the data fork ({fork_len} bytes at byte {fork})",
                        chunk_who()
                    )))
                }
            }
            if codec == Codec::Raw && stored < len {
                return Err(bad_table(format!(
                    "{}: {stored} bytes stored for {len} bytes of disk",
                    chunk_who()
                )));
            }
            if codec != Codec::Raw && len > MAX_CHUNK {
                return Err(Error::Unsupported(format!(
                    "dmg {}: a compressed chunk of {} bytes (more than the {} MiB decoded \
                     at once)",
                    chunk_who(),
                    len,
                    MAX_CHUNK >> 20
                )));
            }
            if codec != Codec::Raw && stored > MAX_CHUNK * 2 {
                return Err(bad_table(format!(
                    "{}: {stored} compressed bytes for {len} bytes of disk",
                    chunk_who()
                )));
            }
        }
        out.push(Chunk {
            start,
            len,
            codec,
            at,
            stored,
            table: t,
            entry: e as u32,
        });
    }
    Ok(())
}

/// Opens the disk inside the DMG `src`: its header facts and the virtual disk. Damage that
/// still lets the disk be read goes to `warn`.
fn open_disk(
    src: Arc<dyn ReadAt>,
    warn: &mut dyn FnMut(String),
) -> crate::Result<(ContainerInfo, VirtualDisk)> {
    let kol = koly(&*src)?;
    if kol.xml.1 == 0 {
        return Err(Error::Unsupported(if kol.rsrc_fork.1 != 0 {
            "DMG without an XML plist: its block tables are in a resource fork (images \
             from before Mac OS X 10.2), which this version does not read"
                .to_string()
        } else {
            "DMG without an XML plist or a resource fork: no block tables to read".to_string()
        }));
    }
    if kol.xml.1 > MAX_PLIST {
        return Err(bad_koly(format!(
            "XML plist of {} bytes claimed (more than the {} MiB a plist may take)",
            kol.xml.1,
            MAX_PLIST >> 20
        )));
    }
    let xml = read_table(&*src, "dmg XML plist", kol.xml.0, kol.xml.1)?;
    let entries = plist::blkx_entries(&xml)?;
    drop(xml);
    if entries.is_empty() {
        return Err(Error::corrupt(
            "dmg plist",
            "no blkx block table in its resource-fork dictionary",
        ));
    }
    let t_max = u32::try_from(entries.len())
        .map_err(|_| Error::corrupt("dmg plist", "too many blkx tables"))?;
    let mut chunks = Vec::new();
    let mut tables = Vec::with_capacity(entries.len());
    for (t, e) in (0..t_max).zip(entries) {
        read_mish(&e.data, t, &e.name, &kol, src.size(), &mut chunks)?;
        tables.push(e.name);
    }
    chunks.sort_by_key(|c| c.start);
    for w in chunks.windows(2) {
        if w[0].start + w[0].len > w[1].start {
            return Err(bad_table(format!(
                "{} overlaps {}",
                chunk_name(&tables, &w[0]),
                chunk_name(&tables, &w[1])
            )));
        }
    }
    let end = chunks.last().map_or(0, |c| c.start + c.len);
    let claimed = kol.sectors.checked_mul(SECTOR);
    let size = match claimed {
        Some(c) if c >= end => c,
        _ => {
            // Partition images (variant 2) say 0; a trailer saying less than the tables
            // cover would cut data off, so the tables win.
            if kol.sectors != 0 {
                let why = if claimed.is_none() {
                    "overflows 64-bit byte offsets"
                } else {
                    "is less than the block tables cover"
                };
                warn(format!(
                    "dmg koly trailer: sector count {} {why} ({} sectors); the disk is read \
                     to the end of the tables",
                    kol.sectors,
                    end / SECTOR
                ));
            }
            end
        }
    };
    let mut counts: Vec<(Codec, usize)> = Vec::new();
    for c in &chunks {
        match counts.iter_mut().find(|x| x.0 == c.codec) {
            Some(x) => x.1 += 1,
            None => counts.push((c.codec, 1)),
        }
    }
    let kinds: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    let biggest = chunks
        .iter()
        .filter(|c| !matches!(c.codec, Codec::Zero | Codec::Raw))
        .map(|c| c.len)
        .max()
        .unwrap_or(SECTOR);
    let unit = biggest.next_power_of_two().clamp(4096, MAX_CHUNK);
    let detail = format!(
        "UDIF, {} blkx tables, {} chunks ({}), data fork {} bytes, plist {} bytes",
        tables.len(),
        chunks.len(),
        kinds.join(", "),
        kol.data_fork.1,
        kol.xml.1
    );
    let info = ContainerInfo::new(Format::Dmg, Some(size), detail);
    let layout = DmgLayout {
        src: src.clone(),
        chunks,
        tables,
        size,
        unit,
    };
    let disk = VirtualDisk::new(size, Box::new(layout), vec![src], None);
    Ok((info, disk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    #[test]
    fn short_and_foreign_files_are_not_dmgs() {
        let e = koly(&MemSource(b"hello".to_vec())).unwrap_err().to_string();
        assert!(e.contains("not a DMG"), "{e}");
        let e = koly(&MemSource(vec![7; 4096])).unwrap_err().to_string();
        assert!(e.contains("not a DMG"), "{e}");
    }
}
