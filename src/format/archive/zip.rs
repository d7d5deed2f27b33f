//! A disk image inside a ZIP archive (how many vendors ship `.img` files).
//!
//! The member that looks most like a disk image is chosen; STORED members are a window of the
//! archive (full random access), deflated ones are decoded by a [`StreamSource`].

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use crate::format::driver::{FormatDriver, Layer, OpenCtx, Probe, Step};
use crate::format::kind::{Format, Kind};
use crate::format::stream::{Codec, ReadAtReader, SizeFact, StreamEnd, StreamSource};
use crate::io::{ReadAt, Slice};
use crate::Error;

impl Format {
    /// ZIP archive.
    #[allow(non_upper_case_globals)]
    pub const Zip: Format = Format::new("zip", "zip", Kind::Archive);
}

impl Codec {
    /// Raw deflate (a zip member).
    #[allow(non_upper_case_globals)]
    pub(crate) const Deflate: Codec =
        Codec::new("deflate", deflate_decoder, |_| Ok(SizeFact::Unknown));
}

fn deflate_decoder(r: BufReader<ReadAtReader>) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(flate2::bufread::DeflateDecoder::new(r)))
}

/// Recognises a ZIP archive by its first local header (or the end record of an empty one) and
/// opens the image member.
pub(crate) struct Driver;

impl FormatDriver for Driver {
    fn format(&self) -> Format {
        Format::Zip
    }

    fn name_hints(&self) -> &'static [&'static str] {
        &["zip"]
    }

    fn detect(&self, p: &Probe<'_>) -> bool {
        p.head().starts_with(b"PK\x03\x04") || p.head().starts_with(b"PK\x05\x06")
    }

    fn open(&self, src: Arc<dyn ReadAt>, _ctx: &mut OpenCtx<'_>) -> crate::Result<Step> {
        let m = open_member(src.clone())?;
        let how = if m.stored { "stored" } else { "deflated" };
        let layer = Layer::stored(
            Format::Zip,
            &*src,
            Some(format!(
                "member {} ({how}, {} entries in archive)",
                m.name, m.entries
            )),
        );
        Ok(Step::inner(layer, m.source))
    }
}

/// Most entries we look at (the central directory is hostile too).
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// The chosen member of a ZIP archive.
pub(crate) struct ZipMember {
    /// Name of the member inside the archive.
    pub(crate) name: String,
    /// Its bytes, decoded.
    pub(crate) source: Arc<dyn ReadAt>,
    /// True if stored uncompressed (so `source` has random access).
    pub(crate) stored: bool,
    /// Entries in the archive.
    pub(crate) entries: usize,
}

/// `Read + Seek` over a [`ReadAt`], for the zip crate's directory parser.
struct Cursor {
    src: Arc<dyn ReadAt>,
    pos: u64,
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.src.size();
        let p = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            p.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// True if the member's name ends the way files holding a disk image usually do, in any
/// format but an archive's own (an archive inside the archive is not the image).
fn looks_like_image(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    let Some((_, ext)) = l.rsplit_once('.') else {
        return false;
    };
    crate::format::DRIVERS
        .iter()
        .filter(|d| d.format().kind() != Kind::Archive)
        .any(|d| d.name_hints().contains(&ext))
}

/// The index of the image member: the largest file whose name looks like a disk image, or
/// else the largest file.
fn choose(za: &mut zip::ZipArchive<Cursor>) -> Option<usize> {
    // (is image-like, size, index)
    let mut best: Option<(bool, u64, usize)> = None;
    for i in 0..za.len() {
        let Ok(f) = za.by_index_raw(i) else { continue };
        if !f.is_file() {
            continue;
        }
        let Ok(name) = f.name() else { continue };
        let key = (looks_like_image(&name), f.size(), i);
        if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
            best = Some(key);
        }
    }
    best.map(|(_, _, i)| i)
}

/// Opens the image member of the ZIP archive in `src`: the largest file whose name looks like
/// a disk image, or else the largest file.
pub(crate) fn open_member(src: Arc<dyn ReadAt>) -> crate::Result<ZipMember> {
    let zerr = |e: zip::result::ZipError| Error::corrupt("zip archive", e.to_string());
    let mut za = zip::ZipArchive::new(Cursor {
        src: src.clone(),
        pos: 0,
    })
    .map_err(zerr)?;
    let entries = za.len();
    if entries > MAX_ENTRIES {
        return Err(Error::Unsupported(format!(
            "zip archive with {entries} entries"
        )));
    }
    let Some(idx) = choose(&mut za) else {
        return Err(Error::Format("zip archive holds no files".into()));
    };
    let f = za.by_index_raw(idx).map_err(zerr)?;
    let name = f.name().map_err(zerr)?.into_owned();
    if f.encrypted() {
        return Err(Error::Unsupported(format!(
            "zip member {name} is encrypted"
        )));
    }
    let start = f
        .data_start()
        .ok_or_else(|| Error::corrupt("zip archive", format!("no data offset for {name}")))?;
    let (csize, usize_) = (f.compressed_size(), f.size());
    start
        .checked_add(csize)
        .filter(|&e| e <= src.size())
        .ok_or_else(|| {
            Error::corrupt(
                "zip archive",
                format!("member {name} runs past the end of the archive"),
            )
        })?;
    let data: Arc<dyn ReadAt> = Arc::new(Slice::new(src.clone(), start, csize));
    let (source, stored): (Arc<dyn ReadAt>, bool) = match f.compression() {
        zip::CompressionMethod::Stored => {
            if csize != usize_ {
                return Err(Error::corrupt(
                    "zip archive",
                    format!("stored member {name}: sizes differ ({csize} vs {usize_})"),
                ));
            }
            (data, true)
        }
        zip::CompressionMethod::Deflated => (
            Arc::new(StreamSource::open(
                Codec::Deflate,
                data,
                SizeFact::exact(usize_, "given"),
                StreamEnd::Eager,
            )?),
            false,
        ),
        m => {
            return Err(Error::Unsupported(format!(
                "zip member {name} uses compression method {m}; extract it first"
            )))
        }
    };
    Ok(ZipMember {
        name,
        source,
        stored,
        entries,
    })
}
