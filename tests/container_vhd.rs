//! VHD and VHDX decoded as random-access disks, checked byte for byte against what
//! `qemu-img convert -O raw` makes of the same file.
//!
//! Fixed, dynamic and VHDX images are made at test time by qemu-img from the bundled sample
//! card. qemu-img cannot make differencing images (neither `vpc` nor `vhdx` takes a backing
//! file, and qemu does not read VHDX differencing disks), and no Debian package makes them, so
//! the differencing fixtures are qemu-img dynamic images turned into differencing ones here,
//! field by field as the published specifications describe (Microsoft's "Virtual Hard Disk
//! Image Format Specification" 1.0 for VHD, [MS-VHDX] 1.0 for VHDX): type, parent name and
//! locators, sector bitmaps. What they must decode to is computed from the specifications
//! (a sector whose bitmap bit is set comes from the child, every other one from the parent)
//! and, when python3-libvhdi is installed, checked against libvhdi's reading as well.
//!
//! A VHDX log to replay is written into a qemu-made file by hand (one entry, per [MS-VHDX]
//! 2.3); `qemu-img check -r all` replays it into a copy, and qemu's reading of that copy is
//! what the unreplayed file must decode to.
//!
//! The hostile-header tests patch one field each of a small qemu-made image and expect a
//! clear error naming the field, or a warning, quickly and without a large allocation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blockwise::format::{open, Format, OpenOptions, Opened};
use blockwise::io::{ReadAt, ReadAtExt};
use common::{blockwise, fixture, have, sh, skip, Need};

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn open_ok(p: &Path) -> Opened {
    open(p, &OpenOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

fn open_err(p: &Path) -> String {
    match open(p, &OpenOptions::default()) {
        Ok(_) => panic!("{} opened, but should have been refused", p.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn formats(o: &Opened) -> Vec<Format> {
    o.chain.iter().map(|l| l.format).collect()
}

/// Reads all of `src` in 1 MiB pieces and compares with `want`, naming the first differing
/// byte.
fn assert_same(what: &str, src: &dyn ReadAt, want: &[u8]) {
    assert_eq!(src.size(), want.len() as u64, "{what}: size");
    let mut off = 0usize;
    while off < want.len() {
        let n = (1usize << 20).min(want.len() - off);
        let got = src.read_vec(off as u64, n).unwrap();
        if got != want[off..off + n] {
            let i = got
                .iter()
                .zip(&want[off..off + n])
                .position(|(a, b)| a != b)
                .unwrap();
            panic!("{what}: first difference at byte {}", off + i);
        }
        off += n;
    }
}

/// What qemu-img makes of `img` (of format `fmt`) as a raw disk.
fn qemu_raw(img: &Path, fmt: &str) -> Vec<u8> {
    let out = img.with_extension("qemu.raw");
    sh(&format!(
        "qemu-img convert -f {fmt} -O raw '{}' '{}'",
        img.display(),
        out.display()
    ));
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

/// The sample card converted by qemu-img with `args` into `name` in `dir`.
fn card_as(dir: &Path, name: &str, args: &str) -> Option<PathBuf> {
    let card = common::unpack_sample(dir);
    let out = dir.join(name);
    fixture(&format!(
        "qemu-img convert -f raw {args} '{}' '{}'",
        card.display(),
        out.display()
    ))
    .then_some(out)
}

/// Decodes `name` made with `args` and compares it with qemu's reading; `qfmt` is qemu's name
/// for the format. Returns the opened image.
fn decodes_like_qemu(name: &str, args: &str, qfmt: &str, fmt: Format) -> Option<Opened> {
    if !have("qemu-img") {
        return None;
    }
    let d = tmpdir();
    let img = card_as(d.path(), name, args)?;
    let want = qemu_raw(&img, qfmt);
    let o = open_ok(&img);
    assert_eq!(o.chain[0].format, fmt, "{name}");
    assert_eq!(
        o.chain.last().unwrap().format,
        Format::Raw,
        "{name}: decoded to raw"
    );
    assert!(o.warnings.is_empty(), "{name}: {:?}", o.warnings);
    assert_same(name, &*o.source, &want);
    // Whatever is not zero lies inside the allocated hint.
    if let Some(hint) = o.source.allocated_hint() {
        for (i, c) in want.chunks(64 << 10).enumerate() {
            let s = (i as u64) << 16;
            if c.iter().any(|&b| b != 0) {
                assert!(
                    hint.covered(s, s + c.len() as u64) > 0,
                    "{name}: data at {s} outside the allocated hint"
                );
            }
        }
    }
    Some(o)
}

#[test]
fn vpc_fixed_matches_qemu() {
    if let Some(o) = decodes_like_qemu("c.vhd", "-O vpc -o subformat=fixed", "vpc", Format::Vhd) {
        assert_eq!(formats(&o), vec![Format::Vhd, Format::Raw]);
    }
}

#[test]
fn vpc_dynamic_matches_qemu() {
    decodes_like_qemu("c.vhd", "-O vpc -o subformat=dynamic", "vpc", Format::Vhd);
}

/// `force_size`: qemu writes the creator "qem2" and the size asked for, not a CHS one.
#[test]
fn vpc_dynamic_force_size_matches_qemu() {
    decodes_like_qemu(
        "c.vhd",
        "-O vpc -o subformat=dynamic,force_size=on",
        "vpc",
        Format::Vhd,
    );
}

#[test]
fn vhdx_dynamic_matches_qemu() {
    decodes_like_qemu("c.vhdx", "-O vhdx", "vhdx", Format::Vhdx);
}

#[test]
fn vhdx_fixed_matches_qemu() {
    decodes_like_qemu("c.vhdx", "-O vhdx -o subformat=fixed", "vhdx", Format::Vhdx);
}

#[test]
fn vhdx_block_size_1m_matches_qemu() {
    decodes_like_qemu("c.vhdx", "-O vhdx -o block_size=1M", "vhdx", Format::Vhdx);
}

// ---- small helpers to patch images ----------------------------------------------------------

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// The VHD checksum (ones' complement of the byte sum, the field itself as zero).
fn vhd_sum(b: &mut [u8], field: usize) {
    put(b, field, &[0; 4]);
    let s = b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
    put(b, field, &(!s).to_be_bytes());
}

/// A dynamic VHD's pieces: the footer offsets (end and start copy) and the dynamic header.
struct VhdParts {
    footer_end: usize,
    dyn_at: usize,
    bat_at: usize,
    entries: usize,
    block: usize,
}

fn vhd_parts(v: &[u8]) -> VhdParts {
    let footer_end = v.len() - 512;
    assert_eq!(&v[footer_end..footer_end + 8], b"conectix");
    let dyn_at = be64(v, footer_end + 16) as usize;
    assert_eq!(&v[dyn_at..dyn_at + 8], b"cxsparse");
    VhdParts {
        footer_end,
        dyn_at,
        bat_at: be64(v, dyn_at + 16) as usize,
        entries: be32(v, dyn_at + 28) as usize,
        block: be32(v, dyn_at + 32) as usize,
    }
}

/// Rewrites both footer copies and the dynamic header checksums after a patch.
fn vhd_resum(v: &mut [u8]) {
    let p = vhd_parts(v);
    let mut f = v[p.footer_end..p.footer_end + 512].to_vec();
    vhd_sum(&mut f, 64);
    put(v, p.footer_end, &f);
    put(v, 0, &f);
    vhd_sum(&mut v[p.dyn_at..p.dyn_at + 1024], 36);
}

/// Sets a field of the footer (both copies) of a dynamic VHD.
fn vhd_footer_set(v: &mut [u8], at: usize, val: &[u8]) {
    let p = vhd_parts(v);
    put(v, p.footer_end + at, val);
    put(v, at, val);
}

/// An 8 MiB dynamic VHD of patterned data, made by qemu-img: (path, bytes, qemu's raw).
fn small_vhd(dir: &Path) -> Option<(PathBuf, Vec<u8>)> {
    if !have("qemu-img") {
        return None;
    }
    let raw = dir.join("small.raw");
    std::fs::write(&raw, common::seeded_bytes(8 << 20, 7)).unwrap();
    let out = dir.join("small.vhd");
    fixture(&format!(
        "qemu-img convert -f raw -O vpc '{}' '{}'",
        raw.display(),
        out.display()
    ))
    .then(|| {
        let v = std::fs::read(&out).unwrap();
        (out, v)
    })
}

fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{what}: took {:?}",
        t.elapsed()
    );
    r
}

// ---- differencing VHD ------------------------------------------------------------------------

/// UTF-16 of `s`, little- or big-endian.
fn utf16(s: &str, big: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| {
            if big {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// Which locators a crafted differencing VHD carries.
#[derive(Clone, Copy)]
enum Loc {
    /// W2ru relative + W2ku absolute + the parent name.
    All,
    /// Only a W2ku absolute path.
    AbsoluteOnly,
    /// Only a MacX file URL.
    MacX,
    /// No locator: the parent name in the header only.
    NameOnly,
}

/// Turns the dynamic VHD `child` into a differencing disk whose parent is `parent_name`
/// (`parent_abs` its absolute path), with locators as `loc` says, and clears the bitmap bits
/// of sectors 8..24 of every allocated block and every bit of the third allocated block, so
/// those sectors come from the parent. Returns the new file's bytes.
fn make_differencing(child: &[u8], parent_name: &str, parent_abs: &Path, loc: Loc) -> Vec<u8> {
    let mut v = child.to_vec();
    let p = vhd_parts(&v);
    // The parent's unique id (its footer's), as the child records it.
    if let Ok(pv) = std::fs::read(parent_abs) {
        let id = pv[pv.len() - 512 + 68..pv.len() - 512 + 84].to_vec();
        put(&mut v, p.dyn_at + 40, &id);
    }
    // Locator data goes where the footer is now, and the footer after it.
    let footer = v[p.footer_end..].to_vec();
    v.truncate(p.footer_end);
    let mut locs: Vec<([u8; 4], Vec<u8>)> = Vec::new();
    let rel = format!(".\\{parent_name}");
    let abs = parent_abs.display().to_string();
    match loc {
        Loc::All => {
            locs.push((*b"W2ru", utf16(&rel, false)));
            locs.push((*b"W2ku", utf16(&abs, false)));
        }
        Loc::AbsoluteOnly => locs.push((*b"W2ku", utf16(&abs, false))),
        Loc::MacX => locs.push((
            *b"MacX",
            format!("file://localhost{}", abs.replace(' ', "%20")).into_bytes(),
        )),
        Loc::NameOnly => {}
    }
    for (k, (code, data)) in locs.iter().enumerate() {
        let at = v.len();
        let space = data.len().div_ceil(512) * 512;
        v.extend_from_slice(data);
        v.resize(at + space, 0);
        let e = p.dyn_at + 576 + k * 24;
        put(&mut v, e, code);
        put(&mut v, e + 4, &(space as u32).to_be_bytes());
        put(&mut v, e + 8, &(data.len() as u32).to_be_bytes());
        put(&mut v, e + 16, &(at as u64).to_be_bytes());
    }
    v.extend_from_slice(&footer);
    // Parent name: UTF-16BE, in the dynamic header (the name only, as Virtual PC wrote it,
    // unless the locators are all there is besides it).
    let name = match loc {
        Loc::NameOnly | Loc::All => parent_name.to_string(),
        _ => String::new(),
    };
    let mut field = utf16(&name, true);
    field.resize(512, 0);
    put(&mut v, p.dyn_at + 64, &field);
    // Type 4, differencing.
    vhd_footer_set(&mut v, 60, &4u32.to_be_bytes());
    // Bitmaps.
    let bitmap_len = (p.block / 512 / 8).div_ceil(512) * 512;
    let _ = bitmap_len;
    let mut n = 0;
    for i in 0..p.entries {
        let e = be32(&v, p.bat_at + i * 4);
        if e == u32::MAX {
            continue;
        }
        let bm = e as usize * 512;
        if n == 2 {
            v[bm..bm + p.block / 512 / 8].fill(0);
        } else {
            // Sectors 8..24 (high bit first): bytes 1 and 2.
            v[bm + 1] = 0;
            v[bm + 2] = 0;
        }
        n += 1;
    }
    vhd_resum(&mut v);
    v
}

/// The disk a crafted differencing VHD describes, from the specification: sectors whose
/// bitmap bit is set come from the child's data, all others from the parent.
fn spec_read_vhd(diff: &[u8], parent: &[u8]) -> Vec<u8> {
    let p = vhd_parts(diff);
    let mut out = parent.to_vec();
    let bitmap_len = (p.block / 512 / 8).div_ceil(512) * 512;
    for (i, chunk) in out.chunks_mut(p.block).enumerate() {
        let e = be32(diff, p.bat_at + i * 4);
        if e == u32::MAX {
            continue;
        }
        let bm = e as usize * 512;
        for (s, sec) in chunk.chunks_mut(512).enumerate() {
            if diff[bm + s / 8] & (0x80 >> (s % 8)) != 0 {
                let at = bm + bitmap_len + s * 512;
                sec.copy_from_slice(&diff[at..at + 512]);
            }
        }
    }
    out
}

/// libvhdi's reading of a differencing `child` over `parent`, if python3-libvhdi is there.
fn libvhdi_read(child: &Path, parent: &Path) -> Option<Vec<u8>> {
    let script = format!(
        "import pyvhdi,sys\n\
         p=pyvhdi.file(); p.open('{}')\n\
         c=pyvhdi.file(); c.open('{}'); c.set_parent(p)\n\
         n=c.get_media_size(); o=sys.stdout.buffer; off=0\n\
         while off<n:\n  k=min(1<<20,n-off); o.write(c.read_buffer_at_offset(k,off)); off+=k\n",
        parent.display(),
        child.display()
    );
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .output()
        .ok()?;
    if !out.status.success() {
        skip(
            Need::Oracle,
            format_args!(
                "python3-libvhdi cannot read {}: {}",
                child.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return None;
    }
    Some(out.stdout)
}

/// A parent (qemu's dynamic VHD of the card) and a child made from the card with some
/// sectors rewritten: (dir, parent path, parent raw, child dynamic bytes).
fn vhd_pair() -> Option<(tempfile::TempDir, PathBuf, Vec<u8>, Vec<u8>)> {
    if !have("qemu-img") || !have("qemu-io") {
        return None;
    }
    let d = tmpdir();
    let parent = card_as(d.path(), "parent.vhd", "-O vpc")?;
    let praw = qemu_raw(&parent, "vpc");
    // The child's disk: the card with writes at a few places.
    let card = d.path().join("card.img");
    let changed = d.path().join("changed.img");
    std::fs::copy(&card, &changed).unwrap();
    sh(&format!(
        "qemu-io -f raw -c 'write -P 0xa5 1M 64k' -c 'write -P 0x5a 5M 3M' \
         -c 'write -P 0x33 70M 1M' '{}'",
        changed.display()
    ));
    let child = d.path().join("child-dyn.vhd");
    sh(&format!(
        "qemu-img convert -f raw -O vpc '{}' '{}'",
        changed.display(),
        child.display()
    ));
    let c = std::fs::read(&child).unwrap();
    std::fs::remove_file(&child).unwrap();
    std::fs::remove_file(&changed).unwrap();
    Some((d, parent, praw, c))
}

fn check_differencing_vhd(loc: Loc) {
    let Some((d, parent, praw, child)) = vhd_pair() else {
        return;
    };
    let diff = make_differencing(&child, "parent.vhd", &parent, loc);
    let path = d.path().join("child.vhd");
    std::fs::write(&path, &diff).unwrap();
    let want = spec_read_vhd(&diff, &praw);
    assert_ne!(want, praw, "the child changes something");
    let o = open_ok(&path);
    assert_eq!(o.chain[0].format, Format::Vhd);
    assert!(
        o.chain[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("differencing"),
        "{:?}",
        o.chain[0].detail
    );
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert_same("differencing vhd", &*o.source, &want);
    if let Some(lib) = libvhdi_read(&path, &parent) {
        assert!(
            lib == want,
            "libvhdi reads the differencing disk differently"
        );
    }
}

#[test]
fn differencing_vhd_through_relative_locator() {
    check_differencing_vhd(Loc::All);
}

#[test]
fn differencing_vhd_through_absolute_locator() {
    check_differencing_vhd(Loc::AbsoluteOnly);
}

#[test]
fn differencing_vhd_through_macx_url() {
    check_differencing_vhd(Loc::MacX);
}

#[test]
fn differencing_vhd_through_parent_name() {
    check_differencing_vhd(Loc::NameOnly);
}

/// A parent named by a relative locator only, whose parent name points elsewhere: the
/// locator wins; the inspect report shows the card's partitions through the chain.
#[test]
fn differencing_vhd_inspects_as_the_card() {
    let Some((d, parent, _praw, child)) = vhd_pair() else {
        return;
    };
    let diff = make_differencing(&child, "parent.vhd", &parent, Loc::All);
    let path = d.path().join("child.vhd");
    std::fs::write(&path, &diff).unwrap();
    let out = blockwise().arg("inspect").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("vfat") && text.contains("ext4"), "{text}");
}

#[test]
fn differencing_vhd_parent_missing_is_named() {
    let Some((d, parent, _praw, child)) = vhd_pair() else {
        return;
    };
    let diff = make_differencing(&child, "parent.vhd", &parent, Loc::All);
    let path = d.path().join("child.vhd");
    std::fs::write(&path, &diff).unwrap();
    std::fs::remove_file(&parent).unwrap();
    let e = quick("missing parent", || open_err(&path));
    assert!(e.contains("parent") && e.contains("parent.vhd"), "{e}");
}

#[test]
fn differencing_vhd_naming_itself_is_a_loop() {
    let Some((d, _parent, _praw, child)) = vhd_pair() else {
        return;
    };
    let path = d.path().join("child.vhd");
    let diff = make_differencing(&child, "child.vhd", &path, Loc::All);
    std::fs::write(&path, &diff).unwrap();
    let e = quick("self parent", || open_err(&path));
    assert!(e.contains("loop"), "{e}");
}

// ---- VHDX: 4096-byte sectors, differencing ---------------------------------------------------

/// Region (offset, length) of the given GUID (mixed-endian bytes) in a VHDX's region table.
fn vhdx_region(v: &[u8], guid: &[u8; 16]) -> (usize, usize) {
    let rt = 192 << 10;
    let n = le32(v, rt + 8) as usize;
    (0..n)
        .map(|k| rt + 16 + k * 32)
        .find(|&e| &v[e..e + 16] == guid)
        .map(|e| (le64(v, e + 16) as usize, le32(v, e + 24) as usize))
        .expect("region")
}

/// A GUID's on-disk (mixed-endian) bytes.
fn guid(s: &str) -> [u8; 16] {
    let hex = s.replace('-', "");
    let h: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let mut b: [u8; 16] = h.try_into().unwrap();
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

const BAT: &str = "2dc27766-f623-4200-9d64-115e9bfd4a08";
const META: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const FILE_PARAMS: &str = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";
const LOGICAL_SECTOR: &str = "8141bf1d-a96f-4709-ba47-f233a8faab5f";
const PARENT_LOCATOR: &str = "a8d35f2d-b30b-454d-abf7-d3d84834ab0c";
const LOCATOR_TYPE: &str = "b04aefb7-d19e-4a81-b789-25b8e9445913";

/// Offset of metadata item `id` in the file, and the table entry's offset.
fn vhdx_item(v: &[u8], id: &str) -> Option<(usize, usize)> {
    let (m, _) = vhdx_region(v, &guid(META));
    let n = le16(v, m + 10) as usize;
    (0..n)
        .map(|k| m + 32 + k * 32)
        .find_map(|e| (v[e..e + 16] == guid(id)).then(|| (m + le32(v, e + 16) as usize, e)))
}

/// qemu can neither make nor read 4096-byte-sector VHDX files ("Operation not supported"), so
/// the logical sector size item of a qemu-made file is set to 4096 (the disk size is a
/// multiple of it, and the chunk ratio changes nothing for a disk this small): the disk must
/// read as qemu reads the file before the change, and as libvhdi reads it after.
#[test]
fn vhdx_4096_byte_sectors_matches_qemu() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let Some(img) = card_as(d.path(), "c.vhdx", "-O vhdx") else {
        return;
    };
    let want = qemu_raw(&img, "vhdx");
    let mut v = std::fs::read(&img).unwrap();
    let (at, _) = vhdx_item(&v, LOGICAL_SECTOR).unwrap();
    assert_eq!(le32(&v, at), 512);
    put(&mut v, at, &4096u32.to_le_bytes());
    std::fs::write(&img, &v).unwrap();
    let o = open_ok(&img);
    assert!(
        o.chain[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("4096-byte sectors"),
        "{:?}",
        o.chain[0].detail
    );
    assert_same("4096-byte-sector vhdx", &*o.source, &want);
    if let Some(lib) = libvhdi_read_alone(&img) {
        assert!(
            lib == want,
            "libvhdi reads the 4096-byte-sector vhdx differently"
        );
    }
}

/// libvhdi's reading of an image without a parent, if python3-libvhdi is there.
fn libvhdi_read_alone(img: &Path) -> Option<Vec<u8>> {
    let script = format!(
        "import pyvhdi,sys\n\
         c=pyvhdi.file(); c.open('{}')\n\
         n=c.get_media_size(); o=sys.stdout.buffer; off=0\n\
         while off<n:\n  k=min(1<<20,n-off); o.write(c.read_buffer_at_offset(k,off)); off+=k\n",
        img.display()
    );
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .output()
        .ok()?;
    if !out.status.success() {
        skip(
            Need::Oracle,
            format_args!(
                "python3-libvhdi cannot read {}: {}",
                img.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return None;
    }
    Some(out.stdout)
}

/// Turns the dynamic VHDX `child` (block size 1 MiB) into a differencing disk whose parent
/// locator names `rel` (and `abs`): blocks 0 and 5 partially present (sectors 16..48 from the
/// parent), NOT_PRESENT blocks from the parent, one FULLY_PRESENT block set to ZERO.
fn make_differencing_vhdx(child: &[u8], rel: &str, abs: &str, linkage: &str) -> (Vec<u8>, usize) {
    let mut v = child.to_vec();
    // File parameters: has parent.
    let (fp, _) = vhdx_item(&v, FILE_PARAMS).unwrap();
    let block = le32(&v, fp) as usize;
    assert_eq!(block, 1 << 20);
    let flags = le32(&v, fp + 4) | 2;
    put(&mut v, fp + 4, &flags.to_le_bytes());
    // Parent locator item after the last item.
    let (m, mlen) = vhdx_region(&v, &guid(META));
    let n = le16(&v, m + 10) as usize;
    let end = (0..n)
        .map(|k| m + 32 + k * 32)
        .map(|e| le32(&v, e + 16) as usize + le32(&v, e + 20) as usize)
        .max()
        .unwrap();
    let item_off = end.div_ceil(8) * 8;
    let kv = [
        ("parent_linkage", linkage),
        ("relative_path", rel),
        ("absolute_win32_path", abs),
    ];
    let mut item = Vec::new();
    item.extend_from_slice(&guid(LOCATOR_TYPE));
    item.extend_from_slice(&0u16.to_le_bytes());
    item.extend_from_slice(&(kv.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + kv.len() * 12;
    for (k, val) in kv {
        let (kb, vb) = (utf16(k, false), utf16(val, false));
        let ko = base + strings.len();
        strings.extend_from_slice(&kb);
        let vo = base + strings.len();
        strings.extend_from_slice(&vb);
        item.extend_from_slice(&(ko as u32).to_le_bytes());
        item.extend_from_slice(&(vo as u32).to_le_bytes());
        item.extend_from_slice(&(kb.len() as u16).to_le_bytes());
        item.extend_from_slice(&(vb.len() as u16).to_le_bytes());
    }
    item.extend_from_slice(&strings);
    assert!(item_off + item.len() <= mlen);
    put(&mut v, m + item_off, &item);
    let e = m + 32 + n * 32;
    put(&mut v, e, &guid(PARENT_LOCATOR));
    put(&mut v, e + 16, &(item_off as u32).to_le_bytes());
    put(&mut v, e + 20, &(item.len() as u32).to_le_bytes());
    put(&mut v, e + 24, &4u32.to_le_bytes()); // required
    put(&mut v, m + 10, &((n + 1) as u16).to_le_bytes());
    // Sector bitmap block for chunk 0 (chunk ratio 4096 with 512-byte sectors and 1 MiB
    // blocks), appended at the end of the file.
    let (bat, _) = vhdx_region(&v, &guid(BAT));
    let cr = 4096usize;
    let sb_at = v.len().div_ceil(1 << 20) * (1 << 20);
    v.resize(sb_at + (1 << 20), 0);
    put(&mut v, bat + cr * 8, &(sb_at as u64 | 6).to_le_bytes());
    let blocks = 128usize;
    let bits = block / 512;
    let mut zeroed = None;
    for b in 0..blocks {
        let e = le64(&v, bat + b * 8);
        let state = e & 7;
        // qemu marks blocks it never wrote ZERO; a differencing disk leaves them NOT_PRESENT.
        if state == 2 {
            put(&mut v, bat + b * 8, &0u64.to_le_bytes());
            continue;
        }
        if state == 6 && (b == 0 || b == 5) {
            put(&mut v, bat + b * 8, &((e & !7) | 7).to_le_bytes());
            let first = sb_at + b * bits / 8;
            v[first..first + bits / 8].fill(0xFF);
            // Sectors 16..48 from the parent (low bit first): bytes 2..6.
            v[first + 2..first + 6].fill(0);
        } else if state == 6 && zeroed.is_none() && b > 5 {
            put(&mut v, bat + b * 8, &2u64.to_le_bytes());
            zeroed = Some(b);
        }
    }
    (v, zeroed.expect("a block to set ZERO"))
}

/// The data write GUID of a VHDX's current header, as a parent locator's parent_linkage
/// writes it ("{xxxxxxxx-...}").
fn vhdx_data_write_guid(v: &[u8]) -> String {
    let h = [64usize << 10, 128 << 10]
        .into_iter()
        .max_by_key(|&h| le64(v, h + 8))
        .unwrap();
    let mut g: [u8; 16] = v[h + 32..h + 48].try_into().unwrap();
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    let x: String = g.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The disk a crafted differencing VHDX describes, per [MS-VHDX].
fn spec_read_vhdx(diff: &[u8], parent: &[u8]) -> Vec<u8> {
    let (bat, _) = vhdx_region(diff, &guid(BAT));
    let block = 1usize << 20;
    let cr = 4096usize;
    let sb = (le64(diff, bat + cr * 8) & !0xFFFFF) as usize;
    let mut out = parent.to_vec();
    for (b, chunk) in out.chunks_mut(block).enumerate() {
        let e = le64(diff, bat + b * 8);
        let at = (e & !0xFFFFF) as usize;
        match e & 7 {
            0 => {}
            2 => chunk.fill(0),
            6 => chunk.copy_from_slice(&diff[at..at + chunk.len()]),
            7 => {
                for (s, sec) in chunk.chunks_mut(512).enumerate() {
                    let bit = b * (block / 512) + s;
                    if diff[sb + bit / 8] & (1 << (bit % 8)) != 0 {
                        sec.copy_from_slice(&diff[at + s * 512..at + s * 512 + 512]);
                    }
                }
            }
            s => panic!("state {s}"),
        }
    }
    out
}

#[test]
fn differencing_vhdx_matches_the_spec() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let d = tmpdir();
    let Some(parent) = card_as(d.path(), "parent.vhdx", "-O vhdx -o block_size=1M") else {
        return;
    };
    let praw = qemu_raw(&parent, "vhdx");
    let card = d.path().join("card.img");
    sh(&format!(
        "qemu-io -f raw -c 'write -P 0xa5 1M 64k' -c 'write -P 0x5a 5M 3M' \
         -c 'write -P 0x33 70M 1M' '{}'",
        card.display()
    ));
    let child = d.path().join("child-dyn.vhdx");
    sh(&format!(
        "qemu-img convert -f raw -O vhdx -o block_size=1M '{}' '{}'",
        card.display(),
        child.display()
    ));
    let c = std::fs::read(&child).unwrap();
    let link = vhdx_data_write_guid(&std::fs::read(&parent).unwrap());
    let (diff, zeroed) =
        make_differencing_vhdx(&c, r".\parent.vhdx", r"C:\nowhere\parent.vhdx", &link);
    let path = d.path().join("child.vhdx");
    std::fs::write(&path, &diff).unwrap();
    let want = spec_read_vhdx(&diff, &praw);
    let o = open_ok(&path);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert!(
        o.chain[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("differencing"),
        "{:?}",
        o.chain[0].detail
    );
    assert_same("differencing vhdx", &*o.source, &want);
    if let Some(mut lib) = libvhdi_read(&path, &parent) {
        // libvhdi 20210425 reads a ZERO block of a differencing disk from the parent, where
        // [MS-VHDX] 2.5.1.1 says it reads as zeros; everywhere else the two must agree.
        let z = zeroed << 20..(zeroed + 1) << 20;
        assert!(lib[z.clone()] == praw[z.clone()] || lib[z.clone()].iter().all(|&b| b == 0));
        lib[z].fill(0);
        let first = lib.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            lib == want,
            "libvhdi reads the differencing vhdx differently: {} vs {} bytes, first at {first:?}",
            lib.len(),
            want.len()
        );
    }
    // Only the absolute path's base name can be found once the relative one is wrong.
    let (diff, _) =
        make_differencing_vhdx(&c, r".\elsewhere\gone.vhdx", r"C:\vms\parent.vhdx", &link);
    std::fs::write(&path, &diff).unwrap();
    assert_same("vhdx parent by base name", &*open_ok(&path).source, &want);
    // And nothing found: the error names what was looked for.
    let (diff, _) = make_differencing_vhdx(&c, r".\gone.vhdx", r"C:\vms\gone2.vhdx", &link);
    std::fs::write(&path, &diff).unwrap();
    let e = open_err(&path);
    assert!(e.contains("gone.vhdx") && e.contains("gone2.vhdx"), "{e}");
}

// ---- the shared corpus -----------------------------------------------------------------------

/// Every VHD and VHDX of the corpus decodes as qemu-img reads it (and the generated ones as
/// the ext4 image they were made from).
#[test]
fn corpus_vhd_and_vhdx_match_qemu() {
    let Some(root) = common::corpus_file("generated-locally") else {
        return;
    };
    let root = root.parent().unwrap().to_path_buf();
    if !have("qemu-img") || !have("xz") {
        return;
    }
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let n = p.file_name().unwrap().to_string_lossy().to_lowercase();
            if n.ends_with(".vhd") || n.ends_with(".vhdx") || n.ends_with(".vhdx.xz") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty());
    let d = tmpdir();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let plain = if name.ends_with(".xz") {
            let out = d.path().join(name.trim_end_matches(".xz"));
            sh(&format!("xz -dc '{}' > '{}'", f.display(), out.display()));
            out
        } else {
            f.clone()
        };
        let qfmt = if name.contains(".vhdx") {
            "vhdx"
        } else {
            "vpc"
        };
        let o = open_ok(&f);
        if o.chain[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("differencing")
        {
            // qemu reads no differencing VHD or VHDX (it ignores or refuses the parent): the
            // disk must at least read whole through its parent.
            let mut off = 0;
            while off < o.source.size() {
                let n = (1u64 << 20).min(o.source.size() - off) as usize;
                o.source.read_vec(off, n).unwrap();
                off += n as u64;
            }
            eprintln!("{name}: differencing, read whole through its parent");
            continue;
        }
        let want = qemu_raw_at(&plain, qfmt, d.path());
        assert_same(&name, &*o.source, &want);
        eprintln!("{name}: {} bytes identical to qemu-img", want.len());
        if name.starts_with("ext4-") {
            let base = std::fs::read(f.with_file_name("base-ext4.img")).unwrap();
            assert!(want == base, "{name}: qemu and the base image differ");
        }
    }
}

fn qemu_raw_at(img: &Path, fmt: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("corpus.qemu.raw");
    sh(&format!(
        "qemu-img convert -f {fmt} -O raw '{}' '{}'",
        img.display(),
        out.display()
    ));
    std::fs::read(&out).unwrap()
}

// ---- the commands on a dynamic VHD -----------------------------------------------------------

/// `inspect` sees the card's partitions inside a dynamic VHD, and `backup` of the VHD writes
/// the same archive and bmap as `backup` of qemu's raw reading of it.
#[test]
fn dynamic_vhd_inspect_and_backup() {
    if !have("qemu-img") || !have("zstd") {
        return;
    }
    let d = tmpdir();
    let Some(vhd) = card_as(d.path(), "card.vhd", "-O vpc") else {
        return;
    };
    let out = blockwise().arg("inspect").arg(&vhd).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("vhd"), "{text}");
    assert!(text.contains("MBR, disk id"), "{text}");
    assert!(
        text.contains("vfat FAT32") && text.contains("ext4"),
        "{text}"
    );
    let raw = d.path().join("card.raw");
    std::fs::write(&raw, qemu_raw(&vhd, "vpc")).unwrap();
    for (src, dst) in [(&vhd, "a.img.zst"), (&raw, "b.img.zst")] {
        let o = blockwise()
            .arg("backup")
            .arg(src)
            .arg(d.path().join(dst))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let unz = |n: &str| {
        sh(&format!(
            "zstd -dc '{}' | sha256sum",
            d.path().join(n).display()
        ))
    };
    assert_eq!(unz("a.img.zst"), unz("b.img.zst"));
    let bmap = |n: &str| {
        let t = std::fs::read_to_string(d.path().join(n)).unwrap();
        // The bmap names no file; compare it whole but for comment lines.
        t.lines()
            .filter(|l| !l.trim_start().starts_with("<!--"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(bmap("a.img.zst.bmap"), bmap("b.img.zst.bmap"));
    // `bmap` of the VHD describes its disk, and says so (bmaptool would write the VHD file
    // as it is); the conversion writes the same image and bmap as from qemu's raw reading.
    let o = blockwise().arg("bmap").arg(&vhd).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("describes the disk inside"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("<bmap version"));
    for (src, dst) in [(&vhd, "a.img"), (&raw, "b.img")] {
        let o = blockwise()
            .args(["backup", "--format", "img"])
            .arg(src)
            .arg(d.path().join(dst))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |n: &str| std::fs::read(d.path().join(n)).unwrap();
    assert!(read("a.img") == read("b.img"));
    assert_eq!(bmap("a.img.bmap"), bmap("b.img.bmap"));
}

// ---- hostile headers -------------------------------------------------------------------------

fn write(dir: &Path, name: &str, v: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v).unwrap();
    p
}

/// A BAT of 2^32-1 entries for a 2^50-byte disk (2^29 entries needed, 2 GiB of table):
/// refused before anything that large is read.
#[test]
fn hostile_vhd_bat_count_of_gigabytes() {
    let d = tmpdir();
    let Some((_, mut v)) = small_vhd(d.path()) else {
        return;
    };
    let p = vhd_parts(&v);
    vhd_footer_set(&mut v, 28, b"win ");
    vhd_footer_set(&mut v, 48, &(1u64 << 50).to_be_bytes());
    put(&mut v, p.dyn_at + 28, &u32::MAX.to_be_bytes());
    vhd_resum(&mut v);
    let f = write(d.path(), "h.vhd", &v);
    let e = quick("huge BAT", || open_err(&f));
    assert!(
        e.contains("vhd BAT") && e.contains("MiB a table may take"),
        "{e}"
    );
}

#[test]
fn hostile_vhd_bat_entry_past_eof() {
    let d = tmpdir();
    let Some((_, mut v)) = small_vhd(d.path()) else {
        return;
    };
    let p = vhd_parts(&v);
    put(&mut v, p.bat_at + 4, &0x4000_0000u32.to_be_bytes());
    let f = write(d.path(), "h.vhd", &v);
    let e = quick("BAT past EOF", || open_err(&f));
    assert!(e.contains("vhd BAT") && e.contains("entry 1"), "{e}");
}

/// Two BAT entries naming the same block: both read its data, nothing grows.
#[test]
fn hostile_vhd_two_entries_share_a_block() {
    let d = tmpdir();
    let Some((_, mut v)) = small_vhd(d.path()) else {
        return;
    };
    let p = vhd_parts(&v);
    let first = v[p.bat_at..p.bat_at + 4].to_vec();
    put(&mut v, p.bat_at + 4, &first);
    let f = write(d.path(), "h.vhd", &v);
    let want = qemu_raw(&f, "vpc");
    let o = quick("shared block", || open_ok(&f));
    assert_same("shared block", &*o.source, &want);
    let b = p.block as u64;
    assert_eq!(
        o.source.read_vec(0, 4096).unwrap(),
        o.source.read_vec(b, 4096).unwrap()
    );
}

fn hostile_block_size(size: u32) {
    let d = tmpdir();
    let Some((_, mut v)) = small_vhd(d.path()) else {
        return;
    };
    let p = vhd_parts(&v);
    put(&mut v, p.dyn_at + 32, &size.to_be_bytes());
    vhd_resum(&mut v);
    let f = write(d.path(), "h.vhd", &v);
    let e = quick("block size", || open_err(&f));
    assert!(
        e.contains("vhd dynamic header") && e.contains(&format!("block size {size}")),
        "{e}"
    );
}

#[test]
fn hostile_vhd_block_size_zero() {
    hostile_block_size(0);
}

#[test]
fn hostile_vhd_block_size_not_a_power_of_two() {
    hostile_block_size(3 << 20);
}

/// 2 GiB, the largest power of two the 32-bit field holds (4 GiB does not fit in it).
#[test]
fn hostile_vhd_block_size_huge() {
    hostile_block_size(1 << 31);
}

#[test]
fn hostile_vhd_footer_bad_checksum_is_a_warning() {
    let d = tmpdir();
    let Some((orig, mut v)) = small_vhd(d.path()) else {
        return;
    };
    // qemu refuses a footer whose checksum is wrong: its reading of the intact file is the
    // reference.
    let want = qemu_raw(&orig, "vpc");
    let p = vhd_parts(&v);
    // Both copies: a damaged end footer alone would be skipped for the good copy at 0.
    for at in [0, p.footer_end] {
        v[at + 64] ^= 0xFF;
    }
    let f = write(d.path(), "h.vhd", &v);
    let o = open_ok(&f);
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("vhd footer") && w.contains("checksum")),
        "{:?}",
        o.warnings
    );
    assert_same("bad footer checksum", &*o.source, &want);
}

#[test]
fn hostile_vhd_dynamic_header_bad_checksum_is_a_warning() {
    let d = tmpdir();
    let Some((_, mut v)) = small_vhd(d.path()) else {
        return;
    };
    let p = vhd_parts(&v);
    v[p.dyn_at + 36] ^= 0xFF;
    let f = write(d.path(), "h.vhd", &v);
    let o = open_ok(&f);
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("vhd dynamic header") && w.contains("checksum")),
        "{:?}",
        o.warnings
    );
}

/// A fixed VHD whose footer claims 4 EiB: a warning, and the disk is the data there is.
#[test]
fn hostile_vhd_fixed_claiming_4_eib() {
    let d = tmpdir();
    let mut v = common::seeded_bytes(1 << 20, 3);
    let mut f = vec![0u8; 512];
    put(&mut f, 0, b"conectix");
    put(&mut f, 16, &u64::MAX.to_be_bytes());
    put(&mut f, 28, b"win ");
    put(&mut f, 48, &(4u64 << 60).to_be_bytes());
    put(&mut f, 60, &2u32.to_be_bytes());
    vhd_sum(&mut f, 64);
    let data = v.clone();
    v.extend_from_slice(&f);
    let p = write(d.path(), "h.vhd", &v);
    let o = quick("4 EiB", || open_ok(&p));
    assert!(
        o.warnings.iter().any(|w| w.contains("clipped")),
        "{:?}",
        o.warnings
    );
    assert_same("clipped fixed vhd", &*o.source, &data);
}

/// A VHDX region table whose metadata region overlaps the BAT.
#[test]
fn hostile_vhdx_overlapping_regions() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let raw = write(d.path(), "s.raw", &common::seeded_bytes(8 << 20, 5));
    let img = d.path().join("s.vhdx");
    sh(&format!(
        "qemu-img convert -f raw -O vhdx '{}' '{}'",
        raw.display(),
        img.display()
    ));
    let mut v = std::fs::read(&img).unwrap();
    let (bat, _) = vhdx_region(&v, &guid(BAT));
    for rt in [192usize << 10, 256 << 10] {
        let n = le32(&v, rt + 8) as usize;
        for k in 0..n {
            let e = rt + 16 + k * 32;
            if v[e..e + 16] == guid(META) {
                put(&mut v, e + 16, &(bat as u64).to_le_bytes());
            }
        }
        put(&mut v, rt + 4, &[0; 4]);
        let c = crc32c::crc32c(&v[rt..rt + (64 << 10)]);
        put(&mut v, rt + 4, &c.to_le_bytes());
    }
    let f = write(d.path(), "h.vhdx", &v);
    let e = quick("overlap", || open_err(&f));
    assert!(
        e.contains("vhdx region table") && e.contains("overlaps"),
        "{e}"
    );
}

/// Sets the log GUID of both VHDX headers (checksums redone) and fills the log with `log`.
fn vhdx_with_log(v: &mut [u8], log: impl Fn(&mut [u8], &[u8; 16])) {
    let g = guid("11111111-2222-3333-4444-555555555555");
    let mut log_at = 0;
    for h in [64usize << 10, 128 << 10] {
        put(v, h + 48, &g);
        log_at = le64(v, h + 72) as usize;
        put(v, h + 4, &[0; 4]);
        let c = crc32c::crc32c(&v[h..h + 4096]);
        put(v, h + 4, &c.to_le_bytes());
    }
    let len = le32(v, (64 << 10) + 68) as usize;
    log(&mut v[log_at..log_at + len], &g);
}

fn small_vhdx(d: &Path) -> Option<Vec<u8>> {
    if !have("qemu-img") {
        return None;
    }
    let raw = write(d, "s.raw", &common::seeded_bytes(8 << 20, 9));
    let img = d.join("s.vhdx");
    sh(&format!(
        "qemu-img convert -f raw -O vhdx '{}' '{}'",
        raw.display(),
        img.display()
    ));
    Some(std::fs::read(&img).unwrap())
}

/// A log GUID set over a log of garbage: nothing valid to replay, so the image is read as it
/// is (as qemu does), with a warning.
#[test]
fn hostile_vhdx_log_needing_replay_but_corrupt() {
    let d = tmpdir();
    let Some(mut v) = small_vhdx(d.path()) else {
        return;
    };
    vhdx_with_log(&mut v, |log, g| {
        log.fill(0x5A);
        // A "loge" entry for this log whose checksum is wrong.
        put(log, 0, b"loge");
        put(log, 8, &4096u32.to_le_bytes());
        put(log, 32, g);
    });
    let f = write(d.path(), "h.vhdx", &v);
    let want = qemu_raw(&f, "vhdx");
    let o = quick("corrupt log", || open_ok(&f));
    assert!(
        o.warnings.iter().any(|w| w.contains("vhdx log")),
        "{:?}",
        o.warnings
    );
    assert_same("vhdx with a corrupt log", &*o.source, &want);
}

#[allow(clippy::too_many_arguments)]
/// One log entry (sequence `seq`, tail at byte `tail` of the log) that writes `data` (4 KiB)
/// at `data_at` and zeroes `zero_len` bytes at `zero_at`, as [MS-VHDX] 2.3 lays it out.
fn log_entry(
    seq: u64,
    tail: u32,
    g: &[u8; 16],
    file_len: u64,
    data_at: u64,
    data: &[u8],
    zero_at: u64,
    zero_len: u64,
) -> Vec<u8> {
    let mut e = vec![0u8; 8192];
    put(&mut e, 0, b"loge");
    put(&mut e, 8, &8192u32.to_le_bytes());
    put(&mut e, 12, &tail.to_le_bytes());
    put(&mut e, 16, &seq.to_le_bytes());
    put(&mut e, 24, &2u32.to_le_bytes());
    put(&mut e, 32, g);
    put(&mut e, 48, &file_len.to_le_bytes());
    put(&mut e, 56, &file_len.to_le_bytes());
    // Data descriptor: trailing 4 bytes, leading 8 bytes, offset, sequence.
    put(&mut e, 64, b"desc");
    put(&mut e, 68, &data[4092..4096]);
    put(&mut e, 72, &data[..8]);
    put(&mut e, 80, &data_at.to_le_bytes());
    put(&mut e, 88, &seq.to_le_bytes());
    // Zero descriptor.
    put(&mut e, 96, b"zero");
    put(&mut e, 104, &zero_len.to_le_bytes());
    put(&mut e, 112, &zero_at.to_le_bytes());
    put(&mut e, 120, &seq.to_le_bytes());
    // The data sector.
    put(&mut e, 4096, b"data");
    put(&mut e, 4100, &((seq >> 32) as u32).to_le_bytes());
    put(&mut e, 4104, &data[8..4092]);
    put(&mut e, 8188, &(seq as u32).to_le_bytes());
    let c = crc32c::crc32c(&e);
    put(&mut e, 4, &c.to_le_bytes());
    e
}

/// A log holding writes never applied (one entry: 4 KiB of new data and 8 KiB of zeros in
/// the first payload block) is replayed in memory: the disk reads as qemu reads the file after
/// `qemu-img check -r all` replayed the log into a copy, and the file is not changed.
#[test]
fn vhdx_log_is_replayed_like_qemu() {
    let d = tmpdir();
    let Some(mut v) = small_vhdx(d.path()) else {
        return;
    };
    let (bat, _) = vhdx_region(&v, &guid(BAT));
    let b0 = le64(&v, bat) & !0xFFFFF;
    let file_len = v.len() as u64;
    let data = common::seeded_bytes(4096, 99);
    vhdx_with_log(&mut v, |log, g| {
        log.fill(0);
        let e = log_entry(5, 0, g, file_len, b0 + 8192, &data, b0 + 65536, 8192);
        put(log, 0, &e);
    });
    let f = write(d.path(), "log.vhdx", &v);
    let copy = write(d.path(), "copy.vhdx", &v);
    if !fixture(&format!(
        "qemu-img check -q -r all -f vhdx '{}'",
        copy.display()
    )) {
        return;
    }
    let want = qemu_raw(&copy, "vhdx");
    assert_eq!(
        &want[8192..12288],
        &data[..],
        "qemu replayed the data write"
    );
    assert!(want[65536..73728].iter().all(|&b| b == 0));
    let o = open_ok(&f);
    assert!(
        o.warnings.iter().any(|w| w.contains("replayed in memory")),
        "{:?}",
        o.warnings
    );
    assert_same("replayed vhdx", &*o.source, &want);
    assert!(std::fs::read(&f).unwrap() == v, "the file is not written");
}

/// A log whose newest entry names a tail no valid sequence reaches: refused, saying why.
#[test]
fn hostile_vhdx_log_sequence_broken() {
    let d = tmpdir();
    let Some(mut v) = small_vhdx(d.path()) else {
        return;
    };
    let data = vec![1u8; 4096];
    let file_len = v.len() as u64;
    vhdx_with_log(&mut v, |log, g| {
        log.fill(0);
        // Entry 7 at 8192 says the sequence starts at 0, where entry 5 (not 6) lies.
        put(
            log,
            0,
            &log_entry(5, 0, g, file_len, 1 << 20, &data, 1 << 20, 4096),
        );
        put(
            log,
            8192,
            &log_entry(7, 0, g, file_len, 1 << 20, &data, 1 << 20, 4096),
        );
    });
    let f = write(d.path(), "h.vhdx", &v);
    let e = quick("broken log", || open_err(&f));
    assert!(e.contains("vhdx log") && e.contains("tail"), "{e}");
}

#[test]
fn hostile_vhdx_block_size_not_a_power_of_two() {
    let d = tmpdir();
    let Some(mut v) = small_vhdx(d.path()) else {
        return;
    };
    let (fp, _) = vhdx_item(&v, FILE_PARAMS).unwrap();
    put(&mut v, fp, &(3u32 << 20).to_le_bytes());
    let f = write(d.path(), "h.vhdx", &v);
    let e = quick("vhdx block size", || open_err(&f));
    assert!(e.contains("block size 3145728"), "{e}");
}

/// A hostile VHDX BAT entry pointing past the end of the file.
#[test]
fn hostile_vhdx_bat_entry_past_eof() {
    let d = tmpdir();
    let Some(mut v) = small_vhdx(d.path()) else {
        return;
    };
    let (bat, _) = vhdx_region(&v, &guid(BAT));
    put(&mut v, bat, &((1u64 << 40) | 6).to_le_bytes());
    let f = write(d.path(), "h.vhdx", &v);
    let e = quick("vhdx BAT past EOF", || open_err(&f));
    assert!(e.contains("vhdx BAT") && e.contains("entry 0"), "{e}");
}

/// A differencing VHDX whose locator names the file itself: the loop is refused.
#[test]
fn differencing_vhdx_naming_itself_is_a_loop() {
    if !have("qemu-img") {
        return;
    }
    let d = tmpdir();
    let Some(img) = card_as(d.path(), "self.vhdx", "-O vhdx -o block_size=1M") else {
        return;
    };
    let v = std::fs::read(&img).unwrap();
    let (diff, _) = make_differencing_vhdx(&v, r".\self.vhdx", r"C:\self.vhdx", "{}");
    std::fs::write(&img, &diff).unwrap();
    let e = quick("vhdx self parent", || open_err(&img));
    assert!(e.contains("loop"), "{e}");
}

/// A parent whose unique id is not the one the child recorded: read, with a warning.
#[test]
fn differencing_vhd_parent_id_mismatch_is_a_warning() {
    let Some((d, parent, praw, child)) = vhd_pair() else {
        return;
    };
    let mut diff = make_differencing(&child, "parent.vhd", &parent, Loc::All);
    let p = vhd_parts(&diff);
    diff[p.dyn_at + 40] ^= 0xFF;
    vhd_resum(&mut diff);
    let path = write(d.path(), "child.vhd", &diff);
    let want = spec_read_vhd(&diff, &praw);
    let o = open_ok(&path);
    assert!(
        o.warnings.iter().any(|w| w.contains("unique id")),
        "{:?}",
        o.warnings
    );
    assert_same("parent id mismatch", &*o.source, &want);
}
