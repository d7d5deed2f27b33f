//! Checksum files beside the image: a `SHA256SUMS` or `IMG.sha256` that vouches for the image
//! file is found ([`find_sum`]) and checked while the flash decodes it ([`SumCheck`]), and the
//! summary says which file vouched for it.
//!
//! The SHA-256 is of the file as it lies on disk (the compressed image, as downloaded), read
//! by a thread of its own from the start of the flash; the flash asks for the result
//! ([`SumCheck::finish`]) before it writes the card's head, so an image that does not match
//! leaves the card without a partition table.
//!
//! Where a checksum is looked for, first found first used:
//!
//! 1. `IMG.sha256` (the image's file name with `.sha256` added): its first line, the hex digest
//!    alone or followed by a name, which must then be the image's;
//! 2. `SHA256SUMS`, `SHA256SUMS.txt`, `sha256sum.txt` in the image's folder: the line that
//!    names the image, as `sha256sum` writes it (`HEX  NAME`, or `HEX *NAME` in binary mode) or
//!    BSD style (`SHA256 (NAME) = HEX`).
//!
//! Names are compared by their file name (`./img.xz` and `dl/img.xz` both name `img.xz`).
//! Lines naming other files are passed over; a line that names the image with a malformed
//! digest is an error, as is a checksum file larger than 1 MiB.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::checksum::hex;

/// Checksum files listing several images, looked for in the image's folder in this order.
const SUMS_FILES: [&str; 3] = ["SHA256SUMS", "SHA256SUMS.txt", "sha256sum.txt"];

/// Largest checksum file read.
const MAX_SUMS_FILE: u64 = 1 << 20;

/// Size of one read of the image while hashing it.
const READ_SIZE: usize = 1 << 20;

/// A checksum file's word for the image: what its SHA-256 should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vouch {
    /// The checksum file that vouches for the image.
    pub file: PathBuf,
    /// The SHA-256 it gives.
    pub expected: [u8; 32],
}

/// Looks beside `image` (a file) for a checksum file that vouches for it; `None` when there is
/// none, or none names it.
///
/// Fails when a checksum file cannot be read or is larger than 1 MiB, when `IMG.sha256` names
/// another file, and when the line that names the image holds no SHA-256 in hex (the error
/// names the file and the line).
pub fn find_sum(image: &Path) -> crate::Result<Option<Vouch>> {
    let Some(name) = image.file_name() else {
        return Ok(None);
    };
    let name = name.to_string_lossy().into_owned();
    let dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let own = dir.join(format!("{name}.sha256"));
    if let Some(text) = read_small(&own)? {
        let first = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
        let Some((i, line)) = first else {
            return Err(crate::Error::Format(format!(
                "{}: no checksum in it",
                own.display()
            )));
        };
        let bad = |why: String| crate::Error::Format(format!("{}:{}: {why}", own.display(), i + 1));
        let (digest, named) = match parse_line(line) {
            Some(Line::Sha256 { digest, name }) => (digest, Some(name)),
            Some(Line::Bare(digest)) => (digest, None),
            Some(Line::Other) | None => {
                return Err(bad("not a SHA-256 checksum line".into()));
            }
        };
        if let Some(n) = named.filter(|n| base_name(n) != name) {
            return Err(bad(format!("the checksum is for {n:?}, not for {name:?}")));
        }
        let expected =
            unhex(digest).ok_or_else(|| bad(format!("{digest:?} is not a SHA-256 in hex")))?;
        return Ok(Some(Vouch {
            file: own,
            expected,
        }));
    }

    for sums in SUMS_FILES {
        let path = dir.join(sums);
        let Some(text) = read_small(&path)? else {
            continue;
        };
        let mut found: Option<[u8; 32]> = None;
        for (i, line) in text.lines().enumerate() {
            let Some(Line::Sha256 { digest, name: n }) = parse_line(line) else {
                continue;
            };
            if base_name(n) != name {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let d = unhex(digest).ok_or_else(|| {
                crate::Error::Format(format!(
                    "{}: the checksum of {name} is {digest:?}, not a SHA-256 in hex",
                    at()
                ))
            })?;
            match found {
                Some(prev) if prev != d => {
                    return Err(crate::Error::Format(format!(
                        "{}: {name} is listed again with another checksum",
                        at()
                    )))
                }
                _ => found = Some(d),
            }
        }
        if let Some(expected) = found {
            return Ok(Some(Vouch {
                file: path,
                expected,
            }));
        }
    }
    Ok(None)
}

/// One line of a checksum file, as far as it matters here.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// A digest for a file: `HEX  NAME`, `HEX *NAME` or `SHA256 (NAME) = HEX`. The digest is
    /// not checked yet.
    Sha256 { digest: &'a str, name: &'a str },
    /// A digest alone (an `IMG.sha256` may hold just that).
    Bare(&'a str),
    /// A BSD-style line of another algorithm.
    Other,
}

/// Reads a line; `None` for blank lines, comments and anything unrecognised (a signature's
/// armour around the list).
fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\r', '\n']).trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    if let Some((algo, rest)) = line.split_once(" (") {
        if !algo.is_empty() && algo.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            let (name, digest) = rest.rsplit_once(") = ")?;
            return Some(if algo.eq_ignore_ascii_case("SHA256") {
                Line::Sha256 {
                    digest: digest.trim(),
                    name,
                }
            } else {
                Line::Other
            });
        }
    }
    match line.split_once([' ', '\t']) {
        None => Some(Line::Bare(line)),
        Some((digest, rest)) => {
            // sha256sum: two spaces (text) or a space and '*' (binary) before the name.
            let name = rest.strip_prefix(['*', ' ']).unwrap_or(rest);
            if name.is_empty() {
                Some(Line::Bare(digest))
            } else {
                Some(Line::Sha256 { digest, name })
            }
        }
    }
}

/// The file name a listed name stands for: what follows its last `/`.
fn base_name(listed: &str) -> &str {
    listed.rsplit('/').next().unwrap_or(listed)
}

/// 64 hex digits (either case) as 32 bytes.
fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The text of a checksum file, `None` when there is no such file; refused above
/// [`MAX_SUMS_FILE`].
fn read_small(path: &Path) -> crate::Result<Option<String>> {
    let with_path = |e: io::Error| {
        crate::Error::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e)),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_SUMS_FILE {
        return Err(crate::Error::Format(format!(
            "{}: {} bytes is too large for a checksum file (at most 1 MiB is read)",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_SUMS_FILE + 1).read_to_end(&mut bytes))
        .map_err(with_path)?;
    if bytes.len() as u64 > MAX_SUMS_FILE {
        return Err(crate::Error::Format(format!(
            "{}: grew past 1 MiB while being read",
            path.display()
        )));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The result of a finished [`SumCheck`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumOutcome {
    /// The checksum file that vouched for the image.
    pub file: PathBuf,
    /// The image's SHA-256 is the one the file gives.
    pub ok: bool,
    /// The image's SHA-256, lowercase hex.
    pub actual_hex: String,
    /// The SHA-256 the checksum file gives, lowercase hex.
    pub expected_hex: String,
}

impl fmt::Display for SumOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            write!(f, "the image's SHA-256 matches {}", self.file.display())
        } else {
            write!(
                f,
                "the image's SHA-256 is {}, but {} says {}: the image is damaged or not the one listed",
                self.actual_hex,
                self.file.display(),
                self.expected_hex
            )
        }
    }
}

/// What the hashing thread returns: the digest, or `None` when it was stopped.
type Hashed = io::Result<Option<[u8; 32]>>;

/// The SHA-256 of an image file, taken by a thread of its own while the flash goes on, and
/// compared with a [`Vouch`] at [`finish`](Self::finish). Dropping it (or
/// [`cancel`](Self::cancel)) stops the thread at its next read.
#[derive(Debug)]
pub struct SumCheck {
    /// The image, for errors.
    path: PathBuf,
    /// What it is checked against.
    vouch: Vouch,
    /// Tells the thread to stop.
    stop: Arc<AtomicBool>,
    /// The thread, or why it could not be started; `None` once joined.
    worker: Option<io::Result<JoinHandle<Hashed>>>,
}

impl SumCheck {
    /// Starts hashing the file at `path` (read front to back in 1 MiB reads) to check it
    /// against `vouch`.
    pub fn start(path: &Path, vouch: Vouch) -> SumCheck {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let file = path.to_path_buf();
        let worker = std::thread::Builder::new()
            .name("sha256sums".into())
            .spawn(move || hash_file(&file, &flag));
        SumCheck {
            path: path.to_path_buf(),
            vouch,
            stop,
            worker: Some(worker),
        }
    }

    /// Stops the thread at its next read; [`finish`](Self::finish) then returns
    /// [`crate::Error::Interrupted`].
    pub fn cancel(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the whole file to be hashed and compares. A mismatch is an `Ok` outcome with
    /// `ok` false (the caller decides what to refuse); failing to read the image is an error.
    pub fn finish(mut self) -> crate::Result<SumOutcome> {
        let hashed = match self.worker.take() {
            Some(Ok(handle)) => handle.join().map_err(|p| crate::Error::Panicked {
                stage: "checksum thread",
                message: p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into()),
            })?,
            Some(Err(e)) => Err(e),
            None => Ok(None),
        };
        let digest = hashed
            .map_err(|e| {
                crate::Error::Io(io::Error::new(
                    e.kind(),
                    format!("hashing {}: {e}", self.path.display()),
                ))
            })?
            .ok_or(crate::Error::Interrupted)?;
        Ok(SumOutcome {
            file: self.vouch.file.clone(),
            ok: digest == self.vouch.expected,
            actual_hex: hex(&digest),
            expected_hex: hex(&self.vouch.expected),
        })
    }
}

impl Drop for SumCheck {
    fn drop(&mut self) {
        self.cancel();
        if let Some(Ok(handle)) = self.worker.take() {
            // Waits for at most one read; the thread's result no longer matters.
            let _ = handle.join();
        }
    }
}

/// Hashes the file at `path`, stopping (with `None`) when `stop` is set.
fn hash_file(path: &Path, stop: &AtomicBool) -> Hashed {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; READ_SIZE];
    let mut h = Sha256::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-256 of "hello\n" (what `echo hello | sha256sum` prints).
    const HELLO: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    /// A folder holding `img.xz` ("hello\n") and the given files.
    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("img.xz"), b"hello\n").unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn vouch(files: &[(&str, &str)]) -> crate::Result<Option<Vouch>> {
        let d = folder(files);
        find_sum(&d.path().join("img.xz")).map(|v| {
            v.map(|v| Vouch {
                file: PathBuf::from(v.file.file_name().unwrap()),
                ..v
            })
        })
    }

    fn expected(file: &str) -> Option<Vouch> {
        Some(Vouch {
            file: file.into(),
            expected: unhex(HELLO).unwrap(),
        })
    }

    #[test]
    fn every_syntax_is_understood() {
        let other = "0".repeat(64);
        for (file, text) in [
            ("img.xz.sha256", format!("{HELLO}\n")),
            (
                "img.xz.sha256",
                format!("{}  img.xz\n", HELLO.to_uppercase()),
            ),
            ("img.xz.sha256", format!("\n{HELLO} *./img.xz\r\n")),
            ("SHA256SUMS", format!("{other}  a.img\n{HELLO}  img.xz\n")),
            ("SHA256SUMS", format!("# list\n{HELLO} *img.xz\n")),
            ("SHA256SUMS.txt", format!("{HELLO}  ./img.xz\n")),
            ("sha256sum.txt", format!("SHA256 (dl/img.xz) = {HELLO}\n")),
            (
                "SHA256SUMS",
                format!("MD5 (img.xz) = abc\nSHA256 (img.xz) = {HELLO}\n"),
            ),
        ] {
            assert_eq!(
                vouch(&[(file, &text)]).unwrap(),
                expected(file),
                "{file}: {text:?}"
            );
        }
        // IMG.sha256 comes before SHA256SUMS.
        let both = [
            ("SHA256SUMS", format!("{other}  img.xz\n")),
            ("img.xz.sha256", HELLO.into()),
        ];
        let both: Vec<(&str, &str)> = both.iter().map(|(a, b)| (*a, b.as_str())).collect();
        assert_eq!(vouch(&both).unwrap(), expected("img.xz.sha256"));
    }

    #[test]
    fn no_word_for_the_image_is_none() {
        assert_eq!(vouch(&[]).unwrap(), None);
        let text = format!("{HELLO}  other.img\nSHA512 (img.xz) = {HELLO}{HELLO}\nrubbish\n");
        assert_eq!(vouch(&[("SHA256SUMS", &text)]).unwrap(), None);
        // A malformed line about another file is not ours to judge.
        assert_eq!(vouch(&[("SHA256SUMS", "xyz  other.img\n")]).unwrap(), None);
    }

    #[test]
    fn wrong_names_and_malformed_digests_are_errors() {
        let e = vouch(&[("img.xz.sha256", &format!("{HELLO}  img\n"))]).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("img.xz.sha256:1: the checksum is for \"img\", not for \"img.xz\""),
            "{e}"
        );
        let e = vouch(&[(
            "SHA256SUMS",
            &format!("{HELLO}  a.img\n{}  img.xz\n", &HELLO[1..]),
        )])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("SHA256SUMS:2: the checksum of img.xz is"),
            "{e}"
        );
        let e = vouch(&[(
            "SHA256SUMS",
            &format!("{HELLO}  img.xz\n{}  img.xz\n", "1".repeat(64)),
        )])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("SHA256SUMS:2: img.xz is listed again"),
            "{e}"
        );
        let e = vouch(&[("img.xz.sha256", "not-hex\n")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("img.xz.sha256:1: \"not-hex\" is not a SHA-256"),
            "{e}"
        );
        let big = "#".repeat((1 << 20) + 1);
        let e = vouch(&[("SHA256SUMS", &big)]).unwrap_err();
        assert!(
            e.to_string().contains("too large for a checksum file"),
            "{e}"
        );
    }

    #[test]
    fn the_check_matches_and_mismatches() {
        let d = folder(&[("SHA256SUMS", &format!("{HELLO}  img.xz\n"))]);
        let img = d.path().join("img.xz");
        let v = find_sum(&img).unwrap().unwrap();
        let out = SumCheck::start(&img, v.clone()).finish().unwrap();
        assert!(out.ok, "{out}");
        assert_eq!(out.actual_hex, HELLO);
        assert!(
            out.to_string().starts_with("the image's SHA-256 matches "),
            "{out}"
        );

        std::fs::write(&img, b"hellO\n").unwrap();
        let out = SumCheck::start(&img, v.clone()).finish().unwrap();
        assert!(!out.ok);
        assert_eq!(out.expected_hex, HELLO);
        assert_ne!(out.actual_hex, HELLO);
        assert!(out.to_string().contains("SHA256SUMS says 5891b5"), "{out}");

        // A large file, stopped early; and one dropped without finishing.
        std::fs::write(&img, vec![7u8; 64 << 20]).unwrap();
        let c = SumCheck::start(&img, v.clone());
        c.cancel();
        assert!(matches!(c.finish(), Err(crate::Error::Interrupted)));
        drop(SumCheck::start(&img, v.clone()));
        let e = SumCheck::start(&d.path().join("gone"), v)
            .finish()
            .unwrap_err();
        assert!(e.to_string().starts_with("hashing "), "{e}");
    }

    proptest::proptest! {
        /// A sums file is text from anywhere: any bytes beside an image give an answer or an
        /// error, never a panic.
        #[test]
        fn any_sums_file_is_read_without_panicking(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            lines in proptest::collection::vec("[ -~\t]{0,90}", 0..8),
        ) {
            for line in String::from_utf8_lossy(&text).lines().chain(lines.iter().map(String::as_str)) {
                let _ = parse_line(line);
            }
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("card.img.xz");
            std::fs::write(&img, b"x").unwrap();
            let mut body = text.clone();
            body.extend(lines.join("\n").bytes());
            std::fs::write(dir.path().join("SHA256SUMS"), &body).unwrap();
            let _ = find_sum(&img);
            std::fs::write(dir.path().join("card.img.xz.sha256"), &body).unwrap();
            let _ = find_sum(&img);
        }
    }
}
