//! `blockwise verify`: check an image's (or a written device's) mapped ranges against a bmap.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use blockwise::bmap;
use blockwise::format::{self, OpenOptions};
use blockwise::util::human_bytes;

use super::common::exit;

pub fn run(image: PathBuf, bmap_path: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let bmap_path = match bmap_path {
        Some(p) => p,
        None => match bmap::sidecar_candidates(&image)
            .into_iter()
            .find(|p| p.is_file())
        {
            Some(p) => p,
            None => bail!(
                "no bmap found for {} (tried {}); pass --bmap FILE",
                image.display(),
                bmap::sidecar_candidates(&image)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let data = std::fs::read(&bmap_path)
        .with_context(|| format!("cannot read {}", bmap_path.display()))?;
    let b = bmap::parse(&data)
        .with_context(|| format!("{} is not a usable bmap", bmap_path.display()))?;
    // Read once, in order: a stream's end is not needed, only the bytes up to the bmap's
    // image size, which stands in for a size its headers do not give exactly.
    let opened = format::open(&image, &OpenOptions::deferred())
        .with_context(|| format!("cannot open {}", image.display()))?;
    opened.source.refine_size_hint(b.image_size);
    let res = bmap::verify(&*opened.source, &b).with_context(|| {
        format!(
            "verifying {} against {}",
            image.display(),
            bmap_path.display()
        )
    })?;
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "image": image.display().to_string(),
                "bmap": bmap_path.display().to_string(),
                "ok": res.mismatches.is_empty(),
                "result": res,
            }),
        )?;
        writeln!(out)?;
    } else if res.mismatches.is_empty() {
        println!(
            "{}: OK, {} in {} ranges match {}{}",
            image.display(),
            human_bytes(res.bytes_checked),
            res.ranges_checked,
            bmap_path.display(),
            if res.ranges_unchecked > 0 {
                format!(" ({} ranges carry no checksum)", res.ranges_unchecked)
            } else {
                String::new()
            }
        );
    } else {
        println!(
            "{}: MISMATCH in {} of {} ranges (bmap {}):",
            image.display(),
            res.mismatches.len(),
            res.ranges_checked,
            bmap_path.display()
        );
        for m in res.mismatches.iter().take(20) {
            println!(
                "  blocks {}-{}: expected {}, got {}",
                m.first, m.last, m.expected, m.actual
            );
        }
        if res.mismatches.len() > 20 {
            println!("  ... and {} more", res.mismatches.len() - 20);
        }
    }
    Ok(if res.mismatches.is_empty() {
        exit::OK
    } else {
        exit::MISMATCH
    })
}
