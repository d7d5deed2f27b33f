//! Reading bmap files of every version (1.0 to 2.0), validating everything.
//!
//! A bmap decides which blocks get written, so a damaged or tampered one must be refused with
//! a clear reason, never half-used: the file checksum (1.3+), the counts, the checksum lengths,
//! and the ranges (ascending, disjoint, inside the image) are all checked.

use quick_xml::events::Event;
use quick_xml::Reader;
use sha2::{Digest, Sha256};

use super::model::{Bmap, BmapRange, ChecksumType};
use crate::Error;

/// Largest bmap file accepted (a bmap of a 2 TiB image with a million ranges is ~100 MiB).
pub(crate) const MAX_BMAP_BYTES: usize = 256 << 20;

fn bad(detail: impl Into<String>) -> Error {
    Error::corrupt("bmap file", detail)
}

fn num(field: &str, v: Option<String>) -> crate::Result<u64> {
    let v = v.ok_or_else(|| bad(format!("<{field}> is missing")))?;
    v.trim()
        .parse::<u64>()
        .map_err(|_| bad(format!("<{field}> is not a number: {:?}", v.trim())))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Parses and validates a bmap file's bytes.
pub fn parse(data: &[u8]) -> crate::Result<Bmap> {
    if data.len() > MAX_BMAP_BYTES {
        return Err(bad(format!("{} bytes is too large for a bmap", data.len())));
    }
    let text = std::str::from_utf8(data).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    let mut reader = Reader::from_str(text);
    let mut version: Option<String> = None;
    let mut fields: std::collections::HashMap<&'static str, String> = Default::default();
    let mut ranges: Vec<BmapRange> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut range_ck: Option<String> = None;
    let mut range_text = String::new();
    let mut saw_blockmap = false;
    loop {
        let ev = reader.read_event().map_err(|e| {
            bad(format!(
                "not valid XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if stack.is_empty() {
                    if name != "bmap" {
                        return Err(bad(format!("root element is <{name}>, not <bmap>")));
                    }
                    for a in e.attributes().flatten() {
                        if a.key.as_ref() == b"version" {
                            version = Some(String::from_utf8_lossy(&a.value).into_owned());
                        }
                    }
                }
                if name == "BlockMap" {
                    saw_blockmap = true;
                }
                if name == "Range" {
                    range_ck = None;
                    range_text.clear();
                    for a in e.attributes().flatten() {
                        let k = a.key.as_ref();
                        if k == b"chksum" || k == b"sha1" {
                            range_ck =
                                Some(String::from_utf8_lossy(&a.value).trim().to_lowercase());
                        }
                    }
                }
                stack.push(name);
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if name == "Range" {
                    return Err(bad("empty <Range/> element"));
                }
            }
            Event::Text(t) => {
                let s = t
                    .decode()
                    .map_err(|e| bad(format!("bad text: {e}")))?
                    .into_owned();
                match stack.last().map(String::as_str) {
                    Some("Range") => range_text.push_str(&s),
                    Some(tag) if stack.len() == 2 => {
                        let key = match tag {
                            "ImageSize" => "ImageSize",
                            "BlockSize" => "BlockSize",
                            "BlocksCount" => "BlocksCount",
                            "MappedBlocksCount" => "MappedBlocksCount",
                            "ChecksumType" => "ChecksumType",
                            "BmapFileChecksum" => "BmapFileChecksum",
                            "BmapFileSHA1" => "BmapFileSHA1",
                            _ => "",
                        };
                        if !key.is_empty() {
                            fields.entry(key).or_default().push_str(&s);
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if name == "Range" {
                    let t = range_text.trim();
                    let (first, last) = match t.split_once('-') {
                        Some((a, b)) => (a.trim(), b.trim()),
                        None => (t, t),
                    };
                    let first: u64 = first
                        .parse()
                        .map_err(|_| bad(format!("range {t:?} is not a block number or range")))?;
                    let last: u64 = last
                        .parse()
                        .map_err(|_| bad(format!("range {t:?} is not a block number or range")))?;
                    ranges.push(BmapRange {
                        first,
                        last,
                        checksum: range_ck.take(),
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad("file ends inside an element (truncated?)"));
    }
    let version = version.ok_or_else(|| bad("no <bmap version=...> root element"))?;
    let (major, minor) = version
        .trim()
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| bad(format!("version {version:?} is not major.minor")))?;
    if major > 2 || major == 0 {
        return Err(Error::Unsupported(format!("bmap format version {version}")));
    }
    if !saw_blockmap {
        return Err(bad("<BlockMap> is missing"));
    }
    let new_style = major == 2 || (major == 1 && minor == 4);
    let (checksum_type, file_ck) = if new_style {
        let t = fields
            .remove("ChecksumType")
            .ok_or_else(|| bad("<ChecksumType> is missing"))?;
        let t = match t.trim().to_ascii_lowercase().as_str() {
            "sha256" => ChecksumType::Sha256,
            "sha1" => ChecksumType::Sha1,
            other => return Err(Error::Unsupported(format!("bmap checksum type {other:?}"))),
        };
        (Some(t), fields.remove("BmapFileChecksum"))
    } else if major == 1 && minor == 3 {
        (Some(ChecksumType::Sha1), fields.remove("BmapFileSHA1"))
    } else {
        // 1.0-1.2: optional sha1 range attributes, no file checksum.
        let any = ranges.iter().any(|r| r.checksum.is_some());
        (any.then_some(ChecksumType::Sha1), None)
    };

    // The whole-file checksum: the digest computed over the file with its own hex zeroed.
    if let (Some(t), true) = (checksum_type, major > 1 || minor >= 3) {
        let tag = if new_style {
            "BmapFileChecksum"
        } else {
            "BmapFileSHA1"
        };
        let want = file_ck
            .ok_or_else(|| bad(format!("<{tag}> is missing")))?
            .trim()
            .to_ascii_lowercase();
        if !is_hex(&want, t.hex_len()) {
            return Err(bad(format!("<{tag}> is not a {} digest", t.name())));
        }
        let open = format!("<{tag}>");
        let at = text
            .find(&open)
            .and_then(|p| text[p..].find(&want).map(|q| p + q))
            .or_else(|| {
                let p = text.find(&open)?;
                text[p..].to_ascii_lowercase().find(&want).map(|q| p + q)
            })
            .ok_or_else(|| bad(format!("cannot locate <{tag}> value")))?;
        let mut zeroed = data.to_vec();
        zeroed[at..at + want.len()].fill(b'0');
        let got = match t {
            ChecksumType::Sha256 => crate::checksum::hex(&Sha256::digest(&zeroed)),
            ChecksumType::Sha1 => crate::checksum::hex(&sha1::Sha1::digest(&zeroed)),
        };
        if got != want {
            return Err(bad(format!(
                "file checksum mismatch: the bmap was modified or damaged (<{tag}> says {want}, contents hash to {got})"
            )));
        }
    }

    let image_size = num("ImageSize", fields.remove("ImageSize"))?;
    let block_size = num("BlockSize", fields.remove("BlockSize"))?;
    let blocks_count = num("BlocksCount", fields.remove("BlocksCount"))?;
    let mapped_blocks = num("MappedBlocksCount", fields.remove("MappedBlocksCount"))?;
    if block_size == 0 || block_size > 1 << 30 {
        return Err(bad(format!("block size {block_size} is not sensible")));
    }
    if blocks_count != image_size.div_ceil(block_size) {
        return Err(bad(format!(
            "BlocksCount {blocks_count} does not match ImageSize {image_size} / BlockSize {block_size}"
        )));
    }
    // Ranges: ascending, disjoint, inside the image, consistent count and checksums.
    let mut total = 0u64;
    let mut prev_last: Option<u64> = None;
    for r in &ranges {
        if r.first > r.last {
            return Err(bad(format!("range {}-{} runs backwards", r.first, r.last)));
        }
        if r.last >= blocks_count {
            return Err(bad(format!(
                "range {}-{} lies past the image's last block {}",
                r.first,
                r.last,
                blocks_count.saturating_sub(1)
            )));
        }
        if let Some(p) = prev_last {
            if r.first <= p {
                return Err(bad(format!(
                    "range {}-{} overlaps or precedes the previous range (ending at {p})",
                    r.first, r.last
                )));
            }
        }
        prev_last = Some(r.last);
        total += r.last - r.first + 1;
        match (checksum_type, &r.checksum) {
            (Some(t), Some(c)) if !is_hex(c, t.hex_len()) => {
                return Err(bad(format!(
                    "range {}-{} has a malformed {} checksum {c:?}",
                    r.first,
                    r.last,
                    t.name()
                )))
            }
            _ => {}
        }
    }
    if total != mapped_blocks {
        return Err(bad(format!(
            "MappedBlocksCount says {mapped_blocks} but the ranges cover {total} blocks"
        )));
    }
    Ok(Bmap {
        version: version.trim().to_string(),
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        checksum_type,
        ranges,
    })
}
