//! A disk image inside a tar archive: an `.ova` (an OVF descriptor, a manifest and the
//! streamOptimized VMDK), or any `.tar` holding an image. Tar members are stored as is, so the
//! chosen member is a window of the archive with full random access.
//!
//! Recognised by the `ustar` magic at byte 257 and a header checksum that adds up. The member
//! is chosen by its bytes (the largest whose format is a container or compressed image), the
//! name only breaking ties (as for zip), then the largest file.

use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt, Slice};
use crate::Error;

impl Format {
    /// tar archive (also `.ova`).
    #[allow(non_upper_case_globals)]
    pub const Tar: Format = Format::new("tar", "tar", Kind::Archive);
}

/// Tar blocks.
const BLOCK: u64 = 512;

/// Most headers walked (the archive is hostile too).
const MAX_ENTRIES: usize = 100_000;

/// Members whose bytes are looked at, largest first.
const MAX_SNIFFED: usize = 64;

/// Longest GNU long name or pax header read.
const MAX_EXT_HEADER: u64 = 64 << 10;

/// Recognises a tar archive and opens its image member.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Tar
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["tar", "ova"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        let h = p.head();
        h.len() >= BLOCK as usize && h.get(257..262) == Some(b"ustar") && checksum_ok(&h[..512])
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let members = walk(&*src)?;
        let n = members.len();
        let Some(m) = choose(&src, &members) else {
            return Err(Error::Format("tar archive holds no files".into()));
        };
        let images = members
            .iter()
            .filter(|x| x.format.is_some_and(|f| f.kind() != Kind::Image))
            .count();
        if images > 1 {
            ctx.note(format!(
                "tar archive holds {images} disk images; the largest, {}, is opened",
                m.name
            ));
        }
        let layer = Layer::stored(
            Format::Tar,
            &*src,
            Some(format!("member {} ({n} files in archive)", m.name)),
        );
        Ok(Step::inner(
            layer,
            Arc::new(Slice::new(src.clone(), m.data, m.size)),
        ))
    }
}

/// True if the header's checksum field matches its bytes (the field counted as spaces).
fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = octal(&h[148..156]) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == want
}

/// An octal number field (NUL or space terminated), or GNU base-256 when the top bit is set.
fn octal(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(f[0] & 0x7F);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A regular file in the archive.
struct Member {
    name: String,
    data: u64,
    size: u64,
    format: Option<Format>,
}

/// Walks the headers: every regular file with where its data lies.
fn walk(src: &dyn ReadAt) -> crate::Result<Vec<Member>> {
    let bad = |d: String| Error::corrupt("tar archive", d);
    let size = src.size();
    let mut pos = 0u64;
    let mut out = Vec::new();
    let mut long_name: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    for _ in 0..MAX_ENTRIES {
        if pos.checked_add(BLOCK).is_none_or(|e| e > size) {
            break;
        }
        let h = src.read_vec(pos, BLOCK as usize)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        if !checksum_ok(&h) {
            return Err(bad(format!("the header at byte {pos} fails its checksum")));
        }
        let mut len = octal(&h[124..136])
            .ok_or_else(|| bad(format!("the header at byte {pos} has a bad size field")))?;
        if let Some(s) = pax_size.take() {
            len = s;
        }
        let data = pos + BLOCK;
        let end = data
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(|| {
                bad(format!(
                    "the member at byte {pos} says {len} bytes, past the end of the archive \
                     ({size} bytes)"
                ))
            })?;
        let ext = || -> crate::Result<Vec<u8>> {
            if len > MAX_EXT_HEADER {
                return Err(bad(format!(
                    "an extended header of {len} bytes at byte {pos}"
                )));
            }
            Ok(src.read_vec(data, len as usize)?)
        };
        match h[156] {
            b'L' => long_name = Some(cstr(&ext()?)),
            b'x' => {
                for (k, v) in pax_records(&ext()?) {
                    match k.as_str() {
                        "path" => long_name = Some(v),
                        "size" => pax_size = v.parse().ok(),
                        _ => {}
                    }
                }
            }
            b'0' | 0 | b'7' => {
                let name = long_name.take().unwrap_or_else(|| {
                    let n = cstr(&h[0..100]);
                    let prefix = cstr(&h[345..500]);
                    if &h[257..263] == b"ustar\0" && !prefix.is_empty() {
                        format!("{prefix}/{n}")
                    } else {
                        n
                    }
                });
                out.push(Member {
                    name,
                    data,
                    size: len,
                    format: None,
                });
            }
            _ => long_name = None,
        }
        pos = end.next_multiple_of(BLOCK);
    }
    Ok(out)
}

/// The `key=value` records of a pax extended header (`LEN key=value\n`).
fn pax_records(b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&c| c == b' ') else {
            break;
        };
        let Some(n) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if n <= sp + 1 || n > rest.len() {
            break;
        }
        let rec = String::from_utf8_lossy(&rest[sp + 1..n]);
        if let Some((k, v)) = rec.trim_end_matches('\n').split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
        rest = &rest[n..];
    }
    out
}

/// The image member: the largest whose bytes are a container, compressed image or archive
/// (not plain data), else the largest whose name looks like an image, else the largest.
fn choose<'a>(src: &Arc<dyn ReadAt>, members: &'a [Member]) -> Option<&'a Member> {
    let mut by_size: Vec<&Member> = members.iter().collect();
    by_size.sort_by_key(|m| std::cmp::Reverse(m.size));
    let mut best: Option<(bool, bool, u64, &Member)> = None;
    for (i, m) in by_size.into_iter().enumerate() {
        let format = (i < MAX_SNIFFED)
            .then(|| crate::format::registry::sniff(&Slice::new(src.clone(), m.data, m.size)).ok())
            .flatten();
        let decoded = format.is_some_and(|f| f.kind() != Kind::Image);
        let key = (decoded, name_hint(&m.name), m.size, m);
        if best.is_none_or(|b| (key.0, key.1, key.2) > (b.0, b.1, b.2)) {
            best = Some(key);
        }
    }
    best.map(|b| b.3)
}

/// True if the name ends the way a disk image's file usually does.
fn name_hint(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    let Some((_, ext)) = l.rsplit_once('.') else {
        return false;
    };
    crate::format::DRIVERS
        .iter()
        .filter(|d| d.format().kind() != Kind::Archive)
        .any(|d| d.name_hints().contains(&ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    fn header(name: &str, len: u64, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{len:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn walks_members() {
        let mut t = header("a.ovf", 5, b'0');
        t.extend_from_slice(b"hello");
        t.resize(1024, 0);
        t.extend(header("disk.vmdk", 600, b'0'));
        t.extend(b"KDMV".iter().copied().chain(std::iter::repeat_n(1, 596)));
        t.resize(t.len().next_multiple_of(512) + 1024, 0);
        assert!(checksum_ok(&t[..512]));
        let m = walk(&MemSource(t.clone())).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[1].name.as_str(), m[1].data, m[1].size),
            ("disk.vmdk", 1536, 600)
        );
        let src: Arc<dyn ReadAt> = Arc::new(MemSource(t));
        assert_eq!(choose(&src, &m).unwrap().name, "disk.vmdk");
    }

    #[test]
    fn sizes_past_the_end_are_refused() {
        let t = header("x", 0o77_777_777_777, b'0');
        assert!(walk(&MemSource(t)).is_err());
        assert_eq!(octal(b"0000017\0"), Some(15));
        assert_eq!(octal(b"\x80\0\0\0\0\0\0\0\0\0\x01\0"), Some(256));
        assert_eq!(octal(b"12x"), None);
    }
}
