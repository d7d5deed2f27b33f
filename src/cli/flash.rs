//! `blockwise flash`: write an image's mapped blocks to cards or files, verified, head last,
//! after the safety checks of `drives` refuse every disk that must not be written.

use std::io::IsTerminal as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use blockwise::bmap::{self, Bmap};
use blockwise::drives::{self, Check, Drive, SysRoot};
use blockwise::flash::{self, FlashOptions, FlashPlan, FlashTarget, Identity, Stage, Target};
use blockwise::format::{self, OpenOptions};
use blockwise::util::human_bytes;
use blockwise::ExtentMap;

use super::common::{exit, Explained};

pub struct Args {
    pub image: PathBuf,
    pub targets: Vec<PathBuf>,
    pub bmap: Option<PathBuf>,
    pub no_bmap: bool,
    pub no_verify: bool,
    pub discard: bool,
    pub delta: bool,
    pub yes: bool,
    pub force: bool,
    pub gpt_to_end: bool,
    pub check_capacity: bool,
    pub one_pass: bool,
    pub json: bool,
    pub rules: blockwise::map::MapRules,
}

/// Where the map of blocks to write came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum MapSource {
    /// A bmap file (`--bmap`, or found beside the image).
    Bmap,
    /// The image's own partition table and filesystems.
    Scan,
    /// Every byte (`--no-bmap`).
    Everything,
    /// A stream without a bmap: decided block by block as it went by.
    Stream,
}

/// A target as checked, before it is opened.
struct Checked {
    path: PathBuf,
    /// The disk, for a block device.
    drive: Option<Drive>,
    pin: Option<Identity>,
}

/// The `--json` summary (spec/json-output.md, "flash").
#[derive(serde::Serialize)]
struct Summary {
    schema_version: u32,
    image: String,
    bmap: Option<String>,
    map_source: MapSource,
    image_size: u64,
    mapped_bytes: u64,
    stream_skipped: u64,
    stream_notes: Vec<String>,
    bytes_read: u64,
    seconds: f64,
    ok: bool,
    checksum_file: Option<SumSummary>,
    targets: Vec<TargetSummary>,
    warnings: Vec<String>,
    notes: Vec<String>,
    /// For an image read from a URL: what was downloaded of it.
    remote: Option<blockwise::report::RemoteReport>,
}

#[derive(serde::Serialize)]
struct SumSummary {
    file: String,
    ok: bool,
}

#[derive(serde::Serialize)]
struct TargetSummary {
    path: String,
    kind: flash::TargetKind,
    size: u64,
    ok: bool,
    #[serde(flatten)]
    report: flash::TargetReport,
    partitions_reread: Option<bool>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if a.bmap.is_some() && a.no_bmap {
        bail!("--bmap and --no-bmap exclude each other");
    }
    let cancel = blockwise::io::sys::catch_interrupts();
    let bmap = choose_bmap(&a)?;
    let mut confirmed = false;
    super::common::one_pass(&a.image, |opts| {
        // A second attempt (the stream was not what its headers said) follows one that
        // zeroed the targets' heads and wrote to them: a failure now must say so.
        let again = confirmed;
        attempt(&a, bmap.as_ref(), opts, &mut confirmed, cancel).map_err(|e| {
            let explained = e.chain().any(|c| c.downcast_ref::<Explained>().is_some());
            if again && !explained {
                e.context(
                    "the targets were partly written by the first attempt and their first MiB \
                     is zeroed (no partition table); flash them again",
                )
            } else {
                e
            }
        })
    })
}

/// The bmap to follow: `--bmap`, else the first sidecar found beside the image (as bmaptool
/// looks for one), else none. A bmap whose own checksum fails is an error, not a fallback.
fn choose_bmap(a: &Args) -> anyhow::Result<Option<(PathBuf, Bmap)>> {
    if a.no_bmap {
        return Ok(None);
    }
    let (path, data) = match &a.bmap {
        Some(p) => (
            p.clone(),
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => match super::common::find_sidecar(&a.image)? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let b =
        bmap::parse(&data).with_context(|| format!("{} is not a usable bmap", path.display()))?;
    Ok(Some((path, b)))
}

/// Whether every target is at least `image_size` bytes (a file target grows to it): a
/// stream can then be flashed before its map is known.
fn fits_whole(a: &Args, image_size: u64) -> bool {
    a.targets.iter().all(|p| match std::fs::metadata(p) {
        Ok(m) if m.file_type().is_block_device() => {
            Target::identify(p).is_ok_and(|id| id.size >= image_size)
        }
        _ => true,
    })
}

/// The scan of a second decoder of a stream, on its own thread, beside the flash of the
/// stream (see `flash::ScanHints`). Dropped, it is stopped and waited for.
struct ScanBeside {
    hints: std::sync::Arc<flash::ScanHints>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ScanBeside {
    /// Opens `image` again and starts scanning it; what it finds goes to `hints`, its
    /// warnings to [`end`](Self::end).
    fn start(image: &Path, open: &OpenOptions, rules: blockwise::map::MapRules) -> ScanBeside {
        let hints = flash::ScanHints::new();
        let (h, image, open) = (hints.clone(), image.to_path_buf(), open.clone());
        let thread = std::thread::Builder::new()
            .name("scan beside".into())
            .spawn(move || {
                // A scan that panics still ends: the flash waiting on it writes everything.
                struct Ended(std::sync::Arc<flash::ScanHints>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.finish(Err("the scan stopped without a map".into()));
                    }
                }
                let _ended = Ended(h.clone());
                let mut warnings = Vec::new();
                let map = (|| -> anyhow::Result<ExtentMap> {
                    let opened = format::open(&image, &open)?;
                    let src = h.watch(opened.source.clone());
                    let scan =
                        blockwise::scan::scan_source(src.clone(), opened.device_sector_size)?;
                    scan.still_fits(&*src)?;
                    let m = blockwise::map::image_map_with(&scan, rules).context("no usage map")?;
                    warnings = blockwise::report::warnings(&opened, &scan, Some(&m));
                    Ok(m.used)
                })();
                h.finish(map.map_err(|e| format!("{e:#}")));
                warnings
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // No thread: nothing is known free, and everything is written.
                hints.finish(Err(format!("the scan could not be started ({e})")));
                None
            }
        };
        ScanBeside { hints, thread }
    }

    /// Stops the scan if it still runs, and returns its warnings.
    fn end(mut self) -> Vec<String> {
        self.stop()
    }

    fn stop(&mut self) -> Vec<String> {
        self.hints.stop();
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ScanBeside {
    fn drop(&mut self) {
        self.stop();
    }
}

fn refuse(reason: String) -> anyhow::Error {
    anyhow::Error::new(blockwise::Error::Refused { reason })
}

fn attempt(
    a: &Args,
    bmap: Option<&(PathBuf, Bmap)>,
    open: &OpenOptions,
    confirmed: &mut bool,
    cancel: &'static AtomicBool,
) -> anyhow::Result<u8> {
    let started = Instant::now();
    let opened = format::open(&a.image, open)
        .with_context(|| format!("cannot open {}", super::common::shown(&a.image)))?;
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut layout = None;
    let mut beside: Option<ScanBeside> = None;
    let (map, image_size, block, source) = match bmap {
        Some((path, b)) => {
            opened.source.refine_size_hint(b.image_size);
            let size = opened.source.size();
            if opened.source.caps().size == blockwise::io::SizeKnown::Exact && size != b.image_size
            {
                bail!(
                    "{} describes an image of {} bytes, but {} holds {size}: the wrong bmap",
                    path.display(),
                    b.image_size,
                    super::common::shown(&a.image)
                );
            }
            notes.push(format!("following {}", path.display()));
            (b.extent_map(), b.image_size, b.block_size, MapSource::Bmap)
        }
        None if a.no_bmap => {
            let size = opened.source.size();
            (
                ExtentMap::single(0, size),
                size,
                4096,
                MapSource::Everything,
            )
        }
        // `--one-pass`: a stream is read once, its map learned as it goes by. So is a stream
        // from a URL: a scan beside it would download it a second time.
        None if (a.one_pass || opened.remote.is_some()) && !opened.random_access() => {
            if !a.one_pass {
                notes.push(
                    "a stream from a URL is downloaded and decoded once: its map is learned as \
                     it goes by (as with --one-pass)"
                        .into(),
                );
            }
            let size = opened.source.size();
            (ExtentMap::single(0, size), size, 4096, MapSource::Stream)
        }
        // A stream is flashed as it is decoded, beside a scan of a second decoder that maps
        // it meanwhile (`flash::ScanHints`), unless the map is needed before the first write:
        // to move a GPT, or to see whether a target smaller than the image still holds every
        // mapped byte.
        None if !opened.random_access()
            && !a.gpt_to_end
            && fits_whole(a, {
                blockwise::scan::size_from_head(&*opened.source, opened.device_sector_size)
                    .with_context(|| format!("cannot read {}", super::common::shown(&a.image)))?;
                opened.source.size()
            }) =>
        {
            let size = opened.source.size();
            beside = Some(ScanBeside::start(&a.image, open, a.rules));
            (ExtentMap::single(0, size), size, 4096, MapSource::Scan)
        }
        None => {
            let scan = blockwise::scan::scan(&opened)
                .with_context(|| format!("cannot read {}", super::common::shown(&a.image)))?;
            scan.still_fits(&*opened.source)?;
            if !scan.decoded {
                bail!(
                    "{}: {} contents are not decoded by this version; convert it to a raw \
                     image first",
                    super::common::shown(&a.image),
                    opened.payload_format().name()
                );
            }
            let m = blockwise::map::image_map_with(&scan, a.rules)
                .context("internal error: no usage map")?;
            warnings = blockwise::report::warnings(&opened, &scan, Some(&m));
            layout = Some(scan.layout.clone());
            (m.used, m.image_size, 4096, MapSource::Scan)
        }
    };
    // A target must hold the last byte written (the head is written whole).
    let needed = map.end().max(flash::HEAD.min(image_size));

    let checked = check_targets(a, needed)?;
    if !*confirmed {
        confirm(a, &checked, image_size, map.total())?;
        *confirmed = true;
    }
    let mut targets = Vec::with_capacity(checked.len());
    for c in &checked {
        let t = Target::open(&c.path, image_size, c.pin.as_ref())
            .with_context(|| format!("cannot open {} for writing", c.path.display()))?;
        if let Some(d) = &c.drive {
            still_the_same(d, &c.path)?;
        }
        targets.push(t);
    }
    if a.check_capacity {
        for t in targets.iter_mut() {
            if t.kind() != flash::TargetKind::Device {
                continue;
            }
            let size = t.size();
            let c = flash::check_capacity(t, size, 4096)
                .with_context(|| format!("--check-capacity: {}", t.path().display()))?;
            if !c.ok {
                return Err(refuse(format!(
                    "{}: {c}; nothing was written (the probed blocks were put back)",
                    t.path().display()
                )));
            }
            notes.push(format!(
                "{}: capacity checked ({} probes up to {}): {c}",
                t.path().display(),
                c.probes,
                human_bytes(size)
            ));
        }
    }
    let smallest = targets.iter().map(Target::size).min().unwrap_or(0);
    let mut plan = if source == MapSource::Stream {
        FlashPlan::streaming(image_size, smallest)
    } else if let Some(b) = &beside {
        FlashPlan::streaming_beside(image_size, smallest, b.hints.clone())
    } else {
        FlashPlan::new(image_size, smallest, &map, block)
    };
    plan.rules = a.rules;
    if let Some((_, b)) = bmap {
        plan = plan.with_checks(b);
    }
    if a.gpt_to_end {
        let largest = targets.iter().map(Target::size).max().unwrap_or(0);
        if largest != smallest {
            return Err(refuse(
                "--gpt-to-end moves the backup GPT to one disk size, and these targets differ \
                 in size: flash them one at a time (nothing was written)"
                    .into(),
            ));
        }
        if smallest > image_size {
            let moved = match &layout {
                Some(l) => flash::gpt_to_end_with(&*opened.source, l, smallest),
                None => flash::gpt_to_end(&*opened.source, smallest),
            }?;
            plan.patches = moved.patches;
            notes.extend(moved.notes);
        } else {
            notes.push("--gpt-to-end: the targets are the image's size; nothing to move".into());
        }
    }
    // A checksum file beside the image vouches for it: checked while the flash runs, before
    // any head is written.
    let vouch = flash::find_sum(&a.image).with_context(|| {
        format!(
            "looking for a checksum file of {}",
            super::common::shown(&a.image)
        )
    })?;
    let mut sum_check = vouch.map(|v| flash::SumCheck::start(&a.image, v));
    let mut sum_outcome = None;
    let opts = FlashOptions {
        verify: !a.no_verify,
        delta: a.delta,
        discard: a.discard,
    };
    let result = {
        let labels: Vec<String> = targets
            .iter()
            .map(|t| t.path().display().to_string())
            .collect();
        let bars = super::common::target_bars(&labels, plan.mapped(), a.json);
        let verifying: Vec<AtomicBool> = targets.iter().map(|_| AtomicBool::new(false)).collect();
        let progress = |p: &flash::Progress| {
            let (Some((_, bars)), Some(i)) = (&bars, p.target) else {
                return;
            };
            let Some(b) = bars.get(i) else { return };
            if p.stage == Stage::Verify && !verifying[i].swap(true, Ordering::Relaxed) {
                b.set_message("verifying");
                b.set_length(p.total);
                b.reset_eta();
            }
            b.set_position(p.done);
        };
        let mut outs: Vec<&mut dyn FlashTarget> = targets
            .iter_mut()
            .map(|t| t as &mut dyn FlashTarget)
            .collect();
        let r = flash::run_checked(
            &*opened.source,
            &plan,
            &mut outs,
            &opts,
            &progress,
            Some(cancel),
            &mut || {
                let Some(check) = sum_check.take() else {
                    return Ok(());
                };
                let o = check.finish()?;
                let ok = o.ok;
                let text = o.to_string();
                sum_outcome = Some(o);
                if ok {
                    Ok(())
                } else {
                    Err(blockwise::Error::Mismatch {
                        offset: 0,
                        len: 0,
                        detail: text,
                    })
                }
            },
        );
        if let Some((multi, bars)) = &bars {
            for b in bars {
                b.finish_and_clear();
            }
            let _ = multi.clear();
        }
        r
    };
    // The scan beside the flash has ended (or is told to, on a failure): its warnings are
    // the image's, as a scan first would have said them.
    if let Some(b) = beside.take() {
        warnings.extend(b.end());
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(explain(e, &checked)),
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(o) = &sum_outcome {
        notes.push(o.to_string());
    }
    // What the stream said as it went by: in the JSON always, in words when it was little.
    let stream_notes = report.notes.clone();
    if source == MapSource::Stream && report.skipped < image_size / 2 {
        notes.extend(stream_notes.iter().cloned());
        notes.push(format!(
            "{} of the stream's {} was known free as it went by; for a full skip, flash with a \
             bmap (`blockwise bmap {} -o {}` writes one, to keep beside the image) or an \
             archive (`blockwise backup {} card.img.zst`)",
            human_bytes(report.skipped),
            human_bytes(image_size),
            super::common::shown(&a.image),
            super::common::sidecar_name(&a.image),
            super::common::shown(&a.image)
        ));
    }
    let remote = opened
        .remote
        .as_ref()
        .map(blockwise::report::RemoteReport::of);
    if let Some(r) = &remote {
        notes.push(format!(
            "downloaded {} of the {} object ({:.1}%) in {} request{}{}",
            human_bytes(r.downloaded_bytes),
            human_bytes(r.object_size),
            if r.object_size > 0 {
                r.downloaded_bytes as f64 * 100.0 / r.object_size as f64
            } else {
                0.0
            },
            r.requests,
            if r.requests == 1 { "" } else { "s" },
            if r.ranges {
                ""
            } else {
                " (the server takes no range requests: streamed)"
            }
        ));
    }
    let written_map = plan.mapped() - report.skipped;
    let mut summaries = Vec::new();
    for (t, r) in targets.iter().zip(&report.targets) {
        let reread = (t.kind() == flash::TargetKind::Device && r.error.is_none()).then(|| {
            match t.reread_partitions() {
                Ok(()) => true,
                // A device without partition support (a loop device attached without -P):
                // nothing to re-read.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
                Err(e) => {
                    notes.push(format!(
                        "{}: the kernel did not re-read its partition table ({e}); unplug and \
                         replug it to see the new partitions",
                        t.path().display()
                    ));
                    false
                }
            }
        });
        summaries.push(TargetSummary {
            path: t.path().display().to_string(),
            kind: t.kind(),
            size: t.size(),
            ok: r.error.is_none(),
            report: r.clone(),
            partitions_reread: reread,
        });
    }
    drop(targets);
    let ok = summaries.iter().all(|s| s.ok);
    let mismatch = report
        .targets
        .iter()
        .any(|r| r.error.as_ref().is_some_and(|e| e.mismatch));
    if a.json {
        let s = Summary {
            schema_version: 1,
            image: super::common::shown(&a.image),
            bmap: bmap.map(|(p, _)| p.display().to_string()),
            map_source: source,
            image_size,
            mapped_bytes: written_map,
            stream_skipped: report.skipped,
            stream_notes,
            bytes_read: report.bytes_read,
            seconds,
            ok,
            checksum_file: sum_outcome.as_ref().map(|o| SumSummary {
                file: o.file.display().to_string(),
                ok: o.ok,
            }),
            targets: summaries,
            warnings,
            notes,
            remote,
        };
        super::common::print_json(&s)?;
    } else {
        for w in &warnings {
            eprintln!("blockwise: warning: {w}");
        }
        for n in &notes {
            eprintln!("blockwise: note: {n}");
        }
        print_summary(a, written_map, source, image_size, seconds, &summaries);
    }
    Ok(if ok {
        exit::OK
    } else if mismatch {
        exit::MISMATCH
    } else {
        exit::FAILURE
    })
}

/// Checks every target before any is opened for writing; refuses (exit 4) with every reason
/// of every refused target.
fn check_targets(a: &Args, needed: u64) -> anyhow::Result<Vec<Checked>> {
    let mut out: Vec<Checked> = Vec::new();
    let mut refusals = Vec::new();
    let image_meta = std::fs::metadata(&a.image).ok();
    let mut seen: Vec<(u64, u64, u64)> = Vec::new();
    for path in &a.targets {
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
        };
        let same_as =
            |m: &std::fs::Metadata, o: &std::fs::Metadata| m.dev() == o.dev() && m.ino() == o.ino();
        if let Some(m) = &meta {
            let id = (m.dev(), m.ino(), m.rdev());
            if seen.contains(&id) {
                refusals.push(format!("{}: given twice", path.display()));
                continue;
            }
            seen.push(id);
        }
        match &meta {
            Some(m) if m.file_type().is_block_device() => {
                let pin = Target::identify(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let check = Check {
                    min_size: Some(needed),
                    image: Some(a.image.clone()),
                };
                match drives::find(&SysRoot::system(), path, &check) {
                    None => refusals.push(format!(
                        "{}: not a whole disk (a partition or a stacked device); flash writes \
                         whole disks",
                        path.display()
                    )),
                    Some(d) => {
                        let ok = d.verdict.offered() || (a.force && d.verdict.offered_with_force());
                        if ok {
                            out.push(Checked {
                                path: path.clone(),
                                drive: Some(d),
                                pin: Some(pin),
                            });
                        } else {
                            let why: Vec<String> =
                                d.verdict.reasons.iter().map(|r| r.to_string()).collect();
                            refusals.push(format!("{}: {}", path.display(), why.join("; ")));
                        }
                    }
                }
            }
            Some(m) if !m.is_file() => refusals.push(format!(
                "{}: neither a block device nor a regular file",
                path.display()
            )),
            _ => {
                if let (Some(m), Some(i)) = (&meta, &image_meta) {
                    if same_as(m, i) {
                        refusals.push(format!("{}: is the image itself", path.display()));
                        continue;
                    }
                }
                out.push(Checked {
                    path: path.clone(),
                    drive: None,
                    pin: None,
                });
            }
        }
    }
    if !refusals.is_empty() {
        return Err(refuse(format!(
            "refusing to flash (nothing was written):\n  {}",
            refusals.join("\n  ")
        )));
    }
    Ok(out)
}

/// Asks on the terminal before writing block devices, naming each and what it holds;
/// refuses when there is no terminal to ask on and no `--yes`.
fn confirm(a: &Args, checked: &[Checked], image_size: u64, mapped: u64) -> anyhow::Result<()> {
    let devices: Vec<&Checked> = checked.iter().filter(|c| c.drive.is_some()).collect();
    if devices.is_empty() || a.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(refuse(format!(
            "not asking to overwrite {} without a terminal: pass --yes to flash non-interactively \
             (nothing was written)",
            devices
                .iter()
                .map(|c| c.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    eprintln!(
        "blockwise: about to write {} ({} of {} mapped) to:",
        super::common::shown(&a.image),
        human_bytes(mapped),
        human_bytes(image_size)
    );
    for c in &devices {
        let Some(d) = &c.drive else { continue };
        let desc = d.description();
        eprintln!(
            "  {}  {}  {}  {}",
            d.path.display(),
            human_bytes(d.size),
            d.transport.name(),
            if desc.is_empty() { "-" } else { &desc }
        );
        for line in super::drives::contents(d) {
            eprintln!("      {line}");
        }
    }
    eprint!("Everything on them will be lost. Continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(refuse("not confirmed; nothing was written".into()))
    }
}

/// Refuses a device that is no longer the disk that was checked (another card in the
/// reader: same node, another serial or size).
fn still_the_same(was: &Drive, path: &Path) -> anyhow::Result<()> {
    let now = drives::find(&SysRoot::system(), path, &Check::default());
    let same = now.as_ref().is_some_and(|n| {
        n.name == was.name && n.size == was.size && n.serial == was.serial && n.wwid == was.wwid
    });
    if same {
        Ok(())
    } else {
        Err(refuse(format!(
            "{} changed since it was checked (another card?); nothing was written",
            path.display()
        )))
    }
}

/// Says what went wrong and what state the targets are in.
fn explain(e: blockwise::Error, checked: &[Checked]) -> anyhow::Error {
    let names = checked
        .iter()
        .map(|c| c.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let state = format!(
        "the targets ({names}) hold part of the image and their first MiB is zeroed (no \
         partition table): flash them again"
    );
    let code = exit::of(&e);
    let message = match &e {
        blockwise::Error::Replan { .. } => return e.into(),
        blockwise::Error::Interrupted => format!("interrupted; {state}"),
        blockwise::Error::Mismatch { .. } => format!("{e}; {state}"),
        blockwise::Error::Read { .. } => {
            format!("reading the image: {}; {state}", super::common::chain(&e))
        }
        _ => format!("{}; {state}", super::common::chain(&e)),
    };
    anyhow::Error::new(Explained { message, code })
}

fn print_summary(
    a: &Args,
    mapped: u64,
    source: MapSource,
    image_size: u64,
    seconds: f64,
    targets: &[TargetSummary],
) {
    let pct = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            n as f64 * 100.0 / d as f64
        }
    };
    let from = match source {
        MapSource::Bmap => "the bmap",
        MapSource::Scan => "the image's filesystems",
        MapSource::Everything => "--no-bmap: everything",
        MapSource::Stream => "what the stream said as it went by",
    };
    eprintln!(
        "blockwise: flashed {} ({}; {} mapped, {:.1}%, from {from}) in {seconds:.2}s",
        super::common::shown(&a.image),
        human_bytes(image_size),
        human_bytes(mapped),
        pct(mapped, image_size)
    );
    for t in targets {
        let r = &t.report;
        let mut parts = vec![format!("wrote {}", human_bytes(r.written))];
        parts.push(format!(
            "skipped {}",
            human_bytes(image_size.saturating_sub(mapped))
        ));
        if r.delta_read > 0 {
            parts.push(format!(
                "read {} to compare, {} already there",
                human_bytes(r.delta_read),
                human_bytes(r.unchanged)
            ));
        }
        if r.discarded > 0 {
            parts.push(format!("discarded {}", human_bytes(r.discarded)));
        }
        if r.verified > 0 {
            parts.push(format!("verified {}", human_bytes(r.verified)));
        }
        if r.rewritten > 0 {
            parts.push(format!(
                "rewrote {} that read back wrong",
                human_bytes(r.rewritten)
            ));
        }
        let rate = human_bytes((r.written as f64 / seconds.max(1e-9)) as u64);
        match &r.error {
            None => eprintln!("  {}  OK: {}; {rate}/s", t.path, parts.join(", ")),
            Some(e) => eprintln!(
                "  {}  FAILED ({e}): its first MiB is zeroed (no partition table); flash it \
                 again",
                t.path
            ),
        }
    }
}
