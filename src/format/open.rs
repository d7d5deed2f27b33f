//! Opening a path: sniff its bytes, peel compression and containers, return the disk image.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::android_sparse::AndroidSparse;
use super::cd::{self, CdUserData};
use super::stream::{Codec, StreamSource};
use crate::format::Format;
use crate::io::blockdev::BlockDevice;
use crate::io::file::FileSource;
use crate::io::{ReadAt, ReadAtExt, Slice};
use crate::Error;

/// Most wrapper layers peeled before the payload (e.g. zip → xz → sparse → raw).
pub const MAX_DEPTH: usize = 4;

/// How [`open`] treats wrappers.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Decode compression wrappers (gz, xz, zst, bz2, lz4, zip members) transparently.
    pub decompress: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { decompress: true }
    }
}

/// One layer of the wrapper chain, outermost first.
#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    /// What this layer is.
    pub format: Format,
    /// Stored size of this layer in bytes, if known.
    pub size: Option<u64>,
    /// Facts worth showing (e.g. "member disk.img", "virtual size 8 GiB, dynamic").
    pub detail: Option<String>,
}

/// Said once when a compressed input has to be decoded front to back.
const STREAMED_NOTE: &str =
    "compressed as one stream: decoded on the fly, front to back (no random access)";

/// An opened image: the decoded bytes plus how they were reached.
pub struct Opened {
    /// The path given.
    pub path: PathBuf,
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
    pub cd_tracks: Vec<cd::Track>,
    /// Header facts when the payload is a container this version does not decode.
    pub container: Option<super::container::ContainerInfo>,
}

impl Opened {
    /// True if reads at arbitrary offsets are cheap (false for streaming decompressors): what
    /// the payload source says of itself.
    pub fn random_access(&self) -> bool {
        self.source.caps().access == crate::io::Access::Random
    }

    /// The payload format (last layer of the chain).
    pub fn payload_format(&self) -> Format {
        self.chain.last().map_or(Format::Raw, |l| l.format)
    }
}

/// Opens `path`, recognising its format by content. Block devices are opened read-only and
/// sized by ioctl; everything else is read with `pread`.
pub fn open(path: &Path, opts: &OpenOptions) -> crate::Result<Opened> {
    let meta = std::fs::metadata(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if meta.file_type().is_block_device() {
        let dev = BlockDevice::open(path)?;
        let ss = dev.sector_size();
        let mut o = open_inner(Arc::new(dev), path, opts, None)?;
        o.is_block_device = true;
        o.device_sector_size = Some(ss);
        return Ok(o);
    }
    if meta.is_dir() {
        return Err(Error::Format(format!("{} is a directory", path.display())));
    }
    let f = FileSource::open(path)?;
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    open_inner(Arc::new(f), path, opts, dir)
}

/// Like [`open`] but over an existing source (in-memory images, tests). `name_hint` is used in
/// messages only; CUE sheets cannot reach their BIN files this way.
pub fn open_source(
    src: Arc<dyn ReadAt>,
    name_hint: &str,
    opts: &OpenOptions,
) -> crate::Result<Opened> {
    open_inner(src, Path::new(name_hint), opts, None)
}

fn layer(format: Format, size: u64, detail: Option<String>) -> Layer {
    Layer {
        format,
        size: Some(size),
        detail,
    }
}

fn open_inner(
    base: Arc<dyn ReadAt>,
    path: &Path,
    opts: &OpenOptions,
    dir: Option<&Path>,
) -> crate::Result<Opened> {
    let mut o = Opened {
        path: path.to_owned(),
        chain: Vec::new(),
        source: base,
        is_block_device: false,
        device_sector_size: None,
        warnings: Vec::new(),
        notes: Vec::new(),
        cd_tracks: Vec::new(),
        container: None,
    };
    for depth in 0..=MAX_DEPTH {
        let cur = o.source.clone();
        let size = cur.size();
        let f = super::sniff::sniff_with(&*cur, o.random_access() || trailer_name(path))?;
        let wrapper = f.is_compression()
            || matches!(
                f,
                Format::Zip | Format::AndroidSparse | Format::Cue | Format::CdRaw
            );
        if depth == MAX_DEPTH && wrapper {
            o.chain.push(layer(f, size, None));
            o.warnings.push(format!(
                "more than {MAX_DEPTH} nested layers; stopped at {}",
                f.name()
            ));
            break;
        }
        let xz_blocks = if f == Format::Xz && opts.decompress {
            super::XzBlocks::open(cur.clone())?
        } else {
            None
        };
        match f {
            Format::SeekableZstd if opts.decompress => {
                // A seek table that does not add up is only an index gone wrong: the frames
                // are still plain zstd (as `zstd -d` sees them), so stream them instead.
                let seekable = match super::stream::SeekableZstd::open(cur.clone()) {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        o.warnings.push(format!(
                            "{e}; the seek table is ignored and the frames streamed"
                        ));
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Some(s) = seekable {
                    o.chain.push(layer(
                        f,
                        size,
                        Some(format!(
                            "{} independent frames, decodes to {} bytes",
                            s.frame_count(),
                            s.size()
                        )),
                    ));
                    o.source = Arc::new(s);
                    continue;
                }
                // Frames too large to decode one at a time: stream it like plain zstd.
                let s = StreamSource::new(Codec::Zstd, cur, None)?;
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!("decodes to {} bytes (streamed)", s.size())),
                ));
                if o.random_access() {
                    o.notes.push(STREAMED_NOTE.into());
                }
                o.source = Arc::new(s);
            }
            Format::Xz if xz_blocks.is_some() => {
                // Independent blocks listed in the index: read with random access.
                let s = xz_blocks.ok_or_else(|| Error::Format("xz".into()))?;
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!(
                        "{} blocks, decodes to {} bytes (random access)",
                        s.block_count(),
                        s.size()
                    )),
                ));
                o.source = Arc::new(s);
            }
            f if f.is_compression() && opts.decompress => {
                let codec = Codec::for_format(f).ok_or_else(|| Error::Format(f.name().into()))?;
                let s = StreamSource::new(codec, cur, None)?;
                let detail = format!(
                    "decodes to {} bytes (size from {})",
                    s.size(),
                    s.size_origin()
                );
                o.chain.push(layer(f, size, Some(detail)));
                if o.random_access() {
                    o.notes.push(STREAMED_NOTE.into());
                }
                o.source = Arc::new(s);
            }
            Format::Zip if opts.decompress => {
                let m = super::zip_member::open_member(cur)?;
                let how = if m.stored { "stored" } else { "deflated" };
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!(
                        "member {} ({how}, {} entries in archive)",
                        m.name, m.entries
                    )),
                ));
                if !m.stored && o.random_access() {
                    o.notes.push(STREAMED_NOTE.into());
                }
                o.source = m.source;
            }
            Format::AndroidSparse => {
                let s = AndroidSparse::open(cur)?;
                let h = *s.header();
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!(
                        "block size {}, {} blocks, {} chunks, expands to {} bytes",
                        h.block_size,
                        h.total_blocks,
                        h.total_chunks,
                        s.size()
                    )),
                ));
                o.source = Arc::new(s);
            }
            Format::Cue if depth == 0 && dir.is_some() => {
                let dir = dir.unwrap_or(Path::new("."));
                let text = cur.read_upto(0, cd::MAX_CUE_BYTES)?;
                let sheet = cd::parse_cue(&String::from_utf8_lossy(&text))?;
                let t = sheet
                    .first_data_track()
                    .ok_or_else(|| {
                        Error::Unsupported("CUE sheet has no data track (audio CD)".into())
                    })?
                    .clone();
                let file = sheet
                    .files
                    .get(t.file)
                    .ok_or_else(|| Error::corrupt("cue sheet", "track without file"))?;
                let mut bin_path = dir.join(&file.name);
                if !bin_path.exists() {
                    // Sheets often keep the path the BIN had when ripped (even with Windows
                    // separators); the file normally sits beside the sheet.
                    if let Some(base) = file.name.rsplit(['/', '\\']).next() {
                        bin_path = dir.join(base);
                    }
                }
                let bin = FileSource::open(&bin_path).map_err(|e| {
                    Error::Format(format!(
                        "CUE sheet refers to {:?}, which cannot be opened: {e}",
                        file.name
                    ))
                })?;
                let bin_size = bin.size();
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!(
                        "{} track(s); data track {} {:?} in {:?}",
                        sheet.tracks.len(),
                        t.number,
                        t.mode,
                        file.name
                    )),
                ));
                let bin: Arc<dyn ReadAt> = Arc::new(bin);
                let ss = t.mode.sector_size().unwrap_or(cd::RAW_SECTOR);
                let start = u64::from(t.start) * ss;
                // The data track runs to the next track in the same file, or the file's end.
                let next = sheet
                    .tracks
                    .iter()
                    .find(|n| n.number > t.number && n.file == t.file)
                    .map(|n| u64::from(n.start.saturating_sub(t.start)));
                let user = CdUserData::new(
                    bin,
                    start,
                    ss,
                    t.mode.user_data_offset().unwrap_or(16),
                    next,
                )?;
                o.chain.push(layer(
                    Format::CdRaw,
                    bin_size,
                    Some(format!("{:?} sectors of {ss} bytes", t.mode)),
                ));
                o.cd_tracks = sheet.tracks.clone();
                o.source = Arc::new(user);
            }
            Format::CdRaw => {
                let head = cur.read_upto(0, cd::RAW_SECTOR as usize)?;
                let mode = cd::raw_sector_mode(&head).unwrap_or(1);
                if depth == 0 && !cue_references(dir, path) {
                    o.warnings.push(format!(
                        "raw CD image without its .cue sheet; track layout guessed (MODE{mode}/2352 data track)"
                    ));
                }
                let user = CdUserData::raw(cur, 0, mode, None)?;
                o.cd_tracks = vec![cd::Track {
                    number: 1,
                    mode: if mode == 2 {
                        cd::TrackMode::Mode2_2352
                    } else {
                        cd::TrackMode::Mode1_2352
                    },
                    file: 0,
                    index0: None,
                    start: 0,
                    pregap: 0,
                }];
                o.chain.push(layer(
                    f,
                    size,
                    Some(format!("MODE{mode}/2352, {} sectors", user.sectors())),
                ));
                o.source = Arc::new(user);
            }
            Format::Qcow
            | Format::Qcow2
            | Format::Vhd
            | Format::Vhdx
            | Format::VmdkSparse
            | Format::VmdkDescriptor
            | Format::Vdi
            | Format::Dmg => {
                let info = super::container::inspect(&*cur, f)?;
                let vs = info.virtual_size.map_or_else(
                    || "unknown".to_string(),
                    |v| format!("{v} bytes ({})", crate::util::human_bytes(v)),
                );
                let mut detail = format!("virtual size {vs}");
                if !info.detail.is_empty() {
                    detail = format!("{detail}, {}", info.detail);
                }
                o.chain.push(layer(f, size, Some(detail)));
                if let Some((off, len)) = info.payload {
                    o.source = Arc::new(Slice::new(cur, off, len));
                    continue;
                }
                o.warnings.push(format!(
                    "{} container: contents not decoded by this version; virtual size {vs}",
                    f.name()
                ));
                o.container = Some(info);
                break;
            }
            Format::SevenZip => {
                o.chain.push(layer(f, size, None));
                o.warnings.push(
                    "7z archive: not decoded by this version; extract the image first".into(),
                );
                break;
            }
            _ => {
                o.chain.push(layer(f, size, None));
                break;
            }
        }
    }
    Ok(o)
}

/// True if the file name suggests a format recognised by its last sector (`x.vhd.xz`,
/// `x.dmg.gz`): only then is a streamed layer decoded to its end just to look at the trailer.
fn trailer_name(path: &Path) -> bool {
    let n = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    n.contains(".vhd") || n.contains(".dmg")
}

/// True if a `.cue` file beside `bin` names it in a FILE line.
fn cue_references(dir: Option<&Path>, bin: &Path) -> bool {
    let (Some(dir), Some(name)) = (dir, bin.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
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
                .map_or(true, |m| m.len() > cd::MAX_CUE_BYTES as u64)
        {
            continue;
        }
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        if let Ok(sheet) = cd::parse_cue(&String::from_utf8_lossy(&text)) {
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
