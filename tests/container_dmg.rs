//! DMG (UDIF) images as random-access sources: every real sample decodes to its expected
//! content (etcher-sdk's against the image its tests expect, Apple-made ones against the
//! digests their projects publish, and `dmg2img` where it reads them), the sample card written
//! as a DMG with every chunk codec reads back byte for byte, and hostile block tables give a
//! clear error naming the table and chunk, quickly and in bounded memory.
//!
//! No tool on Debian writes DMGs (`dmg2img` only reads them; libdmg-hfsplus and `hdiutil` are
//! not packaged), so the sample-card DMGs are written here by a small writer independent of the
//! reader, and `dmg2img` checks that writer's output where it can decode it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use blockwise::format::{open, open_source, Format, OpenOptions, Opened};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use common::{have, skip, Need};

// ---------------------------------------------------------------------------------------------
// A DMG writer for the tests (koly trailer, XML plist, base64 mish tables), written from the
// format description and kept apart from the reader.

const ZERO: u32 = 0;
const RAW: u32 = 1;
const IGNORE: u32 = 2;
const ADC: u32 = 0x8000_0004;
const ZLIB: u32 = 0x8000_0005;
const BZIP2: u32 = 0x8000_0006;
const LZFSE: u32 = 0x8000_0007;
const LZMA: u32 = 0x8000_0008;
const COMMENT: u32 = 0x7fff_fffe;
const END: u32 = 0xffff_ffff;

/// One block table entry as stored: type, sectors relative to the table, bytes in the fork.
#[derive(Clone, Debug)]
struct Entry {
    kind: u32,
    sector: u64,
    sectors: u64,
    off: u64,
    len: u64,
}

/// A `mish` block table: 204-byte header, then 40-byte entries.
fn mish(first: u64, sectors: u64, entries: &[Entry]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"mish");
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&first.to_be_bytes());
    m.extend_from_slice(&sectors.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes()); // data offset
    m.extend_from_slice(&2048u32.to_be_bytes()); // buffers needed
    m.extend_from_slice(&0u32.to_be_bytes()); // block descriptors
    m.extend_from_slice(&[0; 24]);
    m.extend_from_slice(&2u32.to_be_bytes()); // checksum type (CRC-32, left 0)
    m.extend_from_slice(&32u32.to_be_bytes());
    m.extend_from_slice(&[0; 128]);
    m.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    assert_eq!(m.len(), 204);
    for e in entries {
        m.extend_from_slice(&e.kind.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&e.sector.to_be_bytes());
        m.extend_from_slice(&e.sectors.to_be_bytes());
        m.extend_from_slice(&e.off.to_be_bytes());
        m.extend_from_slice(&e.len.to_be_bytes());
    }
    m
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 13 == 0 {
            s.push_str("\n\t\t\t");
        }
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// The XML plist holding `tables` (name, mish bytes) as its `blkx` array, as hdiutil lays
/// it out (with a `plst` array beside it).
fn plist(tables: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST \
         1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n\
         <dict>\n\t<key>resource-fork</key>\n\t<dict>\n\t\t<key>blkx</key>\n\t\t<array>\n",
    );
    for (i, (name, m)) in tables.iter().enumerate() {
        x.push_str(&format!(
            "\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n\
             \t\t\t\t<key>CFName</key>\n\t\t\t\t<string>{name}</string>\n\t\t\t\t<key>Data</key>\n\
             \t\t\t\t<data>\n\t\t\t{}\n\t\t\t\t</data>\n\t\t\t\t<key>ID</key>\n\t\t\t\t<string>{}</string>\n\
             \t\t\t\t<key>Name</key>\n\t\t\t\t<string>{name}</string>\n\t\t\t</dict>\n",
            b64(m),
            i as i64 - 1
        ));
    }
    x.push_str(
        "\t\t</array>\n\t\t<key>plst</key>\n\t\t<array>\n\t\t\t<dict>\n\t\t\t\t<key>Data</key>\n\
         \t\t\t\t<data>AAAA</data>\n\t\t\t</dict>\n\t\t</array>\n\t</dict>\n</dict>\n</plist>\n",
    );
    x.into_bytes()
}

/// The 512-byte `koly` trailer.
fn koly(fork_len: u64, xml_off: u64, xml_len: u64, sectors: u64) -> Vec<u8> {
    let mut k = vec![0u8; 512];
    k[0..4].copy_from_slice(b"koly");
    k[4..8].copy_from_slice(&4u32.to_be_bytes());
    k[8..12].copy_from_slice(&512u32.to_be_bytes());
    k[12..16].copy_from_slice(&1u32.to_be_bytes()); // flattened
    k[32..40].copy_from_slice(&fork_len.to_be_bytes());
    k[56..60].copy_from_slice(&1u32.to_be_bytes());
    k[60..64].copy_from_slice(&1u32.to_be_bytes());
    k[216..224].copy_from_slice(&xml_off.to_be_bytes());
    k[224..232].copy_from_slice(&xml_len.to_be_bytes());
    k[488..492].copy_from_slice(&1u32.to_be_bytes());
    k[492..500].copy_from_slice(&sectors.to_be_bytes());
    k
}

/// Data fork, plist, trailer.
fn assemble(fork: &[u8], tables: &[(String, Vec<u8>)], sectors: u64) -> Vec<u8> {
    let xml = plist(tables);
    let mut f = fork.to_vec();
    f.extend_from_slice(&xml);
    f.extend_from_slice(&koly(
        fork.len() as u64,
        fork.len() as u64,
        xml.len() as u64,
        sectors,
    ));
    f
}

/// A greedy ADC encoder: 3-byte back-references (and 2-byte ones when near and short) to the
/// last place the next 4 bytes were seen, plain runs otherwise.
fn adc_encode(d: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last: std::collections::HashMap<[u8; 4], usize> = Default::default();
    let mut lit: Vec<u8> = Vec::new();
    let flush = |lit: &mut Vec<u8>, out: &mut Vec<u8>| {
        for c in lit.chunks(128) {
            out.push(0x80 | (c.len() as u8 - 1));
            out.extend_from_slice(c);
        }
        lit.clear();
    };
    let mut i = 0;
    while i < d.len() {
        let cand = (i + 4 <= d.len())
            .then(|| {
                let k: [u8; 4] = d[i..i + 4].try_into().unwrap();
                let c = last.insert(k, i);
                c.filter(|&c| i - c <= 65536)
            })
            .flatten();
        if let Some(c) = cand {
            let dist = i - c;
            let mut len = 0;
            while len < 67 && i + len < d.len() && d[c + len] == d[i + len] {
                len += 1;
            }
            if len >= 4 {
                flush(&mut lit, &mut out);
                if dist <= 1024 && len <= 18 {
                    out.push(((len as u8 - 3) << 2) | ((dist - 1) >> 8) as u8);
                    out.push((dist - 1) as u8);
                } else {
                    out.push(0x40 | (len as u8 - 4));
                    out.push(((dist - 1) >> 8) as u8);
                    out.push((dist - 1) as u8);
                }
                i += len;
                continue;
            }
        }
        lit.push(d[i]);
        i += 1;
    }
    flush(&mut lit, &mut out);
    out
}

fn compress(kind: u32, d: &[u8]) -> Vec<u8> {
    match kind {
        RAW => d.to_vec(),
        ADC => adc_encode(d),
        ZLIB => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        BZIP2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        LZMA => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        LZFSE => {
            let mut out = Vec::new();
            lzfse_rust::encode_bytes(d, &mut out).unwrap();
            out
        }
        k => panic!("no encoder for {k:#x}"),
    }
}

/// `disk` as a DMG: one block table per range between `splits` (sector numbers), chunks of
/// `chunk` sectors compressed with `kind`, all-zero chunks as zero-fill or ignored entries,
/// each table opened by a comment and closed by a terminator; chunk data stored in the fork
/// last table first, so offsets are not in disk order.
fn dmg_of(disk: &[u8], kind: u32, chunk: u64, splits: &[u64]) -> Vec<u8> {
    let total = disk.len() as u64 / 512;
    let mut bounds = vec![0];
    bounds.extend(splits.iter().copied().filter(|&s| s > 0 && s < total));
    bounds.push(total);
    // (first sector, sectors, entries, the stored bytes of its data entries in order)
    type Table = (u64, u64, Vec<Entry>, Vec<Vec<u8>>);
    let mut tables: Vec<Table> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut entries = vec![Entry {
            kind: COMMENT,
            sector: 0,
            sectors: 0,
            off: 0,
            len: 0,
        }];
        let mut blobs = Vec::new();
        let mut s = a;
        while s < b {
            let n = chunk.min(b - s);
            let d = &disk[(s * 512) as usize..((s + n) * 512) as usize];
            if d.iter().all(|&x| x == 0) {
                let k = if entries.len() % 2 == 0 { ZERO } else { IGNORE };
                entries.push(Entry {
                    kind: k,
                    sector: s - a,
                    sectors: n,
                    off: 0,
                    len: 0,
                });
            } else {
                // As hdiutil does, a chunk that does not shrink is stored raw.
                let c = compress(kind, d);
                let (k, c) = if c.len() < d.len() {
                    (kind, c)
                } else {
                    (RAW, d.to_vec())
                };
                entries.push(Entry {
                    kind: k,
                    sector: s - a,
                    sectors: n,
                    off: 0,
                    len: 0,
                });
                blobs.push(c);
            }
            s += n;
        }
        entries.push(Entry {
            kind: END,
            sector: b - a,
            sectors: 0,
            off: 0,
            len: 0,
        });
        tables.push((a, b - a, entries, blobs));
    }
    let mut fork = Vec::new();
    for t in tables.iter_mut().rev() {
        let mut blobs = t.3.iter();
        for e in t.2.iter_mut().filter(|e| e.kind == kind || e.kind == RAW) {
            let b = blobs.next().unwrap();
            e.off = fork.len() as u64;
            e.len = b.len() as u64;
            fork.extend_from_slice(b);
        }
    }
    let named: Vec<(String, Vec<u8>)> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("part {i}"), mish(t.0, t.1, &t.2)))
        .collect();
    assemble(&fork, &named, total)
}

// ---------------------------------------------------------------------------------------------

fn open_mem(bytes: Vec<u8>) -> blockwise::Result<Opened> {
    open_source(
        Arc::new(MemSource(bytes)),
        "test.dmg",
        &OpenOptions::default(),
    )
}

fn all(o: &Opened) -> Vec<u8> {
    let size = o.source.size();
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let n = (size - at).min(16 << 20);
        out.extend_from_slice(&o.source.read_vec(at, n as usize).unwrap());
        at += n;
    }
    out
}

fn decode_path(p: &Path) -> Vec<u8> {
    let o = open(p, &OpenOptions::default()).unwrap();
    assert_eq!(o.chain[0].format, Format::Dmg, "{}", p.display());
    assert!(o.warnings.is_empty(), "{}: {:?}", p.display(), o.warnings);
    all(&o)
}

/// `dmg2img`'s decoding of `dmg`, or None (after saying why) when it is not installed.
fn dmg2img(dmg: &Path, dir: &Path) -> Option<Vec<u8>> {
    if !have("dmg2img") {
        skip(
            Need::Oracle,
            "dmg2img not installed (apt-get install dmg2img)",
        );
        return None;
    }
    let out = dir.join(format!(
        "{}.dmg2img",
        dmg.file_name().unwrap().to_string_lossy()
    ));
    let st = Command::new("dmg2img")
        .arg("-s")
        .arg(dmg)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "dmg2img failed on {}", dmg.display());
    Some(std::fs::read(&out).unwrap())
}

fn md5(data: &[u8]) -> String {
    let mut c = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum (coreutils)");
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// What etcher-sdk's DMG tests compare with: `tests/data/images/etcher-test.img`, absent from
/// the corpus copy but present compressed as the `.xz`, `.gz` and `.bz2` samples, which must
/// agree.
fn etcher_test_img(base: &Path) -> Vec<u8> {
    let xz = common::unxz(&base.join("xz/etcher-test.img.xz")).unwrap();
    let gz = open(&base.join("gz/etcher-test.img.gz"), &OpenOptions::default()).unwrap();
    assert_eq!(all(&gz), xz);
    assert_eq!(xz.len(), 5 << 20);
    xz
}

#[test]
fn etcher_samples_all_decode_to_the_etcher_test_image() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    let want = etcher_test_img(&base);
    for codec in ["adc", "bz2", "lzfse", "raw", "zlib"] {
        let p = base.join(format!("dmg/etcher-test-{codec}.dmg"));
        let got = decode_path(&p);
        assert!(
            got == want,
            "{codec}: decoded image differs from etcher-test.img"
        );
        // Stored chunks are what a reader needs; the rest (Apple_Free, zero chunks) is zeros.
        let o = open(&p, &OpenOptions::default()).unwrap();
        let hint = o.source.allocated_hint().unwrap();
        let mut outside = want.clone();
        for e in hint.iter() {
            outside[e.start as usize..e.end as usize].fill(0);
        }
        assert!(
            outside.iter().all(|&b| b == 0),
            "{codec}: data outside the stored chunks"
        );
        assert!(
            hint.total() < want.len() as u64 / 10,
            "{codec}: {}",
            hint.total()
        );
    }
}

#[test]
fn dmg2img_agrees_on_the_corpus_samples() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Debian's dmg2img is built without LZFSE; the LZFSE sample is held to etcher-test.img.
    for f in ["adc", "bz2", "raw", "zlib"]
        .iter()
        .map(|c| format!("etcher-test-{c}.dmg"))
        .chain(["gpt-in-dmg.dmg".to_string()])
    {
        let p = base.join("dmg").join(&f);
        let Some(oracle) = dmg2img(&p, dir.path()) else {
            return;
        };
        assert!(decode_path(&p) == oracle, "{f}: differs from dmg2img");
    }
}

#[test]
fn gpt_in_dmg_is_the_etcher_gpt_image_and_inspect_shows_its_partitions() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    let p = base.join("dmg/gpt-in-dmg.dmg");
    let want = all(&open(
        &base.join("images/etcher-gpt-test.img.gz"),
        &OpenOptions::default(),
    )
    .unwrap());
    assert_eq!(want.len(), 128 << 20);
    // Its trailer says 0 sectors (a partition image, variant 2): the size comes from the
    // block table, and that is not damage.
    assert!(
        decode_path(&p) == want,
        "gpt-in-dmg differs from etcher-gpt-test.img"
    );

    let r = blockwise::report::inspect_path(&p).unwrap();
    assert!(r.contents_decoded);
    assert_eq!(r.image_size, 128 << 20);
    let names: Vec<&str> = r.partitions.iter().map(|p| p.type_name.as_str()).collect();
    assert_eq!(r.partitions.len(), 3, "{names:?}");
    let out = common::blockwise().arg("inspect").arg(&p).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dmg (udif) → raw disk image (GPT, 3 partitions)"),
        "{text}"
    );
    assert!(
        text.contains("Microsoft reserved") && text.contains("Microsoft basic data"),
        "{text}"
    );
    assert!(
        text.contains("vfat FAT32 \"FATFS\"") && text.contains("ntfs"),
        "{text}"
    );
}

fn udif_sample(name: &str) -> PathBuf {
    common::repo().join("tests/data/udif").join(name)
}

#[test]
fn hdiutil_samples_decode_to_their_published_digests() {
    // tests/data/udif/README.md says where each digest comes from.
    for (f, sum) in [
        ("hfsplus_adc.dmg", "08c32fd5d0fc1c2274d1c2d34185312a"),
        ("hfsplus_bzip2.dmg", "7ec785450bbc17de417be373fd5d2159"),
        ("hfsplus_lzfse.dmg", "c2c160c788676641725fd1a4b8da733b"),
        ("hfsplus_lzma.dmg", "ee3b14a7a0824c9d06bfeab97c614767"),
        ("hfsplus_zlib.dmg", "399bfcc39637bde7e43eb86fcc8565ae"),
        ("dfvfs_hfsplus_zlib.dmg", "9f743920a429dab38217082399d07b6f"),
    ] {
        let got = decode_path(&udif_sample(f));
        assert_eq!(md5(&got), sum, "{f}");
        let r = blockwise::report::inspect_path(&udif_sample(f)).unwrap();
        assert_eq!(r.partitions.len(), 1, "{f}");
        assert!(
            r.partitions[0].type_name.contains("HFS"),
            "{f}: {}",
            r.partitions[0].type_name
        );
    }
    // What dfvfs reads from its sample's HFS+ partition.
    let got = decode_path(&udif_sample("dfvfs_hfsplus_zlib.dmg"));
    let pw: &[u8] = b"place,user,password\nbank,joesmith,superrich\nalarm system,-,1234\n\
treasure chest,-,1111\nuber secret laire,admin,admin\n";
    assert!(got.windows(pw.len()).any(|w| w == pw));
}

#[test]
fn the_sample_card_as_a_dmg_reads_back_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let card = std::fs::read(common::unpack_sample(dir.path())).unwrap();
    let raw = blockwise::report::inspect_path(&dir.path().join("card.img")).unwrap();
    // One table per MBR partition and one for what lies before the first, as hdiutil does.
    let splits: Vec<u64> = raw.partitions.iter().map(|p| p.start / 512).collect();
    assert_eq!(splits.len(), 2);
    for (name, kind) in [
        ("raw", RAW),
        ("adc", ADC),
        ("zlib", ZLIB),
        ("bzip2", BZIP2),
        ("lzfse", LZFSE),
        ("lzma", LZMA),
    ] {
        let t = Instant::now();
        let dmg = dmg_of(&card, kind, 2048, &splits);
        let p = dir.path().join(format!("card-{name}.dmg"));
        std::fs::write(&p, &dmg).unwrap();
        let made = t.elapsed();
        let t = Instant::now();
        let got = decode_path(&p);
        eprintln!(
            "{name}: {} bytes, written in {made:?}, decoded in {:?}",
            dmg.len(),
            t.elapsed()
        );
        assert!(got == card, "{name}: decoded card differs");
        let o = open(&p, &OpenOptions::default()).unwrap();
        let hint = o.source.allocated_hint().unwrap();
        assert!(
            hint.total() < card.len() as u64 / 4,
            "{name}: {}",
            hint.total()
        );
        let r = blockwise::report::inspect_path(&p).unwrap();
        assert_eq!(r.partitions.len(), 2, "{name}");
        assert_eq!(
            serde_json::to_value(&r.usage).unwrap(),
            serde_json::to_value(&raw.usage).unwrap(),
            "{name}: the map differs from the raw card's"
        );
        // The reference reader agrees that the writer wrote a DMG whose content is the card.
        if matches!(kind, RAW | ADC | ZLIB | BZIP2) {
            if let Some(oracle) = dmg2img(&p, dir.path()) {
                assert!(oracle == card, "{name}: dmg2img reads another image");
            }
        }
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn files_named_dmg_that_are_not_dmgs_open_as_raw_and_say_so() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    for f in ["images/raw-image-not-a-dmg.dmg", "unrecognized/invalid.dmg"] {
        let o = open(&base.join(f), &OpenOptions::default()).unwrap();
        assert_eq!(o.chain.len(), 1, "{f}");
        assert_eq!(o.chain[0].format, Format::Raw, "{f}");
        assert!(
            o.notes.iter().any(|n| n.contains("not a dmg")),
            "{f}: {:?}",
            o.notes
        );
        let _ = all(&o);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile block tables: one test each, a clear error naming the table and chunk, quickly.

/// A one-table DMG of the given entries over `fork`.
fn one_table(fork: &[u8], sectors: u64, entries: &[Entry]) -> Vec<u8> {
    assemble(fork, &[("evil".into(), mish(0, sectors, entries))], sectors)
}

fn e(kind: u32, sector: u64, sectors: u64, off: u64, len: u64) -> Entry {
    Entry {
        kind,
        sector,
        sectors,
        off,
        len,
    }
}

/// The error of opening `bytes`, within a second.
fn open_err(bytes: Vec<u8>) -> String {
    let t = Instant::now();
    let r = open_mem(bytes);
    assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
    match r {
        Ok(o) => panic!(
            "opened as {:?}",
            o.chain.iter().map(|l| l.format).collect::<Vec<_>>()
        ),
        Err(e) => blockwise::error::chain(&e),
    }
}

/// The error of reading the whole disk of `bytes`: when opening it (which reads the head of
/// the disk to recognise what it holds) or when reading the rest.
fn read_err(bytes: Vec<u8>) -> String {
    let t = Instant::now();
    let r = open_mem(bytes).and_then(|o| {
        assert_eq!(o.chain[0].format, Format::Dmg);
        Ok(o.source.read_vec(0, o.source.size() as usize)?)
    });
    assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
    blockwise::error::chain(&r.expect_err("read succeeded"))
}

#[test]
fn hostile_overlapping_chunks_in_one_table() {
    let fork = vec![1u8; 2048];
    let m = one_table(
        &fork,
        4,
        &[
            e(RAW, 0, 3, 0, 1536),
            e(RAW, 2, 2, 0, 1024),
            e(END, 4, 0, 0, 0),
        ],
    );
    let err = open_err(m);
    assert!(
        err.contains("chunk 0 of blkx table 0") && err.contains("overlaps chunk 1 of blkx table 0"),
        "{err}"
    );
}

#[test]
fn hostile_overlapping_blkx_tables() {
    let fork = vec![1u8; 4096];
    let a = mish(0, 4, &[e(RAW, 0, 4, 0, 2048), e(END, 4, 0, 0, 0)]);
    let b = mish(3, 4, &[e(ZERO, 0, 4, 0, 0), e(END, 4, 0, 0, 0)]);
    let m = assemble(&fork, &[("first".into(), a), ("second".into(), b)], 7);
    let err = open_err(m);
    assert!(
        err.contains("\"first\"") && err.contains("overlaps") && err.contains("\"second\""),
        "{err}"
    );
}

#[test]
fn hostile_chunk_past_the_data_fork() {
    let fork = vec![1u8; 1024];
    let m = one_table(&fork, 4, &[e(ZLIB, 0, 4, 512, 1024), e(END, 4, 0, 0, 0)]);
    let err = open_err(m);
    assert!(
        err.contains("chunk 0 (zlib)") && err.contains("past the data fork"),
        "{err}"
    );
}

#[test]
fn hostile_chunk_past_the_end_of_the_file() {
    let fork = vec![1u8; 1024];
    let m = one_table(
        &fork,
        1 << 20,
        &[e(RAW, 0, 1 << 20, 0, 1 << 29), e(END, 1 << 20, 0, 0, 0)],
    );
    let err = open_err(m);
    assert!(
        err.contains("chunk 0 (raw)") && err.contains("reach past"),
        "{err}"
    );
    // A trailer whose data fork goes on past the end of the file (so its chunks could).
    let mut m = one_table(&fork, 2, &[e(RAW, 0, 2, 0, 1024)]);
    let n = m.len();
    m[n - 512 + 32..n - 512 + 40].copy_from_slice(&(1u64 << 40).to_be_bytes());
    let err = open_err(m);
    assert!(
        err.contains("koly") && err.contains("data fork (1099511627776 bytes"),
        "{err}"
    );
}

#[test]
fn hostile_sector_counts_overflowing_64_bits() {
    let fork = vec![1u8; 1024];
    // Inside the table by its own count, but past 2^64 bytes once in bytes.
    let m = one_table(
        &fork,
        u64::MAX,
        &[e(ZERO, 1 << 60, 1 << 58, 0, 0), e(END, 0, 0, 0, 0)],
    );
    let err = open_err(m);
    assert!(
        err.contains("blkx table 0") && err.contains("overflows"),
        "{err}"
    );
    // Sector + count past 2^64 within the table.
    let m = one_table(&fork, 16, &[e(ZERO, u64::MAX, 2, 0, 0)]);
    let err = open_err(m);
    assert!(
        err.contains("chunk 0 (zero)") && err.contains("reach past the table"),
        "{err}"
    );
    // The koly sector count overflowing bytes: the disk ends with its tables, with a warning.
    let mut m = one_table(&fork, 2, &[e(RAW, 0, 2, 0, 1024)]);
    let n = m.len();
    m[n - 20..n - 12].copy_from_slice(&u64::MAX.to_be_bytes());
    let o = open_mem(m).unwrap();
    assert_eq!(o.source.size(), 1024);
    assert!(
        o.warnings.iter().any(|w| w.contains("sector count")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn hostile_plist_of_gigabytes_is_refused_before_reading() {
    let mut m = one_table(&[1u8; 512], 1, &[e(RAW, 0, 1, 0, 512)]);
    let n = m.len();
    m[n - 512 + 224..n - 512 + 232].copy_from_slice(&(3u64 << 30).to_be_bytes());
    let err = open_err(m);
    assert!(
        err.contains("koly") && err.contains("XML plist") && err.contains("3221225472"),
        "{err}"
    );
}

#[test]
fn hostile_base64_garbage() {
    let mut m = one_table(&[1u8; 512], 1, &[e(RAW, 0, 1, 0, 512)]);
    let at = m.windows(6).position(|w| w == b"<data>").unwrap() + 10;
    m[at] = b'*';
    let err = open_err(m);
    assert!(
        err.contains("Data of blkx entry 0") && err.contains("not base64"),
        "{err}"
    );
}

#[test]
fn hostile_zip_bomb_chunk_is_cut_at_its_claim() {
    // 64 MiB of zeros compress to ~64 KiB; the table says the chunk is one sector.
    let bomb = compress(ZLIB, &vec![0u8; 64 << 20]);
    let m = one_table(
        &bomb,
        1,
        &[e(ZLIB, 0, 1, 0, bomb.len() as u64), e(END, 1, 0, 0, 0)],
    );
    let err = read_err(m);
    assert!(
        err.contains("chunk 0 of blkx table 0") && err.contains("decodes to more"),
        "{err}"
    );
    // And the same for each codec that can be made here.
    for kind in [BZIP2, LZMA, LZFSE, ADC] {
        let bomb = compress(kind, &vec![7u8; 4 << 20]);
        let m = one_table(&bomb, 8, &[e(kind, 0, 8, 0, bomb.len() as u64)]);
        let err = read_err(m);
        assert!(err.contains("decodes to more"), "{kind:#x}: {err}");
    }
    // A chunk claiming more disk than is decoded at once is refused at open.
    let m = one_table(&bomb, 1 << 20, &[e(ZLIB, 0, 1 << 20, 0, bomb.len() as u64)]);
    let err = open_err(m);
    assert!(err.contains("compressed chunk of 536870912 bytes"), "{err}");
}

#[test]
fn hostile_chunk_that_decodes_short() {
    let d = compress(ZLIB, &[5u8; 1000]);
    let m = one_table(&d, 4, &[e(ZLIB, 0, 4, 0, d.len() as u64)]);
    let err = read_err(m);
    assert!(
        err.contains("chunk 0 of blkx table 0") && err.contains("only 1000 bytes"),
        "{err}"
    );
}

#[test]
fn hostile_adc_reference_before_the_start() {
    // A plain byte, then a reference 200 bytes back.
    let d = [0x80, b'x', 0x40, 0x00, 199];
    let m = one_table(&d, 1, &[e(ADC, 0, 1, 0, d.len() as u64)]);
    let err = read_err(m);
    assert!(
        err.contains("chunk 0 of blkx table 0") && err.contains("before the start"),
        "{err}"
    );
}

#[test]
fn hostile_corrupt_codec_data_names_the_chunk() {
    let junk = vec![0x5a; 300];
    for kind in [ZLIB, BZIP2, LZMA, LZFSE] {
        let m = one_table(&junk, 1, &[e(kind, 0, 1, 0, 300)]);
        let err = read_err(m);
        assert!(
            err.contains("chunk 0 of blkx table 0") && err.contains("does not decode"),
            "{kind:#x}: {err}"
        );
    }
}

#[test]
fn hostile_table_claiming_more_entries_than_it_holds() {
    let mut t = mish(0, 1, &[e(RAW, 0, 1, 0, 512)]);
    t[200..204].copy_from_slice(&u32::MAX.to_be_bytes());
    let m = assemble(&[1u8; 512], &[("evil".into(), t)], 1);
    let err = open_err(m);
    assert!(err.contains("4294967295 chunk entries claimed"), "{err}");
}

#[test]
fn unsupported_layouts_are_named() {
    // No XML plist, block tables in a resource fork (before Mac OS X 10.2).
    let mut k = koly(512, 0, 0, 1);
    k[40..48].copy_from_slice(&512u64.to_be_bytes());
    k[48..56].copy_from_slice(&100u64.to_be_bytes());
    let mut m = vec![0u8; 612];
    m.extend_from_slice(&k);
    let err = open_err(m);
    assert!(
        err.contains("resource fork") && err.contains("unsupported"),
        "{err}"
    );
    // Segmented images.
    let mut m = one_table(&[1u8; 512], 1, &[e(RAW, 0, 1, 0, 512)]);
    let n = m.len();
    m[n - 512 + 60..n - 512 + 64].copy_from_slice(&3u32.to_be_bytes());
    let err = open_err(m);
    assert!(err.contains("segmented DMG (3 segments"), "{err}");
    // Unknown chunk types.
    let m = one_table(&[1u8; 512], 1, &[e(0x8000_0009, 0, 1, 0, 512)]);
    let err = open_err(m);
    assert!(err.contains("chunk type 0x80000009"), "{err}");
}

#[test]
fn gaps_between_tables_read_as_zeros_and_are_not_stored() {
    let fork = vec![9u8; 1024];
    let a = mish(0, 1, &[e(RAW, 0, 1, 0, 512)]);
    let b = mish(5, 1, &[e(RAW, 0, 1, 512, 512)]);
    let m = assemble(&fork, &[("a".into(), a), ("b".into(), b)], 8);
    let o = open_mem(m).unwrap();
    assert_eq!(o.source.size(), 8 * 512);
    let d = all(&o);
    assert!(d[..512].iter().all(|&b| b == 9) && d[2560..3072].iter().all(|&b| b == 9));
    assert!(d[512..2560].iter().all(|&b| b == 0) && d[3072..].iter().all(|&b| b == 0));
    let h = o.source.allocated_hint().unwrap();
    assert_eq!(h.total(), 1024);
}

/// A DMG converts to our qcow2, VHD and VHDX like any image: with `--keep-free` each is
/// `qemu-img check` clean (VHD: qemu has no check) and `qemu-img compare` identical to the
/// etcher GPT image the DMG holds.
#[test]
fn a_dmg_converts_to_every_container_output() {
    let Some(base) = common::corpus_file("etcher-sdk/tests/data") else {
        return;
    };
    if !common::have("qemu-img") {
        common::skip(
            common::Need::Oracle,
            "qemu-img is needed to check the outputs",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let want = all(&open(
        &base.join("images/etcher-gpt-test.img.gz"),
        &OpenOptions::default(),
    )
    .unwrap());
    let raw = d.path().join("want.img");
    std::fs::write(&raw, &want).unwrap();
    for (ext, fmt) in [("qcow2", "qcow2"), ("vhd", "vpc"), ("vhdx", "vhdx")] {
        let out = d.path().join(format!("out.{ext}"));
        let o = common::blockwise()
            .arg("convert")
            .arg(base.join("dmg/gpt-in-dmg.dmg"))
            .arg(&out)
            .arg("--keep-free")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        if fmt != "vpc" {
            common::sh(&format!("qemu-img check -f {fmt} '{}'", out.display()));
        }
        let o = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(&raw)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{ext}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
