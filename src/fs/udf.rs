//! UDF (ECMA-167 / OSTA UDF), including UDF-bridge discs and 512..4096-byte block sizes.
//!
//! Recognition follows libblkid: a Volume Recognition Sequence at 32 KiB naming NSR02/NSR03,
//! an Anchor Volume Descriptor Pointer at block 256 (or N-1 / N-257) for the first block size
//! that validates, then the Main (else Reserve) Volume Descriptor Sequence. LABEL is the Logical
//! Volume Identifier, UUID is derived from the Volume Set Identifier the way blkid does it, and
//! VERSION is the UDF revision from the logical volume's domain identifier.
//!
//! Descriptor tags record their absolute block number. A later session of a multi-session disc
//! handed to us as its own window therefore shows an anchor at relative block 256 claiming a
//! larger location; the difference is the session start, and all further addresses are
//! translated by it.

use super::{FsInfo, FsType};
use crate::checksum::hex;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32};

const VRS_START: u64 = 32 * 1024;
/// The VRS is a handful of descriptors; this bounds the scan.
const MAX_VRS: u64 = 64;
/// A volume descriptor sequence extent is at least 16 blocks; real ones hold fewer than a dozen
/// descriptors. Bounds the walk whatever the extent length claims.
const MAX_VDS: u32 = 64;

const TAG_PVD: u16 = 1;
const TAG_AVDP: u16 = 2;
const TAG_PD: u16 = 5;
const TAG_LVD: u16 = 6;
const TAG_TD: u16 = 8;

/// Recognises a UDF filesystem in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    // The VRS descriptors are max(block size, 2048) bytes apart, which narrows the block size.
    let (nsr, candidates): (&str, &[u64]) = if let Some(n) = scan_vrs(dev, 2048)? {
        (n, &[512, 1024, 2048, 4096])
    } else if let Some(n) = scan_vrs(dev, 4096)? {
        (n, &[4096])
    } else {
        return Ok(None);
    };

    let Some((bs, shift, main, reserve)) = find_anchor(dev, candidates) else {
        return Ok(None);
    };

    let mut vds = walk_vds(dev, bs, shift, main);
    if vds.pvd.is_none() && vds.lvd.is_none() {
        vds = walk_vds(dev, bs, shift, reserve);
    }
    let mut info = FsInfo {
        block_size: u32::try_from(bs).ok(),
        ..FsInfo::new(FsType::Udf)
    };
    info.features.push(nsr.to_ascii_lowercase());
    if vds.pvd.is_none() && vds.lvd.is_none() {
        info.warnings
            .push("no readable volume descriptors in main or reserve sequence".into());
    }
    if let Some(lvd) = &vds.lvd {
        info.label = dstring(lvd.get(84..212).unwrap_or_default()).filter(|s| !s.is_empty());
        if lvd.get(217..236) == Some(b"*OSTA UDF Compliant".as_slice()) {
            if let Some(rev) = le16(lvd, 240).filter(|&r| r != 0) {
                info.version = Some(format!("{:x}.{:02x}", rev >> 8, rev & 0xff));
            }
        }
    }
    if let Some(pvd) = &vds.pvd {
        if info.label.is_none() {
            info.label = dstring(pvd.get(24..56).unwrap_or_default()).filter(|s| !s.is_empty());
        }
        info.uuid = uuid_from_volset(pvd.get(72..200).unwrap_or_default());
    }
    if let Some(end) = vds.partition_end {
        info.size = end.checked_mul(bs);
    }
    info.warnings.extend(vds.warnings);
    Ok(Some(info))
}

/// Scans the VRS with descriptors `step` bytes apart; returns the NSR identifier if found.
fn scan_vrs(dev: &dyn ReadAt, step: u64) -> crate::Result<Option<&'static str>> {
    let mut nsr = None;
    let mut in_extended = false;
    for i in 0..MAX_VRS {
        let mut id = [0u8; 7];
        if dev.read_at(VRS_START + i * step, &mut id)? < id.len() {
            break;
        }
        match &id[1..6] {
            b"BEA01" => in_extended = true,
            b"NSR02" if in_extended => nsr = Some("NSR02"),
            b"NSR03" if in_extended => nsr = Some("NSR03"),
            b"TEA01" => break,
            b"CD001" | b"CDW02" | b"BOOT2" => {}
            _ => break,
        }
    }
    Ok(nsr)
}

/// Validates a descriptor tag: checksum and identifier. Returns the recorded location.
fn tag(b: &[u8], want_id: u16) -> Option<u32> {
    let t = b.get(..16)?;
    let sum = t
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 4)
        .fold(0u8, |s, (_, &v)| s.wrapping_add(v));
    if sum != t[4] || le16(t, 0)? != want_id {
        return None;
    }
    le32(t, 12)
}

/// An extent: (length in bytes, first block).
type Extent = (u32, u32);

/// Finds a valid anchor; returns block size, session shift in blocks, main and reserve extents.
fn find_anchor(dev: &dyn ReadAt, candidates: &[u64]) -> Option<(u64, u64, Extent, Extent)> {
    for &bs in candidates {
        let blocks = dev.size() / bs;
        let mut spots = vec![256u64];
        if blocks > 257 {
            spots.push(blocks - 1);
            spots.push(blocks - 257);
        }
        for blk in spots {
            let Ok(b) = dev.read_vec(blk.checked_mul(bs)?, 512) else {
                continue;
            };
            let Some(loc) = tag(&b, TAG_AVDP) else {
                continue;
            };
            let Some(shift) = u64::from(loc).checked_sub(blk) else {
                continue;
            };
            let (Some(ml), Some(mb), Some(rl), Some(rb)) =
                (le32(&b, 16), le32(&b, 20), le32(&b, 24), le32(&b, 28))
            else {
                continue;
            };
            return Some((bs, shift, (ml, mb), (rl, rb)));
        }
    }
    None
}

#[derive(Default)]
struct Vds {
    pvd: Option<Vec<u8>>,
    lvd: Option<Vec<u8>>,
    partition_end: Option<u64>,
    warnings: Vec<String>,
}

fn walk_vds(dev: &dyn ReadAt, bs: u64, shift: u64, (len, start): Extent) -> Vds {
    let mut out = Vds::default();
    let count = u32::try_from(u64::from(len) / bs)
        .unwrap_or(u32::MAX)
        .min(MAX_VDS);
    let Some(rel_start) = u64::from(start).checked_sub(shift) else {
        out.warnings.push(format!(
            "volume descriptor sequence at block {start} precedes the session"
        ));
        return out;
    };
    let read_len = bs.min(4096) as usize;
    for i in 0..u64::from(count) {
        let blk = rel_start + i;
        let Some(pos) = blk.checked_mul(bs) else {
            break;
        };
        let Ok(b) = dev.read_vec(pos, read_len) else {
            break;
        };
        let Some(id) = le16(&b, 0) else { break };
        // The tag's own location guards against stale or misplaced blocks.
        let Some(loc) = tag(&b, id) else { break };
        if u64::from(loc) != blk + shift {
            out.warnings.push(format!(
                "descriptor at block {} records location {loc}",
                blk + shift
            ));
            break;
        }
        match id {
            TAG_PVD if out.pvd.is_none() => out.pvd = Some(b),
            TAG_LVD if out.lvd.is_none() => out.lvd = Some(b),
            TAG_PD => {
                if let (Some(s), Some(l)) = (le32(&b, 188), le32(&b, 192)) {
                    let end = (u64::from(s) + u64::from(l)).saturating_sub(shift);
                    out.partition_end = Some(out.partition_end.map_or(end, |e: u64| e.max(end)));
                }
            }
            TAG_TD => break,
            _ => {}
        }
    }
    out
}

/// Decodes an OSTA CS0 dstring (last byte = used length, first byte = compression id).
fn dstring(field: &[u8]) -> Option<String> {
    let (&used, body) = field.split_last()?;
    let used = usize::from(used).min(body.len());
    if used == 0 {
        return Some(String::new());
    }
    cs0(&body[..used])
}

/// Decodes OSTA compressed unicode: id 8 = Latin-1 bytes, 16 = UTF-16BE (254/255 likewise).
fn cs0(b: &[u8]) -> Option<String> {
    let (&cid, chars) = b.split_first()?;
    let s = match cid {
        8 | 254 => chars.iter().map(|&c| c as char).collect(),
        16 | 255 => {
            let u: Vec<u16> = chars
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&u)
        }
        _ => return None,
    };
    Some(s.trim_end_matches('\0').to_string())
}

/// blkid's UUID from the Volume Set Identifier: its first 16 characters (as UTF-8) when they
/// are hex digits; otherwise the hex digits among the first 8 followed by bytes in hex.
fn uuid_from_volset(field: &[u8]) -> Option<String> {
    let (&used, body) = field.split_last()?;
    let used = usize::from(used).min(body.len());
    let s = cs0(body.get(..used)?)?;
    let mut buf = [0u8; 16];
    let bytes = s.as_bytes();
    // blkid converts into a 17-byte buffer, so at most 16 bytes of UTF-8 take part.
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    if n < 8 {
        return None;
    }
    let nonhex = buf
        .iter()
        .position(|c| !c.is_ascii_hexdigit())
        .unwrap_or(16);
    let lower = |b: &[u8]| {
        b.iter()
            .map(|c| c.to_ascii_lowercase() as char)
            .collect::<String>()
    };
    Some(if nonhex < 8 {
        hex(&buf[..8])
    } else if nonhex < 16 {
        format!("{}{}", lower(&buf[..8]), hex(&buf[8..12]))
    } else {
        lower(&buf)
    })
}

/// The bytes of a UDF volume that must be kept: all of them.
///
/// UDF keeps free space in per-partition bitmaps or tables that may be unallocated, virtual
/// (VAT on write-once media) or metadata-partition indirected; reading them right for every
/// profile is not worth the risk for formats that are almost always full optical images.
pub(crate) fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    Ok(super::Usage {
        used: crate::extent::ExtentMap::single(0, dev.size()),
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}
