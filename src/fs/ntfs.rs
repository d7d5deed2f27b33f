//! NTFS boot sector probe, with the label and version read from the `$Volume` MFT record.
//!
//! The boot sector gives geometry and the 64-bit serial (`blkid` prints it as 16 uppercase hex
//! digits). The label lives in MFT record 3 (`$Volume`), attribute `$VOLUME_NAME`; the record is
//! protected by an update sequence array whose fixups must be applied before the attributes can
//! be trusted.

use super::info::{FsInfo, FsType};
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};
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
    let bs = dev.read_struct(0, 512)?;
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
        block_size: Some(cluster as u32),
        uuid: (serial != 0).then(|| format!("{serial:016X}")),
        ..FsInfo::new(FsType::Ntfs)
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
            .read_struct(off, record_size as usize)
            .map_err(|e| e.chain())
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
///
/// `$Bitmap` is then cross-checked against the MFT (`cross_check` below): every cluster a
/// record in use references is kept even where `$Bitmap` calls it free.
pub fn used(dev: &dyn ReadAt) -> crate::Result<super::info::Usage> {
    let corrupt = |d: String| crate::Error::corrupt("NTFS $Bitmap", d);
    let bs = dev.read_struct(0, 512)?;
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
    let mut rec = dev.read_struct(rec_off, g.record as usize)?;
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

    let mut u = super::info::Usage {
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
                    let buf = dev.read_struct(pos, n as usize)?;
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
    cross_check(dev, &g, clusters, &mut u);
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

// ---------------------------------------------------------------------------------------------
// Cross-check: $Bitmap against the MFT.
//
// Every MFT record is read (fixups applied), found through $MFT's own $DATA runlist
// (including the extents an attribute list puts in extension records). A record whose header
// flag (0x0001) or $MFT's own bitmap says it is in use has every non-resident attribute's runs
// compared with $Bitmap (sparse runs own no clusters). Extension records are records in use
// like any other, so walking them all covers attribute lists. A record in use that cannot be
// read (torn fixups, "BAAD", no FILE signature where $MFT's bitmap says in use) could reference
// anything, so the whole volume is kept; so it is when the MFT itself cannot be located.
// Runs past the volume and malformed runlists are ignored and reported: no reader can follow
// them either.

const ATTR_MFT_BITMAP: u32 = 0xB0;
/// MFT records examined before the walk gives up and keeps every cluster.
const MAX_RECORDS: u64 = 1 << 24;
/// Bytes of MFT read at once.
const MFT_READ_MAX: u64 = 1 << 20;
/// Bound on an attribute list (and on $MFT's own bitmap) read whole.
const MAX_LIST_BYTES: u64 = 16 << 20;
/// Passes over $MFT's attribute list resolving extension records.
const MAX_LIST_PASSES: usize = 8;
/// Extension records holding $MFT's own $DATA that are read (a real MFT needs a handful).
const MAX_MFT_EXTENSIONS: usize = 4096;

/// One run of a runlist: first VCN, LCN (`None` for a sparse run) and length in clusters.
type Run = (u64, Option<u64>, u64);
/// An attribute of a record: type, name length, and its bytes.
type Attr<'a> = (u32, u8, &'a [u8]);

/// Decodes a non-resident attribute's mapping pairs, starting at its lowest VCN. A malformed
/// pair ends the list with an error; the runs before it are returned with it.
fn attr_runs(attr: &[u8]) -> (Vec<Run>, Option<&'static str>) {
    let mut out = Vec::new();
    let mut vcn = le64(attr, 0x10).unwrap_or(0);
    let mut pos = usize::from(le16(attr, 0x20).unwrap_or(0));
    let mut lcn: i64 = 0;
    loop {
        let Some(&h) = attr.get(pos) else {
            return (out, Some("runlist runs off its attribute"));
        };
        if h == 0 {
            return (out, None);
        }
        let (ln, on) = (usize::from(h & 0x0F), usize::from(h >> 4));
        if !(1..=8).contains(&ln) || on > 8 {
            return (out, Some("malformed run header"));
        }
        let field = |at: usize, n: usize| attr.get(at..at.checked_add(n)?);
        let (Some(lb), Some(ob)) = (field(pos + 1, ln), field(pos + 1 + ln, on)) else {
            return (out, Some("runlist runs off its attribute"));
        };
        let len = lb.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
        if len == 0 {
            return (out, Some("zero-length run"));
        }
        let run_lcn = if on == 0 {
            None
        } else {
            let mut delta = ob.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
            if on < 8 && ob[on - 1] & 0x80 != 0 {
                delta |= u64::MAX << (8 * on);
            }
            match lcn.checked_add(delta as i64).filter(|&l| l >= 0) {
                Some(l) => lcn = l,
                None => return (out, Some("run offset leaves the volume")),
            }
            Some(lcn as u64)
        };
        out.push((vcn, run_lcn, len));
        let Some(next) = vcn.checked_add(len) else {
            return (out, Some("run VCN overflows"));
        };
        vcn = next;
        pos += 1 + ln + on;
    }
}

/// The attributes of a record (fixups applied): `(type, name length, attribute bytes)`; stops
/// at the end marker or at the first attribute whose length is impossible (returned as `true`).
fn attributes(r: &[u8]) -> (Vec<Attr<'_>>, bool) {
    let used = (le32(r, 0x18).unwrap_or(0) as usize).min(r.len());
    let mut off = usize::from(le16(r, 0x14).unwrap_or(0));
    let mut out = Vec::new();
    for _ in 0..r.len() / 16 {
        let Some(ty) = le32(r, off) else {
            return (out, true);
        };
        if ty == ATTR_END {
            return (out, false);
        }
        let len = le32(r, off + 4).unwrap_or(0) as usize;
        if len < 16 || off.checked_add(len).is_none_or(|e| e > used) {
            return (out, true);
        }
        let a = &r[off..off + len];
        out.push((ty, a[9], a));
        off += len;
    }
    (out, true)
}

/// A resident attribute's value, or a non-resident one's first `max` bytes read from its runs.
fn attr_value(dev: &dyn ReadAt, g: &UsedGeo, attr: &[u8], max: u64) -> Result<Vec<u8>, String> {
    if attr.get(8) == Some(&0) {
        let vlen = le32(attr, 0x10).unwrap_or(0) as usize;
        let voff = usize::from(le16(attr, 0x14).unwrap_or(0));
        return voff
            .checked_add(vlen)
            .and_then(|e| attr.get(voff..e))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "resident value outside its attribute".to_string());
    }
    let size = le64(attr, 0x30)
        .unwrap_or(0)
        .min(le64(attr, 0x38).unwrap_or(0));
    if size > max {
        return Err(format!("{size} bytes is more than the {max} read"));
    }
    let (runs, err) = attr_runs(attr);
    if let Some(e) = err {
        return Err(e.into());
    }
    let mut out = Vec::new();
    for (_, lcn, len) in runs {
        let want = size - out.len() as u64;
        if want == 0 {
            break;
        }
        let n = len.saturating_mul(g.cluster).min(want);
        match lcn {
            None => out.resize(out.len() + n as usize, 0),
            Some(l) => {
                let off = l.checked_mul(g.cluster).ok_or("run offset overflows")?;
                out.extend(dev.read_struct(off, n as usize).map_err(|e| e.chain())?);
            }
        }
    }
    Ok(out)
}

/// Where the MFT is: its runs in VCN order, the bytes of it that hold records, and its own
/// bitmap of records in use when that could be read.
struct MftMap {
    runs: Vec<Run>,
    valid: u64,
    bitmap: Option<Vec<u8>>,
}

/// Byte offset on the volume of MFT stream byte `pos`, if one of `runs` maps it.
fn locate(runs: &[Run], pos: u64, cluster: u64) -> Option<u64> {
    let vcn = pos / cluster;
    let &(v, lcn, _) = runs
        .iter()
        .find(|&&(v, _, len)| v <= vcn && vcn - v < len)?;
    lcn?.checked_add(vcn - v)?
        .checked_mul(cluster)?
        .checked_add(pos % cluster)
}

fn read_record(dev: &dyn ReadAt, g: &UsedGeo, off: u64) -> Result<Vec<u8>, String> {
    let mut r = dev
        .read_struct(off, g.record as usize)
        .map_err(|e| e.chain())?;
    apply_fixups(&mut r)?;
    Ok(r)
}

/// Reads record 0 and works out where all of the MFT lies.
fn mft_map(dev: &dyn ReadAt, g: &UsedGeo) -> Result<MftMap, String> {
    let off0 = g
        .mft_lcn
        .checked_mul(g.cluster)
        .ok_or("MFT offset overflows")?;
    let rec0 = read_record(dev, g, off0).map_err(|e| format!("MFT record 0: {e}"))?;
    let (attrs, _) = attributes(&rec0);
    let mut runs: Vec<Run> = Vec::new();
    let mut valid = None;
    let mut bitmap = None;
    let mut list = None;
    for &(ty, name_len, a) in &attrs {
        match (ty, name_len, a.get(8)) {
            (ATTR_DATA, 0, Some(1)) => {
                if le64(a, 0x10) == Some(0) {
                    valid = Some(le64(a, 0x30).unwrap_or(0).min(le64(a, 0x38).unwrap_or(0)));
                }
                runs.extend(attr_runs(a).0);
            }
            (ATTR_MFT_BITMAP, 0, _) => bitmap = attr_value(dev, g, a, MAX_LIST_BYTES).ok(),
            (ATTR_ATTRIBUTE_LIST, _, _) => list = Some(attr_value(dev, g, a, MAX_LIST_BYTES)?),
            _ => {}
        }
    }
    let valid = valid.ok_or("$MFT has no non-resident $DATA starting at VCN 0")?;
    // $DATA extents in extension records, named by the attribute list.
    if let Some(list) = list {
        let mut pending: Vec<u64> = Vec::new();
        let mut pos = 0usize;
        while let (Some(ty), Some(len)) = (le32(&list, pos), le16(&list, pos + 4)) {
            let len = usize::from(len);
            if len < 0x1A {
                break;
            }
            let rec = le64(&list, pos + 0x10).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
            if ty == ATTR_DATA && list.get(pos + 6) == Some(&0) && rec != 0 {
                pending.push(rec);
            }
            pos += len;
        }
        pending.sort_unstable();
        pending.dedup();
        if pending.len() > MAX_MFT_EXTENSIONS {
            return Err(format!(
                "$MFT's attribute list names {} extension records",
                pending.len()
            ));
        }
        for _ in 0..MAX_LIST_PASSES {
            if pending.is_empty() {
                break;
            }
            let before = pending.len();
            let mut left = Vec::new();
            for rec in std::mem::take(&mut pending) {
                let at = locate(&runs, rec.saturating_mul(g.record), g.cluster);
                let Some(at) = at else {
                    left.push(rec);
                    continue;
                };
                let r = read_record(dev, g, at).map_err(|e| format!("MFT record {rec}: {e}"))?;
                for &(ty, name_len, a) in &attributes(&r).0 {
                    if ty == ATTR_DATA && name_len == 0 && a.get(8) == Some(&1) {
                        runs.extend(attr_runs(a).0);
                    }
                }
            }
            pending = left;
            if pending.len() == before {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(format!(
                "{} $MFT extension records cannot be located",
                pending.len()
            ));
        }
    }
    runs.sort_unstable();
    Ok(MftMap {
        runs,
        valid,
        bitmap,
    })
}

struct MftWalk<'a> {
    used: &'a ExtentMap,
    cluster: u64,
    clusters: u64,
    unmapped: super::xcheck::Unmapped,
    in_use: u64,
    read: u64,
    unreadable: u64,
    malformed: u64,
    outside: u64,
}

impl MftWalk<'_> {
    /// Looks at record `idx`, whose raw bytes are `r`.
    fn record(&mut self, idx: u64, r: &mut [u8], bitmap: Option<&[u8]>) {
        self.read += 1;
        let listed = bitmap.map(|b| {
            b.get((idx / 8) as usize)
                .is_some_and(|&x| x & (1 << (idx % 8)) != 0)
        });
        match r.get(0..4) {
            Some(b"FILE") => {}
            // Not a record in use, unless $MFT's bitmap says it is one.
            _ => {
                if listed == Some(true) {
                    self.unreadable += 1;
                }
                return;
            }
        }
        // In use if either the record's header or $MFT's bitmap says so: on a healthy volume
        // they agree, and where they do not, keeping more is the safe side.
        let in_use = le16(r, 0x16).unwrap_or(0) & 1 != 0 || listed == Some(true);
        if !in_use {
            return;
        }
        if apply_fixups(r).is_err() {
            self.unreadable += 1;
            return;
        }
        self.in_use += 1;
        let (attrs, bad) = attributes(r);
        self.malformed += u64::from(bad);
        for (_, _, a) in attrs {
            if a.get(8) != Some(&1) {
                continue;
            }
            let (runs, err) = attr_runs(a);
            self.malformed += u64::from(err.is_some());
            for (_, lcn, len) in runs {
                let Some(lcn) = lcn else { continue };
                let end = lcn.saturating_add(len);
                if end > self.clusters {
                    self.outside += 1;
                }
                let (s, e) = (lcn.min(self.clusters), end.min(self.clusters));
                self.unmapped
                    .note(self.used, s * self.cluster, e * self.cluster);
            }
        }
    }
}

/// Reads every MFT record and adds back every cluster a record in use references that $Bitmap
/// calls free; fills `u.cross_check`.
fn cross_check(dev: &dyn ReadAt, g: &UsedGeo, clusters: u64, u: &mut super::info::Usage) {
    let mut w = MftWalk {
        used: &u.used,
        cluster: g.cluster,
        clusters,
        unmapped: Default::default(),
        in_use: 0,
        read: 0,
        unreadable: 0,
        malformed: 0,
        outside: 0,
    };
    let mut incomplete = None;
    match mft_map(dev, g) {
        Err(e) => incomplete = Some(format!("the MFT cannot be located: {e}")),
        Ok(m) => {
            let records = m.valid / g.record;
            if records > MAX_RECORDS {
                incomplete = Some(format!("the MFT has more than {MAX_RECORDS} records"));
            }
            let chunk = (MFT_READ_MAX / g.record).max(1) * g.record;
            'runs: for &(vcn, lcn, len) in &m.runs {
                if incomplete.is_some() {
                    break;
                }
                let Some(lcn) = lcn else { continue };
                // MFT stream bytes this run holds, clipped to the records.
                let s = vcn.saturating_mul(g.cluster);
                let e = vcn.saturating_add(len).saturating_mul(g.cluster);
                let e = e.min(records.min(MAX_RECORDS) * g.record);
                // Start at a record boundary inside the run.
                let mut pos = s.div_ceil(g.record) * g.record;
                while pos + g.record <= e {
                    let n = (e - pos).min(chunk) / g.record * g.record;
                    let off = (pos - s)
                        .checked_add(lcn.saturating_mul(g.cluster))
                        .filter(|o| o.saturating_add(n) <= clusters.saturating_mul(g.cluster));
                    let Some(off) = off else {
                        w.outside += 1;
                        break;
                    };
                    let mut buf = match dev.read_struct(off, n as usize) {
                        Ok(b) => b,
                        Err(e) => {
                            incomplete = Some(format!("MFT unreadable: {}", e.chain()));
                            break 'runs;
                        }
                    };
                    if w.read >= MAX_RECORDS {
                        incomplete = Some(format!("more than {MAX_RECORDS} MFT records"));
                        break 'runs;
                    }
                    for (i, r) in buf.chunks_exact_mut(g.record as usize).enumerate() {
                        w.record(pos / g.record + i as u64, r, m.bitmap.as_deref());
                    }
                    pos += n;
                }
            }
        }
    }
    if w.unreadable > 0 && incomplete.is_none() {
        incomplete = Some(format!(
            "{} MFT records in use cannot be read (torn or marked bad)",
            w.unreadable
        ));
    }
    let (unmapped, in_use, read, malformed, outside) =
        (w.unmapped.map, w.in_use, w.read, w.malformed, w.outside);
    if malformed + outside > 0 {
        u.warnings.push(format!(
            "NTFS: {malformed} malformed attributes or runlists and {outside} runs past the \
             volume in the MFT; ignored"
        ));
    }
    super::xcheck::finish(
        u,
        super::xcheck::Outcome {
            fs: "NTFS",
            against: format!("its MFT ({in_use} records in use of {read} read)"),
            referrers: "MFT records",
            map_name: "$Bitmap",
            fsck: "chkdsk /f (or ntfsfix -d)",
            unmapped,
            base: 0,
            unit: g.cluster,
            first: 0,
            incomplete,
            whole: (0, clusters * g.cluster),
            whole_what: "every cluster",
        },
    );
}
