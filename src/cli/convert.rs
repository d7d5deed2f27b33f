//! `blockwise convert`: any image blockwise reads, to sparse raw, seekable zstd, multi-block
//! xz, Android sparse, qcow2, VHD or VHDX.
//!
//! A conversion is a backup without the bmap: the same skip rule decides what is carried
//! (or, with `--keep-free`, everything the source holds), and the same pipeline and writers
//! (`blockwise::archive`) write it, to a temporary name renamed once complete.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::Context;
use blockwise::archive::{
    self, ArchiveFormat, Backup, BackupOptions, ClusterCompression, ContainerOptions,
};
use blockwise::format::OpenOptions;
use blockwise::io::remote::upload::Dest;
use blockwise::scan::open_and_scan_with_reads;
use blockwise::util::human_bytes;

use super::common::{exit, Explained};

pub struct Args {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub to: Option<ToArg>,
    pub vhd: Option<VhdArg>,
    pub compress: Option<CompressArg>,
    pub cluster_size: Option<u32>,
    pub level: Option<i32>,
    pub threads: Option<usize>,
    pub keep_free: bool,
    pub force: bool,
    pub allow_mounted: bool,
    pub json: bool,
    pub rules: blockwise::map::MapRules,
    pub audio: Option<AudioArg>,
}

/// `--audio`: how a CD image's audio tracks are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AudioArg {
    /// WAV (44-byte RIFF header, 16-bit stereo 44.1 kHz), as `bchunk -w` writes.
    Wav,
    /// The PCM as stored (`.cdr`), as `bchunk` writes without `-w`.
    Raw,
}

/// `--to`: the output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ToArg {
    /// Sparse raw image: free space as holes.
    #[value(name = "img", alias = "raw")]
    Img,
    /// Seekable zstd: plain zstd to every other tool.
    #[value(name = "zst", alias = "zstd")]
    Zst,
    /// Multi-block xz: plain xz to every other tool.
    #[value(name = "xz")]
    Xz,
    /// Android sparse image: free space as DONT_CARE chunks.
    #[value(name = "simg", alias = "android-sparse")]
    Simg,
    /// qcow2 (version 3): free space as unallocated clusters.
    #[value(name = "qcow2")]
    Qcow2,
    /// VHD, dynamic unless --vhd fixed.
    #[value(name = "vhd", alias = "vpc")]
    Vhd,
    /// VHDX (dynamic).
    #[value(name = "vhdx")]
    Vhdx,
    /// A CD image's tracks (CUE/TOC sheet, Nero image, raw BIN) as `bchunk` writes them: the
    /// data track's user data as OUT (an ISO), the other tracks beside it. Any other image:
    /// as `img`.
    #[value(name = "iso")]
    Iso,
}

/// `--vhd`: which kind of VHD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VhdArg {
    /// The disk then a footer, padded to whole MiB (what Azure takes).
    Fixed,
    /// 2 MiB blocks allocated where data is (qemu-img's default).
    Dynamic,
}

/// `--compress`: qcow2's cluster codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    /// zlib (deflate): every qcow2 reader knows it.
    Zlib,
    /// zstd: faster and smaller; qemu 5.1 or later reads it.
    Zstd,
}

/// The choices listed when OUT's extension says nothing.
const CHOICES: &str = ".img (.raw, .bin, .iso), .zst, .xz, .simg, .qcow2, .vhd, .vhdx";

/// The `--json` summary (spec/json-output.md, "convert").
#[derive(serde::Serialize)]
struct Summary {
    schema_version: u32,
    source: String,
    source_format: Vec<&'static str>,
    output: String,
    format: ArchiveFormat,
    compression: Option<ClusterCompression>,
    cluster_size: Option<u32>,
    level: Option<i32>,
    keep_free: bool,
    image_size: u64,
    output_disk_size: u64,
    carried_bytes: u64,
    bytes_read: u64,
    output_bytes: u64,
    output_allocated_bytes: u64,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<super::backup::UploadSummary>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let dest = super::backup::destination(&a.dest)?;
    if wants_tracks(&a) {
        if let Some(format) = disc_format(&a.src)? {
            if let Dest::S3(d) = &dest {
                return Err(usage(format!(
                    "{} is a CD image, written as several track files: write them to a local \
                     directory, not to {}",
                    super::common::shown(&a.src),
                    d.url()
                )));
            }
            return cd_tracks(&a, format);
        }
        if a.audio.is_some() {
            return Err(usage(format!(
                "--audio applies to CD images (CUE or TOC sheets, Nero images, raw BIN files), \
                 and {} is none",
                super::common::shown(&a.src)
            )));
        }
    } else if a.audio.is_some() {
        return Err(usage(
            "--audio applies when a CD image is written as tracks (OUT named .iso, or --to iso)"
                .into(),
        ));
    }
    // Options are checked before the image is read.
    let format = output_format(&a)?;
    let container = container_options(&a, format)?;
    super::common::one_pass(&a.src, |opts| attempt(&a, &dest, format, container, opts))
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(Explained {
        message,
        code: exit::USAGE,
    })
}

/// The format `--to` names, else OUT's extension.
fn output_format(a: &Args) -> anyhow::Result<ArchiveFormat> {
    let f = match a.to {
        Some(ToArg::Img) => ArchiveFormat::SparseRaw,
        Some(ToArg::Zst) => ArchiveFormat::Zstd,
        Some(ToArg::Xz) => ArchiveFormat::Xz,
        Some(ToArg::Simg) => ArchiveFormat::AndroidSparse,
        Some(ToArg::Qcow2) => ArchiveFormat::Qcow2,
        Some(ToArg::Vhd) => ArchiveFormat::VhdDynamic,
        Some(ToArg::Vhdx) => ArchiveFormat::Vhdx,
        Some(ToArg::Iso) => ArchiveFormat::SparseRaw,
        None => ArchiveFormat::from_output_name(&a.dest).ok_or_else(|| {
            usage(format!(
                "{}: the name does not say which format to write; name it {CHOICES}, or pass \
                 --to img|zst|xz|simg|qcow2|vhd|vhdx",
                a.dest.display()
            ))
        })?,
    };
    Ok(match (f, a.vhd) {
        (ArchiveFormat::VhdDynamic, Some(VhdArg::Fixed)) => ArchiveFormat::VhdFixed,
        (ArchiveFormat::VhdDynamic, _) => f,
        (_, Some(_)) => {
            return Err(usage(format!(
                "--vhd applies to VHD output, and {} is {}",
                a.dest.display(),
                f.name()
            )))
        }
        _ => f,
    })
}

fn container_options(a: &Args, format: ArchiveFormat) -> anyhow::Result<ContainerOptions> {
    let mut c = ContainerOptions::default();
    if format != ArchiveFormat::Qcow2 && (a.compress.is_some() || a.cluster_size.is_some()) {
        return Err(usage(format!(
            "--compress and --cluster-size apply to qcow2 output, and {} is {}",
            a.dest.display(),
            format.name()
        )));
    }
    if let Some(s) = a.cluster_size {
        c.cluster_size = s;
    }
    c.compress = a.compress.map(|x| match x {
        CompressArg::Zlib => ClusterCompression::Zlib,
        CompressArg::Zstd => ClusterCompression::Zstd,
    });
    if a.level.is_some() && !format.uses_level(&c) {
        return Err(usage(format!(
            "--level applies to .zst, .xz and compressed qcow2 (--compress) output, not {}",
            format.name()
        )));
    }
    Ok(c)
}

fn attempt(
    a: &Args,
    dest: &Dest,
    format: ArchiveFormat,
    container: ContainerOptions,
    open: &OpenOptions,
) -> anyhow::Result<u8> {
    let (opened, scan, hot) = open_and_scan_with_reads(&a.src, open)
        .with_context(|| format!("cannot read {}", super::common::shown(&a.src)))?;
    scan.still_fits(&*opened.source)?;
    if !scan.decoded {
        anyhow::bail!(
            "{}: {} contents are not decoded by this version of blockwise, so they cannot be \
             converted",
            super::common::shown(&a.src),
            opened.payload_format().name()
        );
    }
    let size = opened.source.size();
    let usage =
        blockwise::map::image_map_with(&scan, a.rules).context("internal error: no usage map")?;
    // What is carried: the blocks the skip rule keeps; with --keep-free also everything the
    // source holds (its allocated ranges, when it knows them; else every byte). The skip
    // rule's blocks stay in, so nothing used ever becomes free space a reader may skip.
    let map = if a.keep_free {
        match opened.source.allocated_hint() {
            Some(alloc) => alloc
                .union(&usage.used)
                .intersect(&blockwise::ExtentMap::single(0, size)),
            None => blockwise::ExtentMap::single(0, size),
        }
    } else {
        usage.used.clone()
    };
    match dest {
        Dest::S3(d) => super::backup::check_object(&a.src, d, None, a.force)?,
        Dest::Path(_) => archive::check_destination(&a.src, &a.dest, a.force)?,
    }
    let opts = BackupOptions {
        format,
        level: a.level,
        threads: a.threads.unwrap_or(BackupOptions::default().threads).max(1),
        allow_mounted: a.allow_mounted,
        checksums: false,
        hot,
        container,
        ..BackupOptions::default()
    };
    let job = Backup::prepare(&opened, &map, opts)?;
    let mut warnings = blockwise::report::warnings(&opened, &scan, Some(&usage));
    warnings.extend_from_slice(job.warnings());
    let mut notes = job.notes().to_vec();
    let disk_size = format.disk_size(size);
    if disk_size != size {
        notes.push(format!(
            "the {} disk is {} bytes: the image's {} rounded up{}, the rest zeros",
            format.name(),
            disk_size,
            size,
            if format == ArchiveFormat::VhdFixed {
                " to whole MiB (as Azure requires)"
            } else {
                " to whole 512-byte sectors"
            }
        ));
    }

    let level = job.level();
    let (stats, output_bytes, allocated, upload, output_name) = match dest {
        Dest::S3(d) => {
            let (up, stats) = super::backup::run_into_upload(
                job,
                &a.src,
                d,
                format.writes_in_order(),
                "converting",
                a.json,
            )?;
            let summary = super::backup::UploadSummary::new(d, &up, None);
            let size = up.object_size;
            (stats, size, size, Some(summary), d.url().to_string())
        }
        Dest::Path(_) => {
            let (mut tmp, stats) =
                super::backup::run_into_temporary(job, &a.src, &a.dest, "converting", a.json)?;
            let (output_bytes, allocated) = {
                let m = tmp.file().metadata()?;
                (m.len(), m.blocks() * 512)
            };
            tmp.commit()
                .map_err(|e| super::backup::explain_failure(e.into(), &a.src, &a.dest))?;
            let name = a.dest.display().to_string();
            (stats, output_bytes, allocated, None, name)
        }
    };

    for w in &warnings {
        eprintln!("blockwise: warning: {w}");
    }
    for n in &notes {
        eprintln!("blockwise: note: {n}");
    }
    let carried = stats.map.total();
    let qcow2 = format == ArchiveFormat::Qcow2;
    if a.json {
        let s = Summary {
            schema_version: 1,
            source: super::common::shown(&a.src),
            source_format: opened.chain.iter().map(|l| l.format.name()).collect(),
            output: output_name,
            format,
            compression: container.compress.filter(|_| qcow2),
            cluster_size: qcow2.then_some(container.cluster_size),
            level: format.uses_level(&container).then_some(level),
            keep_free: a.keep_free,
            image_size: size,
            output_disk_size: disk_size,
            carried_bytes: carried,
            bytes_read: stats.bytes_read,
            output_bytes,
            output_allocated_bytes: allocated,
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
        let chain: Vec<&str> = opened.chain.iter().map(|l| l.format.name()).collect();
        eprintln!(
            "blockwise: converted {} ({}) to {} ({})",
            super::common::shown(&a.src),
            chain.join(" > "),
            output_name,
            format.name()
        );
        eprintln!("  image      {}", human_bytes(size));
        eprintln!(
            "  carried    {} ({:.1}% of the image; {})",
            human_bytes(carried),
            pct(carried, size),
            if a.keep_free {
                "everything the source holds"
            } else {
                "the blocks the filesystems use, free space left out"
            }
        );
        eprintln!(
            "  output     {} ({} allocated)",
            human_bytes(output_bytes),
            human_bytes(allocated)
        );
        if let Some(u) = &upload {
            eprintln!("{}", u.line());
        }
        eprintln!(
            "  time       {:.2}s ({}/s of carried data)",
            stats.seconds,
            human_bytes((carried as f64 / stats.seconds.max(1e-9)) as u64)
        );
    }
    Ok(exit::OK)
}

/// True when OUT is to be a CD's tracks if IN is a CD image: `--to iso`, or no `--to` and
/// OUT named `.iso`.
fn wants_tracks(a: &Args) -> bool {
    match a.to {
        Some(t) => t == ToArg::Iso,
        None => a
            .dest
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("iso")),
    }
}

/// IN's format if its bytes are a CD image whose tracks can be written out (a CUE or cdrdao
/// TOC sheet, a Nero image, raw 2352-byte sectors); `None` for an ISO9660 file or a disk image.
fn disc_format(src: &std::path::Path) -> anyhow::Result<Option<blockwise::format::Format>> {
    use blockwise::format::Format;
    let meta = std::fs::metadata(src)
        .with_context(|| format!("cannot read {}", super::common::shown(src)))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let f = blockwise::io::FileSource::open(src)
        .with_context(|| format!("cannot read {}", super::common::shown(src)))?;
    let format = blockwise::format::sniff(&f)
        .with_context(|| format!("cannot read {}", super::common::shown(src)))?;
    Ok([Format::Cue, Format::Toc, Format::Nrg, Format::CdRaw]
        .contains(&format)
        .then_some(format))
}

/// The `--json` summary of a CD image written as tracks (spec/json-output.md, "convert").
#[derive(serde::Serialize)]
struct TracksSummary {
    schema_version: u32,
    source: String,
    source_format: Vec<&'static str>,
    output: String,
    format: &'static str,
    audio: &'static str,
    tracks: Vec<TrackOut>,
    seconds: f64,
}

/// One file of [`TracksSummary`].
#[derive(serde::Serialize)]
struct TrackOut {
    number: u8,
    mode: &'static str,
    path: String,
    sectors: u64,
    bytes: u64,
    form2_sectors: u64,
}

/// Writes a CD image's tracks the way `bchunk` does (`format::cd::extract`): the first data
/// track to OUT, the others beside it, every file renamed into place only once all are
/// written.
fn cd_tracks(a: &Args, format: blockwise::format::Format) -> anyhow::Result<u8> {
    use blockwise::format::cd::extract::{extract, open_disc, AudioFormat, ExtractOptions};
    let t0 = std::time::Instant::now();
    if a.vhd.is_some()
        || a.compress.is_some()
        || a.cluster_size.is_some()
        || a.level.is_some()
        || a.keep_free
    {
        return Err(usage(format!(
            "{} is a CD image written as tracks: --vhd, --compress, --cluster-size, --level \
             and --keep-free do not apply",
            super::common::shown(&a.src)
        )));
    }
    let disc = open_disc(&a.src)
        .with_context(|| format!("cannot read {}", super::common::shown(&a.src)))?;
    let audio = match a.audio {
        Some(AudioArg::Raw) => AudioFormat::Raw,
        _ => AudioFormat::Wav,
    };
    let opts = ExtractOptions {
        audio,
        overwrite: a.force,
    };
    let written = extract(&disc, &a.dest, &opts).map_err(|e| match e {
        blockwise::Error::Format(m) if m.contains("exists") => anyhow::Error::new(Explained {
            message: m,
            code: exit::REFUSED,
        }),
        e => anyhow::Error::new(e)
            .context(format!("cannot convert {}", super::common::shown(&a.src))),
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    if a.json {
        let s = TracksSummary {
            schema_version: 1,
            source: super::common::shown(&a.src),
            source_format: vec![format.name()],
            output: a.dest.display().to_string(),
            format: "cd-tracks",
            audio: match audio {
                AudioFormat::Wav => "wav",
                AudioFormat::Raw => "raw",
            },
            tracks: written
                .iter()
                .map(|w| TrackOut {
                    number: w.number,
                    mode: w.mode.name(),
                    path: w.path.display().to_string(),
                    sectors: w.sectors,
                    bytes: w.bytes,
                    form2_sectors: w.form2_sectors,
                })
                .collect(),
            seconds,
        };
        super::common::print_json(&s)?;
    } else {
        eprintln!(
            "blockwise: wrote the {} track(s) of {}",
            written.len(),
            super::common::shown(&a.src)
        );
        for w in &written {
            eprintln!(
                "  track {:02} {:<10} {:>8} sectors  {}",
                w.number,
                w.mode.name(),
                w.sectors,
                w.path.display()
            );
            if w.form2_sectors > 0 {
                eprintln!(
                    "           {} form 2 sectors: their first 2048 bytes only, as bchunk writes them",
                    w.form2_sectors
                );
            }
        }
    }
    Ok(exit::OK)
}
