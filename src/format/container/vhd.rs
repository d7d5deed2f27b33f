//! Microsoft VHD (fixed, dynamic or differencing): a 512-byte footer at the end (511 bytes from
//! some old tools), copied to the start of dynamic disks. A fixed disk is its raw bytes
//! followed by the footer, so it is read through.

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, be64};
use crate::Error;

impl Format {
    /// Microsoft VHD (fixed, dynamic or differencing).
    #[allow(non_upper_case_globals)]
    pub const Vhd: Format = Format::new("vhd", "vhd", Kind::Container);
}

const COOKIE: &[u8; 8] = b"conectix";

/// Recognises a VHD by its footer, or by the footer copy that opens a dynamic disk.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vhd"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.tail().is_some_and(|t| self.trailer(t)) || p.head().starts_with(COOKIE)
    }

    fn trailer(&self, last: &[u8]) -> bool {
        let n = last.len();
        // The footer is the last 512 bytes; some old tools wrote only 511.
        (n >= 512 && last[n - 512..].starts_with(COOKIE))
            || (n >= 511 && last[n - 511..].starts_with(COOKIE))
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::step(info(&*src)?, src, ctx)
    }
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

/// Header facts of a VHD, from its footer; a fixed disk gets its payload window.
pub fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
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
    let mut i = ContainerInfo::new(Format::Vhd, Some(cur), vhd_type(ty).to_string());
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
        let i = info(&MemSource(v)).unwrap();
        assert_eq!(i.payload, Some((0, 4096)));
        assert_eq!(i.virtual_size, Some(4096));
    }

    #[test]
    fn trailers() {
        let mut t = vec![0u8; 600];
        assert!(!Driver.trailer(&t));
        t[600 - 512..600 - 504].copy_from_slice(COOKIE);
        assert!(Driver.trailer(&t));
        let mut t = vec![0u8; 511];
        t[..8].copy_from_slice(COOKIE);
        assert!(Driver.trailer(&t));
        assert!(!Driver.trailer(&t[..510]));
    }
}
