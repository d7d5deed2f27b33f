//! Microsoft VHD (Virtual PC / Hyper-V "Virtual Hard Disk Image Format Specification" 1.0): a
//! 512-byte footer at the end (511 bytes from some old tools), copied to the start of dynamic
//! and differencing disks.
//!
//! - **Fixed**: the raw disk, then the footer; read through as a payload window.
//! - **Dynamic**: a dynamic header ("cxsparse") names a block allocation table (BAT) of
//!   big-endian sector numbers, one per block; each allocated block is a sector bitmap
//!   (a bit per sector, high bit first, padded to 512 bytes) followed by the block's data.
//!   Unallocated blocks, and sectors whose bitmap bit is clear, read as zeros.
//! - **Differencing**: the same, but what the image lacks (unallocated blocks, clear bits) is
//!   read from the parent, found through the parent locators (W2ru relative, W2ku absolute,
//!   both UTF-16LE; "MacX" file URL, UTF-8) and then the parent's name in the dynamic header,
//!   beside the image.
//!
//! The disk's size follows qemu (block/vpc.c), so `qemu-img convert -O raw` and this reader
//! agree byte for byte: images from Virtual PC and qemu ("vpc ", "qemu") are as large as
//! their CHS geometry says; all others (Hyper-V's "win ", Disk2vhd, XenServer, Azure, qemu with
//! `force_size`, unknown creators) as their current-size field says, and so is any image whose
//! geometry is the largest CHS can hold or is all zeros. qemu 10 takes the geometry only for
//! those two creators (checked with qemu-img 10.0.2 on one image under five creator tags:
//! "vpc " and "qemu" by geometry, "xyzw", "vbox" and "bwse" by current size); older qemu
//! also took it for unknown creators.

use std::io;
use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::{bit_run, read_table, Layout, RecentTables, Run, VirtualDisk};
use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt, Slice};
use crate::util::{be16, be32, be64};
use crate::{Error, ExtentMap};

impl Format {
    /// Microsoft VHD (fixed, dynamic or differencing).
    #[allow(non_upper_case_globals)]
    pub const Vhd: Format = Format::new("vhd", "vhd", Kind::Container);
}

const COOKIE: &[u8; 8] = b"conectix";
const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// A BAT entry for a block that is not in the file.
const FREE: u32 = 0xFFFF_FFFF;
/// The largest geometry CHS can hold (65535 cylinders, 16 heads, 255 sectors): qemu takes the
/// current-size field for such disks, as their geometry no longer says their size.
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;
/// Blocks larger than this are refused: the VHD default is 2 MiB, and a block's sector bitmap
/// is read whole.
const MAX_BLOCK: u32 = 256 << 20;
/// Parent locator data longer than this is not a path.
const MAX_LOCATOR: u64 = 64 << 10;

/// Recognises a VHD by its footer, or by the footer copy that opens a dynamic disk.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vhd"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.tail().is_some_and(|t| self.trailer(t)) || p.head().starts_with(COOKIE)
    }

    fn trailer(&self, last: &[u8]) -> bool {
        let n = last.len();
        // The footer is the last 512 bytes; some old tools wrote only 511.
        (n >= 512 && last[n - 512..].starts_with(COOKIE))
            || (n >= 511 && last[n - 511..].starts_with(COOKIE))
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        open(src, ctx)
    }
}

/// VHD disk types.
fn vhd_type(t: u32) -> &'static str {
    match t {
        2 => "fixed",
        3 => "dynamic",
        4 => "differencing",
        _ => "unknown type",
    }
}

/// The VHD checksum: the ones' complement of the sum of every byte but the checksum field's
/// four at `skip`.
fn checksum(b: &[u8], skip: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

/// The footer as found: where, its bytes, and whether its checksum is right.
struct Footer {
    at: u64,
    bytes: Vec<u8>,
    sum_ok: bool,
}

impl Footer {
    /// The footer at the end (512 or 511 bytes from it) or its copy at the start, the first
    /// one whose checksum is right, else the first one found.
    fn find(src: &dyn ReadAt) -> crate::Result<Footer> {
        let size = src.size();
        let mut found: Vec<Footer> = Vec::new();
        for at in [size.checked_sub(512), size.checked_sub(511), Some(0)]
            .into_iter()
            .flatten()
        {
            let mut f = src.read_upto(at, 512)?;
            if !f.starts_with(COOKIE) || f.len() < 85 {
                continue;
            }
            // A 511-byte footer lacks the last reserved byte.
            f.resize(512, 0);
            let stored = be32(&f, 64).unwrap_or(0);
            let sum_ok = checksum(&f, 64) == stored;
            found.push(Footer {
                at,
                bytes: f,
                sum_ok,
            });
        }
        match found.iter().position(|f| f.sum_ok) {
            Some(i) => Ok(found.swap_remove(i)),
            None if !found.is_empty() => Ok(found.swap_remove(0)),
            None => Err(Error::corrupt("vhd footer", "no \"conectix\" footer")),
        }
    }

    fn disk_type(&self) -> u32 {
        be32(&self.bytes, 60).unwrap_or(0)
    }

    fn current_size(&self) -> u64 {
        be64(&self.bytes, 48).unwrap_or(0)
    }

    fn creator(&self) -> [u8; 4] {
        let mut c = [0u8; 4];
        c.copy_from_slice(&self.bytes[28..32]);
        c
    }

    /// The disk size as qemu sees it (see the module doc).
    fn disk_size(&self) -> u64 {
        let cyls = u64::from(be16(&self.bytes, 56).unwrap_or(0));
        let heads = u64::from(self.bytes[58]);
        let secs = u64::from(self.bytes[59]);
        let chs = cyls * heads * secs;
        let creator = self.creator();
        let by_size = ![*b"vpc ", *b"qemu"].contains(&creator);
        // qemu also takes the current size when there is no geometry at all.
        if by_size || chs == MAX_CHS_SECTORS || chs == 0 {
            self.current_size() / 512 * 512
        } else {
            chs * 512
        }
    }
}

/// Header facts of a VHD, from its footer; a fixed disk gets its payload window (its data,
/// clipped to the bytes before the footer).
pub fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let f = Footer::find(src)?;
    Ok(facts(&f))
}

fn facts(f: &Footer) -> ContainerInfo {
    let ty = f.disk_type();
    let size = f.disk_size();
    let creator = String::from_utf8_lossy(&f.creator())
        .trim_end_matches(['\0', ' '])
        .to_string();
    let mut detail = vhd_type(ty).to_string();
    if !creator.is_empty() {
        detail += &format!(", made by {creator:?}");
    }
    let mut i = ContainerInfo::new(Format::Vhd, Some(size), detail);
    if ty == 2 && f.at > 0 {
        // A fixed disk is its raw bytes followed by the footer, which must not read as data.
        if size > f.at {
            i.detail += &format!(", truncated: {} data bytes for a {size}-byte disk", f.at);
        }
        i.payload = Some((0, size.min(f.at)));
    }
    if ty == 2 && f.at == 0 {
        i.detail += ", footer only at the start (copy of a fixed disk?)";
    }
    i
}

fn open(src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
    let f = Footer::find(&*src)?;
    if !f.sum_ok {
        ctx.warn(format!(
            "vhd footer at byte {}: checksum {:#010x} is wrong (the footer sums to {:#010x}); \
             its fields are used as they are",
            f.at,
            be32(&f.bytes, 64).unwrap_or(0),
            checksum(&f.bytes, 64)
        ));
    }
    let info = facts(&f);
    match f.disk_type() {
        2 => {
            let Some((off, len)) = info.payload else {
                // Only a footer copy at the start: where the data ends is unknown.
                return super::step(info, src, ctx);
            };
            if info.virtual_size.is_some_and(|v| v > len) {
                ctx.warn(format!(
                    "vhd footer: the disk is {} bytes but the file holds only {len} bytes of \
                     it before the footer; the disk is clipped to {len} bytes",
                    info.virtual_size.unwrap_or(0)
                ));
            }
            let layer = Layer::stored(
                Format::Vhd,
                &*src,
                Some(format!(
                    "virtual size {len} bytes ({}), {}",
                    crate::util::human_bytes(len),
                    info.detail
                )),
            );
            Ok(Step::inner(layer, Arc::new(Slice::new(src, off, len))))
        }
        3 | 4 => {
            let disk = dynamic(&f, src.clone(), ctx)?;
            Ok(super::disk_step(info, &*src, disk))
        }
        t => Err(Error::Unsupported(format!(
            "vhd disk type {t} (only 2 fixed, 3 dynamic and 4 differencing exist)"
        ))),
    }
}

/// A dynamic or differencing disk: its BAT and blocks.
struct DynLayout {
    src: Arc<dyn ReadAt>,
    size: u64,
    block: u64,
    bitmap_len: u64,
    bat: Vec<u32>,
    differencing: bool,
    bitmaps: RecentTables,
}

impl DynLayout {
    /// What a sector the image does not hold reads as.
    fn absent(&self) -> Run {
        if self.differencing {
            Run::Parent
        } else {
            Run::Zero
        }
    }
}

impl Layout for DynLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let b = offset / self.block;
        let within = offset % self.block;
        let left = self.block - within;
        let entry = usize::try_from(b)
            .ok()
            .and_then(|i| self.bat.get(i).copied())
            .unwrap_or(FREE);
        if entry == FREE {
            return Ok((self.absent(), left));
        }
        let start = u64::from(entry) * 512;
        let bitmap = self
            .bitmaps
            .get_or_load(b, || self.src.read_vec(start, self.bitmap_len as usize))?;
        let sector = within / 512;
        let (present, n) = bit_run(&bitmap, sector, self.block / 512, true);
        let len = n * 512 - within % 512;
        if present {
            let at = start + self.bitmap_len + within;
            Ok((Run::Stored { file: 0, at }, len))
        } else {
            Ok((self.absent(), len))
        }
    }

    fn stored(&self) -> ExtentMap {
        // Whole allocated blocks: a clear bitmap bit inside one only makes the hint larger
        // than the data, never smaller.
        let mut m = ExtentMap::new();
        for (i, &e) in self.bat.iter().enumerate() {
            if e != FREE {
                let s = i as u64 * self.block;
                m.insert(s, s.saturating_add(self.block).min(self.size));
            }
        }
        m
    }

    fn parent_ranges(&self) -> ExtentMap {
        if !self.differencing {
            return ExtentMap::new();
        }
        // Unallocated blocks, and allocated ones too (their clear bits), to stay on the safe
        // side without reading every bitmap at open.
        ExtentMap::single(0, self.size)
    }

    fn unit_size(&self) -> u64 {
        self.block
    }
}

/// Opens the BAT of a dynamic or differencing disk (and its parent).
fn dynamic(f: &Footer, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<VirtualDisk> {
    let file_len = src.size();
    let size = f.disk_size();
    let hdr_at = be64(&f.bytes, 16).unwrap_or(u64::MAX);
    let h = read_table(&*src, "vhd dynamic header", hdr_at, 1024)?;
    if !h.starts_with(DYN_COOKIE) {
        return Err(Error::corrupt(
            "vhd dynamic header",
            format!("no \"cxsparse\" cookie at byte {hdr_at} (the footer's data offset)"),
        ));
    }
    let stored = be32(&h, 36).unwrap_or(0);
    let sum = checksum(&h, 36);
    if stored != sum {
        ctx.warn(format!(
            "vhd dynamic header at byte {hdr_at}: checksum {stored:#010x} is wrong (the header \
             sums to {sum:#010x}); its fields are used as they are"
        ));
    }
    let bat_at = be64(&h, 16).unwrap_or(u64::MAX);
    let entries = be32(&h, 28).unwrap_or(0);
    let block = be32(&h, 32).unwrap_or(0);
    if block < 512 || !block.is_power_of_two() || block > MAX_BLOCK {
        return Err(Error::corrupt(
            "vhd dynamic header",
            format!(
                "block size {block} is not a power of two from 512 bytes to {} MiB",
                MAX_BLOCK >> 20
            ),
        ));
    }
    let block = u64::from(block);
    let needed = size.div_ceil(block);
    if needed > u64::from(entries) {
        return Err(Error::corrupt(
            "vhd dynamic header",
            format!(
                "the BAT has {entries} entries of {block} bytes, too few for the {size}-byte \
                 disk ({needed} needed)"
            ),
        ));
    }
    let raw = read_table(&*src, "vhd BAT", bat_at, needed * 4)?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // A sector bitmap: a bit per sector, padded to a whole sector.
    let bitmap_len = (block / 512 / 8).div_ceil(512) * 512;
    for (i, &e) in bat.iter().enumerate() {
        if e == FREE {
            continue;
        }
        let start = u64::from(e) * 512;
        let end = start + bitmap_len + block;
        if end > file_len {
            return Err(Error::corrupt(
                "vhd BAT",
                format!(
                    "entry {i} puts block {i} at sector {e}: it ends at byte {end}, past the \
                     end of the file ({file_len} bytes)"
                ),
            ));
        }
    }
    let differencing = f.disk_type() == 4;
    let parent = if differencing {
        Some(find_parent(&*src, &h, ctx)?)
    } else {
        None
    };
    let layout = DynLayout {
        src: src.clone(),
        size,
        block,
        bitmap_len,
        bat,
        differencing,
        bitmaps: RecentTables::default(),
    };
    Ok(VirtualDisk::new(size, Box::new(layout), vec![src], parent))
}

/// UTF-16 text (little- or big-endian) up to its first NUL.
fn utf16(b: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A Windows path as a path on this machine: separators turned, a drive letter or a `\\?\`
/// prefix dropped (an absolute Windows path then names the same place under `/`, which is
/// only right when the image was made on this machine; the base name beside the image is
/// tried as well).
fn from_windows(p: &str) -> String {
    let p = p.trim_start_matches(r"\\?\");
    let p = match p.as_bytes() {
        [d, b':', ..] if d.is_ascii_alphabetic() => &p[2..],
        _ => p,
    };
    p.replace('\\', "/")
}

/// A `file://` URL (the "MacX" locator) as a path.
fn from_file_url(u: &str) -> String {
    let p = u.strip_prefix("file://").unwrap_or(u);
    let p = p.strip_prefix("localhost").unwrap_or(p);
    // Percent-escapes, byte by byte.
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The base name of a path written with either separator.
fn base_name(p: &str) -> &str {
    p.rsplit(['/', '\\']).next().unwrap_or(p)
}

/// The parent's names this differencing disk gives, in the order they are tried: the
/// locators (W2ru, W2ku, MacX, and the deprecated Wi2r/Wi2k), then the parent's name in the
/// header beside the image, then each name's base name beside the image.
fn parent_names(src: &dyn ReadAt, h: &[u8], ctx: &mut OpenCtx<'_>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    for k in 0..8 {
        let e = 576 + k * 24;
        let code: [u8; 4] = h[e..e + 4].try_into().unwrap_or([0; 4]);
        if code == [0; 4] {
            continue;
        }
        let len = u64::from(be32(h, e + 8).unwrap_or(0));
        let at = be64(h, e + 16).unwrap_or(0);
        if len == 0 {
            continue;
        }
        if len > MAX_LOCATOR {
            ctx.warn(format!(
                "vhd parent locator {k} ({}): {len} bytes of data, too long for a path; skipped",
                String::from_utf8_lossy(&code)
            ));
            continue;
        }
        let data = match read_table(src, "vhd parent locator", at, len) {
            Ok(d) => d,
            Err(e) => {
                ctx.warn(format!("vhd parent locator {k}: {e}; skipped"));
                continue;
            }
        };
        let name = match &code {
            b"W2ru" | b"W2ku" => from_windows(&utf16(&data, false)),
            b"MacX" => from_file_url(String::from_utf8_lossy(&data).trim_end_matches('\0')),
            b"Wi2r" | b"Wi2k" => {
                from_windows(String::from_utf8_lossy(&data).trim_end_matches('\0'))
            }
            // "Mac " holds a Mac OS alias record, not a path.
            _ => continue,
        };
        if !name.is_empty() {
            bases.push(base_name(&name).to_string());
            names.push(name);
        }
    }
    let unicode = utf16(&h[64..576], true);
    if !unicode.is_empty() {
        bases.push(base_name(&unicode).to_string());
        names.push(from_windows(&unicode));
    }
    names.extend(bases);
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Opens the parent of a differencing disk: the first name it gives that exists.
fn find_parent(
    src: &dyn ReadAt,
    h: &[u8],
    ctx: &mut OpenCtx<'_>,
) -> crate::Result<Arc<dyn ReadAt>> {
    let names = parent_names(src, h, ctx);
    if names.is_empty() {
        return Err(Error::corrupt(
            "vhd dynamic header",
            "a differencing disk that names no parent (no parent locator, no parent name)",
        ));
    }
    let Some(dir) = ctx.sibling_dir().map(|d| d.to_path_buf()) else {
        return Err(Error::Unsupported(format!(
            "vhd differencing disk: its parent ({}) cannot be looked for, as the image was not \
             opened from a file of its own",
            names.join(", ")
        )));
    };
    match names.iter().find(|n| dir.join(n).exists()) {
        Some(n) => {
            check_parent_id(&dir.join(n), &h[40..56], n, ctx);
            ctx.open_named("parent", n)
        }
        None => Err(Error::Format(format!(
            "vhd differencing disk: its parent was not found; looked for {} (relative to {})",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        ))),
    }
}

/// Warns when the parent found is a VHD whose unique id is not the one the child recorded:
/// the parent was changed, or another file of that name was found, and the disk may not read
/// as it was written. (A parent that is not a plain VHD file is not checked.)
fn check_parent_id(path: &std::path::Path, want: &[u8], name: &str, ctx: &mut OpenCtx<'_>) {
    let Ok(f) = crate::io::file::FileSource::open(path) else {
        return;
    };
    let Ok(footer) = Footer::find(&f) else {
        return;
    };
    let id = &footer.bytes[68..84];
    if want.iter().any(|&b| b != 0) && id != want {
        ctx.warn(format!(
            "vhd parent {name}: its unique id {} is not the {} this differencing disk \
             recorded; the parent may have changed since, and the disk may not read as written",
            crate::util::uuid_be(id.try_into().unwrap_or(&[0; 16])),
            crate::util::uuid_be(want.try_into().unwrap_or(&[0; 16]))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    #[test]
    fn fixed_vhd_payload() {
        let mut v = vec![7u8; 4096 + 512];
        let f = &mut v[4096..];
        f[..8].copy_from_slice(b"conectix");
        f[28..32].copy_from_slice(b"win ");
        f[48..56].copy_from_slice(&4096u64.to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let i = info(&MemSource(v)).unwrap();
        assert_eq!(i.payload, Some((0, 4096)));
        assert_eq!(i.virtual_size, Some(4096));
    }

    #[test]
    fn size_follows_qemu() {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(COOKIE);
        f[48..56].copy_from_slice(&(10u64 << 20).to_be_bytes());
        // 20 cylinders, 16 heads, 63 sectors: 20160 sectors.
        f[56..58].copy_from_slice(&20u16.to_be_bytes());
        f[58] = 16;
        f[59] = 63;
        let foot = |c: &[u8; 4]| {
            let mut b = f.clone();
            b[28..32].copy_from_slice(c);
            Footer {
                at: 0,
                bytes: b,
                sum_ok: true,
            }
        };
        assert_eq!(foot(b"vpc ").disk_size(), 20160 * 512);
        assert_eq!(foot(b"qemu").disk_size(), 20160 * 512);
        assert_eq!(foot(b"win ").disk_size(), 10 << 20);
        assert_eq!(foot(b"tap\0").disk_size(), 10 << 20);
        assert_eq!(foot(b"bwse").disk_size(), 10 << 20);
        assert_eq!(foot(b"vbox").disk_size(), 10 << 20);
    }

    #[test]
    fn paths() {
        assert_eq!(from_windows(r".\dir\p.vhd"), "./dir/p.vhd");
        assert_eq!(from_windows(r"C:\vms\p.vhd"), "/vms/p.vhd");
        assert_eq!(from_file_url("file://localhost/a%20b/p.vhd"), "/a b/p.vhd");
        assert_eq!(from_file_url("file:///x/%4"), "/x/%4");
        assert_eq!(base_name(r"C:\vms\p.vhd"), "p.vhd");
    }

    #[test]
    fn trailers() {
        let mut t = vec![0u8; 600];
        assert!(!Driver.trailer(&t));
        t[600 - 512..600 - 504].copy_from_slice(COOKIE);
        assert!(Driver.trailer(&t));
        let mut t = vec![0u8; 511];
        t[..8].copy_from_slice(COOKIE);
        assert!(Driver.trailer(&t));
        assert!(!Driver.trailer(&t[..510]));
    }
}
