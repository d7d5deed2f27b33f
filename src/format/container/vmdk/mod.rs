//! VMware VMDK: sparse extents (`KDMV`: monolithicSparse, streamOptimized; ESX `COWD`) and
//! text descriptors (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs, differencing disks),
//! decoded to the virtual disk.
//!
//! A sparse file opened on its own is the whole disk (its embedded descriptor only names a
//! parent). A descriptor lists extents, each a stretch of the disk in another file: flat
//! extents (`FLAT`, `VMFS`) are the disk's bytes at an offset of their file, sparse extents
//! (`SPARSE`, `VMFSSPARSE`) are decoded here, `ZERO` extents read as zeros. Extent files are
//! opened as plain files beside the descriptor; absent ones are a warning at open naming them,
//! and reading their part of the disk fails naming the file. A `parentFileNameHint` is opened
//! as the parent, through the registry.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::{Layout, Run, VirtualDisk};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::{Error, ExtentMap};

pub(crate) mod descriptor;
pub(crate) mod sparse;

use descriptor::Descriptor;
use sparse::{Piece, Sparse, SECTOR};

impl Format {
    /// VMware VMDK sparse extent (KDMV / COWD).
    #[allow(non_upper_case_globals)]
    pub const VmdkSparse: Format =
        Format::new("vmdk-sparse", "vmdk (sparse extent)", Kind::Container);
    /// VMware VMDK text descriptor.
    #[allow(non_upper_case_globals)]
    pub const VmdkDescriptor: Format =
        Format::new("vmdk-descriptor", "vmdk (descriptor)", Kind::Container);
}

/// Largest descriptor read (as qemu: 1 MiB).
const MAX_DESCRIPTOR: usize = 1 << 20;

/// Recognises VMDK sparse extents.
pub(crate) struct SparseDriver;

impl FormatDriver for SparseDriver {
    fn format(&self) -> Format {
        Format::VmdkSparse
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vmdk"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"KDMV") || p.head().starts_with(b"COWD")
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        open_sparse(src, ctx)
    }
}

/// Recognises VMDK text descriptors.
pub(crate) struct DescriptorDriver;

impl FormatDriver for DescriptorDriver {
    fn format(&self) -> Format {
        Format::VmdkDescriptor
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vmdk"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        descriptor::looks_like(p.head())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let t = src.read_upto(0, MAX_DESCRIPTOR)?;
        let text = text_of(&t);
        open_descriptor(&text, Format::VmdkDescriptor, src, ctx)
    }
}

/// Descriptor text: up to the first NUL (an embedded descriptor is padded with them).
fn text_of(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The embedded descriptor of a sparse extent, if it has one.
fn embedded(src: &dyn ReadAt, h: &sparse::Header) -> crate::Result<Option<String>> {
    let Some((off, len)) = h.descriptor else {
        return Ok(None);
    };
    let Some(at) = off.checked_mul(SECTOR) else {
        return Ok(None);
    };
    let len = len.saturating_mul(SECTOR).min(MAX_DESCRIPTOR as u64) as usize;
    let t = src.read_upto(at, len)?;
    Ok(Some(text_of(&t)))
}

/// Opens a sparse file as a whole disk.
fn open_sparse(src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
    let name = ctx.path().display().to_string();
    let h = sparse::header(&*src, &name)?;
    let text = embedded(&*src, &h)?;
    if h.capacity == 0 {
        if let Some(t) = &text {
            // A sparse header holding only a descriptor (qemu reads it as a descriptor file).
            return open_descriptor(t, Format::VmdkSparse, src, ctx);
        }
    }
    let desc = match &text {
        Some(t) => descriptor::parse(t).unwrap_or_else(|e| {
            ctx.warn(format!("vmdk: the embedded descriptor is unreadable ({e})"));
            Descriptor::default()
        }),
        None => {
            ctx.warn(
                "vmdk sparse extent without a descriptor: it may be one piece of a split \
                 disk (open the disk's descriptor file to read all of it)",
            );
            Descriptor::default()
        }
    };
    let sp = Arc::new(Sparse::open(src.clone(), &name, h)?);
    warn_past_eof(ctx, &sp);
    let mut detail = sp.describe();
    if let Some(c) = &desc.create_type {
        detail = format!("createType {c}, {detail}");
    }
    let parent = open_parent(&desc, ctx, &mut detail)?;
    let size = sp.size;
    let layout = VmdkLayout::new(vec![Extent {
        start: 0,
        len: size,
        kind: ExtentKind::Sparse { file: 0, sp },
    }]);
    let info = ContainerInfo::new(Format::VmdkSparse, Some(size), detail);
    let disk = VirtualDisk::new(size, Box::new(layout), vec![src.clone()], parent);
    Ok(super::disk_step(info, &*src, disk))
}

fn warn_past_eof(ctx: &mut OpenCtx<'_>, sp: &Sparse) {
    if sp.past_eof > 0 {
        ctx.warn(format!(
            "vmdk: {} grains lie past the end of the file (truncated?); reading them fails",
            sp.past_eof
        ));
    }
}

/// Opens the parent a descriptor names, if any.
fn open_parent(
    desc: &Descriptor,
    ctx: &mut OpenCtx<'_>,
    detail: &mut String,
) -> crate::Result<Option<Arc<dyn ReadAt>>> {
    let Some(hint) = &desc.parent_hint else {
        return Ok(None);
    };
    let p = ctx.open_named("parent", hint)?;
    *detail += &format!(", parent {hint:?}");
    if let (Some(want), Some(have)) = (&desc.parent_cid, parent_cid(ctx, hint)) {
        if !want.eq_ignore_ascii_case(&have) {
            ctx.warn(format!(
                "vmdk: parentCID {want} differs from the CID {have} of the parent {hint:?}: \
                 the parent changed after this disk was made (qemu refuses to read it)"
            ));
        }
    }
    Ok(Some(p))
}

/// The `CID` in the descriptor of the VMDK parent `hint` (embedded or its own file), if it
/// is a VMDK that says one.
fn parent_cid(ctx: &OpenCtx<'_>, hint: &str) -> Option<String> {
    let (_, f) = ctx.open_file_named("parent", hint).ok()?;
    let text = if f.read_upto(0, 4).ok()?.starts_with(b"KDMV") {
        let h = sparse::header(&*f, hint).ok()?;
        embedded(&*f, &h).ok()??
    } else {
        text_of(&f.read_upto(0, MAX_DESCRIPTOR).ok()?)
    };
    descriptor::parse(&text).ok()?.cid
}

/// Opens the disk a descriptor describes (`src` holds the descriptor).
fn open_descriptor(
    text: &str,
    format: Format,
    src: Arc<dyn ReadAt>,
    ctx: &mut OpenCtx<'_>,
) -> crate::Result<Step> {
    let desc = descriptor::parse(text)?;
    if desc.extents.is_empty() {
        return Err(Error::corrupt("vmdk descriptor", "names no extents"));
    }
    let mut files: Vec<Arc<dyn ReadAt>> = vec![src.clone()];
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    let mut sparse_by_file: HashMap<usize, Arc<Sparse>> = HashMap::new();
    let mut missing: Vec<String> = Vec::new();
    let mut extents = Vec::new();
    let mut start: u64 = 0;
    for l in &desc.extents {
        let line_err =
            |d: String| Error::corrupt("vmdk descriptor", format!("line {}: {d}", l.line));
        let mut len = l
            .sectors
            .checked_mul(SECTOR)
            .ok_or_else(|| line_err(format!("extent size {} sectors overflows", l.sectors)))?;
        let name = l.file.clone().unwrap_or_default();
        let kind = if l.access == "NOACCESS" {
            ExtentKind::Missing(format!(
                "vmdk extent {name:?} (descriptor line {}) is marked NOACCESS",
                l.line
            ))
        } else {
            match l.kind.as_str() {
                "ZERO" => ExtentKind::Zero,
                "FLAT" | "VMFS" | "VMFSRAW" | "VMFSRDM" | "SPARSE" | "VMFSSPARSE" => {
                    match open_extent(ctx, &name, &mut files, &mut by_path)? {
                        None => {
                            missing.push(name.clone());
                            ExtentKind::Missing(format!(
                                "vmdk extent file {name:?} (descriptor line {}) is absent",
                                l.line
                            ))
                        }
                        Some(file) if l.kind.ends_with("SPARSE") => {
                            let sp = match sparse_by_file.get(&file) {
                                Some(sp) => sp.clone(),
                                None => {
                                    let f = files[file].clone();
                                    let h = sparse::header(&*f, &name)?;
                                    let sp = Arc::new(Sparse::open(f, &name, h)?);
                                    warn_past_eof(ctx, &sp);
                                    sparse_by_file.insert(file, sp.clone());
                                    sp
                                }
                            };
                            if sp.size != len {
                                // As qemu: the extent's own header sizes it.
                                ctx.warn(format!(
                                    "vmdk extent {name:?}: the descriptor says {} sectors, its \
                                     header {}; the header is used",
                                    l.sectors,
                                    sp.size / SECTOR
                                ));
                                len = sp.size;
                            }
                            ExtentKind::Sparse { file, sp }
                        }
                        Some(file) => {
                            let at = l.offset.checked_mul(SECTOR).ok_or_else(|| {
                                line_err(format!("extent offset {} sectors overflows", l.offset))
                            })?;
                            let fsize = files[file].size();
                            if at.checked_add(len).is_none_or(|e| e > fsize) {
                                ctx.warn(format!(
                                    "vmdk flat extent {name:?} is {fsize} bytes, shorter than \
                                     the {len} bytes at byte {at} the descriptor gives it; \
                                     reading past its end fails"
                                ));
                            }
                            ExtentKind::Flat { file, at }
                        }
                    }
                }
                "SESPARSE" => {
                    return Err(Error::Unsupported(format!(
                        "VMDK seSparse extents (descriptor line {})",
                        l.line
                    )))
                }
                k => {
                    return Err(Error::Unsupported(format!(
                        "VMDK extent type {k} (descriptor line {})",
                        l.line
                    )))
                }
            }
        };
        if len == 0 {
            continue;
        }
        extents.push(Extent { start, len, kind });
        start = start
            .checked_add(len)
            .ok_or_else(|| line_err("the extents' sizes overflow 64 bits".into()))?;
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(8).map(|m| format!("{m:?}")).collect();
        let more = if missing.len() > 8 {
            format!(" and {} more", missing.len() - 8)
        } else {
            String::new()
        };
        ctx.warn(format!(
            "vmdk descriptor names {} extent file(s) that are absent: {}{more}; reading \
             their part of the disk fails",
            missing.len(),
            shown.join(", ")
        ));
    }
    let mut detail = String::new();
    if let Some(c) = &desc.create_type {
        detail = format!("createType {c}, ");
    }
    detail += &format!("{} extent(s)", extents.len());
    let parent = open_parent(&desc, ctx, &mut detail)?;
    let size = start;
    let layout = VmdkLayout::new(extents);
    let info = ContainerInfo::new(format, Some(size), detail);
    let disk = VirtualDisk::new(size, Box::new(layout), files, parent);
    Ok(super::disk_step(info, &*src, disk))
}

/// Opens the extent file `name` (or finds it already open): its index in `files`, or `None`
/// when it is absent.
fn open_extent(
    ctx: &OpenCtx<'_>,
    name: &str,
    files: &mut Vec<Arc<dyn ReadAt>>,
    by_path: &mut HashMap<PathBuf, usize>,
) -> crate::Result<Option<usize>> {
    match ctx.open_file_named("vmdk extent", name) {
        Ok((path, f)) => {
            if let Some(&i) = by_path.get(&path) {
                return Ok(Some(i));
            }
            files.push(f);
            by_path.insert(path, files.len() - 1);
            Ok(Some(files.len() - 1))
        }
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What one extent of the disk is.
enum ExtentKind {
    /// The disk's bytes in file `file` from byte `at`.
    Flat { file: usize, at: u64 },
    /// A sparse extent in file `file`.
    Sparse { file: usize, sp: Arc<Sparse> },
    /// Zeros.
    Zero,
    /// Not readable: its file is absent (or the extent is NOACCESS); the message says which.
    Missing(String),
}

/// One extent: `len` bytes of disk from `start`.
struct Extent {
    start: u64,
    len: u64,
    kind: ExtentKind,
}

/// The disk a VMDK describes, extent after extent.
struct VmdkLayout {
    extents: Vec<Extent>,
    stored: ExtentMap,
    parent: ExtentMap,
    unit: u64,
}

impl VmdkLayout {
    fn new(extents: Vec<Extent>) -> Self {
        let mut stored = Vec::new();
        let mut parent = Vec::new();
        let mut unit = 0;
        for e in &extents {
            let end = e.start + e.len;
            match &e.kind {
                ExtentKind::Flat { .. } | ExtentKind::Missing(_) => stored.push((e.start, end)),
                ExtentKind::Zero => {}
                ExtentKind::Sparse { sp, .. } => {
                    unit = unit.max(sp.grain);
                    let clip = |m: &ExtentMap| {
                        m.clip(e.len)
                            .shifted(e.start)
                            .iter()
                            .map(|r| (r.start, r.end))
                            .collect::<Vec<_>>()
                    };
                    stored.extend(clip(&sp.stored));
                    parent.extend(clip(&sp.parent));
                    // A sparse extent shorter than the descriptor says: the rest is not here.
                    if sp.size < e.len {
                        parent.push((e.start + sp.size, end));
                    }
                }
            }
        }
        VmdkLayout {
            extents,
            stored: ExtentMap::from_ranges(stored),
            parent: ExtentMap::from_ranges(parent),
            unit: if unit == 0 { 64 << 10 } else { unit },
        }
    }
}

impl Layout for VmdkLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let i = self.extents.partition_point(|e| e.start + e.len <= offset);
        let e = self.extents.get(i).ok_or_else(|| {
            io::Error::other(format!("byte {offset} lies past the last vmdk extent"))
        })?;
        let rel = offset - e.start;
        let left = e.len - rel;
        Ok(match &e.kind {
            ExtentKind::Flat { file, at } => (
                Run::Stored {
                    file: *file,
                    at: at + rel,
                },
                left,
            ),
            ExtentKind::Zero => (Run::Zero, left),
            ExtentKind::Missing(why) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, why.clone()))
            }
            ExtentKind::Sparse { file, sp } => {
                if rel >= sp.size {
                    return Ok((Run::Parent, left));
                }
                let (p, n) = sp.piece_at(rel)?;
                let run = match p {
                    Piece::Parent => Run::Parent,
                    Piece::Zero => Run::Zero,
                    Piece::Stored(at) => Run::Stored { file: *file, at },
                    Piece::Coded { gte, skip } => Run::Coded {
                        unit: ((i as u64) << 32) | u64::from(gte),
                        skip,
                    },
                };
                (run, n.min(left))
            }
        })
    }

    fn decode(&self, unit: u64) -> io::Result<Vec<u8>> {
        let i = (unit >> 32) as usize;
        match self.extents.get(i).map(|e| &e.kind) {
            Some(ExtentKind::Sparse { sp, .. }) => sp.decode(unit as u32),
            _ => Err(io::Error::other(format!(
                "vmdk: unit {unit} names no sparse extent"
            ))),
        }
    }

    fn stored(&self) -> ExtentMap {
        self.stored.clone()
    }

    fn parent_ranges(&self) -> ExtentMap {
        self.parent.clone()
    }

    fn unit_size(&self) -> u64 {
        self.unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::driver::OpenOptions;
    use crate::io::MemSource;

    /// A monolithicSparse extent built by hand: 4 grains of 4 KiB in one table; grain 0
    /// stored, grain 1 unallocated, grain 2 a zero grain, grain 3 stored.
    fn tiny() -> Vec<u8> {
        let mut f = vec![0u8; 8 * 512];
        f[0..4].copy_from_slice(b"KDMV");
        f[4..8].copy_from_slice(&1u32.to_le_bytes());
        f[8..12].copy_from_slice(&(1u32 << 2).to_le_bytes());
        f[12..20].copy_from_slice(&32u64.to_le_bytes()); // capacity: 16 KiB
        f[20..28].copy_from_slice(&8u64.to_le_bytes()); // grain: 8 sectors
        f[44..48].copy_from_slice(&512u32.to_le_bytes());
        f[56..64].copy_from_slice(&1u64.to_le_bytes()); // GD at sector 1
        f[512..516].copy_from_slice(&2u32.to_le_bytes()); // GT at sector 2
        let gt = [8u32, 0, 1, 16];
        for (i, e) in gt.iter().enumerate() {
            f[1024 + i * 4..1028 + i * 4].copy_from_slice(&e.to_le_bytes());
        }
        f.resize(24 * 512, 0);
        f[8 * 512..16 * 512].fill(b'a');
        f[16 * 512..24 * 512].fill(b'd');
        f
    }

    fn open_mem(b: Vec<u8>) -> crate::Result<Step> {
        let opts = OpenOptions::default();
        let mut ctx = OpenCtx::new(&opts, std::path::Path::new("t.vmdk"), None);
        SparseDriver.open(Arc::new(MemSource(b)), &mut ctx)
    }

    #[test]
    fn reads_a_hand_made_sparse_extent() {
        let s = open_mem(tiny()).unwrap();
        let d = s.inner.unwrap();
        assert_eq!(d.size(), 16384);
        let all = d.read_vec(0, 16384).unwrap();
        assert!(all[..4096].iter().all(|&b| b == b'a'));
        assert!(all[4096..12288].iter().all(|&b| b == 0));
        assert!(all[12288..].iter().all(|&b| b == b'd'));
        assert_eq!(
            d.allocated_hint().unwrap(),
            ExtentMap::from_ranges([(0, 4096), (12288, 16384)])
        );
    }

    #[test]
    fn shared_grain_tables_are_refused() {
        let mut f = tiny();
        f[12..20].copy_from_slice(&(32u64 * 512 * 2).to_le_bytes()); // two tables' worth
        f[516..520].copy_from_slice(&2u32.to_le_bytes());
        let e = open_mem(f).err().unwrap().to_string();
        assert!(e.contains("both point at the grain table"), "{e}");
    }
}
