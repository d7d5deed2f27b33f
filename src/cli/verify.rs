//! `blockwise verify`: check an image's (or a written device's) mapped ranges against a bmap.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use blockwise::bmap;
use blockwise::format;
use blockwise::util::human_bytes;

use super::common::exit;

pub fn run(image: PathBuf, bmap_path: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let (bmap_path, data) = match bmap_path {
        Some(p) => {
            let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            (p, data)
        }
        None => match super::common::find_sidecar(&image)? {
            Some(found) => found,
            None => bail!(
                "no bmap found for {} (tried {}); pass --bmap FILE",
                super::common::shown(&image),
                super::common::sidecar_tried(&image)
            ),
        },
    };
    let b = bmap::parse(&data)
        .with_context(|| format!("{} is not a usable bmap", bmap_path.display()))?;
    // Read once, in order: a stream's end is not needed, only the bytes up to the bmap's
    // image size, which stands in for a size its headers do not give exactly.
    let opened = format::open(&image, &super::common::deferred_options())
        .with_context(|| format!("cannot open {}", super::common::shown(&image)))?;
    opened.source.refine_size_hint(b.image_size);
    let res = bmap::verify(&*opened.source, &b).with_context(|| {
        format!(
            "verifying {} against {}",
            super::common::shown(&image),
            bmap_path.display()
        )
    })?;
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "image": super::common::shown(&image),
                "bmap": bmap_path.display().to_string(),
                "ok": res.mismatches.is_empty(),
                "result": res,
            }),
        )?;
        writeln!(out)?;
    } else if res.mismatches.is_empty() {
        println!(
            "{}: OK, {} in {} ranges match {}{}",
            super::common::shown(&image),
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
            super::common::shown(&image),
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
