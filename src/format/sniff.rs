//! Format recognition from bytes: magic numbers at the head (and for VHD/DMG, the tail).
//! The file name is never consulted here; it is only a hint for messages.

use serde::Serialize;

/// Every on-disk format blockwise can recognise as a layer of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// gzip stream (RFC 1952), possibly multi-member.
    Gzip,
    /// xz stream.
    Xz,
    /// zstd frames without a seek table.
    Zstd,
    /// zstd frames followed by a seekable-format seek table.
    SeekableZstd,
    /// bzip2 stream.
    Bzip2,
    /// LZ4 frame format.
    Lz4,
    /// ZIP archive.
    Zip,
    /// 7-Zip archive.
    SevenZip,
    /// QEMU qcow version 1.
    Qcow,
    /// QEMU qcow2 (version 2 or 3).
    Qcow2,
    /// Microsoft VHD (fixed, dynamic or differencing).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// VMware VMDK sparse extent (KDMV / COWD).
    VmdkSparse,
    /// VMware VMDK text descriptor.
    VmdkDescriptor,
    /// VirtualBox VDI.
    Vdi,
    /// Apple UDIF disk image (DMG, "koly" trailer).
    Dmg,
    /// Android sparse image (img2simg).
    AndroidSparse,
    /// CUE sheet (text) describing BIN track files.
    Cue,
    /// Raw 2352-byte CD sectors (a `.bin` track file).
    CdRaw,
    /// ISO9660 image in 2048-byte sectors.
    Iso9660,
    /// Anything else: a raw disk or filesystem image.
    Raw,
}

impl Format {
    /// Short lowercase name used in output and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::SeekableZstd => "zstd (seekable)",
            Format::Bzip2 => "bzip2",
            Format::Lz4 => "lz4",
            Format::Zip => "zip",
            Format::SevenZip => "7z",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::VmdkSparse => "vmdk (sparse extent)",
            Format::VmdkDescriptor => "vmdk (descriptor)",
            Format::Vdi => "vdi",
            Format::Dmg => "dmg (udif)",
            Format::AndroidSparse => "android sparse",
            Format::Cue => "cue sheet",
            Format::CdRaw => "raw cd sectors (bin)",
            Format::Iso9660 => "iso9660",
            Format::Raw => "raw",
        }
    }

    /// True for pure compression wrappers that decode to exactly one byte stream.
    pub fn is_compression(self) -> bool {
        matches!(
            self,
            Format::Gzip
                | Format::Xz
                | Format::Zstd
                | Format::SeekableZstd
                | Format::Bzip2
                | Format::Lz4
        )
    }
}

/// Bytes read from the head of a source for sniffing: enough for the ISO9660 descriptor at
/// 32769 and the second raw CD sector sync at 2352.
const HEAD_LEN: usize = 36 * 1024;

/// CUE keywords a sheet's lines may start with.
const CUE_KEYWORDS: &[&str] = &[
    "REM",
    "FILE",
    "CATALOG",
    "PERFORMER",
    "TITLE",
    "SONGWRITER",
    "CDTEXTFILE",
    "TRACK",
    "INDEX",
    "FLAGS",
    "ISRC",
    "PREGAP",
    "POSTGAP",
];

/// Largest file we would consider to be a CUE sheet (real ones are a few KiB).
pub const MAX_CUE_SIZE: u64 = 1 << 20;

/// The 12-byte sync pattern that opens every raw CD data sector.
pub const CD_SYNC: [u8; 12] = [
    0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
];

/// Recognises the format of `src` from its bytes. Short or empty input is simply [`Format::Raw`].
pub fn sniff(src: &dyn crate::io::ReadAt) -> std::io::Result<Format> {
    sniff_with(src, true)
}

/// Like [`sniff`], but with `trailers == false` the formats recognised only by their last
/// sector (fixed VHD, DMG) are not looked for. Reading the last sector of a streaming
/// decompressor means decoding everything, so [`open`](super::open) skips it for streams
/// unless the file name suggests such a format.
pub fn sniff_with(src: &dyn crate::io::ReadAt, trailers: bool) -> std::io::Result<Format> {
    use crate::io::ReadAtExt;
    let size = src.size();
    let head = src.read_upto(0, HEAD_LEN)?;
    let tail_off = size.saturating_sub(512);
    let tail = if trailers {
        src.read_upto(tail_off, 512)?
    } else {
        Vec::new()
    };
    // Trailer formats first: a DMG's data fork and a fixed VHD's disk start with whatever
    // they hold (often a bzip2 or zlib chunk, or an MBR), only the last sector says what
    // the file is.
    if tail.len() == 512 {
        if tail.starts_with(b"conectix") || tail.get(1..9) == Some(b"conectix") {
            return Ok(Format::Vhd);
        }
        if tail.starts_with(b"koly")
            && crate::util::be32(&tail, 4) == Some(4)
            && crate::util::be32(&tail, 8) == Some(512)
        {
            return Ok(Format::Dmg);
        }
    }
    if let Some(f) = sniff_head(&head) {
        if f == Format::Zstd && is_seekable_zstd(src)? {
            return Ok(Format::SeekableZstd);
        }
        return Ok(f);
    }
    if trailers && size >= 511 {
        // Some old tools wrote a 511-byte footer.
        let t = src.read_upto(size - 511, 8)?;
        if t == b"conectix" {
            return Ok(Format::Vhd);
        }
    }
    if head.starts_with(&CD_SYNC) && head.get(2352..2364) == Some(&CD_SYNC[..]) {
        return Ok(Format::CdRaw);
    }
    if head.get(32769..32774) == Some(b"CD001") {
        return Ok(Format::Iso9660);
    }
    if size <= MAX_CUE_SIZE && looks_like_cue(&head) {
        return Ok(Format::Cue);
    }
    Ok(Format::Raw)
}

/// Formats recognisable from the first bytes alone.
pub fn sniff_head(head: &[u8]) -> Option<Format> {
    use crate::util::{be32, le32};
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(&[0x1F, 0x8B, 0x08]) {
        return Some(Format::Gzip);
    }
    if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        return Some(Format::Xz);
    }
    let m0 = le32(head, 0);
    if m0 == Some(0xFD2F_B528) {
        return Some(Format::Zstd);
    }
    // A zstd stream may open with a skippable frame (0x184D2A50..5F) followed by a real frame.
    if let Some(m) = m0 {
        if m & 0xFFFF_FFF0 == 0x184D_2A50 {
            let len = le32(head, 4).unwrap_or(0) as usize;
            if let Some(next) = len.checked_add(8) {
                if le32(head, next) == Some(0xFD2F_B528) {
                    return Some(Format::Zstd);
                }
            }
        }
    }
    if starts(b"BZh")
        && head.get(3).is_some_and(|c| (b'1'..=b'9').contains(c))
        && head.get(4..10) == Some(&[0x31, 0x41, 0x59, 0x26, 0x53, 0x59][..])
    {
        return Some(Format::Bzip2);
    }
    if m0 == Some(0x184D_2204) {
        return Some(Format::Lz4);
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return Some(Format::Zip);
    }
    if starts(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C]) {
        return Some(Format::SevenZip);
    }
    if starts(b"QFI\xfb") {
        return match be32(head, 4) {
            Some(1) => Some(Format::Qcow),
            Some(2) | Some(3) => Some(Format::Qcow2),
            _ => None,
        };
    }
    if starts(b"vhdxfile") {
        return Some(Format::Vhdx);
    }
    if starts(b"conectix") {
        return Some(Format::Vhd);
    }
    if starts(b"KDMV") || starts(b"COWD") {
        return Some(Format::VmdkSparse);
    }
    if starts(b"# Disk DescriptorFile") {
        return Some(Format::VmdkDescriptor);
    }
    if starts(b"<<< ") && le32(head, 0x40) == Some(0xBEDA_107F) {
        return Some(Format::Vdi);
    }
    if m0 == Some(0xED26_FF3A) {
        return Some(Format::AndroidSparse);
    }
    None
}

/// True if the last bytes of `src` are a seekable-zstd seek table inside a skippable frame.
pub fn is_seekable_zstd(src: &dyn crate::io::ReadAt) -> std::io::Result<bool> {
    Ok(seek_table_location(src)?.is_some())
}

/// Locates a seekable-zstd seek table: returns `(frame_start, frame_count, has_checksums)`
/// where `frame_start` is the offset of the skippable frame holding the table.
pub fn seek_table_location(
    src: &dyn crate::io::ReadAt,
) -> std::io::Result<Option<(u64, u32, bool)>> {
    use crate::io::ReadAtExt;
    use crate::util::le32;
    let size = src.size();
    if size < 17 {
        return Ok(None);
    }
    let foot = src.read_upto(size - 9, 9)?;
    if le32(&foot, 5) != Some(0x8F92_EAB1) {
        return Ok(None);
    }
    let (Some(count), Some(&desc)) = (le32(&foot, 0), foot.get(4)) else {
        return Ok(None);
    };
    // Reserved bits must be zero (bits 2..6 per the format).
    if desc & 0x7C != 0 {
        return Ok(None);
    }
    let checks = desc & 0x80 != 0;
    let entry = if checks { 12u64 } else { 8 };
    let Some(table) = u64::from(count)
        .checked_mul(entry)
        .and_then(|t| t.checked_add(9))
    else {
        return Ok(None);
    };
    let Some(start) = size.checked_sub(table).and_then(|s| s.checked_sub(8)) else {
        return Ok(None);
    };
    let hdr = src.read_upto(start, 8)?;
    if le32(&hdr, 0) != Some(0x184D_2A5E) || le32(&hdr, 4).map(u64::from) != Some(table) {
        return Ok(None);
    }
    Ok(Some((start, count, checks)))
}

/// Strict CUE sheet test: valid text, every non-blank line opens with a CUE keyword, and at
/// least one FILE and one TRACK line. Random text and other TOC formats do not pass.
pub fn looks_like_cue(head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.is_empty() || text.contains(&0) {
        return false;
    }
    // The head may cut a multi-byte character; decode what is valid.
    let s = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => {
            // Latin-1 sheets exist; require the bytes to be non-control at least.
            if text
                .iter()
                .any(|&c| c < 0x20 && !matches!(c, b'\r' | b'\n' | b'\t'))
            {
                return false;
            }
            return looks_like_cue_lines(&text.iter().map(|&c| c as char).collect::<String>());
        }
    };
    looks_like_cue_lines(s)
}

fn looks_like_cue_lines(s: &str) -> bool {
    let (mut file, mut track) = (false, false);
    let mut lines = s.lines().peekable();
    let mut seen = 0usize;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        // The head may end mid-line: don't judge the last, possibly cut, line.
        if lines.peek().is_none() && seen > 0 && !s.ends_with('\n') {
            break;
        }
        if t.chars().any(|c| c.is_control() && c != '\t') {
            return false;
        }
        let kw = t
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if !CUE_KEYWORDS.contains(&kw.as_str()) {
            return false;
        }
        file |= kw == "FILE";
        track |= kw == "TRACK";
        seen += 1;
    }
    file && track
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    fn sn(b: &[u8]) -> Format {
        sniff(&MemSource(b.to_vec())).unwrap()
    }

    #[test]
    fn short_inputs_are_raw() {
        for n in 0..40 {
            assert_eq!(sn(&vec![0u8; n]), Format::Raw);
        }
        assert_eq!(sn(b"\x1f\x8b"), Format::Raw);
        assert_eq!(sn(b"\x1f\x8b\x08"), Format::Gzip);
    }

    #[test]
    fn cue_is_strict() {
        let cue = b"FILE \"a.bin\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n";
        assert_eq!(sn(cue), Format::Cue);
        assert_eq!(
            sn(b"REM hello\nThis is a readme\nFILE x\nTRACK 1\n"),
            Format::Raw
        );
        assert_eq!(
            sn(b"CD_ROM\n\nTRACK MODE1_RAW\nDATAFILE \"x.bin\"\n"),
            Format::Raw
        );
        assert_eq!(sn(b"TITLE x\n"), Format::Raw);
    }

    #[test]
    fn seekable_zstd_footer() {
        // one zstd magic, then a seek table with one entry, no checksums
        let mut v = 0xFD2F_B528u32.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        v.extend_from_slice(&17u32.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.push(0);
        v.extend_from_slice(&0x8F92_EAB1u32.to_le_bytes());
        assert_eq!(sn(&v), Format::SeekableZstd);
        v[12 + 4] = 18;
        assert_eq!(sn(&v), Format::Zstd);
    }

    #[test]
    fn tail_and_deep_magics() {
        let mut v = vec![0u8; 4096];
        v[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        assert_eq!(sn(&v), Format::Vhd);
        let mut v = vec![0u8; 40000];
        v[32769..32774].copy_from_slice(b"CD001");
        assert_eq!(sn(&v), Format::Iso9660);
        let mut v = vec![0u8; 2352 * 2];
        v[..12].copy_from_slice(&CD_SYNC);
        v[2352..2364].copy_from_slice(&CD_SYNC);
        assert_eq!(sn(&v), Format::CdRaw);
    }
}
