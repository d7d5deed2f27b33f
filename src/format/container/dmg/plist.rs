//! The XML property list of a DMG: only what the disk needs from it, the `blkx` array of the
//! `resource-fork` dictionary, each entry's name and its `Data` (a base64 `mish` block table).

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::Error;

/// One entry of the `blkx` array: a block table (usually one per partition of the disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BlkxEntry {
    /// Its `CFName` or `Name` (for messages), may be empty.
    pub name: String,
    /// The decoded `Data`: a `mish` block table.
    pub data: Vec<u8>,
}

/// Nesting deeper than this is not a DMG plist (its `blkx` entries sit 5 levels down).
const MAX_DEPTH: usize = 32;

/// Which part of a `blkx` entry dictionary a text goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Key,
    Name,
    Data,
}

/// An open element: its name and, for a `<dict>`, the last `<key>` read in it.
struct Frame {
    tag: Vec<u8>,
    key: String,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::corrupt("dmg plist", detail)
}

/// True when the open elements are plist > dict[resource-fork] > dict[blkx] > array > dict:
/// inside one `blkx` entry.
fn in_entry(stack: &[Frame]) -> bool {
    matches!(stack, [p, r, b, a, e]
        if p.tag == b"plist" && r.tag == b"dict" && r.key == "resource-fork"
            && b.tag == b"dict" && b.key == "blkx" && a.tag == b"array" && e.tag == b"dict")
}

/// The `blkx` entries of the plist `xml`, in order. Errors name what is wrong and where; a
/// plist without a `blkx` array gives an empty list (the caller says what that means).
pub(super) fn blkx_entries(xml: &[u8]) -> crate::Result<Vec<BlkxEntry>> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Frame> = Vec::new();
    let mut capture = Capture::None;
    let mut key = String::new();
    let mut cur = BlkxEntry::default();
    let mut b64: Vec<u8> = Vec::new();
    let mut names = (String::new(), String::new()); // (CFName, Name)
    let mut out = Vec::new();
    loop {
        let ev = reader.read_event().map_err(|e| {
            bad(format!(
                "not valid XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(bad(format!("elements nested over {MAX_DEPTH} deep")));
                }
                let tag = e.name().as_ref().to_vec();
                if stack.is_empty() && tag != b"plist" {
                    return Err(bad(format!(
                        "root element is <{}>, not <plist>",
                        String::from_utf8_lossy(&tag)
                    )));
                }
                let entry = in_entry(&stack);
                if tag == b"dict" && stack.len() == 4 && in_entry_parent(&stack) {
                    cur = BlkxEntry::default();
                    names = (String::new(), String::new());
                }
                capture = match tag.as_slice() {
                    b"key" if stack.last().is_some_and(|f| f.tag == b"dict") => {
                        key.clear();
                        Capture::Key
                    }
                    b"data" if entry && stack.last().is_some_and(|f| f.key == "Data") => {
                        b64.clear();
                        Capture::Data
                    }
                    b"string"
                        if entry
                            && stack
                                .last()
                                .is_some_and(|f| f.key == "Name" || f.key == "CFName") =>
                    {
                        Capture::Name
                    }
                    _ => Capture::None,
                };
                stack.push(Frame {
                    tag,
                    key: String::new(),
                });
            }
            Event::Text(t) => match capture {
                Capture::Data => b64.extend_from_slice(t.as_ref()),
                Capture::Key | Capture::Name => {
                    let s = t.decode().map_err(|e| bad(format!("bad text: {e}")))?;
                    text_of(capture, &stack, &mut key, &mut names).push_str(&s);
                }
                Capture::None => {}
            },
            Event::CData(t) if capture == Capture::Data => b64.extend_from_slice(t.as_ref()),
            Event::GeneralRef(r) if matches!(capture, Capture::Key | Capture::Name) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match &*r {
                        b"amp" => Some('&'),
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"quot" => Some('"'),
                        b"apos" => Some('\''),
                        _ => None,
                    },
                };
                if let Some(c) = c {
                    text_of(capture, &stack, &mut key, &mut names).push(c);
                }
            }
            Event::End(_) => {
                let Some(f) = stack.pop() else {
                    return Err(bad("closing tag without an open element"));
                };
                match capture {
                    Capture::Key => {
                        if let Some(d) = stack.last_mut() {
                            d.key = std::mem::take(&mut key);
                        }
                    }
                    Capture::Data => {
                        cur.data = base64(&b64)
                            .map_err(|d| bad(format!("Data of blkx entry {}: {d}", out.len())))?;
                        b64 = Vec::new();
                    }
                    _ => {}
                }
                capture = Capture::None;
                if f.tag == b"dict" && stack.len() == 4 && in_entry_parent(&stack) {
                    let mut e = std::mem::take(&mut cur);
                    e.name = if names.0.is_empty() {
                        std::mem::take(&mut names.1)
                    } else {
                        std::mem::take(&mut names.0)
                    };
                    out.push(e);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad("ends inside an element (truncated?)"));
    }
    Ok(out)
}

/// True when the open elements are plist > dict[resource-fork] > dict[blkx] > array: a
/// `<dict>` opening here is a `blkx` entry.
fn in_entry_parent(stack: &[Frame]) -> bool {
    matches!(stack, [p, r, b, a]
        if p.tag == b"plist" && r.tag == b"dict" && r.key == "resource-fork"
            && b.tag == b"dict" && b.key == "blkx" && a.tag == b"array")
}

/// The string a key or name text is appended to.
fn text_of<'a>(
    capture: Capture,
    stack: &[Frame],
    key: &'a mut String,
    names: &'a mut (String, String),
) -> &'a mut String {
    match capture {
        Capture::Name if stack.len() >= 2 && stack[stack.len() - 2].key == "CFName" => &mut names.0,
        Capture::Name => &mut names.1,
        _ => key,
    }
}

/// Decodes standard base64 (`A–Z a–z 0–9 + /`, `=` padding), skipping the whitespace plists
/// wrap it with. The output is never longer than the input.
pub(super) fn base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut n = 0u32;
    let mut pad = 0u32;
    for (i, &c) in text.iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                if pad > 2 {
                    return Err(format!("too much '=' padding at character {i}"));
                }
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => {
                return Err(format!(
                    "character {:?} at {i} is not base64",
                    char::from(c)
                ))
            }
        };
        if pad > 0 {
            return Err(format!("base64 goes on after its '=' padding at {i}"));
        }
        acc = acc << 6 | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match (n, pad) {
        (0, 0) => {}
        (2, 2) | (2, 0) => out.push((acc >> 4) as u8),
        (3, 1) | (3, 0) => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {
            return Err(format!(
                "{} base64 characters and {pad} '=' do not make whole bytes",
                n
            ))
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        assert_eq!(base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64(b"aGVs\n  bG8h").unwrap(), b"hello!");
        assert_eq!(base64(b"aGk=").unwrap(), b"hi");
        assert_eq!(base64(b"aA==").unwrap(), b"h");
        assert_eq!(base64(b"").unwrap(), b"");
        assert!(base64(b"aGk*").unwrap_err().contains("not base64"));
        assert!(base64(b"a").is_err());
        assert!(base64(b"aGk=aGk=").is_err());
        assert!(base64(b"a===").is_err());
    }

    #[test]
    fn finds_blkx_entries_only_under_resource_fork() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
 <key>other</key><dict><key>blkx</key><array><dict><key>Data</key><data>AAAA</data></dict></array></dict>
 <key>resource-fork</key><dict>
  <key>blkx</key><array>
   <dict><key>CFName</key><string>A &amp; B</string><key>Data</key><data>
     aGVs
     bG8=</data><key>Name</key><string>a</string></dict>
   <dict><key>Name</key><string>second</string><key>Data</key><data>aGk=</data></dict>
  </array>
  <key>plst</key><array><dict><key>Data</key><data>AAAA</data></dict></array>
 </dict>
</dict></plist>"#;
        let e = blkx_entries(xml).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "A & B");
        assert_eq!(e[0].data, b"hello");
        assert_eq!(e[1].name, "second");
        assert_eq!(e[1].data, b"hi");
    }

    #[test]
    fn bad_plists_are_named() {
        let e = blkx_entries(b"<html></html>").unwrap_err().to_string();
        assert!(e.contains("not <plist>"), "{e}");
        let e = blkx_entries(b"<plist><dict>").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let x = br#"<plist><dict><key>resource-fork</key><dict><key>blkx</key><array>
            <dict><key>Data</key><data>!!!!</data></dict></array></dict></dict></plist>"#;
        let e = blkx_entries(x).unwrap_err().to_string();
        assert!(
            e.contains("Data of blkx entry 0") && e.contains("not base64"),
            "{e}"
        );
        let deep = "<plist>".to_string() + &"<a>".repeat(100);
        assert!(blkx_entries(deep.as_bytes()).is_err());
        assert!(blkx_entries(b"<plist></plist>").unwrap().is_empty());
    }
}
