//! The scan: what an opened image holds, read once.
//!
//! [`scan`] reads the partition table, probes every partition's filesystem and reads its
//! allocation map, and looks for a filesystem that owns bytes of the whole disk. Everything
//! after works from the [`Scan`] alone: `map` applies the skip rule to it, `report` presents
//! it, and no later step probes again. (Neither is imported here: the arrows point one way.)
//!
//! Partitions are probed in ascending offset order, each allocation map read right after its
//! probe: a streaming decoder (gzip, single-block xz) then goes forward in one pass instead of
//! restarting for every partition.

use std::path::Path;
use std::sync::Arc;

use crate::extent::ExtentMap;
use crate::format::{self, Format, OpenOptions, Opened};
use crate::fs::{self, FsInfo, FsType};
use crate::io::{ReadAt, Recording, SizeKnown, Slice};
use crate::layout::{self, Layout, TableKind};

/// Everything learned about the contents of an image.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Size of the decoded image in bytes; for an undecoded container, the virtual size its
    /// header declares (0 when unknown).
    pub(crate) image_size: u64,
    /// False when the payload is a container or archive this version cannot decode (a 7z
    /// archive): then nothing below the wrapper chain was read,
    /// the layout is empty and there are no volumes.
    pub decoded: bool,
    /// The partition table.
    pub layout: Layout,
    /// One volume per entry of `layout.partitions`, in the same (table) order.
    pub volumes: Vec<Volume>,
    /// A filesystem that owns bytes of the whole disk, besides or instead of the partitions.
    pub(crate) whole_disk: Option<WholeDisk>,
    /// Problems found while scanning: the table's own warnings, probe failures, the
    /// filesystems' warnings and boot partitions that cannot boot, in the order found.
    pub(crate) warnings: Vec<String>,
}

/// One partition and the filesystem in it.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Index of the partition in [`Scan::layout`]'s `partitions`.
    pub(crate) partition: usize,
    /// First byte in the image.
    #[cfg_attr(not(test), allow(dead_code))] // the scan's tests check where a volume lies
    pub(crate) start: u64,
    /// Length in bytes, clipped to the image (0 for a partition that starts past its end).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) len: u64,
    /// The filesystem found in it; `None` for containers (extended, protective), partitions
    /// past the end of the image, unrecognised contents and failed probes.
    pub fs: Option<FsInfo>,
    /// Why probing failed, if it did: a read that failed or a source that ended inside its
    /// size (naming the byte offset in the image), a corrupt superblock. A partition too
    /// small for any superblock is no filesystem, not an error.
    pub probe_error: Option<String>,
    /// The bytes the filesystem needs, relative to `start`: present exactly when `fs` is.
    pub(crate) usage: Option<fs::Usage>,
}

/// A filesystem on the whole disk.
#[derive(Clone, Debug)]
pub(crate) struct WholeDisk {
    /// The filesystem.
    pub(crate) fs: FsInfo,
    /// The bytes of the image it needs.
    pub(crate) usage: fs::Usage,
}

/// Opens `path` and scans it.
pub fn open_and_scan(path: &Path, opts: &OpenOptions) -> crate::Result<(Opened, Scan)> {
    let opened = format::open(path, opts)?;
    let scan = scan(&opened)?;
    Ok((opened, scan))
}

/// Like [`open_and_scan`], and also returns the byte ranges of the image that scanning read
/// (partition tables, superblocks, allocation bitmaps): what any later scan of a copy will
/// read again, so a backup keeps them quick to reach.
pub fn open_and_scan_with_reads(
    path: &Path,
    opts: &OpenOptions,
) -> crate::Result<(Opened, Scan, ExtentMap)> {
    let opened = format::open(path, opts)?;
    let (scan, reads) = scan_with_reads(&opened)?;
    Ok((opened, scan, reads))
}

/// Scans an opened image.
pub fn scan(opened: &Opened) -> crate::Result<Scan> {
    match undecoded(opened) {
        Some(s) => Ok(s),
        None => scan_source(opened.source.clone(), opened.device_sector_size),
    }
}

/// Like [`scan`], and also returns the byte ranges of the image that scanning read.
pub(crate) fn scan_with_reads(opened: &Opened) -> crate::Result<(Scan, ExtentMap)> {
    if let Some(s) = undecoded(opened) {
        return Ok((s, ExtentMap::new()));
    }
    let recorder = Arc::new(Recording::new(opened.source.clone()));
    let scan = scan_source(recorder.clone(), opened.device_sector_size)?;
    Ok((scan, recorder.reads()))
}

/// The scan of a payload this version does not decode, or `None` when it does: probing a
/// container's own bytes as if they were a disk would only mislead.
fn undecoded(opened: &Opened) -> Option<Scan> {
    if opened.container.is_none() && opened.payload_format() != Format::SevenZip {
        return None;
    }
    Some(Scan {
        image_size: opened
            .container
            .as_ref()
            .and_then(|c| c.virtual_size)
            .unwrap_or(0),
        decoded: false,
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
        volumes: vec![],
        whole_disk: None,
        warnings: vec![],
    })
}

/// Scans a decoded disk image. `sector_hint` is the device's logical sector size when known.
///
/// An image whose size is only a hint (a stream opened to be read in one pass) is told what
/// the table and a whole-disk filesystem say it holds ([`ReadAt::refine_size_hint`]), so the
/// scan works with the best size known before the pass; the pass checks it.
pub fn scan_source(src: Arc<dyn ReadAt>, sector_hint: Option<u32>) -> crate::Result<Scan> {
    let mut s = scan_once(src.clone(), sector_hint)?;
    // Reads past a hinted size raise it: scan again with what they found (the pass checks
    // whatever is left).
    for _ in 0..2 {
        if s.image_size == src.size() {
            break;
        }
        s = scan_once(src.clone(), sector_hint)?;
    }
    Ok(s)
}

impl Scan {
    /// Fails with [`crate::Error::Replan`] unless `src`, the source this scan was made of, is
    /// still the size the scan planned with: a stream of hinted size that reads went past
    /// has grown, and a plan made for the old size would leave its new bytes out.
    pub fn still_fits(&self, src: &dyn ReadAt) -> crate::Result<()> {
        if !self.decoded || src.size() == self.image_size {
            return Ok(());
        }
        Err(crate::Error::Replan {
            size: None,
            reason: format!(
                "the decoded image is at least {} bytes, not the {} planned from its headers",
                src.size(),
                self.image_size
            ),
        })
    }
}

/// What a scan reads first, from the image's head: the partition table and a whole-disk
/// filesystem, and the image's size as they tell it to a source whose size is a hint.
struct Head {
    image_size: u64,
    layout: Layout,
    whole: Option<FsInfo>,
    warnings: Vec<String>,
}

fn read_head(src: &dyn ReadAt, sector_hint: Option<u32>) -> crate::Result<Head> {
    let hinted = src.caps().size == SizeKnown::Hint;
    let mut image_size = src.size();
    let mut layout = layout::read_layout(src, sector_hint)?;
    if hinted && layout.extent() > image_size {
        src.refine_size_hint(layout.extent());
        if src.size() != image_size {
            image_size = src.size();
            layout = layout::read_layout(src, sector_hint)?;
        }
    }
    let mut warnings = layout.warnings.clone();

    let whole = whole_disk_fs(src, &layout, &mut warnings);
    if let Some(fs_end) = whole.as_ref().and_then(|f| f.size).filter(|_| hinted) {
        src.refine_size_hint(fs_end);
        image_size = image_size.max(src.size());
    }
    Ok(Head {
        image_size,
        layout,
        whole,
        warnings,
    })
}

/// For a stream whose size is only a hint (gzip's size field holds it modulo 4 GiB): tells
/// it what its partition table and a whole-disk filesystem say it holds, reading only its
/// head, as a scan does first. A pass planned with the size it then reports (a flash that
/// maps the stream beside it) is not read again for a hint that was merely low. Sources of
/// exact size are left alone.
pub fn size_from_head(src: &dyn ReadAt, sector_hint: Option<u32>) -> crate::Result<()> {
    if src.caps().size == SizeKnown::Hint {
        read_head(src, sector_hint)?;
    }
    Ok(())
}

fn scan_once(src: Arc<dyn ReadAt>, sector_hint: Option<u32>) -> crate::Result<Scan> {
    let Head {
        image_size,
        layout,
        whole,
        mut warnings,
    } = read_head(&*src, sector_hint)?;

    let mut order: Vec<usize> = (0..layout.partitions.len()).collect();
    order.sort_by_key(|&i| layout.partitions[i].start);
    let mut volumes: Vec<Option<Volume>> = vec![None; layout.partitions.len()];
    for i in order {
        let v = read_volume(&*src, &layout, i, image_size);
        let index = layout.partitions[i].index;
        if let Some(e) = &v.probe_error {
            warnings.push(format!("partition {index}: {e}"));
        }
        if let Some(f) = &v.fs {
            for w in &f.warnings {
                warnings.push(format!("partition {index} ({}): {w}", f.fs_type));
            }
        }
        volumes[i] = Some(v);
    }
    let volumes: Vec<Volume> = volumes.into_iter().flatten().collect();
    if let Some(f) = &whole {
        for w in &f.warnings {
            warnings.push(format!("{}: {w}", f.fs_type));
        }
    }
    esp_warnings(&layout, &volumes, &mut warnings);

    // Read last: the whole-disk map spans the image, so a streaming decoder that has just
    // walked the partitions forward only restarts once for it.
    let whole_disk = whole.map(|fs| WholeDisk {
        usage: fs::usage(&*src, &fs),
        fs,
    });
    Ok(Scan {
        image_size,
        decoded: true,
        layout,
        volumes,
        whole_disk,
        warnings,
    })
}

/// The volume of partition `i` of `layout` in `src`, an image of `image_size` bytes: its
/// filesystem probed and, when one is found, its allocation map read, both through a window
/// on the partition. Containers and partitions that start past the end get an empty volume.
///
/// Apart from [`scan_source`] so that a flash of a stream can run exactly the same reads over
/// the bytes that have gone by (`flash::stream_skip`), partition by partition.
pub(crate) fn read_volume(src: &dyn ReadAt, layout: &Layout, i: usize, image_size: u64) -> Volume {
    let p = &layout.partitions[i];
    let start = p.start;
    let len = p.size.min(image_size.saturating_sub(start));
    let (fs, probe_error, usage) = if p.is_container() || start >= image_size {
        (None, None, None)
    } else {
        let part = Slice::new(src, start, len);
        match fs::probe_all(&part) {
            Ok(Some(f)) => {
                let u = fs::usage(&part, &f);
                (Some(f), None, Some(u))
            }
            Ok(None) => (None, None, None),
            // Offsets named in the image's terms, as the decoders' own messages are.
            Err(e) => (None, Some(e.shifted(start).chain()), None),
        }
    };
    Volume {
        partition: i,
        start,
        len,
        fs,
        probe_error,
        usage,
    }
}

/// The filesystem that owns bytes of the whole disk, with `layout` read from the same `src`.
///
/// With no table, an empty one or one that cannot be trusted, whatever filesystem spans the
/// image is the whole story (blkid reports both an MBR and an ext2 that starts at byte 1024
/// behind it). Under a usable table: an ISO9660/UDF volume from byte 0 (isohybrid), or a
/// filesystem whose superblock lies clear of the table (ext, F2FS, btrfs). Problems found on
/// the way are added to `warnings`. Apart from [`scan_source`] for the same reason as
/// [`read_volume`].
pub(crate) fn whole_disk_fs(
    src: &dyn ReadAt,
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> Option<FsInfo> {
    if layout.table == TableKind::None
        || layout.data_partitions().next().is_none()
        || layout.unusable.is_some()
    {
        probe_logged(src, "whole image", warnings)
    } else {
        hybrid_disc_fs(src, warnings).or_else(|| beside_table_fs(src, warnings))
    }
}

/// Firmware only reads FAT on an EFI System Partition; a damaged or reformatted one is a boot
/// failure waiting to happen, worth saying before the image is written anywhere.
fn esp_warnings(layout: &Layout, volumes: &[Volume], warnings: &mut Vec<String>) {
    for v in volumes {
        let p = &layout.partitions[v.partition];
        if !p.kind.is_esp() {
            continue;
        }
        let found = match (&v.fs, &v.probe_error) {
            (Some(f), _) if f.fs_type == FsType::Vfat => continue,
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
}

fn probe_logged(src: &dyn ReadAt, what: &str, warnings: &mut Vec<String>) -> Option<FsInfo> {
    match fs::probe_all(src) {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!("{what}: {}", e.chain()));
            None
        }
    }
}

/// The ISO9660/UDF volume of an isohybrid image (one that starts at byte 0 under a partition
/// table). A read error is reported rather than taken for "no such volume"; a volume that
/// ends before the descriptors only means the image is too small to hold one.
fn hybrid_disc_fs(src: &dyn ReadAt, warnings: &mut Vec<String>) -> Option<FsInfo> {
    type Probe = fn(&dyn ReadAt) -> crate::Result<Option<FsInfo>>;
    const PROBES: [(&str, Probe); 2] = [("UDF", fs::udf::probe), ("ISO9660", fs::iso9660::probe)];
    for (name, probe) in PROBES {
        match probe(src) {
            Ok(Some(f)) => return Some(f),
            Ok(None) => {}
            Err(crate::Error::TooSmall { .. }) => {}
            Err(e) => warnings.push(format!(
                "whole image: could not check for an {name} volume (isohybrid image): {}",
                e.chain()
            )),
        }
    }
    None
}

/// A filesystem on the whole disk whose superblock does not collide with the partition table
/// in front of it (ext and F2FS at byte 1024, btrfs at 64 KiB): a disk formatted whole after it
/// was partitioned, or the reverse, carries both, and the filesystem's blocks past the last
/// partition are not free.
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
            Err(crate::Error::TooSmall { .. }) => {}
            Err(e) => warnings.push(format!("whole image: {}", e.chain())),
        }
    }
    None
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::io::{LoggedReads, MemSource};

    /// An MBR image of `mib` MiB with the given (start, length) partitions in sectors.
    fn mbr_image(mib: usize, parts: &[(u32, u32)]) -> Vec<u8> {
        let mut img = vec![0u8; mib << 20];
        img[510] = 0x55;
        img[511] = 0xaa;
        for (i, &(start, len)) in parts.iter().enumerate() {
            let e = 446 + 16 * i;
            img[e + 4] = 0x83;
            img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            img[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        }
        img
    }

    #[test]
    fn volumes_keep_table_order_while_probing_goes_forward() {
        // Slot 1 lies behind slot 2 on the disk.
        let img = mbr_image(8, &[(8192, 2048), (2048, 2048)]);
        let src = Arc::new(LoggedReads::new(img));
        let scan = scan_source(src.clone(), None).unwrap();
        let starts: Vec<u64> = scan.volumes.iter().map(|v| v.start).collect();
        assert_eq!(starts, [8192 * 512, 2048 * 512]);
        assert!(scan
            .volumes
            .iter()
            .enumerate()
            .all(|(i, v)| v.partition == i));
        let offsets = src.offsets.lock().unwrap();
        let first_in = |lo: u64, hi: u64| offsets.iter().position(|&o| (lo..hi).contains(&o));
        let last_in = |lo: u64, hi: u64| offsets.iter().rposition(|&o| (lo..hi).contains(&o));
        let low = (1 << 20, 2 << 20);
        let high = (4 << 20, 5 << 20);
        assert!(
            last_in(low.0, low.1).unwrap() < first_in(high.0, high.1).unwrap(),
            "the lower partition is probed first: {offsets:?}"
        );
    }

    #[test]
    fn unknown_partitions_have_no_filesystem_and_no_usage() {
        let img = mbr_image(4, &[(2048, 2048)]);
        let scan = scan_source(Arc::new(MemSource(img)), None).unwrap();
        assert!(scan.decoded);
        assert_eq!(scan.volumes.len(), 1);
        let v = &scan.volumes[0];
        assert!(v.fs.is_none() && v.usage.is_none() && v.probe_error.is_none());
        assert_eq!((v.start, v.len), (1 << 20, 1 << 20));
        assert!(scan.whole_disk.is_none());
    }

    #[test]
    fn a_partition_past_the_end_gets_an_empty_volume() {
        let img = mbr_image(2, &[(2048, 2048), (8192, 2048)]);
        let scan = scan_source(Arc::new(MemSource(img)), None).unwrap();
        assert_eq!(scan.volumes[1].len, 0);
        assert!(scan.volumes[1].fs.is_none());
        assert!(scan.layout.unusable.is_some());
    }

    #[test]
    fn recorded_reads_include_the_partition_table() {
        let img = mbr_image(4, &[(2048, 2048)]);
        let opened =
            format::open_source(Arc::new(MemSource(img)), "t.img", &OpenOptions::default())
                .unwrap();
        let (scan, reads) = scan_with_reads(&opened).unwrap();
        assert!(scan.decoded);
        assert_eq!(reads.covered(0, 512), 512, "{reads:?}");
    }
}
