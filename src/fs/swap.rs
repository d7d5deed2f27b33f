//! Linux swap areas and the hibernation images written into them.
//!
//! The signature sits in the last 10 bytes of the first page, so it is looked for at the end
//! of every page size Linux uses. Version 1 areas carry a header at byte 1024 (version,
//! last page, UUID, label) in the byte order of the machine that made them. A hibernation
//! image replaces the swap signature; `blkid` calls those "swsuspend".

use super::{FsInfo, FsType};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, le32, uuid_be};

const PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

/// Signatures at `page_size - 10` that mean "a suspended system image lives here".
const HIBERNATION_MAGICS: [&[u8]; 4] = [b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001"];
/// TuxOnIce writes its own header at byte 0.
const TUXONICE_MAGIC: &[u8] = b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c";

enum Kind {
    V0,
    V1,
    Hibernated,
    TuxOnIce,
}

/// Recognises a swap area (or a hibernation image in one) in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 4096 {
        return Ok(None);
    }
    let head = dev.read_vec(0, 4096)?;
    let mut found = None;
    if head.starts_with(TUXONICE_MAGIC) {
        found = Some((Kind::TuxOnIce, 4096));
    }
    for ps in PAGE_SIZES {
        if found.is_some() || dev.size() < ps {
            break;
        }
        let mut tail = [0u8; 10];
        dev.read_exact_at(ps - 10, &mut tail)?;
        if &tail == b"SWAPSPACE2" {
            found = Some((Kind::V1, ps));
        } else if &tail == b"SWAP-SPACE" {
            found = Some((Kind::V0, ps));
        } else if HIBERNATION_MAGICS.iter().any(|m| tail.starts_with(m)) {
            found = Some((Kind::Hibernated, ps));
        }
    }
    let Some((kind, page)) = found else {
        return Ok(None);
    };

    let mut info = FsInfo {
        block_size: Some(page as u32),
        ..FsInfo::new(FsType::Swap)
    };
    if let Kind::V0 = kind {
        info.version = Some("0".into());
        return Ok(Some(info));
    }
    // Header fields are in the creating machine's byte order: version 1 tells which.
    let g32: fn(&[u8], usize) -> Option<u32> = match (le32(&head, 1024), be32(&head, 1024)) {
        (Some(1), _) => le32,
        (_, Some(1)) => be32,
        _ if matches!(kind, Kind::V1) => {
            // blkid ignores a SWAPSPACE2 area whose header version it does not know.
            return Ok(None);
        }
        _ => le32,
    };
    match kind {
        Kind::V1 => info.version = Some("1".into()),
        Kind::TuxOnIce => {
            info.fs_type = FsType::Swsuspend;
            info.version = Some("tuxonice".into());
        }
        _ => {
            info.fs_type = FsType::Swsuspend;
            info.version = Some("1".into());
        }
    }
    if !matches!(kind, Kind::V1) {
        info.features.push("hibernated".into());
        info.warnings.push(
            "swap holds a hibernation image: resuming from it after writing this volume elsewhere \
             loses the suspended session; the whole area counts as used"
                .into(),
        );
    }
    let mut uuid = [0u8; 16];
    if let Some(b) = head.get(1036..1052) {
        uuid.copy_from_slice(b);
    }
    if uuid != [0; 16] {
        info.uuid = Some(uuid_be(&uuid));
    }
    if matches!(kind, Kind::V1) {
        let l = head.get(1052..1068).unwrap_or(&[]);
        let end = l.iter().position(|&c| c == 0).unwrap_or(l.len());
        let s = String::from_utf8_lossy(&l[..end]).trim_end().to_string();
        info.label = (!s.is_empty()).then_some(s);

        let last_page = u64::from(g32(&head, 1028).unwrap_or(0));
        // Pages 0..=last_page belong to the area (page 0 is this header).
        match last_page.checked_add(1).and_then(|n| n.checked_mul(page)) {
            Some(bytes) => {
                info.declare_size(bytes, dev.size());
            }
            None => info.warnings.push("swap last_page overflows".into()),
        }
        if last_page == 0 {
            info.warnings
                .push("swap header says the area has no pages: corrupt".into());
        }
    }
    Ok(Some(info))
}

/// The bytes of a swap area that must be kept: the first page, which holds the signature, the
/// version-1 header (UUID, label, last page) and its bad-page list. Every other page holds
/// swapped-out memory that is dead once the system that wrote it is gone.
///
/// Hibernation images are refused (the caller then keeps everything): they are live data.
pub(crate) fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let info = probe(dev)?.ok_or_else(|| crate::Error::Format("no swap signature found".into()))?;
    if info.fs_type != FsType::Swap {
        return Err(crate::Error::Unsupported(format!(
            "{} holds a hibernation image, every page is live",
            info.fs_type
        )));
    }
    let page = u64::from(info.block_size.unwrap_or(4096));
    Ok(super::Usage {
        used: crate::extent::ExtentMap::single(0, page.min(dev.size())),
        from_fs: true,
        warnings: Vec::new(),
        ..Default::default()
    })
}
