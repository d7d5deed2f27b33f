//! Damaged ext2/3/4 filesystems whose bitmaps understate use: the map must still keep every
//! block in use (spec/safety.md, "bounded loss").
//!
//! A generator builds real filesystems with `mke2fs -d` from a seeded tree (sparse files for
//! extent trees and indirect blocks, xattr blocks, fast and slow symlinks, many directories),
//! then damages them with `debugfs` under a fixed seed: bitmap bits cleared under file data,
//! tree blocks, directories, xattr blocks and the journal; `BLOCK_UNINIT` set over files; a
//! cluster claimed by two files and marked free; `INODE_UNINIT`/`itable_unused` forged over
//! live inodes; inode bitmap bits cleared. Every case is proven two ways:
//!
//! 1. the oracle of `shared/tools/ext-cover.py`: every block dumpe2fs calls used, plus every
//!    block `e2fsck -fn` finds in use but marked free, is in the map;
//! 2. the restore proof: only the mapped bytes are copied onto random garbage, then `e2fsck
//!    -fn` prints the same on both (problems included) and every file, symlink and directory
//!    read with `debugfs rdump` is identical.
//!
//! A control shows the proof has teeth: restoring the bitmap-only map of a damaged image
//! loses file contents.
//!
//! Needs e2fsprogs (mke2fs, debugfs, e2fsck, dumpe2fs); no root.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockwise::ExtentMap;
use common::damage::Rng;
use common::have_all;
use sha2::{Digest, Sha256};

fn tools() -> bool {
    have_all(&["mke2fs", "debugfs", "e2fsck", "dumpe2fs"])
}

fn run(cmd: &mut Command) -> (String, i32) {
    let o = cmd.output().expect("spawn");
    (
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        o.status.code().unwrap_or(-1),
    )
}

fn debugfs(img: &Path, req: &str) -> String {
    run(Command::new("debugfs").args(["-R", req]).arg(img)).0
}

/// Runs `cmds` in one writable debugfs session.
fn debugfs_w(img: &Path, cmds: &[String]) {
    let f = img.with_extension("cmds");
    std::fs::write(&f, cmds.join("\n") + "\n").unwrap();
    let (out, code) = run(Command::new("debugfs").args(["-w", "-f"]).arg(&f).arg(img));
    assert_eq!(code, 0, "debugfs {cmds:?}: {out}");
}

/// The seeded source tree; returns its regular files and directories as image paths.
fn make_tree(root: &Path, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    let mut dirs = vec!["/".to_string()];
    let put = |rel: &str, data: &[u8], files: &mut Vec<String>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        files.push(format!("/{rel}"));
    };
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend(rng.bytes(200_000));
    put("doc.pdf", &pdf, &mut files);
    put("big.bin", &rng.bytes(7 << 20), &mut files);
    put("one", b"1", &mut files);
    put("empty", b"", &mut files);
    for i in 0..40 {
        let n = 100 + rng.below(3000) as usize;
        put(&format!("etc/conf{i}"), &rng.bytes(n), &mut files);
    }
    for i in 0..6 {
        let n = 50_000 + rng.below(350_000) as usize;
        put(
            &format!("home/pi/photos/img{i}.jpg"),
            &rng.bytes(n),
            &mut files,
        );
    }
    for d in 0..8 {
        for l in 0..4 {
            let n = 1000 + rng.below(60_000) as usize;
            put(
                &format!("usr/lib/d{d}/lib{l}.so"),
                &rng.bytes(n),
                &mut files,
            );
        }
    }
    // Data islands every 64 KiB: one extent each (an extent tree with an index node), or
    // indirect blocks with holes in a block-mapped file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(root.join("sparse.bin")).unwrap();
        for i in 0..40u64 {
            f.seek(SeekFrom::Start(i * 65536)).unwrap();
            f.write_all(&rng.bytes(4096)).unwrap();
        }
        files.push("/sparse.bin".into());
    }
    std::os::unix::fs::symlink("etc/conf1", root.join("fast")).unwrap();
    std::os::unix::fs::symlink("usr/lib/".to_string() + &"x".repeat(90), root.join("slow"))
        .unwrap();
    for d in ["etc", "home", "home/pi", "home/pi/photos", "usr", "usr/lib"] {
        dirs.push(format!("/{d}"));
    }
    for d in 0..8 {
        dirs.push(format!("/usr/lib/d{d}"));
    }
    (files, dirs)
}

/// A filesystem variant: mke2fs arguments and size.
struct Cfg {
    name: &'static str,
    args: &'static str,
    mib: u64,
    /// Descriptor checksums, so the lazy-init hints exist to be forged.
    csum: bool,
    journal: bool,
}

const CFGS: &[Cfg] = &[
    Cfg {
        name: "ext2-1k",
        args: "-t ext2 -b 1024 -I 128",
        mib: 24,
        csum: false,
        journal: false,
    },
    Cfg {
        name: "ext3-4k",
        args: "-t ext3 -b 4096 -g 2048",
        mib: 32,
        csum: false,
        journal: true,
    },
    Cfg {
        name: "ext4",
        args: "-t ext4",
        mib: 32,
        csum: true,
        journal: true,
    },
    Cfg {
        name: "ext4-4k-gdt_csum",
        args: "-t ext4 -b 4096 -g 2048 -O ^metadata_csum,uninit_bg -E lazy_itable_init=0",
        mib: 40,
        csum: true,
        journal: true,
    },
    Cfg {
        name: "ext4-bigalloc",
        args: "-t ext4 -b 1024 -O bigalloc,^resize_inode -C 4096 -g 2048 -E lazy_itable_init=0",
        mib: 32,
        csum: true,
        journal: true,
    },
    Cfg {
        name: "ext4-meta_bg-no_flex",
        args: "-t ext4 -O meta_bg,^resize_inode,^flex_bg -g 4096 -E lazy_itable_init=0",
        mib: 32,
        csum: true,
        journal: true,
    },
];

struct Fs {
    img: PathBuf,
    files: Vec<String>,
    dirs: Vec<String>,
    bs: u64,
    first: u64,
    bpg: u64,
    ipg: u64,
    cluster: u64,
}

fn header_field(dump: &str, key: &str) -> u64 {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim_start_matches(':').trim())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} not in dumpe2fs -h"))
}

fn build(cfg: &Cfg, dir: &Path, seed: u64) -> Fs {
    let src = dir.join("src");
    let (files, dirs) = make_tree(&src, seed);
    let img = dir.join(format!("{}.img", cfg.name));
    let (out, code) = run(Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(cfg.args.split_whitespace())
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(format!("{}M", cfg.mib)));
    assert_eq!(code, 0, "mke2fs {}: {out}", cfg.args);
    // An xattr too large for the inode lands in an xattr block.
    debugfs_w(
        &img,
        &[format!("ea_set /doc.pdf user.note {}", "n".repeat(600))],
    );
    let h = run(Command::new("dumpe2fs").arg("-h").arg(&img)).0;
    let bs = header_field(&h, "Block size");
    let cluster = h
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(bs)
        / bs;
    Fs {
        img,
        files,
        dirs,
        bs,
        first: header_field(&h, "First block"),
        bpg: header_field(&h, "Blocks per group"),
        ipg: header_field(&h, "Inodes per group"),
        cluster,
    }
}

/// Data blocks and tree blocks (IND/DIND/TIND/ETBn) of `path`, from `debugfs stat`.
fn blocks_of(img: &Path, path: &str) -> (Vec<u64>, Vec<u64>) {
    let stat = debugfs(img, &format!("stat {path}"));
    let mut data = Vec::new();
    let mut tree = Vec::new();
    let Some(i) = stat.find("BLOCKS:").or_else(|| stat.find("EXTENTS:")) else {
        return (data, tree);
    };
    for tok in stat[i..].split(", ") {
        let Some((label, phys)) = tok.trim().rsplit_once("):") else {
            continue;
        };
        let phys = phys.split_whitespace().next().unwrap_or("");
        let label = label.rsplit('(').next().unwrap_or("");
        let (a, b) = match phys.split_once('-') {
            Some((a, b)) => (a.parse::<u64>(), b.parse::<u64>()),
            None => (phys.parse(), phys.parse()),
        };
        let (Ok(a), Ok(b)) = (a, b) else { continue };
        let is_tree = label.contains("IND") || label.starts_with("ETB");
        for x in a..=b {
            if is_tree {
                tree.push(x);
            } else {
                data.push(x);
            }
        }
    }
    (data, tree)
}

fn inode_of(img: &Path, path: &str) -> u64 {
    let out = debugfs(img, &format!("stat {path}"));
    out.split("Inode: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no inode for {path}: {out}"))
}

/// Group flags as `dumpe2fs` names them.
fn group_flags(img: &Path, g: u64) -> u64 {
    let d = run(Command::new("dumpe2fs").arg(img)).0;
    let line = d
        .lines()
        .find(|l| l.starts_with(&format!("Group {g}: ")))
        .unwrap_or_else(|| panic!("group {g} not in dumpe2fs"));
    let mut f = 0;
    for (name, bit) in [
        ("INODE_UNINIT", 1),
        ("BLOCK_UNINIT", 2),
        ("ITABLE_ZEROED", 4),
    ] {
        if line.contains(name) {
            f |= bit;
        }
    }
    f
}

/// One contiguous physical run inside `blocks`, starting at a random one.
fn run_in(blocks: &[u64], rng: &mut Rng) -> (u64, u64) {
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let i = rng.below(sorted.len() as u64) as usize;
    let mut n = 1;
    let want = 1 + rng.below(64);
    while i + (n as usize) < sorted.len() && sorted[i + n as usize] == sorted[i] + n && n < want {
        n += 1;
    }
    (sorted[i], n)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    ClearData,
    ClearTree,
    ClearDir,
    ClearXattr,
    ClearJournal,
    BlockUninit,
    DoubleClaim,
    InodeUninitForged,
    InodeUninitFullyForged,
    ItableUnusedForged,
    InodeBitsCleared,
}

const KINDS: &[Kind] = &[
    Kind::ClearData,
    Kind::ClearTree,
    Kind::ClearDir,
    Kind::ClearXattr,
    Kind::ClearJournal,
    Kind::BlockUninit,
    Kind::DoubleClaim,
    Kind::InodeUninitForged,
    Kind::InodeUninitFullyForged,
    Kind::ItableUnusedForged,
    Kind::InodeBitsCleared,
];

/// Applies one damage of `kind`; `None` when it does not apply to this filesystem.
fn damage(fs: &Fs, cfg: &Cfg, kind: Kind, rng: &mut Rng) -> Option<String> {
    let img = &fs.img;
    let with_data: Vec<&String> = fs
        .files
        .iter()
        .filter(|f| !blocks_of(img, f).0.is_empty())
        .collect();
    let free = |b: u64, n: u64| format!("freeb {b} {n}");
    let group_of = |b: u64| (b - fs.first) / fs.bpg;
    let cmds: Vec<String> = match kind {
        Kind::ClearData => {
            let mut c = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let f = rng.pick(&with_data)?;
                let (b, n) = run_in(&blocks_of(img, f).0, rng);
                c.push(free(b, n));
            }
            c
        }
        Kind::ClearTree => {
            let f = ["/sparse.bin", "/big.bin"]
                .into_iter()
                .find(|f| !blocks_of(img, f).1.is_empty())?;
            let tree = blocks_of(img, f).1;
            tree.iter().map(|&b| free(b, 1)).collect()
        }
        Kind::ClearDir => {
            let d = rng.pick(&fs.dirs)?;
            blocks_of(img, d).0.iter().map(|&b| free(b, 1)).collect()
        }
        Kind::ClearXattr => {
            let stat = debugfs(img, "stat /doc.pdf");
            let acl: u64 = stat
                .split("File ACL: ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (acl != 0).then(|| vec![free(acl, 1)])?
        }
        Kind::ClearJournal => {
            if !cfg.journal {
                return None;
            }
            let (data, tree) = blocks_of(img, "<8>");
            let (b, n) = run_in(&data, rng);
            let mut c = vec![free(b, n)];
            c.extend(tree.iter().map(|&t| free(t, 1)));
            c
        }
        Kind::BlockUninit => {
            if !cfg.csum {
                return None;
            }
            // A group past the first that holds file data.
            let mut groups: Vec<u64> = with_data
                .iter()
                .flat_map(|f| blocks_of(img, f).0)
                .map(group_of)
                .filter(|&g| g > 0)
                .collect();
            groups.sort_unstable();
            groups.dedup();
            let g = *rng.pick(&groups)?;
            let flags = group_flags(img, g) | 2;
            vec![
                format!("set_bg {g} flags {flags}"),
                format!("set_bg {g} checksum calc"),
            ]
        }
        Kind::DoubleClaim => {
            // B's only block becomes one of A's; then that block (cluster) is freed.
            let a = rng.pick(&with_data)?;
            let small: Vec<&&String> = with_data
                .iter()
                .filter(|f| **f != *a && blocks_of(img, f).0.len() == 1)
                .collect();
            let b = rng.pick(&small)?;
            let (ad, _) = blocks_of(img, a);
            let x = *rng.pick(&ad)?;
            let stat = debugfs(img, &format!("stat {b}"));
            let mut c = Vec::new();
            if stat.contains("EXTENTS:") {
                // A one-extent tree root: header (magic, 1 entry, max 4, depth 0), then
                // logical 0, length 1, start x.
                let words = [0x0001_F30Au32, 4, 0, 0, 1, x as u32];
                for (i, w) in words.iter().enumerate() {
                    c.push(format!("sif {b} block[{i}] {w}"));
                }
            } else {
                c.push(format!("sif {b} block[0] {x}"));
            }
            let cl = x - x % fs.cluster;
            c.push(free(cl, fs.cluster));
            c
        }
        Kind::InodeUninitForged | Kind::InodeUninitFullyForged | Kind::ItableUnusedForged => {
            if !cfg.csum {
                return None;
            }
            // A group whose inodes own files; its data is freed too, so only the inodes
            // say it is in use.
            let f = rng.pick(&with_data)?;
            let g = (inode_of(img, f) - 1) / fs.ipg;
            let mut c = Vec::new();
            let flags = group_flags(img, g);
            match kind {
                Kind::InodeUninitForged => c.push(format!("set_bg {g} flags {}", flags | 1)),
                Kind::InodeUninitFullyForged => {
                    // Every counter agrees with the flag: only the guard block read past
                    // the (zero) high-water mark of a zeroed table can tell.
                    if flags & 4 == 0 {
                        return None;
                    }
                    c.push(format!("set_bg {g} flags {}", flags | 1));
                    c.push(format!("set_bg {g} free_inodes_count {}", fs.ipg));
                    c.push(format!("set_bg {g} itable_unused {}", fs.ipg));
                }
                _ => c.push(format!("set_bg {g} itable_unused {}", fs.ipg)),
            }
            c.push(format!("set_bg {g} checksum calc"));
            let (b, n) = run_in(&blocks_of(img, f).0, rng);
            c.push(free(b, n));
            c
        }
        Kind::InodeBitsCleared => {
            // The newest inodes' bits and their data: only link counts and the guard block
            // past the bitmap's last set bit can tell.
            let mut by_ino: Vec<(u64, &String)> =
                with_data.iter().map(|f| (inode_of(img, f), *f)).collect();
            by_ino.sort();
            let mut c = Vec::new();
            for (ino, f) in by_ino.iter().rev().take(1 + rng.below(3) as usize) {
                c.push(format!("freei <{ino}>"));
                let (b, n) = run_in(&blocks_of(img, f).0, rng);
                c.push(free(b, n));
            }
            c
        }
    };
    if cmds.is_empty() {
        return None;
    }
    debugfs_w(img, &cmds);
    Some(format!("{kind:?}: {}", cmds.join("; ")))
}

/// What `blockwise` maps for the image (the whole pipeline: layout, probe, map).
fn map_of(img: &Path) -> (ExtentMap, blockwise::report::Report) {
    let r = blockwise::report::inspect_path(img).unwrap();
    let m = r.usage.as_ref().unwrap().used.clone();
    (m, r)
}

/// ext-cover's oracle: bitmap-used blocks plus e2fsck's "+" bitmap differences.
fn oracle_used(fs: &Fs) -> Vec<u64> {
    let d = run(Command::new("dumpe2fs").arg(&fs.img)).0;
    let total = {
        let h = run(Command::new("dumpe2fs").arg("-h").arg(&fs.img)).0;
        header_field(&h, "Block count")
    };
    let mut used = vec![true; total as usize];
    for l in d.lines() {
        let Some(list) = l.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            for x in a..(b + fs.cluster).min(total) {
                used[x as usize] = false;
            }
        }
    }
    for b in e2fsck_plus(&fs.img, fs.cluster) {
        if let Some(u) = used.get_mut(b as usize) {
            *u = true;
        }
    }
    (0..total).filter(|&b| used[b as usize]).collect()
}

/// Blocks `e2fsck -fn` reports in use but marked free ("Block bitmap differences: +...").
fn e2fsck_plus(img: &Path, cluster: u64) -> Vec<u64> {
    let out = run(Command::new("e2fsck").arg("-fn").arg(img)).0;
    let mut v = Vec::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find("Block bitmap differences:") {
        rest = &rest[i + 25..];
        let end = rest.find("\nFix?").unwrap_or(rest.len());
        for tok in rest[..end].split_whitespace() {
            let Some(t) = tok.strip_prefix('+') else {
                continue;
            };
            let t = t.trim_start_matches('(').trim_end_matches(')');
            let (a, b) = t.split_once("--").unwrap_or((t, t));
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                v.extend(a..b + cluster);
            }
        }
    }
    v
}

fn restore_to_garbage(img: &Path, map: &ExtentMap, out: &Path) {
    let size = std::fs::metadata(img).unwrap().len();
    common::restore_to_file(img, map, out, 0xbad ^ size);
}

/// `e2fsck -fn` output and exit code, with the image's path taken out.
fn fsck(img: &Path) -> String {
    let (out, code) = run(Command::new("e2fsck").arg("-fn").arg(img));
    let name = img.to_string_lossy();
    format!("exit {code}\n{}", out.replace(name.as_ref(), "IMG"))
}

/// Every file (SHA-256), symlink (target) and directory read back by `debugfs rdump`.
fn rdump(img: &Path, out: &Path) -> BTreeMap<String, String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    debugfs(img, &format!("rdump / {}", out.display()));
    let mut m = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(out).unwrap().to_string_lossy().into_owned();
            let t = e.file_type().unwrap();
            let v = if t.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                let data = std::fs::read(&p).unwrap();
                blockwise::bmap::hex(&Sha256::digest(&data))
            };
            m.insert(rel, v);
        }
    }
    m
}

/// The bitmap-only map (what a reader that trusts the bitmaps keeps), in bytes.
fn bitmap_only_map(fs: &Fs) -> ExtentMap {
    let d = run(Command::new("dumpe2fs").arg(&fs.img)).0;
    let size = std::fs::metadata(&fs.img).unwrap().len();
    let mut free = ExtentMap::new();
    for l in d.lines() {
        let Some(list) = l.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            free.insert(a * fs.bs, ((b + fs.cluster) * fs.bs).min(size));
        }
    }
    ExtentMap::single(0, size).subtract(&free)
}

/// Oracle coverage plus the restore proof; returns the bytes the cross-check added. The
/// oracle (ext-cover's: every bitmap-used block) is held to the map with whole inode tables;
/// the restore proof uses the map as it is, without the inode-table blocks no inode can
/// occupy (`spec/safety.md`, *Tight inode tables*).
fn prove(fs: &Fs, what: &str, work: &Path) -> u64 {
    let (tight, report) = map_of(&fs.img);
    let whole = blockwise::report::inspect_path_with(
        &fs.img,
        blockwise::map::MapRules {
            whole_metadata: true,
        },
    )
    .unwrap()
    .usage
    .unwrap()
    .used;
    let left_out: u64 = report
        .usage
        .as_ref()
        .unwrap()
        .parts
        .iter()
        .map(|p| p.metadata_left_out)
        .sum();
    assert_eq!(
        whole.subtract(&tight).total(),
        left_out,
        "{what}: the maps differ by more than the spare inode tables"
    );
    assert_eq!(tight.subtract(&whole), ExtentMap::new(), "{what}");
    let map = whole;
    let added: u64 = report
        .usage
        .as_ref()
        .unwrap()
        .parts
        .iter()
        .filter_map(|p| p.cross_check.as_ref())
        .map(|c| c.added)
        .sum();
    let missing: Vec<u64> = oracle_used(fs)
        .into_iter()
        .filter(|&b| map.covered(b * fs.bs, (b + 1) * fs.bs) < fs.bs)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} used blocks not mapped (first {:?})\n{:?}",
        missing.len(),
        &missing[..missing.len().min(8)],
        report.warnings
    );
    let restored = work.join("restored.img");
    restore_to_garbage(&fs.img, &tight, &restored);
    assert_eq!(fsck(&fs.img), fsck(&restored), "{what}: e2fsck differs");
    let a = rdump(&fs.img, &work.join("dump-a"));
    assert!(a.len() > 50, "{what}: rdump found only {} entries", a.len());
    assert_eq!(
        a,
        rdump(&restored, &work.join("dump-b")),
        "{what}: files differ"
    );
    added
}

fn cfg_cases(cfg: &Cfg, seeds: &[u64]) {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = build(cfg, dir.path(), 7);
    // Healthy: the cross-check finds nothing to add, and the proof holds.
    assert_eq!(
        prove(&base, &format!("{} healthy", cfg.name), dir.path()),
        0
    );
    let pristine = std::fs::read(&base.img).unwrap();
    let mut applied = 0;
    for &seed in seeds {
        for (k, &kind) in KINDS.iter().enumerate() {
            std::fs::write(&base.img, &pristine).unwrap();
            let mut rng = Rng::new(seed * 131 + k as u64);
            let Some(what) = damage(&base, cfg, kind, &mut rng) else {
                continue;
            };
            let what = format!("{} seed {seed}: {what}", cfg.name);
            let added = prove(&base, &what, dir.path());
            eprintln!("ok ({added} bytes added back): {what}");
            applied += 1;
        }
    }
    assert!(
        applied >= seeds.len() * 5,
        "only {applied} damage cases applied"
    );
}

#[test]
fn damaged_ext2_1k() {
    cfg_cases(&CFGS[0], &[1, 2]);
}

#[test]
fn damaged_ext3_4k() {
    cfg_cases(&CFGS[1], &[1, 2]);
}

#[test]
fn damaged_ext4() {
    cfg_cases(&CFGS[2], &[1, 2, 3]);
}

#[test]
fn damaged_ext4_gdt_csum() {
    cfg_cases(&CFGS[3], &[1, 2]);
}

#[test]
fn damaged_ext4_bigalloc() {
    cfg_cases(&CFGS[4], &[1, 2]);
}

#[test]
fn damaged_ext4_meta_bg() {
    cfg_cases(&CFGS[5], &[1, 2]);
}

/// The proof has teeth: on an image whose bitmap lost bits under file data, restoring the
/// bitmap-only map loses file contents, while blockwise's map restores everything.
#[test]
fn bitmap_only_map_loses_data() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = build(&CFGS[2], dir.path(), 11);
    debugfs_w(&fs.img, &{
        let (d, _) = blocks_of(&fs.img, "/big.bin");
        vec![format!("freeb {} 200", d[100])]
    });
    let added = prove(&fs, "big.bin bits cleared", dir.path());
    assert_eq!(added, 200 * fs.bs);
    let restored = dir.path().join("bitmap-only.img");
    restore_to_garbage(&fs.img, &bitmap_only_map(&fs), &restored);
    let a = rdump(&fs.img, &dir.path().join("a"));
    let b = rdump(&restored, &dir.path().join("b"));
    assert_ne!(a.get("big.bin"), b.get("big.bin"));
}

/// Inode tables pointed at one another (every group's at group 0's, descriptor checksums
/// recomputed): which inodes are real cannot be told, and reading a table per group would
/// read the same blocks once per group. The volume is kept whole, and said why.
#[test]
fn overlapping_inode_tables_keep_the_volume_whole() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext.img");
    let (out, code) = run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", "^flex_bg"])
        .arg(&img)
        .arg("64M"));
    assert_eq!(code, 0, "{out}");
    let dump = run(Command::new("dumpe2fs").arg(&img)).0;
    let tables: Vec<u64> = dump
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Inode table at "))
        .map(|r| r.split('-').next().unwrap().parse().unwrap())
        .collect();
    assert!(tables.len() >= 8, "{dump}");
    let cmds: Vec<String> = (1..tables.len())
        .flat_map(|g| {
            [
                format!("set_bg {g} inode_table {}", tables[0]),
                format!("set_bg {g} checksum calc"),
            ]
        })
        .collect();
    debugfs_w(&img, &cmds);
    let (map, report) = map_of(&img);
    assert_eq!(map, ExtentMap::single(0, 64 << 20));
    let said = serde_json::to_string(&report).unwrap();
    assert!(
        said.contains("inode tables of groups 0 and 1 overlap"),
        "{said}"
    );
}
