//! VirtualBox VDI (header version 1.1), static and dynamic, decoded to the virtual disk: a
//! block map of u32 entries, one per block of the disk, each the block's number in the data
//! area (0xFFFFFFFF: never written, reads as zeros; 0xFFFFFFFE: discarded, zeros).
//!
//! A differencing VDI names its parent only by UUID (no file name), so it is refused with an
//! error saying so, as qemu does.

use std::io;
use std::sync::Arc;

use super::info::ContainerInfo;
use super::virt::{read_table, Layout, Run, VirtualDisk};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::util::{le32, le64};
use crate::{Error, ExtentMap};

impl Format {
    /// VirtualBox VDI.
    #[allow(non_upper_case_globals)]
    pub const Vdi: Format = Format::new("vdi", "vdi", Kind::Container);
}

/// The signature at 0x40.
const SIGNATURE: u32 = 0xBEDA_107F;

/// Header version 1.1, the one every VirtualBox since 1.4 and qemu write.
const VERSION_1_1: u32 = 0x0001_0001;

/// Block-map entry of a block never written.
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Block-map entry of a discarded block.
const DISCARDED: u32 = 0xFFFF_FFFE;

/// Most block-map entries taken (64 MiB of map; 16 TiB of disk in the usual 1 MiB blocks).
const MAX_BLOCKS: u64 = 16 << 20;

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
        p.head().starts_with(b"<<< ") && le32(p.head(), 0x40) == Some(SIGNATURE)
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let name = ctx.path().display().to_string();
        let h = Header::read(&*src, &name)?;
        let layout = VdiLayout::open(&*src, &h, &name)?;
        if layout.past_eof > 0 {
            ctx.warn(format!(
                "vdi: {} blocks lie past the end of the file (truncated?); reading them fails",
                layout.past_eof
            ));
        }
        let info = ContainerInfo::new(Format::Vdi, Some(h.disk_size), h.describe());
        let disk = VirtualDisk::new(h.disk_size, Box::new(layout), vec![src.clone()], None);
        Ok(super::disk_step(info, &*src, disk))
    }
}

/// What a VDI header says.
struct Header {
    version: u32,
    image_type: u32,
    offset_bmap: u64,
    offset_data: u64,
    disk_size: u64,
    block_size: u64,
    blocks: u64,
}

impl Header {
    /// Reads and checks the header (`name` for messages).
    fn read(src: &dyn ReadAt, name: &str) -> crate::Result<Header> {
        let h = src.read_upto(0, 512)?;
        let bad = |d: String| Error::corrupt("vdi header", format!("{name}: {d}"));
        if h.len() < 512 {
            return Err(bad(format!("{} bytes, shorter than a header", h.len())));
        }
        let f32 = |o| u64::from(le32(&h, o).unwrap_or(0));
        if le32(&h, 0x40) != Some(SIGNATURE) {
            return Err(bad("bad signature".into()));
        }
        let version = le32(&h, 0x44).unwrap_or(0);
        if version != VERSION_1_1 {
            return Err(Error::Unsupported(format!(
                "{name}: VDI header version {}.{} (1.1 is read)",
                version >> 16,
                version & 0xFFFF
            )));
        }
        let image_type = f32(0x4C) as u32;
        let link = &h[0x1A8..0x1B8];
        let parent = &h[0x1B8..0x1C8];
        if image_type == 4 || link.iter().any(|&b| b != 0) || parent.iter().any(|&b| b != 0) {
            return Err(Error::Unsupported(format!(
                "{name}: differencing VDI (a VirtualBox snapshot): its parent is named only by \
                 UUID {}, not by file; merge it into its parent with VirtualBox (VBoxManage \
                 clonemedium) first",
                uuid(link)
            )));
        }
        if !matches!(image_type, 1 | 2) {
            return Err(Error::Unsupported(format!(
                "{name}: VDI image type {image_type} (1 dynamic and 2 static are read)"
            )));
        }
        let offset_bmap = f32(0x154);
        let offset_data = f32(0x158);
        let sector_size = f32(0x168);
        let mut disk_size = le64(&h, 0x170).unwrap_or(0);
        let block_size = f32(0x178);
        let block_extra = f32(0x17C);
        let blocks = f32(0x180);
        if offset_bmap % 512 != 0 || offset_data % 512 != 0 {
            return Err(bad(format!(
                "block map offset {offset_bmap} or data offset {offset_data} is not a multiple \
                 of 512"
            )));
        }
        if sector_size != 512 {
            return Err(bad(format!("sector size {sector_size} (512 is read)")));
        }
        if !block_size.is_power_of_two() || !(512..=(256 << 20)).contains(&block_size) {
            return Err(bad(format!(
                "block size {block_size}: not a power of two from 512 bytes to 256 MiB"
            )));
        }
        if block_extra != 0 {
            return Err(Error::Unsupported(format!(
                "{name}: VDI blocks with {block_extra} bytes of extra data"
            )));
        }
        // As qemu: VBoxManage convertfromraw can write sizes that are not whole sectors.
        disk_size = disk_size
            .checked_next_multiple_of(512)
            .ok_or_else(|| bad(format!("disk size {disk_size} overflows")))?;
        if disk_size > blocks * block_size {
            return Err(bad(format!(
                "disk size {disk_size} needs more than the {blocks} blocks of {block_size} \
                 bytes the block map has"
            )));
        }
        if blocks > MAX_BLOCKS {
            return Err(bad(format!(
                "{blocks} blocks: more than the {MAX_BLOCKS} this version reads"
            )));
        }
        Ok(Header {
            version,
            image_type,
            offset_bmap,
            offset_data,
            disk_size,
            block_size,
            blocks,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}, version {}.{}, block {}",
            if self.image_type == 2 {
                "static"
            } else {
                "dynamic"
            },
            self.version >> 16,
            self.version & 0xFFFF,
            crate::util::human_bytes(self.block_size)
        )
    }
}

/// A UUID as VirtualBox prints it (its first three fields little-endian).
fn uuid(b: &[u8]) -> String {
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let rev = |r: &[u8]| h(&r.iter().rev().copied().collect::<Vec<u8>>());
    format!(
        "{}-{}-{}-{}-{}",
        rev(&b[0..4]),
        rev(&b[4..6]),
        rev(&b[6..8]),
        h(&b[8..10]),
        h(&b[10..16])
    )
}

/// A VDI disk: its block map.
struct VdiLayout {
    map: Vec<u32>,
    block: u64,
    data: u64,
    disk_size: u64,
    file_size: u64,
    stored: ExtentMap,
    past_eof: u64,
}

impl VdiLayout {
    fn open(src: &dyn ReadAt, h: &Header, name: &str) -> crate::Result<Self> {
        let raw =
            read_table(src, "vdi block map", h.offset_bmap, h.blocks * 4).map_err(|e| match e {
                Error::Corrupt { what, detail } => {
                    Error::corrupt(what, format!("{name}: {detail}"))
                }
                e => e,
            })?;
        let map: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let file_size = src.size();
        let mut stored = ExtentMap::new();
        let mut past_eof = 0;
        let used = h.disk_size.div_ceil(h.block_size) as usize;
        for (i, &e) in map.iter().enumerate().take(used) {
            if e >= DISCARDED {
                continue;
            }
            let s = i as u64 * h.block_size;
            stored.insert(s, (s + h.block_size).min(h.disk_size));
            let at = h.offset_data + u64::from(e) * h.block_size;
            if at + h.block_size.min(h.disk_size - s) > file_size {
                past_eof += 1;
            }
        }
        Ok(VdiLayout {
            map,
            block: h.block_size,
            data: h.offset_data,
            disk_size: h.disk_size,
            file_size,
            stored,
            past_eof,
        })
    }
}

impl Layout for VdiLayout {
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
        let b = (offset / self.block) as usize;
        let skip = offset % self.block;
        let e = self.map.get(b).copied().unwrap_or(UNALLOCATED);
        let kind = |e: u32| match e {
            UNALLOCATED => 0,
            DISCARDED => 1,
            _ => 2,
        };
        let mut len = self.block - skip;
        let mut prev = e;
        for &n in self.map.iter().skip(b + 1).take(63) {
            let same = match kind(e) {
                2 => kind(n) == 2 && u64::from(n) == u64::from(prev) + 1,
                k => kind(n) == k,
            };
            if !same {
                break;
            }
            len += self.block;
            prev = n;
        }
        let len = len.min(self.disk_size.saturating_sub(offset)).max(1);
        let run = match e {
            UNALLOCATED => Run::Parent,
            DISCARDED => Run::Zero,
            _ => {
                let at = self.data + u64::from(e) * self.block + skip;
                if at + len > self.file_size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "corrupt vdi block map: block {b} is at byte {}, past the end of \
                             the file ({} bytes)",
                            at - skip,
                            self.file_size
                        ),
                    ));
                }
                Run::Stored { file: 0, at }
            }
        };
        Ok((run, len))
    }

    fn stored(&self) -> ExtentMap {
        self.stored.clone()
    }

    fn parent_ranges(&self) -> ExtentMap {
        ExtentMap::new()
    }

    fn unit_size(&self) -> u64 {
        self.block
    }
}
