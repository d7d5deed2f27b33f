//! Nero images (`.nrg`): the disc's sectors, then a list of chunks found through a footer at
//! the very end: `NERO` + a 32-bit offset (version 1, before Nero 5.5) or `NER5` + a 64-bit
//! offset (version 2). All numbers are big-endian.
//!
//! Read: DAOI/DAOX (disc-at-once: per track its ISRC, sector size, mode code and the file
//! offsets of INDEX 00, INDEX 01 and its end), ETNF/ETN2 (track-at-once: per track its file
//! offset, length, mode code and start LBA), CUEX (disc positions of every index, used for the
//! tracks' LBAs), SINF (tracks per session), and END!; CUES, MTYP, CDTX and unknown chunks
//! are skipped. The mode codes read are those of Nero's writers: 0x00 MODE1/2048, 0x02
//! MODE2/2048 (form 1), 0x03 MODE2/2336, 0x05 MODE1/2352, 0x06 MODE2/2352, 0x07 AUDIO, and
//! 0x0F, 0x10, 0x11 for MODE1/2352, AUDIO and MODE2/2352 with 96 bytes of subchannel data.

use std::sync::Arc;

use super::{CdDisc, DiscFile, Segment, Track, TrackMode, MAX_TRACKS};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
use crate::Error;

impl Format {
    /// Nero disc image.
    #[allow(non_upper_case_globals)]
    pub const Nrg: Format = Format::new("nrg", "nero image", Kind::Cd);
}

/// Largest chunk list read (real ones are a few hundred bytes; CD-TEXT adds a few KiB).
const MAX_CHUNKS_BYTES: u64 = 1 << 20;

/// The footer's version and where the chunk list starts, if `tail` (the file's last bytes,
/// at least 12 when the file is that long) ends with one, for a file of `size` bytes.
fn footer(tail: &[u8], size: u64) -> Option<(u8, u64, u64)> {
    let n = tail.len();
    if n >= 12 && &tail[n - 12..n - 8] == b"NER5" {
        let off = u64::from_be_bytes(tail[n - 8..].try_into().ok()?);
        return (off < size.saturating_sub(12)).then_some((2, off, 12));
    }
    if n >= 8 && &tail[n - 8..n - 4] == b"NERO" {
        let off = u64::from(u32::from_be_bytes(tail[n - 4..].try_into().ok()?));
        return (off < size.saturating_sub(8)).then_some((1, off, 8));
    }
    None
}

/// True if `tail`, the last bytes of a file of `size` bytes, is a Nero footer.
pub(crate) fn footer_at(tail: &[u8], size: u64) -> bool {
    footer(tail, size).is_some()
}

fn be32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |s| {
        u64::from(u32::from_be_bytes(s.try_into().expect("4 bytes")))
    })
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

/// The mode and stored sector size of a Nero mode code.
fn mode_of(code: u64) -> Option<(TrackMode, u64)> {
    Some(match code {
        0x00 => (TrackMode::Mode1_2048, 2048),
        0x02 => (TrackMode::Mode2_2048, 2048),
        0x03 => (TrackMode::Mode2_2336, 2336),
        0x05 => (TrackMode::Mode1_2352, 2352),
        0x06 => (TrackMode::Mode2_2352, 2352),
        0x07 => (TrackMode::Audio, 2352),
        0x0F => (TrackMode::Mode1_2352, 2448),
        0x10 => (TrackMode::Audio, 2448),
        0x11 => (TrackMode::Mode2_2352, 2448),
        _ => return None,
    })
}

/// A track as the chunks describe it, before the disc is laid out.
struct Raw {
    number: u8,
    mode: TrackMode,
    ss: u64,
    /// File offsets of INDEX 00 (if stored), INDEX 01, and the track's end.
    index0: Option<u64>,
    index1: u64,
    end: u64,
    /// Disc LBA of INDEX 01 if a chunk gives it.
    lba: Option<i64>,
    lba0: Option<i64>,
}

fn corrupt(detail: String) -> Error {
    Error::corrupt("nrg image", detail)
}

/// Parses the chunk list of a Nero image into its tracks.
pub fn parse_nrg(src: Arc<dyn ReadAt>) -> crate::Result<CdDisc> {
    let size = src.size();
    let tail = src.read_upto(size.saturating_sub(12), 12)?;
    let (version, first, footer_len) =
        footer(&tail, size).ok_or_else(|| corrupt("no NERO or NER5 footer at the end".into()))?;
    let list_len = size - footer_len - first;
    if list_len > MAX_CHUNKS_BYTES {
        return Err(corrupt(format!(
            "footer (version {version}) puts the chunk list at byte {first}, {list_len} bytes \
             before the end: more than the {MAX_CHUNKS_BYTES} bytes a chunk list may take"
        )));
    }
    let list = src.read_vec(first, list_len as usize)?;
    let mut raws: Vec<Raw> = Vec::new();
    let mut cuex: Vec<(u8, u8, i64)> = Vec::new();
    let mut sessions: Vec<u64> = Vec::new();
    let mut at = 0usize;
    let mut seen_end = false;
    while at + 8 <= list.len() {
        let id = &list[at..at + 4];
        let len = be32(&list, at + 4);
        let name = String::from_utf8_lossy(id).into_owned();
        let body_at = at + 8;
        if len > (list.len() - body_at) as u64 {
            return Err(corrupt(format!(
                "chunk {name:?} at byte {} claims {len} bytes; only {} remain before the footer",
                first + at as u64,
                list.len() - body_at
            )));
        }
        let body = &list[body_at..body_at + len as usize];
        match id {
            b"DAOI" | b"DAOX" => {
                let wide = id == b"DAOX";
                let entry = if wide { 42 } else { 30 };
                if body.len() < 22 {
                    return Err(corrupt(format!("{name} chunk of {len} bytes is too short")));
                }
                let first_track = body[20];
                let count = (body.len() - 22) / entry;
                if count > MAX_TRACKS || first_track == 0 || first_track as usize + count > 100 {
                    return Err(corrupt(format!(
                        "{name} chunk lists {count} tracks from track {first_track}"
                    )));
                }
                for i in 0..count {
                    let e = &body[22 + i * entry..22 + (i + 1) * entry];
                    let ss = u64::from(u16::from_be_bytes([e[12], e[13]]));
                    let code = u64::from(e[14]);
                    let number = first_track + i as u8;
                    let (mode, want) = mode_of(code).ok_or_else(|| {
                        Error::Unsupported(format!(
                            "nrg track {number}: mode code 0x{code:02x} (sector size {ss})"
                        ))
                    })?;
                    if ss != want {
                        return Err(corrupt(format!(
                            "{name} track {number}: mode code 0x{code:02x} with sector size {ss} \
                             (expected {want})"
                        )));
                    }
                    let (i0, i1, end) = if wide {
                        (be64(e, 18), be64(e, 26), be64(e, 34))
                    } else {
                        (be32(e, 18), be32(e, 22), be32(e, 26))
                    };
                    if !(i0 <= i1 && i1 <= end && end <= first) {
                        return Err(corrupt(format!(
                            "{name} track {number}: index 0 at byte {i0}, index 1 at {i1}, end at \
                             {end}: not in order within the {first} bytes of sectors"
                        )));
                    }
                    raws.push(Raw {
                        number,
                        mode,
                        ss,
                        index0: (i0 < i1).then_some(i0),
                        index1: i1,
                        end,
                        lba: None,
                        lba0: None,
                    });
                }
            }
            b"ETNF" | b"ETN2" => {
                let wide = id == b"ETN2";
                let entry = if wide { 32 } else { 20 };
                let count = body.len() / entry;
                if raws.len() + count > MAX_TRACKS {
                    return Err(corrupt(format!("{name} chunk lists {count} more tracks")));
                }
                for i in 0..count {
                    let e = &body[i * entry..(i + 1) * entry];
                    let (off, blen, code, lsn) = if wide {
                        (be64(e, 0), be64(e, 8), be32(e, 16), be32(e, 20))
                    } else {
                        (be32(e, 0), be32(e, 4), be32(e, 8), be32(e, 12))
                    };
                    let number = (raws.len() + 1) as u8;
                    let (mode, ss) = mode_of(code).ok_or_else(|| {
                        Error::Unsupported(format!("nrg track {number}: mode code 0x{code:02x}"))
                    })?;
                    let end = off
                        .checked_add(blen)
                        .filter(|&e| e <= first)
                        .ok_or_else(|| {
                            corrupt(format!(
                                "{name} track {number}: {blen} bytes at byte {off} reach past the \
                             {first} bytes of sectors"
                            ))
                        })?;
                    raws.push(Raw {
                        number,
                        mode,
                        ss,
                        index0: None,
                        index1: off,
                        end,
                        lba: Some(i64::from(lsn as u32)),
                        lba0: None,
                    });
                }
            }
            b"CUEX" => {
                for e in body.chunks_exact(8).take(400) {
                    let bcd = |b: u8| (b >> 4) * 10 + (b & 15);
                    let lsn = i64::from(u32::from_be_bytes([e[4], e[5], e[6], e[7]]) as i32);
                    cuex.push((bcd(e[1]), bcd(e[2]), lsn));
                }
            }
            b"SINF" if sessions.len() < MAX_TRACKS => sessions.push(be32(body, 0)),
            b"END!" => {
                seen_end = true;
                break;
            }
            _ => {}
        }
        at = body_at + len as usize;
    }
    if !seen_end && at + 8 <= list.len() {
        return Err(corrupt("chunk list ends without END!".into()));
    }
    if raws.is_empty() {
        return Err(corrupt(
            "no DAOI, DAOX, ETNF or ETN2 chunk: no tracks".into(),
        ));
    }
    for r in &mut raws {
        if r.lba.is_none() {
            r.lba = cuex
                .iter()
                .find(|c| c.0 == r.number && c.1 == 1)
                .map(|c| c.2);
            r.lba0 = cuex
                .iter()
                .find(|c| c.0 == r.number && c.1 == 0)
                .map(|c| c.2);
        }
    }
    // Sessions: SINF counts tracks per session, in order.
    let mut session_of = Vec::with_capacity(raws.len());
    let mut s = 1u8;
    let mut left = sessions.first().copied().unwrap_or(u64::MAX);
    let mut si = 0usize;
    for _ in &raws {
        while left == 0 && si + 1 < sessions.len() {
            si += 1;
            s = s.saturating_add(1);
            left = sessions[si];
        }
        session_of.push(s);
        left = left.saturating_sub(1);
    }
    let mut tracks = Vec::with_capacity(raws.len());
    let mut cursor = 0i64;
    let mut last_number = 0u8;
    for (r, session) in raws.iter().zip(session_of) {
        if r.number <= last_number {
            return Err(corrupt(format!(
                "track {} after track {last_number}",
                r.number
            )));
        }
        last_number = r.number;
        let length = (r.end - r.index1) / r.ss;
        let stored_gap = r.index0.map_or(0, |i0| (r.index1 - i0) / r.ss);
        let start = r.lba.unwrap_or(cursor + stored_gap as i64);
        let index0 = r
            .index0
            .map(|_| r.lba0.unwrap_or(start - stored_gap as i64));
        let lba = |v: i64| {
            u32::try_from(v.max(0))
                .ok()
                .filter(|&v| v <= 0x00FF_FFFF)
                .ok_or_else(|| {
                    corrupt(format!(
                        "track {} starts at sector {v}, past any CD",
                        r.number
                    ))
                })
        };
        cursor = start + length as i64;
        tracks.push(Track {
            number: r.number,
            session,
            mode: r.mode,
            sector_size: r.ss as u32,
            form2: false,
            start: lba(start)?,
            length: u32::try_from(length)
                .map_err(|_| corrupt(format!("track {} length", r.number)))?,
            index0: index0.map(lba).transpose()?,
            pregap: 0,
            file: String::new(),
            segments: vec![Segment {
                file: Some(0),
                offset: r.index1,
                sectors: length,
            }],
        });
    }
    let mut disc = CdDisc {
        tracks,
        files: vec![DiscFile {
            name: String::new(),
            src,
            swap_audio: false,
        }],
        warnings: Vec::new(),
    };
    disc.detect_forms();
    Ok(disc)
}

/// Recognises Nero images by their footer and opens their first data track.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Nrg
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["nrg"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.tail().is_some_and(|t| footer(t, p.size()).is_some())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let disc = parse_nrg(src.clone())?;
        super::sheet::sheet_step(Format::Nrg, &*src, disc, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    /// A v2 image: `sectors` audio sectors, then a DAOX chunk for one track.
    fn image(sectors: u64, daox_len: Option<u32>) -> Vec<u8> {
        let mut v = vec![0u8; (sectors * 2352) as usize];
        let first = v.len() as u64;
        let mut body = vec![0u8; 22];
        body[20] = 1;
        body[21] = 1;
        let mut e = vec![0u8; 42];
        e[12..14].copy_from_slice(&2352u16.to_be_bytes());
        e[14] = 7;
        e[26..34].copy_from_slice(&0u64.to_be_bytes());
        e[34..42].copy_from_slice(&first.to_be_bytes());
        body.extend(e);
        v.extend(b"DAOX");
        v.extend(daox_len.unwrap_or(body.len() as u32).to_be_bytes());
        v.extend(body);
        v.extend(b"END!\0\0\0\0");
        v.extend(b"NER5");
        v.extend(first.to_be_bytes());
        v
    }

    #[test]
    fn one_audio_track() {
        let d = parse_nrg(Arc::new(MemSource(image(10, None)))).unwrap();
        assert_eq!(d.tracks.len(), 1);
        assert_eq!(d.tracks[0].length, 10);
        assert_eq!(d.tracks[0].mode, TrackMode::Audio);
    }

    #[test]
    fn lying_chunk_size() {
        let e = parse_nrg(Arc::new(MemSource(image(10, Some(0xFFFF_FFF0)))))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("DAOX") && e.contains("claims"), "{e}");
    }
}
