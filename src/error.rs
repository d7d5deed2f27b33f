//! The library's error type.

use std::io;

/// Everything that can go wrong while reading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying source failed. Shown as the I/O error itself: whoever adds context
    /// (the file, the operation) says it once, and the cause is not repeated as a source.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// An on-disk structure is present but inconsistent (bad sizes, offsets, counts, checksums).
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which structure, e.g. "GPT header" or "ext4 superblock".
        what: &'static str,
        /// What exactly is wrong, in words a user can act on.
        detail: String,
    },
    /// The input is understood but uses something this version cannot handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The input is not in a format this operation accepts.
    #[error("{0}")]
    Format(String),
    /// Reading the source failed at a known place (a bad sector, a corrupt frame). The cause
    /// is the error's source, not part of its message, so a printed chain says it once.
    #[error("read error at byte {offset} (reading {len} bytes)")]
    Read {
        /// Offset of the failed read in the source.
        offset: u64,
        /// Length of the failed read.
        len: u64,
        /// What the source said.
        source: io::Error,
    },
    /// A structure was looked for where the source has ended: `len` bytes at `offset` reach
    /// past its last byte. The volume is too small to hold it, so a probe takes this as "not
    /// this format" (see [`crate::io::ReadAtExt::read_struct`]); a source that ends early
    /// inside its own size is an [`Error::Read`] instead.
    #[error("{len} bytes at byte {offset} lie past the end of the volume ({size} bytes)")]
    TooSmall {
        /// Where the structure starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// Size of the source it was looked for in.
        size: u64,
    },
    /// Refused for safety before anything was written (an existing output without `--force`,
    /// a source mounted read-write): the caller asked for something that could lose data.
    #[error("{reason}")]
    Refused {
        /// Why, and what the user can do about it.
        reason: String,
    },
    /// One pass over a stream whose end was not known beforehand (opened
    /// [`deferred`](crate::format::OpenOptions::deferred)) found that the plan made from its
    /// headers was wrong: it ends elsewhere, or its last sector is a container's trailer.
    /// Nothing was committed; the caller reads the image again, opened to learn its end first.
    #[error("{reason}")]
    Replan {
        /// What the stream turned out to be.
        reason: String,
        /// The stream's decoded size, when the pass reached its end.
        size: Option<u64>,
    },
    /// Data does not match the checksum that vouches for it: a bmap range of the image
    /// being flashed, or a target that does not read back what was written to it.
    #[error("{detail}")]
    Mismatch {
        /// First byte of the range that does not match.
        offset: u64,
        /// Its length.
        len: u64,
        /// What does not match what, in words.
        detail: String,
    },
    /// Stopped on request (SIGINT/SIGTERM) before finishing; outputs were not committed.
    #[error("interrupted")]
    Interrupted,
    /// A stage of a pipeline panicked: a bug in blockwise, reported instead of being taken for
    /// a result (a hasher that died must not become a bmap without checksums).
    #[error("internal error: the {stage} panicked: {message}")]
    Panicked {
        /// Which stage ("decoder", "transform", "sink").
        stage: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// `e` and its causes on one line, joined by ": " (what `anyhow` prints for `{:#}`). Each
/// error says only its own part and leaves its cause to [`source`](std::error::Error::source),
/// so every cause is said once: this is how an error becomes a warning's text, or the CLI's
/// message.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error with its causes on one line ([`chain`]): what a warning that reports it
    /// says.
    pub fn chain(&self) -> String {
        chain(self)
    }

    /// The same error with its offsets moved by `by` bytes: a volume's reader speaks in the
    /// volume's offsets, and whoever cut the volume out of an image ([`crate::scan`]) names
    /// them in the image's.
    pub fn shifted(self, by: u64) -> Self {
        match self {
            Error::Read {
                offset,
                len,
                source,
            } => Error::Read {
                offset: offset.saturating_add(by),
                len,
                source,
            },
            Error::TooSmall { offset, len, size } => Error::TooSmall {
                offset: offset.saturating_add(by),
                len,
                size,
            },
            e => e,
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
