//! Partition-table reading checked against real tools (sfdisk, sgdisk, fdisk, mkfs.vfat) and
//! the shared corpus, plus hand-made damage: corrupt headers, truncation, EBR loops, absurd
//! entry counts, and a deterministic mutation run that must never panic.
//!
//! Tests that need a missing tool or corpus file print why and return (and fail instead under
//! `BLOCKWISE_REQUIRE_ORACLES=1` / `BLOCKWISE_REQUIRE_CORPUS=1`, as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use blockwise::io::MemSource;
use blockwise::layout::{read_layout, Layout, PartKind, TableKind};
use common::{have, have_all};
use serde_json::Value;

/// Runs a command, feeding `stdin`, and returns stdout; panics with stderr on failure.
fn run(cmd: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn layout_of(bytes: &[u8]) -> Layout {
    read_layout(&MemSource(bytes.to_vec()), None).expect("read_layout")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sfdisk_json(p: &Path) -> Value {
    serde_json::from_str(&run("sfdisk", &["--json", s(p)], "")).unwrap()
}

fn has_warning(l: &Layout, needle: &str) -> bool {
    l.warnings.iter().any(|w| w.contains(needle))
}

/// Partition number from an sfdisk node name ("/tmp/x/disk.img5" -> 5).
fn node_index(node: &str) -> u32 {
    let digits: String = node
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

const MBR_SCRIPT: &str = "label: dos
label-id: 0x12345678
start=2048, size=4096, type=c, bootable
start=6144, size=4096, type=83
start=10240, size=20480, type=5
start=12288, size=2048, type=83
start=16384, size=2048, type=82
start=20480, size=4096, type=8e
";

fn make_mbr(dir: &Path) -> PathBuf {
    let img = blank(dir, "mbr.img", 16 << 20);
    run("sfdisk", &["-q", s(&img)], MBR_SCRIPT);
    img
}

const GPT_SCRIPT: &[&str] = &[
    "-o",
    "-U",
    "0A0A0A0A-0000-4000-8000-000000000001",
    "-n1:2048:+2M",
    "-t1:ef00",
    "-c1:EFI system",
    "-n2:0:+3M",
    "-t2:8300",
    "-c2:root ñ",
    "-n3:0:+1M",
    "-t3:8200",
    "-c3:swap",
    "-n4:0:0",
    "-t4:0700",
    "-c4:data",
];

fn make_gpt(dir: &Path) -> PathBuf {
    let img = blank(dir, "gpt.img", 16 << 20);
    let mut args: Vec<&str> = GPT_SCRIPT.to_vec();
    args.push(s(&img));
    run("sgdisk", &args, "");
    img
}

fn check_against_sfdisk(l: &Layout, j: &Value) {
    let pt = &j["partitiontable"];
    let ss = pt["sectorsize"].as_u64().unwrap();
    assert_eq!(u64::from(l.sector_size), ss);
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(l.partitions.len(), parts.len(), "{l:#?}");
    for (p, q) in l.partitions.iter().zip(parts) {
        assert_eq!(p.index, node_index(q["node"].as_str().unwrap()));
        assert_eq!(
            p.start,
            q["start"].as_u64().unwrap() * ss,
            "start of {}",
            p.index
        );
        assert_eq!(
            p.size,
            q["size"].as_u64().unwrap() * ss,
            "size of {}",
            p.index
        );
        match &p.kind {
            PartKind::Mbr {
                type_code,
                bootable,
                ..
            } => {
                assert_eq!(format!("{type_code:x}"), q["type"].as_str().unwrap());
                assert_eq!(*bootable, q["bootable"].as_bool().unwrap_or(false));
            }
            PartKind::Gpt {
                type_guid,
                uuid,
                name,
                ..
            } => {
                assert_eq!(type_guid.to_uppercase(), q["type"].as_str().unwrap());
                assert_eq!(uuid.to_uppercase(), q["uuid"].as_str().unwrap());
                assert_eq!(name, q["name"].as_str().unwrap_or(""));
            }
        }
    }
}

#[test]
fn sfdisk_mbr_with_logicals() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_mbr(dir.path());
    let bytes = std::fs::read(&img).unwrap();
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Mbr);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.disk_id.as_deref(), Some("12345678"));
    let j = sfdisk_json(&img);
    assert_eq!(j["partitiontable"]["id"], "0x12345678");
    check_against_sfdisk(&l, &j);
    let idx: Vec<u32> = l.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 2, 3, 5, 6, 7]);
    let mbr = l.mbr.as_ref().unwrap();
    assert_eq!(mbr.active, Some(1));
    assert!(!mbr.protective && !mbr.hybrid);
    assert!(matches!(
        l.partitions[2].kind,
        PartKind::Mbr { extended: true, .. }
    ));
    assert!(matches!(
        l.partitions[4].kind,
        PartKind::Mbr {
            logical: true,
            type_code: 0x82,
            ..
        }
    ));
    assert_eq!(l.partitions[0].type_name, "W95 FAT32 (LBA)");
}

/// Walks the EBR chain by hand and returns the byte offsets of the EBRs.
fn ebr_offsets(bytes: &[u8], ext_start_lba: u64) -> Vec<usize> {
    let mut out = vec![];
    let mut cur = ext_start_lba;
    loop {
        let off = (cur * 512) as usize;
        out.push(off);
        let link = u32::from_le_bytes(bytes[off + 462 + 8..off + 462 + 12].try_into().unwrap());
        if link == 0 {
            return out;
        }
        cur = ext_start_lba + u64::from(link);
    }
}

#[test]
fn ebr_loop_is_reported_and_terminates() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(make_mbr(dir.path())).unwrap();
    let ebrs = ebr_offsets(&bytes, 10240);
    assert_eq!(ebrs.len(), 3);
    // Last EBR links back to the second one.
    let rel = (ebrs[1] / 512 - 10240) as u32;
    let last = ebrs[2];
    bytes[last + 462 + 4] = 0x05;
    bytes[last + 462 + 8..last + 462 + 12].copy_from_slice(&rel.to_le_bytes());
    bytes[last + 462 + 12..last + 462 + 16].copy_from_slice(&100u32.to_le_bytes());
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Mbr);
    assert!(has_warning(&l, "loops back"), "{:?}", l.warnings);
    assert_eq!(l.partitions.len(), 6);

    // A link that points outside the extended partition.
    bytes[last + 462 + 8..last + 462 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let l = layout_of(&bytes);
    assert!(
        has_warning(&l, "outside extended partition"),
        "{:?}",
        l.warnings
    );
    assert_eq!(l.partitions.len(), 6);
}

#[test]
fn mbr_partition_past_end_of_image() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(make_mbr(dir.path())).unwrap();
    // Cut inside logical 7 (LBA 20480 + 1 .. 24577).
    let l = layout_of(&bytes[..22000 * 512]);
    assert!(
        has_warning(&l, "partition 7 ends at")
            && has_warning(&l, "past the end of the image (11264000): image truncated?"),
        "{:?}",
        l.warnings
    );
    assert!(has_warning(&l, "partition 3 ends at"));
    // Cut before the last EBR: the chain stops with a warning instead of failing.
    let l = layout_of(&bytes[..18000 * 512]);
    assert!(
        has_warning(&l, "EBR at LBA 18432 lies past the end of the image"),
        "{:?}",
        l.warnings
    );
    assert_eq!(l.partitions.len(), 5);
}

#[test]
fn sgdisk_gpt_matches_sfdisk_and_sgdisk() {
    if !have_all(&["sgdisk", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    let bytes = std::fs::read(&img).unwrap();
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Gpt);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let j = sfdisk_json(&img);
    check_against_sfdisk(&l, &j);
    let pt = &j["partitiontable"];
    assert_eq!(
        l.disk_id.as_deref().unwrap().to_uppercase(),
        pt["id"].as_str().unwrap()
    );
    let g = l.gpt.as_ref().unwrap();
    assert_eq!(g.first_usable_lba, pt["firstlba"].as_u64().unwrap());
    assert_eq!(g.last_usable_lba, pt["lastlba"].as_u64().unwrap());
    assert!(g.primary_ok && g.backup_ok && !g.used_backup);
    assert!(l.mbr.as_ref().unwrap().protective);
    assert_eq!(l.partitions[0].type_name, "EFI System");
    assert_eq!(l.partitions[2].type_name, "Linux swap");

    // sgdisk -p: "   2            6144           12287   3.0 MiB     8300  root ñ"
    let p = run("sgdisk", &["-p", s(&img)], "");
    let rows: Vec<Vec<&str>> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), l.partitions.len());
    for (r, part) in rows.iter().zip(&l.partitions) {
        assert_eq!(r[0].parse::<u32>().unwrap(), part.index);
        assert_eq!(r[1].parse::<u64>().unwrap() * 512, part.start);
        assert_eq!(
            (r[2].parse::<u64>().unwrap() + 1) * 512,
            part.start + part.size
        );
        let PartKind::Gpt { name, .. } = &part.kind else {
            panic!()
        };
        assert_eq!(r[6..].join(" "), *name);
    }
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header CRC of the GPT header at byte offset `off`.
fn fix_header_crc(b: &mut [u8], off: usize) {
    let hs = u32::from_le_bytes(b[off + 12..off + 16].try_into().unwrap()) as usize;
    put_u32(b, off + 16, 0);
    let crc = crc32fast::hash(&b[off..off + hs]);
    put_u32(b, off + 16, crc);
}

#[test]
fn gpt_corrupt_primary_uses_backup() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(make_gpt(dir.path())).unwrap();
    let reference = layout_of(&good);
    let last_lba = good.len() as u64 / 512 - 1;

    // Flip a byte of the primary header (disk GUID).
    let mut bytes = good.clone();
    bytes[512 + 60] ^= 0x40;
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Gpt);
    let g = l.gpt.as_ref().unwrap();
    assert!(g.used_backup && !g.primary_ok && g.backup_ok);
    assert!(
        has_warning(&l, "primary GPT header corrupt (CRC mismatch")
            && has_warning(&l, &format!("using the backup at LBA {last_lba}")),
        "{:?}",
        l.warnings
    );
    assert_eq!(l.partitions.len(), reference.partitions.len());
    for (a, b) in l.partitions.iter().zip(&reference.partitions) {
        assert_eq!((a.index, a.start, a.size), (b.index, b.start, b.size));
    }

    // Damage the primary entry array instead: header fine, array CRC wrong.
    let mut bytes = good.clone();
    bytes[1024 + 40] ^= 1;
    let l = layout_of(&bytes);
    assert!(l.gpt.as_ref().unwrap().used_backup);
    assert!(
        has_warning(&l, "entry array CRC mismatch"),
        "{:?}",
        l.warnings
    );

    // Both copies damaged: no GPT; the protective MBR is shown and the layout is marked
    // unusable (so nothing is left out on its word), saying why once.
    let mut bytes = good.clone();
    bytes[512 + 60] ^= 0x40;
    let end = bytes.len();
    bytes[end - 512 + 60] ^= 0x40;
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Mbr);
    let why = l.unusable.as_deref().unwrap_or_default();
    assert!(
        why.starts_with("GPT unusable: primary header corrupt (CRC mismatch"),
        "{why}"
    );
    assert!(!has_warning(&l, "GPT unusable"), "{:?}", l.warnings);
}

#[test]
fn gpt_truncated_image_warns() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(make_gpt(dir.path())).unwrap();
    // Partition 3 is LBA 12288..14336, partition 4 starts at 14336.
    let l = layout_of(&good[..13312 * 512]);
    assert_eq!(l.table, TableKind::Gpt);
    assert!(
        has_warning(
            &l,
            "GPT backup header missing or invalid: image truncated or damaged?"
        ),
        "{:?}",
        l.warnings
    );
    assert!(!l.gpt.as_ref().unwrap().backup_ok);
    assert!(has_warning(&l, "partition 4 starts at"), "{:?}", l.warnings);
    assert!(has_warning(&l, "partition 3 ends at"), "{:?}", l.warnings);
}

#[test]
fn gpt_absurd_entry_count_is_bounded() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(make_gpt(dir.path())).unwrap();
    let end = good.len();
    // Primary only: the backup saves the day.
    let mut bytes = good.clone();
    put_u32(&mut bytes, 512 + 80, u32::MAX);
    fix_header_crc(&mut bytes, 512);
    let l = layout_of(&bytes);
    assert!(l.gpt.as_ref().unwrap().used_backup, "{:?}", l.warnings);
    assert!(
        has_warning(&l, "absurd partition entry array"),
        "{:?}",
        l.warnings
    );
    // Both copies, and a huge entry size too.
    put_u32(&mut bytes, end - 512 + 80, u32::MAX);
    put_u32(&mut bytes, end - 512 + 84, 0x8000_0000);
    fix_header_crc(&mut bytes, end - 512);
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Mbr);
    let why = l.unusable.as_deref().unwrap_or_default();
    assert!(why.contains("absurd partition entry array"), "{why}");
}

#[test]
fn hybrid_mbr() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    run("sgdisk", &["-h", "1:2", s(&img)], "");
    let l = layout_of(&std::fs::read(&img).unwrap());
    assert_eq!(l.table, TableKind::Gpt);
    assert_eq!(l.partitions.len(), 4);
    let m = l.mbr.as_ref().unwrap();
    assert!(m.hybrid && !m.protective, "{m:?}");
    // sgdisk puts the hybrid entries first and 0xEE last unless told otherwise.
    let types: Vec<u8> = m.entries.iter().map(|e| e.type_code).collect();
    assert!(types.contains(&0xee) && types.contains(&0xef), "{types:?}");
    let ef = m.entries.iter().find(|e| e.type_code == 0xef).unwrap();
    assert_eq!(
        (ef.start, ef.size),
        (l.partitions[0].start, l.partitions[0].size)
    );
}

#[test]
fn gpt_4096_byte_sectors() {
    if !have("fdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = blank(dir.path(), "g4.img", 8 << 20);
    run(
        "fdisk",
        &["-b", "4096", s(&img)],
        "g\nn\n1\n\n+1M\nn\n2\n\n\nx\nn\n2\nhello\nr\nw\n",
    );
    let bytes = std::fs::read(&img).unwrap();
    for hint in [None, Some(4096), Some(512)] {
        let l = read_layout(&MemSource(bytes.clone()), hint).unwrap();
        assert_eq!(l.table, TableKind::Gpt, "hint {hint:?}");
        assert_eq!(l.sector_size, 4096);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.partitions.len(), 2);
        assert_eq!(l.partitions[0].start, 256 * 4096);
        assert_eq!(l.partitions[0].size, 1 << 20);
        let PartKind::Gpt { name, .. } = &l.partitions[1].kind else {
            panic!()
        };
        assert_eq!(name, "hello");
        assert!(l.mbr.as_ref().unwrap().protective);
    }
    // Cross-check against fdisk's own listing.
    let out = run(
        "fdisk",
        &["-b", "4096", "-l", "-o", "Start,Sectors", s(&img)],
        "",
    );
    let l = layout_of(&bytes);
    let rows: Vec<(u64, u64)> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Start"))
        .skip(1)
        .filter_map(|r| {
            let v: Vec<u64> = r
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| (v[0], v[1]))
        })
        .collect();
    let ours: Vec<(u64, u64)> = l
        .partitions
        .iter()
        .map(|p| (p.start / 4096, p.size / 4096))
        .collect();
    assert_eq!(rows, ours);
}

#[test]
fn whole_disk_fat_is_not_an_mbr() {
    if !have_all(&["mkfs.vfat", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for fat in ["12", "16", "32"] {
        let img = blank(dir.path(), "fat.img", 40 << 20);
        run("mkfs.vfat", &["-F", fat, s(&img)], "");
        let l = layout_of(&std::fs::read(&img).unwrap());
        assert_eq!(l.table, TableKind::None, "FAT{fat}: {l:?}");
        assert!(l.partitions.is_empty() && l.warnings.is_empty());
    }
    // A partitioned image whose partition holds a FAT: still an MBR.
    let img = blank(dir.path(), "part.img", 40 << 20);
    run("sfdisk", &["-q", s(&img)], "start=2048, type=c\n");
    run("mkfs.vfat", &["--offset", "2048", s(&img)], "");
    let l = layout_of(&std::fs::read(&img).unwrap());
    assert_eq!(l.table, TableKind::Mbr);
    assert_eq!(l.partitions.len(), 1);
    assert_eq!(l.partitions[0].start, 2048 * 512);
    // mkfs.vfat over the whole partitioned image replaces the MBR with a boot sector.
    run("mkfs.vfat", &["-I", s(&img)], "");
    let l = layout_of(&std::fs::read(&img).unwrap());
    assert_eq!(l.table, TableKind::None, "{l:?}");
}

#[test]
fn blank_and_tiny_images() {
    for n in [0usize, 1, 100, 511, 512, 1024, 4096, 8192, 1 << 20] {
        let l = layout_of(&vec![0u8; n]);
        assert_eq!(l.table, TableKind::None);
        assert!(l.partitions.is_empty());
    }
}

/// A corpus `.xz` file decompressed, or `None` (after a skip) when the corpus lacks it.
fn corpus_xz(rel: &str) -> Option<Vec<u8>> {
    let p = common::corpus_file(rel)?;
    Some(common::unxz(&p).unwrap_or_else(|| panic!("{rel} does not decode")))
}

/// util-linux blkid lowprobe-pt expectation:
/// `#1:         34       2014  0x0 name='ThisIsName' uuid='…' type='…'`.
#[test]
fn corpus_util_linux_gpt() {
    let (Some(bytes), Some(expected)) = (
        corpus_xz("util-linux/tests/ts/blkid/images-pt/gpt.img.xz"),
        common::corpus_file("util-linux/tests/expected/blkid/lowprobe-pt-gpt"),
    ) else {
        return;
    };
    let expected = std::fs::read_to_string(expected).unwrap();
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Gpt);
    let head = expected.lines().next().unwrap();
    assert!(head.contains(&format!("id={}", l.disk_id.as_deref().unwrap())));
    assert!(head.contains(&format!("sector size: {}", l.sector_size)));
    let rows: Vec<&str> = expected.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(rows.len(), l.partitions.len());
    for (row, p) in rows.iter().zip(&l.partitions) {
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(f[0], format!("#{}:", p.index));
        assert_eq!(f[1].parse::<u64>().unwrap() * 512, p.start);
        assert_eq!(f[2].parse::<u64>().unwrap() * 512, p.size);
        let PartKind::Gpt {
            name,
            uuid,
            type_guid,
            attributes,
        } = &p.kind
        else {
            panic!()
        };
        assert_eq!(f[3], format!("{attributes:#x}"));
        assert!(row.contains(&format!("name='{name}'")), "{row}");
        assert!(row.contains(&format!("uuid='{uuid}'")), "{row}");
        assert!(row.contains(&format!("type='{type_guid}'")), "{row}");
    }
}

#[test]
fn corpus_util_linux_dos_bsd() {
    let (Some(bytes), Some(expected)) = (
        corpus_xz("util-linux/tests/ts/blkid/images-pt/dos+bsd.img.xz"),
        common::corpus_file("util-linux/tests/expected/blkid/lowprobe-pt-dos+bsd"),
    ) else {
        return;
    };
    let expected = std::fs::read_to_string(expected).unwrap();
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Mbr);
    // Only the DOS rows: BSD slices nested in 0xa5 are not ours to list.
    for row in expected.lines().filter(|r| r.contains("uuid=")) {
        let f: Vec<&str> = row.split_whitespace().collect();
        let idx: u32 = f[0].trim_matches(|c| c == '#' || c == ':').parse().unwrap();
        let p = l.partitions.iter().find(|p| p.index == idx).unwrap();
        assert_eq!(f[1].parse::<u64>().unwrap() * 512, p.start);
        assert_eq!(f[2].parse::<u64>().unwrap() * 512, p.size);
    }
}

#[test]
fn corpus_hybrid_mbr_gpt() {
    let (Some(bytes), Some(sg)) = (
        corpus_xz("generated-locally/hybrid-mbr-gpt.img.xz"),
        common::corpus_file("generated-locally/hybrid-mbr-gpt.sgdisk-p.txt"),
    ) else {
        return;
    };
    let sg = std::fs::read_to_string(sg).unwrap();
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Gpt);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert!(l.mbr.as_ref().unwrap().hybrid);
    assert!(sg.contains(&format!(
        "Disk identifier (GUID): {}",
        l.disk_id.as_deref().unwrap().to_uppercase()
    )));
    let rows: Vec<Vec<&str>> = sg
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), l.partitions.len());
    for (r, p) in rows.iter().zip(&l.partitions) {
        assert_eq!(r[0].parse::<u32>().unwrap(), p.index);
        assert_eq!(r[1].parse::<u64>().unwrap() * 512, p.start);
        assert_eq!((r[2].parse::<u64>().unwrap() + 1) * 512, p.start + p.size);
        let PartKind::Gpt { name, .. } = &p.kind else {
            panic!()
        };
        assert_eq!(r[6], name);
    }
    // MBR view (fdisk -t dos): slot 1 0xEE 1..2047, slot 2 0xEF 2048+8192, slot 3 0x07.
    let m = l.mbr.as_ref().unwrap();
    let v: Vec<(u8, u64, u64)> = m
        .entries
        .iter()
        .map(|e| (e.type_code, e.start / 512, e.size / 512))
        .collect();
    assert_eq!(
        v,
        [(0xee, 1, 2047), (0xef, 2048, 8192), (0x07, 10240, 8192)]
    );
}

#[test]
fn corpus_isohybrid() {
    let (Some(hybrid), Some(gpt)) = (
        common::corpus_file("generated-locally/eltorito-hybrid.iso"),
        common::corpus_file("generated-locally/eltorito-gpt.iso"),
    ) else {
        return;
    };
    let iso = std::fs::read(hybrid).unwrap();
    // xorriso report: p1 0x83 start 0 size 3024, p2 0xef start 3024 size 2880.
    let l = layout_of(&iso);
    assert_eq!(l.table, TableKind::Mbr, "{l:?}");
    let v: Vec<(u32, u64, u64)> = l
        .partitions
        .iter()
        .map(|p| (p.index, p.start / 512, p.size / 512))
        .collect();
    assert_eq!(v, [(1, 0, 3024), (2, 3024, 2880)]);

    let iso = std::fs::read(gpt).unwrap();
    // xorriso report: MBR 0xEE + bootable 0x00 slot 2; GPT ISO9660 64+3044, ESP appended.
    let l = layout_of(&iso);
    assert_eq!(l.table, TableKind::Gpt, "{:?}", l.warnings);
    let m = l.mbr.as_ref().unwrap();
    assert!(m.protective && m.active == Some(2), "{m:?}");
    assert_eq!(l.partitions[0].start, 64 * 512);
    assert_eq!(l.partitions[0].size, 3044 * 512);
    assert_eq!(l.partitions[1].type_name, "EFI System");
}

/// Flips bytes in the structures a partition reader looks at and, half of the time, repairs
/// the GPT CRCs so the damage reaches past the checksum checks.
fn mutate_and_read(image: &[u8], hot: &[std::ops::Range<usize>], seed: u64, rounds: usize) {
    let mut rng = common::XorShift(seed);
    let mut buf = image.to_vec();
    for round in 0..rounds {
        buf.copy_from_slice(image);
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            let r = &hot[rng.below(hot.len())];
            let off = r.start + rng.below(r.len());
            buf[off] = match rng.below(4) {
                0 => buf[off] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0,
                _ => rng.next() as u8,
            };
        }
        if rng.below(2) == 0 {
            let end = buf.len();
            for h in [512, end - 512] {
                if &buf[h..h + 8] == b"EFI PART" {
                    let lba = u64::from_le_bytes(buf[h + 72..h + 80].try_into().unwrap());
                    let n = u32::from_le_bytes(buf[h + 80..h + 84].try_into().unwrap()) as usize;
                    let sz = u32::from_le_bytes(buf[h + 84..h + 88].try_into().unwrap()) as usize;
                    let a = (lba as usize).saturating_mul(512);
                    if let Some(arr) = n
                        .checked_mul(sz)
                        .and_then(|len| buf.get(a..a.checked_add(len)?))
                    {
                        let crc = crc32fast::hash(arr);
                        put_u32(&mut buf, h + 88, crc);
                    }
                    let hs = u32::from_le_bytes(buf[h + 12..h + 16].try_into().unwrap());
                    if (92..=512).contains(&hs) {
                        fix_header_crc(&mut buf, h);
                    }
                }
            }
        }
        let src = MemSource(std::mem::take(&mut buf));
        for hint in [None, Some(4096)] {
            let r = std::panic::catch_unwind(|| read_layout(&src, hint));
            assert!(r.is_ok(), "panic at round {round} (seed {seed})");
        }
        buf = src.0;
    }
}

#[test]
fn mutations_never_panic() {
    if !have_all(&["sfdisk", "sgdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Small images keep a few thousand rounds fast.
    let mbr = blank(dir.path(), "m.img", 1 << 20);
    run(
        "sfdisk",
        &["-q", s(&mbr)],
        "label: dos\nstart=64, size=256, type=83\nstart=400, size=1500, type=f\nstart=448, size=200, type=83\nstart=700, size=300, type=7\nstart=1100, size=400, type=82\n",
    );
    let mbr = std::fs::read(&mbr).unwrap();
    let ebrs: Vec<std::ops::Range<usize>> = ebr_offsets(&mbr, 400)
        .into_iter()
        .map(|o| o + 446..o + 512)
        .collect();
    let mut hot = vec![0..512, 446..512, 446..512];
    hot.extend(ebrs.iter().cloned());
    hot.extend(ebrs);
    mutate_and_read(&mbr, &hot, 0x9e37_79b9_7f4a_7c15, 2500);

    let gpt = blank(dir.path(), "g.img", 1 << 20);
    run(
        "sgdisk",
        &["-n1:34:+100K", "-c1:one", "-n2:0:+200K", "-n3:0:0", s(&gpt)],
        "",
    );
    let gpt = std::fs::read(&gpt).unwrap();
    let end = gpt.len();
    let hot = vec![
        0..512,
        446..512,
        512..604,
        512..604,
        1024..1024 + 3 * 128,
        end - 512..end - 420,
        end - 512..end - 420,
        end - 33 * 512..end - 33 * 512 + 3 * 128,
    ];
    mutate_and_read(&gpt, &hot, 0xdead_beef_cafe_f00d, 2500);
}

/// Foreign partition tables (BSD, Sun, SGI, Atari, DASD) are not ours to list, but must not be
/// mistaken for an MBR or GPT.
#[test]
fn corpus_foreign_tables_are_not_mbr() {
    for name in [
        "atari-primary",
        "atari-xgm",
        "bsd",
        "dasd-cdl",
        "dasd-ldl",
        "sgi",
        "sun",
    ] {
        let Some(bytes) = corpus_xz(&format!(
            "util-linux/tests/ts/blkid/images-pt/{name}.img.xz"
        )) else {
            continue;
        };
        let l = layout_of(&bytes);
        eprintln!("{name}: {:?} {:?}", l.table, l.warnings);
        assert_eq!(l.table, TableKind::None, "{name}: {l:?}");
    }
}

#[test]
fn gpt_without_protective_mbr_is_reported() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(make_gpt(dir.path())).unwrap();
    bytes[..512].fill(0);
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::Gpt);
    assert_eq!(l.partitions.len(), 4);
    assert!(l.mbr.is_none());
    assert!(
        has_warning(&l, "no protective 0xEE entry"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn corpus_whole_disk_ntfs_is_not_an_mbr() {
    let Some(bytes) = corpus_xz("generated-locally/ntfs.img.xz") else {
        return;
    };
    let l = layout_of(&bytes);
    assert_eq!(l.table, TableKind::None, "{l:?}");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}
