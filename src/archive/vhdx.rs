//! VHDX writer (dynamic), as the VHDX specification (MS-VHDX 1.0) lays it out:
//!
//! ```text
//!   0        file type identifier "vhdxfile" and the creator, "blockwise"
//!   64 KiB   header 1, 128 KiB header 2 (CRC-32C each; no log to replay: log GUID zero)
//!   192 KiB  region table 1, 256 KiB region table 2 (the BAT and the metadata region)
//!   1 MiB    the log (1 MiB, empty)
//!   2 MiB    the metadata region: its table, then file parameters (block size), virtual
//!            disk size, virtual disk id, logical (512) and physical (4096) sector sizes
//!   3 MiB    the BAT, in whole MiB
//!   then     payload blocks of 32 MiB (qemu's default), each on a MiB boundary
//! ```
//!
//! A payload block is allocated when data that is not all zeros first reaches it (blocks
//! arrive in image order, so the file grows at its end), and its bytes are written where they
//! go in it; the rest of it is a hole that reads as zeros. Its BAT entry says
//! `PAYLOAD_BLOCK_FULLY_PRESENT`; a block holding mapped bytes that are all zero says
//! `PAYLOAD_BLOCK_ZERO` (it reads as zeros, without a byte in the file); a block of free space
//! only `PAYLOAD_BLOCK_NOT_PRESENT`. Sector bitmap entries (one after every chunk of
//! blocks) are not present: the disk has no parent. Structures are written at the end, when
//! the BAT is known. GUIDs are random and stored as the specification's little-endian GUID.

use std::io;

use super::codec::{ArchiveWriter, Encoded};
use super::plan::DataSegment;
use super::sparse::nonzero_runs;
use super::vhd::random_id;
use crate::io::WriteAt;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Payload block size.
const BLOCK: u64 = 32 * MIB;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
const HEADER_1: u64 = 64 * KIB;
const HEADER_2: u64 = 128 * KIB;
const REGION_1: u64 = 192 * KIB;
const REGION_2: u64 = 256 * KIB;
const LOG_AT: u64 = MIB;
const LOG_LEN: u64 = MIB;
const META_AT: u64 = 2 * MIB;
const META_LEN: u64 = MIB;
const BAT_AT: u64 = 3 * MIB;
/// Largest VHDX disk (the specification's 64 TiB).
const MAX_SIZE: u64 = 64 << 40;

const BAT_REGION: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_REGION: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const VIRTUAL_DISK_ID: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR_SIZE: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR_SIZE: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";

const NOT_PRESENT: u64 = 0;
const ZERO: u64 = 2;
const FULLY_PRESENT: u64 = 6;

/// A GUID written as text, in the specification's byte order (the first three fields little
/// endian, the last eight bytes as written).
fn guid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'-')
        .collect::<Vec<u8>>()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ASCII"), 16).expect("hex"))
        .collect();
    let mut g = [0u8; 16];
    g.copy_from_slice(&hex);
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// Stores the CRC-32C of `b` (computed with the field zero) at `b[4..8]`.
fn seal(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c::crc32c(b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

/// Lays out a dynamic VHDX as data arrive in image order.
pub(crate) struct VhdxWriter {
    size: u64,
    /// Payload BAT entries, one per block (sector bitmap entries are added when written).
    blocks: Vec<u64>,
    /// Where the next block goes.
    next: u64,
    bat_len: u64,
}

impl VhdxWriter {
    /// A writer for an image of `image_size` bytes (rounded up to whole 512-byte sectors).
    pub(crate) fn new(image_size: u64) -> crate::Result<Self> {
        let size = image_size.div_ceil(LOGICAL_SECTOR) * LOGICAL_SECTOR;
        if size > MAX_SIZE {
            return Err(crate::Error::Unsupported(format!(
                "{image_size} bytes is larger than a VHDX can be (64 TiB)"
            )));
        }
        let blocks = size.div_ceil(BLOCK);
        let bat_len = (Self::bat_entries(blocks) * 8).div_ceil(MIB).max(1) * MIB;
        Ok(VhdxWriter {
            size,
            blocks: vec![NOT_PRESENT; blocks as usize],
            next: BAT_AT + bat_len,
            bat_len,
        })
    }

    /// Payload blocks per sector bitmap block.
    fn chunk_ratio() -> u64 {
        (1u64 << 23) * LOGICAL_SECTOR / BLOCK
    }

    /// BAT entries of a disk without parent of `blocks` payload blocks: a sector bitmap entry
    /// follows every chunk of blocks but the last.
    fn bat_entries(blocks: u64) -> u64 {
        blocks + blocks.saturating_sub(1) / Self::chunk_ratio()
    }

    /// Where image offset `at` lives in the file, allocating its block if needed.
    fn place(&mut self, at: u64) -> u64 {
        let b = (at / BLOCK) as usize;
        if self.blocks[b] & 7 != FULLY_PRESENT {
            self.blocks[b] = FULLY_PRESENT | (self.next / MIB) << 20;
            self.next += BLOCK;
        }
        (self.blocks[b] >> 20) * MIB + at % BLOCK
    }

    fn header(seq: u64, file_write: [u8; 16], data_write: [u8; 16]) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&file_write);
        h[32..48].copy_from_slice(&data_write);
        // Log GUID 48..64 zero: nothing to replay. Log version 0, version 1.
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(LOG_LEN as u32).to_le_bytes());
        h[72..80].copy_from_slice(&LOG_AT.to_le_bytes());
        seal(&mut h);
        h
    }

    fn region_table(&self) -> Vec<u8> {
        let mut r = vec![0u8; 64 * KIB as usize];
        r[0..4].copy_from_slice(b"regi");
        r[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (i, (id, at, len)) in [
            (BAT_REGION, BAT_AT, self.bat_len),
            (METADATA_REGION, META_AT, META_LEN),
        ]
        .into_iter()
        .enumerate()
        {
            let e = 16 + 32 * i;
            r[e..e + 16].copy_from_slice(&guid(id));
            r[e + 16..e + 24].copy_from_slice(&at.to_le_bytes());
            r[e + 24..e + 28].copy_from_slice(&(len as u32).to_le_bytes());
            r[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes()); // required
        }
        seal(&mut r);
        r
    }

    fn metadata(&self, disk_id: [u8; 16]) -> Vec<u8> {
        const IS_VIRTUAL_DISK: u32 = 2;
        const IS_REQUIRED: u32 = 4;
        let mut params = (BLOCK as u32).to_le_bytes().to_vec();
        params.extend_from_slice(&0u32.to_le_bytes()); // not LeaveBlocksAllocated, no parent
        let items: [(&str, Vec<u8>, u32); 5] = [
            (FILE_PARAMETERS, params, IS_REQUIRED),
            (
                VIRTUAL_DISK_SIZE,
                self.size.to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
            (
                VIRTUAL_DISK_ID,
                disk_id.to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
            (
                LOGICAL_SECTOR_SIZE,
                (LOGICAL_SECTOR as u32).to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
            (
                PHYSICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR.to_le_bytes().to_vec(),
                IS_VIRTUAL_DISK | IS_REQUIRED,
            ),
        ];
        let mut m = vec![0u8; 64 * KIB as usize];
        m[0..8].copy_from_slice(b"metadata");
        m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        // Items after the 64 KiB table, each on an 8-byte boundary.
        let mut at = 64 * KIB as usize;
        for (i, (id, value, flags)) in items.iter().enumerate() {
            let e = 32 + 32 * i;
            m[e..e + 16].copy_from_slice(&guid(id));
            m[e + 16..e + 20].copy_from_slice(&(at as u32).to_le_bytes());
            m[e + 20..e + 24].copy_from_slice(&(value.len() as u32).to_le_bytes());
            m[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            m.resize(at + value.len().div_ceil(8) * 8, 0);
            m[at..at + value.len()].copy_from_slice(value);
            at = m.len();
        }
        m
    }
}

fn overlaps(seg: &DataSegment, start: u64, end: u64) -> bool {
    seg.mapped.iter().any(|e| e.start < end && e.end > start)
}

impl ArchiveWriter for VhdxWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        _enc: &Encoded,
    ) -> io::Result<()> {
        // Blocks holding mapped bytes read as zeros at least.
        let first = seg.offset / BLOCK;
        let last = (seg.end().max(1) - 1) / BLOCK;
        for b in first..=last {
            let (s, e) = (b * BLOCK, (b + 1) * BLOCK);
            if self.blocks[b as usize] == NOT_PRESENT && overlaps(seg, s, e) {
                self.blocks[b as usize] = ZERO;
            }
        }
        for (s, e) in nonzero_runs(seg.offset, data) {
            let mut at = seg.offset + s as u64;
            let end = seg.offset + e as u64;
            while at < end {
                let piece_end = end.min((at / BLOCK + 1) * BLOCK);
                let host = self.place(at);
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
        let mut ident = vec![0u8; 64 * KIB as usize];
        ident[0..8].copy_from_slice(b"vhdxfile");
        for (i, u) in "blockwise".encode_utf16().enumerate() {
            ident[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        out.write_all_at(0, &ident)?;
        let (file_write, data_write) = (random_id()?, random_id()?);
        out.write_all_at(HEADER_1, &Self::header(1, file_write, data_write))?;
        out.write_all_at(HEADER_2, &Self::header(2, file_write, data_write))?;
        let regions = self.region_table();
        out.write_all_at(REGION_1, &regions)?;
        out.write_all_at(REGION_2, &regions)?;
        out.write_all_at(META_AT, &self.metadata(random_id()?))?;
        let ratio = Self::chunk_ratio() as usize;
        let mut bat = Vec::with_capacity(self.bat_len as usize);
        for (i, e) in self.blocks.iter().enumerate() {
            if i > 0 && i % ratio == 0 {
                bat.extend_from_slice(&NOT_PRESENT.to_le_bytes());
            }
            bat.extend_from_slice(&e.to_le_bytes());
        }
        bat.resize(self.bat_len as usize, 0);
        out.write_all_at(BAT_AT, &bat)?;
        // The log region and the unwritten parts of blocks are holes.
        out.set_len(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        let g = guid(BAT_REGION);
        assert_eq!(&g[..8], &[0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42]);
        assert_eq!(&g[8..], &[0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
    }

    #[test]
    fn bat_interleaves_bitmap_entries() {
        assert_eq!(VhdxWriter::chunk_ratio(), 128);
        assert_eq!(VhdxWriter::bat_entries(128), 128);
        assert_eq!(VhdxWriter::bat_entries(129), 130);
        assert!(VhdxWriter::new(65 << 40).is_err());
    }
}
