//! Sparse raw writer: the image at its own offsets, with unmapped space left as holes.
//!
//! Mapped 4 KiB blocks that are entirely zero are not written either: in a file a hole reads
//! back as zeros, so this loses nothing, and journals and inode tables then cost no disk.

use std::io;

use super::codec::{ArchiveWriter, Encoded};
use super::plan::DataSegment;
use crate::io::WriteAt;

/// Granularity of the all-zero test (the usual filesystem block, so holes can be punched).
const BLOCK: usize = 4096;

/// Writes mapped data at its offset and leaves unmapped space as holes.
#[derive(Default)]
pub(crate) struct SparseWriter;

impl SparseWriter {
    /// A writer for one sparse raw image.
    pub(crate) fn new() -> Self {
        SparseWriter
    }
}

impl ArchiveWriter for SparseWriter {
    fn data(
        &mut self,
        out: &mut dyn WriteAt,
        seg: &DataSegment,
        data: &[u8],
        _enc: &Encoded,
    ) -> io::Result<()> {
        for (s, e) in nonzero_runs(seg.offset, data) {
            out.write_all_at(seg.offset + s as u64, &data[s..e])?;
        }
        Ok(())
    }

    fn zeros(&mut self, _out: &mut dyn WriteAt, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn WriteAt, image_size: u64) -> io::Result<()> {
        out.set_len(image_size)
    }
}

/// True if every byte of `b` is zero (compared a machine word at a time).
pub(crate) fn all_zero(b: &[u8]) -> bool {
    // Words of 8 bytes: the compiler vectorises this, where a byte loop with an early exit
    // is several times slower on the GiBs a conversion scans.
    let mut words = b.chunks_exact(8);
    let whole = words.all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0);
    whole && b[b.len() - b.len() % 8..].iter().all(|&x| x == 0)
}

/// The runs of `data` (whose first byte is at image offset `base`) that hold a non-zero byte,
/// as index ranges cut on [`BLOCK`] edges of the image: what a writer leaving zeros unwritten
/// writes (sparse raw, and the containers that allocate only where data is).
pub(crate) fn nonzero_runs(base: u64, data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0usize;
    while i < data.len() {
        let to_boundary = BLOCK - ((base + i as u64) % BLOCK as u64) as usize;
        let n = to_boundary.min(data.len() - i);
        if !all_zero(&data[i..i + n]) {
            match runs.last_mut() {
                Some(r) if r.1 == i => r.1 = i + n,
                _ => runs.push((i, i + n)),
            }
        }
        i += n;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Extent;

    #[test]
    fn zero_blocks_become_holes() {
        let mut f = tempfile::tempfile().unwrap();
        let mut data = vec![0u8; 64 << 10];
        data[5000] = 1; // block 1
        data[40000..41000].fill(9); // blocks 9-10
        let seg = DataSegment {
            offset: 1 << 20,
            len: data.len(),
            mapped: vec![Extent {
                start: 1 << 20,
                end: (1 << 20) + data.len() as u64,
            }],
        };
        let mut w = SparseWriter::new();
        w.data(&mut f, &seg, &data, &Encoded::default()).unwrap();
        w.finish(&mut f, 4 << 20).unwrap();
        let mut back = vec![0u8; 4 << 20];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 0).unwrap();
        assert_eq!(&back[1 << 20..(1 << 20) + data.len()], &data[..]);
        let holes = crate::bmap::file_data_ranges(&f).unwrap();
        assert!(holes.total() <= 3 * 4096, "data ranges: {holes:?}");
    }
}
