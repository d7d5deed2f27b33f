//! VirtualBox VDI: header facts (type, version, virtual size, block size).

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le32, le64};
use crate::Error;

impl Format {
    /// VirtualBox VDI.
    #[allow(non_upper_case_globals)]
    pub const Vdi: Format = Format::new("vdi", "vdi", Kind::Container);
}

/// Recognises the `<<< ` text banner with the image signature at 0x40.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Vdi
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vdi"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"<<< ") && le32(p.head(), 0x40) == Some(0xBEDA_107F)
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::step(info(&*src)?, src, ctx)
    }
}

/// Header facts of a VDI image.
pub(crate) fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
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
    Ok(ContainerInfo::new(
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
