//! `blockwise backup`: a compact archive of the blocks that matter, plus its bmap.

use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use blockwise::archive::{self, ArchiveFormat, BackupOptions, CodecOptions};
use blockwise::format::OpenOptions;
use blockwise::io::atomic::AtomicFile;
use blockwise::io::{DirectBlockDevice, ReadAt};
use blockwise::scan::open_and_scan_with_reads;
use blockwise::util::human_bytes;
use blockwise::ExtentMap;

use super::exit;

pub struct Args {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub format: Option<ArchiveFormat>,
    pub level: Option<i32>,
    pub threads: Option<usize>,
    pub truncate: bool,
    pub force: bool,
    pub allow_mounted: bool,
    pub json: bool,
}

/// The `--json` summary (spec/json-output.md).
#[derive(serde::Serialize)]
struct Summary {
    schema_version: u32,
    source: String,
    archive: String,
    bmap: String,
    format: ArchiveFormat,
    level: Option<i32>,
    image_size: u64,
    original_size: u64,
    truncated: bool,
    mapped_bytes: u64,
    bytes_read: u64,
    archive_bytes: u64,
    archive_allocated_bytes: u64,
    bmap_ranges: usize,
    seconds: f64,
    warnings: Vec<String>,
    notes: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let (opened, scan, hot) = open_and_scan_with_reads(&a.src, &OpenOptions::default())
        .with_context(|| format!("cannot read {}", a.src.display()))?;
    if !scan.decoded {
        bail!(
            "{}: {} contents are not decoded by this version; convert it to a raw image first",
            a.src.display(),
            opened.payload_format().name()
        );
    }
    let usage = blockwise::map::image_map(&scan).context("internal error: no usage map")?;
    let format = a
        .format
        .or_else(|| ArchiveFormat::from_name(&a.dest))
        .unwrap_or(ArchiveFormat::Zstd);
    check_destination(&a.src, &a.dest, a.force)?;
    let bmap_path = bmap_path(&a.dest);
    check_destination(&a.src, &bmap_path, a.force)?;
    if opened.is_block_device {
        check_not_mounted(&a.src, a.allow_mounted)?;
    }
    let level = a.level.unwrap_or_else(|| format.default_level());
    let mut warnings = blockwise::report::warnings(&opened, &scan, Some(&usage));
    let mut notes: Vec<String> = Vec::new();

    // Long sequential reads of a device bypass the page cache.
    let mut src: Arc<dyn ReadAt> = opened.source.clone();
    if opened.is_block_device && opened.chain.len() == 1 {
        match DirectBlockDevice::open(&a.src) {
            Ok(d) => src = Arc::new(d),
            Err(e) => warnings.push(format!(
                "O_DIRECT not available ({e}); reading through the page cache"
            )),
        }
    }
    let original_size = src.size();
    let mut size = original_size;
    let mut map: ExtentMap = usage.used.clone();
    if a.truncate {
        let layout = blockwise::layout::read_layout(&*src, opened.device_sector_size)
            .with_context(|| format!("reading the partition table of {}", a.src.display()))?;
        let t = archive::truncate::plan_truncation(&*src, &layout)
            .with_context(|| format!("--truncate: {}", a.src.display()))?;
        t.check_against_map(&layout, &map, original_size)
            .with_context(|| format!("--truncate: {}", a.src.display()))?;
        let patched = ExtentMap::from_ranges(
            t.patches
                .iter()
                .map(|(off, b)| (*off, off + b.len() as u64)),
        );
        map = map.clip(t.new_size).union(&patched);
        size = t.new_size;
        src = truncated_view(src, t.new_size, t.patches)?;
        notes.extend(t.notes);
    }

    let (encoder, mut writer) = archive::make(
        format,
        &CodecOptions {
            level,
            image_size: size,
        },
    )?;
    let opts = BackupOptions {
        threads: a.threads.unwrap_or(BackupOptions::default().threads).max(1),
        hot: hot.clip(size),
        ..BackupOptions::default()
    };
    let cancel = blockwise::io::sys::catch_interrupts();
    let mut tmp = AtomicFile::create(&a.dest)
        .with_context(|| format!("cannot create {}", a.dest.display()))?;
    let bar = super::progress_bar("backing up", map.total(), a.json);
    let mut on_progress = |p: &archive::Progress| {
        if let Some(b) = &bar {
            b.set_position(p.mapped_done);
        }
    };
    let result = archive::backup(
        src,
        size,
        &map,
        &format.plan_options(),
        tmp.file(),
        encoder,
        writer.as_mut(),
        &opts,
        &mut on_progress,
        cancel,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            drop(tmp);
            return Err(explain_failure(e, &a.src, &a.dest));
        }
    };
    let bmap_text = stats.bmap();
    let mut btmp = AtomicFile::create(&bmap_path)
        .with_context(|| format!("cannot create {}", bmap_path.display()))?;
    btmp.write_all(&bmap_text)
        .map_err(|e| explain_failure(e.into(), &a.src, &bmap_path))?;
    let (archive_bytes, allocated) = {
        let m = tmp.file().metadata()?;
        (m.len(), m.blocks() * 512)
    };
    tmp.commit()
        .map_err(|e| explain_failure(e.into(), &a.src, &a.dest))?;
    btmp.commit().with_context(|| {
        format!(
            "{} was written, but its bmap could not be",
            a.dest.display()
        )
    })?;

    let mapped = stats.map.total();
    for w in &warnings {
        eprintln!("blockwise: warning: {w}");
    }
    for n in &notes {
        eprintln!("blockwise: note: {n}");
    }
    let stored = if format == ArchiveFormat::SparseRaw {
        allocated
    } else {
        archive_bytes
    };
    if a.json {
        let s = Summary {
            schema_version: 1,
            source: a.src.display().to_string(),
            archive: a.dest.display().to_string(),
            bmap: bmap_path.display().to_string(),
            format,
            level: matches!(format, ArchiveFormat::Zstd | ArchiveFormat::Xz).then_some(level),
            image_size: stats.image_size,
            original_size,
            truncated: a.truncate,
            mapped_bytes: mapped,
            bytes_read: stats.bytes_read,
            archive_bytes,
            archive_allocated_bytes: allocated,
            bmap_ranges: stats.bmap_ranges.len(),
            seconds: stats.seconds,
            warnings,
            notes,
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                n as f64 * 100.0 / d as f64
            }
        };
        let secs = stats.seconds.max(1e-9);
        eprintln!(
            "blockwise: backed up {} to {} ({})",
            a.src.display(),
            a.dest.display(),
            format.name()
        );
        if a.truncate && size != original_size {
            eprintln!(
                "  image      {} (truncated from {})",
                human_bytes(size),
                human_bytes(original_size)
            );
        } else {
            eprintln!("  image      {}", human_bytes(size));
        }
        eprintln!(
            "  mapped     {} ({:.1}% of the image; the rest stored as {})",
            human_bytes(mapped),
            pct(mapped, size),
            if matches!(format, ArchiveFormat::SparseRaw) {
                "holes"
            } else if matches!(format, ArchiveFormat::AndroidSparse) {
                "DONT_CARE chunks"
            } else {
                "zeros"
            }
        );
        eprintln!(
            "  archive    {} ({:.1}% of the image, {:.1}% of mapped){}",
            human_bytes(stored),
            pct(stored, size),
            pct(stored, mapped),
            if format == ArchiveFormat::SparseRaw {
                format!(" allocated; apparent size {}", human_bytes(archive_bytes))
            } else {
                String::new()
            }
        );
        eprintln!(
            "  time       {:.2}s ({}/s of mapped data)",
            stats.seconds,
            human_bytes((mapped as f64 / secs) as u64)
        );
        eprintln!(
            "  bmap       {} ({} ranges, SHA-256)",
            bmap_path.display(),
            stats.bmap_ranges.len()
        );
    }
    Ok(exit::OK)
}

/// `DEST.bmap`: bmaptool tries `IMG.bmap` first, so it finds this beside any archive name.
fn bmap_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".bmap");
    PathBuf::from(s)
}

/// Refuses to overwrite what the user may want (without `--force`), to write over the
/// source, or to write an archive onto a device.
fn check_destination(src: &Path, dest: &Path, force: bool) -> anyhow::Result<()> {
    let Ok(dm) = std::fs::metadata(dest) else {
        return Ok(());
    };
    if dm.file_type().is_block_device() {
        refuse!(
            "{} is a block device; backup writes an archive file (use flash to write devices)",
            dest.display()
        );
    }
    if let Ok(sm) = std::fs::metadata(src) {
        if sm.dev() == dm.dev() && sm.ino() == dm.ino() {
            refuse!("{} is the source itself", dest.display());
        }
    }
    if !dm.is_file() {
        refuse!("{} exists and is not a regular file", dest.display());
    }
    if !force {
        refuse!(
            "{} already exists; pass --force to replace it",
            dest.display()
        );
    }
    Ok(())
}

fn check_not_mounted(dev: &Path, allow: bool) -> anyhow::Result<()> {
    let uses = blockwise::io::device::in_use(dev)
        .with_context(|| format!("cannot tell whether {} is in use", dev.display()))?;
    let rw: Vec<_> = uses.iter().filter(|u| !u.read_only).collect();
    if rw.is_empty() || allow {
        return Ok(());
    }
    let list = rw
        .iter()
        .map(|u| format!("/dev/{} on {}", u.device, u.mount_point))
        .collect::<Vec<_>>()
        .join(", ");
    refuse!(
        "{} is in use ({list}); a backup of a filesystem that is being written is inconsistent. \
         Unmount it (or remount read-only), or pass --allow-mounted to back it up anyway",
        dev.display()
    )
}

/// Says what went wrong and what state things are in: the temporary file is gone, nothing
/// was written under the final name.
fn explain_failure(e: blockwise::Error, src: &Path, dest: &Path) -> anyhow::Error {
    let state = format!(
        "nothing was written under {} (the partial temporary file was removed)",
        dest.display()
    );
    if let blockwise::Error::Io(io) = &e {
        match io.kind() {
            std::io::ErrorKind::Interrupted => {
                return anyhow::Error::new(Interrupted(format!("interrupted; {state}")))
            }
            std::io::ErrorKind::StorageFull => {
                return anyhow::anyhow!("the destination filesystem is full ({io}); {state}")
            }
            _ => {}
        }
        if io.to_string().starts_with("read error") {
            return anyhow::anyhow!("reading {}: {io}; {state}", src.display());
        }
    }
    anyhow::anyhow!("{e}; {state}")
}

/// Refused for safety before anything was written (exit code 4).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Returns a [`Refused`] error built like `format!`.
macro_rules! refuse {
    ($($t:tt)*) => {
        return Err(anyhow::Error::new(Refused(format!($($t)*))))
    };
}
use refuse;

/// A run stopped by SIGINT/SIGTERM (exit code 130).
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

fn truncated_view(
    src: Arc<dyn ReadAt>,
    size: u64,
    patches: Vec<(u64, Vec<u8>)>,
) -> anyhow::Result<Arc<dyn ReadAt>> {
    Ok(Arc::new(
        blockwise::io::Overlay::new(src, size, patches)
            .context("--truncate: building the truncated view")?,
    ))
}
