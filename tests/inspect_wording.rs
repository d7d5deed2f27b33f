//! The words `inspect` prints, pinned: a report that can drop data must say loudly when it
//! keeps more and never be silent when it keeps less, and must be quiet where nothing is
//! wrong. Headlines count the rows they head; how an input is decoded is a note, not a
//! warning; each warning is said once; a filesystem's use is its own, not the kept tail.

mod common;

use std::path::Path;

use common::{blockwise, have, have_all, repo, sh};

fn inspect(img: &Path) -> String {
    let o = blockwise().arg("inspect").arg(img).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| l.trim() != name);
    if lines.next().is_none() {
        return vec![];
    }
    lines.take_while(|l| !l.trim().is_empty()).collect()
}

#[test]
fn compressed_sample_has_a_note_and_no_warnings() {
    let xz = repo().join("samples/card.img.xz");
    let text = inspect(&xz);
    assert!(
        text.starts_with(&format!(
            "{}: xz → raw disk image (MBR, 2 partitions)\n",
            xz.display()
        )),
        "{text}"
    );
    assert_eq!(
        section(&text, "notes"),
        vec!["    compressed as one stream: decoded on the fly, front to back (no random access)"],
        "{text}"
    );
    assert!(section(&text, "warnings").is_empty(), "{text}");
    assert!(
        text.contains(
            "       map cross-checked against its directory tree (6 entries, 2 directories): nothing to add\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("       map cross-checked against its inodes (23 in use, 0 tree blocks, "),
        "{text}"
    );
    assert!(text.contains("read): nothing to add\n"), "{text}");
}

#[test]
fn headline_counts_every_row_including_the_extended_container() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext.img");
    std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=4096, type=83\\nstart=8192, type=5\\nstart=10240, size=2048, type=83\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let text = inspect(&img);
    let head = text.lines().next().unwrap();
    assert!(
        head.ends_with("raw disk image (MBR, 3 partitions incl. 1 extended)"),
        "{text}"
    );
    let rows = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with(|c: char| c.is_ascii_digit()) && t.contains(" MiB ")
        })
        .count();
    assert_eq!(rows, 3, "{text}");
}

#[test]
fn an_unreplayed_journal_is_said_once() {
    if !have_all(&["mke2fs", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("j.img");
    sh(&format!("mke2fs -q -F -t ext4 '{}' 8M", img.display()));
    sh(&format!(
        "debugfs -w -R 'feature needs_recovery' '{}' >/dev/null 2>&1",
        img.display()
    ));
    let text = inspect(&img);
    let w = section(&text, "warnings");
    assert_eq!(
        w,
        vec!["    ! whole image: ext: needs_recovery is set (journal not replayed), so the block bitmaps may be stale; every block is kept"],
        "{text}"
    );
}

#[test]
fn use_is_the_filesystems_own_and_the_kept_tail_is_said_apart() {
    if !have_all(&["sfdisk", "mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("t.img");
    std::fs::write(&img, vec![0u8; 40 << 20]).unwrap();
    sh(&format!(
        "printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q '{}'",
        img.display()
    ));
    // A 12 MiB filesystem in a 39 MiB partition: the rest of the partition is kept (nothing
    // says it is free) but is not the filesystem's use.
    let part = dir.path().join("p.img");
    sh(&format!("mke2fs -q -F -t ext4 '{}' 12M", part.display()));
    sh(&format!(
        "dd if='{}' of='{}' bs=1M seek=1 conv=notrunc status=none",
        part.display(),
        img.display()
    ));
    let text = inspect(&img);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("used "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("(+27.0 MiB after its end, kept)"),
        "{line}\n{text}"
    );
    let pct: u32 = line
        .split('(')
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(999);
    assert!(pct < 50, "{line}");
    assert!(line.contains("size 12.0 MiB"), "{line}");
}
