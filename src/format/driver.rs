//! The one trait every format implements, and what it is given and gives back: the bytes to
//! recognise ([`Probe`]), what lies outside them ([`OpenCtx`]) and the layer it opened
//! ([`Step`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::cd::Track;
use super::container::info::ContainerInfo;
use super::stream::codec::StreamEnd;
use crate::format::kind::Format;
use crate::io::file::FileSource;
use crate::io::{Access, ReadAt, ReadAtExt, SizeKnown};

/// Most layers peeled before the payload (e.g. zip → xz → sparse → raw): also the bound on
/// files that name other files.
pub const MAX_DEPTH: usize = 4;

/// Most files reached through other files (a backing chain, a differencing disk's parents, a
/// descriptor's extents): deep enough for snapshot chains, bounded so a chain cannot go on.
pub const MAX_CHAIN: usize = 16;

/// Opens a file that an image names (a backing file, a parent, an extent) as a whole image,
/// through the same loop as [`super::open()`]: given the path, the options and the files
/// already on the chain (outermost first), it returns the decoded disk and its warnings.
/// Set by the opening loop, so drivers reach other files without importing it.
pub(crate) type Opener =
    fn(&Path, &OpenOptions, &[PathBuf]) -> crate::Result<(Arc<dyn ReadAt>, Vec<String>)>;

/// How [`open`](fn@super::open) treats wrappers. Defined here, below `open`, so that drivers
/// read the options without importing the loop that calls them.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Decode compression wrappers (gz, xz, zst, bz2, lz4, zip members) transparently.
    pub(crate) decompress: bool,
    /// When a stream's exact size and trailer are learnt: at open (the default, what
    /// `inspect` needs) or while reading (for a single in-order pass over the image).
    pub(crate) stream_end: StreamEnd,
    /// How images on web servers and in buckets are reached and read.
    pub(crate) remote: crate::io::remote::RemoteOptions,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            decompress: true,
            stream_end: StreamEnd::Eager,
            remote: crate::io::remote::RemoteOptions::default(),
        }
    }
}

impl OpenOptions {
    /// Options for commands that read the image once, in order (a stream's end is learnt by
    /// reading to it, `StreamEnd::Deferred`).
    pub fn deferred() -> Self {
        OpenOptions {
            stream_end: StreamEnd::Deferred,
            ..OpenOptions::default()
        }
    }

    /// These options, with `remote` for images given as URLs.
    pub fn with_remote(mut self, remote: crate::io::remote::RemoteOptions) -> Self {
        self.remote = remote;
        self
    }
}

/// Recognises one format and opens one layer of it.
///
/// Drivers are listed in [`super::registry::DRIVERS`]; [`super::open()`] asks them in that order
/// which one recognises a source, so a driver only has to tell its own format from bytes that
/// are not any format listed before it.
pub trait FormatDriver: Sync {
    /// The format this driver recognises.
    fn format(&self) -> Format;

    /// File name endings (without the dot) that usually mark a file of this format holding a
    /// disk image. Only ever a hint (choosing the image member of a zip archive); recognition
    /// is by [`detect`](Self::detect) alone.
    fn name_hints(&self) -> &'static [&'static str] {
        &[]
    }

    /// True if the probed bytes are this format.
    fn detect(&self, probe: &Probe<'_>) -> bool;

    /// True if `last`, the last bytes of a decoded image (at least 512 when it is that long),
    /// end with this format's trailer: formats found only by their last sector (a fixed VHD,
    /// a DMG) say so here, so a reader that learns the end late can still tell.
    fn trailer(&self, last: &[u8]) -> bool {
        let _ = last;
        false
    }

    /// Opens one layer of this format over `src`.
    fn open(&self, src: Arc<dyn ReadAt>, ctx: &mut OpenCtx<'_>) -> crate::Result<Step>;
}

/// Bytes read from the head of a source for recognition: enough for the ISO9660 descriptor at
/// 32769 and the second raw CD sector's sync at 2352.
pub(crate) const HEAD_LEN: usize = 36 * 1024;

/// Bytes read from the end of a source when that is cheap: one sector, where VHD footers and
/// DMG trailers live.
pub(crate) const TAIL_LEN: usize = 512;

/// What a driver sees of a source to recognise it.
pub struct Probe<'a> {
    src: &'a dyn ReadAt,
    head: Vec<u8>,
    tail: Option<Vec<u8>>,
}

impl<'a> Probe<'a> {
    /// Reads the head of `src` and, if `with_tail`, its last [`TAIL_LEN`] bytes.
    ///
    /// A stream whose decoding breaks before its end gives no tail rather than an error: it
    /// opens as it would without the trailer look, and its reads report the break.
    pub(crate) fn read(src: &'a dyn ReadAt, with_tail: bool) -> io::Result<Self> {
        let head = src.read_upto(0, HEAD_LEN)?;
        let tail = if with_tail {
            let at = src.size().saturating_sub(TAIL_LEN as u64);
            match src.read_upto(at, TAIL_LEN) {
                Ok(t) => Some(t),
                Err(_) if src.caps().access == Access::Sequential => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(Probe { src, head, tail })
    }

    /// The first bytes (up to [`HEAD_LEN`]; fewer when the source is shorter).
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The last bytes (up to [`TAIL_LEN`]), or `None` when reading them was not free: a stream
    /// not decoded to its end while opening (opened [`super::StreamEnd::Deferred`], or whose
    /// size its headers give).
    pub(crate) fn tail(&self) -> Option<&[u8]> {
        self.tail.as_deref()
    }

    /// The size of the source (a hint when the source says so).
    pub(crate) fn size(&self) -> u64 {
        self.src.size()
    }

    /// The source itself, for a format that must look a little further than the tail (a seek
    /// table's header): `None` unless its end was cheap to read, like [`tail`](Self::tail).
    pub(crate) fn source(&self) -> Option<&dyn ReadAt> {
        self.tail.is_some().then_some(self.src)
    }
}

/// One layer of the wrapper chain, outermost first.
#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// What this layer is.
    pub format: Format,
    /// Stored size of this layer in bytes, if known.
    pub(crate) size: Option<u64>,
    /// Facts worth showing (e.g. "member disk.img", "virtual size 8 GiB, dynamic").
    pub detail: Option<String>,
}

impl Layer {
    /// A layer of `format` stored in `src`: its size is `src`'s when that is exact.
    pub(crate) fn stored(format: Format, src: &dyn ReadAt, detail: Option<String>) -> Layer {
        Layer {
            format,
            size: (src.caps().size == SizeKnown::Exact).then(|| src.size()),
            detail,
        }
    }
}

/// What a driver opened: the layers it recognised and the bytes inside them.
pub struct Step {
    /// The layers, outermost first: one, or two when a CUE sheet also names the raw sectors of
    /// its data track.
    pub(crate) layers: Vec<Layer>,
    /// The decoded bytes to recognise next, or `None` when the chain ends here (an image, or a
    /// container this version does not decode).
    pub inner: Option<Arc<dyn ReadAt>>,
    /// True if `inner` is a stream already decoded to its end while opening (to learn its
    /// size), with its last sector still cached: looking there for a trailer costs nothing.
    pub(crate) tail_is_free: bool,
}

impl Step {
    /// A layer that decodes to `inner`.
    pub(crate) fn inner(layer: Layer, inner: Arc<dyn ReadAt>) -> Step {
        Step {
            layers: vec![layer],
            inner: Some(inner),
            tail_is_free: false,
        }
    }

    /// The last layer of the chain.
    pub(crate) fn end(layer: Layer) -> Step {
        Step {
            layers: vec![layer],
            inner: None,
            tail_is_free: false,
        }
    }

    /// Says whether the inner stream's last sector is already decoded (see
    /// [`tail_is_free`](Self::tail_is_free)).
    pub(crate) fn with_free_tail(mut self, free: bool) -> Step {
        self.tail_is_free = free;
        self
    }
}

/// What a driver may need beyond the bytes it opens, and what it reports besides its layer.
pub struct OpenCtx<'a> {
    opts: &'a OpenOptions,
    path: &'a Path,
    /// Directory of the opened file, where files it names are looked for; `None` for block
    /// devices and in-memory sources.
    dir: Option<PathBuf>,
    depth: usize,
    /// Files on the chain above this one (those that named it), outermost first, and the
    /// function that opens the next: see [`OpenCtx::open_named`].
    chain: Vec<PathBuf>,
    opener: Option<Opener>,
    pub(crate) warnings: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) cd_tracks: Vec<Track>,
    pub(crate) container: Option<ContainerInfo>,
}

impl<'a> OpenCtx<'a> {
    /// A context for opening `path`, whose sibling files sit in `dir` (`None` when they cannot
    /// be reached: a device, an in-memory source, a driver called on its own).
    pub fn new(opts: &'a OpenOptions, path: &'a Path, dir: Option<PathBuf>) -> Self {
        OpenCtx {
            opts,
            path,
            dir,
            depth: 0,
            chain: Vec::new(),
            opener: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            cd_tracks: Vec::new(),
            container: None,
        }
    }

    /// Lets this context open the files an image names through `opener`; `chain` holds the
    /// files that led here (outermost first), for the loop and depth checks.
    pub(crate) fn with_opener(mut self, opener: Opener, chain: Vec<PathBuf>) -> Self {
        self.opener = Some(opener);
        self.chain = chain;
        self
    }

    /// Where `name`, a file this image names as its `what`, lies: joined to the image's
    /// directory (an absolute name as is), and its canonical path (or why there is none: a
    /// missing file, for the caller to report in its terms).
    fn locate_named(
        &self,
        what: &str,
        name: &str,
    ) -> crate::Result<(PathBuf, io::Result<PathBuf>)> {
        let Some(dir) = self.sibling_dir() else {
            return Err(crate::Error::Unsupported(format!(
                "{what} {name:?}: the image was not opened from a file of its own, so files \
                 it names cannot be found"
            )));
        };
        let path = dir.join(name);
        let canon = std::fs::canonicalize(&path);
        Ok((path, canon))
    }

    /// The chain down to `canon` (the files above, then this image), refused, naming every
    /// file, when `canon` is already on it: the images would loop.
    fn chain_to(&self, what: &str, path: &Path, canon: &PathBuf) -> crate::Result<Vec<PathBuf>> {
        let mut chain = self.chain.clone();
        if let Ok(me) = std::fs::canonicalize(self.path) {
            if chain.last() != Some(&me) {
                chain.push(me);
            }
        }
        if chain.contains(canon) {
            let names: Vec<String> = chain
                .iter()
                .chain(std::iter::once(canon))
                .map(|p| p.display().to_string())
                .collect();
            return Err(crate::Error::Format(format!(
                "{what} {}: the chain of images loops: {}",
                path.display(),
                names.join(" -> ")
            )));
        }
        Ok(chain)
    }

    /// Opens `name`, a file this image names as its `what` ("backing file", "parent",
    /// "extent"), the way qemu-img does: an absolute path as is, a relative one from the
    /// image's directory. The file is opened as a whole image (any format, compressed or not)
    /// one step further down the chain; its warnings come back prefixed with its name.
    /// Refused, naming the files, when the chain loops or is deeper than [`MAX_CHAIN`]; a
    /// missing file is an error naming `what` and the path looked for.
    pub(crate) fn open_named(&mut self, what: &str, name: &str) -> crate::Result<Arc<dyn ReadAt>> {
        let Some(opener) = self.opener else {
            return Err(crate::Error::Unsupported(format!(
                "{what} {name:?}: files named by this image cannot be opened here"
            )));
        };
        let (path, canon) = self.locate_named(what, name)?;
        let canon = canon.map_err(|e| {
            crate::Error::Format(format!("{what} {} cannot be opened: {e}", path.display()))
        })?;
        let chain = self.chain_to(what, &path, &canon)?;
        if chain.len() >= MAX_CHAIN {
            return Err(crate::Error::Unsupported(format!(
                "{what} {}: more than {MAX_CHAIN} images deep",
                path.display()
            )));
        }
        let (src, warnings) = opener(&canon, self.opts, &chain).map_err(|e| match e {
            crate::Error::Io(io) => {
                crate::Error::Format(format!("{what} {}: {io}", path.display()))
            }
            e => e,
        })?;
        for w in warnings {
            self.warn(format!("{what} {name}: {w}"));
        }
        Ok(src)
    }

    /// Opens `name`, a file this image names as its `what` (a VMDK extent), as plain bytes:
    /// not through the registry, since an extent holds a piece of a disk whatever its first
    /// bytes look like, and the caller decodes it. Found like [`open_named`](Self::open_named)
    /// (relative to the image's directory) and refused the same way when it is the image
    /// itself or a file above it on the chain. Returns the file's canonical path with it, so a
    /// caller can share one open file between the places that name it. A missing file is an
    /// [`crate::Error::Io`] of kind `NotFound` naming the path.
    pub(crate) fn open_file_named(
        &self,
        what: &str,
        name: &str,
    ) -> crate::Result<(PathBuf, Arc<dyn ReadAt>)> {
        let (path, canon) = self.locate_named(what, name)?;
        let canon = canon.map_err(|e| {
            crate::Error::Io(io::Error::new(
                e.kind(),
                format!("{what} {} cannot be opened: {e}", path.display()),
            ))
        })?;
        self.chain_to(what, &path, &canon)?;
        if !std::fs::metadata(&canon).is_ok_and(|m| m.is_file()) {
            return Err(crate::Error::Format(format!(
                "{what} {} is not a regular file",
                path.display()
            )));
        }
        let f = FileSource::open(&canon).map_err(|e| {
            crate::Error::Io(io::Error::new(
                e.kind(),
                format!("{what} {}: {e}", path.display()),
            ))
        })?;
        Ok((canon, Arc::new(f)))
    }

    /// How the caller asked for the image to be opened.
    pub(crate) fn options(&self) -> &OpenOptions {
        self.opts
    }

    /// The path given to [`super::open()`] (only a hint for messages).
    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// How many layers were peeled before this one (0: the bytes of the file itself).
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// False once [`MAX_DEPTH`] layers are open: the guard that keeps nested wrappers,
    /// and files that name other files, from going on forever. Nothing may be opened inside a
    /// layer then.
    pub(crate) fn may_descend(&self) -> bool {
        self.depth < MAX_DEPTH
    }

    /// Goes one layer deeper.
    pub(crate) fn descend(&mut self) {
        self.depth += 1;
    }

    /// The directory whose files the opened file may name, if the bytes being opened are that
    /// file's own (not a layer decoded from it, not a device, not memory).
    pub(crate) fn sibling_dir(&self) -> Option<&Path> {
        self.dir.as_deref().filter(|_| self.depth == 0)
    }

    /// Tells the user something they should know about this layer.
    pub(crate) fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    /// Records a fact worth a line that is not a problem.
    pub(crate) fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// Records the tracks of a CD image.
    pub(crate) fn set_cd_tracks(&mut self, tracks: Vec<Track>) {
        self.cd_tracks = tracks;
    }

    /// Records the header facts of a container whose contents are not decoded.
    pub(crate) fn set_container(&mut self, info: ContainerInfo) {
        self.container = Some(info);
    }
}
