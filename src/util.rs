//! Small helpers for parsing on-disk structures with checked bounds.
//!
//! Every on-disk number is hostile until checked: these helpers never panic on short buffers,
//! they return `None`/zero-filled results the caller has to handle.

use crate::checksum::hex;

/// Little-endian u16 at `off`, or `None` if the buffer is too short.
pub(crate) fn le16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
/// Little-endian u32 at `off`, or `None` if the buffer is too short.
pub(crate) fn le32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
/// Little-endian u64 at `off`, or `None` if the buffer is too short.
pub(crate) fn le64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}
/// Big-endian u16 at `off`, or `None` if the buffer is too short.
pub(crate) fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
/// Big-endian u32 at `off`, or `None` if the buffer is too short.
pub(crate) fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
/// Big-endian u64 at `off`, or `None` if the buffer is too short.
pub(crate) fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Formats 16 bytes as a lowercase RFC 4122 UUID string, in the byte order given.
pub(crate) fn uuid_be(b: &[u8; 16]) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(&b[..4]),
        hex(&b[4..6]),
        hex(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..])
    )
}

/// Formats a mixed-endian (Microsoft/GPT style) GUID as lowercase text.
pub(crate) fn guid_le(b: &[u8; 16]) -> String {
    let mut x = *b;
    x[0..4].reverse();
    x[4..6].reverse();
    x[6..8].reverse();
    uuid_be(&x)
}

/// Human-readable byte count ("31.9 GiB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Decodes a space/NUL padded 8-bit label, trimming trailing padding. Non-ASCII bytes are
/// mapped through Latin-1 so the result is always valid UTF-8.
pub(crate) fn latin1_trim(b: &[u8]) -> String {
    let end = b
        .iter()
        .rposition(|&c| c != 0 && c != b' ')
        .map_or(0, |p| p + 1);
    b[..end].iter().map(|&c| c as char).collect()
}

/// Decodes UTF-16LE up to the first NUL, replacing invalid sequences.
pub(crate) fn utf16le_z(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_none() {
        assert_eq!(le32(&[1, 2, 3], 0), None);
        assert_eq!(le16(&[1, 2, 3], usize::MAX), None);
        assert_eq!(le64(&[0; 8], 0), Some(0));
    }

    #[test]
    fn guid_mixed_endian() {
        // EFI System Partition GUID as stored on disk.
        let raw = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid_le(&raw), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(32 << 30), "32.0 GiB");
    }
}
