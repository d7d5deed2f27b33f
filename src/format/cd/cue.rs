//! CUE sheets: text naming the BIN files that hold a CD's tracks. The sheet is opened by
//! reading the first data track of the BIN it names as 2048-byte sectors.

use std::path::Path;
use std::sync::Arc;

use super::{
    open_named, CdDisc, DiscFile, Segment, Track, TrackMode, FIRST_SESSION_GAP, LATER_SESSION_GAP,
    MAX_TRACKS, MSF_OFFSET,
};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt, Slice};
use crate::Error;

impl Format {
    /// CUE sheet (text) describing BIN track files.
    #[allow(non_upper_case_globals)]
    pub const Cue: Format = Format::new("cue", "cue sheet", Kind::Cd);
}

/// Largest CUE sheet we parse, and largest file we would consider to be one (real ones are a
/// few KiB).
pub(crate) const MAX_CUE_BYTES: usize = 1 << 20;

/// CUE keywords a sheet's lines may start with.
const CUE_KEYWORDS: &[&str] = &[
    "REM",
    "FILE",
    "CATALOG",
    "PERFORMER",
    "TITLE",
    "SONGWRITER",
    "CDTEXTFILE",
    "TRACK",
    "INDEX",
    "FLAGS",
    "ISRC",
    "PREGAP",
    "POSTGAP",
];

/// A FILE line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CueFile {
    /// File name as written (relative to the sheet's directory).
    pub(crate) name: String,
    /// BINARY, MOTOROLA, WAVE, ...
    pub(crate) kind: String,
}

/// A TRACK of a CUE sheet, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CueTrack {
    pub(crate) number: u8,
    pub(crate) mode: TrackMode,
    pub(crate) session: u8,
    /// Index into [`CueSheet::files`].
    pub(crate) file: usize,
    /// INDEX 00, in sectors from the start of the file.
    pub(crate) index0: Option<u32>,
    /// INDEX 01 (the track's start) in sectors from the start of the file.
    pub(crate) index1: Option<u32>,
    /// The first INDEX line's time: where the previous track in the same file ends.
    pub(crate) first_index: Option<u32>,
    /// The last INDEX line's time, where bchunk starts the track.
    pub(crate) last_index: u32,
    pub(crate) pregap: u32,
    pub(crate) postgap: u32,
    /// The TRACK line's number, for messages.
    pub(crate) line: usize,
    /// Its INDEX 00 was at the end of the previous FILE (see [`CueSheet::cut`]).
    pub(crate) moved_pregap: bool,
}

/// A parsed CUE sheet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CueSheet {
    /// FILE entries in order.
    pub(crate) files: Vec<CueFile>,
    /// Tracks in order.
    pub(crate) tracks: Vec<CueTrack>,
    /// Session of the tracks that follow (REM SESSION nn).
    session: u8,
    /// Per FILE: where its last track ends when the file also holds the next track's pregap
    /// (the next track's INDEX 00, its INDEX 01 in the next FILE: EAC's default layout).
    pub(crate) cut: Vec<Option<u32>>,
}

impl CueSheet {
    /// Number of tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }
}

/// Parses `mm:ss:ff` (75 frames per second) into a sector count.
pub(crate) fn msf(s: &str) -> Option<u32> {
    let mut it = s.split(':');
    let mut part = || -> Option<u32> {
        let p = it.next()?.trim();
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (m, sec, f) = (part()?, part()?, part()?);
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

/// Parses a CUE sheet. Errors name the line and what is wrong with it: an unknown track mode
/// names the mode.
pub fn parse_cue(text: &str) -> crate::Result<CueSheet> {
    if text.len() > MAX_CUE_BYTES {
        return Err(Error::corrupt(
            "cue sheet",
            format!("{} bytes is too large", text.len()),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sheet = CueSheet {
        session: 1,
        ..CueSheet::default()
    };
    for (ln, line) in text.lines().enumerate() {
        sheet
            .line(&words(line), ln + 1)
            .map_err(|d| Error::corrupt("cue sheet", format!("line {}: {d}", ln + 1)))?;
    }
    if sheet.tracks.is_empty() {
        return Err(Error::corrupt("cue sheet", "no TRACK lines"));
    }
    for t in &sheet.tracks {
        if t.index1.is_none() {
            return Err(Error::corrupt(
                "cue sheet",
                format!("line {}: track {} has no INDEX 01", t.line, t.number),
            ));
        }
    }
    Ok(sheet)
}

impl CueSheet {
    /// Adds what one line (split into words) says; the error is what is wrong with it.
    fn line(&mut self, w: &[String], ln: usize) -> Result<(), String> {
        let Some(kw) = w.first() else {
            return Ok(());
        };
        match kw.to_ascii_uppercase().as_str() {
            "FILE" => {
                if w.len() < 3 {
                    return Err("FILE needs a name and a type".into());
                }
                if self.files.len() >= MAX_TRACKS {
                    return Err(format!("more than {MAX_TRACKS} FILE lines"));
                }
                let kind = w[w.len() - 1].to_ascii_uppercase();
                let name = w[1..w.len() - 1].join(" ");
                self.files.push(CueFile { name, kind });
                self.cut.push(None);
            }
            "TRACK" => self.track(w, ln)?,
            "INDEX" => self.index(w)?,
            "PREGAP" | "POSTGAP" => {
                let t = self.tracks.last_mut().ok_or(format!("{kw} before TRACK"))?;
                let at = w.get(1).ok_or(format!("{kw} needs a time"))?;
                let v = msf(at).ok_or_else(|| format!("bad {kw} time {at:?}"))?;
                if kw.eq_ignore_ascii_case("PREGAP") {
                    t.pregap = v;
                } else {
                    t.postgap = v;
                }
            }
            "REM" => {
                // REM SESSION nn: the tracks that follow are in session nn.
                if w.get(1).is_some_and(|k| k.eq_ignore_ascii_case("SESSION")) {
                    let n = w.get(2).ok_or("REM SESSION needs a number")?;
                    let n: u8 = n
                        .parse()
                        .ok()
                        .filter(|v| (1..=99).contains(v))
                        .ok_or_else(|| format!("session number {n:?}"))?;
                    if n < self.session {
                        return Err(format!("session {n} after session {}", self.session));
                    }
                    self.session = n;
                }
            }
            "CATALOG" => {
                let c = w.get(1).ok_or("CATALOG without a number")?;
                if c.len() != 13 || !c.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("CATALOG {c:?} is not 13 digits"));
                }
            }
            "PERFORMER" | "TITLE" | "SONGWRITER" | "CDTEXTFILE" | "FLAGS" | "ISRC" => {}
            other => return Err(format!("unknown keyword {other:?}")),
        }
        Ok(())
    }

    /// A TRACK line: number and mode, in the last FILE.
    fn track(&mut self, w: &[String], ln: usize) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("TRACK before any FILE".into());
        }
        if self.tracks.len() >= MAX_TRACKS {
            return Err(format!("more than {MAX_TRACKS} tracks"));
        }
        let (Some(num), Some(mode)) = (w.get(1), w.get(2)) else {
            return Err("TRACK needs a number and a mode".into());
        };
        let number: u8 = num
            .parse()
            .ok()
            .filter(|v| (1..=99).contains(v))
            .ok_or_else(|| format!("track number {num:?}"))?;
        if let Some(prev) = self.tracks.last() {
            if number <= prev.number {
                return Err(format!("track {number} after track {}", prev.number));
            }
        }
        let mode = TrackMode::parse(mode).ok_or_else(|| {
            let known: Vec<&str> = TrackMode::CUE_NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "track {number} has mode {mode:?}, which is not a CUE track mode ({})",
                known.join(", ")
            )
        })?;
        self.tracks.push(CueTrack {
            number,
            mode,
            session: self.session,
            file: self.files.len() - 1,
            index0: None,
            index1: None,
            first_index: None,
            last_index: 0,
            pregap: 0,
            postgap: 0,
            line: ln,
            moved_pregap: false,
        });
        Ok(())
    }

    /// An INDEX line: its number and time, in the last TRACK.
    fn index(&mut self, w: &[String]) -> Result<(), String> {
        let file = self.files.len().checked_sub(1);
        let (Some(i), Some(at)) = (w.get(1), w.get(2)) else {
            return Err("INDEX needs a number and a time".into());
        };
        let at_s = msf(at).ok_or_else(|| format!("bad time {at:?}"))?;
        let i: u8 = i
            .parse()
            .ok()
            .filter(|v| *v <= 99)
            .ok_or_else(|| format!("index number {i:?}"))?;
        let t = self.tracks.last_mut().ok_or("INDEX before TRACK")?;
        if Some(t.file) != file {
            // The track's INDEX 00 was in the previous FILE and its INDEX 01 is in this one
            // (EAC's "gaps appended to the previous track"): the pregap ends the previous
            // file, and the track starts in this one.
            if i != 1 || t.index1.is_some() || t.index0.is_none() {
                return Err(
                    "INDEX in a FILE after its TRACK's (only INDEX 01 may follow INDEX 00 there)"
                        .into(),
                );
            }
            let old = t.file;
            let cut = t.index0;
            t.file = file.unwrap_or(old);
            t.index0 = None;
            t.first_index = None;
            t.last_index = 0;
            t.moved_pregap = true;
            if let Some(c) = self.cut.get_mut(old) {
                *c = cut;
            }
        }
        let t = self.tracks.last_mut().ok_or("INDEX before TRACK")?;
        if t.first_index.is_some() && at_s < t.last_index {
            return Err(format!(
                "INDEX {i:02} {at} goes back before the track's previous index"
            ));
        }
        match i {
            0 if t.index1.is_some() || t.index0.is_some() => {
                return Err("INDEX 00 after another index of the track".into())
            }
            0 => t.index0 = Some(at_s),
            1 if t.index1.is_some() => return Err("a second INDEX 01".into()),
            1 => t.index1 = Some(at_s),
            _ if t.index1.is_none() => return Err(format!("INDEX {i:02} before INDEX 01")),
            _ => {}
        }
        t.first_index.get_or_insert(at_s);
        t.last_index = at_s;
        Ok(())
    }
}

/// Opens a FILE of the sheet: BINARY and MOTOROLA as they are, WAVE as its PCM data.
fn open_file(dir: &Path, f: &CueFile) -> crate::Result<DiscFile> {
    let src = open_named(dir, &f.name, "CUE sheet")?;
    match f.kind.as_str() {
        "BINARY" | "MOTOROLA" => Ok(DiscFile {
            name: f.name.clone(),
            src,
            swap_audio: f.kind == "MOTOROLA",
        }),
        "WAVE" => {
            let (at, len) = wave_data(&*src).map_err(|d| {
                Error::corrupt("WAVE file", format!("{}: {d}", f.name))
            })?;
            Ok(DiscFile {
                name: f.name.clone(),
                src: Arc::new(Slice::new(src, at, len)),
                swap_audio: false,
            })
        }
        other => Err(Error::Unsupported(format!(
            "CUE FILE {:?} of type {other} (only BINARY, MOTOROLA and 16-bit PCM WAVE files are read)",
            f.name
        ))),
    }
}

/// Finds the PCM data of a WAVE file (16-bit stereo 44.1 kHz, as CD audio): its offset and
/// length. Looks at no more than 64 chunks.
fn wave_data(src: &dyn ReadAt) -> Result<(u64, u64), String> {
    let h = src.read_upto(0, 12).map_err(|e| e.to_string())?;
    if h.len() < 12 || &h[..4] != b"RIFF" || &h[8..12] != b"WAVE" {
        return Err("no RIFF WAVE header".into());
    }
    let mut at = 12u64;
    for _ in 0..64 {
        let c = src.read_upto(at, 8).map_err(|e| e.to_string())?;
        if c.len() < 8 {
            break;
        }
        let len = u64::from(u32::from_le_bytes([c[4], c[5], c[6], c[7]]));
        if &c[..4] == b"fmt " {
            let f = src.read_upto(at + 8, 16).map_err(|e| e.to_string())?;
            if f.len() < 16 || f[0..2] != [1, 0] || f[2..4] != [2, 0] || f[14..16] != [16, 0] {
                return Err("not 16-bit stereo PCM".into());
            }
        }
        if &c[..4] == b"data" {
            let avail = src.size().saturating_sub(at + 8);
            return Ok((at + 8, len.min(avail)));
        }
        at = at + 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

impl CueSheet {
    /// Resolves the sheet against the files it names (found in `dir`): every track's place
    /// on the disc and in its file.
    ///
    /// A track runs from its INDEX 01 to the first INDEX of the next track in the same file
    /// (INDEX 00 when it has one), or to the end of its file, in whole sectors: the stored
    /// pregap between INDEX 00 and INDEX 01 belongs to neither, as with bchunk. PREGAP and
    /// POSTGAP are silence no file holds; they only move later tracks on the disc.
    pub fn resolve(&self, dir: &Path) -> crate::Result<CdDisc> {
        let mut files = Vec::with_capacity(self.files.len());
        for f in &self.files {
            files.push(open_file(dir, f)?);
        }
        self.resolve_with(files)
    }

    /// Resolves the sheet with every file it names read from `src` (tests and fuzzing:
    /// no file system involved).
    pub fn resolve_over(&self, src: Arc<dyn ReadAt>) -> crate::Result<CdDisc> {
        let files = self
            .files
            .iter()
            .map(|f| DiscFile {
                name: f.name.clone(),
                src: src.clone(),
                swap_audio: false,
            })
            .collect();
        self.resolve_with(files)
    }

    /// [`resolve`](Self::resolve) over files already opened, one per FILE line.
    pub(crate) fn resolve_with(&self, files: Vec<DiscFile>) -> crate::Result<CdDisc> {
        let bad = |t: &CueTrack, d: String| {
            Error::corrupt(
                "cue sheet",
                format!("line {}: track {}: {d}", t.line, t.number),
            )
        };
        let mut tracks: Vec<Track> = Vec::with_capacity(self.tracks.len());
        // Disc LBA of the next sector, the session of the last track placed, and the
        // POSTGAP of the last track, placed before the next.
        let mut cursor: u64 = 0;
        let mut session = 1u8;
        let mut postgap = 0u64;
        // Disc LBA of the INDEX 00 of a track whose pregap ended the previous file.
        let mut moved_index0: Option<u64> = None;
        for (fi, f) in files.iter().enumerate() {
            let in_file: Vec<&CueTrack> = self.tracks.iter().filter(|t| t.file == fi).collect();
            // The sheet sector and file byte where the last placed track starts (INDEX 01),
            // and its sector size: spans are counted in the size of the track they belong to.
            let (mut pos_sec, mut pos_byte, mut span_size) = (0u64, 0u64, 0u64);
            for (k, t) in in_file.iter().enumerate() {
                let index1 = u64::from(t.index1.unwrap_or(0));
                let first = u64::from(t.first_index.unwrap_or(0));
                // The previous track of this file runs up to this one's first index.
                let span = first.checked_sub(pos_sec).ok_or_else(|| {
                    bad(
                        t,
                        format!(
                            "its first INDEX {} in {:?} comes before the previous track's INDEX 01",
                            super::msf_string(first),
                            f.name
                        ),
                    )
                })?;
                pos_byte += span * span_size;
                if k > 0 {
                    cursor += span;
                } else {
                    // A file's first track: what the file holds before its first index is
                    // neither track nor disc time.
                    pos_byte = first * t.mode.sector_size();
                }
                cursor += std::mem::take(&mut postgap);
                if t.session > session {
                    cursor += u64::from(if session == 1 {
                        FIRST_SESSION_GAP
                    } else {
                        LATER_SESSION_GAP
                    });
                    if t.pregap == 0 && t.index0.is_none() {
                        cursor += u64::from(MSF_OFFSET);
                    }
                    session = t.session;
                }
                cursor += u64::from(t.pregap);
                let index0_lba = t
                    .index0
                    .map(|_| cursor)
                    .or(moved_index0.take().filter(|_| t.moved_pregap));
                let size = t.mode.sector_size();
                pos_byte += (index1 - first) * size;
                cursor += index1 - first;
                let start_byte = pos_byte;
                let start = cursor;
                (pos_sec, span_size) = (index1, size);
                // Its end: the next track's first index in this file, or the file's end.
                let length = match in_file.get(k + 1) {
                    Some(n) => u64::from(n.first_index.unwrap_or(0))
                        .checked_sub(index1)
                        .ok_or_else(|| {
                            bad(
                                n,
                                "its first INDEX comes before the previous track's INDEX 01".into(),
                            )
                        })?,
                    None => {
                        // The last track of a file runs to the file's end, or to the next
                        // track's INDEX 00 when the file ends with that pregap.
                        let whole = f.src.size().saturating_sub(start_byte) / size;
                        let l = match self.cut.get(fi).copied().flatten() {
                            Some(c) => u64::from(c).checked_sub(index1).ok_or_else(|| {
                                bad(t, "the next track's INDEX 00 comes before INDEX 01".into())
                            })?,
                            None => whole,
                        }
                        .min(whole);
                        cursor += l;
                        if self.cut.get(fi).copied().flatten().is_some() {
                            moved_index0 = Some(cursor);
                            cursor += whole - l;
                        }
                        l
                    }
                };
                let lba = u32::try_from(start)
                    .ok()
                    .filter(|&v| v <= 0x00FF_FFFF)
                    .ok_or_else(|| bad(t, format!("starts at sector {start}, past any CD")))?;
                let length32 =
                    u32::try_from(length).map_err(|_| bad(t, format!("{length} sectors long")))?;
                tracks.push(Track {
                    number: t.number,
                    session: t.session,
                    mode: t.mode,
                    sector_size: size as u32,
                    form2: false,
                    start: lba,
                    length: length32,
                    index0: index0_lba.map(|v| v.min(u64::from(u32::MAX)) as u32),
                    pregap: t.pregap,
                    file: f.name.clone(),
                    segments: vec![Segment {
                        file: Some(fi),
                        offset: start_byte,
                        sectors: length,
                    }],
                });
                postgap = u64::from(t.postgap);
            }
        }
        let mut disc = CdDisc {
            tracks,
            files,
            warnings: Vec::new(),
        };
        disc.detect_forms();
        Ok(disc)
    }
}

/// Recognises CUE sheets and opens the first data track of the files they name.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Cue
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["cue"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.size() <= MAX_CUE_BYTES as u64 && looks_like_cue(p.head())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::sheet::open_sheet(Format::Cue, MAX_CUE_BYTES, &*src, ctx, |text, dir| {
            parse_cue(text)?.resolve(dir)
        })
    }
}

/// Strict CUE sheet test: valid text, every non-blank line opens with a CUE keyword, and at
/// least one FILE and one TRACK line. Random text and other TOC formats do not pass.
pub fn looks_like_cue(head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.is_empty() || text.contains(&0) {
        return false;
    }
    // The head may cut a multi-byte character; decode what is valid.
    let s = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => {
            // Latin-1 sheets exist; require the bytes to be non-control at least.
            if text
                .iter()
                .any(|&c| c < 0x20 && !matches!(c, b'\r' | b'\n' | b'\t'))
            {
                return false;
            }
            return looks_like_cue_lines(&text.iter().map(|&c| c as char).collect::<String>());
        }
    };
    looks_like_cue_lines(s)
}

fn looks_like_cue_lines(s: &str) -> bool {
    let (mut file, mut track) = (false, false);
    let mut lines = s.lines().peekable();
    let mut seen = 0usize;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        // The head may end mid-line: don't judge the last, possibly cut, line.
        if lines.peek().is_none() && seen > 0 && !s.ends_with('\n') {
            break;
        }
        if t.chars().any(|c| c.is_control() && c != '\t') {
            return false;
        }
        let kw = t
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if !CUE_KEYWORDS.contains(&kw.as_str()) {
            return false;
        }
        file |= kw == "FILE";
        track |= kw == "TRACK";
        seen += 1;
    }
    file && track
}

/// True if a CUE sheet in `dir` names the file `name` in a FILE line.
pub(crate) fn sheet_names(dir: &Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten().take(10_000) {
        let p = e.path();
        let is_cue = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.eq_ignore_ascii_case("cue"));
        if !is_cue
            || e.metadata()
                .map_or(true, |m| m.len() > MAX_CUE_BYTES as u64)
        {
            continue;
        }
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        if let Ok(sheet) = parse_cue(&String::from_utf8_lossy(&text)) {
            if sheet
                .files
                .iter()
                .any(|f| Path::new(&f.name).file_name().and_then(|n| n.to_str()) == Some(name))
            {
                return true;
            }
        }
    }
    false
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
        assert_eq!(s.tracks[1].index1, Some((10 * 60 + 2) * 75));
        assert_eq!(s.tracks[1].pregap, 150);
        assert_eq!(s.tracks[0].mode, TrackMode::Mode1_2352);
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

    #[test]
    fn recognition_is_strict() {
        let cue = b"FILE \"a.bin\" BINARY\n  TRACK 01 MODE1/2352\n    INDEX 01 00:00:00\n";
        assert!(looks_like_cue(cue));
        assert!(!looks_like_cue(
            b"REM hello\nThis is a readme\nFILE x\nTRACK 1\n"
        ));
        assert!(!looks_like_cue(
            b"CD_ROM\n\nTRACK MODE1_RAW\nDATAFILE \"x.bin\"\n"
        ));
        assert!(!looks_like_cue(b"TITLE x\n"));
    }
}
