//! VMware VMDK: sparse extents (`KDMV`, ESX `COWD`) and text descriptors, header facts only.

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};
use crate::Error;

impl Format {
    /// VMware VMDK sparse extent (KDMV / COWD).
    #[allow(non_upper_case_globals)]
    pub const VmdkSparse: Format =
        Format::new("vmdk-sparse", "vmdk (sparse extent)", Kind::Container);
    /// VMware VMDK text descriptor.
    #[allow(non_upper_case_globals)]
    pub const VmdkDescriptor: Format =
        Format::new("vmdk-descriptor", "vmdk (descriptor)", Kind::Container);
}

/// Largest descriptor read.
const MAX_DESCRIPTOR: usize = 64 << 10;

/// Recognises VMDK sparse extents.
pub(crate) struct SparseDriver;

impl FormatDriver for SparseDriver {
    fn format(&self) -> Format {
        Format::VmdkSparse
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vmdk"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"KDMV") || p.head().starts_with(b"COWD")
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::step(sparse_info(&*src)?, src, ctx)
    }
}

/// Recognises VMDK text descriptors.
pub(crate) struct DescriptorDriver;

impl FormatDriver for DescriptorDriver {
    fn format(&self) -> Format {
        Format::VmdkDescriptor
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vmdk"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"# Disk DescriptorFile")
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let t = src.read_upto(0, MAX_DESCRIPTOR)?;
        let info = descriptor(&String::from_utf8_lossy(&t), Format::VmdkDescriptor);
        super::step(info, src, ctx)
    }
}

/// Header facts of a VMDK sparse extent (and of the descriptor embedded in it).
pub(crate) fn sparse_info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let h = src.read_upto(0, 512)?;
    let bad = || Error::corrupt("vmdk header", "too short");
    if h.starts_with(b"COWD") {
        let sectors = le32(&h, 12).ok_or_else(bad)?;
        return Ok(ContainerInfo::new(
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
            let di = descriptor(&String::from_utf8_lossy(&t), Format::VmdkSparse);
            if !di.detail.is_empty() {
                d += ", ";
                d += &di.detail;
            }
        }
    }
    let compressed = le16(&h, 77) == Some(1);
    if compressed {
        d += ", stream-optimized (deflate grains)";
    }
    Ok(ContainerInfo::new(
        Format::VmdkSparse,
        capacity.checked_mul(512),
        d,
    ))
}

/// Facts from a VMDK text descriptor: createType, extents and their total size.
pub(crate) fn descriptor(text: &str, format: Format) -> ContainerInfo {
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
    ContainerInfo::new(format, vs, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_facts() {
        let i = descriptor(
            "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"d-flat.vmdk\" 0\n",
            Format::VmdkDescriptor,
        );
        assert_eq!(i.virtual_size, Some(2048 * 512));
        assert!(i.detail.contains("monolithicFlat"), "{}", i.detail);
    }
}
