//! What every command shares: exit codes ([`exit`]), [`Explained`] failures and their
//! [`chain`] on one line, the [`one_pass`] retry of a single-pass read, the [`progress_bar`],
//! and [`MapFrom`].
//!
//! Apart from the cli façade (`cli/mod.rs`, which parses the command line and calls each
//! command's module) so that the commands take these from here and they and the façade never
//! import each other.

use std::sync::OnceLock;

use blockwise::format::OpenOptions;
use blockwise::io::remote::RemoteOptions;

/// How images given as URLs are read: set once from the global options.
static REMOTE: OnceLock<RemoteOptions> = OnceLock::new();

/// Sets how images given as URLs are read (the global `--endpoint`, `--fetch-*` options).
pub(super) fn set_remote(r: RemoteOptions) {
    let _ = REMOTE.set(r);
}

/// The S3-compatible server given by `--endpoint` (the environment's otherwise).
pub(super) fn endpoint() -> Option<String> {
    REMOTE.get().and_then(|r| r.endpoint.clone())
}

/// Options to open an image with, learning a stream's end at open (what `inspect` needs).
pub(super) fn open_options() -> OpenOptions {
    OpenOptions::default().with_remote(REMOTE.get().cloned().unwrap_or_default())
}

/// Options to open an image read once, in order ([`OpenOptions::deferred`]).
pub(super) fn deferred_options() -> OpenOptions {
    OpenOptions::deferred().with_remote(REMOTE.get().cloned().unwrap_or_default())
}

/// An image's name fit to print: a URL with its query string redacted (a presigned URL's
/// signature is a secret), a path as it is.
pub(super) fn shown(path: &std::path::Path) -> String {
    match path
        .to_str()
        .and_then(blockwise::io::remote::Location::parse)
    {
        Some(Ok(loc)) => loc.shown(),
        Some(Err(_)) | None => path.display().to_string(),
    }
}

/// The bmap found beside `image` (a file, or an object next to a URL) where bmaptool would
/// look for it: its name as shown, and its bytes. `Ok(None)` when there is none.
pub(super) fn find_sidecar(
    image: &std::path::Path,
) -> anyhow::Result<Option<(std::path::PathBuf, Vec<u8>)>> {
    use anyhow::Context as _;
    if let Some(loc) = image
        .to_str()
        .and_then(blockwise::io::remote::Location::parse)
    {
        let loc = loc?;
        let opts = REMOTE.get().cloned().unwrap_or_default();
        for c in blockwise::io::remote::sidecar_candidates(&loc) {
            // A bmap is a few KiB per GiB of image; 64 MiB is far beyond any real one.
            if let Some(data) = blockwise::io::remote::fetch_small(&c, &opts, 64 << 20)
                .with_context(|| format!("looking for a bmap at {}", c.shown()))?
            {
                return Ok(Some((std::path::PathBuf::from(c.shown()), data)));
            }
        }
        return Ok(None);
    }
    for p in blockwise::bmap::sidecar_candidates(image) {
        if p.is_file() {
            let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            return Ok(Some((p, data)));
        }
    }
    Ok(None)
}

/// The names [`find_sidecar`] tries for `image`, for a message.
pub(super) fn sidecar_tried(image: &std::path::Path) -> String {
    let names: Vec<String> = match image
        .to_str()
        .and_then(blockwise::io::remote::Location::parse)
    {
        Some(Ok(loc)) => blockwise::io::remote::sidecar_candidates(&loc)
            .iter()
            .map(|l| l.shown())
            .collect(),
        _ => blockwise::bmap::sidecar_candidates(image)
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    };
    names.join(", ")
}

/// The name to give a bmap of `image` written here (`-o`), as the user can publish it
/// beside the image: for a URL, its file name.
pub(super) fn sidecar_name(image: &std::path::Path) -> String {
    match image
        .to_str()
        .and_then(blockwise::io::remote::Location::parse)
    {
        Some(Ok(loc)) => format!("{}.bmap", loc.file_name()),
        _ => format!("{}.bmap", image.display()),
    }
}

/// `--fetch-block`: a size in bytes with an optional K/M suffix, a power of two from 64 KiB
/// to 64 MiB.
pub(super) fn parse_fetch_block(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1M, 4M, 262144)"))?;
    let v = n.checked_mul(mult).ok_or("too large")?;
    if !(64 << 10..=64 << 20).contains(&v) || !v.is_power_of_two() {
        return Err(format!("{s}: a power of two from 64K to 64M"));
    }
    Ok(v)
}

/// Exit codes (see spec/exit-codes.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed (I/O error, unreadable or corrupt input).
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// Verification found data that does not match.
    pub const MISMATCH: u8 = 3;
    /// Refused for safety before writing anything (source mounted read-write, output exists).
    pub const REFUSED: u8 = 4;
    /// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;

    /// The exit code a library error stands for.
    pub fn of(e: &blockwise::Error) -> u8 {
        match e {
            blockwise::Error::Refused { .. } => REFUSED,
            blockwise::Error::Interrupted => INTERRUPTED,
            blockwise::Error::Mismatch { .. } => MISMATCH,
            _ => FAILURE,
        }
    }

    /// The exit code of a command's error: that of the first library error or explained
    /// failure in its chain, else [`FAILURE`].
    pub fn of_chain(e: &anyhow::Error) -> u8 {
        e.chain()
            .find_map(|c| {
                c.downcast_ref::<crate::cli::common::Explained>()
                    .map(|x| x.code)
                    .or_else(|| c.downcast_ref::<blockwise::Error>().map(of))
            })
            .unwrap_or(FAILURE)
    }
}

/// A failure a command has put in its own words (what happened and what state the outputs are
/// in), keeping the exit code of the library error it came from.
#[derive(Debug)]
pub(super) struct Explained {
    pub(super) message: String,
    pub(super) code: u8,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Explained {}

/// Runs a command that reads the image once, in order (backup, bmap): first with the image
/// opened to learn a stream's end while reading it ([`OpenOptions::deferred`]: one decode
/// instead of one to size the stream and one to read it), and once more, opened to learn the
/// end first, if that pass found its plan wrong ([`blockwise::Error::Replan`]: the stream
/// ends elsewhere than its headers suggested, or holds a container). Nothing was committed by
/// the first attempt.
pub(super) fn one_pass<T>(
    image: &std::path::Path,
    mut attempt: impl FnMut(&OpenOptions) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match attempt(&deferred_options()) {
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<blockwise::Error>()) {
            Some(blockwise::Error::Replan { reason, .. }) => {
                eprintln!(
                    "blockwise: note: {}: {reason}; reading it again, sized first",
                    shown(image)
                );
                attempt(&open_options())
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// Prints `v` as pretty JSON and a newline on stdout: every command's `--json` output.
pub(super) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// An error and its causes on one line, each said once (`anyhow`'s `{:#}`).
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    blockwise::error::chain(e)
}

/// A progress bar over `total` mapped bytes on stderr, labelled `what` ("hashing"); `None`
/// when stderr is not a terminal or `quiet` (JSON output, nothing to show).
pub(super) fn progress_bar(what: &str, total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} mapped, \
             {{binary_bytes_per_sec}}, ETA {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(b)
}

/// One bar per target (named by `labels`), each of `total` bytes, on stderr when it is a
/// terminal and `quiet` is off: what each card has written, then read back.
pub(super) fn target_bars(
    labels: &[String],
    total: u64,
    quiet: bool,
) -> Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)> {
    use std::io::IsTerminal as _;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {{prefix:{width}}} {{msg:9}} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}}, \
         {{binary_bytes_per_sec}}, ETA {{eta}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let multi = indicatif::MultiProgress::new();
    let bars = labels
        .iter()
        .map(|l| {
            let b = multi.add(indicatif::ProgressBar::new(total));
            b.set_style(style.clone());
            b.set_prefix(l.clone());
            b.set_message("writing");
            b
        })
        .collect();
    Some((multi, bars))
}

/// Source of a block map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MapFrom {
    /// The filesystems' own allocation maps (and the partition layout).
    Fs,
    /// The image file's holes (SEEK_DATA/SEEK_HOLE), as `bmaptool create` maps.
    Holes,
}
