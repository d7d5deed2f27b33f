//! `blockwise convert` end to end, from the bundled sample card: every output format is read
//! back by the reference tool (qemu-img check/compare, simg2img/img2simg, zstd -d, xz -d) and
//! holds exactly what the skip rule carried (free space zeroed), or, with `--keep-free`, the
//! card byte for byte; the restore proof passes from a qcow2; outputs blockwise reads convert
//! back identical; and the command's safety (no overwrite without --force), JSON summary and
//! errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use blockwise::bmap;
use common::*;

/// Sample partitions (start, size) in bytes, as `make-sample.sh` lays them out.
const PARTS: [(u64, u64); 2] = [(8192 * 512, 98304 * 512), (106496 * 512, 155648 * 512)];

fn bw(args: &[&str]) -> Output {
    blockwise().args(args).output().expect("run blockwise")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "blockwise failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sample card, the map convert carries from it (what `blockwise bmap` lists), and the
/// reference a default conversion must equal: the card with every byte outside the map zero.
struct Sample {
    _dir: tempfile::TempDir,
    card: PathBuf,
    map: blockwise::ExtentMap,
    reference: PathBuf,
}

fn sample() -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let fresh = unpack_sample(dir.path());
    let bmap_path = dir.path().join("card.bmap");
    ok(&bw(&["bmap", p(&fresh), "-o", p(&bmap_path)]));
    let map = bmap::parse(&std::fs::read(&bmap_path).unwrap())
        .unwrap()
        .extent_map();
    // A reused card: the sample's blocks over old data everywhere else, so that a byte of
    // free space carried by mistake (a cluster only partly used) shows.
    let card = dir.path().join("reused.img");
    restore_to_file(&fresh, &map, &card, 0x01d_da7a);
    let mut bytes = std::fs::read(&card).unwrap();
    let original = bytes.clone();
    for g in map.gaps(bytes.len() as u64).iter() {
        bytes[g.start as usize..g.end as usize].fill(0);
    }
    assert!(bytes != original, "the card's free space holds old data");
    let reference = dir.path().join("reference.img");
    std::fs::write(&reference, &bytes).unwrap();
    Sample {
        _dir: dir,
        card,
        map,
        reference,
    }
}

impl Sample {
    fn dir(&self) -> &Path {
        self.card.parent().unwrap()
    }
}

/// `qemu-img check` finds nothing wrong (qemu does not check VHD: "does not support checks").
fn assert_qemu_check_clean(path: &Path, fmt: &str) {
    let o = std::process::Command::new("qemu-img")
        .args(["check", "-f", fmt, p(path)])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if fmt == "vpc" {
        assert!(text.contains("does not support checks"), "{text}");
        return;
    }
    assert!(
        o.status.success(),
        "qemu-img check {}: {text}",
        path.display()
    );
    assert!(text.contains("No errors were found"), "{text}");
}

/// `qemu-img compare` says identical, and the virtual size is the raw image's (`-s` would also
/// hold the allocation status against a raw file's, which is not what is compared here).
fn assert_qemu_identical(raw: &Path, other: &Path, fmt: &str) {
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt, p(raw), p(other)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        other.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let info: serde_json::Value = serde_json::from_str(&sh(&format!(
        "qemu-img info --output=json -f {fmt} {}",
        p(other)
    )))
    .unwrap();
    assert_eq!(
        info["virtual-size"],
        std::fs::metadata(raw).unwrap().len(),
        "{}",
        other.display()
    );
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: sizes",
        a.display(),
        b.display()
    );
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// The container outputs: file name, extra arguments, qemu-img's format name.
const CONTAINERS: [(&str, &[&str], &str); 6] = [
    ("out.qcow2", &[], "qcow2"),
    ("zlib.qcow2", &["--compress", "zlib"], "qcow2"),
    (
        "zstd.qcow2",
        &["--compress", "zstd", "--level", "5"],
        "qcow2",
    ),
    ("out.vhd", &[], "vpc"),
    ("fixed.vhd", &["--vhd", "fixed"], "vpc"),
    ("out.vhdx", &[], "vhdx"),
];

#[test]
fn container_outputs_are_clean_and_identical_for_qemu() {
    if !have("qemu-img") {
        return;
    }
    let s = sample();
    for keep_free in [false, true] {
        for (name, extra, fmt) in CONTAINERS {
            let out = s
                .dir()
                .join(format!("{}{name}", if keep_free { "k-" } else { "" }));
            let mut args = vec!["convert", p(&s.card), p(&out)];
            args.extend_from_slice(extra);
            if keep_free {
                args.push("--keep-free");
            }
            ok(&bw(&args));
            assert_qemu_check_clean(&out, fmt);
            // Default: the card with free space dropped; --keep-free: the card itself.
            let want = if keep_free { &s.card } else { &s.reference };
            assert_qemu_identical(want, &out, fmt);
        }
    }
    // What the Azure rule and the VHD specification ask of the footer.
    let fixed = std::fs::read(s.dir().join("fixed.vhd")).unwrap();
    let f = &fixed[fixed.len() - 512..];
    assert_eq!(&f[0..8], b"conectix");
    let size = u64::from_be_bytes(f[48..56].try_into().unwrap());
    assert_eq!(size % (1 << 20), 0);
    assert_eq!(size + 512, fixed.len() as u64);
    let sum = !f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), sum);
    // 128 MiB: the specification's algorithm gives 963 cylinders, 16 heads, 17 sectors.
    assert_eq!(
        (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]),
        (963, 16, 17)
    );
    // A compressed qcow2 is smaller than a plain one; zstd sets its header field and bit.
    let len = |n: &str| std::fs::metadata(s.dir().join(n)).unwrap().len();
    assert!(len("zlib.qcow2") < len("out.qcow2"));
    let z = std::fs::read(s.dir().join("zstd.qcow2")).unwrap();
    assert_eq!(z[104], 1, "compression type zstd");
    assert_eq!(u64::from_be_bytes(z[72..80].try_into().unwrap()) & 8, 8);
    let info = sh(&format!("qemu-img info {}", p(&s.dir().join("zstd.qcow2"))));
    assert!(info.contains("compression type: zstd"), "{info}");
}

#[test]
fn a_qcow2_output_passes_the_card_restore_proof() {
    if !(is_root()
        && have_all(&[
            "qemu-img",
            "mcopy",
            "fsck.vfat",
            "e2fsck",
            "losetup",
            "mount",
        ]))
    {
        return;
    }
    let s = sample();
    let out = s.dir().join("card.qcow2");
    ok(&bw(&["convert", p(&s.card), p(&out), "--compress", "zstd"]));
    let raw = s.dir().join("from-qcow2.img");
    sh(&format!("qemu-img convert -O raw {} {}", p(&out), p(&raw)));
    // Only the carried blocks, written onto garbage: the card still checks clean and reads
    // back every file.
    let target = s.dir().join("target.img");
    restore_to_file(&raw, &s.map, &target, 0xc0ffee);
    assert_card_equivalent(&s.card, &target, &PARTS);
}

#[test]
fn stream_and_sparse_outputs_restore_with_the_stock_tools() {
    if !have_all(&["zstd", "xz", "simg2img"]) {
        return;
    }
    let s = sample();
    let cases: [(&str, &str); 4] = [
        ("out.img.zst", "zstd -q -d {in} -o {out}"),
        ("out.img.xz", "xz -d -c {in} > {out}"),
        ("out.simg", "simg2img {in} {out}"),
        ("out.img", "cp --sparse=always {in} {out}"),
    ];
    for (name, cmd) in cases {
        let out = s.dir().join(name);
        ok(&bw(&["convert", p(&s.card), p(&out)]));
        let restored = s.dir().join(format!("{name}.restored"));
        sh(&cmd.replace("{in}", p(&out)).replace("{out}", p(&restored)));
        assert_same_file(&s.reference, &restored);
    }
    // A sparse raw output stores free space as holes.
    let m = std::fs::metadata(s.dir().join("out.img")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&m) * 512 < m.len() / 4);
}

#[test]
fn android_sparse_round_trips_both_ways() {
    if !have_all(&["simg2img", "img2simg"]) {
        return;
    }
    let s = sample();
    let d = s.dir();
    // Ours -> simg2img: the reference (default) or the card (--keep-free).
    for (keep, want) in [(false, &s.reference), (true, &s.card)] {
        let simg = d.join(format!("ours-{keep}.simg"));
        let mut args = vec!["convert", p(&s.card), p(&simg)];
        if keep {
            args.push("--keep-free");
        }
        ok(&bw(&args));
        let back = d.join(format!("ours-{keep}.raw"));
        sh(&format!("simg2img {} {}", p(&simg), p(&back)));
        assert_same_file(want, &back);
    }
    // img2simg's -> ours: the same.
    let theirs = d.join("theirs.simg");
    sh(&format!("img2simg {} {}", p(&s.card), p(&theirs)));
    for (keep, want) in [(false, &s.reference), (true, &s.card)] {
        let back = d.join(format!("theirs-{keep}.img"));
        let mut args = vec!["convert", p(&theirs), p(&back)];
        if keep {
            args.push("--keep-free");
        }
        ok(&bw(&args));
        assert_same_file(want, &back);
    }
}

#[test]
fn our_outputs_convert_back_to_the_same_raw_image() {
    let s = sample();
    let d = s.dir();
    let outputs: Vec<(&str, Vec<&str>)> = vec![
        ("o.img.zst", vec![]),
        ("o.img.xz", vec![]),
        ("o.simg", vec![]),
        ("o.img", vec![]),
        ("o.qcow2", vec![]),
        ("oz.qcow2", vec!["--compress", "zstd"]),
        ("o.vhd", vec![]),
        ("of.vhd", vec!["--vhd", "fixed"]),
        ("o.vhdx", vec![]),
    ];
    for (name, extra) in outputs {
        for keep in [false, true] {
            let out = d.join(format!("{keep}-{name}"));
            let mut args = vec!["convert", p(&s.card), p(&out)];
            args.extend(extra.iter().copied());
            if keep {
                args.push("--keep-free");
            }
            ok(&bw(&args));
            let back = d.join(format!("{keep}-{name}.back.img"));
            let mut args = vec!["convert", p(&out), p(&back)];
            if keep {
                args.push("--keep-free");
            }
            let o = bw(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() && err.contains("not decoded by this version") {
                // The container's reader is another branch's; the case runs once it lands.
                eprintln!("note: {name}: this build does not read it back yet");
                continue;
            }
            ok(&o);
            assert_same_file(if keep { &s.card } else { &s.reference }, &back);
        }
    }
}

#[test]
fn an_existing_output_is_kept_without_force() {
    let s = sample();
    let out = s.dir().join("exists.qcow2");
    std::fs::write(&out, b"precious").unwrap();
    let o = bw(&["convert", p(&s.card), p(&out)]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    ok(&bw(&["convert", p(&s.card), p(&out), "--force"]));
    assert_eq!(&std::fs::read(&out).unwrap()[..4], b"QFI\xfb");
    // Nothing else is left in the directory (no temporary file).
    let names: Vec<String> = std::fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // Onto the source itself: refused, even with --force.
    let o = bw(&["convert", p(&s.card), p(&s.card), "--to", "img", "--force"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
}

#[test]
fn json_summary_says_what_was_carried() {
    let s = sample();
    let out = s.dir().join("j.qcow2");
    let o = bw(&[
        "convert",
        p(&s.card),
        p(&out),
        "--compress",
        "zlib",
        "--json",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["compression"], "zlib");
    assert_eq!(v["cluster_size"], 65536);
    assert_eq!(v["level"], 6);
    assert_eq!(v["keep_free"], false);
    assert_eq!(v["source_format"], serde_json::json!(["raw"]));
    let size = std::fs::metadata(&s.card).unwrap().len();
    assert_eq!(v["image_size"], size);
    assert_eq!(v["output_disk_size"], size);
    assert_eq!(v["carried_bytes"], s.map.total());
    assert_eq!(v["output_bytes"], std::fs::metadata(&out).unwrap().len());
    for k in [
        "source",
        "output",
        "bytes_read",
        "output_allocated_bytes",
        "seconds",
        "warnings",
        "notes",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    // A fixed VHD of a size that is not whole MiB says it was padded.
    let odd = s.dir().join("odd.img");
    sh(&format!("head -c 3000000 {} > {}", p(&s.card), p(&odd)));
    let o = bw(&[
        "convert",
        p(&odd),
        p(&s.dir().join("odd.vhd")),
        "--vhd",
        "fixed",
        "--json",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "vhd-fixed");
    assert_eq!(v["image_size"], 3_000_000);
    assert_eq!(v["output_disk_size"], 3 << 20);
    assert!(v["notes"][0].as_str().unwrap().contains("Azure"), "{v}");
}

#[test]
fn usage_mistakes_are_named() {
    let s = sample();
    // A name that says no format: the choices are listed, exit 2.
    let o = bw(&["convert", p(&s.card), p(&s.dir().join("out.unknown"))]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [".qcow2", ".vhdx", ".simg", "--to"] {
        assert!(err.contains(want), "{err}");
    }
    // Options for another format.
    for args in [
        vec!["--vhd", "fixed"],
        vec!["--compress", "zstd"],
        vec!["--level", "3"],
    ] {
        let mut a = vec!["convert", p(&s.card)];
        let out = s.dir().join("x.img");
        a.push(p(&out));
        a.extend(args.iter().copied());
        let o = bw(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(!out.exists());
    }
    // A cluster size qcow2 cannot have.
    let o = bw(&[
        "convert",
        p(&s.card),
        p(&s.dir().join("c.qcow2")),
        "--cluster-size",
        "3000",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("power of two"));
}

#[test]
fn contents_blockwise_cannot_decode_are_a_clear_error() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("secret.qcow2");
    if !fixture(&format!(
        "qemu-img create -q -f qcow2 --object secret,id=s0,data=hunter2 \
         -o encrypt.format=luks,encrypt.key-secret=s0 {} 16M",
        p(&enc)
    )) {
        return;
    }
    let out = dir.path().join("plain.img");
    let o = bw(&["convert", p(&enc), p(&out)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secret.qcow2"), "{err}");
    assert!(
        err.contains("not decoded") || err.to_lowercase().contains("encrypt"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Every VM container qemu-img makes of the card converts to our qcow2, VHD and VHDX: each
/// output `qemu-img check` clean and `qemu-img compare` identical to its input with
/// `--keep-free`, and to the card with free space zeroed by default.
#[test]
fn every_container_input_converts_to_every_container_output() {
    if !have("qemu-img") {
        skip(Need::Oracle, "qemu-img is needed to make the inputs");
        return;
    }
    let s = sample();
    // (file, how qemu-img makes it, qemu's name for its format: given, since qemu probes a
    // fixed VHD as raw)
    let inputs: [(&str, &str, &str); 8] = [
        ("in.qcow2", "-O qcow2 -o compat=0.10", "qcow2"),
        ("inc.qcow2", "-O qcow2 -c -o compression_type=zstd", "qcow2"),
        ("in.vhd", "-O vpc -o subformat=dynamic", "vpc"),
        ("inf.vhd", "-O vpc -o subformat=fixed", "vpc"),
        ("in.vhdx", "-O vhdx", "vhdx"),
        ("in.vmdk", "-O vmdk", "vmdk"),
        ("ins.vmdk", "-O vmdk -o subformat=streamOptimized", "vmdk"),
        ("in.vdi", "-O vdi", "vdi"),
    ];
    let outputs: [(&str, &str); 3] = [("qcow2", "qcow2"), ("vhd", "vpc"), ("vhdx", "vhdx")];
    for (input, args, ifmt) in inputs {
        let i = s.dir().join(input);
        sh(&format!(
            "qemu-img convert -f raw {args} '{}' '{}'",
            p(&s.card),
            p(&i)
        ));
        for (ext, fmt) in outputs {
            for keep_free in [true, false] {
                let out = s.dir().join(format!(
                    "{}-{}.{ext}",
                    input.replace('.', "_"),
                    if keep_free { "k" } else { "d" }
                ));
                let mut a = vec!["convert", p(&i), p(&out)];
                if keep_free {
                    a.push("--keep-free");
                }
                ok(&bw(&a));
                assert_qemu_check_clean(&out, fmt);
                let (want, wfmt) = if keep_free {
                    (&i, ifmt)
                } else {
                    (&s.reference, "raw")
                };
                let o = std::process::Command::new("qemu-img")
                    .args(["compare", "-f", wfmt, "-F", fmt, p(want), p(&out)])
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{input} -> {ext} (keep free {keep_free}): {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}
