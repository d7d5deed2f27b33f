//! A remote object read as a [`ReadAt`]: range requests through a bounded cache.
//!
//! The first request asks for the first block by range. A `206` answer says the server takes
//! ranges, how long the object is (`Content-Range`), and which version it is (`ETag`, else
//! `Last-Modified`); every later request carries that version (`If-Match` or
//! `If-Unmodified-Since`) and its answer is checked against it, so an object replaced while
//! it is read fails the read instead of mixing two versions. A `200` answer means the server
//! ignores ranges: the object is then read front to back as one stream, like a gzip file.
//!
//! Reads are served from a cache of fetched pieces. Three things fill it: a read that misses
//! fetches the aligned block around it; reads that go forward block after block start a
//! readahead of up to [`RemoteOptions::parallel`] blocks in flight; and a reader that says
//! what it will read ([`ReadAt::will_read`]: flash, backup and convert pass their whole map)
//! gets exactly those bytes fetched ahead, in order and in parallel, a bounded window ahead of
//! where it reads, so nothing outside the map is downloaded.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ureq::http;

use super::http::{retry, Attempt, Object, Transport};
use super::location::RemoteOptions;
use crate::io::{Access, Caps, ReadAt};
use crate::ExtentMap;

/// What a remote source has fetched so far.
#[derive(Debug, Default)]
pub struct RemoteStats {
    downloaded: AtomicU64,
    requests: AtomicU64,
}

impl RemoteStats {
    /// Body bytes received (headers not counted).
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }
    /// Requests sent, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// An object on a web server or in a bucket, readable at any offset.
pub struct RemoteSource {
    inner: Arc<Inner>,
    /// A stream (the server takes no ranges) that was downloaded whole before this source
    /// was handed out: every byte is in the spool, so it reads as a random-access file.
    spooled_whole: bool,
}

/// Streamed objects opened in this process, most recent last (at most
/// [`STREAMS_KEPT`]): opening the same URL again (a command reading an image a second time,
/// sized first) reads the spool instead of downloading it again.
static STREAMS: Mutex<Vec<(String, Arc<Inner>)>> = Mutex::new(Vec::new());
const STREAMS_KEPT: usize = 4;

struct Inner {
    obj: Arc<dyn Object>,
    transport: Arc<Transport>,
    size: u64,
    /// The request header that makes a changed object fail a request, and its value.
    validator: Option<(&'static str, String)>,
    /// The object's `ETag` as first seen (compared with every answer that carries one).
    etag: Option<String>,
    block: u64,
    parallel: usize,
    stats: Arc<RemoteStats>,
    mode: Mode,
}

enum Mode {
    Ranged { state: Mutex<State>, cv: Condvar },
    Streamed(Mutex<Stream>),
}

/// Most bytes the cache keeps (fetched pieces not yet read are kept first).
const CACHE_BYTES: u64 = 64 << 20;
/// Planned ranges closer than this are fetched as one request: a few KiB of gap cost less
/// than a request's round trip, and far less than 10% of a piece.
const PLAN_GAP: u64 = 16 << 10;

/// A fetched piece of the object.
struct Entry {
    data: Arc<Vec<u8>>,
    used: u64,
}

/// The shared state of a ranged source.
#[derive(Default)]
struct State {
    /// Fetched pieces by start offset; they may overlap.
    cache: BTreeMap<u64, Entry>,
    /// The pieces by last use (`Entry::used` -> start): the next to evict first, found
    /// without a scan of the whole cache (it may hold thousands of small planned pieces).
    by_use: BTreeMap<u64, u64>,
    cached_bytes: u64,
    clock: u64,
    /// Ranges being fetched, by start: their end.
    inflight: BTreeMap<u64, u64>,
    /// The block the reader touched last, for the readahead.
    last_block: Option<u64>,
    /// How many blocks the readahead runs ahead (doubles up to `parallel` while reads go
    /// forward, back to 0 when they jump).
    ahead: u64,
    /// The reader's plan, cut into pieces of at most one block, in order.
    plan: Vec<(u64, u64)>,
    /// Next piece of the plan to fetch.
    cursor: usize,
    /// First piece of the plan not yet reached by the reader.
    reached: usize,
    /// Plan pieces being fetched.
    plan_inflight: usize,
    /// A failure that ends every read (the object changed): reported to every reader.
    failed: Option<(io::ErrorKind, String)>,
}

impl RemoteSource {
    /// Opens `obj` (known as `key`: its full address and how it is reached), or the stream
    /// of it this process already holds.
    pub(crate) fn open_keyed(
        key: String,
        obj: Arc<dyn Object>,
        opts: &RemoteOptions,
    ) -> io::Result<RemoteSource> {
        {
            let streams = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, inner)) = streams.iter().rev().find(|(k, _)| *k == key) {
                let whole = match &inner.mode {
                    Mode::Streamed(st) => {
                        st.lock().unwrap_or_else(|p| p.into_inner()).pos >= inner.size
                    }
                    Mode::Ranged { .. } => false,
                };
                return Ok(RemoteSource {
                    inner: inner.clone(),
                    spooled_whole: whole,
                });
            }
        }
        let src = RemoteSource::open(obj, opts)?;
        if !src.ranges() {
            let mut streams = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
            streams.push((key, src.inner.clone()));
            if streams.len() > STREAMS_KEPT {
                streams.remove(0);
            }
        }
        Ok(src)
    }

    /// Opens `obj`: one request for its first block, which tells the size, the version and
    /// whether the server takes ranges.
    pub(crate) fn open(obj: Arc<dyn Object>, opts: &RemoteOptions) -> io::Result<RemoteSource> {
        let block = opts.block.clamp(64 << 10, 64 << 20).next_power_of_two();
        let parallel = opts.parallel.clamp(1, 64);
        let transport = Transport::shared();
        let stats = Arc::new(RemoteStats::default());
        let what = format!("GET {}", obj.shown());
        let first = retry(|| {
            let req = obj
                .request("GET", &[("range", format!("bytes=0-{}", block - 1))])
                .map_err(Attempt::Fatal)?;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut resp = transport.attempt(&what, obj.follows_redirects(), req)?;
            match resp.status().as_u16() {
                206 => {
                    let (start, end, total) = content_range(&resp).ok_or_else(|| {
                        fatal(&what, "a 206 answer without a valid Content-Range")
                    })?;
                    let total = total.ok_or_else(|| {
                        fatal(&what, "the server does not say how long the object is")
                    })?;
                    if start != 0 || end >= total || end >= block {
                        return Err(fatal(
                            &what,
                            &format!(
                                "asked for bytes 0-{}, the server sent {start}-{end}",
                                block - 1
                            ),
                        ));
                    }
                    let (head, body) = resp.into_parts();
                    let data = read_body(body, end + 1, &what, &stats)?;
                    Ok(First::Ranged(head.headers, total, data))
                }
                // An empty object: no byte is satisfiable.
                416 if content_range(&resp).is_some_and(|r| r.2 == Some(0)) => {
                    let (head, _) = resp.into_parts();
                    Ok(First::Ranged(head.headers, 0, Vec::new()))
                }
                200 => Ok(First::Streamed(resp)),
                s => Err(Attempt::Fatal(
                    obj.explain(&what, &mut resp)
                        .unwrap_or_else(|| status_error(&what, s)),
                )),
            }
        })?;
        let (headers, size, mode) = match first {
            First::Ranged(headers, size, data) => {
                let mut state = State::default();
                if !data.is_empty() {
                    state.insert(0, data);
                }
                let mode = Mode::Ranged {
                    state: Mutex::new(state),
                    cv: Condvar::new(),
                };
                (headers, size, mode)
            }
            First::Streamed(resp) => {
                let (head, body) = resp.into_parts();
                let size = body.content_length().ok_or_else(|| {
                    io::Error::other(format!(
                        "{}: the server takes no range requests and does not say how long the \
                         object is: download it first",
                        obj.shown()
                    ))
                })?;
                let spool = tempfile::tempfile().map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot make a temporary file to keep the stream in: {e}"),
                    )
                })?;
                let mode = Mode::Streamed(Mutex::new(Stream {
                    body: Some(Box::new(body.into_reader())),
                    pos: 0,
                    spool,
                }));
                (head.headers, size, mode)
            }
        };
        let (validator, etag) = validator_of(&headers);
        Ok(RemoteSource {
            spooled_whole: false,
            inner: Arc::new(Inner {
                obj,
                transport,
                size,
                validator,
                etag,
                block,
                parallel,
                stats,
                mode,
            }),
        })
    }

    /// Whether the server takes range requests (else the object is read as one stream).
    pub fn ranges(&self) -> bool {
        matches!(self.inner.mode, Mode::Ranged { .. })
    }

    /// What has been fetched so far (shared: it keeps counting after this call).
    pub fn stats(&self) -> Arc<RemoteStats> {
        self.inner.stats.clone()
    }

    /// The object's address for messages (redacted).
    pub fn shown(&self) -> &str {
        self.inner.obj.shown()
    }
}

enum First {
    Ranged(http::HeaderMap, u64, Vec<u8>),
    Streamed(http::Response<ureq::Body>),
}

impl ReadAt for RemoteSource {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.inner.size;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        match &self.inner.mode {
            Mode::Ranged { .. } => {
                let mut done = 0;
                while done < len {
                    let n = self
                        .inner
                        .read_cached(offset + done as u64, &mut buf[done..len])?;
                    done += n;
                }
                Ok(len)
            }
            Mode::Streamed(s) => {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                let mut done = 0;
                while done < len {
                    let n = self.inner.read_streamed(
                        &mut s,
                        offset + done as u64,
                        &mut buf[done..len],
                    )?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                Ok(done)
            }
        }
    }

    fn caps(&self) -> Caps {
        match self.inner.mode {
            Mode::Ranged { .. } => Caps {
                chunk: self.inner.block,
                ..Caps::RANDOM
            },
            Mode::Streamed(_) if self.spooled_whole => Caps {
                chunk: self.inner.block,
                ..Caps::RANDOM
            },
            Mode::Streamed(_) => Caps {
                access: Access::Sequential,
                chunk: self.inner.block,
                ..Caps::RANDOM
            },
        }
    }

    fn will_read(&self, ranges: &ExtentMap) {
        if let Mode::Ranged { state, .. } = &self.inner.mode {
            let mut st = lock(state);
            st.plan = plan_pieces(ranges, self.inner.block, self.inner.size);
            st.cursor = 0;
            st.reached = 0;
            Inner::pump(&self.inner, &mut st);
        }
    }
}

impl Inner {
    fn shown(&self) -> &str {
        self.obj.shown()
    }

    /// Serves a read at `pos` from the cache, waiting for a fetch in flight or fetching the
    /// block around it. Returns the bytes copied (at least 1).
    fn read_cached(self: &Arc<Self>, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Mode::Ranged { state, cv } = &self.mode else {
            unreachable!("read_cached is only called in ranged mode");
        };
        let block = self.block;
        let b = pos / block;
        let mut st = lock(state);
        self.touch(&mut st, pos, b);
        loop {
            if let Some((kind, msg)) = &st.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if let Some(n) = st.copy_out(pos, buf) {
                return Ok(n);
            }
            if st.inflight_covering(pos) {
                st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            break;
        }
        // Nobody has it: fetch the whole block, cut at the first byte that is already cached
        // or on its way (so a planned piece is not fetched twice).
        let start = b * block;
        let mut end = (start + block).min(self.size);
        if let Some((&s, _)) = st.cache.range(pos + 1..end).next() {
            end = s;
        }
        if let Some((&s, _)) = st.inflight.range(pos + 1..end).next() {
            end = s;
        }
        let start = st.uncovered_from(start, pos);
        st.inflight.insert(start, end);
        drop(st);
        let got = self.fetch(start, end);
        let mut st = lock(state);
        st.inflight.remove(&start);
        cv.notify_all();
        let data = got?;
        st.insert(start, data);
        let n = st
            .copy_out(pos, buf)
            .ok_or_else(|| io::Error::other("a fetched block does not cover the read"))?;
        Ok(n)
    }

    /// Bookkeeping for a read at `pos` in block `b`: the plan's progress, and the readahead.
    fn touch(self: &Arc<Self>, st: &mut State, pos: u64, b: u64) {
        if !st.plan.is_empty() {
            let i = st.plan.partition_point(|&(_, e)| e <= pos);
            if i > st.reached {
                st.reached = i;
            }
            if st.cursor < st.reached {
                st.cursor = st.reached;
            }
            Inner::pump(self, st);
            return;
        }
        match st.last_block {
            Some(l) if l == b => return,
            Some(l) if l + 1 == b => st.ahead = (st.ahead * 2).clamp(1, self.parallel as u64),
            _ => st.ahead = 0,
        }
        st.last_block = Some(b);
        let last = self.size.div_ceil(self.block);
        for k in b + 1..=(b + st.ahead).min(last.saturating_sub(1)) {
            let start = k * self.block;
            let end = (start + self.block).min(self.size);
            if st.in_flight_fetches() >= self.parallel
                || st.covers(start, end)
                || st.inflight_covering(start)
            {
                continue;
            }
            self.spawn_fetch(st, start, end, false);
        }
    }

    /// Starts fetches of the plan's next pieces while fewer than `parallel` are in flight and
    /// the window ahead of the reader is not full.
    fn pump(self: &Arc<Self>, st: &mut State) {
        let window = (self.parallel * 4).max(16);
        while st.plan_inflight < self.parallel
            && st.cursor < st.plan.len()
            && st.cursor < st.reached + window
        {
            let (start, end) = st.plan[st.cursor];
            st.cursor += 1;
            if st.covers(start, end) || st.inflight_covering(start) {
                continue;
            }
            self.spawn_fetch(st, start, end, true);
        }
    }

    /// Fetches `start..end` on a thread of its own; the result lands in the cache. A failure
    /// is left for the reader to meet (it fetches again, and reports), except a changed
    /// object, which fails every read from then on.
    fn spawn_fetch(self: &Arc<Self>, st: &mut State, start: u64, end: u64, planned: bool) {
        st.inflight.insert(start, end);
        if planned {
            st.plan_inflight += 1;
        }
        let me = self.clone();
        std::thread::spawn(move || {
            let got = me.fetch(start, end);
            let Mode::Ranged { state, cv } = &me.mode else {
                return;
            };
            let mut st = lock(state);
            st.inflight.remove(&start);
            if planned {
                st.plan_inflight -= 1;
            }
            match got {
                Ok(data) => st.insert(start, data),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    st.failed.get_or_insert((e.kind(), e.to_string()));
                }
                Err(_) => {}
            }
            if planned {
                Inner::pump(&me, &mut st);
            }
            cv.notify_all();
        });
    }

    /// One range request for `start..end`, retried; the answer must be exactly those bytes
    /// of the version first seen.
    fn fetch(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let what = format!("GET {} (bytes {start}-{})", self.shown(), end - 1);
        retry(|| {
            let mut headers = vec![("range", format!("bytes={start}-{}", end - 1))];
            if let Some((h, v)) = &self.validator {
                headers.push((h, v.clone()));
            }
            let req = self.obj.request("GET", &headers).map_err(Attempt::Fatal)?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut resp = self
                .transport
                .attempt(&what, self.obj.follows_redirects(), req)?;
            match resp.status().as_u16() {
                206 => {}
                412 => return Err(self.changed("it no longer matches the version first read")),
                416 => return Err(self.changed("it is shorter than when it was opened")),
                200 => {
                    return Err(Attempt::Fatal(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "{what}: the server ignored the range request and sent the whole \
                             object, after taking range requests before (a proxy or load \
                             balancer in the way?)"
                        ),
                    )))
                }
                s => return Err(self.refused(&what, &mut resp, s)),
            }
            self.same_etag(&resp)?;
            match content_range(&resp) {
                Some((s, e, t)) if s == start && e + 1 == end => {
                    if t.is_some_and(|t| t != self.size) {
                        return Err(self.changed("its length changed"));
                    }
                }
                Some((s, e, _)) => {
                    return Err(fatal(
                        &what,
                        &format!("the server sent bytes {s}-{e} instead"),
                    ))
                }
                None => return Err(fatal(&what, "a 206 answer without a valid Content-Range")),
            }
            let (_, body) = resp.into_parts();
            read_body(body, end - start, &what, &self.stats)
        })
    }

    /// The error for a status that ends a request: the store's own words when it has them.
    fn refused(&self, what: &str, resp: &mut http::Response<ureq::Body>, status: u16) -> Attempt {
        Attempt::Fatal(
            self.obj
                .explain(what, resp)
                .unwrap_or_else(|| status_error(what, status)),
        )
    }

    /// An answer whose `ETag` is not the one first seen is from another version.
    fn same_etag<B>(&self, resp: &http::Response<B>) -> Result<(), Attempt> {
        match (&self.etag, etag_of(resp.headers())) {
            (Some(mine), Some(theirs)) if *mine != theirs => Err(self.changed("its ETag changed")),
            _ => Ok(()),
        }
    }

    /// The error for an object replaced while it is read.
    fn changed(&self, how: &str) -> Attempt {
        Attempt::Fatal(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the object changed while it was read ({how}); nothing read from it \
                 can be trusted, read it again",
                self.shown()
            ),
        ))
    }

    /// Serves a read of a server that takes no ranges: from the spool, or by streaming on to
    /// `offset`. Returns the bytes read, short only at the end.
    fn read_streamed(&self, s: &mut Stream, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut attempts = 0;
        loop {
            match self.read_stream_once(s, offset, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
                Err(e) => {
                    // A reset or a cut body: start over (the server cannot resume).
                    attempts += 1;
                    s.body = None;
                    if attempts >= 4 {
                        return Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200 << attempts));
                }
            }
        }
    }

    fn read_stream_once(&self, s: &mut Stream, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(n) = s.copy_out(offset, buf)? {
            return Ok(n);
        }
        if s.body.is_none() {
            // A download that failed midway: the server cannot resume, so start again and
            // pass over what is already spooled.
            let mut body = self.restart()?;
            let have = s.pos;
            let got = io::copy(&mut body.by_ref().take(have), &mut io::sink())?;
            self.stats.downloaded.fetch_add(got, Ordering::Relaxed);
            if got < have {
                return Err(self.ended_early(got));
            }
            s.body = Some(body);
        }
        let mut piece = vec![0u8; STREAM_PIECE];
        while s.pos <= offset {
            let n = s.pull(&mut piece)?;
            self.stats.downloaded.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                if s.pos < self.size {
                    return Err(self.ended_early(s.pos));
                }
                return Ok(0);
            }
        }
        Ok(s.copy_out(offset, buf)?.unwrap_or(0))
    }

    fn ended_early(&self, at: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: the stream ended at byte {at}, before its length of {}",
                self.shown(),
                self.size
            ),
        )
    }

    /// A fresh GET of the whole object, which must still be the version first seen.
    fn restart(&self) -> io::Result<Box<dyn Read + Send>> {
        let what = format!("GET {}", self.shown());
        retry(|| {
            let mut headers = Vec::new();
            if let Some((h, v)) = &self.validator {
                headers.push((*h, v.clone()));
            }
            let req = self.obj.request("GET", &headers).map_err(Attempt::Fatal)?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let mut resp = self
                .transport
                .attempt(&what, self.obj.follows_redirects(), req)?;
            match resp.status().as_u16() {
                200 => {}
                412 => return Err(self.changed("it no longer matches the version first read")),
                s => return Err(self.refused(&what, &mut resp, s)),
            }
            self.same_etag(&resp)?;
            if resp.body().content_length().is_some_and(|l| l != self.size) {
                return Err(self.changed("its length changed"));
            }
            let (_, body) = resp.into_parts();
            Ok(Box::new(body.into_reader()) as Box<dyn Read + Send>)
        })
    }
}

/// A server that takes no ranges: the live download and where it is. Everything streamed is
/// kept in an unlinked temporary file (the spool), so a read behind the stream's position
/// (opening reads the head, then a decoder starts again at 0; a flash scans the stream as it
/// writes it) is served from disk, and the object is downloaded once.
struct Stream {
    body: Option<Box<dyn Read + Send>>,
    /// Bytes streamed so far, all of them in `spool`.
    pos: u64,
    spool: std::fs::File,
}

/// Size of one piece pulled from the stream.
const STREAM_PIECE: usize = 1 << 20;

impl Stream {
    /// Copies spooled bytes at `offset` into `buf`; `None` if they have not come yet.
    fn copy_out(&self, offset: u64, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if offset >= self.pos {
            return Ok(None);
        }
        let n = ((self.pos - offset) as usize).min(buf.len());
        std::os::unix::fs::FileExt::read_exact_at(&self.spool, &mut buf[..n], offset)?;
        Ok(Some(n))
    }

    /// Pulls the next piece of the download (up to [`STREAM_PIECE`] bytes; 0 at its end)
    /// into the spool. `skip` bytes of it were spooled before (a download started again
    /// after a failure) and are only checked for length.
    fn pull(&mut self, piece: &mut [u8]) -> io::Result<usize> {
        let body = self
            .body
            .as_mut()
            .ok_or_else(|| io::Error::other("no download in progress"))?;
        let mut n = 0;
        while n < piece.len() {
            match body.read(&mut piece[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            std::os::unix::fs::FileExt::write_all_at(&self.spool, &piece[..n], self.pos)?;
            self.pos += n as u64;
        }
        Ok(n)
    }
}

impl State {
    /// Copies what the cache holds at `pos` into `buf`; `None` if no piece holds `pos`.
    fn copy_out(&mut self, pos: u64, buf: &mut [u8]) -> Option<usize> {
        self.clock += 1;
        let now = self.clock;
        // Pieces may overlap: look at the few that start at or before `pos`.
        let (&start, e) = self
            .cache
            .range_mut(..=pos)
            .rev()
            .take(8)
            .find(|(&s, e)| s + e.data.len() as u64 > pos)?;
        self.by_use.remove(&e.used);
        e.used = now;
        self.by_use.insert(now, start);
        let from = (pos - start) as usize;
        let n = (e.data.len() - from).min(buf.len());
        buf[..n].copy_from_slice(&e.data[from..from + n]);
        Some(n)
    }

    /// Whether the cache holds all of `start..end` in one piece.
    fn covers(&self, start: u64, end: u64) -> bool {
        self.cache
            .range(..=start)
            .rev()
            .take(8)
            .any(|(&s, e)| s + e.data.len() as u64 >= end)
    }

    /// Whether a fetch in flight will bring `pos`.
    fn inflight_covering(&self, pos: u64) -> bool {
        self.inflight
            .range(..=pos)
            .rev()
            .take(self.inflight.len().min(64))
            .any(|(_, &e)| e > pos)
    }

    fn in_flight_fetches(&self) -> usize {
        self.inflight.len()
    }

    /// The first byte from `block_start` up to `pos` from which nothing is cached or on its
    /// way before `pos` (so the fetch for `pos` does not repeat the piece before it).
    fn uncovered_from(&self, block_start: u64, pos: u64) -> u64 {
        let mut start = block_start;
        for (&s, e) in self.cache.range(block_start..pos) {
            let end = s + e.data.len() as u64;
            if s <= start && end > start {
                start = end.min(pos);
            }
        }
        for (&s, &e) in self.inflight.range(block_start..pos) {
            if s <= start && e > start {
                start = e.min(pos);
            }
        }
        start.min(pos)
    }

    /// Keeps `data` (fetched at `start`), dropping the least recently used pieces beyond
    /// [`CACHE_BYTES`].
    fn insert(&mut self, start: u64, data: Vec<u8>) {
        self.clock += 1;
        let len = data.len() as u64;
        if let Some(old) = self.cache.insert(
            start,
            Entry {
                data: Arc::new(data),
                used: self.clock,
            },
        ) {
            self.cached_bytes -= old.data.len() as u64;
            self.by_use.remove(&old.used);
        }
        self.by_use.insert(self.clock, start);
        self.cached_bytes += len;
        while self.cached_bytes > CACHE_BYTES && self.cache.len() > 1 {
            // The oldest piece; never the one just inserted (it is the newest).
            let Some((_, victim)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(e) = self.cache.remove(&victim) {
                self.cached_bytes -= e.data.len() as u64;
            }
        }
    }
}

/// The ranges a reader will read, as requests: ranges closer than [`PLAN_GAP`] joined, then
/// cut where blocks end, so that no request is larger than a block.
fn plan_pieces(ranges: &ExtentMap, block: u64, size: u64) -> Vec<(u64, u64)> {
    let mut joined: Vec<(u64, u64)> = Vec::new();
    for r in ranges.iter() {
        let (s, e) = (r.start.min(size), r.end.min(size));
        if s >= e {
            continue;
        }
        match joined.last_mut() {
            Some(last) if s <= last.1.saturating_add(PLAN_GAP) => last.1 = last.1.max(e),
            _ => joined.push((s, e)),
        }
    }
    let mut pieces = Vec::new();
    for (mut s, e) in joined {
        while s < e {
            let cut = ((s / block) + 1).saturating_mul(block).min(e);
            pieces.push((s, cut));
            s = cut;
        }
    }
    pieces
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads exactly `len` body bytes: a body cut short, or a reset in the middle, is worth
/// another attempt; one longer than announced is the server's error.
fn read_body(
    body: ureq::Body,
    len: u64,
    what: &str,
    stats: &RemoteStats,
) -> Result<Vec<u8>, Attempt> {
    if body.content_length().is_some_and(|l| l != len) {
        return Err(fatal(
            what,
            &format!(
                "the server announces {} bytes for a {len}-byte range",
                body.content_length().unwrap_or(0)
            ),
        ));
    }
    let cap = usize::try_from(len).map_err(|_| fatal(what, "a range too large for memory"))?;
    let mut v = Vec::with_capacity(cap);
    let got = body.into_reader().take(len + 1).read_to_end(&mut v);
    stats
        .downloaded
        .fetch_add(v.len() as u64, Ordering::Relaxed);
    match got {
        Err(e) => Err(Attempt::Retry(io::Error::new(
            e.kind(),
            format!("{what}: the connection failed after {} bytes: {e}", v.len()),
        ))),
        Ok(_) if (v.len() as u64) < len => Err(Attempt::Retry(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{what}: the answer was cut short ({} of {len} bytes)",
                v.len()
            ),
        ))),
        Ok(_) if (v.len() as u64) > len => Err(fatal(what, "the server sent more than was asked")),
        Ok(_) => Ok(v),
    }
}

fn fatal(what: &str, detail: &str) -> Attempt {
    Attempt::Fatal(io::Error::other(format!("{what}: {detail}")))
}

/// A status that ends a request, in words.
fn status_error(what: &str, status: u16) -> io::Error {
    let (kind, words) = match status {
        401 => (
            io::ErrorKind::PermissionDenied,
            "authentication required (401)".to_string(),
        ),
        403 => (
            io::ErrorKind::PermissionDenied,
            "access denied (403)".to_string(),
        ),
        404 | 410 => (io::ErrorKind::NotFound, format!("not found ({status})")),
        s => (io::ErrorKind::Other, format!("the server answered {s}")),
    };
    io::Error::new(kind, format!("{what}: {words}"))
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`), or `bytes */TOTAL` of a 416
/// (then START and END are 0 and the total is given). `None` if absent or malformed.
fn content_range<B>(resp: &http::Response<B>) -> Option<(u64, u64, Option<u64>)> {
    let v = resp
        .headers()
        .get(http::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    parse_content_range(v)
}

pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some((0, 0, total));
    }
    let (s, e) = range.trim().split_once('-')?;
    let (s, e): (u64, u64) = (s.parse().ok()?, e.parse().ok()?);
    if e < s || total.is_some_and(|t| e >= t) {
        return None;
    }
    Some((s, e, total))
}

fn etag_of(h: &http::HeaderMap) -> Option<String> {
    h.get(http::header::ETAG)?.to_str().ok().map(str::to_owned)
}

/// The header that pins the version first read: `If-Match` with a strong `ETag`, else
/// `If-Unmodified-Since` with `Last-Modified`; and the `ETag` itself.
fn validator_of(h: &http::HeaderMap) -> (Option<(&'static str, String)>, Option<String>) {
    let etag = etag_of(h);
    if let Some(e) = &etag {
        if !e.starts_with("W/") {
            return (Some(("if-match", e.clone())), etag);
        }
    }
    let lm = h
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .map(|v| ("if-unmodified-since", v.to_owned()));
    (lm, etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes */0"), Some((0, 0, Some(0))));
        assert_eq!(parse_content_range("bytes 10-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-18446744073709551616/1"), None);
    }

    #[test]
    fn plans_join_near_ranges_and_cut_at_blocks() {
        let m = ExtentMap::from_ranges([(0, 10), (100, 200), (1 << 20, (1 << 20) + 10)]);
        assert_eq!(
            plan_pieces(&m, 1 << 20, 1 << 30),
            vec![(0, 200), (1 << 20, (1 << 20) + 10)]
        );
        let m = ExtentMap::single(1000, 3 << 20);
        assert_eq!(
            plan_pieces(&m, 1 << 20, 1 << 30),
            vec![(1000, 1 << 20), (1 << 20, 2 << 20), (2 << 20, 3 << 20)]
        );
        // Cut at the object's end.
        assert_eq!(plan_pieces(&m, 1 << 20, 5000), vec![(1000, 5000)]);
    }

    #[test]
    fn the_cache_serves_overlapping_pieces_and_stays_bounded() {
        let mut st = State::default();
        st.insert(0, vec![1; 100]);
        st.insert(50, vec![2; 100]);
        let mut b = [0u8; 200];
        assert_eq!(st.copy_out(10, &mut b), Some(90));
        assert_eq!(st.copy_out(120, &mut b), Some(30));
        assert_eq!(b[0], 2);
        assert_eq!(st.copy_out(150, &mut b), None);
        assert!(st.covers(60, 150));
        assert!(!st.covers(60, 151));
        for i in 0..200u64 {
            st.insert(i << 20, vec![0; 1 << 20]);
        }
        assert!(st.cached_bytes <= CACHE_BYTES);
        assert_eq!(st.by_use.len(), st.cache.len());
        assert!(st.by_use.values().all(|s| st.cache.contains_key(s)));
    }

    #[test]
    fn a_weak_etag_falls_back_to_last_modified() {
        let mut h = http::HeaderMap::new();
        h.insert("etag", "W/\"abc\"".parse().unwrap());
        h.insert(
            "last-modified",
            "Tue, 01 Dec 2026 10:00:00 GMT".parse().unwrap(),
        );
        let (v, e) = validator_of(&h);
        assert_eq!(v.unwrap().0, "if-unmodified-since");
        assert_eq!(e.as_deref(), Some("W/\"abc\""));
        h.insert("etag", "\"abc\"".parse().unwrap());
        assert_eq!(
            validator_of(&h).0.unwrap(),
            ("if-match", "\"abc\"".to_string())
        );
    }

    /// A tiny web server on 127.0.0.1 for these tests: one request per connection, ranges
    /// as asked, and faults on cue.
    mod server {
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpListener;
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        #[derive(Default)]
        pub(super) struct Faults {
            /// Answer this many requests with 503 first.
            pub(super) busy: AtomicUsize,
            /// Cut this many bodies in half.
            pub(super) cut: AtomicUsize,
            /// Ignore Range headers.
            pub(super) no_ranges: AtomicBool,
            /// After this many requests, serve another version (new ETag).
            pub(super) change_after: AtomicU64,
        }

        pub(super) struct Server {
            pub(super) url: String,
            pub(super) faults: Arc<Faults>,
            pub(super) sent: Arc<AtomicU64>,
            pub(super) requests: Arc<AtomicU64>,
            pub(super) ranges: Arc<Mutex<Vec<(u64, u64)>>>,
        }

        pub(super) fn start(data: Vec<u8>) -> Server {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/card.img", l.local_addr().unwrap());
            let faults = Arc::new(Faults::default());
            let sent = Arc::new(AtomicU64::new(0));
            let requests = Arc::new(AtomicU64::new(0));
            let ranges = Arc::new(Mutex::new(Vec::new()));
            let (f, s, r, rg) = (
                faults.clone(),
                sent.clone(),
                requests.clone(),
                ranges.clone(),
            );
            let data = Arc::new(data);
            std::thread::spawn(move || {
                for c in l.incoming() {
                    let Ok(mut c) = c else { continue };
                    let (f, s, r, rg, data) =
                        (f.clone(), s.clone(), r.clone(), rg.clone(), data.clone());
                    std::thread::spawn(move || {
                        let mut range = None;
                        let mut if_match = None;
                        let mut rd = BufReader::new(c.try_clone().unwrap());
                        loop {
                            let mut line = String::new();
                            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end().to_ascii_lowercase();
                            if l.is_empty() {
                                break;
                            }
                            if let Some(v) = l.strip_prefix("range: bytes=") {
                                let (a, b) = v.split_once('-').unwrap();
                                range =
                                    Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
                            }
                            if let Some(v) = l.strip_prefix("if-match: ") {
                                if_match = Some(v.to_string());
                            }
                        }
                        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                        let after = f.change_after.load(Ordering::SeqCst);
                        let etag = if after > 0 && n > after {
                            "\"v2\""
                        } else {
                            "\"v1\""
                        };
                        let take = |k: &AtomicUsize| {
                            k.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                                .is_ok()
                        };
                        if take(&f.busy) {
                            let _ = c.write_all(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            return;
                        }
                        if if_match.is_some_and(|m| m != etag) {
                            let _ = c.write_all(b"HTTP/1.1 412 Precondition Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            return;
                        }
                        let len = data.len() as u64;
                        let (status, body, extra) = match range {
                            Some((a, b)) if !f.no_ranges.load(Ordering::SeqCst) && a < len => {
                                let b = b.min(len - 1);
                                rg.lock().unwrap().push((a, b + 1));
                                (
                                    "206 Partial Content",
                                    &data[a as usize..=b as usize],
                                    format!("content-range: bytes {a}-{b}/{len}\r\n"),
                                )
                            }
                            _ => ("200 OK", &data[..], String::new()),
                        };
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\netag: {etag}\r\n{extra}connection: close\r\n\r\n",
                            body.len()
                        );
                        if c.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        let body = if take(&f.cut) {
                            &body[..body.len() / 2]
                        } else {
                            body
                        };
                        if c.write_all(body).is_ok() {
                            s.fetch_add(body.len() as u64, Ordering::SeqCst);
                        }
                    });
                }
            });
            Server {
                url,
                faults,
                sent,
                requests,
                ranges,
            }
        }
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 7u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn open(url: &str) -> RemoteSource {
        super::super::open(
            &super::super::Location::Http(url.to_owned()),
            &RemoteOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_plan_is_fetched_exactly_and_in_parallel() {
        use crate::io::ReadAtExt;
        let data = noise(16 << 20);
        let srv = server::start(data.clone());
        let src = open(&srv.url);
        assert!(src.ranges());
        assert_eq!(src.size(), 16 << 20);
        let plan = ExtentMap::from_ranges([
            (3 << 20, (3 << 20) + 100),
            (5 << 20, 9 << 20),
            ((12 << 20) + 7, (12 << 20) + 5000),
        ]);
        src.will_read(&plan);
        for r in plan.iter() {
            let got = src.read_vec(r.start, (r.end - r.start) as usize).unwrap();
            assert!(
                got == data[r.start as usize..r.end as usize],
                "bytes at {}",
                r.start
            );
        }
        // The first block (the opening probe) and exactly the plan, nothing else.
        let sent = srv.sent.load(Ordering::SeqCst);
        assert_eq!(
            sent,
            (1 << 20) + plan.total(),
            "{:?}",
            srv.ranges.lock().unwrap()
        );
        assert_eq!(src.stats().downloaded(), sent);
    }

    #[test]
    fn sequential_reads_fetch_ahead_and_stay_correct() {
        use crate::io::ReadAtExt;
        let data = noise(12 << 20);
        let srv = server::start(data.clone());
        let src = open(&srv.url);
        let mut all = Vec::new();
        io::Read::read_to_end(&mut src.sequential(0).unwrap(), &mut all).unwrap();
        assert!(all == data);
        assert_eq!(
            src.stats().downloaded(),
            12 << 20,
            "each block fetched once"
        );
        assert!(src.read_vec(100, 10).unwrap() == data[100..110]);
    }

    #[test]
    fn busy_servers_and_cut_bodies_are_retried() {
        use crate::io::ReadAtExt;
        let data = noise(4 << 20);
        let srv = server::start(data.clone());
        srv.faults.busy.store(2, Ordering::SeqCst);
        let src = open(&srv.url);
        srv.faults.cut.store(2, Ordering::SeqCst);
        srv.faults.busy.store(1, Ordering::SeqCst);
        assert!(src.read_vec(3 << 20, 1 << 20).unwrap() == data[3 << 20..]);
        assert!(srv.requests.load(Ordering::SeqCst) >= 6);
    }

    #[test]
    fn an_object_replaced_while_read_is_an_error() {
        use crate::io::ReadAtExt;
        let srv = server::start(noise(4 << 20));
        let src = open(&srv.url);
        srv.faults.change_after.store(1, Ordering::SeqCst);
        let e = src.read_vec(2 << 20, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }

    #[test]
    fn a_server_without_ranges_is_read_as_one_stream() {
        use crate::io::ReadAtExt;
        let data = noise(6 << 20);
        let srv = server::start(data.clone());
        srv.faults.no_ranges.store(true, Ordering::SeqCst);
        let src = open(&srv.url);
        assert!(!src.ranges());
        assert_eq!(src.caps().access, Access::Sequential);
        assert!(src.read_vec(0, 4096).unwrap() == data[..4096]);
        assert!(src.read_vec(5 << 20, 4096).unwrap() == data[5 << 20..(5 << 20) + 4096]);
        // Behind the stream's position, but kept: no second download.
        assert!(src.read_vec(1 << 20, 4096).unwrap() == data[1 << 20..(1 << 20) + 4096]);
        assert_eq!(srv.requests.load(Ordering::SeqCst), 1);
    }
}
