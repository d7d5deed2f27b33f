//! CD images: CUE sheets, cdrdao TOC sheets and Nero images resolved into tracks, their data
//! tracks read as the ISO the test built them from, and every track written out byte for byte
//! as `bchunk` (and `bchunk -w`) writes it. Hostile sheets and images fail clearly and fast.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use blockwise::format::cd::extract::{extract, open_disc, AudioFormat, ExtractOptions};
use blockwise::format::cd::{self, cue, toc, TrackMode};
use blockwise::format::{self, OpenOptions};
use blockwise::io::{ReadAt, ReadAtExt};

/// Sync, BCD address and mode of a raw sector at disc LBA `lba`.
fn header(sec: &mut [u8], lba: usize, mode: u8) {
    sec[..12].copy_from_slice(&[
        0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
    ]);
    let a = lba + 150;
    let bcd = |v: usize| ((v / 10) << 4 | (v % 10)) as u8;
    sec[12] = bcd(a / 75 / 60);
    sec[13] = bcd(a / 75 % 60);
    sec[14] = bcd(a % 75);
    sec[15] = mode;
}

/// Raw MODE2 sectors around 2048-byte user data: form 1 (submode 0x08), except the sectors
/// in `form2`, whose subheader says form 2 (submode 0x20) and which carry 2324 bytes.
fn to_raw_mode2(iso: &[u8], form2: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (lba, s) in iso.chunks(2048).enumerate() {
        let mut sec = vec![0u8; 2352];
        header(&mut sec, lba, 2);
        let sub = if form2.contains(&lba) { 0x20 } else { 0x08 };
        sec[16..24].copy_from_slice(&[0, 0, sub, 0, 0, 0, sub, 0]);
        sec[24..24 + s.len()].copy_from_slice(s);
        if form2.contains(&lba) {
            // Form 2 user data runs on past 2048 bytes.
            for (i, b) in sec[24 + 2048..24 + 2324].iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
        }
        out.extend_from_slice(&sec);
    }
    out
}

/// An ISO9660 image of a few files, made by xorriso.
fn make_iso(dir: &Path) -> Option<Vec<u8>> {
    if !common::have("xorriso") {
        return None;
    }
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello cd\n").unwrap();
    std::fs::write(tree.join("sub/data.bin"), common::seeded_bytes(300_000, 7)).unwrap();
    std::fs::write(
        tree.join("README"),
        b"a disc made by the cd tests\n".repeat(50),
    )
    .unwrap();
    let iso = dir.join("built.iso");
    if !common::fixture(&format!(
        "xorriso -as mkisofs -quiet -V CDTEST -o '{}' '{}'",
        iso.display(),
        tree.display()
    )) {
        return None;
    }
    Some(std::fs::read(&iso).unwrap())
}

/// The sectors of one test disc: a data track, a 2-second stored pregap, two audio tracks.
struct Disc {
    iso: Vec<u8>,
    data: Vec<u8>,
    gap: Vec<u8>,
    audio2: Vec<u8>,
    audio3: Vec<u8>,
}

impl Disc {
    fn new(iso: Vec<u8>, raw: Vec<u8>) -> Disc {
        Disc {
            iso,
            data: raw,
            gap: vec![0u8; 150 * 2352],
            audio2: common::seeded_bytes(120 * 2352, 2),
            audio3: common::seeded_bytes(77 * 2352, 3),
        }
    }

    fn sectors(v: &[u8]) -> usize {
        v.len() / 2352
    }

    /// The whole disc as one BIN.
    fn bin(&self) -> Vec<u8> {
        [&self.data[..], &self.gap, &self.audio2, &self.audio3].concat()
    }

    /// A single-file CUE sheet naming `bin` with data mode `mode`.
    fn cue(&self, bin: &str, mode: &str) -> String {
        let d = Self::sectors(&self.data);
        let a2 = d + 150;
        let a3 = a2 + Self::sectors(&self.audio2);
        format!(
            "REM made by the tests\r\nFILE \"{bin}\" BINARY\r\n  TRACK 01 {mode}\r\n    INDEX 01 00:00:00\r\n  TRACK 02 AUDIO\r\n    INDEX 00 {}\r\n    INDEX 01 {}\r\n  TRACK 03 AUDIO\r\n    INDEX 01 {}\r\n",
            cd::msf_string(d as u64),
            cd::msf_string(a2 as u64),
            cd::msf_string(a3 as u64)
        )
    }
}

/// Runs bchunk in `dir` over `bin`+`cue` with `flags`, outputs named `base`NN.ext.
fn bchunk(dir: &Path, flags: &str, bin: &str, cue: &str, base: &str) -> bool {
    common::have("bchunk")
        && common::fixture(&format!(
            "cd '{}' && bchunk {flags} '{bin}' '{cue}' '{base}' >/dev/null",
            dir.display()
        ))
}

fn wav() -> ExtractOptions {
    ExtractOptions {
        audio: AudioFormat::Wav,
        overwrite: false,
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[track_caller]
fn same(a: &Path, b: &Path) {
    let (x, y) = (read(a), read(b));
    assert!(
        x == y,
        "{} ({} bytes) differs from {} ({} bytes)",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

/// Builds the disc in `dir` as `disc.bin` + `disc.cue` (MODE1/2352), returns it.
fn mode1_disc(dir: &Path) -> Option<Disc> {
    let iso = make_iso(dir)?;
    let raw = common::to_raw_mode1(&iso);
    let d = Disc::new(iso, raw);
    std::fs::write(dir.join("disc.bin"), d.bin()).unwrap();
    std::fs::write(dir.join("disc.cue"), d.cue("disc.bin", "MODE1/2352")).unwrap();
    Some(d)
}

#[test]
fn cue_mode1_and_audio_match_bchunk() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(d) = mode1_disc(dir) else { return };
    let disc = open_disc(&dir.join("disc.cue")).unwrap();
    let tr = &disc.tracks;
    assert_eq!(tr.len(), 3);
    assert_eq!(tr[0].mode, TrackMode::Mode1_2352);
    let ds = (d.data.len() / 2352) as u32;
    assert_eq!((tr[0].start, tr[0].length), (0, ds));
    assert_eq!(tr[1].index0, Some(ds));
    assert_eq!((tr[1].start, tr[1].length), (ds + 150, 120));
    assert_eq!((tr[2].start, tr[2].length), (ds + 270, 77));
    assert_eq!(tr[1].start_msf(), cd::msf_string(u64::from(ds) + 300));

    // The data track's user data is the ISO the test built.
    let data = disc.track_data(0).unwrap();
    assert!(data.read_vec(0, d.iso.len()).unwrap() == d.iso);
    let out = dir.join("out").join("disc.iso");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    let w = extract(&disc, &out, &wav()).unwrap();
    let names: Vec<String> = w
        .iter()
        .map(|w| w.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["disc.iso", "disc-02.wav", "disc-03.wav"]);
    assert!(read(&out) == d.iso);
    // Twice without overwrite: refused before anything is written.
    let e = extract(&disc, &out, &wav()).unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");

    // bchunk -w: the ISO and both WAVs byte for byte.
    if !bchunk(dir, "-w", "disc.bin", "disc.cue", "bw") {
        return;
    }
    same(&out, &dir.join("bw01.iso"));
    same(&dir.join("out/disc-02.wav"), &dir.join("bw02.wav"));
    same(&dir.join("out/disc-03.wav"), &dir.join("bw03.wav"));
    assert_eq!(read(&dir.join("bw02.wav"))[44..], d.audio2[..]);
    // bchunk without -w: raw .cdr audio.
    assert!(bchunk(dir, "", "disc.bin", "disc.cue", "br"));
    let raw_out = dir.join("raw").join("disc.iso");
    std::fs::create_dir(raw_out.parent().unwrap()).unwrap();
    let opts = ExtractOptions {
        audio: AudioFormat::Raw,
        overwrite: false,
    };
    extract(&disc, &raw_out, &opts).unwrap();
    same(&dir.join("raw/disc-02.cdr"), &dir.join("br02.cdr"));
    same(&dir.join("raw/disc-03.cdr"), &dir.join("br03.cdr"));

    // isoinfo reads the produced ISO.
    if common::have("isoinfo") {
        let info = common::sh(&format!("isoinfo -d -i '{}'", out.display()));
        assert!(info.contains("Volume id: CDTEST"), "{info}");
    }

    // Opened as an image, the sheet is its data track's ISO.
    let o = format::open(&dir.join("disc.cue"), &OpenOptions::default()).unwrap();
    assert_eq!(o.cd_tracks.len(), 3);
    assert!(o.source.read_vec(0, d.iso.len()).unwrap() == d.iso);
    assert_eq!(o.source.size(), d.iso.len() as u64);

    // inspect lists the tracks, human and JSON.
    let h = common::blockwise()
        .args(["inspect"])
        .arg(dir.join("disc.cue"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(text.contains("cd tracks    3"), "{text}");
    assert!(text.contains("02  AUDIO"), "{text}");
    assert!(text.contains("length 00:01:45 (120 sectors)"), "{text}");
    let j = common::blockwise()
        .args(["inspect", "--json"])
        .arg(dir.join("disc.cue"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let t2 = &v["cd_tracks"][1];
    assert_eq!(t2["mode"], "AUDIO");
    assert_eq!(t2["number"], 2);
    assert_eq!(t2["length"], 120);
    assert_eq!(t2["start_lba"], ds + 150);
    assert_eq!(t2["index0_lba"], ds);
    assert_eq!(t2["length_msf"], "00:01:45");
}

#[test]
fn cue_mode2_form1_and_form2_sectors_match_bchunk() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(iso) = make_iso(dir) else { return };
    let n = iso.len() / 2048;
    // A clean form 1 track, then one whose last two sectors are form 2.
    for (name, form2) in [("m2", vec![]), ("mix", vec![n - 2, n - 1])] {
        let d = Disc::new(iso.clone(), to_raw_mode2(&iso, &form2));
        let bin = format!("{name}.bin");
        let cue = format!("{name}.cue");
        std::fs::write(dir.join(&bin), d.bin()).unwrap();
        std::fs::write(dir.join(&cue), d.cue(&bin, "MODE2/2352")).unwrap();
        let disc = open_disc(&dir.join(&cue)).unwrap();
        assert_eq!(disc.tracks[0].mode, TrackMode::Mode2_2352);
        assert!(!disc.tracks[0].form2);
        let out = dir.join(format!("{name}-out.iso"));
        let w = extract(&disc, &out, &wav()).unwrap();
        assert_eq!(w[0].form2_sectors, form2.len() as u64);
        if form2.is_empty() {
            assert!(read(&out) == iso);
        }
        if bchunk(dir, "-w", &bin, &cue, &format!("{name}-bc")) {
            same(&out, &dir.join(format!("{name}-bc01.iso")));
        }
    }
    // A track whose first sector is form 2 is read as 2324-byte sectors (`.dat`).
    let all: Vec<usize> = (0..n).collect();
    std::fs::write(dir.join("f2.bin"), to_raw_mode2(&iso, &all)).unwrap();
    std::fs::write(
        dir.join("f2.cue"),
        "FILE \"f2.bin\" BINARY\n TRACK 01 MODE2/2352\n  INDEX 01 00:00:00\n",
    )
    .unwrap();
    let disc = open_disc(&dir.join("f2.cue")).unwrap();
    assert!(disc.tracks[0].form2);
    let data = disc.track_data(0).unwrap();
    assert_eq!(data.size(), n as u64 * 2324);
    let s = data.read_vec(2324, 2324).unwrap();
    assert_eq!(s[..2048], iso[2048..4096]);
    assert_eq!(s[2048], 0);
}

#[test]
fn multi_file_sheet_with_pregap_and_case_insensitive_names() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(d) = mode1_disc(dir) else { return };
    // One file per track, the pregap stored at the head of track 2's file; the sheet names
    // them in upper case, the disk has them in lower case.
    std::fs::write(dir.join("t01.bin"), &d.data).unwrap();
    std::fs::write(dir.join("t02.bin"), [&d.gap[..], &d.audio2].concat()).unwrap();
    std::fs::write(dir.join("t03.bin"), &d.audio3).unwrap();
    std::fs::write(
        dir.join("multi.cue"),
        "FILE \"T01.BIN\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\nFILE \"T02.BIN\" BINARY\n  TRACK 02 AUDIO\n    INDEX 00 00:00:00\n    INDEX 01 00:02:00\nFILE \"C:\\rips\\T03.BIN\" BINARY\n  TRACK 03 AUDIO\n    INDEX 01 00:00:00\n",
    )
    .unwrap();
    let single = open_disc(&dir.join("disc.cue")).unwrap();
    let multi = open_disc(&dir.join("multi.cue")).unwrap();
    for (a, b) in single.tracks.iter().zip(&multi.tracks) {
        assert_eq!(
            (a.number, a.mode, a.start, a.length, a.index0),
            (b.number, b.mode, b.start, b.length, b.index0)
        );
    }
    let o1 = dir.join("s/x.iso");
    let o2 = dir.join("m/x.iso");
    std::fs::create_dir(dir.join("s")).unwrap();
    std::fs::create_dir(dir.join("m")).unwrap();
    extract(&single, &o1, &wav()).unwrap();
    extract(&multi, &o2, &wav()).unwrap();
    for f in ["x.iso", "x-02.wav", "x-03.wav"] {
        same(&dir.join("s").join(f), &dir.join("m").join(f));
    }
    // EAC's default layout: track 2's pregap at the end of track 1's file, its INDEX 00
    // there and its INDEX 01 at the start of the next FILE.
    std::fs::write(dir.join("e01.bin"), [&d.data[..], &d.gap].concat()).unwrap();
    std::fs::write(dir.join("e02.bin"), &d.audio2).unwrap();
    std::fs::write(
        dir.join("eac.cue"),
        format!(
            "FILE \"e01.bin\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n  TRACK 02 AUDIO\n    INDEX 00 {}\nFILE \"e02.bin\" BINARY\n    INDEX 01 00:00:00\nFILE \"t03.bin\" BINARY\n  TRACK 03 AUDIO\n    INDEX 01 00:00:00\n",
            cd::msf_string(d.data.len() as u64 / 2352)
        ),
    )
    .unwrap();
    let eac = open_disc(&dir.join("eac.cue")).unwrap();
    for (a, b) in single.tracks.iter().zip(&eac.tracks) {
        assert_eq!(
            (a.number, a.mode, a.start, a.length, a.index0),
            (b.number, b.mode, b.start, b.length, b.index0)
        );
    }
    std::fs::create_dir(dir.join("e")).unwrap();
    extract(&eac, &dir.join("e/x.iso"), &wav()).unwrap();
    for f in ["x.iso", "x-02.wav", "x-03.wav"] {
        same(&dir.join("s").join(f), &dir.join("e").join(f));
    }
    // Opened as an image through the registry too.
    let o = format::open(&dir.join("multi.cue"), &OpenOptions::default()).unwrap();
    assert!(o.source.read_vec(0, d.iso.len()).unwrap() == d.iso);
}

#[test]
fn pregap_postgap_and_sessions_move_later_tracks() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::write(dir.join("a.bin"), vec![0u8; 100 * 2352]).unwrap();
    std::fs::write(
        dir.join("d.bin"),
        common::to_raw_mode1(&vec![1u8; 50 * 2048]),
    )
    .unwrap();
    std::fs::write(
        dir.join("s.cue"),
        "REM SESSION 01\nFILE \"a.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\n TRACK 02 AUDIO\n  PREGAP 00:02:00\n  INDEX 01 00:00:60\n  POSTGAP 00:01:00\nREM SESSION 02\nFILE \"d.bin\" BINARY\n TRACK 03 MODE1/2352\n  INDEX 01 00:00:00\n",
    )
    .unwrap();
    let disc = open_disc(&dir.join("s.cue")).unwrap();
    let t = &disc.tracks;
    assert_eq!((t[0].start, t[0].length, t[0].session), (0, 60, 1));
    assert_eq!((t[1].start, t[1].length, t[1].pregap), (60 + 150, 40, 150));
    // After track 2: its 75-sector POSTGAP, the 11250 sectors of lead-out and lead-in, and
    // the new session's first 150-sector pregap.
    assert_eq!((t[2].session, t[2].start), (2, 250 + 75 + 11_250 + 150));
    assert_eq!(t[2].length, 50);
}

#[test]
fn toc_sheet_matches_the_cue_disc() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(d) = mode1_disc(dir) else { return };
    let ds = d.data.len() as u64 / 2352;
    let a2_off = d.data.len();
    let a3_off = a2_off + d.gap.len() + d.audio2.len();
    let toc_text = format!(
        "CD_ROM\n// made by the tests\nCATALOG \"0000000000000\"\nTRACK MODE1_RAW\nNO COPY\nDATAFILE \"disc.bin\" {} // length\nTRACK AUDIO\nCD_TEXT {{ LANGUAGE 0 {{ TITLE \"two\" }} }}\nFILE \"disc.bin\" #{a2_off} 0 {}\nSTART 00:02:00\nTRACK AUDIO\nAUDIOFILE \"disc.bin\" #{a3_off} 0\n",
        cd::msf_string(ds),
        cd::msf_string(270)
    );
    // Named .cue, as cdrdao's sheets sometimes are: recognised by its keywords.
    std::fs::write(dir.join("sheet.cue"), &toc_text).unwrap();
    assert!(toc::looks_like_toc(toc_text.as_bytes()));
    let tdisc = open_disc(&dir.join("sheet.cue")).unwrap();
    let cdisc = open_disc(&dir.join("disc.cue")).unwrap();
    for (a, b) in cdisc.tracks.iter().zip(&tdisc.tracks) {
        assert_eq!(
            (a.number, a.mode, a.start, a.length, a.index0),
            (b.number, b.mode, b.start, b.length, b.index0)
        );
    }
    std::fs::create_dir(dir.join("c")).unwrap();
    std::fs::create_dir(dir.join("t")).unwrap();
    extract(&cdisc, &dir.join("c/x.iso"), &wav()).unwrap();
    extract(&tdisc, &dir.join("t/x.iso"), &wav()).unwrap();
    for f in ["x.iso", "x-02.wav", "x-03.wav"] {
        same(&dir.join("c").join(f), &dir.join("t").join(f));
    }
    let o = format::open(&dir.join("sheet.cue"), &OpenOptions::default()).unwrap();
    assert_eq!(o.chain[0].format, format::Format::Toc);
    assert!(o.source.read_vec(0, d.iso.len()).unwrap() == d.iso);
}

/// A Nero image of `d`'s sectors: version 2 with DAOX (or version 1 with DAOI) and CUEX.
fn nrg(d: &Disc, v2: bool) -> Vec<u8> {
    let mut img = d.bin();
    let first = img.len() as u64;
    let ds = d.data.len() as u64;
    let a2_0 = ds;
    let a2_1 = ds + d.gap.len() as u64;
    let a3 = a2_1 + d.audio2.len() as u64;
    let tracks = [
        (0x05u8, None, 0u64, ds),
        (0x07, Some(a2_0), a2_1, a3),
        (0x07, None, a3, first),
    ];
    let mut body = vec![0u8; 22];
    body[20] = 1;
    body[21] = 3;
    for (code, i0, i1, end) in tracks {
        let mut e = vec![0u8; 18];
        e[12..14].copy_from_slice(&2352u16.to_be_bytes());
        e[14] = code;
        let i0 = i0.unwrap_or(i1);
        for v in [i0, i1, end] {
            if v2 {
                e.extend(v.to_be_bytes());
            } else {
                e.extend((v as u32).to_be_bytes());
            }
        }
        body.extend(e);
    }
    let mut chunks = Vec::new();
    chunks.extend(if v2 { b"DAOX" } else { b"DAOI" });
    chunks.extend((body.len() as u32).to_be_bytes());
    chunks.extend(body);
    chunks.extend(b"SINF\0\0\0\x04\0\0\0\x03");
    chunks.extend(b"END!\0\0\0\0");
    img.extend(chunks);
    if v2 {
        img.extend(b"NER5");
        img.extend(first.to_be_bytes());
    } else {
        img.extend(b"NERO");
        img.extend((first as u32).to_be_bytes());
    }
    img
}

#[test]
fn nrg_images_match_the_cue_disc() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(d) = mode1_disc(dir) else { return };
    let cdisc = open_disc(&dir.join("disc.cue")).unwrap();
    std::fs::create_dir(dir.join("c")).unwrap();
    extract(&cdisc, &dir.join("c/x.iso"), &wav()).unwrap();
    for v2 in [true, false] {
        let p = dir.join(format!("disc{}.nrg", u8::from(v2)));
        std::fs::write(&p, nrg(&d, v2)).unwrap();
        let ndisc = open_disc(&p).unwrap();
        for (a, b) in cdisc.tracks.iter().zip(&ndisc.tracks) {
            assert_eq!(
                (a.number, a.mode, a.start, a.length, a.index0),
                (b.number, b.mode, b.start, b.length, b.index0)
            );
        }
        let od = dir.join(format!("n{}", u8::from(v2)));
        std::fs::create_dir(&od).unwrap();
        extract(&ndisc, &od.join("x.iso"), &wav()).unwrap();
        for f in ["x.iso", "x-02.wav", "x-03.wav"] {
            same(&dir.join("c").join(f), &od.join(f));
        }
        let o = format::open(&p, &OpenOptions::default()).unwrap();
        assert_eq!(o.chain[0].format, format::Format::Nrg);
        assert!(o.source.read_vec(0, d.iso.len()).unwrap() == d.iso);
    }
}

#[test]
fn invalid_track_mode_names_the_mode_and_line() {
    let e = cue::parse_cue(
        "REM x\nFILE \"a.bin\" BINARY\n  TRACK 01 MODE3_FORM1\n    INDEX 01 00:00:00\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 3") && e.contains("MODE3_FORM1"), "{e}");
    assert!(!e.contains("no data track"), "{e}");
    // Through the registry, as a user meets it.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("bad.cue");
    std::fs::write(t.path().join("a.bin"), vec![0u8; 2352 * 4]).unwrap();
    std::fs::write(
        &p,
        "FILE \"a.bin\" BINARY\n  TRACK 01 MODE1/2353\n    INDEX 01 00:00:00\n",
    )
    .unwrap();
    let e = format::open(&p, &OpenOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("line 2") && e.contains("MODE1/2353"), "{e}");
    let e = toc::parse_toc("CD_ROM\n\nTRACK MODE7\nZERO 1:0:0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("MODE7"), "{e}");
}

#[track_caller]
fn quick_err(what: &str, f: impl FnOnce() -> Result<(), String>) -> String {
    let t0 = Instant::now();
    let e = f().expect_err(what);
    assert!(
        t0.elapsed().as_secs() < 5,
        "{what}: took {:?}",
        t0.elapsed()
    );
    e
}

#[test]
fn hostile_a_million_tracks() {
    let text: String = (0..1_000_000)
        .map(|i| format!("TRACK {:02} AUDIO\n", i % 99 + 1))
        .collect();
    let sheet = format!("FILE \"a.bin\" BINARY\n{text}");
    let e = quick_err("1e6 tracks", || {
        cue::parse_cue(&sheet)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(e.contains("too large") || e.contains("tracks"), "{e}");
    let head: String = sheet.chars().take(1 << 20).collect();
    let e = quick_err("1e6 tracks, first MiB", || {
        cue::parse_cue(&head).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(
        e.contains("after track") || e.contains("more than 99"),
        "{e}"
    );
    let toc_text = "TRACK AUDIO\nSILENCE 0:0:1\n".repeat(20_000);
    let e = quick_err("toc tracks", || {
        toc::parse_toc(&toc_text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(e.contains("more than 99 tracks"), "{e}");
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("many.cue");
    std::fs::write(&p, &sheet).unwrap();
    let _ = format::open(&p, &OpenOptions::default());
    let _ = open_disc(&p);
}

#[test]
fn hostile_index_times_going_backwards() {
    let e = quick_err("backwards", || {
        cue::parse_cue(
            "FILE \"a.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 00 00:10:00\n  INDEX 01 00:05:00\n",
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    assert!(e.contains("line 4") && e.contains("goes back"), "{e}");
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.bin"), vec![0u8; 2352 * 2000]).unwrap();
    let p = t.path().join("b.cue");
    std::fs::write(
        &p,
        "FILE \"a.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:10:00\n TRACK 02 AUDIO\n  INDEX 01 00:05:00\n",
    )
    .unwrap();
    let e = quick_err("next track earlier", || {
        open_disc(&p).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(e.contains("track 2") && e.contains("line 4"), "{e}");
}

#[test]
fn hostile_msf_overflow() {
    for bad in [
        "00:00:75",
        "00:60:00",
        "99999:00:00",
        "xx:yy:0",
        "1:2",
        "-1:00:00",
        "4294967296:0:0",
    ] {
        let s = format!("FILE \"a.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 01 {bad}\n");
        let e = quick_err(bad, || {
            cue::parse_cue(&s).map(|_| ()).map_err(|e| e.to_string())
        });
        assert!(e.contains("line 3") && e.contains("bad time"), "{bad}: {e}");
    }
    // A time that parses but lies past any CD (over 0xFFFFFF sectors).
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.bin"), vec![0u8; 2352]).unwrap();
    let p = t.path().join("far.cue");
    std::fs::write(&p, "FILE \"a.bin\" BINARY\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\n TRACK 02 AUDIO\n  PREGAP 9999:59:74\n  INDEX 01 00:00:01\n").unwrap();
    let e = quick_err("far", || {
        open_disc(&p).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(e.contains("past any CD"), "{e}");
}

#[test]
fn hostile_files_absent_or_looping() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let p = dir.join("absent.cue");
    std::fs::write(
        &p,
        "FILE \"nowhere.bin\" BINARY\n TRACK 01 MODE1/2352\n  INDEX 01 00:00:00\n",
    )
    .unwrap();
    let e = quick_err("absent", || {
        format::open(&p, &OpenOptions::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(e.contains("nowhere.bin"), "{e}");
    // A sheet naming itself, and two sheets naming each other: the named files are read as
    // sectors, never opened as sheets, so nothing recurses.
    let p = dir.join("self.cue");
    std::fs::write(
        &p,
        "FILE \"self.cue\" BINARY\n TRACK 01 MODE1/2048\n  INDEX 01 00:00:00\n",
    )
    .unwrap();
    let _ = format::open(&p, &OpenOptions::default());
    let _ = open_disc(&p).map(|d| extract(&d, &dir.join("self.iso"), &wav()));
    std::fs::write(dir.join("a.toc"), "TRACK MODE1\nDATAFILE \"b.toc\"\n").unwrap();
    std::fs::write(dir.join("b.toc"), "TRACK MODE1\nDATAFILE \"a.toc\"\n").unwrap();
    let t0 = Instant::now();
    let _ = format::open(&dir.join("a.toc"), &OpenOptions::default());
    assert!(t0.elapsed().as_secs() < 5);
}

#[test]
fn hostile_nrg_chunks_lying_or_past_the_end() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let d = Disc::new(
        vec![0u8; 2048 * 20],
        common::to_raw_mode1(&vec![0u8; 2048 * 20]),
    );
    let good = nrg(&d, true);
    let first = d.bin().len();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "footer past the end",
            {
                let mut v = good.clone();
                let n = v.len();
                v[n - 8..].copy_from_slice(&u64::MAX.to_be_bytes());
                v
            },
            "",
        ),
        (
            "chunk size lying",
            {
                let mut v = good.clone();
                v[first + 4..first + 8].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
                v
            },
            "claims",
        ),
        (
            "track past the sectors",
            {
                let mut v = good.clone();
                // Track 1's end (DAOX entry 0, field at 34) far past the data.
                let at = first + 8 + 22 + 34;
                v[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_be_bytes());
                v
            },
            "not in order",
        ),
        (
            "chunk list too long",
            {
                let mut v = vec![0u8; 3 << 20];
                v.extend(b"NER5");
                v.extend(8u64.to_be_bytes());
                v
            },
            "chunk list",
        ),
    ];
    for (what, bytes, want) in cases {
        let p = dir.join("h.nrg");
        std::fs::write(&p, &bytes).unwrap();
        let t0 = Instant::now();
        let r = open_disc(&p);
        let o = format::open(&p, &OpenOptions::default());
        assert!(t0.elapsed().as_secs() < 5, "{what}");
        if !want.is_empty() {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"))
                .to_string();
            assert!(e.contains(want) && e.contains("nrg"), "{what}: {e}");
            assert!(o.is_err(), "{what}");
        }
    }
}

/// Every CD sample of the corpus, found by name: opens or fails cleanly, through the
/// registry and as a disc; where libcdio's expected cd-info output exists, the tracks match.
#[test]
fn corpus_cd_images() {
    let root = common::corpus();
    if !root.is_dir() {
        common::skip(common::Need::Corpus, "no corpus");
        return;
    }
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                ["cue", "toc", "nrg", "bin"].contains(&x.to_ascii_lowercase().as_str())
            }) {
                found.push(p);
            }
        }
    }
    assert!(!found.is_empty(), "no CD samples under {}", root.display());
    for p in &found {
        let t0 = Instant::now();
        let o = format::open(p, &OpenOptions::default());
        let d = open_disc(p);
        if let Ok(d) = &d {
            for i in 0..d.tracks.len() {
                let data = d.track_data(i).unwrap();
                let _ = data.read_upto(0, 4096);
            }
        }
        eprintln!(
            "{}: open {} disc {}",
            p.display(),
            o.map(|o| format!(
                "{:?}",
                o.chain.iter().map(|l| l.format.name()).collect::<Vec<_>>()
            ))
            .unwrap_or_else(|e| format!("error {e}")),
            d.map(|d| format!("{} tracks", d.tracks.len()))
                .unwrap_or_else(|e| format!("error {e}"))
        );
        assert!(t0.elapsed().as_secs() < 10, "{}", p.display());
    }
    // The cdrdao specimen: a TOC named .cue, one MODE1_RAW track of the whole BIN.
    if let Some(p) = common::corpus_file("dfirlabs-cue-specimens/specimens/cdrdao/image.cue") {
        let d = open_disc(&p).unwrap();
        assert_eq!(d.tracks.len(), 1);
        assert_eq!(d.tracks[0].mode, TrackMode::Mode1_2352);
        assert_eq!(d.tracks[0].length, 710_304 / 2352);
    }
    // libcdio's samples, against its cd-info expectations (test/*.right).
    let lib = root.join("libcdio/test/data");
    if !lib.is_dir() {
        eprintln!("libcdio samples absent from the corpus: only opened what is there");
        return;
    }
    // cdda.right: one audio track at 00:02:00 (LSN 0), lead-out at LSN 302; the sheet names
    // CDDA.BIN, the file is cdda.bin.
    let d = open_disc(&lib.join("cdda.cue")).unwrap();
    assert_eq!(d.tracks.len(), 1);
    assert_eq!(
        (
            d.tracks[0].start_msf().as_str(),
            d.tracks[0].start,
            d.tracks[0].length
        ),
        ("00:02:00", 0, 302)
    );
    // cdda_4_5.right: tracks 4 and 5 at LSN 0 and 150, lead-out 302.
    let d = open_disc(&lib.join("cdda_4_5.cue")).unwrap();
    let got: Vec<(u8, u32, String)> = d
        .tracks
        .iter()
        .map(|t| (t.number, t.start, t.start_msf()))
        .collect();
    assert_eq!(
        got,
        [(4, 0, "00:02:00".into()), (5, 150, "00:04:00".into())]
    );
    assert_eq!(d.tracks[1].start + d.tracks[1].length, 302);
    // isofs-m1: the CUE and the TOC both open to the ISO that cd-info lists.
    for s in ["isofs-m1.cue", "isofs-m1.toc"] {
        let o = format::open(&lib.join(s), &OpenOptions::default()).unwrap();
        assert_eq!(
            o.chain.last().unwrap().format,
            format::Format::Iso9660,
            "{s}"
        );
    }
    // The malformed sheets libcdio refuses are refused, naming the line.
    for s in [
        "bad-cat1.cue",
        "bad-cat2.cue",
        "bad-cat3.cue",
        "bad-mode1.cue",
        "bad-msf-1.cue",
        "bad-msf-2.cue",
        "bad-msf-3.cue",
        "bad-cat1.toc",
        "bad-cat2.toc",
        "bad-cat3.toc",
        "bad-mode1.toc",
        "bad-msf-1.toc",
        "bad-msf-2.toc",
        "bad-msf-3.toc",
        "bad-file.toc",
    ] {
        let e = open_disc(&lib.join(s))
            .err()
            .unwrap_or_else(|| panic!("{s} opened"))
            .to_string();
        assert!(e.contains("line") || e.contains("foo.bin"), "{s}: {e}");
    }
    // The Nero images: p1.nrg holds the two audio tracks p1.cue describes.
    let n = open_disc(&lib.join("p1.nrg")).unwrap();
    assert_eq!(n.tracks.len(), 2);
    assert!(n.tracks.iter().all(|t| t.mode == TrackMode::Audio));
    let v = open_disc(&lib.join("videocd.nrg")).unwrap();
    assert!(v.tracks.len() >= 2);
}

#[test]
fn wave_and_motorola_files_read_as_little_endian_pcm() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let pcm = common::seeded_bytes(30 * 2352, 9);
    let wav_in = [&cd::extract::wav_header(pcm.len() as u32)[..], &pcm].concat();
    std::fs::write(dir.join("a.wav"), &wav_in).unwrap();
    let swapped: Vec<u8> = pcm.chunks_exact(2).flat_map(|p| [p[1], p[0]]).collect();
    std::fs::write(dir.join("m.bin"), &swapped).unwrap();
    std::fs::write(
        dir.join("w.cue"),
        "FILE \"a.wav\" WAVE\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\nFILE \"m.bin\" MOTOROLA\n TRACK 02 AUDIO\n  INDEX 01 00:00:00\n",
    )
    .unwrap();
    let disc = open_disc(&dir.join("w.cue")).unwrap();
    assert_eq!((disc.tracks[0].length, disc.tracks[1].length), (30, 30));
    assert_eq!(disc.tracks[1].start, 30);
    let w = extract(&disc, &dir.join("out.iso"), &wav()).unwrap();
    assert_eq!(w.len(), 2);
    assert!(read(&dir.join("out-01.wav")) == wav_in);
    assert!(read(&dir.join("out-02.wav")) == wav_in);
    // An audio CD opens to an empty image, its tracks listed.
    let o = format::open(&dir.join("w.cue"), &OpenOptions::default()).unwrap();
    assert_eq!(o.source.size(), 0);
    assert_eq!(o.cd_tracks.len(), 2);
}

/// `blockwise convert disc.cue disc.iso` (and the same disc as a Nero image): the data track
/// as the ISO the test built and bchunk writes, the audio tracks as bchunk's WAVs, or raw with
/// `--audio raw`; the JSON lists every file; a second run without --force is refused (exit 4)
/// and changes nothing; --audio on a disk image is a usage error (exit 2).
#[test]
fn convert_writes_the_tracks_like_bchunk() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let Some(d) = mode1_disc(dir) else { return };
    std::fs::write(dir.join("disc.nrg"), nrg(&d, true)).unwrap();
    let convert = |args: &[&str]| {
        common::blockwise()
            .arg("convert")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    for (src, out) in [("disc.cue", "c.iso"), ("disc.nrg", "n.iso")] {
        let o = convert(&[src, out, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["format"], "cd-tracks");
        let paths: Vec<&str> = v["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["path"].as_str().unwrap())
            .collect();
        let stem = out.trim_end_matches(".iso");
        assert_eq!(
            paths,
            [
                out.to_string(),
                format!("{stem}-02.wav"),
                format!("{stem}-03.wav")
            ]
        );
        assert!(read(&dir.join(out)) == d.iso, "{src}: the ISO differs");
        assert_eq!(
            read(&dir.join(format!("{stem}-02.wav")))[44..],
            d.audio2[..]
        );
        // Again without --force: refused, nothing replaced.
        let before = read(&dir.join(out));
        let o = convert(&[src, out]);
        assert_eq!(
            o.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(read(&dir.join(out)) == before);
    }
    let o = convert(&["disc.cue", "r.iso", "--audio", "raw"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(read(&dir.join("r-03.cdr")) == d.audio3);
    if bchunk(dir, "-w", "disc.bin", "disc.cue", "bw") {
        same(&dir.join("c.iso"), &dir.join("bw01.iso"));
        same(&dir.join("c-02.wav"), &dir.join("bw02.wav"));
        same(&dir.join("c-03.wav"), &dir.join("bw03.wav"));
        same(&dir.join("n-03.wav"), &dir.join("bw03.wav"));
    } else {
        common::skip(
            common::Need::Oracle,
            "bchunk is needed to compare the tracks",
        );
    }
    // The ISO itself converts as an image (no tracks), and --audio is refused for it.
    let o = convert(&["c.iso", "copy.iso"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = convert(&["c.iso", "copy2.iso", "--audio", "wav"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
