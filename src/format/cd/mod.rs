//! CD images: CUE sheets ([`cue`]), raw 2352-byte sector files (`bin`) and ISO9660 images
//! (`iso`).
//!
//! A data track stored as raw sectors carries 2048 user bytes per 2352-byte sector, after a
//! sync pattern and header (offset 16 for MODE1, 24 for MODE2 form 1). [`CdUserData`] exposes
//! just those bytes, so a BIN file reads like the ISO it contains.

use std::io;
use std::sync::Arc;

use serde::Serialize;

use crate::io::{Caps, ReadAt, SizeKnown};
use crate::Error;

pub(crate) mod bin;
pub mod cue;
pub(crate) mod iso;

/// Raw CD sector size.
pub(crate) const RAW_SECTOR: u64 = 2352;
/// User data per data sector.
pub(crate) const USER_SECTOR: u64 = 2048;
/// Most tracks a CD can have.
pub(crate) const MAX_TRACKS: usize = 99;

/// The 12-byte sync pattern that opens every raw CD data sector.
pub(crate) const CD_SYNC: [u8; 12] = [
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
    pub(crate) fn sector_size(&self) -> Option<u64> {
        match self {
            TrackMode::Audio | TrackMode::Mode1_2352 | TrackMode::Mode2_2352 => Some(2352),
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => Some(2048),
            TrackMode::Mode2_2336 => Some(2336),
            TrackMode::Other(_) => None,
        }
    }

    /// Where the 2048 user bytes start inside a stored sector, for data tracks.
    pub(crate) fn user_data_offset(&self) -> Option<u64> {
        match self {
            TrackMode::Mode1_2352 => Some(16),
            TrackMode::Mode2_2352 => Some(24),
            TrackMode::Mode2_2336 => Some(8),
            TrackMode::Mode1_2048 | TrackMode::Mode2_2048 => Some(0),
            _ => None,
        }
    }

    /// True for data tracks.
    pub(crate) fn is_data(&self) -> bool {
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
    pub(crate) file: usize,
    /// INDEX 00 in sectors from the start of the file, if given.
    pub(crate) index0: Option<u32>,
    /// INDEX 01 (track start) in sectors from the start of the file.
    pub start: u32,
    /// PREGAP length in sectors (not stored in the file).
    pub(crate) pregap: u32,
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
