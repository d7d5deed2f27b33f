//! `blockwise bmap`: write a bmaptool-compatible block map from the filesystems' own
//! allocation maps (or, for interop, from the file's holes as bmaptool does).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use blockwise::bmap::{self, BmapWriteOptions};
use blockwise::format::Format;
use blockwise::format::OpenOptions;
use blockwise::scan::open_and_scan;
use blockwise::util::human_bytes;

use super::common::{exit, MapFrom};

pub struct Args {
    pub image: PathBuf,
    pub output: Option<PathBuf>,
    pub block_size: u64,
    pub no_checksum: bool,
    pub from: MapFrom,
    pub rules: blockwise::map::MapRules,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if a.block_size == 0 || !a.block_size.is_power_of_two() || a.block_size < 512 {
        bail!(
            "--block-size must be a power of two of at least 512 (got {})",
            a.block_size
        );
    }
    let t0 = Instant::now();
    if a.no_checksum {
        // Nothing is read after the scan, so the image is sized while opening.
        return attempt(&a, &super::common::open_options(), t0);
    }
    super::common::one_pass(&a.image, |open| attempt(&a, open, t0))
}

fn attempt(a: &Args, open: &OpenOptions, t0: Instant) -> anyhow::Result<u8> {
    let (opened, scan) = open_and_scan(&a.image, open)
        .with_context(|| format!("cannot read {}", super::common::shown(&a.image)))?;
    scan.still_fits(&*opened.source)?;
    let image_map = blockwise::map::image_map_with(&scan, a.rules);
    if !scan.decoded {
        bail!(
            "{}: {} contents are not decoded by this version; convert it to a raw image first",
            super::common::shown(&a.image),
            opened.payload_format().name()
        );
    }
    // A container bmaptool copies as it is (qcow2, VHD, VMDK, Android sparse, raw CD
    // sectors): the bmap describes the disk inside it, which `blockwise convert` writes as a
    // raw image and `blockwise flash --bmap` writes from the container itself. A name bmaptool
    // would take as the container's own sidecar is refused: bmaptool would write the
    // container's bytes under this bmap's ranges.
    let container = opened
        .chain
        .iter()
        .find(|l| !bmaptool_reads_through(l.format))
        .map(|l| l.format);
    if let (Some(f), Some(out)) = (container, &a.output) {
        if is_sidecar_of(out, &a.image) {
            return Err(anyhow::Error::new(super::common::Explained {
                message: format!(
                    "{}: bmaptool would take {} as the bmap of {} and write the {} file as it \
                     is, not the disk this bmap describes; name it after the raw image \
                     instead (`blockwise convert {} DISK.img` writes it; then DISK.img.bmap)",
                    super::common::shown(&a.image),
                    out.display(),
                    super::common::shown(&a.image),
                    f.name(),
                    super::common::shown(&a.image)
                ),
                code: exit::REFUSED,
            }));
        }
    }
    let src = opened.source.clone();
    let map = match a.from {
        MapFrom::Fs => image_map
            .as_ref()
            .map(|u| u.used.clone())
            .context("no usage map")?,
        MapFrom::Holes => holes_map(&a.image, &opened)?,
    };
    for w in &blockwise::report::warnings(&opened, &scan, image_map.as_ref()) {
        eprintln!("blockwise: warning: {w}");
    }
    if let Some(f) = container {
        eprintln!(
            "blockwise: note: this bmap describes the disk inside {} (the raw image `blockwise \
             convert {} DISK.img` writes), not the {} file: use it with that image, or with \
             `blockwise flash {} --bmap FILE`",
            super::common::shown(&a.image),
            super::common::shown(&a.image),
            f.name(),
            super::common::shown(&a.image)
        );
    }
    let opts = BmapWriteOptions {
        block_size: a.block_size,
    };
    let bar = super::common::progress_bar("hashing", map.total(), a.no_checksum);
    let on_progress = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    };
    let text = bmap::generate_with_progress(&*src, &map, !a.no_checksum, &opts, &on_progress)
        .with_context(|| format!("reading {}", super::common::shown(&a.image)))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let parsed = bmap::parse(&text).context("internal error: generated bmap does not parse")?;
    match &a.output {
        Some(out) => blockwise::io::atomic::write_atomic(out, &text)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => std::io::stdout().lock().write_all(&text)?,
    }
    let size = parsed.image_size;
    let mapped = parsed
        .mapped_blocks
        .saturating_mul(parsed.block_size)
        .min(size);
    eprintln!(
        "blockwise: mapped {} of {} ({:.1}%) in {} ranges, {} block size, {:.2}s{}",
        human_bytes(mapped),
        human_bytes(size),
        if size > 0 {
            mapped as f64 * 100.0 / size as f64
        } else {
            0.0
        },
        parsed.ranges.len(),
        parsed.block_size,
        t0.elapsed().as_secs_f64(),
        a.output
            .as_ref()
            .map(|o| format!(", written to {}", o.display()))
            .unwrap_or_default()
    );
    Ok(exit::OK)
}

/// True if bmaptool, given `image`, would find `out` as its bmap (`IMG.bmap`, then `IMG` with
/// one extension after another stripped, in the same directory).
fn is_sidecar_of(out: &Path, image: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
    };
    let Some(out) = canon(out) else {
        return false;
    };
    bmap::sidecar_candidates(image)
        .iter()
        .any(|c| canon(c).as_ref() == Some(&out))
}

/// Layers bmaptool itself decodes (or that are the image as it is), so a bmap of the decoded
/// image applies to the file.
fn bmaptool_reads_through(f: Format) -> bool {
    f.is_compression() || matches!(f, Format::Zip | Format::Raw | Format::Iso9660)
}

fn holes_map(
    path: &Path,
    opened: &blockwise::format::Opened,
) -> anyhow::Result<blockwise::ExtentMap> {
    if opened.is_block_device || opened.chain.len() != 1 || opened.payload_format() != Format::Raw {
        bail!(
            "--from holes maps the holes of a sparse raw file, as bmaptool does; {} is {}",
            path.display(),
            if opened.is_block_device {
                "a block device".to_string()
            } else {
                format!("a {} file", opened.chain[0].format.name())
            }
        );
    }
    let f = std::fs::File::open(path)?;
    Ok(bmap::file_data_ranges(&f)?)
}
