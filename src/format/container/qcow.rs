//! QEMU qcow (version 1) and qcow2 (versions 2 and 3) images: header facts (version, virtual
//! size, cluster size, backing file, encryption, incompatible feature bits).

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, be64};
use crate::Error;

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
        super::step(info(&*src)?, src, ctx)
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
        super::step(info(&*src)?, src, ctx)
    }
}

/// Header facts of a qcow or qcow2 image.
pub(crate) fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let h = src.read_upto(0, 104)?;
    let bad = || Error::corrupt("qcow header", "too short");
    let version = be32(&h, 4).ok_or_else(bad)?;
    let format = if version == 1 {
        Format::Qcow
    } else {
        Format::Qcow2
    };
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
    Ok(ContainerInfo::new(format, Some(size), d))
}
