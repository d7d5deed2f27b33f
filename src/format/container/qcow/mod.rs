//! QEMU qcow (version 1) and qcow2 (versions 2 and 3) images, decoded to their virtual disk:
//! the header ([`header`]), the L1/L2 tables turned into runs ([`tables`]), and the disk read
//! through [`VirtualDisk`] with the backing file below it.
//!
//! Read: every cluster size qemu makes (512 B to 2 MiB), compressed clusters (raw deflate;
//! zstd when the version 3 compression type says so), zero clusters, extended L2 entries
//! (32 subclusters each allocated, zero or left to the backing file), and backing chains.
//! Refused, naming the feature: encryption, an external data file, unknown incompatible
//! feature bits.

use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::VirtualDisk;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::ReadAt;
use crate::util::be32;

mod header;
mod tables;

use header::Header;

impl Format {
    /// QEMU qcow version 1.
    #[allow(non_upper_case_globals)]
    pub(crate) const Qcow: Format = Format::new("qcow", "qcow", Kind::Container);
    /// QEMU qcow2 (version 2 or 3).
    #[allow(non_upper_case_globals)]
    pub const Qcow2: Format = Format::new("qcow2", "qcow2", Kind::Container);
}

/// The version field after the `QFI\xfb` magic, if the head has both.
fn version(head: &[u8]) -> Option<u32> {
    head.starts_with(b"QFI\xfb")
        .then(|| be32(head, 4))
        .flatten()
}

/// Recognises qcow version 1.
pub(crate) struct DriverV1;

impl FormatDriver for DriverV1 {
    fn format(&self) -> Format {
        Format::Qcow
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["qcow"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        version(p.head()) == Some(1)
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        open_disk(src, ctx)
    }
}

/// Recognises qcow2 (versions 2 and 3).
pub(crate) struct DriverV2;

impl FormatDriver for DriverV2 {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["qcow2"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        matches!(version(p.head()), Some(2 | 3))
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        open_disk(src, ctx)
    }
}

/// Opens a qcow or qcow2 image as its virtual disk: the header checked, the tables read,
/// the backing file (if any) opened below it.
fn open_disk(src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
    let h = Header::read(&*src)?;
    if h.incompatible & header::DIRTY != 0 {
        ctx.warn(
            "qcow2 image is marked dirty (not closed cleanly): its refcounts may be stale, \
             its data reads as written",
        );
    }
    if h.incompatible & header::CORRUPT != 0 {
        ctx.warn("qcow2 image is marked corrupt by qemu: its tables may be damaged");
    }
    let mut warnings = Vec::new();
    let layout = tables::QcowLayout::build(&h, src.clone(), &mut |w| warnings.push(w))?;
    for w in warnings {
        ctx.warn(w);
    }
    let parent = match &h.backing {
        Some(name) => Some(ctx.open_named("backing file", name)?),
        None => None,
    };
    let format = if h.version == 1 {
        Format::Qcow
    } else {
        Format::Qcow2
    };
    let size = h.disk_size();
    let info = ContainerInfo::new(format, Some(size), h.detail());
    let disk = VirtualDisk::new(size, Box::new(layout), vec![src.clone()], parent);
    Ok(super::disk_step(info, &*src, disk))
}
