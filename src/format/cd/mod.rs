//! CD images: CUE sheets ([`cue`]), cdrdao TOC sheets ([`toc`]), Nero images ([`nrg`]), raw
//! 2352-byte sector files (`bin`) and ISO9660 images (`iso`).
//!
//! Every sheet format resolves to one [`CdDisc`]: its [`Track`]s, each with its mode, the size
//! of its stored sectors, its place on the disc (LBA and MSF) and the segments of files (or of
//! silence) that hold it from INDEX 01 on. [`CdDisc::track_data`] reads a track as user data
//! ([`TrackData`]): 2048 bytes per sector for data tracks (2324 for a MODE2 form 2 track),
//! the 2352 bytes of PCM per sector for audio. [`extract::extract`] writes the tracks out as `.iso`
//! and `.wav` (or raw `.cdr`) files the way `bchunk` does.
//!
//! A data track stored as raw sectors carries 2048 user bytes per 2352-byte sector, after a
//! sync pattern and header (offset 16 for MODE1, 24 for MODE2 form 1). [`CdUserData`] exposes
//! just those bytes for a lone BIN file, so it reads like the ISO it contains.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::io::{Caps, ReadAt, ReadAtExt, SizeKnown};
use crate::Error;

pub(crate) mod bin;
pub mod cue;
pub mod extract;
pub(crate) mod iso;
pub mod nrg;
mod sheet;
pub mod toc;

/// Raw CD sector size.
pub(crate) const RAW_SECTOR: u64 = 2352;
/// User data per data sector.
pub(crate) const USER_SECTOR: u64 = 2048;
/// User data of a MODE2 form 2 sector.
pub(crate) const FORM2_SECTOR: u64 = 2324;
/// Most tracks a CD can have.
pub(crate) const MAX_TRACKS: usize = 99;
/// Most file or silence segments a disc may be made of (a TOC sheet lists one per statement):
/// far more than any real sheet, few enough to keep the lists small.
pub(crate) const MAX_SEGMENTS: usize = 10_000;
/// Sectors a CD's first pregap holds before LBA 0 (MSF 00:02:00 is LBA 0).
pub const MSF_OFFSET: u32 = 150;
/// Sectors between sessions: the lead-out of the first session (6750) and the lead-in of
/// the next (4500); later lead-outs are 2250.
pub(crate) const FIRST_SESSION_GAP: u32 = 11_250;
/// Sectors between later sessions: a 2250-sector lead-out and a 4500-sector lead-in.
pub(crate) const LATER_SESSION_GAP: u32 = 6_750;

/// The 12-byte sync pattern that opens every raw CD data sector.
pub(crate) const CD_SYNC: [u8; 12] = [
    0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
];

/// How a track's sectors are stored, named as a CUE sheet names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackMode {
    /// CD-DA audio, 2352 bytes of PCM per sector.
    Audio,
    /// CD+G: audio sectors of 2352 bytes each followed by 96 bytes of subchannel (2448).
    Cdg,
    /// MODE1 with only the 2048 user bytes stored.
    Mode1_2048,
    /// MODE1 raw sectors (sync, header, 2048 user bytes, EDC/ECC).
    Mode1_2352,
    /// MODE2 form 1 with only the 2048 user bytes stored (cdrdao's MODE2_FORM1).
    Mode2_2048,
    /// MODE2 form 2 with only the 2324 user bytes stored (cdrdao's MODE2_FORM2).
    Mode2_2324,
    /// MODE2 without sync and header: an 8-byte subheader, then form 1 or form 2 data
    /// (cdrdao's MODE2 and MODE2_FORM_MIX).
    Mode2_2336,
    /// MODE2 raw sectors (sync, header, subheader, form 1 or form 2 data).
    Mode2_2352,
}

impl TrackMode {
    /// The CUE sheet modes, as they are written.
    pub(crate) const CUE_NAMES: &'static [(&'static str, TrackMode)] = &[
        ("AUDIO", TrackMode::Audio),
        ("CDG", TrackMode::Cdg),
        ("MODE1/2048", TrackMode::Mode1_2048),
        ("MODE1/2352", TrackMode::Mode1_2352),
        ("MODE2/2048", TrackMode::Mode2_2048),
        ("MODE2/2324", TrackMode::Mode2_2324),
        ("MODE2/2336", TrackMode::Mode2_2336),
        ("MODE2/2352", TrackMode::Mode2_2352),
    ];

    /// Parses a CUE sheet's mode (any case); `None` for a mode this does not read.
    pub(crate) fn parse(s: &str) -> Option<TrackMode> {
        Self::CUE_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, m)| m)
    }

    /// The name a CUE sheet gives this mode.
    pub fn name(self) -> &'static str {
        Self::CUE_NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    /// Bytes per sector in the track file (without subchannel data).
    pub fn sector_size(self) -> u64 {
        match self {
            TrackMode::Audio | TrackMode::Mode1_2352 | TrackMode::Mode2_2352 => 2352,
            TrackMode::Cdg => 2448,
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => 2048,
            TrackMode::Mode2_2324 => 2324,
            TrackMode::Mode2_2336 => 2336,
        }
    }

    /// True for audio tracks.
    pub fn is_audio(self) -> bool {
        matches!(self, TrackMode::Audio | TrackMode::Cdg)
    }

    /// True for data tracks.
    pub fn is_data(self) -> bool {
        !self.is_audio()
    }

    /// Where the submode byte of a MODE2 sector's subheader sits in a stored sector, for the
    /// modes that store the subheader.
    fn submode_at(self) -> Option<usize> {
        match self {
            TrackMode::Mode2_2352 => Some(18),
            TrackMode::Mode2_2336 => Some(2),
            _ => None,
        }
    }

    /// Where the user data starts inside a stored sector, and how long it is, for a sector
    /// of form 2 (`form2`) or not.
    fn user_part(self, form2: bool) -> (u64, u64) {
        let data = if form2 { FORM2_SECTOR } else { USER_SECTOR };
        match self {
            TrackMode::Audio | TrackMode::Cdg => (0, RAW_SECTOR),
            TrackMode::Mode1_2352 => (16, USER_SECTOR),
            TrackMode::Mode2_2352 => (24, data),
            TrackMode::Mode2_2336 => (8, data),
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => (0, USER_SECTOR),
            TrackMode::Mode2_2324 => (0, FORM2_SECTOR),
        }
    }
}

impl Serialize for TrackMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// True if the submode byte of a MODE2 subheader says form 2.
pub(crate) fn submode_is_form2(submode: u8) -> bool {
    submode & 0x20 != 0
}

/// A sector count as `mm:ss:ff` (75 frames per second).
pub fn msf_string(sectors: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        sectors / (75 * 60),
        sectors / 75 % 60,
        sectors % 75
    )
}

/// Where a run of a track's sectors is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Index into [`CdDisc::files`], or `None` for sectors of silence (zeros) that no file
    /// holds (a TOC's SILENCE or ZERO).
    pub(crate) file: Option<usize>,
    /// Byte offset of the first sector in the file.
    pub(crate) offset: u64,
    /// Number of sectors.
    pub(crate) sectors: u64,
}

/// One track of a disc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// Track number (1..=99).
    pub number: u8,
    /// Session number (1 unless a sheet says otherwise).
    pub session: u8,
    /// Storage mode.
    pub mode: TrackMode,
    /// Bytes per stored sector: the mode's, plus 96 when subchannel data follows each sector.
    pub sector_size: u32,
    /// For MODE2/2352 and MODE2/2336: the track's first sector is form 2 (its subheader's
    /// submode says so), so the track is read as 2324-byte sectors.
    pub form2: bool,
    /// Disc LBA of INDEX 01, the track's start (MSF is this plus [`MSF_OFFSET`]).
    pub start: u32,
    /// Sectors from INDEX 01 to the track's end, as stored.
    pub length: u32,
    /// Disc LBA of INDEX 00 when the track has a pregap.
    pub index0: Option<u32>,
    /// Pregap sectors no file holds (CUE PREGAP; TOC PREGAP, or silence before START).
    pub pregap: u32,
    /// The file holding the track's first sector, as the sheet names it (empty for silence).
    pub file: String,
    /// Where the track's sectors from INDEX 01 on are stored.
    pub(crate) segments: Vec<Segment>,
}

impl Track {
    /// Bytes of user data per sector: 2048 (data), 2324 (form 2 data), 2352 (audio).
    pub fn user_sector(&self) -> u64 {
        self.mode.user_part(self.form2).1
    }

    /// The track's start as absolute disc time `mm:ss:ff` (as cd-info shows it: LBA + 2 s).
    pub fn start_msf(&self) -> String {
        msf_string(u64::from(self.start) + u64::from(MSF_OFFSET))
    }

    /// The track's length as `mm:ss:ff`.
    pub fn length_msf(&self) -> String {
        msf_string(u64::from(self.length))
    }
}

/// How a track is shown in `inspect --json` (spec/json-output.md).
#[derive(Serialize)]
struct TrackJson<'a> {
    number: u8,
    session: u8,
    mode: TrackMode,
    sector_size: u32,
    form2: bool,
    start_lba: u32,
    start_msf: String,
    length: u32,
    length_msf: String,
    index0_lba: Option<u32>,
    pregap: u32,
    file: &'a str,
}

impl Serialize for Track {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TrackJson {
            number: self.number,
            session: self.session,
            mode: self.mode,
            sector_size: self.sector_size,
            form2: self.form2,
            start_lba: self.start,
            start_msf: self.start_msf(),
            length: self.length,
            length_msf: self.length_msf(),
            index0_lba: self.index0,
            pregap: self.pregap,
            file: &self.file,
        }
        .serialize(s)
    }
}

/// A file a sheet names, opened.
#[derive(Clone)]
pub(crate) struct DiscFile {
    /// The name as the sheet writes it.
    pub(crate) name: String,
    /// The bytes (for a WAVE file: its PCM data only).
    pub(crate) src: Arc<dyn ReadAt>,
    /// True when 16-bit samples are stored big-endian (a CUE `MOTOROLA` file): audio is
    /// read byte-swapped so it comes out little-endian like every other track.
    pub(crate) swap_audio: bool,
}

/// A CD resolved from its sheet: the tracks, and the files that hold them.
#[derive(Clone)]
pub struct CdDisc {
    /// The tracks in order.
    pub tracks: Vec<Track>,
    pub(crate) files: Vec<DiscFile>,
    /// What the sheet says that could not be honoured in full (a statement cut at its
    /// file's end).
    pub warnings: Vec<String>,
}

impl CdDisc {
    /// The first data track, if any.
    pub fn first_data_track(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.mode.is_data())
    }

    /// The user data of track `i` (an index into [`tracks`](Self::tracks)).
    pub fn track_data(&self, i: usize) -> Option<TrackData> {
        let t = self.tracks.get(i)?;
        let (user_off, user_len) = t.mode.user_part(t.form2);
        let mut segs = Vec::with_capacity(t.segments.len());
        let mut at = 0u64;
        for s in &t.segments {
            segs.push((at, s.clone()));
            at += s.sectors;
        }
        let swap = t.mode.is_audio()
            && t.segments
                .first()
                .and_then(|s| s.file)
                .and_then(|f| self.files.get(f))
                .is_some_and(|f| f.swap_audio);
        Some(TrackData {
            files: self.files.iter().map(|f| f.src.clone()).collect(),
            segs,
            sectors: at,
            stored: u64::from(t.sector_size),
            user_off,
            user_len,
            swap,
            mode: t.mode,
        })
    }

    /// Decides form 1 or form 2 for every MODE2 track with a subheader, from its first
    /// stored sector; a sector that cannot be read counts as form 1.
    pub(crate) fn detect_forms(&mut self) {
        for i in 0..self.tracks.len() {
            let t = &self.tracks[i];
            let Some(at) = t.mode.submode_at() else {
                continue;
            };
            let Some(seg) = t.segments.iter().find(|s| s.sectors > 0) else {
                continue;
            };
            let Some(f) = seg.file.and_then(|f| self.files.get(f)) else {
                continue;
            };
            let mut b = [0u8; 1];
            let form2 = seg
                .offset
                .checked_add(at as u64)
                .is_some_and(|o| f.src.read_exact_at(o, &mut b).is_ok() && submode_is_form2(b[0]));
            self.tracks[i].form2 = form2;
        }
    }

    /// The layer detail of a sheet: track count and the data track opened.
    pub(crate) fn summary(&self) -> String {
        let sessions = self.tracks.iter().map(|t| t.session).max().unwrap_or(1);
        let mut s = format!("{} track(s)", self.tracks.len());
        if sessions > 1 {
            s.push_str(&format!(" in {sessions} sessions"));
        }
        match self.first_data_track() {
            Some(t) => {
                s.push_str(&format!("; data track {} {}", t.number, t.mode.name()));
                if !t.file.is_empty() {
                    s.push_str(&format!(" in {:?}", t.file));
                }
            }
            None => s.push_str("; audio only"),
        }
        s
    }

    /// The first data track's user data: what a sheet opens to. An audio-only disc has none.
    pub(crate) fn data_source(&self) -> crate::Result<Arc<dyn ReadAt>> {
        let i = self
            .tracks
            .iter()
            .position(|t| t.mode.is_data())
            .ok_or_else(|| {
                Error::Unsupported(
                    "an audio CD: no data track to open (its tracks can be extracted as WAV)"
                        .into(),
                )
            })?;
        Ok(Arc::new(self.track_data(i).expect("index in range")))
    }
}

/// Finds `name`, a file a sheet names, in `dir`: as written (relative to `dir`, or absolute);
/// else its last component (sheets keep the path a file had where they were made, even with
/// Windows separators); else a file of `dir` whose name matches that component ignoring ASCII
/// case, as cd-info does (sheets made on Windows often name `DISC.BIN` for `disc.bin`).
pub(crate) fn find_named(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        return Some(p);
    }
    let base = name.rsplit(['/', '\\']).next().filter(|b| !b.is_empty())?;
    let p = dir.join(base);
    if p.is_file() {
        return Some(p);
    }
    let rd = std::fs::read_dir(dir).ok()?;
    rd.flatten().take(100_000).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.eq_ignore_ascii_case(base))
            && p.is_file()
    })
}

/// Opens a file a sheet names (see [`find_named`]); the error names the file and where it
/// was looked for.
pub(crate) fn open_named(dir: &Path, name: &str, what: &str) -> crate::Result<Arc<dyn ReadAt>> {
    let p = find_named(dir, name).ok_or_else(|| {
        Error::Format(format!(
            "{what} names {name:?}, which is not in {} (nor any file of that name in any case)",
            dir.display()
        ))
    })?;
    let f = crate::io::FileSource::open(&p)
        .map_err(|e| Error::Format(format!("{what} names {}: {e}", p.display())))?;
    Ok(Arc::new(f))
}

/// A track read as user data: 2048 bytes per data sector (2324 for form 2), 2352 bytes of
/// 16-bit little-endian stereo PCM per audio sector. Sectors of silence read as zeros.
pub struct TrackData {
    files: Vec<Arc<dyn ReadAt>>,
    /// The segments, each with the track sector it starts at.
    segs: Vec<(u64, Segment)>,
    sectors: u64,
    stored: u64,
    user_off: u64,
    user_len: u64,
    swap: bool,
    mode: TrackMode,
}

/// Stored sectors read from a file in one request.
const BATCH: u64 = 64;

impl TrackData {
    /// Sectors in the track.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Bytes of user data per sector.
    pub fn user_sector(&self) -> u64 {
        self.user_len
    }

    /// The track's mode.
    pub fn mode(&self) -> TrackMode {
        self.mode
    }

    /// Reads whole sectors `first..first+n` as stored (each `stored` bytes) into `buf`
    /// (zeros for silence); returns how many sectors were read before a file ended.
    pub(crate) fn read_stored(&self, first: u64, n: u64, buf: &mut [u8]) -> io::Result<u64> {
        let mut done = 0u64;
        while done < n {
            let sec = first + done;
            let i = self.segs.partition_point(|(s, _)| *s <= sec);
            let Some((seg_start, seg)) = i.checked_sub(1).and_then(|i| self.segs.get(i)) else {
                break;
            };
            let within = sec - seg_start;
            if within >= seg.sectors {
                break;
            }
            let take = (seg.sectors - within).min(n - done);
            let lo = (done * self.stored) as usize;
            let hi = ((done + take) * self.stored) as usize;
            let out = &mut buf[lo..hi];
            match seg.file.and_then(|f| self.files.get(f)) {
                None => out.fill(0),
                Some(src) => {
                    let at = within
                        .checked_mul(self.stored)
                        .and_then(|b| b.checked_add(seg.offset));
                    let Some(at) = at else { break };
                    let got = src.read_upto(at, out.len())?;
                    out[..got.len()].copy_from_slice(&got);
                    if got.len() < out.len() {
                        return Ok(done + got.len() as u64 / self.stored);
                    }
                }
            }
            done += take;
        }
        Ok(done)
    }

    /// The user bytes of a stored sector, audio swapped to little-endian if need be.
    pub(crate) fn user_bytes<'b>(&self, stored: &'b mut [u8]) -> &'b [u8] {
        let lo = self.user_off as usize;
        let part = &mut stored[lo..lo + self.user_len as usize];
        if self.swap {
            for pair in part.chunks_exact_mut(2) {
                pair.swap(0, 1);
            }
        }
        part
    }

    /// Bytes per stored sector.
    pub(crate) fn stored_sector(&self) -> u64 {
        self.stored
    }

    /// Where a MODE2 sector's submode byte sits in a stored sector, if it has one.
    pub(crate) fn submode_at(&self) -> Option<usize> {
        self.mode.submode_at()
    }
}

impl ReadAt for TrackData {
    fn size(&self) -> u64 {
        self.sectors * self.user_len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        let first = offset / self.user_len;
        let last = (offset + len as u64 - 1) / self.user_len;
        let mut scratch = vec![0u8; (BATCH.min(last - first + 1) * self.stored) as usize];
        let mut done = 0usize;
        let mut sec = first;
        while sec <= last {
            let n = BATCH.min(last - sec + 1);
            let got = self.read_stored(sec, n, &mut scratch[..(n * self.stored) as usize])?;
            for k in 0..got {
                let lo = (k * self.stored) as usize;
                let stored = &mut scratch[lo..lo + self.stored as usize];
                let user = self.user_bytes(stored);
                let pos = offset + done as u64;
                let within = (pos - (sec + k) * self.user_len) as usize;
                let take = (user.len() - within).min(len - done);
                buf[done..done + take].copy_from_slice(&user[within..within + take]);
                done += take;
                if done == len {
                    return Ok(done);
                }
            }
            if got < n {
                break;
            }
            sec += n;
        }
        Ok(done)
    }

    fn caps(&self) -> Caps {
        Caps::RANDOM
    }
}

/// Guesses a raw data sector's mode from its header byte (offset 15): `Some(1)` or `Some(2)`.
pub fn raw_sector_mode(sector: &[u8]) -> Option<u8> {
    if sector.get(..12)? != CD_SYNC {
        return None;
    }
    match sector.get(15)? {
        1 => Some(1),
        2 => Some(2),
        _ => None,
    }
}

/// The 2048-byte user data of a track stored as larger raw sectors.
///
/// Its length follows the track file's: when that is only a hint (a BIN inside a stream opened
/// [`deferred`](crate::format::OpenOptions::deferred)) so is this one, and reads go on to the file's real
/// end. Only whole sectors are read: a cut-off last sector is not part of the track.
pub struct CdUserData {
    src: Arc<dyn ReadAt>,
    /// File offset of the track's first sector.
    start: u64,
    sector: u64,
    user_offset: u64,
    /// The track's length in sectors, when the sheet says (the next track in the same file).
    limit: Option<u64>,
}

impl CdUserData {
    /// Maps the track whose first sector is at byte `start` of `src`, stored in `sector`-byte
    /// sectors with user data at `user_offset`, running to the end of the file (or `sectors`
    /// sectors, if given).
    pub(crate) fn new(
        src: Arc<dyn ReadAt>,
        start: u64,
        sector: u64,
        user_offset: u64,
        sectors: Option<u64>,
    ) -> crate::Result<Self> {
        if sector < USER_SECTOR || user_offset > sector - USER_SECTOR {
            return Err(Error::corrupt(
                "cd track",
                format!("sector {sector}, data at {user_offset}"),
            ));
        }
        Ok(CdUserData {
            src,
            start,
            sector,
            user_offset,
            limit: sectors,
        })
    }

    /// A MODE1 (`mode` 1) or MODE2 form 1 (`mode` 2) track of raw 2352-byte sectors.
    pub fn raw(
        src: Arc<dyn ReadAt>,
        start: u64,
        mode: u8,
        sectors: Option<u64>,
    ) -> crate::Result<Self> {
        let off = if mode == 2 { 24 } else { 16 };
        Self::new(src, start, RAW_SECTOR, off, sectors)
    }

    /// Number of sectors mapped (a hint when the track file's size is).
    pub(crate) fn sectors(&self) -> u64 {
        let avail = self.src.size().saturating_sub(self.start) / self.sector;
        self.limit.map_or(avail, |l| l.min(avail))
    }

    /// File offset of user byte `within` of sector `lba`, if it fits in a u64.
    fn file_offset(&self, lba: u64, within: u64) -> Option<u64> {
        lba.checked_mul(self.sector)?
            .checked_add(self.start)?
            .checked_add(self.user_offset + within)
    }
}

impl ReadAt for CdUserData {
    fn size(&self) -> u64 {
        self.sectors() * USER_SECTOR
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = if self.src.caps().size == SizeKnown::Exact {
            self.size()
        } else {
            // The file may go on past its hinted size: only the sheet's track length bounds it.
            self.limit
                .map_or(u64::MAX, |l| l.saturating_mul(USER_SECTOR))
        };
        if offset >= end || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(end - offset) as usize;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let (lba, within) = (pos / USER_SECTOR, pos % USER_SECTOR);
            let n = ((USER_SECTOR - within) as usize).min(len - done);
            let Some(at) = self.file_offset(lba, within) else {
                break;
            };
            let got = self.src.read_at(at, &mut buf[done..done + n])?;
            if got < n {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn caps(&self) -> Caps {
        let inner = self.src.caps();
        Caps {
            size: inner.size,
            ..Caps::RANDOM.over(inner)
        }
    }

    fn refine_size_hint(&self, at_least: u64) {
        if let Some(at) = self.file_offset(at_least.div_ceil(USER_SECTOR), 0) {
            self.src.refine_size_hint(at - self.user_offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemSource, ReadAtExt};

    /// `n` raw MODE1 sectors whose user bytes are the sector number.
    fn bin(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            let mut s = vec![0u8; RAW_SECTOR as usize];
            s[..12].copy_from_slice(&CD_SYNC);
            s[15] = 1;
            s[16..16 + USER_SECTOR as usize].fill(i as u8);
            v.extend(s);
        }
        v
    }

    #[test]
    fn user_data_and_a_cut_off_last_sector() {
        let mut v = bin(3);
        v.truncate(v.len() - 100);
        let u = CdUserData::raw(Arc::new(MemSource(v)), 0, 1, None).unwrap();
        assert_eq!(u.sectors(), 2);
        assert_eq!(u.read_vec(2047, 2).unwrap(), [0, 1]);
        let mut b = vec![0u8; 3 * USER_SECTOR as usize];
        assert_eq!(u.read_at(0, &mut b).unwrap(), 2 * USER_SECTOR as usize);
        let u = CdUserData::raw(Arc::new(MemSource(bin(3))), RAW_SECTOR, 1, Some(1)).unwrap();
        assert_eq!(u.size(), USER_SECTOR);
        assert_eq!(u.read_vec(0, 1).unwrap(), [1]);
        assert_eq!(u.read_at(u64::MAX - 5, &mut b).unwrap(), 0);
    }
}
