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
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
