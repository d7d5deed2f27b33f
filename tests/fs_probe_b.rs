//! Filesystem probes, group B: squashfs, ISO 9660 (+ El Torito), UDF, LUKS1/2, LVM2 PV.
//!
//! Fixtures are made with the real tools in a temp dir and cross-checked against
//! `blkid -p -o udev` (and `xorriso -report_el_torito` for boot catalogs). A missing tool skips
//! that test with a printed reason (a failure under `BLOCKWISE_REQUIRE_ORACLES=1`, as in CI).
//! Hostile-input tests need no tools.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use blockwise::fs::{iso9660, luks, lvm, squashfs, udf, FsInfo};
use blockwise::io::MemSource;
use common::{have, have_all, skip, Loop, Need};

/// Runs a fixture-making command; false (after a skip) if it fails, as a tool may on a
/// machine that restricts it.
fn run(cmd: &mut Command) -> bool {
    match cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            skip(
                Need::Oracle,
                format_args!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
            );
            false
        }
        Err(e) => {
            skip(Need::Oracle, format_args!("{cmd:?}: {e}"));
            false
        }
    }
}

/// `blkid -p -o udev` as a map with `\xHH` escapes undone.
fn blkid(path: &Path) -> BTreeMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "udev"])
        .arg(path)
        .output()
        .expect("blkid runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), common::blkid_unescape(v)))
        .collect()
}

fn mem(path: &Path) -> MemSource {
    MemSource(std::fs::read(path).expect("fixture readable"))
}

/// Compares TYPE, LABEL (raw), UUID and VERSION with blkid.
fn assert_like_blkid(info: &FsInfo, path: &Path) {
    let b = blkid(path);
    assert_eq!(
        Some(info.fs_type.name()),
        b.get("ID_FS_TYPE").map(String::as_str)
    );
    assert_eq!(info.label.as_ref(), b.get("ID_FS_LABEL_ENC"), "label");
    assert_eq!(info.uuid.as_ref(), b.get("ID_FS_UUID_ENC"), "uuid");
    assert_eq!(info.version.as_ref(), b.get("ID_FS_VERSION"), "version");
}

fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::write(src.join("sub/Mixed Case Name.txt"), vec![7u8; 5000]).unwrap();
    src
}

#[test]
fn squashfs_gzip_and_xz() {
    if !have_all(&["mksquashfs", "blkid"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = tree(d.path());
    for comp in ["gzip", "xz"] {
        let img = d.path().join(format!("{comp}.sqfs"));
        if !run(Command::new("mksquashfs").arg(&src).arg(&img).args([
            "-comp",
            comp,
            "-noappend",
            "-no-progress",
            "-b",
            "65536",
        ])) {
            return;
        }
        let info = squashfs::probe(&mem(&img))
            .unwrap()
            .expect("squashfs found");
        assert_like_blkid(&info, &img);
        assert_eq!(info.block_size, Some(65536));
        assert!(info.features.contains(&comp.to_string()));
        let size = info.size.unwrap();
        assert!(size > 0 && size <= std::fs::metadata(&img).unwrap().len());
    }
}

#[test]
fn iso_joliet_rock_ridge_label() {
    if !have_all(&["xorriso", "blkid"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = tree(d.path());
    let img = d.path().join("a.iso");
    if !run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-J", "-R", "-V", "My Disc 2024", "-o"])
        .arg(&img)
        .arg(&src))
    {
        return;
    }
    let info = iso9660::probe(&mem(&img)).unwrap().expect("iso found");
    assert_like_blkid(&info, &img);
    assert!(info.features.contains(&"joliet".to_string()));
    assert!(info.features.contains(&"rock-ridge".to_string()));
    assert_eq!(info.block_size, Some(2048));
    assert_eq!(info.size, Some(std::fs::metadata(&img).unwrap().len()));
    assert!(info.boot_entries.is_empty());
}

#[test]
fn iso_plain_genisoimage_has_no_rock_ridge() {
    if !have("genisoimage") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = tree(d.path());
    let img = d.path().join("p.iso");
    if !run(Command::new("genisoimage")
        .args(["-quiet", "-V", "PLAIN", "-o"])
        .arg(&img)
        .arg(&src))
    {
        return;
    }
    let info = iso9660::probe(&mem(&img)).unwrap().expect("iso found");
    assert_eq!(info.label.as_deref(), Some("PLAIN"));
    assert!(info.features.is_empty(), "{:?}", info.features);
}

/// Parses `xorriso -report_el_torito plain` "El Torito boot img" lines:
/// (platform, bootable, emulation-is-none, sector count, LBA).
fn parse_xorriso_report(text: &str) -> Vec<(String, bool, bool, u16, u32)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // N Pltf B Emul Ld_seg Hdpt Ldsiz LBA
            Some((
                f.get(1)?.to_string(),
                *f.get(2)? == "y",
                *f.get(3)? == "none",
                f.get(6)?.parse().ok()?,
                f.get(7)?.parse().ok()?,
            ))
        })
        .collect()
}

fn assert_entries_match(info: &FsInfo, report: &str) {
    let want = parse_xorriso_report(report);
    assert!(!want.is_empty(), "report has entries");
    let got: Vec<(String, bool, bool, u16, u32)> = info
        .boot_entries
        .iter()
        .map(|e| {
            (
                e.platform.clone(),
                e.bootable,
                e.emulation == "no-emulation",
                e.sector_count,
                e.load_rba,
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn el_torito_bios_and_uefi() {
    if !have("xorriso") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = tree(d.path());
    std::fs::create_dir_all(src.join("boot")).unwrap();
    std::fs::write(src.join("boot/bios.img"), vec![0xB0u8; 2048]).unwrap();
    std::fs::write(src.join("boot/efi.img"), vec![0xEFu8; 64 * 1024]).unwrap();
    let img = d.path().join("boot.iso");
    if !run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-R", "-J", "-V", "BOOTY"])
        .args([
            "-b",
            "boot/bios.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ])
        .args(["-c", "boot/boot.cat", "-eltorito-alt-boot"])
        .args([
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
            "-o",
        ])
        .arg(&img)
        .arg(&src))
    {
        return;
    }
    let info = iso9660::probe(&mem(&img)).unwrap().expect("iso found");
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.boot_entries.len(), 2);
    assert_eq!(info.boot_entries[0].platform, "BIOS");
    assert_eq!(info.boot_entries[1].platform, "UEFI");
    let out = Command::new("xorriso")
        .arg("-indev")
        .arg(&img)
        .args(["-report_el_torito", "plain"])
        .output()
        .unwrap();
    assert_entries_match(&info, &String::from_utf8_lossy(&out.stdout));
    if have("blkid") {
        assert_like_blkid(&info, &img);
    }
}

#[test]
fn el_torito_corpus_reports() {
    for name in ["eltorito-hybrid", "eltorito-gpt"] {
        let (Some(iso), Some(report)) = (
            common::corpus_file(&format!("generated-locally/{name}.iso")),
            common::corpus_file(&format!("generated-locally/{name}.xorriso-report.txt")),
        ) else {
            continue;
        };
        let report = std::fs::read_to_string(report).unwrap();
        // eltorito-gpt was made with -partition_offset 16: the ISO also starts at byte 0.
        let info = iso9660::probe(&mem(&iso)).unwrap().expect("iso found");
        assert_entries_match(&info, &report);
    }
}

#[test]
fn udf_mkudffs_block_sizes() {
    if !have_all(&["mkudffs", "blkid"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for bs in [512u32, 2048, 4096] {
        let img = d.path().join(format!("u{bs}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        if !run(Command::new("mkudffs")
            .arg(format!("--blocksize={bs}"))
            .args(["--label=Udf Label ü", "--media-type=hd"])
            .arg(&img))
        {
            return;
        }
        let info = udf::probe(&mem(&img)).unwrap().expect("udf found");
        assert_like_blkid(&info, &img);
        assert_eq!(info.block_size, Some(bs));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }
}

fn luks_format(img: &Path, kind: &str, label: Option<&str>) -> bool {
    std::fs::File::create(img)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let mut cmd = Command::new("cryptsetup");
    cmd.args(["luksFormat", "--type", kind, "-q", "--pbkdf", "pbkdf2"])
        .args(["--pbkdf-force-iterations", "1000", "--key-file", "-"]);
    if let Some(l) = label {
        cmd.args(["--label", l]);
    }
    cmd.arg(img).stdin(Stdio::piped());
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            skip(
                Need::Oracle,
                format_args!("cryptsetup failed to start: {e}"),
            );
            return false;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not-a-secret")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        skip(
            Need::Oracle,
            format_args!(
                "cryptsetup luksFormat: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    out.status.success()
}

#[test]
fn luks1_and_luks2() {
    if !have_all(&["cryptsetup", "blkid"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let l1 = d.path().join("l1.img");
    if !luks_format(&l1, "luks1", None) {
        return;
    }
    let info = luks::probe(&mem(&l1)).unwrap().expect("luks1");
    assert_like_blkid(&info, &l1);
    assert!(info.features.iter().any(|f| f.starts_with("cipher=aes")));

    let l2 = d.path().join("l2.img");
    if !luks_format(&l2, "luks2", Some("Secret Stuff")) {
        return;
    }
    let mut m = mem(&l2);
    let info = luks::probe(&m).unwrap().expect("luks2");
    assert_like_blkid(&info, &l2);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert!(info.features.iter().any(|f| f.starts_with("cipher=aes")));
    assert!(info
        .features
        .iter()
        .any(|f| f.starts_with("payload_offset=")));

    // Primary header wiped: the secondary copy still identifies the volume.
    m.0[..6].fill(0);
    let rec = luks::probe(&m).unwrap().expect("luks2 from secondary");
    assert_eq!(rec.uuid, info.uuid);
    assert_eq!(rec.label, info.label);
    assert!(!rec.warnings.is_empty());
}

#[test]
fn lvm2_pv_on_loop_device() {
    if !have_all(&["pvcreate", "losetup", "blkid"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("pv.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let Some(lp) = Loop::attach(&img) else {
        return;
    };
    let ok = run(Command::new("pvcreate").args([
        "-ff",
        "-y",
        "--config",
        "devices{obtain_device_list_from_udev=0} activation{udev_sync=0 udev_rules=0}",
        &lp.dev,
    ]));
    let expected = blkid(Path::new(&lp.dev));
    drop(lp);
    if !ok {
        return;
    }
    let info = lvm::probe(&mem(&img)).unwrap().expect("pv found");
    assert_eq!(
        Some(info.fs_type.name()),
        expected.get("ID_FS_TYPE").map(String::as_str)
    );
    assert_eq!(info.uuid.as_ref(), expected.get("ID_FS_UUID_ENC"));
    assert_eq!(info.version.as_ref(), expected.get("ID_FS_VERSION"));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert_eq!(info.size, Some(16 << 20));
}

// ---------------------------------------------------------------------------------------------
// Hostile input

/// A minimal ISO: PVD at 16, optional boot record, terminator.
fn synthetic_iso(blocks: u32, boot_catalog: Option<u32>, terminate: bool) -> Vec<u8> {
    let mut v = vec![0u8; 2048 * 24];
    let pvd = 16 * 2048;
    v[pvd] = 1;
    v[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    v[pvd + 6] = 1;
    v[pvd + 40..pvd + 72].copy_from_slice(b"SYNTH                           ");
    v[pvd + 80..pvd + 84].copy_from_slice(&blocks.to_le_bytes());
    v[pvd + 84..pvd + 88].copy_from_slice(&blocks.to_be_bytes());
    v[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
    v[pvd + 130..pvd + 132].copy_from_slice(&2048u16.to_be_bytes());
    let mut next = 17 * 2048;
    if let Some(cat) = boot_catalog {
        v[next + 1..next + 6].copy_from_slice(b"CD001");
        v[next + 7..next + 30].copy_from_slice(b"EL TORITO SPECIFICATION");
        v[next + 0x47..next + 0x4b].copy_from_slice(&cat.to_le_bytes());
        next += 2048;
    }
    if terminate {
        v[next] = 255;
        v[next + 1..next + 6].copy_from_slice(b"CD001");
    } else {
        // Every remaining sector looks like a (non-Joliet) SVD: the walk must stop on its own.
        while next + 2048 <= v.len() {
            v[next] = 2;
            v[next + 1..next + 6].copy_from_slice(b"CD001");
            next += 2048;
        }
    }
    v
}

#[test]
fn iso_absurd_volume_size_warns() {
    let m = MemSource(synthetic_iso(u32::MAX, None, true));
    let info = iso9660::probe(&m).unwrap().unwrap();
    assert_eq!(info.size, Some(u64::from(u32::MAX) * 2048));
    assert!(info.warnings.iter().any(|w| w.contains("claims")));
}

#[test]
fn iso_boot_catalog_past_end_warns() {
    let m = MemSource(synthetic_iso(24, Some(0xFFFF_FFF0), true));
    let info = iso9660::probe(&m).unwrap().unwrap();
    assert!(info.boot_entries.is_empty());
    assert!(info.warnings.iter().any(|w| w.contains("catalog")));
}

#[test]
fn iso_without_terminator_is_bounded() {
    let m = MemSource(synthetic_iso(24, None, false));
    let info = iso9660::probe(&m).unwrap().unwrap();
    assert_eq!(info.label.as_deref(), Some("SYNTH"));
    assert!(info.warnings.iter().any(|w| w.contains("terminator")));
}

#[test]
fn iso_catalog_full_of_sections_is_bounded() {
    let mut v = synthetic_iso(24, Some(20), true);
    let cat = 20 * 2048;
    v[cat] = 1;
    v[cat + 30] = 0x55;
    v[cat + 31] = 0xAA;
    let sum = v[cat..cat + 32].chunks_exact(2).fold(0u16, |s, c| {
        s.wrapping_add(u16::from_le_bytes([c[0], c[1]]))
    });
    v[cat + 28..cat + 30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    v[cat + 32] = 0x88;
    // A header claiming 65535 entries, followed by entries up to the end of the buffer.
    v[cat + 64] = 0x91;
    v[cat + 65] = 0xEF;
    v[cat + 66..cat + 68].copy_from_slice(&u16::MAX.to_le_bytes());
    for e in (cat + 96..v.len()).step_by(32) {
        v[e] = 0x88;
    }
    let info = iso9660::probe(&MemSource(v)).unwrap().unwrap();
    assert!(info.boot_entries.len() <= 64);
    assert_eq!(info.boot_entries[0].platform, "BIOS");
    assert_eq!(info.boot_entries[1].platform, "UEFI");
}

fn synthetic_luks2(hdr_size: u64) -> Vec<u8> {
    let mut v = vec![0u8; 32 * 1024];
    v[..6].copy_from_slice(b"LUKS\xba\xbe");
    v[6..8].copy_from_slice(&2u16.to_be_bytes());
    v[8..16].copy_from_slice(&hdr_size.to_be_bytes());
    v[24..29].copy_from_slice(b"label");
    v[168..204].copy_from_slice(b"01234567-89ab-cdef-0123-456789abcdef");
    v
}

#[test]
fn luks2_huge_json_size_warns() {
    for size in [u64::MAX, 1 << 40, 0, 4096] {
        let info = luks::probe(&MemSource(synthetic_luks2(size)))
            .unwrap()
            .unwrap();
        assert_eq!(info.label.as_deref(), Some("label"));
        assert!(!info.warnings.is_empty(), "size {size}");
    }
    // Plausible size but the JSON area runs past the end of the device.
    let info = luks::probe(&MemSource(synthetic_luks2(4 << 20)))
        .unwrap()
        .unwrap();
    assert!(!info.warnings.is_empty());
}

/// Tiny deterministic xorshift64* so the mutation run is reproducible without extra crates.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Flips bytes inside each format's header region and checks that no probe panics.
#[test]
fn mutation_never_panics() {
    // (image, header regions to mutate)
    let cases: &[(&str, &[(usize, usize)])] = &[
        (
            "iso-rr-joliet",
            &[(32768, 32768 + 4 * 2048), (0x30000, 0x34000)],
        ),
        (
            "udf",
            &[
                (32768, 32768 + 6 * 2048),
                (256 * 2048, 256 * 2048 + 512),
                (32 * 2048, 48 * 2048),
            ],
        ),
        (
            "udf-hdd-mkudffs-1.3-1",
            &[
                (32768, 40960),
                (128 * 1024, 128 * 1024 + 512),
                (129 * 1024, 140 * 1024),
            ],
        ),
        ("squashfs3", &[(0, 96)]),
        ("squashfs4", &[(0, 96)]),
        ("luks1", &[(0, 592)]),
        ("luks2", &[(0, 4096)]),
        ("lvm2", &[(0, 2048)]),
    ];
    let mut synthetic = vec![
        (
            "synthetic-iso-eltorito",
            synthetic_iso(24, Some(20), true),
            vec![(16 * 2048, 24 * 2048)],
        ),
        ("synthetic-luks2", synthetic_luks2(16384), vec![(0, 4096)]),
    ];
    let mut fixtures = Vec::new();
    for (name, regions) in cases {
        let rel = format!("util-linux/tests/ts/blkid/images-fs/{name}.img.xz");
        if let Some(p) = common::corpus_file(&rel) {
            let v = common::unxz(&p).unwrap_or_else(|| panic!("{rel} does not decode"));
            fixtures.push((name.to_string(), v, regions.to_vec()));
        }
    }
    for (n, v, r) in synthetic.drain(..) {
        fixtures.push((n.to_string(), v, r));
    }
    type Probe = fn(&dyn blockwise::io::ReadAt) -> blockwise::Result<Option<FsInfo>>;
    let probes: [Probe; 5] = [
        iso9660::probe,
        udf::probe,
        squashfs::probe,
        luks::probe,
        lvm::probe,
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for (name, data, regions) in fixtures {
        let mut m = MemSource(data);
        for _ in 0..2500 {
            let (lo, hi) = regions[(rng.next() % regions.len() as u64) as usize];
            let hi = hi.min(m.0.len());
            if lo >= hi {
                continue;
            }
            let flips = 1 + (rng.next() % 8) as usize;
            let mut saved = Vec::with_capacity(flips);
            for _ in 0..flips {
                let pos = lo + (rng.next() % (hi - lo) as u64) as usize;
                saved.push((pos, m.0[pos]));
                // Mix bit flips with "interesting" values that stress size fields.
                m.0[pos] = match rng.next() % 4 {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => m.0[pos] ^ (1 << (rng.next() % 8)),
                };
            }
            for p in probes {
                let _ = p(&m);
            }
            for (pos, b) in saved.into_iter().rev() {
                m.0[pos] = b;
            }
        }
        println!("mutated {name}: ok");
    }
}

/// cryptsetup's regression image: an LVM PV written over an old LUKS2 device keeps a stale
/// LUKS2 secondary header; blkid (and we) must call it LVM2_member.
#[test]
fn stale_luks2_secondary_under_lvm_pv() {
    let Some(p) = common::corpus_file("cryptsetup/tests/blkid-luks2-pv.img.xz") else {
        return;
    };
    let v = common::unxz(&p).expect("decodes");
    let m = MemSource(v);
    let info = blockwise::fs::probe_all(&m).unwrap().unwrap();
    assert_eq!(info.fs_type.name(), "LVM2_member");
    assert_eq!(
        info.uuid.as_deref(),
        Some("yhF8yJ-jhG2-w7Yt-2T9B-z6MV-e1IC-ee4XHf")
    );
    // On its own the secondary header is still found, with a warning.
    assert!(luks::probe_primary(&m).unwrap().is_none());
    let l = luks::probe(&m).unwrap().unwrap();
    assert!(!l.warnings.is_empty());
}
