//! What an image really is: the wrapper chain, partition table, every partition's filesystem,
//! boot facts and the warnings a user needs. The `inspect` command renders this report; the
//! JSON form is specified in `spec/json-output.md`.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::format::cd::Track;
use crate::format::container::ContainerInfo;
use crate::format::{self, Format, Layer, OpenOptions};
use crate::fs::{self, BootEntry, FsInfo};
use crate::io::{ReadAt, Slice};
use crate::layout::{self, Layout, PartKind, TableKind};

/// Version of the JSON report layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// GPT type GUID of an EFI System Partition.
pub const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// The full inspection report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Layout version of this report (see [`SCHEMA_VERSION`]).
    pub schema_version: u32,
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
    /// False when the payload is a container or archive this version cannot decode (qcow2,
    /// dynamic VHD, VHDX, VMDK, VDI, DMG, 7z): then nothing below the chain was probed.
    pub contents_decoded: bool,
    /// Header facts of an undecoded container.
    pub container: Option<ContainerInfo>,
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
    pub usage: Option<crate::map::ImageMap>,
    /// Facts worth a line that are not problems (how a compressed input is read).
    pub notes: Vec<String>,
    /// Problems the user should know about, collected from every layer: damage, and every
    /// place where more is kept than the filesystems alone would keep.
    pub warnings: Vec<String>,
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
    /// Why probing failed, if it did (I/O error, corrupt superblock).
    pub probe_error: Option<String>,
    /// The filesystem's used bytes, read right after the probe while a streaming decoder is
    /// still near this partition (consumed by [`crate::map::image_map`]).
    #[serde(skip)]
    pub usage: Option<fs::Usage>,
}

/// Boot-related facts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootFacts {
    /// The MBR carries boot code.
    pub mbr_boot_code: bool,
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

/// Inspects the image at `path`.
pub fn inspect_path(path: &Path) -> crate::Result<Report> {
    open_and_inspect(path).map(|(_, r)| r)
}

/// Opens and inspects `path`, returning the opened source too (for commands that go on to
/// read the image: bmap, verify).
pub fn open_and_inspect(path: &Path) -> crate::Result<(format::Opened, Report)> {
    open_and_inspect_inner(path, false).map(|(o, r, _)| (o, r))
}

/// Like [`open_and_inspect`], and also returns the byte ranges of the image that inspecting it
/// read (partition tables, superblocks, allocation bitmaps): what any later inspect of a copy
/// will read again.
pub fn open_and_inspect_with_reads(
    path: &Path,
) -> crate::Result<(format::Opened, Report, crate::ExtentMap)> {
    open_and_inspect_inner(path, true)
}

fn open_and_inspect_inner(
    path: &Path,
    record: bool,
) -> crate::Result<(format::Opened, Report, crate::ExtentMap)> {
    let mut opened = format::open(path, &OpenOptions::default())?;
    let recorder = record.then(|| Arc::new(crate::io::Recording::new(opened.source.clone())));
    let stored = opened.chain.first().and_then(|l| l.size);
    let undecoded = opened.container.is_some() || opened.payload_format() == Format::SevenZip;
    let mut report = if undecoded {
        // Probing a container's own bytes as if they were a disk would only mislead.
        let virtual_size = opened.container.as_ref().and_then(|c| c.virtual_size);
        Report {
            schema_version: SCHEMA_VERSION,
            path: path.display().to_string(),
            chain: opened.chain.clone(),
            stored_size: None,
            image_size: virtual_size.unwrap_or(0),
            block_device: false,
            contents_decoded: false,
            container: None,
            cd_tracks: vec![],
            layout: Layout {
                sector_size: 512,
                table: TableKind::None,
                disk_id: None,
                partitions: vec![],
                mbr: None,
                gpt: None,
                warnings: vec![],
                unusable: None,
            },
            whole_disk: None,
            partitions: vec![],
            unpartitioned_tail: 0,
            boot: BootFacts::default(),
            usage: None,
            notes: vec![],
            warnings: vec![],
        }
    } else {
        let src: Arc<dyn ReadAt> = match &recorder {
            Some(r) => r.clone(),
            None => opened.source.clone(),
        };
        inspect_source(
            src,
            opened.device_sector_size,
            path.display().to_string(),
            opened.chain.clone(),
        )?
    };
    report.stored_size = stored;
    report.block_device = opened.is_block_device;
    report.container = opened.container.clone();
    report.cd_tracks = std::mem::take(&mut opened.cd_tracks);
    let mut w = opened.warnings.clone();
    w.append(&mut report.warnings);
    report.warnings = w;
    report.notes = opened.notes.clone();
    // Each thing is said once, however many layers noticed it.
    let mut seen = std::collections::HashSet::new();
    report.warnings.retain(|w| seen.insert(w.clone()));
    let reads = recorder.map(|r| r.reads()).unwrap_or_default();
    Ok((opened, report, reads))
}

/// Inspects an already-opened source (the decoded disk image).
pub fn inspect_source(
    src: Arc<dyn ReadAt>,
    sector_hint: Option<u32>,
    name: String,
    chain: Vec<Layer>,
) -> crate::Result<Report> {
    let image_size = src.size();
    let layout = layout::read_layout(&*src, sector_hint)?;
    let mut warnings = layout.warnings.clone();

    // With no table, an empty one or one that cannot be trusted, whatever filesystem spans
    // the image is the whole story (blkid reports both an MBR and an ext2 that starts at byte
    // 1024 behind it). Under a usable table: an ISO9660/UDF volume from byte 0 (isohybrid),
    // or a filesystem whose superblock lies clear of the table (ext, F2FS, btrfs).
    let whole_disk = if layout.table == TableKind::None
        || layout.data_partitions().next().is_none()
        || layout.unusable.is_some()
    {
        probe_logged(&*src, "whole image", &mut warnings)
    } else {
        hybrid_disc_fs(&*src, &mut warnings).or_else(|| beside_table_fs(&*src, &mut warnings))
    };

    // Probe in ascending offset order: streaming decompressors then decode in one pass.
    let mut order: Vec<usize> = (0..layout.partitions.len()).collect();
    order.sort_by_key(|&i| layout.partitions[i].start);
    let mut partitions: Vec<Option<PartitionReport>> = vec![None; layout.partitions.len()];
    for i in order {
        let p = &layout.partitions[i];
        let skip = match &p.kind {
            PartKind::Mbr {
                extended,
                type_code,
                ..
            } => *extended || *type_code == 0xee,
            PartKind::Gpt { .. } => false,
        };
        let (filesystem, probe_error, usage) = if skip || p.start >= image_size {
            (None, None, None)
        } else {
            let len = p.size.min(image_size - p.start);
            let part = Slice::new(src.clone(), p.start, len);
            match fs::probe_all(&part) {
                Ok(Some(f)) => {
                    let u = fs::usage(&part, &f);
                    (Some(f), None, Some(u))
                }
                Ok(None) => (None, None, None),
                Err(e) => (None, Some(e.to_string()), None),
            }
        };
        if let Some(e) = &probe_error {
            warnings.push(format!("partition {}: {e}", p.index));
        }
        if let Some(f) = &filesystem {
            for w in &f.warnings {
                warnings.push(format!("partition {} ({}): {w}", p.index, f.fs_type));
            }
        }
        partitions[i] = Some(PartitionReport {
            index: p.index,
            start: p.start,
            size: p.size,
            kind: p.kind.clone(),
            type_name: p.type_name.clone(),
            filesystem,
            probe_error,
            usage,
        });
    }
    let partitions: Vec<PartitionReport> = partitions.into_iter().flatten().collect();
    if let Some(f) = &whole_disk {
        for w in &f.warnings {
            warnings.push(format!("{}: {w}", f.fs_type));
        }
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
    // Nothing is unallocated when the table cannot be trusted or a filesystem spans it.
    let unpartitioned_tail =
        if layout.table == TableKind::None || layout.unusable.is_some() || whole_disk.is_some() {
            0
        } else {
            usable_end.saturating_sub(last_end)
        };

    let boot = boot_facts(&layout, &partitions, whole_disk.as_ref());
    for p in partitions.iter().filter(|p| boot.esp.contains(&p.index)) {
        // Firmware only reads FAT on an ESP; a damaged or reformatted one is a boot failure
        // waiting to happen, worth saying before the image is written anywhere.
        let found = match (&p.filesystem, &p.probe_error) {
            (Some(f), _) if f.fs_type == "vfat" => continue,
            (Some(f), _) => f.fs_type.to_string(),
            (None, Some(_)) => continue, // already reported as unreadable
            (None, None) => "no recognised filesystem".to_string(),
        };
        warnings.push(format!(
            "partition {} is typed EFI System Partition but holds {found}, not FAT: UEFI \
             firmware will not boot from it",
            p.index
        ));
    }
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        path: name,
        chain,
        stored_size: None,
        image_size,
        block_device: false,
        contents_decoded: true,
        container: None,
        cd_tracks: vec![],
        layout,
        whole_disk,
        partitions,
        unpartitioned_tail,
        boot,
        usage: None,
        notes: vec![],
        warnings,
    };
    let usage = crate::map::image_map(&src, &report);
    report.warnings.extend(usage.warnings.iter().cloned());
    report.usage = Some(usage);
    Ok(report)
}

fn probe_logged(src: &dyn ReadAt, what: &str, warnings: &mut Vec<String>) -> Option<FsInfo> {
    match fs::probe_all(src) {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!("{what}: {e}"));
            None
        }
    }
}

/// The ISO9660/UDF volume of an isohybrid image (one that starts at byte 0 under a partition
/// table). A read error is reported rather than taken for "no such volume"; a short read only
/// means the image is too small to hold one.
fn hybrid_disc_fs(src: &dyn ReadAt, warnings: &mut Vec<String>) -> Option<FsInfo> {
    type Probe = fn(&dyn ReadAt) -> crate::Result<Option<FsInfo>>;
    const PROBES: [(&str, Probe); 2] = [("UDF", fs::udf::probe), ("ISO9660", fs::iso9660::probe)];
    for (name, probe) in PROBES {
        match probe(src) {
            Ok(Some(f)) => return Some(f),
            Ok(None) => {}
            Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => warnings.push(format!(
                "whole image: could not check for an {name} volume (isohybrid image): {e}"
            )),
        }
    }
    None
}

/// A filesystem on the whole disk whose superblock does not collide with the partition table
/// in front of it: ext and F2FS at byte 1024, btrfs at 64 KiB. A disk formatted whole after
/// it was partitioned (or the reverse) carries both, and the filesystem's blocks past the last
/// partition are then not free.
fn beside_table_fs(src: &dyn ReadAt, warnings: &mut Vec<String>) -> Option<FsInfo> {
    type Probe = fn(&dyn ReadAt) -> crate::Result<Option<FsInfo>>;
    const PROBES: [Probe; 3] = [fs::ext::probe, fs::f2fs::probe, fs::btrfs::probe];
    for probe in PROBES {
        match probe(src) {
            Ok(Some(f)) => {
                warnings.push(format!(
                    "a whole-disk {} filesystem and a partition table are both present (blkid \
                     reports both); the filesystem's blocks are kept as well as the partitions'",
                    f.fs_type
                ));
                return Some(f);
            }
            Ok(None) => {}
            Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => warnings.push(format!("whole image: {e}")),
        }
    }
    None
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
        let is_esp = match &p.kind {
            PartKind::Gpt { type_guid, .. } => type_guid.eq_ignore_ascii_case(ESP_GUID),
            PartKind::Mbr { type_code, .. } => *type_code == 0xef,
        };
        if is_esp {
            b.esp.push(p.index);
        }
    }
    let iso = whole.filter(|f| f.fs_type == "iso9660" || f.fs_type == "udf");
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
            .filter(|p| p.filesystem.as_ref().is_some_and(|f| f.fs_type == "vfat"))
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
