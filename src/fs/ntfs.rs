//! NTFS boot sector probe, with the label and version read from the `$Volume` MFT record.
//!
//! The boot sector gives geometry and the 64-bit serial (`blkid` prints it as 16 uppercase hex
//! digits). The label lives in MFT record 3 (`$Volume`), attribute `$VOLUME_NAME`; the record is
//! protected by an update sequence array whose fixups must be applied before the attributes can
//! be trusted.

use super::FsInfo;
use crate::source::{ReadAt, ReadAtExt};
use crate::util::{le16, le32, le64};

const MFT_RECORD_VOLUME: u64 = 3;
const ATTR_VOLUME_NAME: u32 = 0x60;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_END: u32 = 0xFFFF_FFFF;
/// The update sequence protects the last two bytes of every 512-byte stride, whatever the
/// sector size.
const USA_STRIDE: usize = 512;
/// Largest cluster NTFS allows (Windows 10 1709+).
const MAX_CLUSTER: u64 = 2 << 20;

/// Recognises NTFS in `dev`.
pub fn probe(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let bs = dev.read_vec(0, 512)?;
    if bs.get(3..11) != Some(b"NTFS    ") {
        return Ok(None);
    }
    let b8 = |o: usize| u64::from(bs.get(o).copied().unwrap_or(0));
    let b16 = |o| u64::from(le16(&bs, o).unwrap_or(0));
    let b32 = |o| u64::from(le32(&bs, o).unwrap_or(0));
    // Fields that are FAT geometry elsewhere must be zero here; that is how blkid tells an
    // NTFS boot sector from something merely carrying the name.
    if b16(0x0E) != 0
        || b8(0x10) != 0
        || b16(0x11) != 0
        || b16(0x13) != 0
        || b16(0x16) != 0
        || b32(0x20) != 0
    {
        return Ok(None);
    }
    let sector_size = b16(0x0B);
    if !sector_size.is_power_of_two() || !(256..=4096).contains(&sector_size) {
        return Ok(None);
    }
    let spc_raw = b8(0x0D);
    // Values above 128 encode 2^(256 - v) sectors, for clusters beyond 64 KiB.
    let spc = if spc_raw > 128 {
        let shift = 256 - spc_raw;
        if shift > 31 {
            return Ok(None);
        }
        1u64 << shift
    } else {
        spc_raw
    };
    if !spc.is_power_of_two() {
        return Ok(None);
    }
    let cluster = sector_size * spc;
    if cluster > MAX_CLUSTER {
        return Ok(None);
    }
    // Positive: clusters per record; negative: record is 2^-n bytes.
    let cpr = bs.get(0x40).copied().unwrap_or(0) as i8;
    let record_size = if cpr > 0 {
        cluster * cpr as u64
    } else {
        let shift = u32::from(cpr.unsigned_abs());
        if !(9..=20).contains(&shift) {
            return Ok(None);
        }
        1u64 << shift
    };
    if !record_size.is_power_of_two() || !(256..=(1 << 20)).contains(&record_size) {
        return Ok(None);
    }

    let total_sectors = le64(&bs, 0x28).unwrap_or(0);
    let mft_lcn = le64(&bs, 0x30).unwrap_or(0);
    let serial = le64(&bs, 0x48).unwrap_or(0);

    let mut info = FsInfo {
        fs_type: "ntfs",
        block_size: Some(cluster as u32),
        uuid: (serial != 0).then(|| format!("{serial:016X}")),
        ..Default::default()
    };
    match total_sectors.checked_mul(sector_size) {
        Some(bytes) if total_sectors > 0 => {
            info.declare_size(bytes, dev.size());
        }
        _ => info
            .warnings
            .push(format!("impossible total sector count {total_sectors}")),
    }

    let rec_off = mft_lcn
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(MFT_RECORD_VOLUME.checked_mul(record_size)?));
    let record = match rec_off {
        Some(off) => dev
            .read_vec(off, record_size as usize)
            .map_err(|e| e.to_string())
            .and_then(|mut r| apply_fixups(&mut r).map(|()| r)),
        None => Err("MFT location overflows".to_string()),
    };
    match record {
        Ok(r) => read_volume_attrs(&r, &mut info),
        Err(e) => info
            .warnings
            .push(format!("cannot read $Volume (MFT record 3): {e}")),
    }
    Ok(Some(info))
}

/// Checks and undoes the update sequence: each 512-byte stride ends with the sequence
/// number, and the real bytes are stored in the array.
fn apply_fixups(r: &mut [u8]) -> Result<(), String> {
    if r.get(0..4) != Some(b"FILE") {
        return Err("record has no FILE signature".into());
    }
    let usa_ofs = usize::from(le16(r, 4).unwrap_or(0));
    let usa_count = usize::from(le16(r, 6).unwrap_or(0));
    if usa_count == 0 || (usa_count - 1) * USA_STRIDE > r.len() {
        return Err(format!(
            "update sequence count {usa_count} does not fit the record"
        ));
    }
    let usn = le16(r, usa_ofs).ok_or("update sequence array outside the record")?;
    for i in 1..usa_count {
        let end = i * USA_STRIDE;
        let fix = le16(r, usa_ofs + 2 * i).ok_or("update sequence array outside the record")?;
        let slot = r.get_mut(end - 2..end).ok_or("fixup outside the record")?;
        if u16::from_le_bytes([slot[0], slot[1]]) != usn {
            return Err(format!(
                "torn write: sector {i} of the record lacks its sequence number"
            ));
        }
        slot.copy_from_slice(&fix.to_le_bytes());
    }
    Ok(())
}

/// Walks the resident attributes of `$Volume` for the label and the NTFS version.
fn read_volume_attrs(r: &[u8], info: &mut FsInfo) {
    let used = (le32(r, 0x18).unwrap_or(0) as usize).min(r.len());
    let mut off = usize::from(le16(r, 0x14).unwrap_or(0));
    // Each attribute is at least 16 bytes, so this bounds the walk even on garbage.
    for _ in 0..r.len() / 16 {
        let Some(ty) = le32(r, off) else { break };
        if ty == ATTR_END {
            break;
        }
        let Some(len) = le32(r, off + 4).map(|l| l as usize) else {
            break;
        };
        if len < 16 || off.checked_add(len).is_none_or(|e| e > used) {
            break;
        }
        let attr = &r[off..off + len];
        let resident = attr.get(8) == Some(&0);
        if resident {
            let vlen = le32(attr, 0x10).unwrap_or(0) as usize;
            let voff = usize::from(le16(attr, 0x14).unwrap_or(0));
            let value = voff.checked_add(vlen).and_then(|e| attr.get(voff..e));
            match (ty, value) {
                (ATTR_VOLUME_NAME, Some(v)) => {
                    let units: Vec<u16> = v
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    let s = String::from_utf16_lossy(&units);
                    if !s.is_empty() {
                        info.label = Some(s);
                    }
                }
                (ATTR_VOLUME_INFORMATION, Some(v)) if v.len() >= 12 => {
                    info.version = Some(format!("{}.{}", v[8], v[9]));
                    if le16(v, 10).unwrap_or(0) & 0x0001 != 0 {
                        info.features.push("dirty".into());
                        info.warnings.push(
                            "volume is marked dirty: it was not cleanly unmounted (run chkdsk)"
                                .into(),
                        );
                    }
                }
                _ => {}
            }
        }
        off += len;
    }
}

const MFT_RECORD_BITMAP: u64 = 6;
const ATTR_ATTRIBUTE_LIST: u32 = 0x20;
const ATTR_DATA: u32 = 0x80;
/// Bitmap bytes read at once.
const BITMAP_CHUNK: u64 = 8 << 20;
/// `$Boot` always spans the first 8 KiB, whatever the cluster size.
const BOOT_FILE_BYTES: u64 = 8192;

/// Boot-sector geometry the used map needs.
struct UsedGeo {
    sector: u64,
    cluster: u64,
    record: u64,
    total_sectors: u64,
    mft_lcn: u64,
}

/// The same checks as [`probe`], but returning only the numbers; `None` if implausible.
fn used_geo(bs: &[u8]) -> Option<UsedGeo> {
    if bs.get(3..11) != Some(b"NTFS    ") {
        return None;
    }
    let sector = u64::from(le16(bs, 0x0B)?);
    if !sector.is_power_of_two() || !(256..=4096).contains(&sector) {
        return None;
    }
    let spc_raw = u64::from(*bs.get(0x0D)?);
    let spc = if spc_raw > 128 {
        1u64.checked_shl(u32::try_from(256 - spc_raw).ok()?)?
    } else {
        spc_raw
    };
    if !spc.is_power_of_two() {
        return None;
    }
    let cluster = sector.checked_mul(spc)?;
    if cluster > MAX_CLUSTER {
        return None;
    }
    let cpr = *bs.get(0x40)? as i8;
    let record = if cpr > 0 {
        cluster.checked_mul(cpr as u64)?
    } else {
        let shift = u32::from(cpr.unsigned_abs());
        if !(9..=20).contains(&shift) {
            return None;
        }
        1u64 << shift
    };
    if !record.is_power_of_two() || !(256..=(1 << 20)).contains(&record) {
        return None;
    }
    Some(UsedGeo {
        sector,
        cluster,
        record,
        total_sectors: le64(bs, 0x28)?,
        mft_lcn: le64(bs, 0x30)?,
    })
}

/// Where `$Bitmap`'s bytes live.
enum BitmapData {
    /// Small volumes may keep the bitmap inside the MFT record.
    Resident(Vec<u8>),
    /// `(lcn, clusters)` runs in VCN order, and how many bytes of them are valid data.
    Runs(Vec<(u64, u64)>, u64),
}

/// The bytes of this NTFS volume that must be kept: every cluster `$Bitmap` marks allocated
/// (which covers `$MFT`, `$MFTMirr`, `$LogFile`, `$Boot` and the bitmap itself), the sectors
/// after the last whole cluster, and the backup boot sector in the sector after the declared
/// volume size.
///
/// Fails (so the caller keeps everything) when `$Bitmap` cannot be read and trusted: a torn
/// MFT record, runs outside the volume, a sparse or compressed bitmap.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::Usage> {
    let corrupt = |d: String| crate::Error::corrupt("NTFS $Bitmap", d);
    let bs = dev.read_vec(0, 512)?;
    let g = used_geo(&bs).ok_or_else(|| corrupt("boot sector is not valid NTFS".into()))?;
    let vol_bytes = g
        .total_sectors
        .checked_mul(g.sector)
        .ok_or_else(|| corrupt("volume size overflows".into()))?;
    let clusters = vol_bytes / g.cluster;
    if clusters == 0 || g.mft_lcn >= clusters {
        return Err(corrupt(format!(
            "MFT at cluster {} of a {clusters}-cluster volume",
            g.mft_lcn
        )));
    }
    // The first 16 MFT records are always contiguous at the start of the MFT.
    let rec_off = g
        .mft_lcn
        .checked_mul(g.cluster)
        .and_then(|o| o.checked_add(MFT_RECORD_BITMAP * g.record))
        .ok_or_else(|| corrupt("MFT offset overflows".into()))?;
    let mut rec = dev.read_vec(rec_off, g.record as usize)?;
    apply_fixups(&mut rec).map_err(|e| corrupt(format!("MFT record 6: {e}")))?;
    if le16(&rec, 0x16).unwrap_or(0) & 1 == 0 {
        return Err(corrupt("MFT record 6 is not in use".into()));
    }
    // NTFS 3.1 records carry their own number; older ones cannot be cross-checked.
    if le16(&rec, 4).unwrap_or(0) >= 0x30 && le32(&rec, 0x2C) != Some(6) {
        return Err(corrupt("MFT record 6 does not say it is record 6".into()));
    }
    let need = clusters.div_ceil(8);
    let data = bitmap_attr(&rec, clusters).map_err(corrupt)?;

    let mut u = super::Usage {
        from_fs: true,
        ..Default::default()
    };
    let mut b = ClusterRuns {
        cluster: g.cluster,
        ..Default::default()
    };
    let mut done = 0u64; // bitmap bytes consumed
    match &data {
        BitmapData::Resident(v) => {
            let n = (v.len() as u64).min(need) as usize;
            b.bytes(0, &v[..n], clusters);
            done = n as u64;
        }
        BitmapData::Runs(runs, valid) => {
            let valid = (*valid).min(need);
            for &(lcn, len) in runs {
                let mut run_left = len.saturating_mul(g.cluster);
                let mut pos = lcn * g.cluster; // checked against the volume by `bitmap_attr`
                while run_left > 0 && done < valid {
                    let n = run_left.min(valid - done).min(BITMAP_CHUNK);
                    let buf = dev.read_vec(pos, n as usize)?;
                    b.bytes(done, &buf, clusters);
                    done += n;
                    pos += n;
                    run_left -= n;
                }
            }
        }
    }
    if done < need {
        u.warnings.push(format!(
            "$Bitmap describes only {done} of {need} bytes; the clusters past it are kept"
        ));
        b.set(done.saturating_mul(8).min(clusters), clusters);
    }
    u.used = b.finish();
    // Sectors after the last whole cluster, and the backup boot sector just past the
    // declared size (the caller clips to the device).
    u.used
        .insert(clusters * g.cluster, vol_bytes.saturating_add(g.sector));
    // Belt and braces for structures the bitmap must already cover: $Boot, record 6 and the
    // bitmap's own clusters. If they were missing the bitmap would be suspect, so say so.
    let mut must = vec![
        (0, BOOT_FILE_BYTES.max(g.cluster)),
        (rec_off, rec_off + g.record),
    ];
    if let BitmapData::Runs(runs, _) = &data {
        must.extend(
            runs.iter()
                .map(|&(l, n)| (l * g.cluster, (l + n) * g.cluster)),
        );
    }
    for (s, e) in must {
        if u.used.covered(s, e) != e - s {
            u.warnings.push(format!(
                "$Bitmap leaves bytes {s}..{e} (NTFS metadata) free; kept anyway"
            ));
            u.used.insert(s, e);
        }
    }
    Ok(u)
}

/// Turns allocated clusters, met in ascending order, into byte extents.
#[derive(Default)]
struct ClusterRuns {
    map: crate::extent::ExtentMap,
    cluster: u64,
    cur: Option<(u64, u64)>,
}

impl ClusterRuns {
    fn set(&mut self, s: u64, e: u64) {
        if e <= s {
            return;
        }
        match &mut self.cur {
            Some((_, ce)) if *ce == s => *ce = e,
            _ => {
                if let Some((cs, ce)) = self.cur.replace((s, e)) {
                    self.map.insert(cs * self.cluster, ce * self.cluster);
                }
            }
        }
    }

    /// Bitmap bytes starting at bitmap byte `at`; bits for clusters `>= clusters` are ignored.
    fn bytes(&mut self, at: u64, buf: &[u8], clusters: u64) {
        for (i, &byte) in buf.iter().enumerate() {
            let c = (at + i as u64) * 8;
            if byte == 0 || c >= clusters {
                continue;
            }
            if byte == 0xFF {
                self.set(c, (c + 8).min(clusters));
                continue;
            }
            for bit in 0..8u64 {
                if byte & (1 << bit) != 0 && c + bit < clusters {
                    self.set(c + bit, c + bit + 1);
                }
            }
        }
    }

    /// The extents; cluster numbers are below the volume's cluster count, so the byte
    /// offsets cannot overflow.
    fn finish(mut self) -> crate::extent::ExtentMap {
        if let Some((cs, ce)) = self.cur.take() {
            self.map.insert(cs * self.cluster, ce * self.cluster);
        }
        self.map
    }
}

/// Finds the unnamed `$DATA` attribute of the `$Bitmap` record and decodes where its bytes
/// are. Every run must lie inside the volume's `clusters`.
fn bitmap_attr(r: &[u8], clusters: u64) -> Result<BitmapData, String> {
    let used = (le32(r, 0x18).unwrap_or(0) as usize).min(r.len());
    let mut off = usize::from(le16(r, 0x14).unwrap_or(0));
    let mut has_list = false;
    // Each attribute is at least 16 bytes, so this bounds the walk even on garbage.
    for _ in 0..r.len() / 16 {
        let Some(ty) = le32(r, off) else { break };
        if ty == ATTR_END {
            break;
        }
        let len = le32(r, off + 4).unwrap_or(0) as usize;
        if len < 16 || off.checked_add(len).is_none_or(|e| e > used) {
            return Err(format!("attribute at {off} has impossible length {len}"));
        }
        let attr = &r[off..off + len];
        off += len;
        has_list |= ty == ATTR_ATTRIBUTE_LIST;
        // Only the unnamed $DATA stream is the bitmap.
        if ty != ATTR_DATA || attr[9] != 0 {
            continue;
        }
        let flags = le16(attr, 0x0C).unwrap_or(0);
        if flags != 0 {
            return Err(format!(
                "$DATA is compressed, encrypted or sparse (flags {flags:#x})"
            ));
        }
        if attr[8] == 0 {
            let vlen = le32(attr, 0x10).unwrap_or(0) as usize;
            let voff = usize::from(le16(attr, 0x14).unwrap_or(0));
            let v = voff
                .checked_add(vlen)
                .and_then(|e| attr.get(voff..e))
                .ok_or("resident $DATA value outside its attribute")?;
            return Ok(BitmapData::Resident(v.to_vec()));
        }
        if le64(attr, 0x10) != Some(0) {
            return Err("$DATA does not start at VCN 0 (split over records)".into());
        }
        let runs_off = usize::from(le16(attr, 0x20).unwrap_or(0));
        let data_size = le64(attr, 0x30).ok_or("short non-resident header")?;
        let init_size = le64(attr, 0x38).ok_or("short non-resident header")?;
        let runs = decode_runs(attr, runs_off, clusters)?;
        return Ok(BitmapData::Runs(runs, data_size.min(init_size)));
    }
    Err(if has_list {
        "$DATA lives in an attribute list, which is not read yet".into()
    } else {
        "no unnamed $DATA attribute".into()
    })
}

/// Decodes a mapping-pairs array into `(lcn, length)` runs. Sparse runs are refused: a hole
/// in the bitmap would read as "free" and drop data.
fn decode_runs(attr: &[u8], mut pos: usize, clusters: u64) -> Result<Vec<(u64, u64)>, String> {
    let mut runs = Vec::new();
    let mut lcn: i64 = 0;
    // Every run takes at least two bytes, so the attribute length bounds the loop.
    while let Some(&h) = attr.get(pos) {
        if h == 0 {
            return Ok(runs);
        }
        let (ln, on) = (usize::from(h & 0x0F), usize::from(h >> 4));
        if !(1..=8).contains(&ln) || on > 8 {
            return Err(format!("run header {h:#04x} is malformed"));
        }
        if on == 0 {
            return Err("$Bitmap has a sparse run".into());
        }
        let field = |at: usize, n: usize| -> Option<&[u8]> { attr.get(at..at.checked_add(n)?) };
        let lb = field(pos + 1, ln).ok_or("run list runs off its attribute")?;
        let ob = field(pos + 1 + ln, on).ok_or("run list runs off its attribute")?;
        let len = lb.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
        let mut delta = ob.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
        if on < 8 && ob[on - 1] & 0x80 != 0 {
            delta |= u64::MAX << (8 * on);
        }
        lcn = lcn
            .checked_add(delta as i64)
            .filter(|&l| l >= 0)
            .ok_or("run offset leaves the volume")?;
        let start = lcn as u64;
        if len == 0 || start.checked_add(len).is_none_or(|e| e > clusters) {
            return Err(format!(
                "run of {len} clusters at {start} points past the volume ({clusters} clusters)"
            ));
        }
        runs.push((start, len));
        pos += 1 + ln + on;
    }
    Err("run list is not terminated".into())
}
