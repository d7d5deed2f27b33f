//! Disk-image containers: Android sparse images (expanded with random access) and VM disks
//! (qcow/qcow2, VHD, VHDX, VMDK, VDI, DMG), each decoded to its virtual disk through
//! `virt::VirtualDisk` (a fixed VHD as a payload window of the file): one file or folder per
//! format, the reads, unit cache and parent chain written once in `virt.rs`.

use std::sync::Arc;

use crate::format::driver::{Layer, OpenCtx, Step};
use crate::io::{ReadAt, Slice};

pub mod android_sparse;
pub mod dmg;
pub(crate) mod info;
pub(crate) mod qcow;
pub(crate) mod vdi;
pub mod vhd;
pub(crate) mod vhdx;
pub(crate) mod virt;
pub(crate) mod vmdk;

pub use info::ContainerInfo;

/// The layer of a container decoded to a virtual disk: its header facts as the layer's
/// detail, then the disk.
pub(crate) fn disk_step(info: ContainerInfo, src: &dyn ReadAt, disk: virt::VirtualDisk) -> Step {
    let vs = info.virtual_size.map_or_else(
        || "unknown".to_string(),
        |v| format!("{v} bytes ({})", crate::util::human_bytes(v)),
    );
    let mut detail = format!("virtual size {vs}");
    if !info.detail.is_empty() {
        detail = format!("{detail}, {}", info.detail);
    }
    Step::inner(
        Layer::stored(info.format, src, Some(detail)),
        Arc::new(disk),
    )
}

/// The layer of a VM-disk container: its header facts, then its payload window when it has
/// one, or the end of the chain with a warning that its contents are not decoded.
pub(crate) fn step(
    info: ContainerInfo,
    src: Arc<dyn ReadAt>,
    ctx: &mut OpenCtx<'_>,
) -> crate::Result<Step> {
    let vs = info.virtual_size.map_or_else(
        || "unknown".to_string(),
        |v| format!("{v} bytes ({})", crate::util::human_bytes(v)),
    );
    let mut detail = format!("virtual size {vs}");
    if !info.detail.is_empty() {
        detail = format!("{detail}, {}", info.detail);
    }
    let layer = Layer::stored(info.format, &*src, Some(detail));
    if let Some((off, len)) = info.payload {
        return Ok(Step::inner(layer, Arc::new(Slice::new(src, off, len))));
    }
    ctx.warn(format!(
        "{} container: contents not decoded by this version; virtual size {vs}",
        info.format.name()
    ));
    ctx.set_container(info);
    Ok(Step::end(layer))
}
