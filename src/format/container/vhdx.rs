//! Microsoft VHDX ([MS-VHDX] 1.0): fixed, dynamic and differencing disks.
//!
//! The file opens with its identifier ("vhdxfile"), two copies of the header (the valid one
//! with the higher sequence number wins; CRC-32C), two copies of the region table naming the
//! BAT and metadata regions. The metadata region holds the file parameters (block size,
//! "has parent"), the virtual disk size, the logical sector size (512 or 4096) and, for a
//! differencing disk, the parent locator. The BAT holds a 64-bit entry per payload block,
//! with an entry for a sector bitmap block after every "chunk ratio" payload entries.
//!
//! Payload block states: FULLY_PRESENT is read from the file; ZERO, UNDEFINED and UNMAPPED
//! read as zeros (as qemu does; the spec lets a reader return zeros for them); NOT_PRESENT
//! reads as zeros, or from the parent in a differencing disk; PARTIALLY_PRESENT (differencing
//! only) takes each sector from the file or the parent as the chunk's sector bitmap says.
//!
//! A header whose log GUID is set says the log may hold writes not yet applied (a crash before
//! they reached their places). The log's active sequence is replayed in memory, over the file's
//! bytes, before anything else is read: the file itself is never written. A log with no valid
//! entry has nothing to replay, and the image is read as it is, with a warning (as qemu does);
//! a sequence that cannot be replayed whole is refused.

use std::io;
use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::{bit_run, read_table, Layout, RecentTables, Run, VirtualDisk};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{guid_le, le16, le32, le64};
use crate::{Error, ExtentMap};

impl Format {
    /// Microsoft VHDX.
    #[allow(non_upper_case_globals)]
    pub const Vhdx: Format = Format::new("vhdx", "vhdx", Kind::Container);
}

/// Recognises the `vhdxfile` file type identifier.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vhdx"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"vhdxfile")
    }

    fn open(&self, file: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        // The file as its log says it should be (itself when there is nothing to replay).
        let src = replay_log(file.clone(), ctx)?;
        let v = parse(&*src, ctx)?;
        let info = v.info();
        let parent = if v.has_parent {
            Some(find_parent(&v.parent_locator, ctx)?)
        } else {
            None
        };
        let size = v.size;
        let layout = VhdxLayout {
            src: src.clone(),
            size,
            block: v.block,
            sector: v.sector,
            chunk_ratio: v.chunk_ratio,
            bat: v.bat,
            differencing: v.has_parent,
            bitmaps: RecentTables::default(),
        };
        let disk = VirtualDisk::new(size, Box::new(layout), vec![src], parent);
        Ok(super::disk_step(info, &*file, disk))
    }
}

const REGION_BAT: &str = "2dc27766-f623-4200-9d64-115e9bfd4a08";
const REGION_METADATA: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const META_FILE_PARAMETERS: &str = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";
const META_VIRTUAL_DISK_SIZE: &str = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";
const META_VIRTUAL_DISK_ID: &str = "beca12ab-b2e6-4523-93ef-c309e000c746";
const META_LOGICAL_SECTOR: &str = "8141bf1d-a96f-4709-ba47-f233a8faab5f";
const META_PHYSICAL_SECTOR: &str = "cda348c7-445d-4471-9cc9-e9885251c556";
const META_PARENT_LOCATOR: &str = "a8d35f2d-b30b-454d-abf7-d3d84834ab0c";

const MIB: u64 = 1 << 20;
/// The largest virtual disk the spec allows (64 TiB).
const MAX_DISK: u64 = 64 << 40;

/// Payload block states (the low 3 bits of a BAT entry).
const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
/// UNMAPPED in the 0.95 draft of the spec; qemu reads it as zeros too.
const UNMAPPED_V095: u64 = 5;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;
/// Sector bitmap block present.
const SB_PRESENT: u64 = 6;

fn guid_at(b: &[u8], off: usize) -> Option<String> {
    let s: [u8; 16] = b.get(off..off.checked_add(16)?)?.try_into().ok()?;
    Some(guid_le(&s))
}

/// CRC-32C of `b` with its four checksum bytes at `at` taken as zero.
fn crc(b: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&b[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &b[at + 4..])
}

/// Everything read at open.
struct Vhdx {
    size: u64,
    block: u64,
    sector: u64,
    chunk_ratio: u64,
    has_parent: bool,
    fixed: bool,
    bat: Vec<u64>,
    parent_locator: Vec<(String, String)>,
}

impl Vhdx {
    fn info(&self) -> ContainerInfo {
        let mut parts = vec![
            format!("block size {}", crate::util::human_bytes(self.block)),
            format!("{}-byte sectors", self.sector),
        ];
        if self.fixed {
            parts.push("fixed (blocks preallocated)".into());
        }
        if self.has_parent {
            parts.push("differencing (has parent)".into());
        }
        ContainerInfo::new(Format::Vhdx, Some(self.size), parts.join(", "))
    }
}

/// A header copy, if its signature, checksum and version are right: (sequence number, bytes).
fn header(src: &dyn ReadAt, at: u64) -> io::Result<Result<(u64, Vec<u8>), String>> {
    let h = src.read_upto(at, 4096)?;
    if h.len() < 4096 || !h.starts_with(b"head") {
        return Ok(Err("no \"head\" signature".into()));
    }
    let stored = le32(&h, 4).unwrap_or(0);
    let sum = crc(&h, 4);
    if stored != sum {
        return Ok(Err(format!(
            "checksum {stored:#010x} is wrong (CRC-32C {sum:#010x})"
        )));
    }
    let version = le16(&h, 66).unwrap_or(0);
    if version != 1 {
        return Ok(Err(format!("version {version} (1 expected)")));
    }
    Ok(Ok((le64(&h, 8).unwrap_or(0), h)))
}

/// The current header: the valid copy with the higher sequence number.
fn current_header(src: &dyn ReadAt, ctx: &mut OpenCtx<'_>) -> crate::Result<Vec<u8>> {
    let h1 = header(src, 64 << 10)?;
    let h2 = header(src, 128 << 10)?;
    let h = match (h1, h2) {
        (Ok(a), Ok(b)) => {
            if a.0 >= b.0 {
                a.1
            } else {
                b.1
            }
        }
        (Ok(a), Err(e)) => {
            ctx.warn(format!("vhdx header 2: {e}; header 1 is used"));
            a.1
        }
        (Err(e), Ok(b)) => {
            ctx.warn(format!("vhdx header 1: {e}; header 2 is used"));
            b.1
        }
        (Err(e1), Err(e2)) => {
            return Err(Error::corrupt(
                "vhdx header",
                format!("neither copy is valid: header 1: {e1}; header 2: {e2}"),
            ))
        }
    };
    Ok(h)
}

/// Reads region table, metadata and BAT (of the file with its log replayed).
fn parse(src: &dyn ReadAt, ctx: &mut OpenCtx<'_>) -> crate::Result<Vhdx> {
    let file_len = src.size();
    let (bat_region, meta_region) = regions(src, ctx)?;
    let m = metadata(src, meta_region)?;
    let (block, flags) = m
        .file_parameters
        .ok_or_else(|| Error::corrupt("vhdx metadata", "no file parameters item (block size)"))?;
    let size = m
        .disk_size
        .ok_or_else(|| Error::corrupt("vhdx metadata", "no virtual disk size item"))?;
    let sector = m
        .sector
        .ok_or_else(|| Error::corrupt("vhdx metadata", "no logical sector size item"))?;
    if !(MIB..=256 * MIB).contains(&block) || !block.is_power_of_two() {
        return Err(Error::corrupt(
            "vhdx file parameters",
            format!("block size {block} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    if sector != 512 && sector != 4096 {
        return Err(Error::corrupt(
            "vhdx metadata",
            format!("logical sector size {sector} (512 or 4096 expected)"),
        ));
    }
    if size == 0 || size > MAX_DISK || size % sector != 0 {
        return Err(Error::corrupt(
            "vhdx metadata",
            format!(
                "virtual disk size {size} is not a multiple of the {sector}-byte sector from \
                 one sector to 64 TiB"
            ),
        ));
    }
    let has_parent = flags & 2 != 0;
    let fixed = flags & 1 != 0 && !has_parent;
    // Sectors described by one 1 MiB sector bitmap block, in payload blocks.
    let chunk_ratio = (1u64 << 23) * sector / block;
    let data_blocks = size.div_ceil(block);
    let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
    let entries = if has_parent {
        bitmap_blocks * (chunk_ratio + 1)
    } else {
        data_blocks + (data_blocks - 1) / chunk_ratio
    };
    if entries * 8 > bat_region.1 {
        return Err(Error::corrupt(
            "vhdx region table",
            format!(
                "the BAT region is {} bytes, too small for the {entries} entries a \
                 {size}-byte disk of {block}-byte blocks needs",
                bat_region.1
            ),
        ));
    }
    let raw = read_table(src, "vhdx BAT", bat_region.0, entries * 8)?;
    let bat: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    for (i, &e) in bat.iter().enumerate() {
        let i = i as u64;
        let state = e & 7;
        let at = e & !(MIB - 1);
        let is_bitmap = (i + 1) % (chunk_ratio + 1) == 0;
        let what = if is_bitmap {
            format!("entry {i} (sector bitmap block {})", i / (chunk_ratio + 1))
        } else {
            format!("entry {i} (payload block {})", i - i / (chunk_ratio + 1))
        };
        let len = if is_bitmap {
            match state {
                NOT_PRESENT => continue,
                SB_PRESENT if has_parent => MIB,
                _ => {
                    return Err(Error::corrupt(
                        "vhdx BAT",
                        format!("{what}: state {state} is not valid for a sector bitmap block"),
                    ))
                }
            }
        } else {
            match state {
                FULLY_PRESENT => block,
                PARTIALLY_PRESENT if has_parent => block,
                NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED | UNMAPPED_V095 => continue,
                _ => {
                    return Err(Error::corrupt(
                        "vhdx BAT",
                        format!(
                            "{what}: state {state} is not valid in a {} disk",
                            if has_parent {
                                "differencing"
                            } else {
                                "non-differencing"
                            }
                        ),
                    ))
                }
            }
        };
        if at < MIB || at.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(Error::corrupt(
                "vhdx BAT",
                format!(
                    "{what} puts a {len}-byte block at byte {at}, outside the file's data \
                     (1 MiB to {file_len} bytes)"
                ),
            ));
        }
    }
    Ok(Vhdx {
        size,
        block,
        sector,
        chunk_ratio,
        has_parent,
        fixed,
        bat,
        parent_locator: m.parent_locator,
    })
}

/// One write the log holds: 4 KiB of data, or zeros, at a file offset.
#[derive(Clone)]
enum LogWrite {
    Data { at: u64, bytes: Arc<Vec<u8>> },
    Zero { at: u64, len: u64 },
}

impl LogWrite {
    fn range(&self) -> (u64, u64) {
        match self {
            LogWrite::Data { at, bytes } => (*at, at + bytes.len() as u64),
            LogWrite::Zero { at, len } => (*at, at + len),
        }
    }
}

/// The file with the log's writes laid over it, in the order they were logged; a file shorter
/// than the log's last file offset reads as zeros up to it.
struct Replayed {
    base: Arc<dyn ReadAt>,
    size: u64,
    writes: Vec<LogWrite>,
}

impl ReadAt for Replayed {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset) as usize;
        let buf = &mut buf[..len];
        let end = offset + len as u64;
        let have = self.base.size().saturating_sub(offset).min(len as u64) as usize;
        if have > 0 {
            self.base.read_exact_at(offset, &mut buf[..have])?;
        }
        buf[have..].fill(0);
        for w in &self.writes {
            let (s, e) = w.range();
            if e <= offset || s >= end {
                continue;
            }
            let from = s.max(offset);
            let to = e.min(end);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match w {
                LogWrite::Data { at, bytes } => {
                    dst.copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize])
                }
                LogWrite::Zero { .. } => dst.fill(0),
            }
        }
        Ok(len)
    }
}

/// A log entry that checks out: its place in the log, length, sequence number, tail, and the
/// file offsets it records.
struct LogEntry {
    pos: usize,
    len: usize,
    seq: u64,
    tail: usize,
    flushed: u64,
    last: u64,
}

/// The entry at `pos` of `log` if its signature, length, GUID, checksum and descriptors (with
/// their data sectors' sequence numbers) are right.
fn log_entry(log: &[u8], pos: usize, guid: &[u8]) -> Option<LogEntry> {
    let e = log.get(pos..)?;
    if !e.starts_with(b"loge") || e.len() < 64 {
        return None;
    }
    let len = le32(e, 8)? as usize;
    if len < 4096 || len % 4096 != 0 || len > e.len() || &e[32..48] != guid {
        return None;
    }
    let e = &e[..len];
    if crc(e, 4) != le32(e, 4)? {
        return None;
    }
    let seq = le64(e, 16)?;
    let count = le32(e, 24)? as usize;
    // Descriptors follow the header, padded to whole 4 KiB sectors, then a data sector for
    // each data descriptor.
    let desc_sectors = (64 + count.checked_mul(32)?).div_ceil(4096);
    let mut data = desc_sectors;
    for k in 0..count {
        let d = e.get(64 + k * 32..96 + k * 32)?;
        if le64(d, 24)? != seq {
            return None;
        }
        if d.starts_with(b"desc") {
            let s = e.get(data * 4096..(data + 1) * 4096)?;
            if !s.starts_with(b"data")
                || u64::from(le32(s, 4)?) != seq >> 32
                || u64::from(le32(s, 4092)?) != seq & 0xFFFF_FFFF
            {
                return None;
            }
            data += 1;
        } else if !d.starts_with(b"zero") {
            return None;
        }
    }
    Some(LogEntry {
        pos,
        len,
        seq,
        tail: le32(e, 12)? as usize,
        flushed: le64(e, 48)?,
        last: le64(e, 56)?,
    })
}

/// The writes of one entry, in order.
fn entry_writes(log: &[u8], en: &LogEntry, out: &mut Vec<LogWrite>) -> crate::Result<()> {
    let e = &log[en.pos..en.pos + en.len];
    let count = le32(e, 24).unwrap_or(0) as usize;
    let mut data = (64 + count * 32).div_ceil(4096);
    let bad = |what: String| Error::corrupt("vhdx log", what);
    for k in 0..count {
        let d = &e[64 + k * 32..96 + k * 32];
        let at = le64(d, 16).unwrap_or(0);
        if d.starts_with(b"desc") {
            if at % 4096 != 0 {
                return Err(bad(format!(
                    "entry {} writes 4 KiB at byte {at}, not on a 4 KiB boundary",
                    en.seq
                )));
            }
            let s = &e[data * 4096..(data + 1) * 4096];
            let mut bytes = Vec::with_capacity(4096);
            bytes.extend_from_slice(&d[8..16]); // leading bytes
            bytes.extend_from_slice(&s[8..4092]);
            bytes.extend_from_slice(&d[4..8]); // trailing bytes
            out.push(LogWrite::Data {
                at,
                bytes: Arc::new(bytes),
            });
            data += 1;
        } else {
            let len = le64(d, 8).unwrap_or(0);
            if at % 4096 != 0 || len % 4096 != 0 || at.checked_add(len).is_none() {
                return Err(bad(format!(
                    "entry {} zeroes {len} bytes at byte {at}, not whole 4 KiB sectors",
                    en.seq
                )));
            }
            out.push(LogWrite::Zero { at, len });
        }
    }
    Ok(())
}

/// Replays the log in memory when the current header's log GUID is set ([MS-VHDX] 2.3.3):
/// finds the active sequence (the run of valid, consecutively numbered entries whose last one
/// has the highest sequence number), checks that it reaches back to the tail its last entry
/// names, and lays its writes over the file. Returns the file itself when there is nothing
/// to replay.
fn replay_log(file: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Arc<dyn ReadAt>> {
    let h = current_header(&*file, ctx)?;
    let guid = &h[48..64];
    if guid.iter().all(|&b| b == 0) {
        return Ok(file);
    }
    let len = u64::from(le32(&h, 68).unwrap_or(0));
    let at = le64(&h, 72).unwrap_or(0);
    if len % MIB != 0 || at % MIB != 0 || at < MIB {
        return Err(Error::corrupt(
            "vhdx header",
            format!("log of {len} bytes at byte {at}: not whole MiB past the first"),
        ));
    }
    let log = read_table(&*file, "vhdx log", at, len)?;
    // Every valid entry, by position.
    let entries: Vec<LogEntry> = (0..log.len())
        .step_by(4096)
        .filter_map(|p| log_entry(&log, p, guid))
        .collect();
    if entries.is_empty() {
        ctx.warn(format!(
            "vhdx log: the header's log GUID is set but the log ({len} bytes at byte {at}) \
             holds no valid entry; there is nothing to replay and the image is read as it is"
        ));
        return Ok(file);
    }
    // The active sequence ends on the entry with the highest sequence number; it goes back,
    // entry by entry (each ending where the next starts, positions wrapping around the log,
    // numbers one apart), to the tail that entry names.
    let mut ending_at: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (k, e) in entries.iter().enumerate() {
        ending_at
            .entry((e.pos + e.len) % log.len())
            .or_default()
            .push(k);
    }
    let Some(head) = entries.iter().max_by_key(|e| e.seq) else {
        return Ok(file);
    };
    let mut chain = vec![head];
    while chain[chain.len() - 1].pos != head.tail {
        let cur = chain[chain.len() - 1];
        let prev = ending_at.get(&cur.pos).and_then(|ks| {
            ks.iter()
                .map(|&k| &entries[k])
                .find(|e| e.seq == cur.seq.wrapping_sub(1))
        });
        match prev {
            Some(p) if chain.len() < entries.len() => chain.push(p),
            _ => {
                return Err(Error::corrupt(
                    "vhdx log",
                    format!(
                        "the active sequence (entries {}..={}) does not reach back to its \
                         tail at byte {} of the log; it cannot be replayed",
                        cur.seq, head.seq, head.tail
                    ),
                ))
            }
        }
    }
    chain.reverse();
    if file.size() < head.flushed {
        return Err(Error::corrupt(
            "vhdx log",
            format!(
                "the log says the file was flushed up to byte {}, but it has {} bytes: \
                 truncated",
                head.flushed,
                file.size()
            ),
        ));
    }
    let mut writes = Vec::new();
    for e in &chain {
        entry_writes(&log, e, &mut writes)?;
    }
    let size = writes
        .iter()
        .map(|w| w.range().1)
        .chain([file.size(), head.last])
        .max()
        .unwrap_or(0);
    ctx.warn(format!(
        "vhdx log: {} entries (sequence {}..={}) were never applied to the file; they are \
         replayed in memory, the file is not changed",
        chain.len(),
        chain[0].seq,
        head.seq
    ));
    Ok(Arc::new(Replayed {
        base: file,
        size,
        writes,
    }))
}

/// The BAT and metadata regions (offset, length) from the region table (its second copy if
/// the first is damaged), refusing overlapping regions and unknown required ones.
#[allow(clippy::type_complexity)]
fn regions(src: &dyn ReadAt, ctx: &mut OpenCtx<'_>) -> crate::Result<((u64, u64), (u64, u64))> {
    let mut table = None;
    let mut why = Vec::new();
    for (k, at) in [(1, 192u64 << 10), (2, 256 << 10)] {
        let rt = src.read_upto(at, 64 << 10)?;
        if rt.len() < 64 << 10 || !rt.starts_with(b"regi") {
            why.push(format!("region table {k}: no \"regi\" signature"));
            continue;
        }
        let stored = le32(&rt, 4).unwrap_or(0);
        let sum = crc(&rt, 4);
        if stored != sum {
            why.push(format!(
                "region table {k}: checksum {stored:#010x} is wrong (CRC-32C {sum:#010x})"
            ));
            continue;
        }
        table = Some(rt);
        break;
    }
    let Some(rt) = table else {
        return Err(Error::corrupt("vhdx region table", why.join("; ")));
    };
    for w in why {
        ctx.warn(format!("vhdx {w}; the other copy is used"));
    }
    let count = le32(&rt, 8).unwrap_or(0);
    if count > 2047 {
        return Err(Error::corrupt(
            "vhdx region table",
            format!("{count} entries (at most 2047 fit)"),
        ));
    }
    let mut all: Vec<(String, u64, u64)> = Vec::new();
    let (mut bat, mut meta) = (None, None);
    for k in 0..count as usize {
        let e = 16 + k * 32;
        let id = guid_at(&rt, e).unwrap_or_default();
        let off = le64(&rt, e + 16).unwrap_or(0);
        let len = u64::from(le32(&rt, e + 24).unwrap_or(0));
        let required = le32(&rt, e + 28).unwrap_or(0) & 1 != 0;
        let name = match id.as_str() {
            REGION_BAT => "BAT".to_string(),
            REGION_METADATA => "metadata".to_string(),
            _ if required => {
                return Err(Error::Unsupported(format!(
                    "vhdx region {id}: required by the file but unknown to this reader"
                )))
            }
            _ => format!("region {id}"),
        };
        if off < MIB || off.checked_add(len).is_none() {
            return Err(Error::corrupt(
                "vhdx region table",
                format!("{name} region at byte {off} ({len} bytes) overlaps the headers"),
            ));
        }
        for (other, o, l) in &all {
            if off < o + l && *o < off + len {
                return Err(Error::corrupt(
                    "vhdx region table",
                    format!(
                        "the {name} region (bytes {off}..{}) overlaps the {other} region \
                         (bytes {o}..{})",
                        off + len,
                        o + l
                    ),
                ));
            }
        }
        match id.as_str() {
            REGION_BAT => bat = Some((off, len)),
            REGION_METADATA => meta = Some((off, len)),
            _ => {}
        }
        all.push((name, off, len));
    }
    match (bat, meta) {
        (Some(b), Some(m)) => Ok((b, m)),
        _ => Err(Error::corrupt(
            "vhdx region table",
            "no BAT region or no metadata region",
        )),
    }
}

/// The metadata items this reader uses.
#[derive(Default)]
struct Metadata {
    file_parameters: Option<(u64, u32)>,
    disk_size: Option<u64>,
    sector: Option<u64>,
    parent_locator: Vec<(String, String)>,
}

/// Reads the metadata table and its items, refusing unknown required items.
fn metadata(src: &dyn ReadAt, (moff, mlen): (u64, u64)) -> crate::Result<Metadata> {
    let region = read_table(src, "vhdx metadata region", moff, mlen)?;
    if !region.starts_with(b"metadata") || region.len() < 64 << 10 {
        return Err(Error::corrupt(
            "vhdx metadata region",
            format!("no \"metadata\" table at byte {moff}"),
        ));
    }
    let n = usize::from(le16(&region, 10).unwrap_or(0));
    if n > 2047 {
        return Err(Error::corrupt(
            "vhdx metadata table",
            format!("{n} entries (at most 2047 fit)"),
        ));
    }
    let mut m = Metadata::default();
    for k in 0..n {
        let e = 32 + k * 32;
        let id = guid_at(&region, e).unwrap_or_default();
        let off = le32(&region, e + 16).unwrap_or(0) as usize;
        let len = le32(&region, e + 20).unwrap_or(0) as usize;
        let required = le32(&region, e + 24).unwrap_or(0) & 4 != 0;
        let item = off
            .checked_add(len)
            .and_then(|end| region.get(off..end))
            .ok_or_else(|| {
                Error::corrupt(
                    "vhdx metadata table",
                    format!("item {id}: {len} bytes at {off} reach past the {mlen}-byte region"),
                )
            })?;
        let short = || {
            Error::corrupt(
                "vhdx metadata table",
                format!("item {id}: {len} bytes, too short"),
            )
        };
        match id.as_str() {
            META_FILE_PARAMETERS => {
                let bs = le32(item, 0).ok_or_else(short)?;
                let flags = le32(item, 4).ok_or_else(short)?;
                m.file_parameters = Some((u64::from(bs), flags));
            }
            META_VIRTUAL_DISK_SIZE => m.disk_size = Some(le64(item, 0).ok_or_else(short)?),
            META_LOGICAL_SECTOR => {
                m.sector = Some(u64::from(le32(item, 0).ok_or_else(short)?));
            }
            META_PARENT_LOCATOR => m.parent_locator = parent_locator(item)?,
            META_VIRTUAL_DISK_ID | META_PHYSICAL_SECTOR => {}
            _ if required => {
                return Err(Error::Unsupported(format!(
                    "vhdx metadata item {id}: required by the file but unknown to this reader"
                )))
            }
            _ => {}
        }
    }
    Ok(m)
}

/// The key/value pairs of a parent locator item (UTF-16LE strings).
fn parent_locator(item: &[u8]) -> crate::Result<Vec<(String, String)>> {
    let n = usize::from(le16(item, 18).unwrap_or(0));
    let text = |off: u32, len: u16| -> crate::Result<String> {
        let off = off as usize;
        let b = item.get(off..off + usize::from(len)).ok_or_else(|| {
            Error::corrupt(
                "vhdx parent locator",
                format!("a {len}-byte string at {off} reaches past the item"),
            )
        })?;
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16_lossy(&units))
    };
    let mut out = Vec::new();
    for k in 0..n {
        let e = 20 + k * 12;
        let (Some(ko), Some(vo), Some(kl), Some(vl)) = (
            le32(item, e),
            le32(item, e + 4),
            le16(item, e + 8),
            le16(item, e + 10),
        ) else {
            return Err(Error::corrupt(
                "vhdx parent locator",
                format!("{n} entries do not fit in the item"),
            ));
        };
        out.push((text(ko, kl)?, text(vo, vl)?));
    }
    Ok(out)
}

/// A Windows path as a path on this machine (separators turned, drive letter dropped).
fn from_windows(p: &str) -> String {
    let p = p.trim_start_matches(r"\\?\");
    let p = match p.as_bytes() {
        [d, b':', ..] if d.is_ascii_alphabetic() => &p[2..],
        _ => p,
    };
    p.replace('\\', "/")
}

/// Opens the parent of a differencing disk: `relative_path`, then `absolute_win32_path`,
/// then their base names beside the image (`volume_path` names a Windows volume GUID, which
/// means nothing here).
fn find_parent(
    locator: &[(String, String)],
    ctx: &mut OpenCtx<'_>,
) -> crate::Result<Arc<dyn ReadAt>> {
    let get = |k: &str| {
        locator
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let mut names: Vec<String> = Vec::new();
    let paths: Vec<String> = ["relative_path", "absolute_win32_path"]
        .iter()
        .filter_map(|k| get(k))
        .collect();
    for p in &paths {
        names.push(from_windows(p));
    }
    for p in &paths {
        names.push(p.rsplit(['/', '\\']).next().unwrap_or(p).to_string());
    }
    names.retain(|n| !n.is_empty());
    names.dedup();
    if names.is_empty() {
        return Err(Error::corrupt(
            "vhdx parent locator",
            "a differencing disk whose parent locator has no relative_path nor \
             absolute_win32_path",
        ));
    }
    let Some(dir) = ctx.sibling_dir().map(|d| d.to_path_buf()) else {
        return Err(Error::Unsupported(format!(
            "vhdx differencing disk: its parent ({}) cannot be looked for, as the image was \
             not opened from a file of its own",
            names.join(", ")
        )));
    };
    match names.iter().find(|n| dir.join(n).exists()) {
        Some(n) => {
            if let Some(link) = get("parent_linkage") {
                check_linkage(&dir.join(n), &link, n, ctx);
            }
            ctx.open_named("parent", n)
        }
        None => Err(Error::Format(format!(
            "vhdx differencing disk: its parent was not found; looked for {} (relative to {})",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        ))),
    }
}

/// Warns when the parent found is a VHDX whose data write GUID is not the `parent_linkage`
/// the child recorded: the parent was written since, and the disk may not read as it was.
/// (A parent that is not a plain VHDX file is not checked.)
fn check_linkage(path: &std::path::Path, link: &str, name: &str, ctx: &mut OpenCtx<'_>) {
    let Ok(f) = crate::io::file::FileSource::open(path) else {
        return;
    };
    if !f.read_upto(0, 8).is_ok_and(|h| h == b"vhdxfile") {
        return;
    }
    let mut best: Option<(u64, Vec<u8>)> = None;
    for at in [64u64 << 10, 128 << 10] {
        if let Ok(Ok((seq, h))) = header(&f, at) {
            if best.as_ref().is_none_or(|b| b.0 < seq) {
                best = Some((seq, h));
            }
        }
    }
    let Some(id) = best.and_then(|(_, h)| guid_at(&h, 32)) else {
        return;
    };
    let want = link.trim_matches(['{', '}']).to_ascii_lowercase();
    if want != id {
        ctx.warn(format!(
            "vhdx parent {name}: its data write GUID {id} is not the parent_linkage {link} \
             this differencing disk recorded; the parent may have been written since, and \
             the disk may not read as written"
        ));
    }
}

/// A VHDX disk as runs: its BAT, and the sector bitmaps of partially present blocks.
struct VhdxLayout {
    src: Arc<dyn ReadAt>,
    size: u64,
    block: u64,
    sector: u64,
    chunk_ratio: u64,
    bat: Vec<u64>,
    differencing: bool,
    bitmaps: RecentTables,
}

impl VhdxLayout {
    /// The BAT entry of payload block `b` (0, not present, past the table).
    fn entry(&self, b: u64) -> u64 {
        let i = b + b / self.chunk_ratio;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.bat.get(i).copied())
            .unwrap_or(NOT_PRESENT)
    }

    /// The bits of block `b`'s sectors in its chunk's sector bitmap.
    fn bitmap(&self, b: u64) -> io::Result<Vec<u8>> {
        let chunk = b / self.chunk_ratio;
        let i = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let e = usize::try_from(i)
            .ok()
            .and_then(|i| self.bat.get(i).copied())
            .unwrap_or(0);
        if e & 7 != SB_PRESENT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "vhdx BAT: payload block {b} is partially present but its sector bitmap \
                     block (entry {i}) is not"
                ),
            ));
        }
        let bits = self.block / self.sector;
        let at = (e & !(MIB - 1)) + (b % self.chunk_ratio) * bits / 8;
        self.src.read_vec(at, (bits / 8) as usize)
    }
}

impl Layout for VhdxLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let b = offset / self.block;
        let within = offset % self.block;
        let left = self.block - within;
        let e = self.entry(b);
        let absent = if self.differencing {
            Run::Parent
        } else {
            Run::Zero
        };
        Ok(match e & 7 {
            FULLY_PRESENT => (
                Run::Stored {
                    file: 0,
                    at: (e & !(MIB - 1)) + within,
                },
                left,
            ),
            PARTIALLY_PRESENT => {
                let bits = self.bitmaps.get_or_load(b, || self.bitmap(b))?;
                let s = within / self.sector;
                let (present, n) = bit_run(&bits, s, self.block / self.sector, false);
                let len = n * self.sector - within % self.sector;
                if present {
                    let at = (e & !(MIB - 1)) + within;
                    (Run::Stored { file: 0, at }, len)
                } else {
                    (Run::Parent, len)
                }
            }
            NOT_PRESENT => (absent, left),
            _ => (Run::Zero, left),
        })
    }

    fn stored(&self) -> ExtentMap {
        let mut m = ExtentMap::new();
        for b in 0..self.size.div_ceil(self.block) {
            if matches!(self.entry(b) & 7, FULLY_PRESENT | PARTIALLY_PRESENT) {
                let s = b * self.block;
                m.insert(s, (s + self.block).min(self.size));
            }
        }
        m
    }

    fn parent_ranges(&self) -> ExtentMap {
        let mut m = ExtentMap::new();
        if !self.differencing {
            return m;
        }
        for b in 0..self.size.div_ceil(self.block) {
            if matches!(self.entry(b) & 7, NOT_PRESENT | PARTIALLY_PRESENT) {
                let s = b * self.block;
                m.insert(s, (s + self.block).min(self.size));
            }
        }
        m
    }

    fn unit_size(&self) -> u64 {
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths() {
        assert_eq!(from_windows(r"..\base\p.vhdx"), "../base/p.vhdx");
        assert_eq!(from_windows(r"D:\vm\p.vhdx"), "/vm/p.vhdx");
    }

    #[test]
    fn crc_skips_its_field() {
        let mut b = vec![1u8; 64];
        let c = crc(&b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
        assert_eq!(crc(&b, 4), c);
    }
}
