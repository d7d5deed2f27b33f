//! Header facts for VM-disk containers this version does not decode: qcow/qcow2, VHD, VHDX,
//! VMDK, VDI and DMG. Only a fixed VHD is decodable (raw data followed by a footer), and it is
//! exposed as a payload window.

use serde::Serialize;

use crate::format::Format;
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, be64, guid_le, le32, le64};
use crate::Error;

/// What a container header says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// The container format.
    pub format: Format,
    /// Size of the disk it describes, if the header says.
    pub virtual_size: Option<u64>,
    /// Human-readable facts ("version 3, cluster 64 KiB, backing file").
    pub detail: String,
    /// `(offset, len)` of raw disk bytes inside the file, when the container stores them as is.
    pub payload: Option<(u64, u64)>,
}

fn info(format: Format, virtual_size: Option<u64>, detail: String) -> ContainerInfo {
    ContainerInfo {
        format,
        virtual_size,
        detail,
        payload: None,
    }
}

/// Reads the header facts of `src`, which [`sniff`](super::sniff::sniff) identified as `format`.
pub fn inspect(src: &dyn ReadAt, format: Format) -> crate::Result<ContainerInfo> {
    match format {
        Format::Qcow | Format::Qcow2 => qcow(src, format),
        Format::Vhd => vhd(src),
        Format::Vhdx => vhdx(src),
        Format::VmdkSparse => vmdk_sparse(src),
        Format::VmdkDescriptor => {
            let t = src.read_upto(0, 64 << 10)?;
            Ok(vmdk_descriptor(
                &String::from_utf8_lossy(&t),
                Format::VmdkDescriptor,
            ))
        }
        Format::Vdi => vdi(src),
        Format::Dmg => dmg(src),
        f => Err(Error::Format(format!(
            "{} is not a container format",
            f.name()
        ))),
    }
}

fn qcow(src: &dyn ReadAt, format: Format) -> crate::Result<ContainerInfo> {
    let h = src.read_upto(0, 104)?;
    let bad = || Error::corrupt("qcow header", "too short");
    let version = be32(&h, 4).ok_or_else(bad)?;
    let backing_off = be64(&h, 8).ok_or_else(bad)?;
    let backing_len = be32(&h, 16).ok_or_else(bad)?;
    let (size, cluster_bits, crypt) = if version == 1 {
        (
            be64(&h, 24).ok_or_else(bad)?,
            u32::from(*h.get(32).ok_or_else(bad)?),
            be32(&h, 36).ok_or_else(bad)?,
        )
    } else {
        (
            be64(&h, 24).ok_or_else(bad)?,
            be32(&h, 20).ok_or_else(bad)?,
            be32(&h, 32).ok_or_else(bad)?,
        )
    };
    let mut d = format!("version {version}");
    if (9..=21).contains(&cluster_bits) {
        d += &format!(
            ", cluster {}",
            crate::util::human_bytes(1u64 << cluster_bits)
        );
    } else {
        d += &format!(", implausible cluster bits {cluster_bits}");
    }
    if backing_off != 0 && backing_len > 0 {
        let name = if backing_len <= 1023 {
            src.read_upto(backing_off, backing_len as usize)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        d += &format!(", backing file {name:?} (differencing image)");
    }
    match crypt {
        0 => {}
        1 => d += ", encrypted (AES)",
        2 => d += ", encrypted (LUKS)",
        m => d += &format!(", encryption method {m}"),
    }
    if version == 3 {
        if let Some(incompat) = be64(&h, 72) {
            if incompat & 1 != 0 {
                d += ", dirty";
            }
            if incompat & 2 != 0 {
                d += ", marked corrupt";
            }
            if incompat & 4 != 0 {
                d += ", external data file";
            }
            if incompat & 8 != 0 {
                d += ", compression type set";
            }
        }
    }
    Ok(info(format, Some(size), d))
}

/// VHD disk types.
fn vhd_type(t: u32) -> &'static str {
    match t {
        2 => "fixed",
        3 => "dynamic",
        4 => "differencing",
        _ => "unknown type",
    }
}

fn vhd(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let size = src.size();
    // The footer is the last 512 (or, from old tools, 511) bytes; dynamic disks copy it at 0.
    let mut footer = None;
    for at in [size.checked_sub(512), size.checked_sub(511), Some(0)]
        .into_iter()
        .flatten()
    {
        let f = src.read_upto(at, 512)?;
        if f.starts_with(b"conectix") {
            footer = Some((at, f));
            break;
        }
    }
    let Some((at, f)) = footer else {
        return Err(Error::corrupt("vhd", "no conectix footer"));
    };
    let cur = be64(&f, 48).ok_or_else(|| Error::corrupt("vhd footer", "too short"))?;
    let ty = be32(&f, 60).unwrap_or(0);
    let mut i = info(Format::Vhd, Some(cur), vhd_type(ty).to_string());
    if ty == 2 && at > 0 {
        // A fixed disk is its raw bytes followed by the footer.
        if cur > at {
            i.detail += &format!(", truncated: {at} data bytes for a {cur}-byte disk");
        }
        // The footer starts at `at`: a truncated disk must not read it as disk data.
        i.payload = Some((0, cur.min(at)));
    }
    if ty == 2 && at == 0 {
        i.detail += ", footer only at the start (copy of a fixed disk?)";
    }
    Ok(i)
}

const VHDX_METADATA_REGION: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const VHDX_VIRTUAL_DISK_SIZE: &str = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";
const VHDX_FILE_PARAMETERS: &str = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";

fn guid_at(b: &[u8], off: usize) -> Option<String> {
    let s: [u8; 16] = b.get(off..off.checked_add(16)?)?.try_into().ok()?;
    Some(guid_le(&s))
}

fn vhdx(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let mut i = info(Format::Vhdx, None, String::new());
    // Region table (primary) at 192 KiB: "regi", checksum, entry count, then 32-byte entries.
    let rt = src.read_upto(192 << 10, 64 << 10)?;
    if !rt.starts_with(b"regi") {
        i.detail = "region table missing".into();
        return Ok(i);
    }
    let count = le32(&rt, 8).unwrap_or(0).min(2047) as usize;
    let mut meta = None;
    for k in 0..count {
        let e = 16 + k * 32;
        if guid_at(&rt, e).as_deref() == Some(VHDX_METADATA_REGION) {
            meta = Some((
                le64(&rt, e + 16).unwrap_or(0),
                le32(&rt, e + 24).unwrap_or(0),
            ));
        }
    }
    let Some((moff, mlen)) = meta else {
        i.detail = "no metadata region".into();
        return Ok(i);
    };
    let mt = src.read_upto(moff, (mlen as usize).min(64 << 10))?;
    if !mt.starts_with(b"metadata") {
        i.detail = "metadata table missing".into();
        return Ok(i);
    }
    let n = usize::from(crate::util::le16(&mt, 10).unwrap_or(0)).min(2047);
    let mut parts = Vec::new();
    for k in 0..n {
        let e = 32 + k * 32;
        let id = guid_at(&mt, e);
        let off = u64::from(le32(&mt, e + 16).unwrap_or(0));
        let Some(at) = moff.checked_add(off) else {
            continue;
        };
        match id.as_deref() {
            Some(VHDX_VIRTUAL_DISK_SIZE) => {
                let v = src.read_upto(at, 8)?;
                i.virtual_size = le64(&v, 0);
            }
            Some(VHDX_FILE_PARAMETERS) => {
                let v = src.read_upto(at, 8)?;
                if let (Some(bs), Some(flags)) = (le32(&v, 0), le32(&v, 4)) {
                    parts.push(format!(
                        "block size {}",
                        crate::util::human_bytes(u64::from(bs))
                    ));
                    if flags & 1 != 0 {
                        parts.push("fixed (blocks preallocated)".into());
                    }
                    if flags & 2 != 0 {
                        parts.push("differencing (has parent)".into());
                    }
                }
            }
            _ => {}
        }
    }
    i.detail = parts.join(", ");
    Ok(i)
}

fn vmdk_sparse(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let h = src.read_upto(0, 512)?;
    let bad = || Error::corrupt("vmdk header", "too short");
    if h.starts_with(b"COWD") {
        let sectors = le32(&h, 12).ok_or_else(bad)?;
        return Ok(info(
            Format::VmdkSparse,
            Some(u64::from(sectors) * 512),
            "ESX COWD sparse extent".into(),
        ));
    }
    let version = le32(&h, 4).ok_or_else(bad)?;
    let capacity = le64(&h, 12).ok_or_else(bad)?;
    let grain = le64(&h, 20).ok_or_else(bad)?;
    let doff = le64(&h, 28).ok_or_else(bad)?;
    let dlen = le64(&h, 36).ok_or_else(bad)?;
    let mut d = format!("version {version}, grain {} sectors", grain);
    if doff > 0 && dlen > 0 && dlen <= 128 {
        if let (Some(o), Some(l)) = (doff.checked_mul(512), dlen.checked_mul(512)) {
            let t = src.read_upto(o, l as usize)?;
            let t: Vec<u8> = t.into_iter().take_while(|&b| b != 0).collect();
            let di = vmdk_descriptor(&String::from_utf8_lossy(&t), Format::VmdkSparse);
            if !di.detail.is_empty() {
                d += ", ";
                d += &di.detail;
            }
        }
    }
    let compressed = le16_at(&h, 77) == Some(1);
    if compressed {
        d += ", stream-optimized (deflate grains)";
    }
    Ok(info(Format::VmdkSparse, capacity.checked_mul(512), d))
}

fn le16_at(b: &[u8], off: usize) -> Option<u16> {
    crate::util::le16(b, off)
}

/// Facts from a VMDK text descriptor: createType, extents and their total size.
pub fn vmdk_descriptor(text: &str, format: Format) -> ContainerInfo {
    let mut create = None;
    let mut extents = Vec::new();
    let mut sectors: u64 = 0;
    let mut overflow = false;
    for line in text.lines().take(10_000) {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("createType") {
            create = Some(
                v.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string(),
            );
        }
        let mut w = l.split_whitespace();
        if let (Some(access), Some(n), Some(kind)) = (w.next(), w.next(), w.next()) {
            if matches!(access, "RW" | "RDONLY" | "NOACCESS") {
                if let Ok(n) = n.parse::<u64>() {
                    match sectors.checked_add(n) {
                        Some(s) => sectors = s,
                        None => overflow = true,
                    }
                    let file = l.split('"').nth(1).unwrap_or("");
                    if extents.len() < 16 {
                        extents.push(format!("{kind} {file:?}"));
                    }
                }
            }
        }
    }
    let mut parts = Vec::new();
    if let Some(c) = create {
        parts.push(format!("createType {c}"));
    }
    if !extents.is_empty() {
        parts.push(format!("extents: {}", extents.join(", ")));
    }
    let vs = if extents.is_empty() || overflow {
        None
    } else {
        sectors.checked_mul(512)
    };
    info(format, vs, parts.join(", "))
}

fn vdi(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let h = src.read_upto(0, 0x190)?;
    let bad = || Error::corrupt("vdi header", "too short");
    let version = le32(&h, 0x44).ok_or_else(bad)?;
    let ty = le32(&h, 0x4C).ok_or_else(bad)?;
    let size = le64(&h, 0x170).ok_or_else(bad)?;
    let block = le32(&h, 0x178).ok_or_else(bad)?;
    let tyname = match ty {
        1 => "dynamic",
        2 => "fixed",
        3 => "undo",
        4 => "differencing",
        _ => "unknown type",
    };
    Ok(info(
        Format::Vdi,
        Some(size),
        format!(
            "{tyname}, version {}.{}, block {}",
            version >> 16,
            version & 0xFFFF,
            crate::util::human_bytes(u64::from(block))
        ),
    ))
}

fn dmg(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let size = src.size();
    let at = size
        .checked_sub(512)
        .ok_or_else(|| Error::corrupt("dmg", "shorter than its trailer"))?;
    let k = src.read_vec(at, 512)?;
    let bad = || Error::corrupt("dmg koly trailer", "too short");
    let data_len = be64(&k, 32).ok_or_else(bad)?;
    let xml_len = be64(&k, 224).ok_or_else(bad)?;
    let sectors = be64(&k, 492).ok_or_else(bad)?;
    Ok(info(
        Format::Dmg,
        sectors.checked_mul(512),
        format!("UDIF, data fork {data_len} bytes, {sectors} sectors, plist {xml_len} bytes"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    #[test]
    fn fixed_vhd_payload() {
        let mut v = vec![7u8; 4096 + 512];
        let f = &mut v[4096..];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&4096u64.to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let i = inspect(&MemSource(v), Format::Vhd).unwrap();
        assert_eq!(i.payload, Some((0, 4096)));
        assert_eq!(i.virtual_size, Some(4096));
    }

    #[test]
    fn descriptor() {
        let i = vmdk_descriptor(
            "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"d-flat.vmdk\" 0\n",
            Format::VmdkDescriptor,
        );
        assert_eq!(i.virtual_size, Some(2048 * 512));
        assert!(i.detail.contains("monolithicFlat"), "{}", i.detail);
    }

    #[test]
    fn short_headers_do_not_panic() {
        for f in [
            Format::Qcow2,
            Format::Qcow,
            Format::Vhd,
            Format::Vhdx,
            Format::VmdkSparse,
            Format::Vdi,
            Format::Dmg,
        ] {
            for n in [0usize, 4, 100, 600] {
                let _ = inspect(&MemSource(vec![0xFF; n]), f);
            }
        }
    }
}
