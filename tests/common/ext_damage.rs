//! Damage to an ext image's bitmaps and group flags, and the property the map must keep
//! through any of it: every block the inodes reference is mapped (spec/safety.md). Shared by
//! the property test (`tests/ext_xcheck_props.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/ext_xcheck.rs`), over the fixture made by
//! `tests/data/make-ext-xcheck.sh` (its reference list was read with debugfs).
//!
//! Checksums are recomputed after the damage, so the damaged descriptors and bitmaps are
//! trusted exactly as a valid filesystem's would be: only the inode walk can save the map.

#![allow(dead_code)]

use blockwise::checksum::crc32c_raw;
use blockwise::io::MemSource;

/// The fixture image, xz-compressed.
pub const IMAGE_XZ: &[u8] = include_bytes!("../data/ext-xcheck.img.xz");
/// Block ranges ("first-last") its inodes reference.
pub const REFS: &str = include_str!("../data/ext-xcheck.refs");

/// The decompressed fixture (decoded once per process).
pub fn image() -> Vec<u8> {
    static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMG.get_or_init(|| {
        let mut out = Vec::new();
        let mut d = liblzma::read::XzDecoder::new(IMAGE_XZ);
        std::io::Read::read_to_end(&mut d, &mut out).expect("fixture decodes");
        out
    })
    .clone()
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

/// The fixture's geometry (1 KiB blocks, 64-byte descriptors, flex_bg, metadata_csum).
struct Geo {
    bs: usize,
    groups: usize,
    gdt: usize,
    desc: usize,
    cpg_bytes: usize,
    ipg_bytes: usize,
    seed: u32,
}

fn geo(img: &[u8]) -> Geo {
    let sb = &img[1024..2048];
    let bs = 1024usize << le32(sb, 0x18);
    let blocks = le32(sb, 0x04) as usize;
    let first = le32(sb, 0x14) as usize;
    let bpg = le32(sb, 0x20) as usize;
    Geo {
        bs,
        groups: (blocks - first).div_ceil(bpg),
        gdt: (first + 1) * bs,
        desc: le16(sb, 0xFE) as usize,
        cpg_bytes: le32(sb, 0x24) as usize / 8,
        ipg_bytes: le32(sb, 0x28) as usize / 8,
        seed: crc32c_raw(!0, &sb[0x68..0x78]),
    }
}

fn desc_at(g: &Geo, group: usize) -> usize {
    g.gdt + group * g.desc
}

fn block_of(img: &[u8], d: usize, lo: usize, hi: usize) -> usize {
    (le32(img, d + lo) as u64 | (le32(img, d + hi) as u64) << 32) as usize
}

/// Applies `ops` (4 bytes each: group, what, a, b) to the bitmaps and flags, then makes every
/// checksum valid again.
pub fn damage(img: &mut [u8], ops: &[u8]) {
    let g = geo(img);
    for op in ops.chunks_exact(4) {
        let group = op[0] as usize % g.groups;
        let d = desc_at(&g, group);
        let bb = block_of(img, d, 0x00, 0x20) * g.bs;
        let ib = block_of(img, d, 0x04, 0x24) * g.bs;
        let (a, b) = (op[2] as usize, op[3] as usize);
        match op[1] % 6 {
            // Clear a run of block bitmap bytes (blocks in use called free).
            0 => {
                let s = a * g.cpg_bytes / 256;
                let e = (s + b / 8 + 1).min(g.cpg_bytes);
                img[bb + s..bb + e].fill(0);
            }
            // Clear single bits.
            1 => {
                let bit = (a << 8 | b) % (g.cpg_bytes * 8);
                img[bb + bit / 8] &= !(1 << (bit % 8));
            }
            // The whole block bitmap says free.
            2 => img[bb..bb + g.cpg_bytes].fill(0),
            // Inode bitmap bits cleared.
            3 => {
                let s = a * g.ipg_bytes / 256;
                let e = (s + b / 16 + 1).min(g.ipg_bytes);
                img[ib + s..ib + e].fill(0);
            }
            // Group flags toggled (INODE_UNINIT, BLOCK_UNINIT, ITABLE_ZEROED).
            4 => {
                let f = le16(img, d + 0x12) ^ (a as u16 & 7);
                put16(img, d + 0x12, f);
            }
            // Group flags set outright.
            _ => put16(img, d + 0x12, a as u16 & 7),
        }
    }
    for group in 0..g.groups {
        let d = desc_at(&g, group);
        let bb = block_of(img, d, 0x00, 0x20) * g.bs;
        let ib = block_of(img, d, 0x04, 0x24) * g.bs;
        // As e2fsprogs does, a bitmap the group's flags say is not initialised keeps a zero
        // checksum.
        let flags = le16(img, d + 0x12);
        let bc = if flags & 2 == 0 {
            crc32c_raw(g.seed, &img[bb..bb + g.cpg_bytes])
        } else {
            0
        };
        let ic = if flags & 1 == 0 {
            crc32c_raw(g.seed, &img[ib..ib + g.ipg_bytes])
        } else {
            0
        };
        put16(img, d + 0x18, bc as u16);
        put16(img, d + 0x38, (bc >> 16) as u16);
        put16(img, d + 0x1A, ic as u16);
        put16(img, d + 0x3A, (ic >> 16) as u16);
        let mut raw = img[d..d + g.desc].to_vec();
        raw[0x1E..0x20].fill(0);
        let c = crc32c_raw(g.seed, &(group as u32).to_le_bytes());
        let c = crc32c_raw(c, &raw);
        put16(img, d + 0x1E, c as u16);
    }
}

/// The property: `ext::used` maps every referenced block.
pub fn check(img: &[u8]) -> Result<(), String> {
    let g = geo(img);
    let u = blockwise::fs::ext::used(&MemSource(img.to_vec())).map_err(|e| e.to_string())?;
    for line in REFS.lines().filter(|l| !l.is_empty()) {
        let (a, b) = line.split_once('-').ok_or("bad refs line")?;
        let (a, b): (u64, u64) = (a.parse().map_err(|_| "bad")?, b.parse().map_err(|_| "bad")?);
        let (s, e) = (a * g.bs as u64, (b + 1) * g.bs as u64);
        if u.used.covered(s, e) != e - s {
            return Err(format!(
                "blocks {a}-{b} are referenced but not mapped; warnings: {:?}",
                u.warnings
            ));
        }
    }
    Ok(())
}
