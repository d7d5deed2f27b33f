//! Opening a path: recognise its bytes, peel compression and containers, return the disk image.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cd::Track;
use super::container::info::ContainerInfo;
use super::driver::{Layer, OpenCtx, OpenOptions, Probe, MAX_DEPTH};
use super::registry;
use super::stream::codec::end_is_cheap;
use crate::format::kind::{Format, Kind};
use crate::io::blockdev::BlockDevice;
use crate::io::file::FileSource;
use crate::io::remote::{self, Location, RemoteStats};
use crate::io::{Access, ReadAt};
use crate::Error;

/// Said once when a compressed input has to be decoded front to back.
const STREAMED_NOTE: &str =
    "compressed as one stream: decoded on the fly, front to back (no random access)";

/// An opened image: the decoded bytes plus how they were reached.
pub struct Opened {
    /// The path given.
    pub(crate) path: PathBuf,
    /// The layers from the file's own bytes down to the payload (last element).
    pub chain: Vec<Layer>,
    /// The innermost bytes (normally a disk or filesystem image).
    pub source: Arc<dyn ReadAt>,
    /// True if `path` is a block device.
    pub is_block_device: bool,
    /// Logical sector size reported by the device, when it is one.
    pub device_sector_size: Option<u32>,
    /// Things the user should know (compressed input, .bin without .cue, container not decoded).
    pub warnings: Vec<String>,
    /// Facts worth a line that are not problems (how the input is decoded).
    pub notes: Vec<String>,
    /// Tracks of a CD image (from its CUE sheet, or guessed for a lone BIN).
    pub cd_tracks: Vec<Track>,
    /// Header facts when the payload is a container this version does not decode.
    pub container: Option<ContainerInfo>,
    /// When the image is on a web server or in a bucket: what was fetched of it.
    pub remote: Option<RemoteInfo>,
}

/// An image read from a web server or a bucket, and what has been fetched of it so far.
#[derive(Clone)]
pub struct RemoteInfo {
    /// The image's address, fit to print (query string redacted).
    pub shown: String,
    /// The object's size in bytes (as stored: compressed, if it is).
    pub object_size: u64,
    /// Whether the server takes range requests (else the object is read as one stream).
    pub ranges: bool,
    /// Bytes and requests so far (counting on as the image is read).
    pub stats: Arc<RemoteStats>,
}

impl Opened {
    /// True if reads at arbitrary offsets are cheap (false for streaming decompressors): what
    /// the payload source says of itself.
    pub fn random_access(&self) -> bool {
        self.source.caps().access == Access::Random
    }

    /// The image's name fit to print: a URL as [`RemoteInfo::shown`] (query string
    /// redacted), a path as it is.
    pub fn shown_path(&self) -> String {
        match &self.remote {
            Some(r) => r.shown.clone(),
            None => self.path.display().to_string(),
        }
    }

    /// The payload format (last layer of the chain).
    pub fn payload_format(&self) -> Format {
        self.chain.last().map_or(Format::Raw, |l| l.format)
    }
}

/// Opens `path`, recognising its format by content. Block devices are opened read-only and
/// sized by ioctl; everything else is read with `pread`.
///
/// Errors about `path` itself (missing, unreadable) do not repeat the path: the caller names
/// the file it was asked to open ("cannot inspect PATH: ..."). Files that `path` names in turn
/// (a CUE sheet's BIN) are named in their errors.
pub fn open(path: &Path, opts: &OpenOptions) -> crate::Result<Opened> {
    if let Some(loc) = path.to_str().and_then(Location::parse) {
        return open_remote(&loc?, path, opts);
    }
    let meta = std::fs::metadata(path)?;
    if meta.file_type().is_block_device() {
        let dev = BlockDevice::open(path)?;
        let ss = dev.sector_size();
        let mut o = open_chain(Arc::new(dev), path, opts, None, Vec::new())?;
        o.is_block_device = true;
        o.device_sector_size = Some(ss);
        return Ok(o);
    }
    if meta.is_dir() {
        return Err(Error::Format("a directory, not an image or device".into()));
    }
    if !meta.is_file() {
        // A pipe reads as an empty file (it has no length and no `pread`), and a second
        // reader of it would take bytes from the first.
        return Err(Error::Unsupported(
            "a pipe, socket or character device: images are read from files and block \
             devices, in more than one pass; save the stream to a file first"
                .into(),
        ));
    }
    let f = FileSource::open(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    open_chain(Arc::new(f), path, opts, Some(dir), Vec::new())
}

/// Opens an image on a web server or in a bucket: range requests through a cache, or one
/// stream when the server takes no ranges (said once).
fn open_remote(loc: &Location, path: &Path, opts: &OpenOptions) -> crate::Result<Opened> {
    let src = remote::open(loc, &opts.remote)?;
    let info = RemoteInfo {
        shown: src.shown().to_owned(),
        object_size: src.size(),
        ranges: src.ranges(),
        stats: src.stats(),
    };
    // Messages name the image as shown: a presigned URL's query is a secret.
    let mut o = open_chain(
        Arc::new(src),
        Path::new(&info.shown),
        opts,
        None,
        Vec::new(),
    )?;
    if !info.ranges {
        o.notes.insert(
            0,
            "the server does not take range requests: the image is read as one stream, \
             front to back"
                .into(),
        );
    }
    o.path = path.to_owned();
    o.remote = Some(info);
    Ok(o)
}

/// Opens a file that another image names (see [`OpenCtx::open_named`]): regular files only,
/// `chain` the files that led here.
fn open_named_file(
    path: &Path,
    opts: &OpenOptions,
    chain: &[PathBuf],
) -> crate::Result<(Arc<dyn ReadAt>, Vec<String>)> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::Format(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let f = FileSource::open(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let o = open_chain(Arc::new(f), path, opts, Some(dir), chain.to_vec())?;
    Ok((o.source, o.warnings))
}

/// Like [`open`] but over an existing source (in-memory images, tests). `name_hint` is used in
/// messages only; CUE sheets cannot reach their BIN files this way.
pub fn open_source(
    src: Arc<dyn ReadAt>,
    name_hint: &str,
    opts: &OpenOptions,
) -> crate::Result<Opened> {
    open_chain(src, Path::new(name_hint), opts, None, Vec::new())
}

/// The loop over the registry: recognise, open one layer, go on with the bytes inside.
fn open_chain(
    base: Arc<dyn ReadAt>,
    path: &Path,
    opts: &OpenOptions,
    dir: Option<PathBuf>,
    chain: Vec<PathBuf>,
) -> crate::Result<Opened> {
    let mut ctx = OpenCtx::new(opts, path, dir).with_opener(open_named_file, chain);
    let mut chain = Vec::new();
    let mut src = base;
    // Whether the source's last sector is known without decoding (a stream that holds a fixed
    // VHD or a DMG says so only there): for random-access sources, and streams decoded to the
    // end while opening. By bytes, whatever the file is called.
    let mut tail_is_free = false;
    loop {
        let random = src.caps().access == Access::Random;
        let with_tail = tail_is_free || end_is_cheap(&*src);
        let driver = registry::detect(&Probe::read(&*src, with_tail)?);
        let f = driver.format();
        let decoder = matches!(f.kind(), Kind::Compression | Kind::Archive);
        if f.kind() != Kind::Image && !ctx.may_descend() {
            chain.push(Layer::stored(f, &*src, None));
            ctx.warn(format!(
                "more than {MAX_DEPTH} nested layers; stopped at {}",
                f.name()
            ));
            break;
        }
        if decoder && !opts.decompress {
            chain.push(Layer::stored(f, &*src, None));
            break;
        }
        let step = driver.open(src.clone(), &mut ctx)?;
        chain.extend(step.layers);
        tail_is_free = step.tail_is_free;
        let Some(inner) = step.inner else { break };
        if random && inner.caps().access == Access::Sequential {
            ctx.note(STREAMED_NOTE);
        }
        src = inner;
        ctx.descend();
    }
    if let [only] = chain.as_slice() {
        if only.format == Format::Raw {
            if let Some(n) = misnamed_note(path) {
                ctx.note(n);
            }
        }
    }
    Ok(Opened {
        path: path.to_owned(),
        chain,
        source: src,
        is_block_device: false,
        device_sector_size: None,
        warnings: ctx.warnings,
        notes: ctx.notes,
        cd_tracks: ctx.cd_tracks,
        container: ctx.container,
        remote: None,
    })
}

/// What to say when a file read as raw bytes carries the name of a container, compression or
/// archive format (`disk.dmg` with no DMG trailer): the name is never how a format is
/// recognised, but the user expected one, and should hear why the bytes were read as they are.
fn misnamed_note(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let d = registry::DRIVERS.iter().find(|d| {
        matches!(
            d.format().kind(),
            Kind::Container | Kind::Compression | Kind::Archive
        ) && d.name_hints().contains(&ext.as_str())
    })?;
    Some(format!(
        "named .{ext}, but not a {} file (none of its signatures found): read as a raw image",
        d.format().name()
    ))
}
