//! `blockwise inspect`: render the library's [`Report`] for people or scripts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use blockwise::format::Format;
use blockwise::fs::FsInfo;
use blockwise::layout::{PartKind, TableKind};
use blockwise::report::{inspect_path_opts, Report};
use blockwise::util::human_bytes;

use super::common::exit;

pub fn run(image: &Path, json: bool, rules: blockwise::map::MapRules) -> anyhow::Result<u8> {
    let report = inspect_path_opts(image, rules, &super::common::open_options())
        .with_context(|| format!("cannot inspect {}", super::common::shown(image)))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&report).as_bytes())?;
    }
    Ok(exit::OK)
}

/// One-line summary: "xz → raw disk image (MBR, 2 partitions)".
pub fn headline(r: &Report) -> String {
    let mut parts: Vec<String> = r
        .chain
        .iter()
        .filter(|l| l.format != Format::Raw)
        .map(|l| l.format.name().to_string())
        .collect();
    if !r.contents_decoded {
        let size = if r.image_size > 0 {
            format!("virtual disk {}; ", human_bytes(r.image_size))
        } else {
            String::new()
        };
        let last = parts.pop().unwrap_or_default();
        parts.push(format!(
            "{last} ({size}contents not decoded by this version)"
        ));
        return parts.join(" → ");
    }
    let what = match (r.layout.table, &r.whole_disk) {
        (TableKind::None, Some(f)) => {
            format!("{} filesystem image (no partition table)", f.fs_type)
        }
        (TableKind::None, None) => "raw data (no partition table or filesystem recognised)".into(),
        (t, whole) => {
            let table = if t == TableKind::Gpt { "GPT" } else { "MBR" };
            let rows = r.partitions.len();
            let containers = r
                .partitions
                .iter()
                .filter(|p| p.kind.is_container())
                .count();
            let data = rows - containers;
            let mut s = if r.layout.unusable.is_some() {
                let which = if has_protective_entry(r) {
                    "GPT"
                } else {
                    table
                };
                format!("{which} partition table present but unusable; every byte kept")
            } else if data == 0 {
                format!("{table} with no partitions")
            } else {
                let mut s = format!("{table}, {rows} partition{}", plural(rows));
                if containers > 0 {
                    let what = if t == TableKind::Gpt || has_protective_entry(r) {
                        "protective"
                    } else {
                        "extended"
                    };
                    let _ = write!(s, " incl. {containers} {what}");
                }
                s
            };
            match whole {
                Some(f) if r.boot.isohybrid => {
                    format!("raw disk image (isohybrid {}, {s})", f.fs_type)
                }
                Some(f) if data == 0 || r.layout.unusable.is_some() => {
                    format!("{} filesystem on the whole disk ({s})", f.fs_type)
                }
                Some(f) => {
                    let _ = write!(s, ", and a whole-disk {}", f.fs_type);
                    format!("raw disk image ({s})")
                }
                None => format!("raw disk image ({s})"),
            }
        }
    };
    // The last chain element is the payload itself; only wrappers go before the arrow.
    if parts.last().is_some_and(|p| p == "iso9660") {
        parts.pop();
    }
    parts.push(what);
    parts.join(" → ")
}

fn has_protective_entry(r: &Report) -> bool {
    r.partitions.iter().any(|p| p.kind.is_protective())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn fs_summary(f: &FsInfo) -> String {
    let mut s = f.fs_type.to_string();
    match &f.version {
        Some(v) if v.contains(' ') => {
            let _ = write!(s, " ({v})");
        }
        Some(v) if !v.is_empty() => {
            let _ = write!(s, " {v}");
        }
        _ => {}
    }
    if let Some(l) = &f.label {
        let _ = write!(s, " \"{l}\"");
    }
    s
}

fn fs_details(f: &FsInfo) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(u) = &f.uuid {
        d.push(format!("uuid {u}"));
    }
    if let Some(sz) = f.size {
        d.push(format!("size {}", human_bytes(sz)));
    }
    if let Some(b) = f.block_size {
        d.push(format!("block {b}"));
    }
    if !f.features.is_empty() {
        d.push(f.features.join(","));
    }
    d
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: {}", r.path, headline(r));
    if let Some(stored) = r.stored_size {
        let compressed = r
            .chain
            .iter()
            .any(|l| l.format.is_compression() || l.format == Format::Zip);
        if compressed || stored != r.image_size {
            let ratio = if stored > 0 {
                r.image_size as f64 / stored as f64
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "  stored       {} ({} bytes){}",
                human_bytes(stored),
                stored,
                if compressed {
                    format!(", {ratio:.1}x smaller than the image")
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(rem) = &r.remote {
        let pct = if rem.object_size > 0 {
            rem.downloaded_bytes as f64 * 100.0 / rem.object_size as f64
        } else {
            0.0
        };
        let how = if rem.ranges {
            "range requests"
        } else {
            "one stream: the server takes no range requests"
        };
        let _ = writeln!(
            o,
            "  downloaded   {} ({} bytes) of {} ({pct:.1}%), {} request{}, {how}",
            human_bytes(rem.downloaded_bytes),
            rem.downloaded_bytes,
            human_bytes(rem.object_size),
            rem.requests,
            if rem.requests == 1 { "" } else { "s" }
        );
    }
    for l in &r.chain {
        if let Some(d) = &l.detail {
            let _ = writeln!(o, "  {:<12} {d}", l.format.name());
        }
    }
    cd_tracks(&mut o, r);
    if !r.contents_decoded {
        return finish(o, r);
    }
    let _ = writeln!(
        o,
        "  image size   {} ({} bytes)",
        human_bytes(r.image_size),
        r.image_size
    );
    let lay = &r.layout;
    match lay.table {
        TableKind::None => {
            let _ = writeln!(o, "  table        none");
        }
        TableKind::Mbr => {
            let id = lay.disk_id.as_deref().unwrap_or("-");
            let _ = writeln!(
                o,
                "  table        MBR, disk id 0x{id}, {}-byte sectors",
                lay.sector_size
            );
        }
        TableKind::Gpt => {
            let id = lay.disk_id.as_deref().unwrap_or("-");
            let mbr = match &lay.mbr {
                Some(m) if m.hybrid => ", hybrid MBR",
                Some(m) if m.protective => ", protective MBR",
                _ => "",
            };
            let _ = writeln!(
                o,
                "  table        GPT, disk guid {id}, {}-byte sectors{mbr}",
                lay.sector_size
            );
        }
    }
    if let Some(f) = &r.whole_disk {
        let _ = writeln!(o, "  filesystem   {}", fs_summary(f));
        let mut d = fs_details(f);
        if let Some(u) = part_usage(r, 0, f) {
            d.insert(0, u);
        }
        if !d.is_empty() {
            let _ = writeln!(o, "               {}", d.join(", "));
        }
        if let Some(c) = cross_check_line(r, 0, f) {
            let _ = writeln!(o, "               {c}");
        }
        if let Some(t) = tables_line(r, 0) {
            let _ = writeln!(o, "               {t}");
        }
    }
    if !r.partitions.is_empty() {
        let ss = u64::from(lay.sector_size.max(1));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:>3}  {:>10}  {:>10}  {:>9}  {:<28} filesystem",
            "#", "start", "sectors", "size", "type"
        );
        for p in &r.partitions {
            let ty = match &p.kind {
                PartKind::Mbr {
                    type_code,
                    bootable,
                    ..
                } => {
                    format!(
                        "{:02x} {}{}",
                        type_code,
                        p.type_name,
                        if *bootable { " *" } else { "" }
                    )
                }
                PartKind::Gpt { name, .. } if !name.is_empty() => {
                    format!("{} \"{name}\"", p.type_name)
                }
                PartKind::Gpt { .. } => p.type_name.clone(),
            };
            let fs = match (&p.filesystem, &p.probe_error, p.kind.is_container()) {
                (Some(f), _, _) => fs_summary(f),
                (None, Some(_), _) => "unreadable (see warnings)".into(),
                (None, None, true) => "-".into(),
                (None, None, false) => unknown_fs(&p.kind),
            };
            let _ = writeln!(
                o,
                "  {:>3}  {:>10}  {:>10}  {:>9}  {:<28} {}",
                p.index,
                p.start / ss,
                p.size / ss,
                human_bytes(p.size),
                truncate(&ty, 28),
                fs
            );
            if let Some(f) = &p.filesystem {
                let mut d = fs_details(f);
                if let Some(u) = part_usage(r, p.index, f) {
                    d.insert(0, u);
                }
                if !d.is_empty() {
                    let _ = writeln!(o, "  {:>3}  {}", "", d.join(", "));
                }
                if let Some(c) = cross_check_line(r, p.index, f) {
                    let _ = writeln!(o, "  {:>3}  {c}", "");
                }
                if let Some(t) = tables_line(r, p.index) {
                    let _ = writeln!(o, "  {:>3}  {t}", "");
                }
            }
        }
        // A GPT's own backup lives in the last 33 sectors; only real slack is worth a line.
        if r.unpartitioned_tail >= 1 << 20 {
            let _ = writeln!(
                o,
                "\n  {} after the last partition (unallocated)",
                human_bytes(r.unpartitioned_tail)
            );
        }
    }
    finish(o, r)
}

/// "used 12.0 MiB (25%)" for a partition whose filesystem's allocation map was read: the
/// filesystem's own use against its own size (bytes kept past its end are said apart).
fn part_usage(r: &Report, index: u32, f: &FsInfo) -> Option<String> {
    let u = r.usage.as_ref()?.parts.iter().find(|u| u.index == index)?;
    if !u.from_fs || u.size == 0 {
        return None;
    }
    let own = u.used.saturating_sub(u.beyond_fs);
    let of = f.size.unwrap_or(u.size).min(u.size).max(1);
    let mut s = format!(
        "used {} ({:.0}%)",
        human_bytes(own),
        own as f64 * 100.0 / of as f64
    );
    if u.beyond_fs > 0 {
        let _ = write!(s, " (+{} after its end, kept)", human_bytes(u.beyond_fs));
    }
    Some(s)
}

/// How much metadata was left out because no one reads it as it is.
fn tables_line(r: &Report, index: u32) -> Option<String> {
    let u = r.usage.as_ref()?.parts.iter().find(|u| u.index == index)?;
    (u.metadata_left_out > 0).then(|| {
        let other = u.metadata_left_out.saturating_sub(u.inode_tables_left_out);
        format!(
            "left out, as no one reads it: {} of inode tables no inode can occupy{} \
             (--whole-metadata keeps it)",
            human_bytes(u.inode_tables_left_out),
            if other > 0 {
                format!(
                    ", {} of reserved descriptor copies and uninitialised bitmaps",
                    human_bytes(other)
                )
            } else {
                String::new()
            }
        )
    })
}

/// Whether the filesystem's map was checked against its file metadata, and what that added.
fn cross_check_line(r: &Report, index: u32, f: &FsInfo) -> Option<String> {
    let u = r.usage.as_ref()?.parts.iter().find(|u| u.index == index)?;
    if !u.from_fs {
        return None;
    }
    Some(match &u.cross_check {
        Some(c) if c.incomplete.is_some() => format!(
            "map cross-checked against {}: {}",
            c.against,
            c.incomplete.as_deref().unwrap_or_default()
        ),
        Some(c) if c.added > 0 => format!(
            "map cross-checked against {}: {} in use but marked free, added back ({})",
            c.against,
            human_bytes(c.added),
            c.added_where
        ),
        Some(c) => format!("map cross-checked against {}: nothing to add", c.against),
        None => format!(
            "map not cross-checked: {}",
            blockwise::fs::unchecked_reason(f.fs_type)
        ),
    })
}

/// The tracks of a CD image, one line each: number, session (when there are several), mode,
/// start and length as MSF and sectors, INDEX 00 when there is a pregap, and the file.
fn cd_tracks(o: &mut String, r: &Report) {
    if r.cd_tracks.is_empty() {
        return;
    }
    let sessions = r.cd_tracks.iter().map(|t| t.session).max().unwrap_or(1);
    let _ = writeln!(
        o,
        "  cd tracks    {}{}",
        r.cd_tracks.len(),
        if sessions > 1 {
            format!(" in {sessions} sessions")
        } else {
            String::new()
        }
    );
    for t in &r.cd_tracks {
        let session = if sessions > 1 {
            format!("session {}  ", t.session)
        } else {
            String::new()
        };
        let form = if t.form2 { " form 2" } else { "" };
        let pregap = match t.index0 {
            Some(i0) => format!(
                "  pregap {}",
                blockwise::format::cd::msf_string(u64::from(t.start.saturating_sub(i0)))
            ),
            None if t.pregap > 0 => format!(
                "  pregap {}",
                blockwise::format::cd::msf_string(u64::from(t.pregap))
            ),
            None => String::new(),
        };
        let file = if t.file.is_empty() {
            String::new()
        } else {
            format!("  {:?}", t.file)
        };
        let _ = writeln!(
            o,
            "    {:02}  {session}{:<10}{form}  start {} (LBA {})  length {} ({} sectors){pregap}{file}",
            t.number,
            t.mode.name(),
            t.start_msf(),
            t.start,
            t.length_msf(),
            t.length,
        );
    }
}

fn finish(mut o: String, r: &Report) -> String {
    if let Some(u) = &r.usage {
        if u.image_size > 0 {
            let _ = writeln!(
                o,
                "\n  mapped       {} of {} ({:.1}%): the bytes a backup stores and a flash writes",
                human_bytes(u.mapped),
                human_bytes(u.image_size),
                u.mapped as f64 * 100.0 / u.image_size as f64
            );
        }
    }
    let b = &r.boot;
    if !b.notes.is_empty() || !b.el_torito.is_empty() {
        let _ = writeln!(o, "\n  boot");
        for e in &b.el_torito {
            let _ = writeln!(
                o,
                "    El Torito {} entry: {}, {}, image at block {} ({} sectors)",
                e.platform,
                if e.bootable {
                    "bootable"
                } else {
                    "not bootable"
                },
                e.emulation,
                e.load_rba,
                e.sector_count
            );
        }
        for n in &b.notes {
            let _ = writeln!(o, "    {n}");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n  notes");
        for n in &r.notes {
            let _ = writeln!(o, "    {n}");
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(o, "\n  warnings");
        for w in &r.warnings {
            let _ = writeln!(o, "    ! {w}");
        }
    }
    o
}

fn unknown_fs(k: &PartKind) -> String {
    match k {
        PartKind::Mbr { type_code, .. } => format!("unknown (type 0x{type_code:02x})"),
        PartKind::Gpt { type_guid, .. } => format!("unknown (type {type_guid})"),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
