//! CUE sheets: text naming the BIN files that hold a CD's tracks. The sheet is opened by
//! reading the first data track of the BIN it names as 2048-byte sectors.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{CdUserData, Track, TrackMode, MAX_TRACKS, RAW_SECTOR};
use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::{ReadAt, ReadAtExt};
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct CueFile {
    /// File name as written (relative to the sheet's directory).
    pub(crate) name: String,
    /// BINARY, MOTOROLA, WAVE, ...
    pub(crate) kind: String,
}

/// A parsed CUE sheet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CueSheet {
    /// FILE entries in order.
    pub(crate) files: Vec<CueFile>,
    /// Tracks in order.
    pub(crate) tracks: Vec<Track>,
}

impl CueSheet {
    /// The first data track, if any.
    pub(crate) fn first_data_track(&self) -> Option<&Track> {
        self.tracks.iter().find(|t| t.mode.is_data())
    }
}

/// Parses `mm:ss:ff` (75 frames per second) into a sector count.
pub(crate) fn msf(s: &str) -> Option<u32> {
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
    if text.len() > MAX_CUE_BYTES {
        return Err(Error::corrupt(
            "cue sheet",
            format!("{} bytes is too large", text.len()),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sheet = CueSheet::default();
    for (ln, line) in text.lines().enumerate() {
        sheet
            .line(&words(line))
            .map_err(|d| Error::corrupt("cue sheet", format!("line {}: {d}", ln + 1)))?;
    }
    if sheet.tracks.is_empty() {
        return Err(Error::corrupt("cue sheet", "no TRACK lines"));
    }
    Ok(sheet)
}

impl CueSheet {
    /// Adds what one line (split into words) says; the error is what is wrong with it.
    fn line(&mut self, w: &[String]) -> Result<(), String> {
        let Some(kw) = w.first() else {
            return Ok(());
        };
        match kw.to_ascii_uppercase().as_str() {
            "FILE" => {
                if w.len() < 3 {
                    return Err("FILE needs a name and a type".into());
                }
                if self.files.len() >= MAX_TRACKS {
                    return Err("too many FILE lines".into());
                }
                let kind = w[w.len() - 1].to_ascii_uppercase();
                let name = w[1..w.len() - 1].join(" ");
                self.files.push(CueFile { name, kind });
            }
            "TRACK" => self.track(w)?,
            "INDEX" => {
                let t = self.tracks.last_mut().ok_or("INDEX before TRACK")?;
                let (Some(i), Some(at)) = (w.get(1), w.get(2)) else {
                    return Err("INDEX needs a number and a time".into());
                };
                let at = msf(at).ok_or_else(|| format!("bad time {at:?}"))?;
                match i.parse::<u8>() {
                    Ok(0) => t.index0 = Some(at),
                    Ok(1) => t.start = at,
                    Ok(x) if x <= 99 => {}
                    _ => return Err(format!("index number {i:?}")),
                }
            }
            "PREGAP" => {
                let t = self.tracks.last_mut().ok_or("PREGAP before TRACK")?;
                t.pregap = w.get(1).and_then(|s| msf(s)).ok_or("bad PREGAP time")?;
            }
            "REM" | "CATALOG" | "PERFORMER" | "TITLE" | "SONGWRITER" | "CDTEXTFILE" | "FLAGS"
            | "ISRC" | "POSTGAP" => {}
            other => return Err(format!("unknown keyword {other:?}")),
        }
        Ok(())
    }

    /// A TRACK line: number and mode, in the last FILE.
    fn track(&mut self, w: &[String]) -> Result<(), String> {
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
        self.tracks.push(Track {
            number,
            mode: TrackMode::parse(mode),
            file: self.files.len() - 1,
            index0: None,
            start: 0,
            pregap: 0,
        });
        Ok(())
    }
}

/// Recognises CUE sheets and opens the first data track of the BIN they name.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Cue
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.size() <= MAX_CUE_BYTES as u64 && looks_like_cue(p.head())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        if ctx.sibling_dir().is_none() {
            // A sheet inside an archive or in memory cannot reach the files it names.
            return Ok(Step::end(Layer::stored(Format::Cue, &*src, None)));
        }
        let text = src.read_upto(0, MAX_CUE_BYTES)?;
        let sheet = parse_cue(&String::from_utf8_lossy(&text))?;
        let t = sheet
            .first_data_track()
            .ok_or_else(|| Error::Unsupported("CUE sheet has no data track (audio CD)".into()))?
            .clone();
        let file = sheet
            .files
            .get(t.file)
            .ok_or_else(|| Error::corrupt("cue sheet", "track without file"))?;
        let bin = ctx.sibling(&file.name).map_err(|e| {
            Error::Format(format!(
                "CUE sheet refers to {:?}, which cannot be opened: {e}",
                file.name
            ))
        })?;
        let sheet_layer = Layer::stored(
            Format::Cue,
            &*src,
            Some(format!(
                "{} track(s); data track {} {:?} in {:?}",
                sheet.tracks.len(),
                t.number,
                t.mode,
                file.name
            )),
        );
        let ss = t.mode.sector_size().unwrap_or(RAW_SECTOR);
        let bin_layer = Layer::stored(
            Format::CdRaw,
            &*bin,
            Some(format!("{:?} sectors of {ss} bytes", t.mode)),
        );
        // The data track runs to the next track in the same file, or the file's end.
        let next = sheet
            .tracks
            .iter()
            .find(|n| n.number > t.number && n.file == t.file)
            .map(|n| u64::from(n.start.saturating_sub(t.start)));
        let user = CdUserData::new(
            bin,
            u64::from(t.start) * ss,
            ss,
            t.mode.user_data_offset().unwrap_or(16),
            next,
        )?;
        ctx.set_cd_tracks(sheet.tracks);
        Ok(Step {
            layers: vec![sheet_layer, bin_layer],
            inner: Some(Arc::new(user)),
            tail_is_free: false,
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
