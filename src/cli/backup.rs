//! `blockwise backup`: a compact archive of the blocks that matter, plus its bmap.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use blockwise::archive::{self, ArchiveFormat, Backup, BackupOptions};
use blockwise::format::OpenOptions;
use blockwise::io::atomic::AtomicFile;
use blockwise::scan::open_and_scan_with_reads;
use blockwise::util::human_bytes;

use super::common::exit;

pub struct Args {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub format: Option<FormatArg>,
    pub level: Option<i32>,
    pub threads: Option<usize>,
    pub truncate: bool,
    pub force: bool,
    pub allow_mounted: bool,
    pub json: bool,
    pub rules: blockwise::map::MapRules,
}

/// `--format`: the command line's names for [`ArchiveFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// Seekable zstd (`.zst`): plain zstd to every other tool, random access for blockwise.
    #[value(name = "zst", alias = "zstd")]
    Zstd,
    /// Multi-block xz (`.xz`): plain xz to every other tool, random access through its index.
    #[value(name = "xz")]
    Xz,
    /// Sparse raw image (`.img`): unmapped space left as holes.
    #[value(name = "img", alias = "raw")]
    SparseRaw,
    /// Android sparse image (`.simg`): unmapped space as DONT_CARE chunks.
    #[value(name = "simg", alias = "android-sparse")]
    AndroidSparse,
}

impl From<FormatArg> for ArchiveFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Zstd => ArchiveFormat::Zstd,
            FormatArg::Xz => ArchiveFormat::Xz,
            FormatArg::SparseRaw => ArchiveFormat::SparseRaw,
            FormatArg::AndroidSparse => ArchiveFormat::AndroidSparse,
        }
    }
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
    super::common::one_pass(&a.src, |opts| attempt(&a, opts))
}

fn attempt(a: &Args, open: &OpenOptions) -> anyhow::Result<u8> {
    let (opened, scan, hot) = open_and_scan_with_reads(&a.src, open)
        .with_context(|| format!("cannot read {}", super::common::shown(&a.src)))?;
    scan.still_fits(&*opened.source)?;
    if !scan.decoded {
        bail!(
            "{}: {} contents are not decoded by this version; convert it to a raw image first",
            super::common::shown(&a.src),
            opened.payload_format().name()
        );
    }
    let usage =
        blockwise::map::image_map_with(&scan, a.rules).context("internal error: no usage map")?;
    let format = a
        .format
        .map(ArchiveFormat::from)
        .or_else(|| ArchiveFormat::from_name(&a.dest))
        .unwrap_or(ArchiveFormat::Zstd);
    archive::check_destination(&a.src, &a.dest, a.force)?;
    let bmap_path = archive::bmap_path(&a.dest);
    archive::check_destination(&a.src, &bmap_path, a.force)?;
    let opts = BackupOptions {
        format,
        level: a.level,
        threads: a.threads.unwrap_or(BackupOptions::default().threads).max(1),
        allow_mounted: a.allow_mounted,
        hot,
        ..BackupOptions::default()
    };
    let mut job = Backup::prepare(&opened, &usage.used, opts)?;
    if a.truncate {
        job.truncate()
            .with_context(|| format!("--truncate: {}", super::common::shown(&a.src)))?;
    }
    let mut warnings = blockwise::report::warnings(&opened, &scan, Some(&usage));
    warnings.extend_from_slice(job.warnings());
    let notes = job.notes().to_vec();
    let (size, original_size, level) = (job.size(), job.original_size(), job.level());

    let (mut tmp, stats) = run_into_temporary(job, &a.src, &a.dest, "backing up", a.json)?;
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
            source: super::common::shown(&a.src),
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
        super::common::print_json(&s)?;
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
            super::common::shown(&a.src),
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

/// Says what went wrong and what state things are in: the temporary file is gone, nothing
/// was written under the final name. The exit code stays that of the library error.
pub(super) fn explain_failure(e: blockwise::Error, src: &Path, dest: &Path) -> anyhow::Error {
    let state = format!(
        "nothing was written under {} (the partial temporary file was removed)",
        dest.display()
    );
    let code = exit::of(&e);
    let message = match &e {
        // Not a failure yet: the caller reads the image again (`one_pass`).
        blockwise::Error::Replan { .. } => return e.into(),
        blockwise::Error::Interrupted => format!("interrupted; {state}"),
        blockwise::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            format!("the destination filesystem is full ({io}); {state}")
        }
        blockwise::Error::Read { .. } => {
            format!(
                "reading {}: {}; {state}",
                super::common::shown(src),
                super::common::chain(&e)
            )
        }
        _ => format!("{e}; {state}"),
    };
    anyhow::Error::new(super::common::Explained { message, code })
}

/// Runs a prepared backup or conversion into a temporary file beside `dest` (a progress bar
/// on a terminal, Ctrl-C honoured): the file, not yet renamed into place, and what was
/// written. On failure the temporary file is gone and the error says what state things are
/// in.
pub(super) fn run_into_temporary(
    job: Backup,
    src: &Path,
    dest: &Path,
    verb: &str,
    json: bool,
) -> anyhow::Result<(AtomicFile, archive::BackupStats)> {
    let cancel = blockwise::io::sys::catch_interrupts();
    let mut tmp =
        AtomicFile::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let bar = super::common::progress_bar(verb, job.map().total(), json);
    let mut on_progress = |p: &archive::Progress| {
        if let Some(b) = &bar {
            b.set_position(p.mapped_done);
        }
    };
    let result = job.run(tmp.file(), &mut on_progress, cancel);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(s) => Ok((tmp, s)),
        Err(e) => {
            drop(tmp);
            Err(explain_failure(e, src, dest))
        }
    }
}
