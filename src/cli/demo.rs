//! `blockwise demo`: the bundled sample card image, end to end.
//!
//! The sample (`samples/card.img.xz`, made by `samples/make-sample.sh` with stock Debian
//! tools) is compiled into the binary, so the demo works from any directory, offline.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context;
use blockwise::report::inspect_path;

/// The sample card image: MBR, bootloader blob at sector 16, FAT32 boot + ext4 root.
static SAMPLE_XZ: &[u8] = include_bytes!("../../samples/card.img.xz");

pub fn run(dir: Option<PathBuf>, keep: bool) -> anyhow::Result<u8> {
    match dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            let r = demo_in(&d);
            eprintln!("demo files kept in {}", d.display());
            r
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("blockwise-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            let r = demo_in(t.path());
            if keep {
                let p = t.keep();
                eprintln!("demo files kept in {}", p.display());
            }
            r
        }
    }
}

fn demo_in(dir: &Path) -> anyhow::Result<u8> {
    let xz = dir.join("card.img.xz");
    let img = dir.join("card.img");
    write_atomic(&xz, SAMPLE_XZ)?;
    {
        let mut dec = liblzma::read::XzDecoder::new(SAMPLE_XZ);
        let tmp = img.with_extension("img.tmp");
        let mut out = fs::File::create(&tmp)?;
        io::copy(&mut dec, &mut out).context("unpacking the bundled sample")?;
        out.sync_all()?;
        fs::rename(&tmp, &img)?;
    }
    let mut o = io::stdout().lock();
    writeln!(
        o,
        "blockwise demo: a 128 MiB Raspberry-Pi-style SD card image, unpacked in {}\n",
        dir.display()
    )?;

    writeln!(
        o,
        "$ blockwise inspect card.img.xz     # compressed: decoded on the fly, nothing unpacked"
    )?;
    let r = inspect_path(&xz)?;
    o.write_all(super::inspect::render(&r).as_bytes())?;

    writeln!(o, "\n$ blockwise inspect card.img")?;
    let r = inspect_path(&img)?;
    o.write_all(super::inspect::render(&r).as_bytes())?;

    writeln!(
        o,
        "\n$ blockwise bmap card.img -o card.img.bmap     # bmaptool-compatible block map"
    )?;
    o.flush()?;
    let bm = dir.join("card.img.bmap");
    super::bmap::run(super::bmap::Args {
        image: img.clone(),
        output: Some(bm.clone()),
        block_size: 4096,
        no_checksum: false,
        from: super::common::MapFrom::Fs,
        rules: Default::default(),
    })?;
    let parsed = blockwise::bmap::parse(&fs::read(&bm)?)?;
    let mapped = parsed.mapped_blocks * parsed.block_size;
    writeln!(
        o,
        "card.img.bmap: {} ranges, {} of {} mapped: `bmaptool copy` with it writes {:.1}x less than dd",
        parsed.ranges.len(),
        blockwise::util::human_bytes(mapped.min(parsed.image_size)),
        blockwise::util::human_bytes(parsed.image_size),
        parsed.image_size as f64 / mapped.max(1) as f64
    )?;

    writeln!(
        o,
        "\n$ blockwise verify card.img.xz --bmap card.img.bmap   # checksums, straight from the xz"
    )?;
    o.flush()?;
    let code = super::verify::run(xz.clone(), Some(bm), false)?;
    if code != super::common::exit::OK {
        return Ok(code);
    }

    writeln!(
        o,
        "\n$ blockwise backup card.img card.img.zst     # only the used blocks, seekable zstd + bmap"
    )?;
    o.flush()?;
    let zst = dir.join("card.img.zst");
    super::backup::run(super::backup::Args {
        src: img.clone(),
        dest: zst.clone(),
        format: None,
        level: None,
        threads: None,
        truncate: false,
        force: true,
        allow_mounted: false,
        json: false,
        rules: Default::default(),
    })?;
    let zst_len = fs::metadata(&zst)?.len();
    writeln!(
        o,
        "card.img.zst is {}; the same card as a plain `xz -9` of every byte (card.img.xz) is {}: {:.1}x smaller, \
         and deleted files in free space are not in it",
        blockwise::util::human_bytes(zst_len),
        blockwise::util::human_bytes(SAMPLE_XZ.len() as u64),
        SAMPLE_XZ.len() as f64 / zst_len.max(1) as f64
    )?;

    writeln!(
        o,
        "\n$ zstd -d card.img.zst -o restored.img && blockwise verify restored.img --bmap card.img.zst.bmap\n  (decoded here in-process, as stock zstd does: the archive is plain zstd to every tool)"
    )?;
    o.flush()?;
    let restored = dir.join("restored.img");
    {
        // What stock `zstd -d` does: the archive is plain zstd to every other tool.
        let mut dec = zstd::stream::read::Decoder::new(fs::File::open(&zst)?)?;
        let mut out = fs::File::create(&restored)?;
        io::copy(&mut dec, &mut out).context("decoding card.img.zst")?;
    }
    let code = super::verify::run(restored, Some(dir.join("card.img.zst.bmap")), false)?;
    if code != super::common::exit::OK {
        return Ok(code);
    }

    writeln!(
        o,
        "\n$ blockwise flash card.img.zst sdcard.img     # sdcard.img: a used card's worth of old data\n  \
         (a /dev/sdX works the same way, after the safety checks of `blockwise drives`)"
    )?;
    o.flush()?;
    let card = dir.join("sdcard.img");
    old_card(&card, parsed.image_size)?;
    let code = super::flash::run(super::flash::Args {
        image: zst,
        targets: vec![card.clone()],
        bmap: None,
        no_bmap: false,
        no_verify: false,
        discard: false,
        delta: false,
        yes: true,
        force: false,
        gpt_to_end: false,
        check_capacity: false,
        one_pass: false,
        json: false,
        rules: Default::default(),
    })?;
    if code != super::common::exit::OK {
        return Ok(code);
    }
    writeln!(
        o,
        "only the mapped blocks were written (dd would write all {}), read back, the partition \
         table last",
        blockwise::util::human_bytes(parsed.image_size)
    )?;
    writeln!(
        o,
        "\n$ blockwise convert card.img card.qcow2     # a VM disk of the card: free space left unallocated"
    )?;
    o.flush()?;
    let qcow2 = dir.join("card.qcow2");
    super::convert::run(super::convert::Args {
        src: img.clone(),
        dest: qcow2.clone(),
        to: None,
        vhd: None,
        compress: None,
        cluster_size: None,
        level: None,
        threads: None,
        keep_free: false,
        force: true,
        allow_mounted: false,
        json: false,
        rules: Default::default(),
        audio: None,
    })?;
    let r = inspect_path(&qcow2)?;
    writeln!(
        o,
        "card.qcow2 is {}; read back, it is the card: a {} disk with {} partitions, as every \
         command (inspect, bmap, backup, verify, flash) sees it",
        blockwise::util::human_bytes(fs::metadata(&qcow2)?.len()),
        blockwise::util::human_bytes(r.image_size),
        r.partitions.len()
    )?;

    writeln!(o, "\n$ blockwise verify sdcard.img --bmap card.img.bmap")?;
    o.flush()?;
    super::verify::run(card, Some(dir.join("card.img.bmap")), false)
}

/// A file of `size` bytes of pseudo-random data: a card with an earlier life.
fn old_card(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = io::BufWriter::new(
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
