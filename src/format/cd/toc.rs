//! cdrdao TOC sheets: text naming the files (and silences) a CD's tracks are made of, as
//! `cdrdao read-cd` writes them and as cdrdao(1) documents them.
//!
//! Read: the disc types (CD_DA, CD_ROM, CD_ROM_XA, CD_I), CATALOG, CD_TEXT blocks (skipped),
//! and per TRACK its mode (AUDIO, MODE1, MODE1_RAW, MODE2, MODE2_FORM1, MODE2_FORM2,
//! MODE2_FORM_MIX, MODE2_RAW, with an optional RW/RW_RAW subchannel), its flags, and the
//! statements that give its sectors in order: `FILE`/`AUDIOFILE "name" [#offset] start
//! [length]`, `DATAFILE "name" [#offset] [length]`, `SILENCE length`, `ZERO [mode] length`,
//! `PREGAP length` (silence before INDEX 01), `START [time]` (INDEX 01, relative to the
//! track's first sector) and `INDEX time`. Times are `m:s:f`; a bare number is a count of
//! samples (4 bytes each) for FILE/AUDIOFILE and of bytes for DATAFILE. FIFO is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::cue::msf;
use super::{open_named, CdDisc, DiscFile, Segment, Track, TrackMode, MAX_SEGMENTS, MAX_TRACKS};
use crate::format::driver::{FormatDriver, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::io::ReadAt;
use crate::Error;

impl Format {
    /// cdrdao TOC sheet (text) describing the files of a CD's tracks.
    #[allow(non_upper_case_globals)]
    pub const Toc: Format = Format::new("toc", "cdrdao toc sheet", Kind::Cd);
}

/// Largest TOC sheet parsed (real ones are a few KiB, with CD-TEXT a few tens).
pub(crate) const MAX_TOC_BYTES: usize = 1 << 20;

/// Keywords a TOC sheet may open with (after comments).
const FIRST_KEYWORDS: &[&str] = &[
    "CD_DA",
    "CD_ROM",
    "CD_ROM_XA",
    "CD_I",
    "CATALOG",
    "CD_TEXT",
    "TRACK",
];

/// The TOC track modes, and the CUE mode each stores its sectors as.
const MODES: &[(&str, TrackMode)] = &[
    ("AUDIO", TrackMode::Audio),
    ("MODE1", TrackMode::Mode1_2048),
    ("MODE1_RAW", TrackMode::Mode1_2352),
    ("MODE2", TrackMode::Mode2_2336),
    ("MODE2_FORM1", TrackMode::Mode2_2048),
    ("MODE2_FORM2", TrackMode::Mode2_2324),
    ("MODE2_FORM_MIX", TrackMode::Mode2_2336),
    ("MODE2_RAW", TrackMode::Mode2_2352),
];

fn toc_mode(s: &str) -> Option<TrackMode> {
    MODES.iter().find(|(n, _)| *n == s).map(|&(_, m)| m)
}

/// A word of the sheet: its text, whether it was quoted, and its line.
#[derive(Clone, Debug)]
struct Tok {
    text: String,
    quoted: bool,
    line: usize,
}

/// Splits the sheet into words: `//` comments dropped, `"..."` strings kept whole (with `\"`
/// escapes), `{` and `}` words of their own.
fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line_no = ln + 1;
        let mut chars = line.chars().peekable();
        let mut cur = String::new();
        let push = |cur: &mut String, out: &mut Vec<Tok>| {
            if !cur.is_empty() {
                out.push(Tok {
                    text: std::mem::take(cur),
                    quoted: false,
                    line: line_no,
                });
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '/' if chars.peek() == Some(&'/') => break,
                '"' => {
                    push(&mut cur, &mut out);
                    let mut s = String::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    s.push(n);
                                }
                            }
                            '"' => {
                                closed = true;
                                break;
                            }
                            c => s.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!("line {line_no}: string not closed"));
                    }
                    out.push(Tok {
                        text: s,
                        quoted: true,
                        line: line_no,
                    });
                }
                '{' | '}' => {
                    push(&mut cur, &mut out);
                    out.push(Tok {
                        text: c.to_string(),
                        quoted: false,
                        line: line_no,
                    });
                }
                c if c.is_whitespace() => push(&mut cur, &mut out),
                c => cur.push(c),
            }
        }
        push(&mut cur, &mut out);
        if out.len() > MAX_TOC_BYTES {
            return Err("too many words".into());
        }
    }
    Ok(out)
}

/// Where a statement's sectors come from, before files are opened.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// Silence or zeros.
    Zero,
    /// A file named by the sheet (an index into [`TocSheet::files`]) from a byte offset.
    File { file: usize, offset: u64 },
}

/// How long a statement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Len {
    /// To the end of the file.
    Rest,
    Sectors(u64),
    Bytes(u64),
}

/// One run of a track's sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    source: Source,
    len: Len,
    line: usize,
}

/// A TRACK of a TOC sheet, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TocTrack {
    mode: TrackMode,
    /// Bytes per stored sector (the mode's, plus 96 with subchannel data).
    sector_size: u64,
    pieces: Vec<Piece>,
    /// INDEX 01 relative to the track's first sector: `None` until START or PREGAP; START
    /// without a time is recorded as the pieces so far (`Err(n)` = after n pieces).
    start: Option<Result<u64, usize>>,
    line: usize,
}

/// A parsed cdrdao TOC sheet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TocSheet {
    files: Vec<String>,
    tracks: Vec<TocTrack>,
}

impl TocSheet {
    /// Number of tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }
}

/// Parses a cdrdao TOC sheet. Errors name the line, and an unknown track mode names the mode.
pub fn parse_toc(text: &str) -> crate::Result<TocSheet> {
    if text.len() > MAX_TOC_BYTES {
        return Err(Error::corrupt(
            "toc sheet",
            format!("{} bytes is too large", text.len()),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let toks = tokens(text).map_err(|d| Error::corrupt("toc sheet", d))?;
    let mut p = Parser {
        toks: &toks,
        at: 0,
        sheet: TocSheet::default(),
        names: HashMap::new(),
        segments: 0,
    };
    p.run()
        .map_err(|(line, d)| Error::corrupt("toc sheet", format!("line {line}: {d}")))?;
    if p.sheet.tracks.is_empty() {
        return Err(Error::corrupt("toc sheet", "no TRACK statements"));
    }
    Ok(p.sheet)
}

struct Parser<'a> {
    toks: &'a [Tok],
    at: usize,
    sheet: TocSheet,
    names: HashMap<String, usize>,
    segments: usize,
}

type PResult<T> = Result<T, (usize, String)>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.at.min(self.toks.len().saturating_sub(1)))
            .map_or(0, |t| t.line)
    }

    fn want(&mut self, what: &str) -> PResult<Tok> {
        let line = self.line();
        self.next()
            .ok_or((line, format!("{what} expected at the end")))
    }

    fn string(&mut self, after: &str) -> PResult<Tok> {
        let t = self.want(&format!("a string after {after}"))?;
        if !t.quoted {
            return Err((
                t.line,
                format!("{after} needs a quoted string, not {:?}", t.text),
            ));
        }
        Ok(t)
    }

    /// Skips a `{ ... }` block (CD_TEXT), nested blocks included.
    fn skip_block(&mut self) -> PResult<()> {
        let open = self.want("{")?;
        if open.text != "{" || open.quoted {
            return Err((open.line, format!("{{ expected, not {:?}", open.text)));
        }
        let mut depth = 1usize;
        while depth > 0 {
            let t = self
                .next()
                .ok_or((open.line, "CD_TEXT block not closed".to_string()))?;
            match (t.quoted, t.text.as_str()) {
                (false, "{") => depth += 1,
                (false, "}") => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn run(&mut self) -> PResult<()> {
        while let Some(t) = self.next() {
            if t.quoted {
                return Err((t.line, format!("unexpected string {:?}", t.text)));
            }
            let in_track = !self.sheet.tracks.is_empty();
            match t.text.as_str() {
                "CD_DA" | "CD_ROM" | "CD_ROM_XA" | "CD_I" if !in_track => {}
                "CATALOG" if !in_track => {
                    let c = self.string("CATALOG")?;
                    if c.text.len() != 13 || !c.text.bytes().all(|b| b.is_ascii_digit()) {
                        return Err((c.line, format!("CATALOG {:?} is not 13 digits", c.text)));
                    }
                }
                "CD_TEXT" => self.skip_block()?,
                "TRACK" => self.track(&t)?,
                _ if !in_track => {
                    return Err((
                        t.line,
                        format!("unknown keyword {:?} before any TRACK", t.text),
                    ))
                }
                _ => self.statement(&t)?,
            }
        }
        Ok(())
    }

    fn track(&mut self, t: &Tok) -> PResult<()> {
        if self.sheet.tracks.len() >= MAX_TRACKS {
            return Err((t.line, format!("more than {MAX_TRACKS} tracks")));
        }
        let m = self.want("a mode after TRACK")?;
        let mode = toc_mode(&m.text).filter(|_| !m.quoted).ok_or_else(|| {
            let known: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
            (
                m.line,
                format!(
                    "track {} has mode {:?}, which is not a TOC track mode ({})",
                    self.sheet.tracks.len() + 1,
                    m.text,
                    known.join(", ")
                ),
            )
        })?;
        let mut sector_size = mode.sector_size();
        if let Some(s) = self.peek() {
            if !s.quoted && (s.text == "RW" || s.text == "RW_RAW") {
                self.at += 1;
                sector_size += 96;
            }
        }
        self.sheet.tracks.push(TocTrack {
            mode,
            sector_size,
            pieces: Vec::new(),
            start: None,
            line: t.line,
        });
        Ok(())
    }

    /// A length or start: `m:s:f` in sectors, else a number in `unit`s (samples or bytes).
    fn amount(&mut self, what: &str, samples: bool) -> PResult<Len> {
        let t = self.want(what)?;
        self.parse_amount(&t, samples)
    }

    fn parse_amount(&self, t: &Tok, samples: bool) -> PResult<Len> {
        if t.text.contains(':') {
            return msf(&t.text)
                .map(|s| Len::Sectors(u64::from(s)))
                .ok_or((t.line, format!("bad time {:?}", t.text)));
        }
        let n: u64 = t
            .text
            .parse()
            .ok()
            .filter(|_| !t.quoted && t.text.len() <= 15)
            .ok_or((t.line, format!("bad length {:?}", t.text)))?;
        Ok(Len::Bytes(if samples { n * 4 } else { n }))
    }

    /// True if the next word is a length or time (not a keyword).
    fn next_is_amount(&self) -> bool {
        self.peek()
            .is_some_and(|t| !t.quoted && t.text.bytes().next().is_some_and(|b| b.is_ascii_digit()))
    }

    fn file_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        self.sheet.files.push(name.to_string());
        self.names
            .insert(name.to_string(), self.sheet.files.len() - 1);
        self.sheet.files.len() - 1
    }

    fn push(&mut self, piece: Piece) -> PResult<()> {
        self.segments += 1;
        if self.segments > MAX_SEGMENTS {
            return Err((
                piece.line,
                format!("more than {MAX_SEGMENTS} file and silence statements"),
            ));
        }
        self.sheet
            .tracks
            .last_mut()
            .expect("in a track")
            .pieces
            .push(piece);
        Ok(())
    }

    fn statement(&mut self, t: &Tok) -> PResult<()> {
        let line = t.line;
        match t.text.as_str() {
            "NO" => {
                let w = self.want("COPY or PRE_EMPHASIS after NO")?;
                if w.text != "COPY" && w.text != "PRE_EMPHASIS" {
                    return Err((w.line, format!("NO {:?}", w.text)));
                }
            }
            "COPY" | "PRE_EMPHASIS" | "TWO_CHANNEL_AUDIO" | "FOUR_CHANNEL_AUDIO" => {}
            "ISRC" => {
                self.string("ISRC")?;
            }
            "SILENCE" => {
                let len = self.amount("a length after SILENCE", true)?;
                self.push(Piece {
                    source: Source::Zero,
                    len,
                    line,
                })?;
            }
            "ZERO" => {
                // ZERO [data mode] [subchannel mode] length
                while self.peek().is_some_and(|w| {
                    !w.quoted
                        && (toc_mode(&w.text).is_some() || w.text == "RW" || w.text == "RW_RAW")
                }) {
                    self.at += 1;
                }
                let len = self.amount("a length after ZERO", false)?;
                self.push(Piece {
                    source: Source::Zero,
                    len,
                    line,
                })?;
            }
            "FILE" | "AUDIOFILE" | "DATAFILE" => {
                let data = t.text == "DATAFILE";
                let name = self.string(&t.text)?;
                let file = self.file_index(&name.text);
                let mut offset = 0u64;
                if let Some(w) = self.peek() {
                    if !w.quoted && w.text.starts_with('#') {
                        let w = self.next().expect("peeked");
                        offset = w.text[1..]
                            .parse()
                            .ok()
                            .filter(|_| w.text.len() <= 16)
                            .ok_or((w.line, format!("bad byte offset {:?}", w.text)))?;
                    }
                }
                let sector = self.sheet.tracks.last().expect("in a track").sector_size;
                if !data {
                    let start = self.amount(&format!("a start time after {}", t.text), true)?;
                    let skip = match start {
                        Len::Sectors(s) => s.checked_mul(sector),
                        Len::Bytes(b) => Some(b),
                        Len::Rest => Some(0),
                    };
                    offset = skip
                        .and_then(|s| s.checked_add(offset))
                        .ok_or((line, "start offset overflows".to_string()))?;
                }
                // No length, or a zero one (as libcdio reads `00:00:00`): to the file's end.
                let len = match self.next_is_amount() {
                    true => match self.amount("a length", !data)? {
                        Len::Sectors(0) | Len::Bytes(0) => Len::Rest,
                        l => l,
                    },
                    false => Len::Rest,
                };
                self.push(Piece {
                    source: Source::File { file, offset },
                    len,
                    line,
                })?;
            }
            "FIFO" => {
                return Err((line, "FIFO (data from a named pipe) is not read".into()));
            }
            "START" => {
                let track = self.sheet.tracks.last().expect("in a track");
                if track.start.is_some() {
                    return Err((line, "a second START or PREGAP in the track".into()));
                }
                let v = if self.next_is_amount() {
                    match self.amount("a time after START", true)? {
                        Len::Sectors(s) => Ok(s),
                        _ => return Err((line, "START needs an m:s:f time".into())),
                    }
                } else {
                    Err(track.pieces.len())
                };
                self.sheet.tracks.last_mut().expect("in a track").start = Some(v);
            }
            "PREGAP" => {
                let track = self.sheet.tracks.last().expect("in a track");
                if track.start.is_some() || !track.pieces.is_empty() {
                    return Err((line, "PREGAP after the track's data or START".into()));
                }
                let Len::Sectors(s) = self.amount("a time after PREGAP", true)? else {
                    return Err((line, "PREGAP needs an m:s:f time".into()));
                };
                self.push(Piece {
                    source: Source::Zero,
                    len: Len::Sectors(s),
                    line,
                })?;
                self.sheet.tracks.last_mut().expect("in a track").start = Some(Ok(s));
            }
            "INDEX" => {
                self.amount("a time after INDEX", true)?;
            }
            other => return Err((line, format!("unknown keyword {other:?}"))),
        }
        Ok(())
    }
}

impl TocSheet {
    /// Resolves the sheet against the files it names (found in `dir`).
    pub fn resolve(&self, dir: &Path) -> crate::Result<CdDisc> {
        let mut files = Vec::with_capacity(self.files.len());
        for name in &self.files {
            files.push(DiscFile {
                name: name.clone(),
                src: open_named(dir, name, "TOC sheet")?,
                swap_audio: false,
            });
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
                name: f.clone(),
                src: src.clone(),
                swap_audio: false,
            })
            .collect();
        self.resolve_with(files)
    }

    /// Lays the tracks out one after the other from LBA 0: each track's pregap (before START)
    /// is INDEX 00, the rest from START on is the track. A statement reaching past its file's
    /// end is cut there, with a warning.
    pub(crate) fn resolve_with(&self, files: Vec<DiscFile>) -> crate::Result<CdDisc> {
        let mut tracks = Vec::with_capacity(self.tracks.len());
        let mut warnings = Vec::new();
        let mut cursor = 0u64;
        for (ti, t) in self.tracks.iter().enumerate() {
            let number = (ti + 1) as u8;
            let ss = t.sector_size;
            // The track's pieces as segments.
            let mut segs: Vec<Segment> = Vec::with_capacity(t.pieces.len());
            let mut start_after = None;
            for (pi, p) in t.pieces.iter().enumerate() {
                if t.start == Some(Err(pi)) {
                    start_after = Some(segs.iter().map(|s| s.sectors).sum::<u64>());
                }
                let (file, offset, avail) = match p.source {
                    Source::Zero => (None, 0, u64::MAX),
                    Source::File { file, offset } => {
                        let size = files.get(file).map_or(0, |f| f.src.size());
                        (Some(file), offset, size.saturating_sub(offset) / ss)
                    }
                };
                let want = match p.len {
                    Len::Rest if file.is_none() => 0,
                    Len::Rest => avail,
                    Len::Sectors(s) => s,
                    Len::Bytes(b) => b / ss,
                };
                let sectors = want.min(avail);
                if sectors < want {
                    warnings.push(format!(
                        "TOC line {}: track {number} wants {want} sectors of {:?} from byte \
                         {offset}, but the file holds {sectors}",
                        p.line,
                        file.and_then(|f| files.get(f))
                            .map_or("", |f| f.name.as_str()),
                    ));
                }
                segs.push(Segment {
                    file,
                    offset,
                    sectors,
                });
            }
            let total: u64 = segs.iter().map(|s| s.sectors).sum();
            let pregap_len = match t.start {
                None => 0,
                Some(Ok(s)) => s,
                Some(Err(n)) => start_after.unwrap_or(if n >= t.pieces.len() { total } else { 0 }),
            };
            if pregap_len > total {
                return Err(Error::corrupt(
                    "toc sheet",
                    format!(
                        "line {}: track {number}: START {} is past the track's {} sectors",
                        t.line,
                        super::msf_string(pregap_len),
                        total
                    ),
                ));
            }
            // Split the segments at INDEX 01; count the pregap's silence.
            let (mut skip, mut silence) = (pregap_len, 0u64);
            let mut data = Vec::new();
            for s in segs {
                if skip >= s.sectors {
                    skip -= s.sectors;
                    if s.file.is_none() {
                        silence += s.sectors;
                    }
                    continue;
                }
                if s.file.is_none() {
                    silence += skip;
                }
                let offset = if s.file.is_some() {
                    s.offset + skip * ss
                } else {
                    0
                };
                data.push(Segment {
                    file: s.file,
                    offset,
                    sectors: s.sectors - skip,
                });
                skip = 0;
            }
            let too_far = |v: u64| {
                u32::try_from(v)
                    .ok()
                    .filter(|&v| v <= 0x00FF_FFFF)
                    .ok_or_else(|| {
                        Error::corrupt(
                            "toc sheet",
                            format!(
                                "line {}: track {number} reaches sector {v}, past any CD",
                                t.line
                            ),
                        )
                    })
            };
            let index0 = (pregap_len > 0).then_some(too_far(cursor)?);
            let start = too_far(cursor + pregap_len)?;
            let length = too_far(total - pregap_len)?;
            cursor += total;
            let file = data
                .iter()
                .find_map(|s| s.file)
                .and_then(|f| files.get(f))
                .map_or(String::new(), |f| f.name.clone());
            tracks.push(Track {
                number,
                session: 1,
                mode: t.mode,
                sector_size: ss as u32,
                form2: false,
                start,
                length,
                index0,
                pregap: silence.min(u64::from(u32::MAX)) as u32,
                file,
                segments: data,
            });
        }
        let mut disc = CdDisc {
            tracks,
            files,
            warnings,
        };
        disc.detect_forms();
        Ok(disc)
    }
}

/// Recognises cdrdao TOC sheets by their keywords, whatever the file is called (cdrdao's own
/// sheets are sometimes named `.cue`).
pub fn looks_like_toc(head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.is_empty() || text.contains(&0) {
        return false;
    }
    let s = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    let mut first = true;
    let mut track = false;
    for line in s.lines() {
        let line = line.split("//").next().unwrap_or("");
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return false;
        }
        let mut w = line.split_whitespace();
        let Some(kw) = w.next() else { continue };
        if first {
            if !FIRST_KEYWORDS.contains(&kw) {
                return false;
            }
            first = false;
        }
        if kw == "TRACK" {
            // A TOC track names its mode (a wrong one is the parser's to report); a CUE
            // track starts with its number.
            match w.next() {
                Some(m) if !m.bytes().all(|b| b.is_ascii_digit()) && !m.contains('/') => {
                    track = true
                }
                _ => return false,
            }
        }
    }
    track
}

/// Recognises cdrdao TOC sheets and opens the first data track of the files they name.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Toc
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["toc"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.size() <= MAX_TOC_BYTES as u64 && looks_like_toc(p.head())
    }

    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        super::sheet::open_sheet(Format::Toc, MAX_TOC_BYTES, &*src, ctx, |text, dir| {
            parse_toc(text)?.resolve(dir)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cdrdao_sheets() {
        let s = parse_toc(
            "CD_ROM // x\nCATALOG \"0000000000000\"\nTRACK MODE1_RAW\nDATAFILE \"a b.bin\" 00:04:46 // len\nTRACK AUDIO\nNO COPY\nPREGAP 0:2:0\nFILE \"a b.bin\" #710304 0 1:0:0\nCD_TEXT { LANGUAGE 0 { TITLE \"x\" } }\n",
        )
        .unwrap();
        assert_eq!(s.files, vec!["a b.bin".to_string()]);
        assert_eq!(s.tracks.len(), 2);
        assert_eq!(s.tracks[1].start, Some(Ok(150)));
        let e = parse_toc("CD_DA\nTRACK MODE1_FORM45\nSILENCE 1:0:0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("MODE1_FORM45") && e.contains("line 2"), "{e}");
        assert!(parse_toc("TRACK AUDIO\nFILE \"a\" 0:0:75\n").is_err());
        assert!(parse_toc("CATALOG \"12\"\nTRACK AUDIO\n").is_err());
    }

    #[test]
    fn recognition() {
        assert!(looks_like_toc(
            b"CD_ROM\n\nTRACK MODE1_RAW\nDATAFILE \"x.bin\"\n"
        ));
        assert!(looks_like_toc(b"// c\nTRACK AUDIO\nFILE \"x\" 0\n"));
        assert!(!looks_like_toc(
            b"FILE \"a.bin\" BINARY\n  TRACK 01 MODE1/2352\n"
        ));
        assert!(!looks_like_toc(b"TRACK 01 AUDIO\n"));
        assert!(!looks_like_toc(b"hello\n"));
    }
}
