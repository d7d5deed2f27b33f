//! `blockwise demo`: the bundled sample card image, end to end.
//!
//! The sample (`samples/card.img.xz`, made by `samples/make-sample.sh` with stock Debian
//! tools) is compiled into the binary, so the demo works from any directory, offline.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use blockwise::inspect::inspect_path;

use super::exit;

/// The sample card image: MBR, bootloader blob at sector 16, FAT32 boot + ext4 root.
static SAMPLE_XZ: &[u8] = include_bytes!("../../samples/card.img.xz");

pub fn run(dir: Option<PathBuf>, keep: bool) -> anyhow::Result<u8> {
    let (dir, made) = match dir {
        Some(d) => {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            (d, false)
        }
        None => {
            let d = std::env::temp_dir().join(format!("blockwise-demo-{}", std::process::id()));
            if d.exists() {
                bail!("{} already exists; pass --dir", d.display());
            }
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            (d, true)
        }
    };
    let result = demo_in(&dir);
    if made && !keep {
        let _ = fs::remove_dir_all(&dir);
    } else {
        eprintln!("demo files kept in {}", dir.display());
    }
    result
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
    Ok(exit::OK)
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
