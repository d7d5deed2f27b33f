//! Writing an archive into a bucket: the [`Upload`] sink the archive writers write through
//! ([`WriteAt`]), and the [`Destination`] it goes to.
//!
//! The formats that write their output in order (seekable zstd and xz append; sparse raw and
//! fixed VHD only skip forward over holes, which become zeros) are streamed: bytes fill a part,
//! full parts go to a few upload threads while the next are compressed, and at most
//! [`IN_FLIGHT`] parts wait or travel at a time, so memory stays bounded whatever the archive's
//! size. The formats that go back to patch what they wrote (Android sparse chunk headers,
//! qcow2 tables, dynamic VHD and VHDX allocation tables) are spooled to an unlinked temporary
//! file in the system's temporary directory and uploaded from it once written.
//!
//! The object appears only when the upload completes ([`Upload::finish`]); an error, an
//! interrupt or dropping the sink unfinished aborts the multipart upload, so nothing is left
//! in the bucket, not even parts that cost storage while invisible.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::s3::S3Object;
use crate::io::WriteAt;
use crate::Error;

/// Size of the first 1000 parts; each next thousand parts are twice as large, so 10 000
/// parts hold 7.99 TiB (more than S3's 5 TiB object limit) and no part passes S3's 5 GiB.
pub const FIRST_PART: usize = 8 << 20;

/// Parts waiting for or being uploaded at one time (and upload threads). With the part being
/// filled, the sink holds at most this many parts plus one.
pub const IN_FLIGHT: usize = 4;

/// S3's limit on the parts of one upload.
const MAX_PARTS: u32 = 10_000;

/// Bytes read at a time from a spool file.
const SPOOL_CHUNK: usize = 1 << 20;

/// How often a writer waiting for a free upload slot looks at the interrupt flag.
const POLL: Duration = Duration::from_millis(100);

/// Size of part `number` (from 1).
pub fn part_size(number: u32) -> usize {
    FIRST_PART << (number.saturating_sub(1) / 1000).min(9)
}

/// Where an archive goes: a local path, or an object in a bucket.
#[derive(Debug)]
pub enum Dest {
    /// A file (or anything the local code path handles).
    Path(PathBuf),
    /// `s3://bucket/key`.
    S3(Destination),
}

/// Parses a command's destination: an `s3://bucket/key` URL is a [`Destination`] (with the
/// credentials, region and endpoint of the environment, `endpoint` from `--endpoint`); an
/// `http://` or `https://` URL is [`Error::Unsupported`] (web servers are read, never written:
/// a usage error); anything else is a local path.
pub fn parse_destination(dest: &Path, endpoint: Option<&str>) -> crate::Result<Dest> {
    let Some(s) = dest.to_str() else {
        return Ok(Dest::Path(dest.to_path_buf()));
    };
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(Error::Unsupported(format!(
            "{}: blockwise reads images from web servers but cannot write to one; write to a \
             file or to a bucket (s3://BUCKET/KEY)",
            super::location::redact(s)
        )));
    }
    if lower.starts_with("s3://") {
        return Ok(Dest::S3(Destination {
            object: S3Object::open(s, endpoint)?,
        }));
    }
    Ok(Dest::Path(dest.to_path_buf()))
}

/// An object in a bucket that an archive (or its bmap) is written to.
#[derive(Debug)]
pub struct Destination {
    object: S3Object,
}

impl Destination {
    /// `s3://bucket/key`, as shown in messages and JSON.
    pub fn url(&self) -> &str {
        super::http::Object::shown(&self.object)
    }

    /// The object whose key is this one's plus `suffix` (`.bmap`: the sidecar bmaptool finds).
    pub fn with_suffix(&self, suffix: &str) -> Destination {
        Destination {
            object: self
                .object
                .sibling(format!("{}{suffix}", self.object.key())),
        }
    }

    /// Refuses ([`Error::Refused`]) to replace an existing object without `force`, before
    /// anything is computed or uploaded. Also the first request of a run, so a wrong key,
    /// bucket or region fails here rather than after the whole archive was compressed.
    pub fn check(&self, force: bool) -> crate::Result<()> {
        match self.object.exists() {
            Ok(false) => Ok(()),
            Ok(true) if force => Ok(()),
            Ok(true) => Err(Error::Refused {
                reason: format!("{} already exists; pass --force to replace it", self.url()),
            }),
            // Without the right to read, S3 answers 403 for a missing key as for a present
            // one: only --force may go ahead blind.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !self.bad_keys(&e) => {
                if force {
                    Ok(())
                } else {
                    Err(Error::Refused {
                        reason: format!(
                            "cannot tell whether {} exists ({e}); pass --force to write it \
                             anyway",
                            self.url()
                        ),
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// True when `e` says the keys themselves are wrong (not just short of a permission).
    fn bad_keys(&self, e: &io::Error) -> bool {
        let m = e.to_string();
        [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "Token",
            "RequestTimeTooSkewed",
        ]
        .iter()
        .any(|c| m.contains(c))
    }

    /// Starts writing the object. `in_order`: the writer only appends or skips forward (the
    /// bytes are streamed as parts); otherwise they are spooled to a temporary file first.
    /// `cancel` is polled while waiting on the network (set by SIGINT/SIGTERM).
    pub fn upload(&self, in_order: bool, cancel: &'static AtomicBool) -> crate::Result<Upload> {
        let sink = if in_order {
            Sink::Stream
        } else {
            let file = tempfile::tempfile().map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create a spool file in {} for {}: {e}",
                        std::env::temp_dir().display(),
                        self.url()
                    ),
                ))
            })?;
            Sink::Spool { file, len: 0 }
        };
        Ok(Upload {
            sink,
            parts: Parts::new(self.object.clone(), cancel),
            cancel,
            finished: false,
        })
    }

    /// Writes `data` as the whole object with one PUT (the bmap).
    pub fn put(&self, data: &[u8], cancel: &'static AtomicBool) -> crate::Result<()> {
        self.object
            .put(data, &|| cancel.load(Ordering::Relaxed))
            .map_err(|e| interrupted_or(e, cancel))
    }
}

/// What a finished upload wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Size of the object.
    pub object_size: u64,
    /// Requests that carried its bytes: 1 for a single PUT, else the multipart upload's parts.
    pub parts: u32,
    /// True when the bytes went through a local spool file first.
    pub spooled: bool,
}

enum Sink {
    Stream,
    /// The spool file and the length written to it; `parts` starts at finish.
    Spool {
        file: File,
        len: u64,
    },
}

/// An object being written; it appears in the bucket only on [`finish`](Self::finish).
/// Failed, or dropped unfinished, it must be [`abort`](Self::abort)ed (dropping does it too,
/// ignoring errors): parts in flight are waited for, then the upload is deleted.
pub struct Upload {
    sink: Sink,
    parts: Parts,
    cancel: &'static AtomicBool,
    finished: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("url", &super::http::Object::shown(&self.parts.object))
            .finish()
    }
}

impl Upload {
    /// Uploads what is still held (or the spool file), then completes the upload: the object
    /// appears. An interrupt seen on the way is [`Error::Interrupted`]. After an error,
    /// [`abort`](Self::abort) the upload.
    pub fn finish(&mut self) -> crate::Result<UploadStats> {
        let cancel = self.cancel;
        if self.finished {
            return Err(Error::Io(io::Error::other(
                "internal error: upload finished twice",
            )));
        }
        if let Sink::Spool { file, len } = &self.sink {
            upload_spool(file, *len, &mut self.parts, cancel)
                .map_err(|e| interrupted_or(e, cancel))?;
        }
        let (object_size, parts) = self.parts.finish().map_err(|e| interrupted_or(e, cancel))?;
        self.finished = true;
        Ok(UploadStats {
            object_size,
            parts,
            spooled: matches!(self.sink, Sink::Spool { .. }),
        })
    }

    /// Aborts the upload: parts in flight are waited for, then the upload and its parts are
    /// deleted. An error here means parts may be left in the bucket (billed, though invisible,
    /// until a lifecycle rule or another abort removes them). Nothing to do once finished.
    pub fn abort(&mut self) -> crate::Result<()> {
        self.parts.abort().map_err(Error::Io)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = self.parts.abort();
    }
}

/// An interrupt seen anywhere becomes [`Error::Interrupted`]; anything else stays as it is.
fn interrupted_or(e: io::Error, cancel: &AtomicBool) -> Error {
    if cancel.load(Ordering::Relaxed) || e.kind() == io::ErrorKind::Interrupted {
        Error::Interrupted
    } else {
        Error::Io(e)
    }
}

fn upload_spool(file: &File, len: u64, parts: &mut Parts, cancel: &AtomicBool) -> io::Result<()> {
    let mut buf = vec![0u8; SPOOL_CHUNK];
    let mut at = 0u64;
    while at < len {
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let n = (len - at).min(SPOOL_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| io::Error::new(e.kind(), format!("reading the spool file: {e}")))?;
        parts.append(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

impl WriteAt for Upload {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stream => {
                self.parts.skip_to(offset)?;
                self.parts.append(buf)
            }
            Sink::Spool { file, len } => {
                FileExt::write_all_at(file, buf, offset)?;
                *len = (*len).max(offset + buf.len() as u64);
                Ok(())
            }
        }
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stream => {
                if len < self.parts.pos {
                    return Err(self.parts.backwards(len));
                }
                self.parts.skip_to(len)
            }
            Sink::Spool { file, len: l } => {
                file.set_len(len)?;
                *l = len;
                Ok(())
            }
        }
    }
}

/// The object's bytes cut into parts, in order: the part being filled, and the pool that
/// uploads the full ones (started with the multipart upload, when the first part is full).
struct Parts {
    object: S3Object,
    cancel: &'static AtomicBool,
    buf: Vec<u8>,
    /// Bytes accepted.
    pos: u64,
    /// Number of the part being filled.
    number: u32,
    pool: Option<Pool>,
}

/// The multipart upload and its upload threads.
struct Pool {
    id: String,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(u32, Vec<u8>)>,
    /// Parts queued or being uploaded.
    held: usize,
    /// (part number, ETag) of every uploaded part.
    etags: Vec<(u32, String)>,
    /// The first failure (kind and message): the upload stops there.
    failed: Option<(io::ErrorKind, String)>,
    /// No more parts will come.
    closed: bool,
    /// Drop what is queued and stop (an abort).
    stop: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Parts {
    fn new(object: S3Object, cancel: &'static AtomicBool) -> Parts {
        Parts {
            object,
            cancel,
            buf: Vec::new(),
            pos: 0,
            number: 1,
            pool: None,
        }
    }

    fn backwards(&self, to: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "internal error: {} is uploaded in order, and the writer went back from byte \
                 {} to {to}",
                super::http::Object::shown(&self.object),
                self.pos
            ),
        )
    }

    /// Zeros up to `offset` (a hole the writer skipped: an object has no holes).
    fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if offset < self.pos {
            return Err(self.backwards(offset));
        }
        let mut left = offset - self.pos;
        while left > 0 {
            let room = self.room()?;
            let n = (room as u64).min(left) as usize;
            self.buf.resize(self.buf.len() + n, 0);
            self.pos += n as u64;
            left -= n as u64;
            self.ship_if_full()?;
        }
        Ok(())
    }

    fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.room()?;
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.pos += n as u64;
            data = &data[n..];
            self.ship_if_full()?;
        }
        Ok(())
    }

    /// Free bytes in the part being filled.
    fn room(&mut self) -> io::Result<usize> {
        if self.number > MAX_PARTS {
            return Err(io::Error::other(format!(
                "{}: more than {MAX_PARTS} parts; S3 objects hold at most 5 TiB",
                super::http::Object::shown(&self.object)
            )));
        }
        let size = part_size(self.number);
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(size);
        }
        Ok(size - self.buf.len())
    }

    fn ship_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() == part_size(self.number) {
            let part = std::mem::take(&mut self.buf);
            self.ship(part)?;
        }
        Ok(())
    }

    /// Hands a full part to the upload threads, waiting while [`IN_FLIGHT`] are held.
    fn ship(&mut self, part: Vec<u8>) -> io::Result<()> {
        if self.pool.is_none() {
            self.pool = Some(self.start()?);
        }
        let pool = self.pool.as_ref().expect("pool just started");
        let mut s = lock(&pool.shared.state);
        loop {
            if let Some((kind, m)) = &s.failed {
                return Err(io::Error::new(*kind, m.clone()));
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            if s.held < IN_FLIGHT {
                break;
            }
            s = pool
                .shared
                .wake
                .wait_timeout(s, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.queue.push_back((self.number, part));
        s.held += 1;
        self.number += 1;
        pool.shared.wake.notify_all();
        Ok(())
    }

    /// Creates the multipart upload and its upload threads.
    fn start(&self) -> io::Result<Pool> {
        let id = self.object.create_multipart()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(IN_FLIGHT);
        for i in 0..IN_FLIGHT {
            let (o, u, s, cancel) = (self.object.clone(), id.clone(), shared.clone(), self.cancel);
            let spawned = std::thread::Builder::new()
                .name(format!("blockwise-upload-{i}"))
                .spawn(move || upload_parts(&o, &u, &s, cancel));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    let pool = Pool {
                        id,
                        shared,
                        workers,
                    };
                    let _ = stop_and_abort(&self.object, pool);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot start an upload thread: {e}"),
                    ));
                }
            }
        }
        Ok(Pool {
            id,
            shared,
            workers,
        })
    }

    /// Uploads the rest and completes the upload (a single PUT when everything fit in the
    /// first part): the object's size and the requests that carried it.
    fn finish(&mut self) -> io::Result<(u64, u32)> {
        if self.pool.is_none() {
            let body = std::mem::take(&mut self.buf);
            let cancel = self.cancel;
            self.object.put(&body, &|| cancel.load(Ordering::Relaxed))?;
            return Ok((self.pos, 1));
        }
        if !self.buf.is_empty() {
            let part = std::mem::take(&mut self.buf);
            self.ship(part)?;
        }
        let last = self.number - 1;
        let pool = self.pool.as_mut().expect("pool checked above");
        lock(&pool.shared.state).closed = true;
        pool.shared.wake.notify_all();
        for w in pool.workers.drain(..) {
            let _ = w.join();
        }
        let mut etags = {
            let mut s = lock(&pool.shared.state);
            if let Some((kind, m)) = &s.failed {
                return Err(io::Error::new(*kind, m.clone()));
            }
            std::mem::take(&mut s.etags)
        };
        etags.sort_by_key(|(n, _)| *n);
        if etags.len() != last as usize || etags.iter().zip(1..).any(|((n, _), k)| *n != k) {
            return Err(io::Error::other(format!(
                "internal error: {} parts uploaded of {last}",
                etags.len()
            )));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        self.object.complete_multipart(&pool.id, &etags)?;
        // Completed: nothing left to abort.
        self.pool = None;
        Ok((self.pos, last))
    }

    /// Stops the upload threads and deletes the upload with its parts.
    fn abort(&mut self) -> io::Result<()> {
        self.buf = Vec::new();
        match self.pool.take() {
            Some(pool) => stop_and_abort(&self.object, pool),
            None => Ok(()),
        }
    }
}

/// Drops the queued parts, waits for the ones in flight (their retries stop), then aborts the
/// upload, and once more if a listing still shows it (parts that were being stored while the
/// first abort ran, as the S3 documentation warns).
fn stop_and_abort(object: &S3Object, mut pool: Pool) -> io::Result<()> {
    {
        let mut s = lock(&pool.shared.state);
        s.stop = true;
        s.queue.clear();
    }
    pool.shared.wake.notify_all();
    for w in pool.workers.drain(..) {
        let _ = w.join();
    }
    object.abort_multipart(&pool.id)?;
    // The listing needs a permission the writer may lack: it only double-checks.
    if let Ok(ids) = object.list_multipart_uploads() {
        if ids.contains(&pool.id) {
            object.abort_multipart(&pool.id)?;
        }
    }
    Ok(())
}

/// An upload thread: takes parts from the queue and uploads them until the queue is closed
/// and empty, or the upload stops.
fn upload_parts(object: &S3Object, id: &str, shared: &Shared, cancel: &AtomicBool) {
    loop {
        let (number, data) = {
            let mut s = lock(&shared.state);
            loop {
                if s.stop {
                    return;
                }
                if let Some(p) = s.queue.pop_front() {
                    break p;
                }
                if s.closed {
                    return;
                }
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        let stop = || cancel.load(Ordering::Relaxed) || lock(&shared.state).stop;
        let r = object.upload_part(id, number, &data, &stop);
        drop(data);
        let mut s = lock(&shared.state);
        s.held -= 1;
        match r {
            Ok(etag) => s.etags.push((number, etag)),
            Err(e) => {
                if s.failed.is_none() {
                    s.failed = Some((e.kind(), e.to_string()));
                }
                s.stop = true;
                s.queue.clear();
            }
        }
        shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_ten_thousand_hold_five_tib() {
        assert_eq!(part_size(1), 8 << 20);
        assert_eq!(part_size(1000), 8 << 20);
        assert_eq!(part_size(1001), 16 << 20);
        assert_eq!(part_size(MAX_PARTS), 4 << 30);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert!(total >= 5 << 40, "{total}");
        // S3: parts of 5 MiB to 5 GiB.
        assert!((1..=MAX_PARTS).all(|n| part_size(n) >= 5 << 20 && part_size(n) <= 5 << 30));
    }

    #[test]
    fn destinations() {
        assert!(matches!(
            parse_destination(Path::new("out.img.zst"), None).unwrap(),
            Dest::Path(_)
        ));
        let e = parse_destination(Path::new("https://u:p@h/x.img?sig=secret"), None).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("https://h/x.img?…"), "{m}");
        assert!(!m.contains("secret") && !m.contains("u:p"), "{m}");
        assert!(matches!(e, Error::Unsupported(_)));
        assert!(parse_destination(Path::new("s3://bucket"), None).is_err());
    }
}
