//! `blockwise drives`: the disks that are safe targets, and with `--all` every other disk with
//! the reasons it is not offered.

use std::io::Write as _;

use blockwise::drives::{self, Check, Drive, SysRoot};
use blockwise::util::human_bytes;

use super::common::exit;

/// What is on a disk, one line per partition (or the whole-disk filesystem).
pub(super) fn contents(d: &Drive) -> Vec<String> {
    let fs = |t: &Option<String>, l: &Option<String>| match (t, l) {
        (Some(t), Some(l)) => format!("{t} \"{l}\""),
        (Some(t), None) => t.clone(),
        _ => String::new(),
    };
    let mounts = |m: &[drives::Mount]| {
        if m.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = m
                .iter()
                .map(|m| {
                    if m.point == "[swap]" {
                        format!("swap on {}", m.device)
                    } else {
                        format!("mounted on {}", m.point)
                    }
                })
                .collect();
            v.join(", ")
        }
    };
    let mut out = Vec::new();
    if let Some(b) = &d.backing {
        out.push(format!(
            "backing file {}{}{}",
            b.file.display(),
            if b.offset > 0 {
                format!(" from byte {}", b.offset)
            } else {
                String::new()
            },
            if b.deleted { " (deleted)" } else { "" }
        ));
    }
    if d.partitions.is_empty() {
        let whole = [fs(&d.fs_type, &d.label), mounts(&d.mounts)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("  ");
        if !whole.is_empty() {
            out.push(whole);
        }
    }
    for p in &d.partitions {
        let cols = [
            p.name.clone(),
            p.size.map(human_bytes).unwrap_or_else(|| "?".into()),
            fs(&p.fs_type, &p.label),
            mounts(&p.mounts),
            if p.holders.is_empty() {
                String::new()
            } else {
                format!("under {}", p.holders.join(", "))
            },
        ];
        out.push(
            cols.into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("  "),
        );
    }
    out
}

/// One drive as a heading line and its indented contents (and reasons, when refused).
fn print_drive(out: &mut impl std::io::Write, d: &Drive) -> std::io::Result<()> {
    let desc = d.description();
    let mut flags = Vec::new();
    if d.removable {
        flags.push("removable");
    }
    writeln!(
        out,
        "  {:<14} {:>10}  {:<7} {}{}",
        d.path.display(),
        human_bytes(d.size),
        d.transport.name(),
        if desc.is_empty() { "-" } else { &desc },
        if flags.is_empty() {
            String::new()
        } else {
            format!(" ({})", flags.join(", "))
        }
    )?;
    for line in contents(d) {
        writeln!(out, "      {line}")?;
    }
    for r in &d.verdict.reasons {
        writeln!(out, "      not offered: {r}")?;
    }
    Ok(())
}

pub fn run(all: bool, json: bool) -> anyhow::Result<u8> {
    let list = drives::list(&SysRoot::system(), &Check::default());
    let (offered, refused): (Vec<&Drive>, Vec<&Drive>) =
        list.iter().partition(|d| d.verdict.offered());
    let mut out = std::io::stdout().lock();
    if json {
        let shown: Vec<&Drive> = if all {
            list.iter().collect()
        } else {
            offered.clone()
        };
        // A struct, not `json!`, so the fields keep their documented order.
        #[derive(serde::Serialize)]
        struct Out<'a> {
            schema_version: u32,
            drives: Vec<&'a Drive>,
        }
        serde_json::to_writer_pretty(
            &mut out,
            &Out {
                schema_version: 1,
                drives: shown,
            },
        )?;
        writeln!(out)?;
    } else {
        if !offered.is_empty() {
            writeln!(out, "Candidate targets:")?;
            for d in &offered {
                print_drive(&mut out, d)?;
            }
        }
        if all && !refused.is_empty() {
            if !offered.is_empty() {
                writeln!(out)?;
            }
            writeln!(out, "Not offered:")?;
            for d in &refused {
                print_drive(&mut out, d)?;
            }
        }
    }
    out.flush()?;
    if offered.is_empty() {
        eprintln!("blockwise: no candidate targets");
    }
    if !all && !refused.is_empty() {
        eprintln!(
            "blockwise: {} other disk{} not offered (`blockwise drives --all` says why)",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" }
        );
    }
    Ok(exit::OK)
}
