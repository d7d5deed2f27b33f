//! VHD writers (Virtual PC / Hyper-V / Azure): fixed and dynamic.
//!
//! A **fixed** VHD is the raw disk followed by a 512-byte footer. Azure takes only fixed VHDs
//! whose virtual size is a whole number of MiB, so the disk is padded with zeros to the next
//! MiB (a note says so when it was not one already). The disk part is written by the sparse
//! raw writer (free space and zero blocks as holes), the footer after it.
//!
//! A **dynamic** VHD is a copy of the footer, the dynamic disk header, the block allocation
//! table (BAT), blocks of 2 MiB each preceded by its sector bitmap, and the footer. A block is
//! allocated when data that is not all zeros first reaches it (blocks arrive in image order,
//! so the file grows at its end); its bytes are written where they go in it, the rest of the
//! block is a hole that reads as zeros. Its bitmap marks every sector present, as Virtual PC
//! and qemu write it. The BAT, header and footers are written at the end, when the layout is
//! known. The virtual size is the disk's rounded up to whole 512-byte sectors.
//!
//! Both footers carry the size in `current_size` and the CHS geometry computed as the VHD
//! specification (appendix "CHS calculation") says; the creator application is `bwse`, which
//! qemu reads by `current_size` (it reads by geometry only for Virtual PC's and its own
//! old `qemu` tag), as Hyper-V and Azure do.

use std::io;

use super::codec::{ArchiveWriter, Encoded};
use super::plan::DataSegment;
use super::sparse::{nonzero_runs, SparseWriter};
use crate::io::WriteAt;

const SECTOR: u64 = 512;
/// Azure's alignment of a fixed VHD's virtual size.
const MIB: u64 = 1 << 20;
/// Block size of our dynamic VHDs (the format's usual one, as Hyper-V and qemu write).
const BLOCK: u64 = 2 << 20;
/// Largest VHD qemu and Hyper-V accept (2040 GiB).
const MAX_SIZE: u64 = 2040 << 30;
const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;
/// Where the dynamic disk header and the BAT go.
const DYN_HEADER_AT: u64 = 512;
const BAT_AT: u64 = 1536;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

/// 16 random bytes (a VHD's unique id, a VHDX's GUIDs).
pub(crate) fn random_id() -> io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b)
}

/// The virtual size of a VHD of `kind` holding an image of `image_size` bytes.
fn virtual_size(image_size: u64, fixed: bool) -> crate::Result<u64> {
    let unit = if fixed { MIB } else { SECTOR };
    let v = image_size.div_ceil(unit) * unit;
    if v > MAX_SIZE {
        return Err(crate::Error::Unsupported(format!(
            "{image_size} bytes is larger than a VHD can be (2040 GiB); use VHDX or qcow2"
        )));
    }
    Ok(v)
}

/// Cylinders, heads, sectors per track for `size` bytes, as the VHD specification computes
/// them (its appendix, step by step).
pub(crate) fn chs(size: u64) -> (u16, u8, u8) {
    let mut total = size / SECTOR;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// Ones' complement of the byte sum: the checksum of a footer and of a dynamic header.
fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)))
}

/// A footer for a disk of `size` bytes.
fn footer(disk_type: u32, size: u64, data_offset: u64, uid: &[u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    f[24..28].copy_from_slice(&(now.saturating_sub(VHD_EPOCH) as u32).to_be_bytes());
    f[28..32].copy_from_slice(b"bwse");
    f[32..36].copy_from_slice(&0x0000_0001u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = chs(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(uid);
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Fixed VHD: the sparse raw writer's disk, padded to whole MiB, then the footer.
pub(crate) struct VhdFixedWriter {
    disk: SparseWriter,
    size: u64,
    uid: [u8; 16],
}

impl VhdFixedWriter {
    /// A writer for an image of `image_size` bytes.
    pub(crate) fn new(image_size: u64) -> crate::Result<Self> {
        Ok(VhdFixedWriter {
            disk: SparseWriter::new(),
            size: virtual_size(image_size, true)?,
            uid: random_id()?,
        })
    }
}

impl ArchiveWriter for VhdFixedWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        enc: &Encoded,
    ) -> io::Result<()> {
        self.disk.data(out, seg, data, enc)
    }

    fn zeros(&mut self, out: &mut dyn WriteAt, offset: u64, len: u64) -> io::Result<()> {
        self.disk.zeros(out, offset, len)
    }

    fn finish(&mut self, out: &mut dyn WriteAt, _image_size: u64) -> io::Result<()> {
        out.write_all_at(
            self.size,
            &footer(DISK_FIXED, self.size, u64::MAX, &self.uid),
        )?;
        out.set_len(self.size + SECTOR)
    }
}

/// Dynamic VHD: blocks allocated where data is.
pub(crate) struct VhdDynamicWriter {
    size: u64,
    /// Per block: its sector number in the file, or `u32::MAX` while unallocated.
    bat: Vec<u32>,
    /// Where the next block goes.
    next: u64,
    uid: [u8; 16],
}

impl VhdDynamicWriter {
    /// A writer for an image of `image_size` bytes.
    pub(crate) fn new(image_size: u64) -> crate::Result<Self> {
        let size = virtual_size(image_size, false)?;
        let blocks = size.div_ceil(BLOCK);
        let bat_bytes = (blocks * 4).div_ceil(SECTOR) * SECTOR;
        Ok(VhdDynamicWriter {
            size,
            bat: vec![u32::MAX; blocks as usize],
            next: BAT_AT + bat_bytes,
            uid: random_id()?,
        })
    }

    /// Where image offset `at` lives in the file, allocating its block if needed.
    fn place(&mut self, out: &mut dyn WriteAt, at: u64) -> io::Result<u64> {
        let b = (at / BLOCK) as usize;
        if self.bat[b] == u32::MAX {
            let sector = u32::try_from(self.next / SECTOR)
                .map_err(|_| io::Error::other("VHD block past what its BAT can address"))?;
            self.bat[b] = sector;
            // The sector bitmap: every sector of the block is present.
            out.write_all_at(self.next, &[0xFF; SECTOR as usize])?;
            self.next += SECTOR + BLOCK;
        }
        Ok(u64::from(self.bat[b]) * SECTOR + SECTOR + at % BLOCK)
    }

    fn header(&self) -> [u8; 1024] {
        let mut h = [0u8; 1024];
        h[0..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[16..24].copy_from_slice(&BAT_AT.to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        h[28..32].copy_from_slice(&(self.bat.len() as u32).to_be_bytes());
        h[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        let sum = checksum(&h);
        h[36..40].copy_from_slice(&sum.to_be_bytes());
        h
    }
}

impl ArchiveWriter for VhdDynamicWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        _enc: &Encoded,
    ) -> io::Result<()> {
        for (s, e) in nonzero_runs(seg.offset, data) {
            // A run may cross block edges: each piece goes to its own block.
            let mut at = seg.offset + s as u64;
            let end = seg.offset + e as u64;
            while at < end {
                let piece_end = end.min((at / BLOCK + 1) * BLOCK);
                let host = self.place(out, at)?;
                let i = (at - seg.offset) as usize;
                out.write_all_at(host, &data[i..i + (piece_end - at) as usize])?;
                at = piece_end;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, _out: &mut dyn WriteAt, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn WriteAt, _image_size: u64) -> io::Result<()> {
        // The BAT fills whole sectors; entries past the last block are unused (all ones).
        let mut bat: Vec<u8> = self.bat.iter().flat_map(|s| s.to_be_bytes()).collect();
        bat.resize(bat.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0xFF);
        out.write_all_at(BAT_AT, &bat)?;
        out.write_all_at(DYN_HEADER_AT, &self.header())?;
        let f = footer(DISK_DYNAMIC, self.size, DYN_HEADER_AT, &self.uid);
        out.write_all_at(0, &f)?;
        out.write_all_at(self.next, &f)?;
        out.set_len(self.next + SECTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // Values qemu-img and Hyper-V agree on.
        assert_eq!(chs(128 << 20), (963, 16, 17));
        assert_eq!(chs(1 << 30), (2080, 16, 63));
        assert_eq!(chs(127 << 30).1, 16);
        assert_eq!(chs(2040 << 30), (65535, 16, 255));
    }

    #[test]
    fn footer_checksum_is_ones_complement_of_the_sum() {
        let f = footer(DISK_FIXED, 64 << 20, u64::MAX, &[7; 16]);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut z = f;
        z[64..68].fill(0);
        assert_eq!(stored, checksum(&z));
        assert_eq!(virtual_size((64 << 20) + 1, true).unwrap(), 65 << 20);
        assert_eq!(virtual_size(1000, false).unwrap(), 1024);
        assert!(virtual_size(3 << 40, true).is_err());
    }
}
