//! Microsoft VHDX: header facts (virtual size, block size, fixed or differencing) from the
//! region table's metadata region.

use std::sync::Arc;

use super::info::ContainerInfo;
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{guid_le, le32, le64};

impl Format {
    /// Microsoft VHDX.
    #[allow(non_upper_case_globals)]
    pub const Vhdx: Format = Format::new("vhdx", "vhdx", Kind::Container);
}

/// Recognises the `vhdxfile` file type identifier.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["vhdx"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"vhdxfile")
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::step(info(&*src)?, src, ctx)
    }
}

const VHDX_METADATA_REGION: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const VHDX_VIRTUAL_DISK_SIZE: &str = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";
const VHDX_FILE_PARAMETERS: &str = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";

fn guid_at(b: &[u8], off: usize) -> Option<String> {
    let s: [u8; 16] = b.get(off..off.checked_add(16)?)?.try_into().ok()?;
    Some(guid_le(&s))
}

/// Header facts of a VHDX: virtual size and file parameters from its metadata region.
pub(crate) fn info(src: &dyn ReadAt) -> crate::Result<ContainerInfo> {
    let mut i = ContainerInfo::new(Format::Vhdx, None, String::new());
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
