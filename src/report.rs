//! What an image really is, as `inspect` shows it: the wrapper chain, partition table, every
//! partition's filesystem, boot facts and the warnings a user needs. The JSON form is
//! specified in `spec/json-output.md`.
//!
//! Presentation only: a [`Report`] is built from what opening ([`Opened`]), scanning
//! ([`Scan`]) and mapping ([`ImageMap`]) found, and reads nothing itself.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::format::cd::Track;
use crate::format::container::ContainerInfo;
use crate::format::{Layer, OpenOptions, Opened};
use crate::fs::{BootEntry, FsInfo, FsType};
use crate::io::ReadAt;
use crate::layout::{Layout, PartKind, TableKind};
use crate::map::{image_map, image_map_with, ImageMap, MapRules};
use crate::scan::{self, Scan};

/// Version of the JSON report layout; bumped on incompatible changes.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The full inspection report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Layout version of this report (see [`SCHEMA_VERSION`]).
    pub(crate) schema_version: u32,
    /// The path inspected.
    pub path: String,
    /// Layers from the stored bytes down to the disk image, outermost first.
    pub chain: Vec<Layer>,
    /// Size of the file (or device) as stored.
    pub stored_size: Option<u64>,
    /// Size of the decoded disk image in bytes.
    pub image_size: u64,
    /// True if the path is a block device.
    pub block_device: bool,
    /// False when the payload is a container or archive this version cannot decode (a 7z
    /// archive): then nothing below the chain was probed.
    pub contents_decoded: bool,
    /// Header facts of an undecoded container.
    pub(crate) container: Option<ContainerInfo>,
    /// Tracks of a CD image (from its CUE sheet, or guessed for a lone BIN).
    pub cd_tracks: Vec<Track>,
    /// The partition table.
    pub layout: Layout,
    /// A filesystem spanning the whole image (no table, or an ISO9660/UDF under an isohybrid
    /// table).
    pub whole_disk: Option<FsInfo>,
    /// One entry per partition, in table order.
    pub partitions: Vec<PartitionReport>,
    /// Bytes after the end of the last partition that no structure uses (0 without a table):
    /// for GPT, up to the last usable LBA, since the backup GPT follows it.
    pub unpartitioned_tail: u64,
    /// Facts about how this image boots.
    pub boot: BootFacts,
    /// Which bytes matter: per-partition used bytes from the filesystems' allocation maps and
    /// the mapped total (null for undecoded containers).
    pub usage: Option<ImageMap>,
    /// Facts worth a line that are not problems (how a compressed input is read).
    pub notes: Vec<String>,
    /// Problems the user should know about, collected from every layer: damage, and every
    /// place where more is kept than the filesystems alone would keep.
    pub warnings: Vec<String>,
    /// For an image read from a web server or a bucket: what it took to inspect it.
    pub remote: Option<RemoteReport>,
}

/// What was fetched of a remote image (by the time the report was made).
#[derive(Clone, Debug, Serialize)]
pub struct RemoteReport {
    /// The image's address, query string redacted.
    pub url: String,
    /// Size of the object as stored.
    pub object_size: u64,
    /// Body bytes downloaded.
    pub downloaded_bytes: u64,
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Whether the server took range requests (false: the object was read as one stream).
    pub ranges: bool,
}

impl RemoteReport {
    /// The figures of `info` now.
    pub fn of(info: &crate::format::RemoteInfo) -> RemoteReport {
        RemoteReport {
            url: info.shown.clone(),
            object_size: info.object_size,
            downloaded_bytes: info.stats.downloaded(),
            requests: info.stats.requests(),
            ranges: info.ranges,
        }
    }
}

/// One partition and what lives in it.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// Linux-style partition number.
    pub index: u32,
    /// First byte in the image.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Table-specific type facts.
    pub kind: PartKind,
    /// Human name of the partition type.
    pub type_name: String,
    /// The filesystem found in it, if any.
    pub filesystem: Option<FsInfo>,
    /// Why probing failed, if it did: a read that failed or a source that ended inside its
    /// size (naming the byte offset in the image), a corrupt superblock. A partition too
    /// small for any superblock is no filesystem, not an error.
    pub probe_error: Option<String>,
}

/// Boot-related facts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootFacts {
    /// The MBR carries boot code.
    pub(crate) mbr_boot_code: bool,
    /// The MBR partition marked active.
    pub active_partition: Option<u32>,
    /// Partitions that are EFI System Partitions.
    pub esp: Vec<u32>,
    /// El Torito boot catalog entries of an ISO9660 image.
    pub el_torito: Vec<BootEntry>,
    /// An ISO9660 image that also carries an MBR or GPT: it can be written raw to a USB stick.
    pub isohybrid: bool,
    /// Plain-language conclusions ("isohybrid: can be written raw to USB").
    pub notes: Vec<String>,
}

/// Inspects the image at `path`: opens it, scans it once, maps it and builds the report.
pub fn inspect_path(path: &Path) -> crate::Result<Report> {
    inspect_path_with(path, MapRules::default())
}

/// [`inspect_path`], mapping with the user's choices about the skip rule.
pub fn inspect_path_with(path: &Path, rules: MapRules) -> crate::Result<Report> {
    inspect_path_opts(path, rules, &OpenOptions::default())
}

/// [`inspect_path_with`], opening the image with `opts` (how URLs are read).
pub fn inspect_path_opts(
    path: &Path,
    rules: MapRules,
    opts: &OpenOptions,
) -> crate::Result<Report> {
    let (opened, scan) = scan::open_and_scan(path, opts)?;
    let map = image_map_with(&scan, rules);
    Ok(Report::new(&opened, &scan, map.as_ref()))
}

/// Inspects a bare decoded disk image (an in-memory image, a test fixture): there is no file
/// or wrapper chain behind it, so the report names it `name` and lists no chain.
pub fn inspect_source(
    src: Arc<dyn ReadAt>,
    sector_hint: Option<u32>,
    name: &str,
) -> crate::Result<Report> {
    let scan = scan::scan_source(src, sector_hint)?;
    let map = image_map(&scan);
    Ok(Report::for_source(name, &scan, map.as_ref()))
}

/// Every warning a user should see about an image, each once: the opening layers' first,
/// then the scan's, then why the map keeps more than the filesystems alone would.
pub fn warnings(opened: &Opened, scan: &Scan, map: Option<&ImageMap>) -> Vec<String> {
    collect_warnings(&opened.warnings, scan, map)
}

fn collect_warnings(opening: &[String], scan: &Scan, map: Option<&ImageMap>) -> Vec<String> {
    let mut seen = HashSet::new();
    opening
        .iter()
        .chain(&scan.warnings)
        .chain(map.into_iter().flat_map(|m| &m.warnings))
        .filter(|w| seen.insert(*w))
        .cloned()
        .collect()
}

impl Report {
    /// The report of an opened image, from its scan and the map of that scan.
    pub(crate) fn new(opened: &Opened, scan: &Scan, map: Option<&ImageMap>) -> Report {
        let mut r = Report::build(opened.shown_path(), scan, map, &opened.warnings);
        r.chain = opened.chain.clone();
        r.stored_size = opened.chain.first().and_then(|l| l.size);
        r.block_device = opened.is_block_device;
        r.container = opened.container.clone();
        r.cd_tracks = opened.cd_tracks.clone();
        r.notes = opened.notes.clone();
        r.remote = opened.remote.as_ref().map(RemoteReport::of);
        r
    }

    /// The report of a bare decoded disk image named `name` (see [`inspect_source`]).
    pub(crate) fn for_source(name: &str, scan: &Scan, map: Option<&ImageMap>) -> Report {
        Report::build(name.to_string(), scan, map, &[])
    }

    fn build(name: String, scan: &Scan, map: Option<&ImageMap>, opening: &[String]) -> Report {
        let layout = &scan.layout;
        let whole_disk = scan.whole_disk.as_ref().map(|w| w.fs.clone());
        let partitions: Vec<PartitionReport> = scan
            .volumes
            .iter()
            .map(|v| {
                let p = &layout.partitions[v.partition];
                PartitionReport {
                    index: p.index,
                    start: p.start,
                    size: p.size,
                    kind: p.kind.clone(),
                    type_name: p.type_name.clone(),
                    filesystem: v.fs.clone(),
                    probe_error: v.probe_error.clone(),
                }
            })
            .collect();
        let boot = boot_facts(layout, &partitions, whole_disk.as_ref());
        Report {
            schema_version: SCHEMA_VERSION,
            path: name,
            chain: vec![],
            stored_size: None,
            image_size: scan.image_size,
            block_device: false,
            contents_decoded: scan.decoded,
            container: None,
            cd_tracks: vec![],
            layout: layout.clone(),
            unpartitioned_tail: unpartitioned_tail(scan),
            whole_disk,
            partitions,
            boot,
            usage: map.cloned(),
            notes: vec![],
            warnings: collect_warnings(opening, scan, map),
            remote: None,
        }
    }
}

/// Bytes after the end of the last partition that no structure uses.
fn unpartitioned_tail(scan: &Scan) -> u64 {
    let layout = &scan.layout;
    let image_size = scan.image_size;
    // Nothing is unallocated when the table cannot be trusted or a filesystem spans it.
    if layout.table == TableKind::None || layout.unusable.is_some() || scan.whole_disk.is_some() {
        return 0;
    }
    let last_end = layout
        .partitions
        .iter()
        .map(|p| p.start.saturating_add(p.size))
        .max()
        .unwrap_or(0);
    // The GPT backup (entry array and header, after the last usable LBA) is not free space,
    // so the tail ends where it starts.
    let usable_end = match (&layout.gpt, layout.table) {
        (Some(g), TableKind::Gpt) => g
            .last_usable_lba
            .checked_add(1)
            .and_then(|n| n.checked_mul(u64::from(layout.sector_size)))
            .map_or(image_size, |e| e.min(image_size)),
        _ => image_size,
    };
    usable_end.saturating_sub(last_end)
}

fn boot_facts(layout: &Layout, parts: &[PartitionReport], whole: Option<&FsInfo>) -> BootFacts {
    let mut b = BootFacts::default();
    if let Some(m) = &layout.mbr {
        b.mbr_boot_code = m.boot_code;
        if !m.protective {
            b.active_partition = m.active;
        }
    }
    for p in parts {
        if p.kind.is_esp() {
            b.esp.push(p.index);
        }
    }
    let iso = whole.filter(|f| matches!(f.fs_type, FsType::Iso9660 | FsType::Udf));
    if let Some(iso) = iso {
        b.el_torito = iso.boot_entries.clone();
        let has_table = layout.table != TableKind::None;
        b.isohybrid = has_table;
        if has_table {
            b.notes.push(
                "isohybrid: can be written raw to a USB stick or SD card (dd, flash) and boots"
                    .into(),
            );
        } else if !b.el_torito.is_empty() {
            b.notes.push(
                "optical-disc image only: El Torito boot entries but no MBR/GPT, so written raw \
                 to USB it will not boot; burn it to a disc or use a tool that makes it bootable"
                    .into(),
            );
        }
        let bios = b.el_torito.iter().any(|e| e.platform == "BIOS");
        let uefi = b.el_torito.iter().any(|e| e.platform == "UEFI");
        match (bios, uefi) {
            (true, true) => b.notes.push("El Torito: boots on BIOS and UEFI".into()),
            (true, false) => b.notes.push("El Torito: boots on BIOS only".into()),
            (false, true) => b.notes.push("El Torito: boots on UEFI only".into()),
            _ => {}
        }
    }
    if layout.table != TableKind::None {
        if let Some(a) = b.active_partition {
            // In a hybrid MBR the slot number need not match the GPT partition number.
            b.notes.push(if layout.table == TableKind::Gpt {
                format!("hybrid MBR: slot {a} is marked active")
            } else {
                format!("MBR: partition {a} is marked active")
            });
        }
        if b.mbr_boot_code {
            b.notes
                .push("MBR boot code present (BIOS can boot this disk)".into());
        }
        let fat_esp: Vec<u32> = parts
            .iter()
            .filter(|p| b.esp.contains(&p.index))
            .filter(|p| {
                p.filesystem
                    .as_ref()
                    .is_some_and(|f| f.fs_type == FsType::Vfat)
            })
            .map(|p| p.index)
            .collect();
        if !fat_esp.is_empty() {
            let list: Vec<String> = fat_esp.iter().map(u32::to_string).collect();
            b.notes.push(format!(
                "EFI System Partition: {} (UEFI can boot this disk)",
                list.join(", ")
            ));
        }
    }
    b
}
