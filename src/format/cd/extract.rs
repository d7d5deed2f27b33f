//! Writing a disc's tracks out as files, the way `bchunk` does: data tracks as their user
//! data (`.iso`), audio tracks as WAV (the 44-byte RIFF header `bchunk -w` writes, then the
//! PCM as stored) or raw (`.cdr`, the PCM as stored, as bchunk without `-w`).
//!
//! Names: the first data track goes to the path given (`disc.iso`); every other track to
//! `STEM-NN.EXT` beside it (`disc-02.wav`), NN the track number: bchunk's `BASENN.EXT` with
//! `STEM-` as the base. An audio CD gets only `STEM-NN.wav` files. EXT is `iso` for data,
//! `dat` for a MODE2 form 2 track (2324 bytes a sector, a Video CD's MPEG stream), `wav` or
//! `cdr` for audio. Every file is written under a temporary name and renamed into place only
//! once all of them are written and synced.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{submode_is_form2, CdDisc, TrackMode, RAW_SECTOR};
use crate::io::atomic::AtomicFile;
use crate::io::{FileSource, ReadAt, ReadAtExt};
use crate::Error;

/// How audio tracks are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioFormat {
    /// WAV: 16-bit stereo 44.1 kHz PCM after a 44-byte RIFF header, as `bchunk -w` writes.
    Wav,
    /// The raw PCM (little-endian), as `bchunk` writes `.cdr` files without `-w`.
    Raw,
}

/// What [`extract`] writes and whether it may replace files.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    /// How audio tracks are written.
    pub audio: AudioFormat,
    /// Replace files that exist; without it, an existing output is an error and nothing is
    /// written.
    pub overwrite: bool,
}

/// One file [`extract`] wrote.
#[derive(Clone, Debug)]
pub struct WrittenTrack {
    /// Track number.
    pub number: u8,
    /// The track's mode.
    pub mode: TrackMode,
    /// The file written.
    pub path: PathBuf,
    /// Sectors written.
    pub sectors: u64,
    /// Bytes written, header included.
    pub bytes: u64,
    /// MODE2 sectors of form 2 inside a form 1 track (a Video CD's or PlayStation disc's
    /// data track): only their first 2048 of 2324 user bytes are in the `.iso`, exactly as
    /// bchunk writes them, so the ISO's sector numbers stay the disc's.
    pub form2_sectors: u64,
}

/// The 44-byte RIFF/WAVE header `bchunk -w` writes before `data_len` bytes of CD audio:
/// PCM, 2 channels, 44100 Hz, 176400 bytes a second, 4-byte frames, 16 bits.
pub fn wav_header(data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.wrapping_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&2u16.to_le_bytes());
    h[24..28].copy_from_slice(&44100u32.to_le_bytes());
    h[28..32].copy_from_slice(&(44100u32 * 4).to_le_bytes());
    h[32..34].copy_from_slice(&4u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Opens a CD image by its bytes: a Nero image (its footer), a cdrdao TOC sheet or a CUE
/// sheet (their keywords; the files they name are looked for beside it), or a lone BIN of raw
/// 2352-byte data sectors (one track, its mode from the first sector's header).
pub fn open_disc(path: &Path) -> crate::Result<CdDisc> {
    let src: Arc<dyn ReadAt> = Arc::new(FileSource::open(path)?);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let size = src.size();
    let tail = src.read_upto(size.saturating_sub(12), 12)?;
    if super::nrg::footer_at(&tail, size) {
        return super::nrg::parse_nrg(src);
    }
    let head = src.read_upto(0, super::cue::MAX_CUE_BYTES)?;
    if size <= super::toc::MAX_TOC_BYTES as u64 && super::toc::looks_like_toc(&head) {
        return super::toc::parse_toc(&String::from_utf8_lossy(&head))?.resolve(&dir);
    }
    if size <= super::cue::MAX_CUE_BYTES as u64 && super::cue::looks_like_cue(&head) {
        return super::cue::parse_cue(&String::from_utf8_lossy(&head))?.resolve(&dir);
    }
    if let Some(mode) = super::raw_sector_mode(&head) {
        return Ok(super::bin::lone_bin_disc(src, mode, path));
    }
    Err(Error::Format(
        "not a CD image this reads (a CUE or cdrdao TOC sheet, a Nero .nrg, or raw 2352-byte \
         sectors)"
            .into(),
    ))
}

/// Where track `number` goes: `out` for the first data track, `STEM-NN.EXT` beside it
/// otherwise.
fn track_path(out: &Path, number: u8, ext: &str, first_data: bool) -> PathBuf {
    if first_data {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map_or_else(|| "track".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{number:02}.{ext}"))
}

/// Writes every track of `disc`: the first data track to `out`, the others beside it (see
/// the module's doc for the names). Nothing appears under a final name unless every track
/// was written; with `overwrite` unset an existing output is an error before anything is
/// written.
pub fn extract(
    disc: &CdDisc,
    out: &Path,
    opts: &ExtractOptions,
) -> crate::Result<Vec<WrittenTrack>> {
    let first_data = disc.tracks.iter().position(|t| t.mode.is_data());
    let mut plan = Vec::with_capacity(disc.tracks.len());
    for (i, t) in disc.tracks.iter().enumerate() {
        let ext = match (t.mode.is_audio(), opts.audio, t.form2) {
            (true, AudioFormat::Wav, _) => "wav",
            (true, AudioFormat::Raw, _) => "cdr",
            (false, _, true) => "dat",
            (false, _, false) => "iso",
        };
        let p = track_path(out, t.number, ext, Some(i) == first_data);
        if !opts.overwrite && p.exists() {
            return Err(Error::Format(format!(
                "{} exists (give --force to replace it)",
                p.display()
            )));
        }
        plan.push((i, p));
    }
    let mut pending = Vec::with_capacity(plan.len());
    let mut written = Vec::with_capacity(plan.len());
    for (i, path) in plan {
        let t = &disc.tracks[i];
        let data = disc.track_data(i).expect("index in range");
        let user = data.user_sector();
        let total = data.sectors();
        let mut file = AtomicFile::create(&path)
            .map_err(|e| Error::Format(format!("cannot create {}: {e}", path.display())))?;
        let mut bytes = 0u64;
        let mut form2_sectors = 0u64;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            if t.mode.is_audio() && opts.audio == AudioFormat::Wav {
                let len = total
                    .checked_mul(RAW_SECTOR)
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|l| l.checked_add(36).is_some())
                    .ok_or_else(|| {
                        Error::Unsupported(format!(
                            "track {}: {total} sectors of audio do not fit a WAV file (4 GiB)",
                            t.number
                        ))
                    })?;
                w.write_all(&wav_header(len))?;
                bytes += 44;
            }
            let stored = data.stored_sector();
            let submode = if t.form2 { None } else { data.submode_at() };
            const BATCH: u64 = 256;
            let mut buf = vec![0u8; (BATCH * stored) as usize];
            let mut sec = 0u64;
            while sec < total {
                let n = BATCH.min(total - sec);
                let got = data.read_stored(sec, n, &mut buf[..(n * stored) as usize])?;
                for k in 0..got as usize {
                    let s = &mut buf[k * stored as usize..(k + 1) * stored as usize];
                    if let Some(at) = submode {
                        if submode_is_form2(s[at]) {
                            form2_sectors += 1;
                        }
                    }
                    w.write_all(data.user_bytes(s))?;
                }
                if got < n {
                    return Err(Error::Format(format!(
                        "track {}: its file ends after {} of its {total} sectors",
                        t.number,
                        sec + got
                    )));
                }
                sec += n;
            }
            w.flush()?;
            bytes += total * user;
        }
        pending.push(file);
        written.push(WrittenTrack {
            number: t.number,
            mode: t.mode,
            path,
            sectors: total,
            bytes,
            form2_sectors,
        });
    }
    for f in pending {
        f.commit()?;
    }
    Ok(written)
}
