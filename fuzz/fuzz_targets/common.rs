//! Helpers shared by the fuzz targets.

/// Returns a copy of `data` with the CRCs of any GPT headers (primary at LBA 1, backup in the
/// last sector, for 512- and 4096-byte sectors) and of the entry arrays they point at
/// recomputed, or `None` if there is no GPT signature to fix. Random mutations almost never
/// keep a CRC32 valid, so without this the fuzzer would rarely get past the header check into
/// the entry and partition parsing.
pub fn fix_gpt_crcs(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let mut changed = false;
    for ss in [512usize, 4096] {
        let mut lbas = vec![1usize];
        if data.len() >= 2 * ss {
            lbas.push(data.len() / ss - 1);
        }
        for lba in lbas {
            let Some(at) = lba.checked_mul(ss) else {
                continue;
            };
            if out.get(at..at + 8) != Some(b"EFI PART".as_slice()) {
                continue;
            }
            let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            let Some(hdr) = out.get(at..at + ss) else {
                continue;
            };
            let hsize = le32(hdr, 12) as usize;
            let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().unwrap());
            let count = le32(hdr, 80) as usize;
            let esize = le32(hdr, 84) as usize;
            // Entry array CRC, if the array lies inside the input.
            let arr = usize::try_from(entries_lba)
                .ok()
                .and_then(|l| l.checked_mul(ss))
                .and_then(|s| Some((s, s.checked_add(count.checked_mul(esize)?)?)));
            if let Some((s, e)) = arr {
                if e <= out.len() && e - s <= 1 << 20 {
                    let c = crc32fast::hash(&out[s..e]);
                    out[at + 88..at + 92].copy_from_slice(&c.to_le_bytes());
                }
            }
            if (92..=ss).contains(&hsize) {
                out[at + 16..at + 20].fill(0);
                let c = crc32fast::hash(&out[at..at + hsize]);
                out[at + 16..at + 20].copy_from_slice(&c.to_le_bytes());
            }
            changed = true;
        }
    }
    changed.then_some(out)
}
