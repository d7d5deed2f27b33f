//! LUKS1 and LUKS2 encrypted volume headers.
//!
//! Both start with "LUKS\xba\xbe" and a big-endian version. LUKS2 keeps a second binary header
//! (magic "SKUL\xba\xbe") at one of a few fixed offsets, so a damaged primary can be recovered
//! from it as blkid does. Cipher and payload offset go into `features`; LUKS2 keeps those in
//! its JSON area, which is read with a hard size bound.

use super::info::{FsInfo, FsType};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be16, be32, be64};

const MAGIC1: &[u8] = b"LUKS\xba\xbe";
const MAGIC2: &[u8] = b"SKUL\xba\xbe";
/// Where a LUKS2 secondary header may sit (the primary's size decides which).
const SECONDARY_OFFSETS: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// LUKS2 binary header size; the JSON area follows it.
const BIN_HDR: u64 = 4096;
/// The LUKS2 specification caps the header (binary + JSON) at 4 MiB.
const MAX_HDR: u64 = 4 << 20;

/// NUL-terminated ASCII string field.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

/// Recognises a LUKS volume by its primary header only (what `probe_all` tries first).
pub fn probe_primary(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    let hdr = dev.read_struct_upto(0, 512)?;
    if hdr.len() == 512 && hdr.get(0..6) == Some(MAGIC1) {
        match be16(&hdr, 6) {
            Some(1) => return Ok(Some(luks1(&hdr))),
            Some(2) => return Ok(Some(luks2(dev, &hdr, 0))),
            _ => {}
        }
    }
    Ok(None)
}

/// Recognises a LUKS volume in `dev`, falling back to a LUKS2 secondary header when the
/// primary is damaged (reported in `warnings`).
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if let Some(info) = probe_primary(dev)? {
        return Ok(Some(info));
    }
    for off in SECONDARY_OFFSETS {
        let Ok(h) = dev.read_struct(off, 512) else {
            break;
        };
        if h.get(0..6) == Some(MAGIC2) && be16(&h, 6) == Some(2) && be64(&h, 256) == Some(off) {
            let mut info = luks2(dev, &h, off);
            info.warnings.insert(
                0,
                format!("primary LUKS2 header damaged; using the copy at {off}"),
            );
            return Ok(Some(info));
        }
    }
    Ok(None)
}

fn luks1(h: &[u8]) -> FsInfo {
    let mut info = FsInfo {
        version: Some("1".into()),
        ..FsInfo::new(FsType::CryptoLuks)
    };
    let uuid = cstr(h.get(168..208).unwrap_or_default());
    info.uuid = (!uuid.is_empty()).then_some(uuid);
    let cipher = cstr(h.get(8..40).unwrap_or_default());
    let mode = cstr(h.get(40..72).unwrap_or_default());
    if !cipher.is_empty() {
        info.features.push(format!("cipher={cipher}-{mode}"));
    }
    let hash = cstr(h.get(72..104).unwrap_or_default());
    if !hash.is_empty() {
        info.features.push(format!("hash={hash}"));
    }
    if let Some(off) = be32(h, 104).map(|s| u64::from(s) * 512) {
        info.features.push(format!("payload_offset={off}"));
    }
    info
}

fn luks2(dev: &dyn ReadAt, h: &[u8], at: u64) -> FsInfo {
    let mut info = FsInfo {
        version: Some("2".into()),
        ..FsInfo::new(FsType::CryptoLuks)
    };
    let label = cstr(h.get(24..72).unwrap_or_default());
    info.label = (!label.is_empty()).then_some(label);
    let uuid = cstr(h.get(168..208).unwrap_or_default());
    info.uuid = (!uuid.is_empty()).then_some(uuid);
    let subsystem = cstr(h.get(208..256).unwrap_or_default());
    if !subsystem.is_empty() {
        info.features.push(format!("subsystem={subsystem}"));
    }
    let hdr_size = be64(h, 8).unwrap_or(0);
    if !(BIN_HDR + 4096..=MAX_HDR).contains(&hdr_size) {
        info.warnings.push(format!(
            "implausible LUKS2 header size {hdr_size}; JSON area not read"
        ));
        return info;
    }
    let json_len = (hdr_size - BIN_HDR) as usize;
    let json = match dev.read_struct(at + BIN_HDR, json_len) {
        Ok(j) => j,
        Err(e) => {
            info.warnings
                .push(format!("LUKS2 JSON area unreadable: {}", e.chain()));
            return info;
        }
    };
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    match serde_json::from_slice::<serde_json::Value>(&json[..end]) {
        Ok(v) => {
            // The data segment with the lowest key is the one cryptsetup opens.
            let seg = v
                .get("segments")
                .and_then(|s| s.as_object())
                .and_then(|m| {
                    m.iter()
                        .min_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX))
                })
                .map(|(_, s)| s);
            if let Some(seg) = seg {
                if let Some(c) = seg.get("encryption").and_then(|c| c.as_str()) {
                    info.features.push(format!("cipher={c}"));
                }
                if let Some(o) = seg.get("offset").and_then(|o| o.as_str()) {
                    info.features.push(format!("payload_offset={o}"));
                }
            }
        }
        Err(e) => info
            .warnings
            .push(format!("LUKS2 JSON metadata unparsable: {e}")),
    }
    info
}
