//! VMDK (+ .ova) and VDI as random-access sources: every image qemu-img makes from the sample
//! card decodes byte for byte like `qemu-img convert -O raw`; the corpus samples decode like
//! qemu or fail as clearly; hostile headers fail quickly with an error naming the field.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockwise::format::{open, open_source, Format, OpenOptions, Opened};
use blockwise::io::{MemSource, ReadAt};
use common::{blockwise, fixture, have, sh, unpack_sample};

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn open_path(p: &Path) -> blockwise::Result<Opened> {
    open(p, &OpenOptions::default())
}

/// Reads all of `src` and compares it with the file `want`, 4 MiB at a time.
fn assert_same_as_file(src: &dyn ReadAt, want: &Path, what: &str) {
    use std::io::Read;
    let mut f = std::fs::File::open(want).unwrap();
    let wlen = f.metadata().unwrap().len();
    assert_eq!(src.size(), wlen, "{what}: size");
    let mut a = vec![0u8; 4 << 20];
    let mut b = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < wlen {
        let n = (wlen - off).min(a.len() as u64) as usize;
        f.read_exact(&mut b[..n]).unwrap();
        let mut done = 0;
        while done < n {
            let k = src
                .read_at(off + done as u64, &mut a[done..n])
                .unwrap_or_else(|e| panic!("{what}: read at {}: {e}", off + done as u64));
            assert!(k > 0, "{what}: short read at {}", off + done as u64);
            done += k;
        }
        if a[..n] != b[..n] {
            let i = (0..n).find(|&i| a[i] != b[i]).unwrap();
            panic!("{what}: differs from qemu-img at byte {}", off + i as u64);
        }
        off += n as u64;
    }
}

/// `qemu-img convert -O raw` of `img` into `dir`, the oracle.
fn qemu_raw(img: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}.qemu.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    sh(&format!(
        "qemu-img convert -O raw '{}' '{}'",
        img.display(),
        out.display()
    ));
    out
}

/// Opens `img`, checks its first layer and compares the disk with qemu's.
fn check_like_qemu(img: &Path, dir: &Path, first: Format) -> Opened {
    let want = qemu_raw(img, dir);
    let o = open_path(img).unwrap_or_else(|e| panic!("{}: {e}", img.display()));
    assert_eq!(o.chain[0].format, first, "{}", img.display());
    assert!(o.random_access(), "{}", img.display());
    assert_same_as_file(&*o.source, &want, &img.display().to_string());
    o
}

#[test]
fn qemu_made_vmdks_decode_like_qemu() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    for (sub, first) in [
        ("monolithicSparse", Format::VmdkSparse),
        ("streamOptimized", Format::VmdkSparse),
        ("monolithicFlat", Format::VmdkDescriptor),
    ] {
        let v = d.path().join(format!("{sub}.vmdk"));
        if !fixture(&format!(
            "qemu-img convert -f raw -O vmdk -o subformat={sub} '{}' '{}'",
            card.display(),
            v.display()
        )) {
            continue;
        }
        let o = check_like_qemu(&v, d.path(), first);
        assert!(o.warnings.is_empty(), "{sub}: {:?}", o.warnings);
        // The allocated hint of a sparse file covers the card's data and leaves its holes
        // out; a flat file holds everything.
        let a = o.source.allocated_hint().unwrap().total();
        if first == Format::VmdkSparse {
            assert!(a > 0 && a < 128 << 20, "{sub}: {a}");
        } else {
            assert_eq!(a, 128 << 20, "{sub}");
        }
    }
}

#[test]
fn two_gb_split_vmdks_decode_like_qemu() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    // A 2.5 GiB sparse disk with the card past 2 GiB, so the split really splits.
    let big = d.path().join("big.raw");
    sh(&format!(
        "truncate -s 2560M '{b}' && dd if='{c}' of='{b}' bs=1M seek=2200 conv=notrunc,sparse status=none",
        b = big.display(),
        c = card.display()
    ));
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let v = d.path().join(format!("{sub}.vmdk"));
        if !fixture(&format!(
            "qemu-img convert -f raw -O vmdk -o subformat={sub} '{}' '{}'",
            big.display(),
            v.display()
        )) {
            continue;
        }
        let pieces = std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with(sub) && n != format!("{sub}.vmdk")
            })
            .count();
        assert_eq!(pieces, 2, "{sub}: qemu-img split the disk in two");
        let o = check_like_qemu(&v, d.path(), Format::VmdkDescriptor);
        assert!(o.warnings.is_empty(), "{sub}: {:?}", o.warnings);
        // The partitions are found inside.
        let out = blockwise().arg("inspect").arg(&v).output().unwrap();
        assert!(out.status.success(), "{sub}");
    }
}

#[test]
fn a_differencing_vmdk_reads_through_its_parent() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    let base = d.path().join("base.vmdk");
    let child = d.path().join("child.vmdk");
    sh(&format!(
        "qemu-img convert -f raw -O vmdk '{}' '{}' && cd '{}' && \
         qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk && \
         qemu-io -f vmdk -c 'write -P 0x5a 1M 192k' -c 'write -z 8M 64k' child.vmdk >/dev/null",
        card.display(),
        base.display(),
        d.path().display()
    ));
    let o = check_like_qemu(&child, d.path(), Format::VmdkSparse);
    assert!(
        o.chain[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("parent"),
        "{:?}",
        o.chain
    );
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    // The parent changed after the child was made (its CID differs from the child's
    // parentCID): qemu refuses to read the child, we warn.
    let mut b = std::fs::read(&base).unwrap();
    let i = b
        .windows(4)
        .position(|w| w == b"CID=")
        .expect("CID in base");
    b[i + 4..i + 12].copy_from_slice(b"0badc0de");
    std::fs::write(&base, &b).unwrap();
    let q = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&child)
        .arg(d.path().join("x.raw"))
        .output()
        .unwrap();
    assert!(
        !q.status.success(),
        "qemu-img reads a child of a changed parent"
    );
    let o = open_path(&child).unwrap();
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("parentCID") && w.contains("0badc0de")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn an_ova_opens_its_stream_optimized_vmdk() {
    if !have("qemu-img") || !have("tar") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    let v = d.path().join("disk1.vmdk");
    sh(&format!(
        "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized '{}' '{}'",
        card.display(),
        v.display()
    ));
    std::fs::write(
        d.path().join("vm.ovf"),
        "<?xml version=\"1.0\"?>\n<Envelope><References><File ovf:href=\"disk1.vmdk\"/></References></Envelope>\n",
    )
    .unwrap();
    std::fs::write(d.path().join("vm.mf"), "SHA256(disk1.vmdk)= 00\n").unwrap();
    let want = qemu_raw(&v, d.path());
    for fmt in ["ustar", "gnu", "pax"] {
        let ova = d.path().join(format!("vm-{fmt}.ova"));
        sh(&format!(
            "cd '{}' && tar --format={fmt} -cf '{}' vm.ovf disk1.vmdk vm.mf",
            d.path().display(),
            ova.display()
        ));
        let o = open_path(&ova).unwrap();
        assert_eq!(
            o.chain.iter().map(|l| l.format).collect::<Vec<_>>(),
            vec![Format::Tar, Format::VmdkSparse, Format::Raw],
            "{fmt}"
        );
        assert!(
            o.chain[0].detail.as_deref().unwrap().contains("disk1.vmdk"),
            "{:?}",
            o.chain[0]
        );
        assert!(o.random_access(), "{fmt}");
        assert_same_as_file(&*o.source, &want, &format!("ova ({fmt})"));
    }
}

#[test]
fn a_stream_optimized_vmdk_with_its_directory_in_the_footer_decodes_like_qemu() {
    if !have("qemu-img") {
        return;
    }
    // qemu writes the directory offset in the header; VMware (and other writers of a stream)
    // put GD_AT_END there and the real header in a footer at the end. Make one from qemu's
    // file: footer marker, the header as it was, end-of-stream marker; then the header's
    // directory offset set to GD_AT_END. qemu reads it through the footer too.
    let d = tmpdir();
    let card = unpack_sample(d.path());
    let v = d.path().join("stream.vmdk");
    sh(&format!(
        "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized '{}' '{}'",
        card.display(),
        v.display()
    ));
    let mut f = std::fs::read(&v).unwrap();
    assert_eq!(f.len() % 512, 0);
    let header = f[..512].to_vec();
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&marker);
    f.extend_from_slice(&header);
    f.extend_from_slice(&[0u8; 512]);
    f[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let at_end = d.path().join("at-end.vmdk");
    std::fs::write(&at_end, &f).unwrap();
    let o = check_like_qemu(&at_end, d.path(), Format::VmdkSparse);
    let detail = o.chain[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("footer"), "{detail}");
    // A footer that is not one is refused, as by qemu.
    let n = f.len();
    f[n - 1024..n - 1020].copy_from_slice(b"XXXX");
    let bad = d.path().join("bad-footer.vmdk");
    std::fs::write(&bad, &f).unwrap();
    let e = open_path(&bad).err().expect("refused").to_string();
    assert!(e.contains("vmdk footer"), "{e}");
}

#[test]
fn static_and_dynamic_vdis_decode_like_qemu() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    for (name, opt) in [("dynamic", ""), ("static", "-o static=on")] {
        let v = d.path().join(format!("{name}.vdi"));
        if !fixture(&format!(
            "qemu-img convert -f raw -O vdi {opt} '{}' '{}'",
            card.display(),
            v.display()
        )) {
            continue;
        }
        let o = check_like_qemu(&v, d.path(), Format::Vdi);
        assert!(o.warnings.is_empty(), "{name}: {:?}", o.warnings);
        let detail = o.chain[0].detail.clone().unwrap_or_default();
        assert!(detail.contains(name), "{detail}");
    }
}

#[test]
fn inspect_bmap_and_backup_work_on_a_vmdk() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let card = unpack_sample(d.path());
    let v = d.path().join("card.vmdk");
    sh(&format!(
        "qemu-img convert -f raw -O vmdk '{}' '{}'",
        card.display(),
        v.display()
    ));
    let run = |args: &[&std::ffi::OsStr]| {
        let o = blockwise().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run(&["inspect".as_ref(), v.as_os_str()]);
    assert!(text.contains("ext4"), "{text}");
    assert!(text.contains("FAT") || text.contains("vfat"), "{text}");
    let raw_json = run(&["inspect".as_ref(), "--json".as_ref(), card.as_os_str()]);
    let vmdk_json = run(&["inspect".as_ref(), "--json".as_ref(), v.as_os_str()]);
    let parts = |j: &str| {
        let j: serde_json::Value = serde_json::from_str(j).unwrap();
        j["partitions"].clone()
    };
    assert_eq!(parts(&raw_json), parts(&vmdk_json));
    // `bmap` of a container describes the disk inside (bmaptool would write the .vmdk file
    // as it is, so the note says where the bmap applies); a backup's bmap is the raw card's.
    let b1 = d.path().join("raw.bmap");
    run(&[
        "bmap".as_ref(),
        card.as_os_str(),
        "-o".as_ref(),
        b1.as_os_str(),
    ]);
    let o = blockwise().arg("bmap").arg(&v).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("describes the disk inside"));
    let out = d.path().join("backup.img.zst");
    run(&["backup".as_ref(), v.as_os_str(), out.as_os_str()]);
    let b2 = d.path().join("backup.img.zst.bmap");
    let ranges = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| l.contains("<Range") || l.contains("MappedBlocksCount"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ranges(&b1), ranges(&b2));
    let back = run(&["inspect".as_ref(), "--json".as_ref(), out.as_os_str()]);
    assert_eq!(parts(&raw_json), parts(&back));
}

#[test]
fn flash_from_a_vmdk_and_a_vdi_passes_the_card_restore_proof() {
    if !(common::is_root()
        && common::have_all(&[
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
    let d = tmpdir();
    let card = unpack_sample(d.path());
    let data = std::fs::read(&card).unwrap();
    let scan = blockwise::scan::scan_source(Arc::new(MemSource(data.clone())), None).unwrap();
    let parts = [0, 1].map(|i| {
        let p = &scan.layout.partitions[i];
        (p.start, p.size)
    });
    for (name, args) in [
        ("card.vmdk", "-O vmdk -o subformat=streamOptimized"),
        ("card.vdi", "-O vdi"),
    ] {
        let img = d.path().join(name);
        sh(&format!(
            "qemu-img convert -f raw {args} '{}' '{}'",
            card.display(),
            img.display()
        ));
        let target = d.path().join(format!("{name}.target"));
        common::random_file(&target, data.len() as u64, 0x5eed);
        let Some(lp) = common::Loop::attach(&target) else {
            return;
        };
        let o = blockwise()
            .arg("flash")
            .arg(&img)
            .arg(&lp.dev)
            .arg("--yes")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        drop(lp);
        common::assert_card_equivalent(&card, &target, &parts);
    }
}

/// The first bytes of a VMDK or VDI file, by content.
fn vm_format(p: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut h = [0u8; 0x44];
    let mut f = std::fs::File::open(p).ok()?;
    let n = f.read(&mut h).ok()?;
    let h = &h[..n];
    if h.starts_with(b"KDMV") || h.starts_with(b"COWD") || h.starts_with(b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if h.starts_with(b"<<< ") && h.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        Some("vdi")
    } else {
        None
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if vm_format(&p).is_some() {
            out.push(p);
        }
    }
}

#[test]
fn corpus_vmdk_and_vdi_samples_decode_like_qemu_or_fail_as_clearly() {
    if !have("qemu-img") {
        return;
    }
    let root = common::corpus();
    if !root.is_dir() {
        common::skip(common::Need::Corpus, "no corpus directory");
        return;
    }
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    eprintln!("{} VMDK/VDI samples in {}", files.len(), root.display());
    let d = tmpdir();
    for (i, p) in files.iter().enumerate() {
        let want = d.path().join(format!("{i}.raw"));
        let q = std::process::Command::new("qemu-img")
            .arg("convert")
            .arg("-O")
            .arg("raw")
            .arg(p)
            .arg(&want)
            .output()
            .unwrap();
        let ours = open_path(p);
        if q.status.success() {
            let o = ours.unwrap_or_else(|e| panic!("{}: qemu reads it, we fail: {e}", p.display()));
            assert_same_as_file(&*o.source, &want, &p.display().to_string());
            eprintln!("{}: identical to qemu-img", p.display());
        } else {
            let qerr = String::from_utf8_lossy(&q.stderr);
            match ours {
                Err(e) => eprintln!("{}: both fail: qemu {qerr:?}, ours {e}", p.display()),
                Ok(o) => {
                    assert!(
                        !o.warnings.is_empty(),
                        "{}: qemu fails ({qerr}), we open it without a word",
                        p.display()
                    );
                    eprintln!(
                        "{}: qemu fails ({}), we open it with warnings {:?}",
                        p.display(),
                        qerr.trim(),
                        o.warnings
                    );
                }
            }
        }
    }
}

// ---- hostile headers --------------------------------------------------------------------

/// A hand-made monolithicSparse header: `capacity` and `grain` in sectors, directory at
/// sector 1, one table at sector 2, grains from sector 8.
fn kdmv(capacity: u64, grain: u64) -> Vec<u8> {
    let mut f = vec![0u8; 16 * 512];
    f[0..4].copy_from_slice(b"KDMV");
    f[4..8].copy_from_slice(&1u32.to_le_bytes());
    f[12..20].copy_from_slice(&capacity.to_le_bytes());
    f[20..28].copy_from_slice(&grain.to_le_bytes());
    f[44..48].copy_from_slice(&512u32.to_le_bytes());
    f[56..64].copy_from_slice(&1u64.to_le_bytes());
    f[64..72].copy_from_slice(&8u64.to_le_bytes());
    f[512..516].copy_from_slice(&2u32.to_le_bytes());
    f
}

/// Opens in-memory bytes, requiring a quick error; returns its message.
fn fails_fast(bytes: Vec<u8>) -> String {
    let t = Instant::now();
    let r = open_source(
        Arc::new(MemSource(bytes)),
        "hostile",
        &OpenOptions::default(),
    );
    let e = match r {
        Err(e) => e.to_string(),
        Ok(o) => {
            // Some damage only shows when reading.
            let mut buf = vec![0u8; 1 << 20];
            let mut err = None;
            let mut off = 0;
            while off < o.source.size().min(64 << 20) {
                if let Err(e) = o.source.read_at(off, &mut buf) {
                    err = Some(e.to_string());
                    break;
                }
                off += buf.len() as u64;
            }
            err.unwrap_or_else(|| panic!("opened and read: {:?}", o.chain))
        }
    };
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    e
}

#[test]
fn hostile_grain_directory_of_gigabytes_is_refused() {
    // 2^40 sectors of 8-sector grains: 2^28 directory entries (1 GiB of directory).
    let e = fails_fast(kdmv(1 << 40, 8));
    assert!(e.contains("grain-directory entries"), "{e}");
}

#[test]
fn hostile_grain_table_past_eof_is_refused() {
    let mut f = kdmv(4096, 8);
    f[512..516].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let e = fails_fast(f);
    assert!(
        e.contains("grain table") && e.contains("past the end"),
        "{e}"
    );
}

#[test]
fn hostile_two_directory_entries_at_one_table_are_refused() {
    // 64M sectors: 16384 directory entries, all at the same table.
    let mut f = kdmv(64 << 20, 8);
    f.resize(512 + 16384 * 4 + 4096, 0);
    let gt_sector = ((512 + 16384 * 4) / 512 + 1) as u32;
    for i in 0..16384 {
        f[512 + i * 4..516 + i * 4].copy_from_slice(&gt_sector.to_le_bytes());
    }
    f.resize((gt_sector as usize + 4) * 512, 0);
    let e = fails_fast(f);
    assert!(e.contains("both point at the grain table"), "{e}");
}

#[test]
fn hostile_grain_size_zero_is_refused() {
    let e = fails_fast(kdmv(4096, 0));
    assert!(e.contains("grain size 0"), "{e}");
}

#[test]
fn hostile_grain_size_not_a_power_of_two_is_refused() {
    let e = fails_fast(kdmv(4096, 24));
    assert!(e.contains("not a power of two"), "{e}");
}

#[test]
fn hostile_huge_grain_is_refused() {
    let e = fails_fast(kdmv(1 << 40, 1 << 30));
    assert!(e.contains("more than 1 GiB"), "{e}");
}

/// A streamOptimized-style extent with one compressed grain whose marker says `size`.
fn lying_marker(size: u32) -> Vec<u8> {
    let mut f = kdmv(128, 128);
    f[8..12].copy_from_slice(&(1u32 << 16 | 1 << 17).to_le_bytes());
    f[77..79].copy_from_slice(&1u16.to_le_bytes());
    f[1024..1028].copy_from_slice(&8u32.to_le_bytes()); // grain 0 at sector 8
    f[8 * 512 + 8..8 * 512 + 12].copy_from_slice(&size.to_le_bytes());
    f
}

#[test]
fn hostile_grain_marker_larger_than_a_grain_is_refused() {
    let e = fails_fast(lying_marker(1 << 30));
    assert!(e.contains("grain marker") && e.contains("more than"), "{e}");
}

#[test]
fn hostile_grain_marker_past_eof_is_refused() {
    let e = fails_fast(lying_marker(60000));
    assert!(
        e.contains("grain marker") && e.contains("past the end"),
        "{e}"
    );
}

#[test]
fn hostile_descriptor_with_ten_thousand_extents_is_refused() {
    let d = tmpdir();
    let p = d.path().join("many.vmdk");
    let mut t = String::from("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n");
    for _ in 0..10_000 {
        t += "RW 8 FLAT \"many-flat.vmdk\" 0\n";
    }
    std::fs::write(&p, t).unwrap();
    std::fs::write(d.path().join("many-flat.vmdk"), vec![0u8; 4096]).unwrap();
    let t0 = Instant::now();
    let e = open_path(&p).err().expect("refused").to_string();
    assert!(e.contains("more than 4096 extents"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn hostile_descriptor_naming_itself_is_refused() {
    let d = tmpdir();
    let p = d.path().join("self.vmdk");
    std::fs::write(
        &p,
        "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"self.vmdk\" 0\n",
    )
    .unwrap();
    let e = open_path(&p).err().expect("refused").to_string();
    assert!(
        e.contains("the chain of images loops") && e.contains("self.vmdk -> "),
        "{e}"
    );
}

#[test]
fn absent_extent_files_are_a_warning_then_a_read_error() {
    let d = tmpdir();
    let p = d.path().join("gone.vmdk");
    std::fs::write(d.path().join("here-f001.vmdk"), vec![7u8; 65536]).unwrap();
    // The absent piece in the middle: opening reads the disk's first 36 KiB and last sector.
    std::fs::write(
        &p,
        "# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentFlat\"\n\
         RW 128 FLAT \"here-f001.vmdk\" 0\nRW 8 FLAT \"gone-f002.vmdk\" 0\n\
         RW 128 FLAT \"here-f001.vmdk\" 0\n",
    )
    .unwrap();
    let o = open_path(&p).unwrap();
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("absent") && w.contains("gone-f002.vmdk")),
        "{:?}",
        o.warnings
    );
    let mut b = [0u8; 4096];
    o.source.read_at(0, &mut b).unwrap();
    assert_eq!(b, [7u8; 4096]);
    let e = o.source.read_at(65536, &mut b).unwrap_err().to_string();
    assert!(e.contains("gone-f002.vmdk") && e.contains("absent"), "{e}");
    o.source.read_at(65536 + 4096, &mut b).unwrap();
    assert_eq!(b, [7u8; 4096]);
    // When the absent file holds what opening reads, the open itself fails with that error.
    std::fs::write(
        &p,
        "# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentFlat\"\n\
         RW 128 FLAT \"here-f001.vmdk\" 0\nRW 8 FLAT \"gone-f002.vmdk\" 0\n",
    )
    .unwrap();
    let e = open_path(&p).err().expect("fails").to_string();
    assert!(e.contains("gone-f002.vmdk") && e.contains("absent"), "{e}");
}

/// A hand-made VDI header: `blocks` entries of `block` bytes, disk `size` bytes.
fn vdi(size: u64, block: u32, blocks: u32) -> Vec<u8> {
    let mut h = vec![0u8; 1024];
    h[..4].copy_from_slice(b"<<< ");
    h[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
    h[0x44..0x48].copy_from_slice(&0x0001_0001u32.to_le_bytes());
    h[0x48..0x4C].copy_from_slice(&0x190u32.to_le_bytes());
    h[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
    h[0x154..0x158].copy_from_slice(&512u32.to_le_bytes());
    h[0x158..0x15C].copy_from_slice(&1024u32.to_le_bytes());
    h[0x168..0x16C].copy_from_slice(&512u32.to_le_bytes());
    h[0x170..0x178].copy_from_slice(&size.to_le_bytes());
    h[0x178..0x17C].copy_from_slice(&block.to_le_bytes());
    h[0x180..0x184].copy_from_slice(&blocks.to_le_bytes());
    h
}

#[test]
fn hostile_vdi_block_map_count_is_refused() {
    let e = fails_fast(vdi(u64::MAX - 4096, 1 << 20, u32::MAX));
    assert!(e.contains("vdi"), "{e}");
    let e = fails_fast(vdi(1 << 40, 1 << 20, 1 << 20));
    assert!(
        e.contains("vdi block map") && e.contains("past the end"),
        "{e}"
    );
}

#[test]
fn hostile_vdi_block_size_is_refused() {
    for b in [0u32, 3000, 1 << 31] {
        let e = fails_fast(vdi(1 << 20, b, 1));
        assert!(e.contains("block size"), "{b}: {e}");
    }
}

#[test]
fn differencing_vdi_is_refused_naming_the_reason() {
    let mut h = vdi(1 << 20, 1 << 20, 1);
    h[0x4C..0x50].copy_from_slice(&4u32.to_le_bytes());
    h[0x1A8] = 0x11;
    let e = fails_fast(h);
    assert!(e.contains("differencing VDI") && e.contains("UUID"), "{e}");
}
