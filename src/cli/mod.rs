//! Command-line front end: one module per command; human or JSON output on stdout,
//! diagnostics on stderr; exit codes per `spec/exit-codes.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use blockwise::format::OpenOptions;
use clap::{Parser, Subcommand};

mod backup;
mod bmap;
mod demo;
mod inspect;
mod verify;

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
            _ => FAILURE,
        }
    }

    /// The exit code of a command's error: that of the first library error or explained
    /// failure in its chain, else [`FAILURE`].
    pub fn of_chain(e: &anyhow::Error) -> u8 {
        e.chain()
            .find_map(|c| {
                c.downcast_ref::<super::Explained>()
                    .map(|x| x.code)
                    .or_else(|| c.downcast_ref::<blockwise::Error>().map(of))
            })
            .unwrap_or(FAILURE)
    }
}

/// A failure a command has put in its own words (what happened and what state the outputs are
/// in), keeping the exit code of the library error it came from.
#[derive(Debug)]
struct Explained {
    message: String,
    code: u8,
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
fn one_pass<T>(
    image: &std::path::Path,
    mut attempt: impl FnMut(&OpenOptions) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match attempt(&OpenOptions::deferred()) {
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<blockwise::Error>()) {
            Some(blockwise::Error::Replan { reason, .. }) => {
                eprintln!(
                    "blockwise: note: {}: {reason}; reading it again, sized first",
                    image.display()
                );
                attempt(&OpenOptions::default())
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// An error and its causes on one line, each said once (`anyhow`'s `{:#}`).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    blockwise::error::chain(e)
}

/// A progress bar over `total` mapped bytes on stderr, labelled `what` ("hashing"); `None`
/// when stderr is not a terminal or `quiet` (JSON output, nothing to show).
fn progress_bar(what: &str, total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
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

const HELP_TEMPLATE: &str = "\
{before-help}{name} {version}
{about-with-newline}
{usage-heading} {usage}

{all-args}{after-help}";

/// Disk images, understood: inspect, bmap, back up and flash only the blocks that matter.
#[derive(Parser, Debug)]
#[command(
    name = "blockwise",
    version,
    help_template = HELP_TEMPLATE,
    after_help = "\
Examples:
  blockwise demo                      Unpack the bundled sample card image and inspect it
  blockwise inspect raspios.img.xz    What is inside (decodes xz/gz/zst/bz2/lz4/zip on the fly)
  blockwise inspect /dev/sdb --json   Machine-readable report of a card in a reader
  blockwise backup /dev/sdb pi.img.zst  Back up only the used blocks (zstd -d restores it)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Source of a block map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MapFrom {
    /// The filesystems' own allocation maps (and the partition layout).
    Fs,
    /// The image file's holes (SEEK_DATA/SEEK_HOLE), as `bmaptool create` maps.
    Holes,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Tell what an image really is: compression, container, partition table, filesystems,
    /// boot facts and warnings.
    #[command(after_help = "\
Examples:
  blockwise inspect card.img
  blockwise inspect ubuntu.iso                 isohybrid? El Torito BIOS/UEFI entries?
  blockwise inspect backup.img.xz --json | jq '.partitions[].filesystem.fs_type'
  blockwise inspect /dev/mmcblk0               a block device (read-only)

The format is recognised from the bytes, never from the file name.
Exit status: 0 on success (even with warnings), 1 if the image cannot be read.")]
    Inspect {
        /// Image file or block device.
        image: PathBuf,
        /// Print the report as JSON (schema: spec/json-output.md).
        #[arg(long)]
        json: bool,
    },
    /// Write a .bmap (bmaptool format 2.0) listing the blocks that matter, from the
    /// filesystems' own allocation maps.
    #[command(after_help = "\
Examples:
  blockwise bmap card.img -o card.img.bmap        bmaptool copy accepts it as is
  blockwise bmap raspios.img.xz -o raspios.img.xz.bmap
  blockwise bmap sparse.img --from holes          bmaptool's own hole-based map, for comparison

Blocks are left out only if the filesystem that owns them says they are free, or they lie
past the last partition; bootloader gaps, partition tables and unknown partitions are kept.
Progress and a summary go to stderr; the bmap goes to stdout unless -o is given.")]
    Bmap {
        /// Image file or block device.
        image: PathBuf,
        /// Write the bmap here (atomically) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Block size of the map in bytes.
        #[arg(long, default_value_t = 4096)]
        block_size: u64,
        /// Leave out the SHA-256 range checksums (faster; nothing to verify against).
        #[arg(long)]
        no_checksum: bool,
        /// Where the map comes from: the filesystems' allocation maps, or the file's holes
        /// (bmaptool's behaviour).
        #[arg(long, value_enum, default_value_t = MapFrom::Fs)]
        from: MapFrom,
    },
    /// Check an image, or a device it was written to, against a bmap's range checksums.
    #[command(after_help = "\
Examples:
  blockwise verify card.img                       finds card.img.bmap (or card.bmap) beside it
  blockwise verify /dev/sdb --bmap card.img.bmap  check what was flashed

Exit status: 0 when every range matches, 3 on a mismatch, 1 if something cannot be read.")]
    Verify {
        /// Image file or block device.
        image: PathBuf,
        /// The bmap (default: IMG.bmap, then IMG with one extension stripped at a time).
        #[arg(long)]
        bmap: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up a card, disk or image: only the blocks that matter, compressed, with a bmap.
    #[command(after_help = "\
Examples:
  blockwise backup /dev/mmcblk0 pi.img.zst        seekable zstd (default); `zstd -d` restores it
  blockwise backup /dev/sdb pi.img.xz --level 9   multi-block xz; `xz -d` restores it
  blockwise backup card.img card.simg             Android sparse; `simg2img` restores it
  blockwise backup card.img small.img             sparse raw file, free space as holes
  blockwise backup /dev/sdb pi.img.zst --truncate end the image at the last partition

Only blocks the filesystems use are read and stored; free blocks become zeros (deleted data
never leaks into the archive). Bootloader gaps, partition tables and partitions blockwise
cannot read are stored whole. DEST.bmap is written beside the archive (bmaptool finds it),
with SHA-256 of every mapped range. The archive appears under DEST only once complete.
The format follows DEST's extension (.zst, .xz, .simg, .img), else --format, else zst.
Exit status: 0 on success, 1 on failure, 4 if refused for safety (DEST exists without --force,
SRC mounted read-write), 130 if interrupted (nothing left under DEST).")]
    Backup {
        /// Block device or image file to back up (any format inspect reads).
        src: PathBuf,
        /// Archive to write; DEST.bmap is written beside it.
        dest: PathBuf,
        /// Output format (default: from DEST's extension, else zst).
        #[arg(long, value_enum)]
        format: Option<backup::FormatArg>,
        /// Compression level (zstd 1-22, default 3; xz 0-9, default 6).
        #[arg(long, allow_negative_numbers = true)]
        level: Option<i32>,
        /// Decoding and compression threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// End the image at the last partition (rewrites a GPT's backup header there).
        #[arg(long)]
        truncate: bool,
        /// Replace DEST (and DEST.bmap) if they exist.
        #[arg(long)]
        force: bool,
        /// Back up a device even though a partition of it is mounted read-write.
        #[arg(long)]
        allow_mounted: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Unpack the small real SD-card image bundled with blockwise into a temporary directory
    /// and run the commands on it, showing what blockwise sees.
    #[command(after_help = "\
Examples:
  blockwise demo
  blockwise demo --keep --dir /tmp/bw-demo     keep the unpacked files")]
    Demo {
        /// Directory to unpack into (default: a fresh temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the unpacked files afterwards.
        #[arg(long)]
        keep: bool,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Inspect { image, json } => inspect::run(&image, json),
        Command::Bmap {
            image,
            output,
            block_size,
            no_checksum,
            from,
        } => bmap::run(bmap::Args {
            image,
            output,
            block_size,
            no_checksum,
            from,
        }),
        Command::Verify { image, bmap, json } => verify::run(image, bmap, json),
        Command::Backup {
            src,
            dest,
            format,
            level,
            threads,
            truncate,
            force,
            allow_mounted,
            json,
        } => backup::run(backup::Args {
            src,
            dest,
            format,
            level,
            threads,
            truncate,
            force,
            allow_mounted,
            json,
        }),
        Command::Demo { dir, keep } => demo::run(dir, keep),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // `blockwise inspect --json x | head` closing the pipe is not an error worth a message.
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| {
                        c.downcast_ref::<serde_json::Error>()
                            .and_then(|j| j.io_error_kind())
                    });
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("blockwise: error: {e:#}");
            ExitCode::from(exit::of_chain(&e))
        }
    }
}
