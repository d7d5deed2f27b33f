//! CD images: CUE sheets and raw 2352-byte sector files (BIN).
//!
//! A data track stored as raw sectors carries 2048 user bytes per 2352-byte sector, after a
//! sync pattern and header (offset 16 for MODE1, 24 for MODE2 form 1). [`CdUserData`] exposes
//! just those bytes, so a BIN file reads like the ISO it contains.

use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::io::ReadAt;
use crate::Error;

/// Raw CD sector size.
pub const RAW_SECTOR: u64 = 2352;
/// User data per data sector.
pub const USER_SECTOR: u64 = 2048;
/// Most tracks a CD can have.
pub const MAX_TRACKS: usize = 99;
/// Largest CUE sheet we parse.
pub const MAX_CUE_BYTES: usize = 1 << 20;

/// How a track's sectors are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TrackMode {
    /// CD-DA audio, 2352 bytes of PCM per sector.
    Audio,
    /// MODE1 with only the 2048 user bytes stored.
    Mode1_2048,
    /// MODE1 raw sectors.
    Mode1_2352,
    /// MODE2 form 1 with only the 2048 user bytes stored.
    Mode2_2048,
    /// MODE2 without sync/header (2336 bytes).
    Mode2_2336,
    /// MODE2 raw sectors.
    Mode2_2352,
    /// Anything else (CDG, CDI, ...), kept by name.
    Other(String),
}

impl TrackMode {
    fn parse(s: &str) -> TrackMode {
        match s.to_ascii_uppercase().as_str() {
            "AUDIO" => TrackMode::Audio,
            "MODE1/2048" => TrackMode::Mode1_2048,
            "MODE1/2352" => TrackMode::Mode1_2352,
            "MODE2/2048" => TrackMode::Mode2_2048,
            "MODE2/2336" => TrackMode::Mode2_2336,
            "MODE2/2352" => TrackMode::Mode2_2352,
            other => TrackMode::Other(other.to_string()),
        }
    }

    /// Bytes per sector in the track file, when known.
    pub fn sector_size(&self) -> Option<u64> {
        match self {
            TrackMode::Audio | TrackMode::Mode1_2352 | TrackMode::Mode2_2352 => Some(2352),
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => Some(2048),
            TrackMode::Mode2_2336 => Some(2336),
            TrackMode::Other(_) => None,
        }
    }

    /// Where the 2048 user bytes start inside a stored sector, for data tracks.
    pub fn user_data_offset(&self) -> Option<u64> {
        match self {
            TrackMode::Mode1_2352 => Some(16),
            TrackMode::Mode2_2352 => Some(24),
            TrackMode::Mode2_2336 => Some(8),
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => Some(0),
            _ => None,
        }
    }

    /// True for data tracks.
    pub fn is_data(&self) -> bool {
        self.user_data_offset().is_some()
    }
}

/// A FILE line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CueFile {
    /// File name as written (relative to the sheet's directory).
    pub name: String,
    /// BINARY, MOTOROLA, WAVE, ...
    pub kind: String,
}

/// A TRACK with its indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Track {
    /// Track number (1..=99).
    pub number: u8,
    /// Storage mode.
    pub mode: TrackMode,
    /// Index into [`CueSheet::files`].
    pub file: usize,
    /// INDEX 00 in sectors from the start of the file, if given.
    pub index0: Option<u32>,
    /// INDEX 01 (track start) in sectors from the start of the file.
    pub start: u32,
    /// PREGAP length in sectors (not stored in the file).
    pub pregap: u32,
}

/// A parsed CUE sheet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CueSheet {
    /// FILE entries in order.
    pub files: Vec<CueFile>,
    /// Tracks in order.
    pub tracks: Vec<Track>,
}

impl CueSheet {
    /// The first data track, if any.
    pub fn first_data_track(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.mode.is_data())
    }
}

/// Parses `mm:ss:ff` (75 frames per second) into a sector count.
pub fn msf(s: &str) -> Option<u32> {
    let mut it = s.split(':');
    let m: u32 = it.next()?.trim().parse().ok()?;
    let sec: u32 = it.next()?.trim().parse().ok()?;
    let f: u32 = it.next()?.trim().parse().ok()?;
    if it.next().is_some() || sec >= 60 || f >= 75 || m > 9999 {
        return None;
    }
    Some((m * 60 + sec) * 75 + f)
}

/// Splits a line into words, honouring double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
        if out.len() > 64 {
            break;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses a CUE sheet.
pub fn parse_cue(text: &str) -> crate::Result<CueSheet> {
    let bad = |n: usize, d: String| Error::corrupt("cue sheet", format!("line {n}: {d}"));
    if text.len() > MAX_CUE_BYTES {
        return Err(Error::corrupt(
            "cue sheet",
            format!("{} bytes is too large", text.len()),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sheet = CueSheet::default();
    for (ln, line) in text.lines().enumerate() {
        let n = ln + 1;
        let w = words(line);
        let Some(kw) = w.first() else { continue };
        match kw.to_ascii_uppercase().as_str() {
            "FILE" => {
                if w.len() < 3 {
                    return Err(bad(n, "FILE needs a name and a type".into()));
                }
                if sheet.files.len() >= MAX_TRACKS {
                    return Err(bad(n, "too many FILE lines".into()));
                }
                let kind = w[w.len() - 1].to_ascii_uppercase();
                let name = w[1..w.len() - 1].join(" ");
                sheet.files.push(CueFile { name, kind });
            }
            "TRACK" => {
                if sheet.files.is_empty() {
                    return Err(bad(n, "TRACK before any FILE".into()));
                }
                if sheet.tracks.len() >= MAX_TRACKS {
                    return Err(bad(n, format!("more than {MAX_TRACKS} tracks")));
                }
                let (Some(num), Some(mode)) = (w.get(1), w.get(2)) else {
                    return Err(bad(n, "TRACK needs a number and a mode".into()));
                };
                let number: u8 = num
                    .parse()
                    .ok()
                    .filter(|v| (1..=99).contains(v))
                    .ok_or_else(|| bad(n, format!("track number {num:?}")))?;
                sheet.tracks.push(Track {
                    number,
                    mode: TrackMode::parse(mode),
                    file: sheet.files.len() - 1,
                    index0: None,
                    start: 0,
                    pregap: 0,
                });
            }
            "INDEX" => {
                let t = sheet
                    .tracks
                    .last_mut()
                    .ok_or_else(|| bad(n, "INDEX before TRACK".into()))?;
                let (Some(i), Some(at)) = (w.get(1), w.get(2)) else {
                    return Err(bad(n, "INDEX needs a number and a time".into()));
                };
                let at = msf(at).ok_or_else(|| bad(n, format!("bad time {at:?}")))?;
                match i.parse::<u8>() {
                    Ok(0) => t.index0 = Some(at),
                    Ok(1) => t.start = at,
                    Ok(x) if x <= 99 => {}
                    _ => return Err(bad(n, format!("index number {i:?}"))),
                }
            }
            "PREGAP" => {
                let t = sheet
                    .tracks
                    .last_mut()
                    .ok_or_else(|| bad(n, "PREGAP before TRACK".into()))?;
                let at = w
                    .get(1)
                    .and_then(|s| msf(s))
                    .ok_or_else(|| bad(n, "bad PREGAP time".into()))?;
                t.pregap = at;
            }
            "REM" | "CATALOG" | "PERFORMER" | "TITLE" | "SONGWRITER" | "CDTEXTFILE" | "FLAGS"
            | "ISRC" | "POSTGAP" => {}
            other => return Err(bad(n, format!("unknown keyword {other:?}"))),
        }
    }
    if sheet.tracks.is_empty() {
        return Err(Error::corrupt("cue sheet", "no TRACK lines"));
    }
    Ok(sheet)
}

/// Guesses a raw data sector's mode from its header byte (offset 15): `Some(1)` or `Some(2)`.
pub fn raw_sector_mode(sector: &[u8]) -> Option<u8> {
    if sector.get(..12)? != super::sniff::CD_SYNC {
        return None;
    }
    match sector.get(15)? {
        1 => Some(1),
        2 => Some(2),
        _ => None,
    }
}

/// The 2048-byte user data of a track stored as larger raw sectors.
pub struct CdUserData {
    src: Arc<dyn ReadAt>,
    /// File offset of the track's first sector.
    start: u64,
    sector: u64,
    user_offset: u64,
    sectors: u64,
}

impl CdUserData {
    /// Maps the track whose first sector is at byte `start` of `src`, stored in `sector`-byte
    /// sectors with user data at `user_offset`, running to the end of the file (or `sectors`
    /// sectors, if given).
    pub fn new(
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
        let avail = src.size().saturating_sub(start) / sector;
        let sectors = sectors.map_or(avail, |s| s.min(avail));
        Ok(CdUserData {
            src,
            start,
            sector,
            user_offset,
            sectors,
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

    /// Number of sectors mapped.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }
}

impl ReadAt for CdUserData {
    fn size(&self) -> u64 {
        self.sectors * USER_SECTOR
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let (lba, within) = (pos / USER_SECTOR, pos % USER_SECTOR);
            let n = ((USER_SECTOR - within) as usize).min(len - done);
            let at = self.start + lba * self.sector + self.user_offset + within;
            let got = self.src.read_at(at, &mut buf[done..done + n])?;
            done += got;
            if got < n {
                break;
            }
        }
        Ok(done)
    }

    fn caps(&self) -> crate::io::Caps {
        crate::io::Caps::RANDOM.over(self.src.caps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sheet() {
        let s = parse_cue(
            "REM GENRE x\nFILE \"My Disc.bin\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n  TRACK 02 AUDIO\n    PREGAP 00:02:00\n    INDEX 00 10:00:00\n    INDEX 01 10:02:00\n",
        )
        .unwrap();
        assert_eq!(s.files[0].name, "My Disc.bin");
        assert_eq!(s.files[0].kind, "BINARY");
        assert_eq!(s.tracks.len(), 2);
        assert_eq!(s.tracks[1].start, (10 * 60 + 2) * 75);
        assert_eq!(s.tracks[1].pregap, 150);
        assert_eq!(s.first_data_track().unwrap().number, 1);
    }

    #[test]
    fn rejects_junk() {
        assert!(parse_cue("hello world").is_err());
        assert!(parse_cue("TRACK 01 AUDIO\n").is_err());
        assert!(parse_cue("FILE a BINARY\nTRACK 100 AUDIO\n").is_err());
        assert!(parse_cue("FILE a BINARY\nTRACK 01 AUDIO\nINDEX 01 00:60:00\n").is_err());
        let many: String = (0..200)
            .map(|i| format!("FILE a BINARY\nTRACK {} AUDIO\n", i % 99 + 1))
            .collect();
        assert!(parse_cue(&many).is_err());
        assert_eq!(msf("99:59:74"), Some((99 * 60 + 59) * 75 + 74));
    }
}
