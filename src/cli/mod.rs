//! Command-line front end: one module per command; human or JSON output on stdout,
//! diagnostics on stderr; exit codes per `spec/exit-codes.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod inspect;

/// Exit codes (see spec/exit-codes.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed (I/O error, unreadable or corrupt input).
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
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
  blockwise inspect /dev/sdb --json   Machine-readable report of a card in a reader"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        Command::Demo { dir, keep } => demo::run(dir, keep),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("blockwise: error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
