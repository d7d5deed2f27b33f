//! The library's error type.

use std::io;

/// Everything that can go wrong while reading an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying source failed.
    #[error("I/O error: {0}")]
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

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
