//! bmap files: our writer is byte-identical to `bmaptool create`, bmaptool accepts our bmaps,
//! our reader accepts every bmaptool version in the corpus and refuses tampered files.

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};

use blockwise::bmap::{self, write::block_ranges, BmapWriteOptions};
use blockwise::format::{self, OpenOptions};
use blockwise::io::{MemSource, ReadAt};
use common::*;

fn our_holes_bmap(path: &std::path::Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let map = bmap::file_data_ranges(&f).unwrap();
    let data = std::fs::read(path).unwrap();
    let src = MemSource(data);
    let ranges = block_ranges(size, &map, 4096);
    let ck = bmap::range_checksums(&src, &ranges, 4096, size).unwrap();
    bmap::render(size, &map, Some(&ck), &BmapWriteOptions::default())
}

#[test]
fn writer_is_byte_identical_to_bmaptool() {
    if !have("bmaptool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Sizes chosen to exercise the placeholder quirks: a mapped size longer and shorter than
    // the image size in human form, a partial last block, a single-block range.
    for (i, (size, writes)) in [
        (
            821_752u64,
            vec![(0u64, 8192u64), (12288, 12288), (36864, 8192)],
        ),
        (1 << 30, vec![(0, 4096), (700 << 20, 300 << 20)]),
        (10_000_000, vec![(9_990_000, 10_000)]),
        (5000, vec![(0, 5000)]),
    ]
    .into_iter()
    .enumerate()
    {
        let img = dir.path().join(format!("img{i}"));
        sh(&format!("truncate -s {size} {}", img.display()));
        for (off, len) in writes {
            sh(&format!(
                "head -c {len} /dev/urandom | dd of={} bs=4096 seek={off} oflag=seek_bytes conv=notrunc status=none",
                img.display()
            ));
        }
        sh("sync");
        let theirs = dir.path().join(format!("img{i}.bmap"));
        sh(&format!(
            "bmaptool create -o {} {}",
            theirs.display(),
            img.display()
        ));
        let theirs = std::fs::read(&theirs).unwrap();
        let ours = our_holes_bmap(&img);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "image {i} (size {size})"
        );
    }
}

/// bmaptool's own test image, decompressed.
fn corpus_image() -> Option<Vec<u8>> {
    let p = corpus_file("bmaptool/tests/test-data/test.image.gz")?;
    let gz = std::fs::read(&p).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    Some(out)
}

#[test]
fn reader_accepts_every_corpus_version_and_checksums_match() {
    let Some(img) = corpus_image() else {
        return;
    };
    let Some(base) = corpus_file("bmaptool/tests/test-data") else {
        return;
    };
    for v in ["1.2", "1.3", "1.4", "2.0"] {
        let data = std::fs::read(base.join(format!("test.image.bmap.v{v}"))).unwrap();
        let b = bmap::parse(&data).unwrap_or_else(|e| panic!("v{v}: {e}"));
        assert_eq!(b.version, v);
        assert_eq!(b.image_size, img.len() as u64);
        assert_eq!(b.mapped_blocks, 117);
        for r in &b.ranges {
            let (s, e) = bmap::range_bytes(r.first, r.last, b.block_size, b.image_size);
            let bytes = &img[s as usize..e as usize];
            let got = match b.checksum_type.unwrap() {
                bmap::ChecksumType::Sha256 => {
                    use sha2::Digest;
                    bmap::hex(&sha2::Sha256::digest(bytes))
                }
                bmap::ChecksumType::Sha1 => {
                    use sha1::Digest;
                    bmap::hex(&sha1::Sha1::digest(bytes))
                }
            };
            assert_eq!(
                r.checksum.as_deref(),
                Some(got.as_str()),
                "v{v} range {}-{}",
                r.first,
                r.last
            );
        }
    }
}

#[test]
fn tampered_and_malformed_bmaps_are_refused_clearly() {
    let Some(base) = corpus_file("bmaptool/tests/test-data/test.image.bmap.v2.0") else {
        return;
    };
    let good = std::fs::read_to_string(&base).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (good.replacen("> 3-5 <", "> 3-6 <", 1), "checksum mismatch"),
        (
            good.replacen("<ImageSize> 821752", "<ImageSize> 921752", 1),
            "checksum mismatch",
        ),
        (
            good.replacen("<bmap version=\"2.0\">", "<bmap version=\"3.0\">", 1),
            "version",
        ),
        (good[..good.len() / 2].to_string(), ""),
        ("not xml at all".to_string(), ""),
    ];
    for (text, want) in cases {
        let e = bmap::parse(text.as_bytes())
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    // Deterministic mutations: never a panic, and never accepted with a bad checksum.
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..3000 {
        let mut m = good.clone().into_bytes();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % m.len();
        m[i] = (x >> 32) as u8;
        if let Ok(b) = bmap::parse(&m) {
            // Only changes the checksum cannot see (e.g. inside a comment) may pass, and
            // then the result must equal the original's.
            assert_eq!(b, bmap::parse(good.as_bytes()).unwrap());
        }
    }
}

#[test]
fn bmaptool_copies_with_our_filesystem_bmap() {
    if !have("bmaptool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let data = std::fs::read(&img).unwrap();
    let src: Arc<dyn ReadAt> = Arc::new(MemSource(data.clone()));
    let scan = blockwise::scan::scan_source(src.clone(), None).unwrap();
    let map = blockwise::map::image_map(&scan).unwrap();
    let size = data.len() as u64;
    let ranges = block_ranges(size, &map.used, 4096);
    let ck = bmap::range_checksums(&*src, &ranges, 4096, size).unwrap();
    let text = bmap::render(size, &map.used, Some(&ck), &BmapWriteOptions::default());
    let b = bmap::parse(&text).expect("our own bmap parses");
    assert_eq!(b.ranges.len(), ranges.len());
    let bm = dir.path().join("card.bmap");
    std::fs::write(&bm, &text).unwrap();
    let target = dir.path().join("target.img");
    random_file(&target, size, 7);
    sh(&format!(
        "bmaptool copy --bmap {} {} {} 2>&1",
        bm.display(),
        img.display(),
        target.display()
    ));
    let out = std::fs::read(&target).unwrap();
    for r in b.extent_map().iter() {
        assert!(
            out[r.start as usize..r.end as usize] == data[r.start as usize..r.end as usize],
            "mapped range {r} differs after bmaptool copy"
        );
    }
}

#[test]
fn cli_bmap_then_verify_catches_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let bm = dir.path().join("card.img.bmap");
    let o = blockwise()
        .arg("bmap")
        .arg(&img)
        .arg("-o")
        .arg(&bm)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = bmap::parse(&std::fs::read(&bm).unwrap()).unwrap();
    assert_eq!(b.image_size, 128 << 20);

    // Sidecar found without --bmap; all ranges match.
    let o = blockwise().arg("verify").arg(&img).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A byte changed inside a mapped range: exit 3 and the range named.
    let first = b.extent_map().iter().next().unwrap();
    let off = first.start + first.len() / 2;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::os::unix::fs::FileExt;
    let mut old = [0u8; 1];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut old, off)
        .unwrap();
    f.write_all_at(&[old[0] ^ 0xff], off).unwrap();
    let o = blockwise()
        .args(["verify", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["result"]["mismatches"].as_array().unwrap().len(), 1);

    // The same bmap serves the compressed image (bmaps describe the decoded image).
    let xz = repo().join("samples/card.img.xz");
    let o = blockwise()
        .arg("verify")
        .arg(&xz)
        .arg("--bmap")
        .arg(&bm)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn cli_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let xz = repo().join("samples/card.img.xz");
    let o = blockwise()
        .args(["bmap", "--from", "holes"])
        .arg(&xz)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sparse raw file"));
    let o = blockwise()
        .args(["bmap", "--block-size", "1000"])
        .arg(&xz)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lone = dir.path().join("lone.img");
    std::fs::write(&lone, vec![0u8; 8192]).unwrap();
    let o = blockwise().arg("verify").arg(&lone).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no bmap found"));
    // A failed write leaves nothing under the final name.
    let o = blockwise()
        .arg("bmap")
        .arg(&xz)
        .arg("-o")
        .arg(dir.path().join("no/such/dir/x.bmap"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn sidecar_lookup_follows_bmaptool() {
    let c = bmap::sidecar_candidates(std::path::Path::new("/d/x.img.xz"));
    let c: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(c, ["/d/x.img.xz.bmap", "/d/x.img.bmap", "/d/x.bmap"]);
}

/// bmaptool writes some containers as they are (raw CD sectors, Android sparse, VM disks), so
/// a bmap of the image blockwise decodes from them applies to that image (as `convert` writes
/// it, or to `flash --bmap`), not to the file: the command says so, and refuses a name
/// bmaptool would take as the container's own sidecar.
#[test]
fn cli_bmaps_of_containers_describe_the_disk_inside() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"cd\n").unwrap();
    let iso = dir.path().join("x.iso");
    if !have("xorriso") {
        return;
    }
    sh(&format!(
        "xorriso -as mkisofs -quiet -o '{}' '{}' 2>&1",
        iso.display(),
        tree.display()
    ));
    let bin_path = dir.path().join("x.bin");
    std::fs::write(
        &bin_path,
        common::to_raw_mode1(&std::fs::read(&iso).unwrap()),
    )
    .unwrap();
    let o = blockwise().arg("bmap").arg(&bin_path).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("describes the disk inside") && err.contains("raw cd sectors (bin) file"),
        "{err}"
    );
    let parsed = bmap::parse(&o.stdout).unwrap();
    assert_eq!(parsed.image_size, std::fs::metadata(&iso).unwrap().len());
    // x.bmap is what bmaptool would look for beside x.bin: refused, nothing written.
    let side = dir.path().join("x.bmap");
    let o = blockwise()
        .arg("bmap")
        .arg(&bin_path)
        .arg("-o")
        .arg(&side)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("blockwise convert"));
    assert!(!side.exists());
    // The ISO itself is fine.
    let o = blockwise().arg("bmap").arg(&iso).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
}

/// Remembers every read, so a test can tell whether some bytes were read (decoded) twice.
struct Tally {
    inner: MemSource,
    reads: Mutex<Vec<(u64, u64)>>,
}

impl ReadAt for Tally {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.reads.lock().unwrap().push((offset, offset + n as u64));
        Ok(n)
    }
}

#[test]
fn verify_and_bmap_of_an_archive_decode_each_frame_once() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    for name in ["c.img.zst", "c.img.xz"] {
        let dest = dir.path().join(name);
        let o = blockwise()
            .arg("backup")
            .arg(&img)
            .arg(&dest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bmap_text = std::fs::read(dir.path().join(format!("{name}.bmap"))).unwrap();
        let b = bmap::parse(&bmap_text).unwrap();
        let tally = Arc::new(Tally {
            inner: MemSource(std::fs::read(&dest).unwrap()),
            reads: Mutex::new(Vec::new()),
        });
        let opened = format::open_source(tally.clone(), name, &OpenOptions::default()).unwrap();
        assert!(opened.random_access(), "{name}");
        for pass in ["verify", "bmap"] {
            tally.reads.lock().unwrap().clear();
            if pass == "verify" {
                let r = bmap::verify(&*opened.source, &b).unwrap();
                assert!(r.mismatches.is_empty(), "{name}: {r:?}");
                assert_eq!(r.ranges_checked, b.ranges.len());
            } else {
                let text = bmap::generate(
                    &*opened.source,
                    &b.extent_map(),
                    true,
                    &BmapWriteOptions::default(),
                )
                .unwrap();
                assert_eq!(
                    text, bmap_text,
                    "{name}: the bmap of the archive is the backup's"
                );
            }
            // Frames are decoded on several threads, each by one and once: decoding a frame
            // again would repeat its reads exactly.
            let mut reads = tally.reads.lock().unwrap().clone();
            assert!(!reads.is_empty());
            reads.sort_unstable();
            for w in reads.windows(2) {
                assert_ne!(w[0], w[1], "{name} {pass}: archive bytes read twice");
            }
        }
    }
}

/// A source whose decoder panics past some offset.
struct Panicking(MemSource);

impl ReadAt for Panicking {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(offset < 3 << 20, "decoder bug");
        self.0.read_at(offset, buf)
    }
}

#[test]
fn a_panicking_decoder_is_an_error_not_a_bmap_without_checksums() {
    let src = Panicking(MemSource(vec![1u8; 16 << 20]));
    let map = blockwise::ExtentMap::from_ranges([(0, 1 << 20), (2 << 20, 12 << 20)]);
    let e = bmap::generate(&src, &map, true, &BmapWriteOptions::default()).unwrap_err();
    assert!(
        matches!(&e, blockwise::Error::Panicked { message, .. } if message.contains("decoder bug")),
        "{e}"
    );
}
