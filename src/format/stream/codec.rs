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

/// Compressed bytes a [`ReadAtReader`] reads ahead of its decoder, per read.
const AHEAD_CHUNK: usize = 1 << 20;
/// Chunks read ahead and not yet taken.
const AHEAD_CHUNKS: usize = 4;
/// Compressed bytes read in the caller's thread before reading ahead starts: a probe that
/// decodes only a stream's head reads nothing it does not need.
const AHEAD_AFTER: u64 = 8 << 20;

/// Sequential `Read` over a [`ReadAt`], starting at offset 0. Once a decoder has read
/// [`AHEAD_AFTER`] bytes, a thread of its own reads the next few MiB ahead, so that fetching
/// compressed bytes (a cold file from disk) overlaps decoding them instead of alternating
/// with it.
pub(crate) struct ReadAtReader {
    src: Arc<dyn ReadAt>,
    /// Bytes read so far in the caller's thread (where the read-ahead starts).
    pos: u64,
    ahead: Option<std::sync::mpsc::Receiver<io::Result<Vec<u8>>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
    /// A read failed: every later one fails the same way.
    failed: Option<(io::ErrorKind, String)>,
    /// No read-ahead thread could be started: reads are made here.
    no_thread: bool,
}

impl ReadAtReader {
    /// A reader positioned at the start of `src`.
    pub(crate) fn new(src: Arc<dyn ReadAt>) -> Self {
        ReadAtReader {
            src,
            pos: 0,
            ahead: None,
            chunk: Vec::new(),
            at: 0,
            ended: false,
            failed: None,
            no_thread: false,
        }
    }

    /// Starts the read-ahead thread; it ends at the end of `src`, at an error (handed on in
    /// order), or when the reader is dropped.
    fn start(&mut self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD_CHUNKS);
        let src = self.src.clone();
        let from = self.pos;
        std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                let mut pos = from;
                loop {
                    let mut buf = vec![0u8; AHEAD_CHUNK];
                    let r = src.read_at(pos, &mut buf).map(|n| {
                        buf.truncate(n);
                        buf
                    });
                    let stop = !matches!(&r, Ok(b) if !b.is_empty());
                    if let Ok(b) = &r {
                        pos = pos.saturating_add(b.len() as u64);
                    }
                    if tx.send(r).is_err() || stop {
                        return;
                    }
                }
            })?;
        self.ahead = Some(rx);
        Ok(())
    }
}

impl Read for ReadAtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if self.at == self.chunk.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            // Read here until the read-ahead starts; also when no thread can be started (a
            // limit on threads): slower, never a failure.
            if self.ahead.is_none()
                && (self.pos < AHEAD_AFTER || self.no_thread || self.start().is_err())
            {
                self.no_thread = self.pos >= AHEAD_AFTER;
                let n = self.src.read_at(self.pos, buf)?;
                self.pos = self.pos.saturating_add(n as u64);
                return Ok(n);
            }
            let next = self.ahead.as_ref().map(|rx| rx.recv());
            match next {
                Some(Ok(Ok(chunk))) => {
                    if chunk.is_empty() {
                        self.ended = true;
                        return Ok(0);
                    }
                    self.chunk = chunk;
                    self.at = 0;
                }
                Some(Ok(Err(e))) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                // Only a thread that could not go on ends without saying so.
                Some(Err(_)) | None => {
                    let e = io::Error::other("the read-ahead of the compressed input stopped");
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    /// Fails every read that reaches `bad` (a disk error mid-file).
    struct FailsAt(MemSource, u64);

    impl ReadAt for FailsAt {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            if offset + buf.len() as u64 > self.1 {
                return Err(io::Error::other("bad sector"));
            }
            self.0.read_at(offset, buf)
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    #[test]
    fn reads_every_byte_once_in_order_across_the_read_ahead() {
        let data = bytes(AHEAD_AFTER as usize + 5 * AHEAD_CHUNK + 1234);
        let mut r = ReadAtReader::new(Arc::new(MemSource(data.clone())));
        let mut out = Vec::new();
        let mut buf = vec![0u8; 300_001];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(
            out == data,
            "read {} of {} bytes, or wrong ones",
            out.len(),
            data.len()
        );
        assert_eq!(r.read(&mut buf).unwrap(), 0, "the end stays the end");
    }

    #[test]
    fn an_error_ahead_arrives_where_it_happened() {
        let data = bytes(AHEAD_AFTER as usize + 4 * AHEAD_CHUNK);
        let bad = AHEAD_AFTER + 2 * AHEAD_CHUNK as u64 + 10;
        let mut r = ReadAtReader::new(Arc::new(FailsAt(MemSource(data.clone()), bad)));
        let mut got = 0u64;
        let mut buf = vec![0u8; 65536];
        let err = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("ended without the error"),
                Ok(n) => {
                    assert_eq!(&buf[..n], &data[got as usize..got as usize + n]);
                    got += n as u64;
                }
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("bad sector"), "{err}");
        // Everything before the failing read-ahead chunk was handed on first.
        assert_eq!(got, AHEAD_AFTER + 2 * AHEAD_CHUNK as u64);
        assert!(r.read(&mut buf).is_err(), "no bytes after an error");
    }
}
