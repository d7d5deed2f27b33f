//! Command-line front end: one module per command; human or JSON output on stdout,
//! diagnostics on stderr; exit codes per `spec/exit-codes.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod bmap;
mod common;
mod convert;
mod demo;
mod drives;
mod flash;
mod inspect;
mod verify;

use common::{exit, MapFrom};

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
  blockwise backup /dev/sdb pi.img.zst  Back up only the used blocks (zstd -d restores it)
  blockwise flash pi.img.zst /dev/sdb Write only the used blocks to a card, verified
  blockwise convert card.img vm.qcow2 Any image to raw, .zst, .xz, .simg, qcow2, VHD or VHDX
  blockwise drives                    Which disks are safe targets (and, with --all, why not others)
  blockwise flash https://example.org/os.img.xz /dev/sdb   Fetch only the blocks that matter
  blockwise backup /dev/sdb s3://backups/pi.img.zst       Straight to a bucket (multipart upload)

Images may be given as http(s):// URLs or s3://bucket/key: read with range requests, only
what the command needs (credentials for s3:// from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or
~/.aws/credentials; none: anonymous)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// S3-compatible server for s3:// images and destinations (MinIO, Ceph, R2, ...);
    /// default: AWS_ENDPOINT_URL, else Amazon S3.
    #[arg(long, global = true, value_name = "URL")]
    endpoint: Option<String>,
    /// Size of one range request when reading an image from a URL (64K to 64M; the cache
    /// keeps such blocks).
    #[arg(long, global = true, value_name = "BYTES", default_value = "1M",
          value_parser = common::parse_fetch_block)]
    fetch_block: u64,
    /// Range requests in flight at once when reading an image from a URL.
    #[arg(long, global = true, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    fetch_parallel: u16,
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
        /// Keep every ext metadata block in use (whole inode tables, reserved descriptor
        /// copies, bitmaps of uninitialised groups), as partclone does.
        #[arg(long)]
        whole_metadata: bool,
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
        /// Keep every ext metadata block in use (whole inode tables, reserved descriptor
        /// copies, bitmaps of uninitialised groups), as partclone does.
        #[arg(long)]
        whole_metadata: bool,
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
  blockwise backup /dev/sdb s3://backups/pi.img.zst   to a bucket, with s3://backups/pi.img.zst.bmap

Only blocks the filesystems use are read and stored; free blocks become zeros (deleted data
never leaks into the archive). Bootloader gaps, partition tables and partitions blockwise
cannot read are stored whole. DEST.bmap is written beside the archive (bmaptool finds it),
with SHA-256 of every mapped range. The archive appears under DEST only once complete.
The format follows DEST's extension (.zst, .xz, .simg, .img), else --format, else zst.
DEST s3://BUCKET/KEY: a multipart upload, parts sent while the next are compressed; the object
appears only once complete, and a failure or an interrupt aborts the upload (nothing left).
Exit status: 0 on success, 1 on failure, 4 if refused for safety (DEST exists without --force,
SRC mounted read-write), 130 if interrupted (nothing left under DEST).")]
    Backup {
        /// Block device or image file to back up (any format inspect reads).
        src: PathBuf,
        /// Archive to write (a file, or s3://BUCKET/KEY); DEST.bmap is written beside it.
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
        /// Keep every ext metadata block in use (whole inode tables, reserved descriptor
        /// copies, bitmaps of uninitialised groups), as partclone does.
        #[arg(long)]
        whole_metadata: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Convert an image to another format: sparse raw, seekable zstd, multi-block xz,
    /// Android sparse, qcow2, VHD or VHDX, carrying only the blocks that matter.
    #[command(after_help = "\
Examples:
  blockwise convert card.img card.qcow2                  qcow2 v3, free space unallocated
  blockwise convert card.img card.qcow2 --compress zstd  compressed clusters (zlib or zstd)
  blockwise convert card.img.xz azure.vhd --vhd fixed    fixed VHD, size whole MiB (Azure)
  blockwise convert vm.qcow2 vm.vhdx                     any input blockwise reads
  blockwise convert disk.vhd disk.img.zst                seekable zstd; `zstd -d` restores it
  blockwise convert card.img out.simg --keep-free        Android sparse, every byte carried
  blockwise convert card.img out.bin --to img            the format from --to, not the name
  blockwise convert disc.cue disc.iso                    data track as ISO, audio as disc-NN.wav

By default only the blocks the skip rule keeps (partition tables, bootloader gaps, the blocks
the filesystems use, partitions blockwise cannot read) are carried; free space becomes holes,
unallocated clusters or blocks, DONT_CARE chunks or zero frames, so deleted data never
reaches the output. --keep-free carries everything the source holds (its allocated ranges
when it is a container that knows them, else every byte).
The format follows --to, else OUT's extension (.img/.raw/.bin/.iso, .zst, .xz, .simg,
.qcow2, .vhd, .vhdx). The output appears under OUT only once complete and synced.
OUT s3://BUCKET/KEY: uploaded (.simg, .qcow2, dynamic .vhd and .vhdx through a temporary file
first, since their writers go back to patch tables); the object appears only once complete.
Exit status: 0 on success, 1 on failure (unreadable or undecodable input), 2 on bad usage
(OUT's name says no format, an option for another format), 4 if refused for safety (OUT
exists without --force, is the source, or a device), 130 if interrupted (nothing left under
OUT).")]
    Convert {
        /// Image to convert (any format inspect reads, or a block device).
        #[arg(value_name = "IN")]
        src: PathBuf,
        /// File to write (or s3://BUCKET/KEY).
        #[arg(value_name = "OUT")]
        dest: PathBuf,
        /// Output format (default: from OUT's extension).
        #[arg(long, value_enum)]
        to: Option<convert::ToArg>,
        /// Kind of VHD (default dynamic).
        #[arg(long, value_enum)]
        vhd: Option<convert::VhdArg>,
        /// qcow2: compress the clusters with this codec.
        #[arg(long, value_enum)]
        compress: Option<convert::CompressArg>,
        /// qcow2: cluster size in bytes, a power of two from 512 to 2097152 (default 65536).
        #[arg(long)]
        cluster_size: Option<u32>,
        /// Compression level (zst 1-22, default 3; xz 0-9, default 6; qcow2 zlib 1-9,
        /// default 6; qcow2 zstd 1-22, default 3).
        #[arg(long, allow_negative_numbers = true)]
        level: Option<i32>,
        /// Decoding and compression threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Carry everything the source holds, free space included.
        #[arg(long)]
        keep_free: bool,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        /// Read a device even though a partition of it is mounted read-write.
        #[arg(long)]
        allow_mounted: bool,
        /// Keep every ext metadata block in use (whole inode tables, reserved descriptor
        /// copies, bitmaps of uninitialised groups), as partclone does.
        #[arg(long)]
        whole_metadata: bool,
        /// CD images: write audio tracks as WAV (default) or raw PCM (.cdr).
        #[arg(long, value_enum)]
        audio: Option<convert::AudioArg>,
        /// Print the summary as JSON on stdout (schema: spec/json-output.md, "convert").
        #[arg(long)]
        json: bool,
    },
    /// Write an image to cards or files: only the blocks that matter, verified, the partition
    /// table last, after refusing every disk that must not be written.
    #[command(after_help = "\
Examples:
  blockwise flash pi.img.zst /dev/sdb           our backup archive: only its mapped frames are read
  blockwise flash raspios.img.xz /dev/mmcblk0   uses raspios.img.xz.bmap (or raspios.img.bmap) if present
  blockwise flash card.img /dev/sdb /dev/sdc    several cards at once, the image decoded once
  blockwise flash new.img.zst /dev/sdb --delta  re-flash: write only the blocks that changed
  blockwise flash card.img copy.img             a file target: created or extended, free space as holes

Which blocks are written: those of --bmap FILE; else of a bmap found beside the image
(IMG.bmap, then IMG with extensions stripped); else those the image's own partition table
and filesystems use (the same map `blockwise bmap` writes; a stream is mapped by a scan of a
second decoder running beside the flash, or with --one-pass learned as it goes by);
--no-bmap writes everything.
A bmap range whose checksum does not match the image is never written.
Order: the target's first MiB is zeroed first (and its last MiB when it is larger than the
image), the image's blocks are written and read back from the medium (O_DIRECT), and the
image's first MiB (partition table, boot sector) is written last: an interrupted flash
leaves a card without a partition table, never one that looks good.
Refused before writing a byte (exit 4): the system disk, a mounted disk or partition, a disk
under LVM/LUKS/RAID, one too small for the image's last mapped byte, the disk holding the
image, an internal disk without --force, and any device without --yes when stdin is not a
terminal (`blockwise drives --all` shows the verdicts).
A SHA256SUMS (or IMG.sha256) beside the image that lists it is checked while the flash runs;
a mismatch stops it before any partition table is written.
Exit status: 0 when every target was written and verified, 1 on failure, 3 on a checksum
mismatch, 4 if refused, 130 if interrupted (the cards are incomplete: flash them again).")]
    Flash {
        /// Image to write (any format inspect reads: raw, .xz/.gz/.zst/.bz2/.lz4/zip, our
        /// archives, Android sparse, ISO).
        image: PathBuf,
        /// Block devices (whole disks) or files to write it to.
        #[arg(required = true)]
        targets: Vec<PathBuf>,
        /// Follow this bmap (bmaptool format) instead of looking for one beside the image.
        #[arg(long, conflicts_with = "no_bmap")]
        bmap: Option<PathBuf>,
        /// Write every byte of the image.
        #[arg(long)]
        no_bmap: bool,
        /// Do not read the targets back after writing.
        #[arg(long)]
        no_verify: bool,
        /// Discard (BLKDISCARD; holes in a file) the ranges the image does not map, so the
        /// card knows they are free.
        #[arg(long)]
        discard: bool,
        /// Read each mapped range of the target first and write only the blocks that differ
        /// (re-flashing a card that holds an older build).
        #[arg(long)]
        delta: bool,
        /// Do not ask before overwriting block devices.
        #[arg(short, long)]
        yes: bool,
        /// Also write internal (non-removable) disks.
        #[arg(long)]
        force: bool,
        /// On a target larger than a GPT image, move the backup GPT to the target's end (and
        /// grow the protective MBR), so the whole card is usable.
        #[arg(long)]
        gpt_to_end: bool,
        /// Before writing, check that each card really holds its advertised size (fake cards
        /// wrap writes around): patterns written and read back at its end and at power-of-two
        /// offsets, then the original bytes put back.
        #[arg(long)]
        check_capacity: bool,
        /// For a stream without a bmap (.gz, .bz2, .lz4, single-block .xz, zip): decode it on
        /// one core only, deciding what to skip as it goes by, instead of beside a scan of a
        /// second decoder. Skips less where a filesystem's free space is known only late in
        /// the stream (a large ext4, after its last inode table).
        #[arg(long)]
        one_pass: bool,
        /// Keep every ext metadata block in use (whole inode tables, reserved descriptor
        /// copies, bitmaps of uninitialised groups), as partclone does.
        #[arg(long)]
        whole_metadata: bool,
        /// Print the summary as JSON on stdout (schema: spec/json-output.md, "flash").
        #[arg(long)]
        json: bool,
    },
    /// List the disks that are safe targets (removable, USB, SD, loop devices; not mounted,
    /// not the system disk), and with --all every disk with the reasons it is not offered.
    #[command(after_help = "\
Examples:
  blockwise drives                 candidate targets: size, transport, model, partitions, labels
  blockwise drives --all           every disk, and why each refused one is not offered
  blockwise drives --all --json | jq '.drives[] | select(.verdict.offered) | .path'

Read from /sys and /proc (no udev, no lsblk). Refused: the system disk (/, /boot, /boot/efi,
/efi, /usr or swap on it), mounted disks or partitions, disks under LVM/LUKS/RAID, read-only
or empty devices (a reader without a card), optical drives, unused loop devices, and internal
(non-removable) disks, which flash takes only with --force. Loop devices are offered: they
write into their backing file.
Exit status: 0, also when no disk is offered (said on stderr).")]
    Drives {
        /// Also list the disks that are not offered, each with its reasons.
        #[arg(long)]
        all: bool,
        /// Print the list as JSON (schema: spec/json-output.md, "drives").
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

/// The skip rule's user choices from the command line.
fn rules(whole_metadata: bool) -> blockwise::map::MapRules {
    blockwise::map::MapRules { whole_metadata }
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
    common::set_remote(blockwise::io::remote::RemoteOptions {
        endpoint: cli.endpoint.clone(),
        block: cli.fetch_block,
        parallel: usize::from(cli.fetch_parallel),
    });
    let result = match cli.command {
        Command::Inspect {
            image,
            json,
            whole_metadata,
        } => inspect::run(&image, json, rules(whole_metadata)),
        Command::Bmap {
            image,
            output,
            block_size,
            no_checksum,
            from,
            whole_metadata,
        } => bmap::run(bmap::Args {
            image,
            output,
            block_size,
            no_checksum,
            from,
            rules: rules(whole_metadata),
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
            whole_metadata,
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
            rules: rules(whole_metadata),
        }),
        Command::Convert {
            src,
            dest,
            to,
            vhd,
            compress,
            cluster_size,
            level,
            threads,
            keep_free,
            force,
            allow_mounted,
            whole_metadata,
            audio,
            json,
        } => convert::run(convert::Args {
            src,
            dest,
            to,
            vhd,
            compress,
            cluster_size,
            level,
            threads,
            keep_free,
            force,
            allow_mounted,
            json,
            rules: rules(whole_metadata),
            audio,
        }),
        Command::Flash {
            image,
            targets,
            bmap,
            no_bmap,
            no_verify,
            discard,
            delta,
            yes,
            force,
            gpt_to_end,
            check_capacity,
            one_pass,
            json,
            whole_metadata,
        } => flash::run(flash::Args {
            image,
            targets,
            bmap,
            no_bmap,
            no_verify,
            discard,
            delta,
            yes,
            force,
            gpt_to_end,
            check_capacity,
            one_pass,
            json,
            rules: rules(whole_metadata),
        }),
        Command::Drives { all, json } => drives::run(all, json),
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
