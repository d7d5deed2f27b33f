//! `blockwise backup`: a compact archive of the blocks that matter, plus its bmap.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use blockwise::archive::{self, ArchiveFormat, Backup, BackupOptions};
use blockwise::format::OpenOptions;
use blockwise::io::atomic::AtomicFile;
use blockwise::io::remote::upload::{self, Dest, Destination, UploadStats};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<UploadSummary>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

/// The `upload` member of the `--json` summaries when DEST is in a bucket.
#[derive(serde::Serialize)]
pub(super) struct UploadSummary {
    /// The object, `s3://bucket/key`.
    url: String,
    /// Its bmap object (backup only).
    #[serde(skip_serializing_if = "Option::is_none")]
    bmap_url: Option<String>,
    object_size: u64,
    /// Bytes of the objects written (the archive, and its bmap).
    uploaded_bytes: u64,
    parts: u32,
    spooled: bool,
}

impl UploadSummary {
    pub(super) fn new(
        dest: &Destination,
        up: &UploadStats,
        bmap: Option<(&Destination, u64)>,
    ) -> Self {
        UploadSummary {
            url: dest.url().to_string(),
            bmap_url: bmap.map(|(b, _)| b.url().to_string()),
            object_size: up.object_size,
            uploaded_bytes: up.object_size + bmap.map_or(0, |(_, n)| n),
            parts: up.parts,
            spooled: up.spooled,
        }
    }

    /// The human summary's line.
    pub(super) fn line(&self) -> String {
        format!(
            "  uploaded   {} in {} {}{}",
            human_bytes(self.object_size),
            self.parts,
            if self.parts == 1 { "request" } else { "parts" },
            if self.spooled {
                " (written to a temporary file first: this format goes back to patch its tables)"
            } else {
                ", streamed as it was written"
            }
        )
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let dest = destination(&a.dest)?;
    super::common::one_pass(&a.src, |opts| attempt(&a, &dest, opts))
}

/// DEST as a local path or a bucket's object; a web URL is a usage error.
pub(super) fn destination(dest: &Path) -> anyhow::Result<Dest> {
    match upload::parse_destination(dest, super::common::endpoint().as_deref()) {
        Ok(d) => Ok(d),
        Err(blockwise::Error::Unsupported(m)) => {
            Err(anyhow::Error::new(super::common::Explained {
                message: m,
                code: exit::USAGE,
            }))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot write to {}", dest.display()))),
    }
}

/// Refuses to replace DEST's object (and its bmap's, `bmap`) without `force`, and to write
/// over the source.
pub(super) fn check_object(
    src: &Path,
    dest: &Destination,
    bmap: Option<&Destination>,
    force: bool,
) -> anyhow::Result<()> {
    if src.as_os_str() == dest.url() {
        return Err(blockwise::Error::Refused {
            reason: format!("{} is the source itself", dest.url()),
        }
        .into());
    }
    dest.check(force)?;
    if let Some(b) = bmap {
        b.check(force)?;
    }
    Ok(())
}

fn attempt(a: &Args, dest: &Dest, open: &OpenOptions) -> anyhow::Result<u8> {
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
    let bmap_path = archive::bmap_path(&a.dest);
    let bmap_object = match dest {
        Dest::S3(d) => {
            let b = d.with_suffix(".bmap");
            check_object(&a.src, d, Some(&b), a.force)?;
            Some(b)
        }
        Dest::Path(_) => {
            archive::check_destination(&a.src, &a.dest, a.force)?;
            archive::check_destination(&a.src, &bmap_path, a.force)?;
            None
        }
    };
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

    let (stats, archive_bytes, allocated, upload) = match (dest, &bmap_object) {
        (Dest::S3(d), Some(b)) => {
            let (up, stats) = run_into_upload(
                job,
                &a.src,
                d,
                format.writes_in_order(),
                "backing up",
                a.json,
            )?;
            let bmap_text = stats.bmap();
            b.put(&bmap_text, blockwise::io::sys::catch_interrupts())
                .with_context(|| format!("{} was uploaded, but its bmap could not be", d.url()))?;
            let summary = UploadSummary::new(d, &up, Some((b, bmap_text.len() as u64)));
            (stats, up.object_size, up.object_size, Some(summary))
        }
        _ => {
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
            (stats, archive_bytes, allocated, None)
        }
    };
    let (archive_name, bmap_name) = match (dest, &bmap_object) {
        (Dest::S3(d), Some(b)) => (d.url().to_string(), b.url().to_string()),
        _ => (
            a.dest.display().to_string(),
            bmap_path.display().to_string(),
        ),
    };

    let mapped = stats.map.total();
    for w in &warnings {
        eprintln!("blockwise: warning: {w}");
    }
    for n in &notes {
        eprintln!("blockwise: note: {n}");
    }
    let stored = if format == ArchiveFormat::SparseRaw && upload.is_none() {
        allocated
    } else {
        archive_bytes
    };
    if a.json {
        let s = Summary {
            schema_version: 1,
            source: super::common::shown(&a.src),
            archive: archive_name,
            bmap: bmap_name,
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
            upload,
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
            archive_name,
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
            if format == ArchiveFormat::SparseRaw && upload.is_none() {
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
        if let Some(u) = &upload {
            eprintln!("{}", u.line());
        }
        eprintln!(
            "  bmap       {} ({} ranges, SHA-256)",
            bmap_name,
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

/// Runs a prepared backup or conversion into an upload to `dest` (a progress bar on a
/// terminal, Ctrl-C honoured): streamed as parts if the format writes `in_order`, else spooled
/// to a temporary file first. The object exists once this returns; on failure or interrupt the
/// upload is aborted and the error says what state the bucket is in.
pub(super) fn run_into_upload(
    job: Backup,
    src: &Path,
    dest: &Destination,
    in_order: bool,
    verb: &str,
    json: bool,
) -> anyhow::Result<(UploadStats, archive::BackupStats)> {
    let cancel = blockwise::io::sys::catch_interrupts();
    let mut up = dest.upload(in_order, cancel)?;
    let bar = super::common::progress_bar(verb, job.map().total(), json);
    let mut on_progress = |p: &archive::Progress| {
        if let Some(b) = &bar {
            b.set_position(p.mapped_done);
        }
    };
    let result = job.run(&mut up, &mut on_progress, cancel);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let result = result.and_then(|stats| up.finish().map(|u| (u, stats)));
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            // A write the upload refused because of the interrupt comes back as an I/O error.
            let e = if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                blockwise::Error::Interrupted
            } else {
                e
            };
            let aborted = up.abort().err();
            Err(explain_upload_failure(e, aborted, src, dest))
        }
    }
}

/// Says what went wrong and what state the bucket is in: the multipart upload was aborted (or
/// could not be), no object was written. The exit code stays that of the library error.
fn explain_upload_failure(
    e: blockwise::Error,
    abort_failed: Option<blockwise::Error>,
    src: &Path,
    dest: &Destination,
) -> anyhow::Error {
    if let blockwise::Error::Replan { .. } = e {
        return e.into();
    }
    let state = match &abort_failed {
        None => format!(
            "nothing was written to {} (the upload was aborted)",
            dest.url()
        ),
        Some(a) => format!(
            "no object was written to {}, but aborting the multipart upload failed ({a}): its \
             parts stay in the bucket until a lifecycle rule or `aws s3api \
             abort-multipart-upload` removes them",
            dest.url()
        ),
    };
    let code = exit::of(&e);
    let message = match &e {
        blockwise::Error::Interrupted => format!("interrupted; {state}"),
        blockwise::Error::Read { .. } => format!(
            "reading {}: {}; {state}",
            super::common::shown(src),
            super::common::chain(&e)
        ),
        _ => format!("{}; {state}", super::common::chain(&e)),
    };
    anyhow::Error::new(super::common::Explained { message, code })
}
