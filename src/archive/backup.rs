//! `backup`: a compact archive of the blocks that matter and the bmap beside it, as one use of
//! the crate's pipeline.
//!
//! [`Backup::prepare`] takes an opened image and the map of what matters in it: it refuses a
//! device mounted read-write, and reopens a whole device with `O_DIRECT` so a long read neither
//! floods the page cache nor trusts it. [`Backup::truncate`] ends the image at its last
//! partition (a view with the rewritten GPT laid over it; the source is never written).
//! [`Backup::run`] cuts the image into segments, reads the data segments as the source prefers,
//! compresses them on every core, and hands them in order to two sinks: the format's
//! `ArchiveWriter` (through [`WriteAt`]) and the hasher of the bmap ranges. Where the archive
//! goes (an atomic temporary file, normally) is the caller's choice.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::codec::{ArchiveWriter, CodecOptions, ContainerOptions, Encoded, Encoder};
use super::formats::ArchiveFormat;
use super::plan::{DataSegment, Segment};
use crate::bmap::{self, write::block_ranges, ChecksumType, RangeHasher};
use crate::drives::{Host, SysRoot};
use crate::extent::ExtentMap;
use crate::format::Opened;
use crate::io::{DirectBlockDevice, Overlay, ReadAt, WriteAt};
use crate::pipeline::{Buf, Job, Pipeline, Sink};
use crate::Error;

/// Hot ranges are widened to this before cutting: a frame holding a 512-byte boot sector
/// alone would cost more in frame overhead than it saves.
const HOT_ALIGN: u64 = 64 << 10;

/// Writeback of the archive is started every this many mapped bytes, so the final fsync
/// finds little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// What to make of a backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Output format.
    pub format: ArchiveFormat,
    /// Compression level; `None` for the format's default.
    pub level: Option<i32>,
    /// Decoder and encoder threads (at least 1).
    pub threads: usize,
    /// Back up a device even though a partition of it is mounted read-write.
    pub allow_mounted: bool,
    /// Block size of the bmap written beside the archive; the archive holds whole blocks.
    pub bmap_block_size: u64,
    /// Compute SHA-256 of every bmap range.
    pub checksums: bool,
    /// Byte ranges that readers of the archive will want on their own (the metadata inspect
    /// reads): segments are cut at their edges.
    pub hot: ExtentMap,
    /// Layout of the virtual-disk containers (qcow2 cluster size and compression).
    pub container: ContainerOptions,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            format: ArchiveFormat::Zstd,
            level: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            allow_mounted: false,
            bmap_block_size: 4096,
            checksums: true,
            hot: ExtentMap::new(),
            container: ContainerOptions::default(),
        }
    }
}

/// Where a running backup is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Mapped bytes read and written so far.
    pub mapped_done: u64,
}

/// What a finished backup did.
#[derive(Clone, Debug, Default)]
pub struct BackupStats {
    /// Size of the image the archive restores to.
    pub image_size: u64,
    /// The mapped bytes stored (the map aligned to the bmap block size).
    pub map: ExtentMap,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Inclusive block ranges of the bmap, and their SHA-256 (hex) when asked for.
    pub bmap_ranges: Vec<(u64, u64)>,
    /// One hex SHA-256 per entry of `bmap_ranges`, or empty without checksums.
    pub(crate) checksums: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Block size of the bmap ranges.
    pub(crate) bmap_block_size: u64,
}

impl BackupStats {
    /// The bmap file for this archive (bmaptool format 2.0).
    pub fn bmap(&self) -> Vec<u8> {
        let ck = (!self.checksums.is_empty()).then_some(&self.checksums[..]);
        crate::bmap::write::render(
            self.image_size,
            &self.map,
            ck,
            &crate::bmap::BmapWriteOptions {
                block_size: self.bmap_block_size,
            },
        )
    }
}

/// A backup ready to run: the source to read, the image it restores to, and what preparing
/// it noticed.
pub struct Backup {
    src: Arc<dyn ReadAt>,
    opts: BackupOptions,
    level: i32,
    sector_hint: Option<u32>,
    size: u64,
    original_size: u64,
    map: ExtentMap,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Backup {
    /// Prepares a backup of `opened`, of which `map` matters. A block device must not be
    /// mounted read-write (unless `opts.allow_mounted`: [`Error::Refused`]); a whole device is
    /// read with `O_DIRECT` where the device allows it (a warning says when it does not).
    pub fn prepare(opened: &Opened, map: &ExtentMap, opts: BackupOptions) -> crate::Result<Self> {
        if opened.is_block_device {
            check_not_mounted(&opened.path, opts.allow_mounted)?;
        }
        let mut warnings = Vec::new();
        let mut src = opened.source.clone();
        // Long sequential reads of a device bypass the page cache; a device inside a wrapper
        // is read through the wrapper.
        if opened.is_block_device && opened.chain.len() == 1 {
            match DirectBlockDevice::open(&opened.path) {
                Ok(d) => src = Arc::new(d),
                Err(e) => warnings.push(format!(
                    "O_DIRECT not available ({e}); reading through the page cache"
                )),
            }
        }
        let mut b = Backup::from_source(src, map, opts)?;
        b.sector_hint = opened.device_sector_size;
        b.warnings = warnings;
        Ok(b)
    }

    /// Prepares a backup of any source, read as it is (no device checks).
    pub fn from_source(
        src: Arc<dyn ReadAt>,
        map: &ExtentMap,
        opts: BackupOptions,
    ) -> crate::Result<Self> {
        let size = src.size();
        let b = Backup {
            src,
            level: opts
                .level
                .unwrap_or_else(|| opts.format.default_level_with(&opts.container)),
            opts,
            sector_hint: None,
            size,
            original_size: size,
            map: map.clone(),
            warnings: Vec::new(),
            notes: Vec::new(),
        };
        // The level and the image size are checked now, before anything is written.
        b.codec()?;
        Ok(b)
    }

    /// Ends the image at its last partition: the source is read through a view of the new
    /// size with the partition table rewritten for it. Refused (nothing cut) when the map
    /// keeps bytes past that end or the table cannot be trusted.
    pub fn truncate(&mut self) -> crate::Result<()> {
        let layout = crate::layout::read_layout(&*self.src, self.sector_hint)?;
        let t = super::truncate::plan_truncation(&*self.src, &layout)?;
        t.check_against_map(&layout, &self.map, self.size)?;
        let patched = ExtentMap::from_ranges(
            t.patches
                .iter()
                .map(|(off, b)| (*off, off + b.len() as u64)),
        );
        let view = Overlay::new(self.src.clone(), t.new_size, t.patches).map_err(|e| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("building the truncated view: {e}"),
            ))
        })?;
        self.map = self.map.clip(t.new_size).union(&patched);
        self.size = t.new_size;
        self.src = Arc::new(view);
        self.notes.extend(t.notes);
        self.codec()?;
        Ok(())
    }

    /// Size of the image the archive restores to.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of the source before any truncation.
    pub fn original_size(&self) -> u64 {
        self.original_size
    }

    /// The bytes that matter, in the image the archive restores to.
    pub fn map(&self) -> &ExtentMap {
        &self.map
    }

    /// Compression level used.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Things the user should know (reading through the page cache).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What truncation changed.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    fn codec(&self) -> crate::Result<(Arc<dyn Encoder>, Box<dyn ArchiveWriter>)> {
        super::formats::make(
            self.opts.format,
            &CodecOptions {
                level: self.level,
                image_size: self.size,
                container: self.opts.container,
            },
        )
    }

    /// Writes the archive to `out` (from offset 0) and returns what the bmap needs.
    ///
    /// Every mapped byte is read once. `progress` is called on this thread after each
    /// segment; `cancel` is polled throughout (set it from a signal handler:
    /// [`Error::Interrupted`]). On error `out` holds an incomplete archive and must be
    /// discarded (write to a temporary file).
    pub fn run(
        &self,
        out: &mut dyn WriteAt,
        progress: &mut dyn FnMut(&Progress),
        cancel: &AtomicBool,
    ) -> crate::Result<BackupStats> {
        let t0 = Instant::now();
        let size = self.size;
        let bs = self.opts.bmap_block_size.max(1);
        // Store whole bmap blocks, so flashing the archive with its bmap writes exactly what
        // the bmap lists.
        let map = self.map.clip(size).align_out(bs).clip(size);
        let cuts: Vec<u64> = self
            .opts
            .hot
            .clip(size)
            .align_out(HOT_ALIGN)
            .iter()
            .flat_map(|e| [e.start, e.end])
            .collect();
        let plan_opts = self.opts.format.plan_options(&self.opts.container);
        let jobs: Vec<Job<Segment>> = super::plan::plan_with_cuts(size, &map, &cuts, &plan_opts)
            .into_iter()
            .map(|seg| Job {
                read: match &seg {
                    Segment::Data(d) => Some(d.offset..d.end()),
                    Segment::Zero { .. } => None,
                },
                meta: seg,
                to: None,
            })
            .collect();
        let ranges = block_ranges(size, &map, bs);
        let byte_ranges: Vec<(u64, u64)> = ranges
            .iter()
            .map(|&(f, l)| bmap::range_bytes(f, l, bs, size))
            .collect();
        let (encoder, writer) = self.codec()?;
        let transform = |job: &Job<Segment>, data: Option<Buf>| encode(&*encoder, job, data);
        let mut archive = ArchiveSink {
            writer,
            out,
            size,
            mapped: 0,
            flushed: 0,
        };
        let mut hasher = HashSink(RangeHasher::new(&byte_ranges, ChecksumType::Sha256));
        let mut p = Progress { mapped_done: 0 };
        let stats = {
            let mut sinks: Vec<&mut dyn Sink<Segment, Chunk>> = vec![&mut archive];
            if self.opts.checksums {
                sinks.push(&mut hasher);
            }
            Pipeline::new(&*self.src)
                .threads(self.opts.threads)
                .cancel(cancel)
                .to_end(size)
                .run(&jobs, &transform, &mut sinks, &mut |job| {
                    if let Segment::Data(d) = &job.meta {
                        p.mapped_done += mapped_len(d);
                    }
                    progress(&p);
                })?
        };
        let checksums = if self.opts.checksums {
            hasher.0.finish()?.iter().map(|d| bmap::hex(d)).collect()
        } else {
            Vec::new()
        };
        Ok(BackupStats {
            image_size: size,
            map,
            bytes_read: stats.bytes_read,
            bmap_ranges: ranges,
            checksums,
            seconds: t0.elapsed().as_secs_f64(),
            bmap_block_size: bs,
        })
    }
}

/// A segment on its way to the sinks: its image bytes (data segments only) and their
/// encoding.
struct Chunk {
    data: Option<Buf>,
    enc: Encoded,
}

fn mapped_len(d: &DataSegment) -> u64 {
    d.mapped.iter().map(|e| e.len()).sum()
}

/// The transform: zeroes what is not mapped in a data segment (free blocks may hold deleted
/// data that must not leak into an archive), then encodes it.
fn encode(encoder: &dyn Encoder, job: &Job<Segment>, data: Option<Buf>) -> crate::Result<Chunk> {
    let Segment::Data(d) = &job.meta else {
        return Ok(Chunk {
            data: None,
            enc: Encoded::default(),
        });
    };
    let mut buf = data.ok_or_else(|| missing_data(d))?;
    let mut pos = d.offset;
    for e in &d.mapped {
        if e.start > pos {
            buf[(pos - d.offset) as usize..(e.start - d.offset) as usize].fill(0);
        }
        pos = e.end;
    }
    // A segment widened to whole clusters (an aligned plan) ends after its last mapped byte.
    if pos < d.end() {
        buf[(pos - d.offset) as usize..d.len].fill(0);
    }
    let enc = encoder.encode(d, &buf)?;
    Ok(Chunk {
        data: Some(buf),
        enc,
    })
}

fn missing_data(d: &DataSegment) -> Error {
    Error::Io(io::Error::other(format!(
        "internal error: the data segment at {} reached the archive without its bytes",
        d.offset
    )))
}

/// The format's writer as a sink.
struct ArchiveSink<'o> {
    writer: Box<dyn ArchiveWriter>,
    out: &'o mut dyn WriteAt,
    size: u64,
    mapped: u64,
    flushed: u64,
}

impl Sink<Segment, Chunk> for ArchiveSink<'_> {
    fn put(&mut self, job: &Job<Segment>, item: &Chunk) -> crate::Result<()> {
        match &job.meta {
            Segment::Data(d) => {
                let data = item.data.as_deref().ok_or_else(|| missing_data(d))?;
                self.writer.data(self.out, d, data, &item.enc)?;
                self.mapped += mapped_len(d);
                if self.mapped >= self.flushed + WRITEBACK_EVERY {
                    self.flushed = self.mapped;
                    // Only a head start for the final fsync, which reports any error.
                    let _ = self.out.start_writeback();
                }
            }
            Segment::Zero { offset, len } => self.writer.zeros(self.out, *offset, *len)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(self.writer.finish(self.out, self.size)?)
    }
}

/// The bmap ranges hashed from the segments' bytes, in order.
struct HashSink<'r>(RangeHasher<'r>);

impl Sink<Segment, Chunk> for HashSink<'_> {
    fn put(&mut self, job: &Job<Segment>, item: &Chunk) -> crate::Result<()> {
        if let (Segment::Data(d), Some(data)) = (&job.meta, &item.data) {
            self.0.feed(d.offset, data);
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// `DEST.bmap`: bmaptool tries `IMG.bmap` first, so it finds this beside any archive name.
pub fn bmap_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".bmap");
    PathBuf::from(s)
}

/// Refuses ([`Error::Refused`]) to overwrite what the user may want (without `force`), to
/// write over the source, or to write an archive onto a device.
pub fn check_destination(src: &Path, dest: &Path, force: bool) -> crate::Result<()> {
    let Ok(dm) = std::fs::metadata(dest) else {
        return Ok(());
    };
    let refuse = |reason: String| Err(Error::Refused { reason });
    if dm.file_type().is_block_device() {
        return refuse(format!(
            "{} is a block device; backup and convert write files (use flash to write devices)",
            dest.display()
        ));
    }
    if let Ok(sm) = std::fs::metadata(src) {
        if sm.dev() == dm.dev() && sm.ino() == dm.ino() {
            return refuse(format!("{} is the source itself", dest.display()));
        }
    }
    if !dm.is_file() {
        return refuse(format!(
            "{} exists and is not a regular file",
            dest.display()
        ));
    }
    if !force {
        return refuse(format!(
            "{} already exists; pass --force to replace it",
            dest.display()
        ));
    }
    Ok(())
}

/// Refuses a device with a filesystem mounted read-write on it (on the device, a partition,
/// or a device stacked on them), unless `allow`. A regular file is never in use this way.
fn check_not_mounted(dev: &Path, allow: bool) -> crate::Result<()> {
    let md = std::fs::metadata(dev).map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("cannot tell whether {} is in use: {e}", dev.display()),
        ))
    })?;
    if allow || !md.file_type().is_block_device() {
        return Ok(());
    }
    let host = Host::read(&SysRoot::system());
    let Some(name) = host.name_of_device(dev) else {
        return Ok(());
    };
    let rw: Vec<_> = host
        .uses(&name)
        .into_iter()
        .filter(|u| !u.read_only)
        .collect();
    if rw.is_empty() {
        return Ok(());
    }
    let list = rw
        .iter()
        .map(|u| format!("/dev/{} on {}", u.device, u.point))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Error::Refused {
        reason: format!(
            "{} is in use ({list}); a backup of a filesystem that is being written is \
             inconsistent. Unmount it (or remount read-only), or pass --allow-mounted to back \
             it up anyway",
            dev.display()
        ),
    })
}
