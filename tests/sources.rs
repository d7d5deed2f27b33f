//! Sources layer against real tools: every format is made by its own tool in the test, then
//! sniffed, opened and (when decodable) compared byte for byte with the original.
//! Tests whose tool or corpus sample is missing print why and return (and fail instead under
//! `BLOCKWISE_REQUIRE_ORACLES=1` / `BLOCKWISE_REQUIRE_CORPUS=1`, as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use blockwise::format::compress::xz::size_from_index as xz_size_from_index;
use blockwise::format::stream::{Codec, StreamSource};
use blockwise::format::{open, Format, OpenOptions};
use blockwise::io::file::FileSource;
use blockwise::io::{Counting, ReadAt, ReadAtExt};
use common::{fixture, have, Loop};

/// A 5 MiB + 1234-byte test image: compressible but not trivially so, with a recognisable
/// pattern at every offset. Multiple of nothing on purpose (odd tail).
fn image_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x: u32 = 0x1234_5678;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let run = (x % 64) as usize + 1;
        let b = (x >> 24) as u8 & 0x1F;
        for _ in 0..run {
            if v.len() < len {
                v.push(b.wrapping_add((v.len() % 7) as u8));
            }
        }
    }
    v
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write_image(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let p = dir.join(name);
    let data = image_bytes(len);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

/// Reads at scattered offsets (forward, backward, straddling chunk edges, past the end) and
/// compares with the original.
fn check_same(src: &dyn ReadAt, orig: &[u8]) {
    assert_eq!(src.size(), orig.len() as u64, "size");
    let n = orig.len() as u64;
    let offs = [
        0u64,
        n / 2,
        100,
        (1 << 20) - 3,
        n.saturating_sub(10),
        3 << 20,
        512,
        (2 << 20) + 7,
        1,
        n,
        n + 100,
    ];
    for &off in &offs {
        let mut b = vec![0u8; 70_000];
        let got = src.read_at(off, &mut b).unwrap();
        let end = (off as usize).saturating_add(b.len()).min(orig.len());
        let want = orig.get(off as usize..end).unwrap_or(&[]);
        assert_eq!(got, want.len(), "length at {off}");
        assert!(b[..got] == *want, "bytes differ at offset {off}");
    }
    // Whole image in 1 MiB reads, in order.
    let mut all = vec![0u8; orig.len()];
    for (i, c) in all.chunks_mut(1 << 20).enumerate() {
        src.read_exact_at((i as u64) << 20, c).unwrap();
    }
    assert!(all == orig, "full read differs");
}

fn open_path(p: &Path) -> blockwise::format::Opened {
    open(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn formats(o: &blockwise::format::Opened) -> Vec<Format> {
    o.chain.iter().map(|l| l.format).collect()
}

#[test]
fn compressed_roundtrips() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "disk.img", (5 << 20) + 1234);
    let i = img.display();
    let cases: Vec<(&str, String, Format)> = vec![
        ("gz", format!("gzip -c {i} > {i}.gz"), Format::Gzip),
        ("gz2", format!("head -c 1000000 {i} | gzip -c > {i}.gz2; tail -c +1000001 {i} | gzip -c >> {i}.gz2"), Format::Gzip),
        ("xz", format!("xz -T2 --block-size=1MiB -c {i} > {i}.xz"), Format::Xz),
        ("xz2", format!("head -c 3000000 {i} | xz -c > {i}.xz2; tail -c +3000001 {i} | xz -T2 --block-size=512KiB -c >> {i}.xz2"), Format::Xz),
        ("zst", format!("zstd -q -c {i} > {i}.zst"), Format::Zstd),
        ("zstl", format!("zstd -q --long=27 -c {i} > {i}.zstl"), Format::Zstd),
        ("zsts", format!("cat {i} | zstd -q -c > {i}.zsts"), Format::Zstd),
        ("bz2", format!("bzip2 -c {i} > {i}.bz2"), Format::Bzip2),
        ("lz4", format!("lz4 -q -c {i} > {i}.lz4"), Format::Lz4),
    ];
    for (ext, cmd, fmt) in cases {
        if !fixture(&cmd) {
            continue;
        }
        let p = PathBuf::from(format!("{i}.{ext}"));
        let o = open_path(&p);
        assert_eq!(formats(&o), vec![fmt, Format::Raw], "{ext}");
        if fmt == Format::Xz {
            // One block of a few MiB, listed in the index: decoded with random access.
            assert!(o.random_access(), "{ext}");
        } else {
            assert!(!o.random_access(), "{ext}");
            // How it is read is a note, not a warning.
            assert!(
                o.notes.iter().any(|w| w.contains("decoded on the fly")),
                "{ext}"
            );
            assert!(o.warnings.is_empty(), "{ext}: {:?}", o.warnings);
        }
        check_same(&*o.source, &orig);
    }
}

#[test]
fn xz_size_comes_from_the_index() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "disk.img", (5 << 20) + 99);
    if !fixture(&format!(
        "xz -T2 --block-size=1MiB -c {0} > {0}.xz",
        img.display()
    )) {
        return;
    }
    let f = FileSource::open(&PathBuf::from(format!("{}.xz", img.display()))).unwrap();
    let c = Counting::new(f);
    assert_eq!(xz_size_from_index(&c).unwrap(), Some(orig.len() as u64));
    assert!(
        c.bytes_read() < 512,
        "read {} bytes to size the xz",
        c.bytes_read()
    );
    // And the StreamSource does not decode anything to learn it.
    let c = Arc::new(Counting::new(
        FileSource::open(&PathBuf::from(format!("{}.xz", img.display()))).unwrap(),
    ));
    let s = StreamSource::new(Codec::Xz, c.clone(), None).unwrap();
    assert_eq!(s.size(), orig.len() as u64);
    assert_eq!(s.size_origin(), "xz index");
    assert!(c.bytes_read() < 512);
}

#[test]
fn zstd_size_from_frame_headers_and_repeated_reads_do_not_restart() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "disk.img", (4 << 20) + 5);
    if !fixture(&format!(
        "zstd -q -B1048576 -c {0} > {0}.zst",
        img.display()
    )) {
        return;
    }
    let f = Arc::new(FileSource::open(&PathBuf::from(format!("{}.zst", img.display()))).unwrap());
    let s = StreamSource::new(Codec::Zstd, f, None).unwrap();
    assert_eq!(s.size(), orig.len() as u64);
    assert_eq!(s.size_origin(), "zstd frame headers");
    let mut b = [0u8; 512];
    for _ in 0..3 {
        for off in [0u64, 3 << 20, 1 << 20, 0] {
            s.read_exact_at(off, &mut b).unwrap();
        }
    }
    // The first backward read restarts once; afterwards every chunk is cached.
    assert!(s.restarts() <= 2, "restarts {}", s.restarts());
}

#[test]
fn truncated_and_corrupt_streams_fail_cleanly() {
    let d = tmpdir();
    let (img, _) = write_image(d.path(), "disk.img", 3 << 20);
    let i = img.display();
    for (ext, cmd) in [
        ("gz", format!("gzip -c {i} > {i}.gz")),
        ("xz", format!("xz -T2 --block-size=1MiB -c {i} > {i}.xz")),
        ("zst", format!("zstd -q -c {i} > {i}.zst")),
        ("bz2", format!("bzip2 -c {i} > {i}.bz2")),
        ("lz4", format!("lz4 -q -c {i} > {i}.lz4")),
    ] {
        if !fixture(&cmd) {
            continue;
        }
        let p = PathBuf::from(format!("{i}.{ext}"));
        let full = std::fs::read(&p).unwrap();
        // Truncated to half, and with garbage in the middle.
        let mut corrupt = full.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 64] {
            *b ^= 0x5A;
        }
        for (what, bytes) in [
            ("truncated", full[..full.len() / 2].to_vec()),
            ("corrupt", corrupt),
        ] {
            let q = d.path().join(format!("bad-{what}.{ext}"));
            std::fs::write(&q, &bytes).unwrap();
            let r = open(&q, &OpenOptions::default()).and_then(|o| {
                let mut buf = vec![0u8; 1 << 20];
                for k in 0..3u64 {
                    o.source.read_exact_at(k << 20, &mut buf)?;
                }
                Ok(o)
            });
            match r {
                Err(e) => {
                    let m = e.to_string();
                    eprintln!("{what} {ext}: {m}");
                    assert!(!m.is_empty());
                }
                // A corrupt byte in a stored block may go unnoticed by formats without checksums;
                // then reading must still not panic. Truncation must always be noticed.
                Ok(_) => assert_eq!(what, "corrupt", "{what} {ext} was accepted"),
            }
        }
    }
}

#[test]
fn zip_members() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "disk.img", (3 << 20) + 77);
    std::fs::write(d.path().join("README.txt"), vec![b'x'; 5 << 20]).unwrap();
    let dir = d.path().display();
    if !fixture(&format!("cd {dir} && zip -q -0 stored.zip README.txt disk.img && zip -q -6 deflated.zip README.txt disk.img")) {
        return;
    }
    let o = open_path(&d.path().join("stored.zip"));
    assert_eq!(formats(&o), vec![Format::Zip, Format::Raw]);
    assert!(o.chain[0].detail.as_deref().unwrap().contains("disk.img"));
    assert!(o.random_access());
    check_same(&*o.source, &orig);
    let o = open_path(&d.path().join("deflated.zip"));
    assert_eq!(formats(&o), vec![Format::Zip, Format::Raw]);
    assert!(!o.random_access());
    check_same(&*o.source, &orig);
    // zip → xz → raw
    if fixture(&format!(
        "cd {dir} && xz -k -c disk.img > disk.img.xz && zip -q -0 nested.zip disk.img.xz"
    )) {
        let o = open_path(&d.path().join("nested.zip"));
        assert_eq!(formats(&o), vec![Format::Zip, Format::Xz, Format::Raw]);
        check_same(&*o.source, &orig);
    }
    let _ = img;
}

#[test]
fn seven_zip_is_recognised() {
    let d = tmpdir();
    let (img, _) = write_image(d.path(), "disk.img", 100_000);
    if !fixture(&format!("7z a -bd -bso0 {0}.7z {0}", img.display())) {
        return;
    }
    let o = open_path(&PathBuf::from(format!("{}.7z", img.display())));
    assert_eq!(formats(&o), vec![Format::SevenZip]);
    assert!(o.warnings.iter().any(|w| w.contains("7z")));
}

#[test]
fn android_sparse_from_img2simg() {
    let d = tmpdir();
    // Sparse-friendly image: data, zeros, a fill pattern, data.
    let mut orig = image_bytes(1 << 20);
    orig.extend(std::iter::repeat_n(0u8, 2 << 20));
    orig.extend(std::iter::repeat_n([1u8, 2, 3, 4], 1 << 18).flatten());
    orig.extend(image_bytes(300 * 4096));
    let img = d.path().join("s.img");
    std::fs::write(&img, &orig).unwrap();
    if !fixture(&format!("img2simg {0} {0}.simg", img.display())) {
        return;
    }
    let o = open_path(&PathBuf::from(format!("{}.simg", img.display())));
    assert_eq!(formats(&o), vec![Format::AndroidSparse, Format::Raw]);
    assert!(o.random_access());
    check_same(&*o.source, &orig);
    let hint = o.source.allocated_hint().unwrap();
    // img2simg stores zero runs as FILL chunks, so the hint covers them too; it must at least
    // cover every non-zero byte.
    assert!(hint.contains(10) && hint.contains((3 << 20) + 5) && hint.total() <= o.source.size());
}

#[test]
fn android_sparse_corpus_matches_simg2img() {
    let files = [
        "generated-locally/ext4.simg",
        "generated-locally/ext4-bs1024.simg",
        "android-sparse-rs/tests/data/hello.simg",
        "android-sparse-rs/tests/data/crc.simg",
        "android-sparse-rs/tests/data/invalid_crc.simg",
        "kaitai_struct_samples/archive/android_sparse/fill-4k-zeros.img",
        "kaitai_struct_samples/archive/android_sparse/extended-headers.img",
    ];
    if !have("simg2img") {
        return;
    }
    let d = tmpdir();
    for f in files {
        let Some(p) = common::corpus_file(f) else {
            continue;
        };
        let out = d.path().join("out.img");
        let _ = std::fs::remove_file(&out);
        let oracle_ok = Command::new("simg2img")
            .arg(&p)
            .arg(&out)
            .output()
            .unwrap()
            .status
            .success();
        let r = open(&p, &OpenOptions::default());
        if !oracle_ok {
            // simg2img rejected it (e.g. bad CRC, which we do not check): just no panic.
            eprintln!(
                "{f}: simg2img failed; ours: {}",
                r.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into())
            );
            continue;
        }
        let o = r.unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(o.chain[0].format, Format::AndroidSparse, "{f}");
        let want = std::fs::read(&out).unwrap();
        let got = o.source.read_vec(0, o.source.size() as usize).unwrap();
        assert!(got == want, "{f}: differs from simg2img");
    }
    // The ext4 sample must also equal the base image it was made from.
    if let (Some(base), Some(simg)) = (
        common::corpus_file("generated-locally/base-ext4.img"),
        common::corpus_file("generated-locally/ext4.simg"),
    ) {
        let o = open_path(&simg);
        let want = std::fs::read(&base).unwrap();
        assert!(o.source.read_vec(0, want.len()).unwrap() == want);
    }
}

#[test]
fn qemu_img_containers() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "vm.img", 8 << 20);
    let i = img.display();
    let cases = [
        ("qcow2", "-O qcow2", Format::Qcow2),
        ("qcow2v2", "-O qcow2 -o compat=0.10", Format::Qcow2),
        ("vhd", "-O vpc -o subformat=dynamic", Format::Vhd),
        ("fvhd", "-O vpc -o subformat=fixed", Format::Vhd),
        ("vhdx", "-O vhdx", Format::Vhdx),
        ("vmdk", "-O vmdk", Format::VmdkSparse),
        (
            "svmdk",
            "-O vmdk -o subformat=streamOptimized",
            Format::VmdkSparse,
        ),
        ("vdi", "-O vdi", Format::Vdi),
    ];
    for (ext, args, fmt) in cases {
        let out = format!("{i}.{ext}");
        if !fixture(&format!("qemu-img convert -f raw {args} {i} {out}")) {
            continue;
        }
        let o = open_path(Path::new(&out));
        assert_eq!(o.chain[0].format, fmt, "{ext}");
        let detail = o.chain[0].detail.clone().unwrap_or_default();
        eprintln!("{ext}: {detail} / {:?}", o.warnings);
        // Every one is decoded to its disk (tests/container_*.rs compare each format with
        // qemu-img byte for byte); qemu rounds a VHD's size up to a CHS geometry, so the data
        // written comes first.
        assert_eq!(formats(&o), vec![fmt, Format::Raw], "{ext}");
        assert!(o.source.size() >= orig.len() as u64, "{ext}");
        let got = o.source.read_vec(0, orig.len()).unwrap();
        assert!(got == orig, "{ext}: decoded disk differs");
    }
    // A VMDK with a separate descriptor (monolithicFlat).
    if fixture(&format!(
        "qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat {i} {i}.flat.vmdk"
    )) {
        let o = open_path(Path::new(&format!("{i}.flat.vmdk")));
        assert_eq!(o.chain[0].format, Format::VmdkDescriptor);
        assert_eq!(o.source.size(), orig.len() as u64);
        assert!(o.source.read_vec(0, orig.len()).unwrap() == orig);
    }
}

#[test]
fn corpus_vhdx_virtual_size_matches_qemu() {
    for name in ["ext4-dynamic.vhdx", "ext4-dynamic-bs1M.vhdx"] {
        let (Some(p), Some(info)) = (
            common::corpus_file(&format!("generated-locally/{name}")),
            common::corpus_file(&format!("generated-locally/{name}.qemu-img-info.json")),
        ) else {
            continue;
        };
        let j = std::fs::read_to_string(info).unwrap();
        let j: serde_json::Value = serde_json::from_str(&j).unwrap();
        let o = open_path(&p);
        assert_eq!(o.chain[0].format, Format::Vhdx);
        // Decoded now: the disk is as large as qemu says.
        assert_eq!(Some(o.source.size()), j["virtual-size"].as_u64(), "{name}");
    }
}

#[test]
fn corpus_compressed_and_dmg() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    let xz = open_path(&base.join("xz/etcher-test.img.xz"));
    let gz = open_path(&base.join("gz/etcher-test.img.gz"));
    let bz = open_path(&base.join("bz2/etcher-test.img.bz2"));
    let a = xz.source.read_vec(0, xz.source.size() as usize).unwrap();
    assert_eq!(gz.source.read_vec(0, gz.source.size() as usize).unwrap(), a);
    assert_eq!(bz.source.read_vec(0, bz.source.size() as usize).unwrap(), a);
    // Decoded to the disk inside (tests/container_dmg.rs checks every sample in full).
    for f in [
        "etcher-test-adc.dmg",
        "etcher-test-bz2.dmg",
        "etcher-test-lzfse.dmg",
        "etcher-test-raw.dmg",
        "etcher-test-zlib.dmg",
    ] {
        let o = open_path(&base.join("dmg").join(f));
        assert_eq!(formats(&o), vec![Format::Dmg, Format::Raw], "{f}");
        assert!(o.container.is_none(), "{f}");
        assert_eq!(
            o.source.read_vec(0, o.source.size() as usize).unwrap(),
            a,
            "{f}"
        );
    }
    let o = open_path(&base.join("dmg/gpt-in-dmg.dmg"));
    assert_eq!(formats(&o), vec![Format::Dmg, Format::Raw]);
    assert_eq!(o.source.size(), 128 << 20);
    let o = open_path(&base.join("images/raw-image-not-a-dmg.dmg"));
    assert_ne!(o.chain[0].format, Format::Dmg);
}

#[test]
fn bin_cue_reads_as_iso() {
    let d = tmpdir();
    let src = d.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello cd\n").unwrap();
    let iso = d.path().join("x.iso");
    if !fixture(&format!(
        "xorriso -as mkisofs -quiet -V CDTEST -o {} {}",
        iso.display(),
        src.display()
    )) {
        return;
    }
    let iso_bytes = std::fs::read(&iso).unwrap();
    let o = open_path(&iso);
    assert_eq!(formats(&o), vec![Format::Iso9660]);
    let bin = common::to_raw_mode1(&iso_bytes);
    let binp = d.path().join("My Game.bin");
    std::fs::write(&binp, &bin).unwrap();
    // Without a sheet: guessed layout, warning.
    let o = open_path(&binp);
    assert_eq!(formats(&o), vec![Format::CdRaw, Format::Iso9660]);
    assert!(
        o.warnings.iter().any(|w| w.contains("without its .cue")),
        "{:?}",
        o.warnings
    );
    assert!(o.source.read_vec(0, iso_bytes.len()).unwrap() == iso_bytes);
    // With a sheet beside it: no warning, and the sheet opens the same bytes.
    let cue = d.path().join("My Game.cue");
    std::fs::write(
        &cue,
        "FILE \"My Game.bin\" BINARY\r\n  TRACK 01 MODE1/2352\r\n    INDEX 01 00:00:00\r\n",
    )
    .unwrap();
    let o = open_path(&binp);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    let o = open_path(&cue);
    assert_eq!(
        formats(&o),
        vec![Format::Cue, Format::CdRaw, Format::Iso9660]
    );
    assert_eq!(o.cd_tracks.len(), 1);
    assert!(o.source.read_vec(0, iso_bytes.len()).unwrap() == iso_bytes);
}

#[test]
fn corpus_cdrdao_bin() {
    let Some(p) = common::corpus_file("dfirlabs-cue-specimens/specimens/cdrdao/image.bin") else {
        return;
    };
    // Its sibling "image.cue" is really a cdrdao TOC file: not a CUE sheet.
    let toc = open_path(&p.with_extension("cue"));
    assert_ne!(toc.chain[0].format, Format::Cue);
    let o = open_path(&p);
    assert_eq!(o.chain[0].format, Format::CdRaw);
    assert_eq!(o.source.size(), 710_304 / 2352 * 2048);
    eprintln!("cdrdao bin: {:?} {:?}", formats(&o), o.warnings);
}

#[test]
fn block_device_on_loop() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "loop.img", 4 << 20);
    let Some(lp) = Loop::attach_read_only(&img) else {
        return;
    };
    let dev = lp.dev.clone();
    let r = std::panic::catch_unwind(|| {
        let o = open_path(Path::new(&dev));
        assert!(o.is_block_device);
        assert_eq!(o.device_sector_size, Some(512));
        check_same(&*o.source, &orig);
    });
    drop(lp);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn sniff_never_panics_on_prefixes() {
    let d = tmpdir();
    let (img, _) = write_image(d.path(), "p.img", 70_000);
    let i = img.display();
    if !fixture(&format!(
        "xz -c {i} > {i}.xz && gzip -c {i} > {i}.gz && zstd -q -c {i} > {i}.zst"
    )) {
        return;
    }
    for ext in ["xz", "gz", "zst"] {
        let full = std::fs::read(format!("{i}.{ext}")).unwrap();
        for n in [0, 1, 3, 5, 6, 12, 20, 100, full.len() - 1] {
            let src = blockwise::io::MemSource(full[..n.min(full.len())].to_vec());
            let _ = blockwise::format::sniff(&src).unwrap();
            let _ = blockwise::format::open_source(Arc::new(src), "x", &OpenOptions::default());
        }
    }
}

/// liblzma's threaded decoder only runs blocks in parallel if it is allowed the memory; this
/// checks worker threads exist while a multi-block xz is decoded. Ignored by default because
/// other tests' threads make the count noisy; run with `--ignored --test-threads=1`.
#[test]
#[ignore]
fn xz_decoder_uses_threads() {
    let d = tmpdir();
    let (img, _) = write_image(d.path(), "disk.img", 16 << 20);
    if !fixture(&format!(
        "xz -T2 --block-size=1MiB -c {0} > {0}.xz",
        img.display()
    )) {
        return;
    }
    let tasks = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = tasks();
    let f = Arc::new(FileSource::open(&PathBuf::from(format!("{}.xz", img.display()))).unwrap());
    let s = StreamSource::new(Codec::Xz, f, None).unwrap();
    let mut b = vec![0u8; 1 << 20];
    s.read_exact_at(8 << 20, &mut b).unwrap();
    let during = tasks();
    eprintln!("threads before {before}, while decoding {during}");
    assert!(during > before);
}

mod hostile {
    use super::*;
    use blockwise::format::container::android_sparse;
    use blockwise::format::{cd, sniff, OpenCtx, DRIVERS};
    use blockwise::io::MemSource;
    use proptest::prelude::*;

    /// A small valid sparse image, CUE sheet and container headers to mutate.
    fn seeds() -> Vec<Vec<u8>> {
        let mut simg = Vec::new();
        for v in [
            0xED26_FF3Au32.to_le_bytes().to_vec(),
            vec![1, 0, 0, 0, 28, 0, 12, 0],
        ] {
            simg.extend(v);
        }
        for v in [8u32, 3, 3, 0] {
            simg.extend(v.to_le_bytes());
        }
        for (ty, n, tot) in [(0xCAC1u16, 1u32, 20u32), (0xCAC2, 1, 16), (0xCAC3, 1, 12)] {
            simg.extend(ty.to_le_bytes());
            simg.extend([0, 0]);
            simg.extend(n.to_le_bytes());
            simg.extend(tot.to_le_bytes());
            simg.extend(vec![0xAB; (tot - 12) as usize]);
        }
        let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
        qcow.resize(104, 0);
        let mut vhdx = b"vhdxfile".to_vec();
        vhdx.resize(200 << 10, 0);
        vhdx[192 << 10..(192 << 10) + 4].copy_from_slice(b"regi");
        vec![
            simg,
            b"FILE \"a.bin\" BINARY\n TRACK 01 MODE1/2352\n  INDEX 01 00:00:00\n".to_vec(),
            qcow,
            vhdx,
        ]
    }

    fn exercise(data: Vec<u8>) {
        let src = MemSource(data);
        let _ = sniff(&src).unwrap();
        if let Ok(s) = android_sparse::AndroidSparse::open(Arc::new(src.clone())) {
            let _ = s.read_upto(0, (s.size() as usize).min(1 << 16));
        }
        let _ = cd::cue::parse_cue(&String::from_utf8_lossy(&src.0));
        // Every driver, whatever the bytes are recognised as.
        for d in DRIVERS {
            let opts = OpenOptions::default();
            let mut ctx = OpenCtx::new(&opts, Path::new("p"), None);
            if let Ok(step) = d.open(Arc::new(src.clone()), &mut ctx) {
                if let Some(inner) = step.inner {
                    let _ = inner.read_upto(0, 4096);
                }
            }
        }
        let _ = xz_size_from_index(&src);
        let _ = blockwise::format::compress::zstd::size_from_frames(&src);
        if let Ok(o) = blockwise::format::open_source(Arc::new(src), "p", &OpenOptions::default()) {
            let _ = o.source.read_upto(0, 4096);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise(data);
        }

        #[test]
        fn mutated_seeds(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut d = seeds()[which].clone();
            for (at, b) in edits {
                let n = d.len();
                d[at % n] = b;
            }
            let keep = d.len() - cut % (d.len() / 4 + 1);
            d.truncate(keep);
            exercise(d);
        }
    }
}

/// Writes a seekable-zstd file by hand (the zstd CLI cannot): independent frames plus the
/// seek table in a skippable frame. `zstd -d` must still decode it as plain zstd.
#[test]
fn seekable_zstd_random_access() {
    let d = tmpdir();
    let orig = image_bytes((3 << 20) + 4321);
    let mut out = Vec::new();
    let mut table = Vec::new();
    for piece in orig.chunks(256 << 10) {
        let c = zstd::bulk::compress(piece, 3).unwrap();
        table.extend((c.len() as u32).to_le_bytes());
        table.extend((piece.len() as u32).to_le_bytes());
        out.extend(c);
    }
    let n = (table.len() / 8) as u32;
    table.extend(n.to_le_bytes());
    table.push(0);
    table.extend(0x8F92_EAB1u32.to_le_bytes());
    out.extend(0x184D_2A5Eu32.to_le_bytes());
    out.extend((table.len() as u32).to_le_bytes());
    out.extend(table);
    let p = d.path().join("s.img.zst");
    std::fs::write(&p, &out).unwrap();
    let o = open_path(&p);
    assert_eq!(formats(&o), vec![Format::SeekableZstd, Format::Raw]);
    assert!(o.random_access());
    check_same(&*o.source, &orig);
    if fixture(&format!(
        "zstd -q -d -c {} > {}",
        p.display(),
        d.path().join("plain").display()
    )) {
        assert!(std::fs::read(d.path().join("plain")).unwrap() == orig);
    }
}

/// A fixed VHD inside xz (how cloud images ship): found by its footer, decoded to the raw
/// disk, whatever the file is called, when the xz is read block by block. A streamed xz (here
/// the BCJ filter keeps blocks from being read on their own) has its size from the index, so
/// opening does not decode it, not even for the footer: the reader that reaches the end finds
/// it with `trailer_format`.
#[test]
fn fixed_vhd_inside_xz() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "c.img", 4 << 20);
    let i = img.display();
    if !fixture(&format!("qemu-img convert -f raw -O vpc -o subformat=fixed {i} {i}.vhd && xz -T2 -k {i}.vhd && cp {i}.vhd.xz {i}.other.xz && xz -T1 --x86 --lzma2 -c {i}.vhd > {i}.bcj.xz")) {
        return;
    }
    for name in ["vhd.xz", "other.xz"] {
        let o = open_path(Path::new(&format!("{i}.{name}")));
        assert!(o.random_access(), "{name}");
        assert_eq!(
            formats(&o),
            vec![Format::Xz, Format::Vhd, Format::Raw],
            "{name}"
        );
        assert!(o.source.read_vec(0, orig.len()).unwrap() == orig, "{name}");
    }
    let o = open_path(Path::new(&format!("{i}.bcj.xz")));
    assert!(!o.random_access());
    assert_eq!(formats(&o), vec![Format::Xz, Format::Raw]);
    let last = o.source.read_vec(o.source.size() - 512, 512).unwrap();
    assert_eq!(blockwise::format::trailer_format(&last), Some(Format::Vhd));
}

/// A fixed VHD gzipped as `disk.gz` (no hint in the name) is read as a VHD: an Eager open looks
/// at the decoded stream's last sector by its bytes, at no extra decoding cost. Deferred leaves
/// that to the reader, who finds the footer with `trailer_format` at the end of its pass.
#[test]
fn fixed_vhd_in_gzip_is_found_by_its_footer() {
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "c.img", (4 << 20) + 4096);
    let i = img.display();
    let dir = d.path().display();
    if !fixture(&format!(
        "qemu-img convert -f raw -O vpc -o subformat=fixed {i} {dir}/f.vhd && gzip -c {dir}/f.vhd > {dir}/disk.gz"
    )) {
        return;
    }
    let vhd_len = std::fs::metadata(d.path().join("f.vhd")).unwrap().len();
    let gz = d.path().join("disk.gz");
    let stored = std::fs::metadata(&gz).unwrap().len();
    let c = Arc::new(Counting::new(FileSource::open(&gz).unwrap()));
    let o = blockwise::format::open_source(c.clone(), "disk.gz", &OpenOptions::default()).unwrap();
    assert_eq!(formats(&o), vec![Format::Gzip, Format::Vhd, Format::Raw]);
    assert!(o.source.read_vec(0, orig.len()).unwrap() == orig);
    assert!(!o
        .source
        .read_upto(0, o.source.size() as usize)
        .unwrap()
        .windows(8)
        .any(|w| w == b"conectix"));
    assert!(
        c.bytes_read() < stored + stored / 8,
        "decoded once: read {} of {stored}",
        c.bytes_read()
    );
    assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
    let o = open_path(&gz);
    assert_eq!(formats(&o), vec![Format::Gzip, Format::Vhd, Format::Raw]);

    let o = blockwise::format::open(&gz, &OpenOptions::deferred()).unwrap();
    assert_eq!(formats(&o), vec![Format::Gzip, Format::Raw]);
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut o.source.sequential(0).unwrap(), &mut all).unwrap();
    assert_eq!(all.len() as u64, vhd_len);
    assert_eq!(
        blockwise::format::trailer_format(&all[all.len() - 512..]),
        Some(Format::Vhd)
    );
    assert_eq!(
        blockwise::format::trailer_format(&orig[orig.len() - 512..]),
        None
    );
}

/// Every file of the corpus opens or fails with an error: never a panic. Prints the chains,
/// which doubles as a survey of what the sniffer makes of real-world files.
#[test]
fn corpus_open_everything_without_panics() {
    // INDEX.md lists the corpus: present means the corpus is.
    if common::corpus_file("INDEX.md").is_none() {
        return;
    }
    let root = &common::corpus();
    let mut stack = vec![root.to_path_buf()];
    let (mut ok, mut err) = (0, 0);
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            match open(&p, &OpenOptions::default()) {
                Ok(o) => {
                    ok += 1;
                    let _ = o
                        .source
                        .read_upto(0, 4096)
                        .map_err(|e| eprintln!("{}: read: {e}", p.display()));
                    if o.chain.len() > 1 || o.chain[0].format != Format::Raw {
                        eprintln!(
                            "{}: {:?}",
                            p.strip_prefix(root).unwrap().display(),
                            formats(&o)
                        );
                    }
                }
                Err(e) => {
                    err += 1;
                    eprintln!("{}: error: {e}", p.strip_prefix(root).unwrap().display());
                }
            }
        }
    }
    eprintln!("corpus: {ok} opened, {err} errors");
    assert!(ok > 0);
}

/// Opened Deferred, a `.gz`/`.bz2`/`.lz4` image is not decoded to learn its size: only the head
/// is decoded, the size is a hint, and one in-order pass makes it exact. Opened Eager (what
/// `inspect` does) it is decoded exactly once. Counted on the compressed side.
#[test]
fn deferred_open_decodes_only_the_head() {
    use blockwise::io::SizeKnown;
    let d = tmpdir();
    let (img, orig) = write_image(d.path(), "big.img", (24 << 20) + 321);
    let i = img.display();
    for (ext, cmd, fmt) in [
        ("gz", format!("gzip -c {i} > {i}.gz"), Format::Gzip),
        ("bz2", format!("bzip2 -c {i} > {i}.bz2"), Format::Bzip2),
        ("lz4", format!("lz4 -q -c {i} > {i}.lz4"), Format::Lz4),
    ] {
        if !fixture(&cmd) {
            continue;
        }
        let p = PathBuf::from(format!("{i}.{ext}"));
        let stored = std::fs::metadata(&p).unwrap().len();
        let counted = || Arc::new(Counting::new(FileSource::open(&p).unwrap()));

        let c = counted();
        let o = blockwise::format::open_source(c.clone(), "big", &OpenOptions::deferred()).unwrap();
        assert_eq!(formats(&o), vec![fmt, Format::Raw], "{ext}");
        let at_open = c.bytes_read();
        eprintln!("{ext}: Deferred open read {at_open} of {stored} compressed bytes");
        assert!(at_open < stored / 3, "{ext}: read {at_open} of {stored}");
        assert_eq!(o.source.caps().size, SizeKnown::Hint, "{ext}");
        let detail = o.chain[0].detail.clone().unwrap_or_default();
        assert!(detail.contains("hint"), "{ext}: {detail}");
        let mut n = 0u64;
        let mut r = o.source.sequential(0).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = std::io::Read::read(&mut r, &mut buf).unwrap();
            if k == 0 {
                break;
            }
            assert!(buf[..k] == orig[n as usize..n as usize + k], "{ext} at {n}");
            n += k as u64;
        }
        drop(r);
        assert_eq!(n, orig.len() as u64, "{ext}");
        assert_eq!(o.source.size(), orig.len() as u64, "{ext}");
        assert_eq!(o.source.caps().size, SizeKnown::Exact, "{ext}");
        let pass = c.bytes_read() - at_open;
        assert!(pass <= stored + (1 << 20), "{ext}: one pass read {pass}");

        let c = counted();
        let o = blockwise::format::open_source(c.clone(), "big", &OpenOptions::default()).unwrap();
        let eager = c.bytes_read();
        eprintln!("{ext}: Eager open read {eager} of {stored} compressed bytes");
        assert!(
            eager >= stored && eager < stored + stored / 8,
            "{ext}: {eager}"
        );
        assert_eq!(o.source.size(), orig.len() as u64, "{ext}");
        assert_eq!(o.source.caps().size, SizeKnown::Exact, "{ext}");
    }
}

/// The bmap of `img` as `blockwise bmap` writes it, and what it said on stderr.
fn cli_bmap(img: &Path) -> (String, String) {
    let out = img.with_extension("test.bmap");
    let o = common::blockwise()
        .args(["bmap", "-o"])
        .arg(&out)
        .arg(img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "bmap {}: {err}", img.display());
    (std::fs::read_to_string(&out).unwrap(), err)
}

/// `bmap` (and `backup`, on the same path) of a `.gz`/`.bz2`/`.lz4` card opens it Deferred:
/// the stream is no longer decoded once to learn its size, only by the scan (as far as the
/// last partition's metadata) and by the pass, which reads it to its end and checks that the
/// end is where the plan put it. Counted on the compressed side, against an Eager open; the
/// bmaps are byte-identical to the raw card's.
#[test]
fn one_pass_commands_do_not_decode_a_stream_to_size_it() {
    let d = tmpdir();
    let card = common::unpack_sample(d.path());
    let c = card.display();
    let raw = {
        let o = open_path(&card);
        let scan = blockwise::scan::scan(&o).unwrap();
        let map = blockwise::map::image_map(&scan).unwrap();
        blockwise::bmap::generate(&*o.source, &map.used, true, &Default::default()).unwrap()
    };
    for (ext, cmd) in [
        ("gz", format!("gzip -c {c} > {c}.gz")),
        ("bz2", format!("bzip2 -c {c} > {c}.bz2")),
        ("lz4", format!("lz4 -q -c {c} > {c}.lz4")),
    ] {
        if !fixture(&cmd) {
            continue;
        }
        let p = PathBuf::from(format!("{c}.{ext}"));
        let stored = std::fs::metadata(&p).unwrap().len();
        let read_by = |opts: &OpenOptions| {
            let counted = Arc::new(Counting::new(FileSource::open(&p).unwrap()));
            let o = blockwise::format::open_source(counted.clone(), "card", opts).unwrap();
            let scan = blockwise::scan::scan(&o).unwrap();
            scan.still_fits(&*o.source).unwrap();
            let map = blockwise::map::image_map(&scan).unwrap();
            let bmap = blockwise::bmap::generate(&*o.source, &map.used, true, &Default::default())
                .unwrap();
            (bmap, counted.bytes_read())
        };
        let (deferred, once) = read_by(&OpenOptions::deferred());
        let (eager, sized_first) = read_by(&OpenOptions::default());
        eprintln!("{ext}: {stored} stored; read {once} Deferred, {sized_first} Eager");
        assert!(deferred == raw && eager == raw, "{ext}: bmaps differ");
        assert!(
            once + stored * 9 / 10 <= sized_first,
            "{ext}: one decode saved? {once} vs {sized_first} of {stored}"
        );
        assert!(once < stored * 2, "{ext}: {once} of {stored}");
        assert_eq!(cli_bmap(&p).0.as_bytes(), &raw[..], "{ext}: CLI");
    }
}

/// A stream that is not what its headers suggest is read again, sized first, and the outputs
/// are those of the real image: a bzip2 (no size field) whose MBR ends long before its data
/// does (the pass reads on past the plan's end), and a gzip holding a fixed VHD (the pass
/// finds the footer in the last sector). Nothing from the first attempt is kept.
#[test]
fn a_stream_that_misleads_its_plan_is_read_again() {
    let d = tmpdir();
    let dir = d.path().display();
    // A 2 MiB partition ending at 3 MiB, then 5 MiB that no table mentions, data at its end.
    if !fixture(&format!(
        "truncate -s 8M {dir}/long.img && echo 'start=2048, size=4096, type=83' | \
         sfdisk -q {dir}/long.img && head -c 65536 /dev/urandom | \
         dd of={dir}/long.img bs=64K seek=127 conv=notrunc status=none && \
         bzip2 -k {dir}/long.img"
    )) {
        return;
    }
    let (want, _) = cli_bmap(&d.path().join("long.img"));
    let (got, err) = cli_bmap(&d.path().join("long.img.bz2"));
    assert_eq!(got, want);
    assert!(got.contains("<ImageSize> 8388608 </ImageSize>"), "{got}");
    assert!(
        err.contains("not the 3145728 planned") && err.contains("reading it again"),
        "{err}"
    );
    // Verify reads a stream as far as the bmap's image size, and no further: one that ends
    // before it is truncated, even past the last mapped range.
    let bmap = d.path().join("long.img.test.bmap");
    assert!(fixture(&format!(
        "head -c 4M {dir}/long.img | bzip2 > {dir}/short.img.bz2"
    )));
    let o = common::blockwise()
        .args(["verify", "--bmap"])
        .arg(&bmap)
        .arg(d.path().join("short.img.bz2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("the image is 4194304 bytes but the bmap describes 8388608 bytes"),
        "{err}"
    );
    let o = common::blockwise()
        .args(["verify", "--bmap"])
        .arg(&bmap)
        .arg(d.path().join("long.img.bz2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let card = common::unpack_sample(d.path());
    let c = card.display();
    if !fixture(&format!(
        "qemu-img convert -f raw -O vpc -o subformat=fixed {c} {dir}/f.vhd && \
         gzip -c {dir}/f.vhd > {dir}/disk.gz"
    )) {
        return;
    }
    let backup = |src: &str, dest: &str| {
        let o = common::blockwise()
            .args(["backup", "--force"])
            .arg(d.path().join(src))
            .arg(d.path().join(dest))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = backup("disk.gz", "from-gz.zst");
    assert!(
        err.contains("vhd trailer") && err.contains("reading it again"),
        "{err}"
    );
    backup("f.vhd", "from-vhd.zst");
    let read = |n: &str| std::fs::read(d.path().join(n)).unwrap();
    assert!(
        read("from-gz.zst") == read("from-vhd.zst"),
        "archives differ"
    );
    assert_eq!(read("from-gz.zst.bmap"), read("from-vhd.zst.bmap"));
}
