//! CD images: CUE sheets ([`cue`]), raw 2352-byte sector files ([`bin`]) and ISO9660 images
//! ([`iso`]).
//!
//! A data track stored as raw sectors carries 2048 user bytes per 2352-byte sector, after a
//! sync pattern and header (offset 16 for MODE1, 24 for MODE2 form 1). [`CdUserData`] exposes
//! just those bytes, so a BIN file reads like the ISO it contains.

use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::io::ReadAt;
use crate::Error;

pub mod bin;
pub mod cue;
pub mod iso;

/// Raw CD sector size.
pub const RAW_SECTOR: u64 = 2352;
/// User data per data sector.
pub const USER_SECTOR: u64 = 2048;
/// Most tracks a CD can have.
pub const MAX_TRACKS: usize = 99;

/// The 12-byte sync pattern that opens every raw CD data sector.
pub const CD_SYNC: [u8; 12] = [
    0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
];

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
    pub(crate) fn parse(s: &str) -> TrackMode {
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

/// A TRACK with its indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Track {
    /// Track number (1..=99).
    pub number: u8,
    /// Storage mode.
    pub mode: TrackMode,
    /// Index into [`cue::CueSheet::files`].
    pub file: usize,
    /// INDEX 00 in sectors from the start of the file, if given.
    pub index0: Option<u32>,
    /// INDEX 01 (track start) in sectors from the start of the file.
    pub start: u32,
    /// PREGAP length in sectors (not stored in the file).
    pub pregap: u32,
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
