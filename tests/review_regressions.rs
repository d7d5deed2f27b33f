//! Regression tests for bugs found in code review. Each test names the bug it pins down and is
//! built from small synthetic inputs.

use std::io::{self, Write};
use std::sync::Arc;

use blockwise::format::stream::{Codec, StreamSource, CHUNK};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};

/// Deterministic, mildly compressible bytes.
fn data(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] & 0x0F)
        .collect()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A stream that breaks (here: shorter than its declared size, as a zip directory or zstd
/// frame header can claim) used to restart decoding from the beginning on every read past
/// the break, so a probe pattern of N reads there cost N full decodes of everything before it.
#[test]
fn stream_failure_is_remembered_not_redecoded() {
    let orig = data(3 * CHUNK);
    let s = StreamSource::new(
        Codec::Gzip,
        Arc::new(MemSource(gzip(&orig))),
        Some(8 * CHUNK as u64),
    )
    .unwrap();
    let mut b = [0u8; 512];
    s.read_exact_at(0, &mut b).unwrap();
    assert_eq!(&b[..], &orig[..512]);
    let first = s.read_at(5 * CHUNK as u64, &mut b).unwrap_err();
    assert_eq!(first.kind(), io::ErrorKind::UnexpectedEof);
    let after_first = s.restarts();
    for off in [6, 7, 5, 3, 4] {
        let e = s.read_at(off * CHUNK as u64 + 100, &mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
    assert_eq!(
        s.restarts(),
        after_first,
        "reads past a known break must not decode the stream again"
    );
    // Data before the break is still readable.
    s.read_exact_at(2 * CHUNK as u64 + 7, &mut b).unwrap();
    assert_eq!(&b[..], &orig[2 * CHUNK + 7..2 * CHUNK + 7 + 512]);
}

/// `ExtentMap::chunks` computed each piece's end as `start + max` unchecked: for a range near
/// u64::MAX (a partition map shifted to a hostile offset) that panicked in debug builds and
/// wrapped in release, yielding a piece that ends before it starts.
#[test]
fn extent_chunks_near_u64_max() {
    let m = blockwise::ExtentMap::from_ranges([(u64::MAX - 10, u64::MAX)]);
    let c: Vec<_> = m.chunks(1 << 20).map(|e| (e.start, e.end)).collect();
    assert_eq!(c, vec![(u64::MAX - 10, u64::MAX)]);
    let m = blockwise::ExtentMap::from_ranges([(u64::MAX - 10, u64::MAX)]);
    let c: Vec<_> = m.chunks(4).map(|e| (e.start, e.end)).collect();
    assert_eq!(
        c,
        vec![
            (u64::MAX - 10, u64::MAX - 6),
            (u64::MAX - 6, u64::MAX - 2),
            (u64::MAX - 2, u64::MAX)
        ]
    );
}

/// A source that fails every read at or past `fail_from` with an I/O error.
struct FailingTail {
    inner: MemSource,
    fail_from: u64,
}

impl ReadAt for FailingTail {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.fail_from {
            return Err(io::Error::other("injected read error"));
        }
        self.inner.read_at(offset, buf)
    }
}

fn mbr_with(entries: &[(u8, u8, u32, u32)]) -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[510] = 0x55;
    s[511] = 0xaa;
    for (i, &(boot, ty, start, len)) in entries.iter().enumerate() {
        let o = 446 + i * 16;
        s[o] = boot;
        s[o + 4] = ty;
        s[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
        s[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
    }
    s
}

/// inspect probed for the isohybrid ISO9660/UDF volume with `.ok()`, so a real read error at
/// 32 KiB silently meant "no ISO"; the user got no hint that part of the image was unreadable.
#[test]
fn isohybrid_probe_read_error_is_a_warning() {
    let mut img = vec![0u8; 1 << 20];
    img[..512].copy_from_slice(&mbr_with(&[(0, 0x83, 1, 10)]));
    let src = Arc::new(FailingTail {
        inner: MemSource(img),
        fail_from: 32 * 1024,
    });
    let r = blockwise::report::inspect_source(src, None, "t").unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("injected read error")),
        "{:?}",
        r.warnings
    );
}

/// A truncated fixed VHD (footer says the disk is larger than the data before the footer)
/// was exposed as a window of the full claimed size, so the 512 footer bytes read back as
/// disk data.
#[test]
fn truncated_fixed_vhd_does_not_expose_its_footer() {
    use blockwise::format::container::vhd;
    let mut v = vec![7u8; 4096 + 512];
    let f = &mut v[4096..];
    f[..8].copy_from_slice(b"conectix");
    f[48..56].copy_from_slice(&(1u64 << 20).to_be_bytes());
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    let i = vhd::info(&MemSource(v.clone())).unwrap();
    assert_eq!(i.payload, Some((0, 4096)));
    assert!(i.detail.contains("truncated"), "{}", i.detail);
    let o = blockwise::format::open_source(
        Arc::new(MemSource(v)),
        "t.vhd",
        &blockwise::format::OpenOptions::default(),
    )
    .unwrap();
    let all = o.source.read_upto(0, 1 << 20).unwrap();
    assert!(!all.windows(8).any(|w| w == b"conectix"));
}

/// A seekable-zstd file whose seek table does not match its frames made opening fail with a
/// hard error, although the frames themselves are ordinary zstd that `zstd -d` decodes.
#[test]
fn bad_seek_table_falls_back_to_streaming() {
    let orig = data(100_000);
    let mut v = zstd::bulk::compress(&orig, 3).unwrap();
    let frame_len = v.len() as u32;
    // Skippable frame with a one-entry seek table whose compressed size is off by one.
    v.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
    v.extend_from_slice(&17u32.to_le_bytes());
    v.extend_from_slice(&(frame_len + 1).to_le_bytes());
    v.extend_from_slice(&(orig.len() as u32).to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.push(0);
    v.extend_from_slice(&0x8F92_EAB1u32.to_le_bytes());
    let o = blockwise::format::open_source(
        Arc::new(MemSource(v)),
        "t.img.zst",
        &blockwise::format::OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(o.source.size(), orig.len() as u64);
    assert_eq!(o.source.read_vec(0, orig.len()).unwrap(), orig);
    assert!(
        o.warnings.iter().any(|w| w.contains("seek table")),
        "{:?}",
        o.warnings
    );
}

/// A GPT image of `sectors` 512-byte sectors with one partition `[first, last]` (LBAs) and
/// valid primary and backup tables.
fn gpt_image(sectors: u64, first: u64, last: u64) -> Vec<u8> {
    let ss = 512usize;
    let mut img = vec![0u8; sectors as usize * ss];
    img[..512].copy_from_slice(&mbr_with(&[(0, 0xee, 1, (sectors - 1) as u32)]));
    let mut arr = vec![0u8; 128 * 128];
    // Linux filesystem type GUID, mixed endian, and some unique GUID.
    arr[..16].copy_from_slice(&[
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ]);
    arr[16..32].copy_from_slice(&[9u8; 16]);
    arr[32..40].copy_from_slice(&first.to_le_bytes());
    arr[40..48].copy_from_slice(&last.to_le_bytes());
    let arr_crc = crc32fast::hash(&arr);
    let last_usable = sectors - 34;
    let header = |my: u64, alt: u64, entries: u64| {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&[5u8; 16]);
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&arr_crc.to_le_bytes());
        let c = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let put = |img: &mut Vec<u8>, lba: u64, b: &[u8]| {
        let o = lba as usize * ss;
        img[o..o + b.len()].copy_from_slice(b);
    };
    put(&mut img, 1, &header(1, sectors - 1, 2));
    put(&mut img, 2, &arr);
    put(&mut img, sectors - 33, &arr);
    put(&mut img, sectors - 1, &header(sectors - 1, 1, sectors - 33));
    img
}

/// `unpartitioned_tail` counted the backup GPT at the end of the disk as unallocated space
/// ("16.5 KiB after the last partition (unallocated)"), although it is a structure that must
/// be kept.
#[test]
fn gpt_backup_is_not_unpartitioned_tail() {
    let sectors = 2048u64;
    // The partition fills the usable area exactly: nothing is free after it.
    let img = gpt_image(sectors, 34, sectors - 34);
    let r = blockwise::report::inspect_source(Arc::new(MemSource(img)), None, "t").unwrap();
    assert_eq!(
        r.layout.table,
        blockwise::layout::TableKind::Gpt,
        "{:?}",
        r.warnings
    );
    assert!(r.layout.gpt.as_ref().unwrap().backup_ok, "{:?}", r.warnings);
    assert_eq!(r.unpartitioned_tail, 0);
    // With 100 free sectors before the backup, exactly those are reported.
    let img = gpt_image(sectors, 34, sectors - 134);
    let r = blockwise::report::inspect_source(Arc::new(MemSource(img)), None, "t").unwrap();
    assert_eq!(r.unpartitioned_tail, 100 * 512);
}

/// An EFI System Partition without a FAT filesystem was reported as "UEFI can boot this disk"
/// with no warning.
#[test]
fn esp_without_fat_is_a_warning_not_a_boot_claim() {
    let mut img = vec![0u8; 4 << 20];
    img[..512].copy_from_slice(&mbr_with(&[(0, 0xef, 2048, 4096)]));
    let r = blockwise::report::inspect_source(Arc::new(MemSource(img)), None, "t").unwrap();
    assert_eq!(r.boot.esp, vec![1]);
    assert!(
        !r.boot.notes.iter().any(|n| n.contains("UEFI can boot")),
        "{:?}",
        r.boot.notes
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("partition 1") && w.contains("not FAT")),
        "{:?}",
        r.warnings
    );
}

/// With a hybrid MBR the active flag is on an MBR slot, whose number need not match the GPT
/// partition numbers the report lists; the note said "partition N".
#[test]
fn hybrid_mbr_active_note_names_the_slot() {
    let sectors = 2048u64;
    let mut img = gpt_image(sectors, 34, sectors - 34);
    let mbr = mbr_with(&[(0, 0xee, 1, 33), (0x80, 0x0c, 34, 100)]);
    img[..512].copy_from_slice(&mbr);
    let r = blockwise::report::inspect_source(Arc::new(MemSource(img)), None, "t").unwrap();
    assert_eq!(r.layout.table, blockwise::layout::TableKind::Gpt);
    assert_eq!(r.boot.active_partition, Some(2));
    assert!(
        r.boot.notes.iter().any(|n| n.contains("slot 2")),
        "{:?}",
        r.boot.notes
    );
    assert!(!r.boot.notes.iter().any(|n| n.contains("partition 2")));
}
