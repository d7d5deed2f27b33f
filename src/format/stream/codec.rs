//! What a stream is decoded with and what is known of its end: the [`Codec`]s the compression
//! formats define, what their headers say of the decoded size ([`SizeFact`]), and when opening
//! learns the end ([`StreamEnd`]). Apart from the stream façade (`mod.rs`, which builds a
//! layer from a [`super::StreamSource`]) so that the source and the drivers take these from
//! here and nothing imports its importer.

use std::io::{self, BufReader, Read};
use std::sync::Arc;

use crate::io::{Access, ReadAt, SizeKnown};

/// Size of a cached decoded chunk.
pub const CHUNK: usize = 1 << 20;
/// Maximum number of cached chunks (64 MiB in total).
pub(crate) const MAX_CACHED_CHUNKS: usize = 64;
/// Buffer between the compressed source and the decoder.
const IN_BUF: usize = 256 << 10;

/// When opening learns what only the end of a stream says: its exact decoded size, and whether
/// its last sector is a trailer (a fixed VHD's footer, a DMG's `koly`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// At open (what `inspect` wants), as far as it costs no decoding beyond what the size
    /// needs. A stream whose size its headers do not give exactly is decoded once to its end;
    /// its first and last chunks stay cached, so its last sector is looked at for a trailer
    /// for free, whatever the file is called. A stream whose headers give its size exactly
    /// (an xz index, zstd content sizes, a zip directory) is not decoded at open, not even
    /// for its trailer: that would cost a full decode (seconds to minutes on a large sparse
    /// image) for a rare case, which the reader that reaches the end tells with
    /// [`super::trailer_format`], as with `Deferred`.
    #[default]
    Eager,
    /// While reading (for commands that read every byte once in order anyway: backup, bmap,
    /// verify). Nothing is decoded at open beyond the head; a size the headers do not give
    /// exactly is a hint ([`SizeKnown::Hint`]) that reads past it raise and that becomes exact
    /// once any reader reaches the end. Such a reader checks the last bytes itself with
    /// [`super::trailer_format`].
    Deferred,
}

/// True if the end of `src` can be read without decoding all of it: a random-access source of
/// exact size.
pub(crate) fn end_is_cheap(src: &dyn ReadAt) -> bool {
    let c = src.caps();
    c.access == Access::Random && c.size == SizeKnown::Exact
}

/// A streaming codec [`super::StreamSource`] can decode: how to start a decoder over the compressed
/// bytes, and what its headers say about the decoded size. Each codec is defined in its
/// format's file (`Codec::Gzip` in `compress/gzip.rs`).
#[derive(Clone, Copy)]
pub struct Codec {
    name: &'static str,
    decoder: fn(Compressed) -> io::Result<Box<dyn Read + Send>>,
    size: fn(&dyn ReadAt) -> io::Result<SizeFact>,
}

/// The compressed bytes as a decoder reads them.
pub(crate) type Compressed = BufReader<ReadAtReader>;

impl Codec {
    /// A codec called `name` (in messages), started by `decoder`, whose headers give `size`.
    pub(crate) const fn new(
        name: &'static str,
        decoder: fn(Compressed) -> io::Result<Box<dyn Read + Send>>,
        size: fn(&dyn ReadAt) -> io::Result<SizeFact>,
    ) -> Codec {
        Codec {
            name,
            decoder,
            size,
        }
    }

    /// Name used in messages.
    pub(crate) fn name(self) -> &'static str {
        self.name
    }

    /// What the headers of `compressed` say about its decoded size.
    pub(crate) fn size_fact(self, compressed: &dyn ReadAt) -> io::Result<SizeFact> {
        (self.size)(compressed)
    }

    /// A fresh decoder over `compressed`, from its first byte.
    pub(crate) fn decoder(self, compressed: Arc<dyn ReadAt>) -> io::Result<Box<dyn Read + Send>> {
        (self.decoder)(BufReader::with_capacity(
            IN_BUF,
            ReadAtReader::new(compressed),
        ))
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// What a compressed stream's own fields say about its decoded size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SizeFact {
    /// The exact size, and where it was read ("xz index").
    Exact {
        /// Decoded bytes.
        size: u64,
        /// Where the size comes from, for messages.
        origin: &'static str,
    },
    /// A size the stream cannot promise (gzip's ISIZE, a first frame's content size).
    Hint {
        /// The hinted size.
        size: u64,
        /// The hint is only the size modulo this (gzip's ISIZE: 2^32).
        modulus: Option<u64>,
        /// Where the hint comes from, for messages.
        origin: &'static str,
    },
    /// Nothing is said.
    Unknown,
}

impl SizeFact {
    /// An exact size from `origin`.
    pub(crate) fn exact(size: u64, origin: &'static str) -> SizeFact {
        SizeFact::Exact { size, origin }
    }
}

/// Sequential `Read` over a [`ReadAt`], starting at offset 0.
pub(crate) struct ReadAtReader {
    src: Arc<dyn ReadAt>,
    pos: u64,
}

impl ReadAtReader {
    /// A reader positioned at the start of `src`.
    pub(crate) fn new(src: Arc<dyn ReadAt>) -> Self {
        ReadAtReader { src, pos: 0 }
    }
}

impl Read for ReadAtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(self.pos, buf)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}
