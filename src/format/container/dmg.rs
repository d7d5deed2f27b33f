//! Apple UDIF disk images (DMG): recognised by the `koly` trailer in the last 512 bytes; header
//! facts only.

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::be32;
use crate::util::be64;
use crate::Error;

impl Format {
    /// Apple UDIF disk image (DMG, "koly" trailer).
    #[allow(non_upper_case_globals)]
    pub const Dmg: Format = Format::new("dmg", "dmg (udif)", Kind::Container);
}

/// Recognises a DMG by its trailer.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Dmg
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["dmg"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.tail().is_some_and(|t| self.trailer(t))
    }

    fn trailer(&self, last: &[u8]) -> bool {
        // Version 4, header size 512: the only UDIF trailer there is.
        last.len() >= 512 && {
            let k = &last[last.len() - 512..];
            k.starts_with(b"koly") && be32(k, 4) == Some(4) && be32(k, 8) == Some(512)
        }
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::step(info(&*src)?, src, ctx)
    }
}

/// Header facts of a DMG, from its `koly` trailer.
pub(crate) fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let size = src.size();
    let at = size
        .checked_sub(512)
        .ok_or_else(|| Error::corrupt("dmg", "shorter than its trailer"))?;
    let k = src.read_vec(at, 512)?;
    let bad = || Error::corrupt("dmg koly trailer", "too short");
    let data_len = be64(&k, 32).ok_or_else(bad)?;
    let xml_len = be64(&k, 224).ok_or_else(bad)?;
    let sectors = be64(&k, 492).ok_or_else(bad)?;
    Ok(ContainerInfo::new(
        Format::Dmg,
        sectors.checked_mul(512),
        format!("UDIF, data fork {data_len} bytes, {sectors} sectors, plist {xml_len} bytes"),
    ))
}
