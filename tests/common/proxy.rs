//! A small fault-injecting HTTP/1.1 proxy for the remote-image tests, in front of a
//! [`super::web::Nginx`] on a free port of its own: it forwards each request and injects the
//! faults a script asks for (connection resets, error statuses, truncated or slow bodies, a
//! stalled answer, the object replaced on disk, Range stripped, a redirect), and counts what
//! it saw and did.
//!
//! One request per connection: the proxy asks nginx for `Connection: close` and answers the
//! client with `Connection: close` too, so a response ends with the connection and no
//! keep-alive state has to be relayed. Clients reconnect for every request, which is legal
//! HTTP/1.1 and costs nothing on loopback.
//!
//! A reset is a real TCP RST, made without unsafe code: the proxy only peeks at a request it
//! is going to reset and closes the socket with the request still unread, and Linux answers
//! `close()` on a socket with unread data with a RST instead of a FIN.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fault injected into one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Reset the connection (TCP RST) before any byte of the answer.
    ResetBeforeHeaders,
    /// Forward the request, send the server's status line and headers, then reset.
    ResetAfterHeaders,
    /// Answer this status (503...) with an empty body, without asking the server.
    Status(u16),
    /// Send the server's headers and only the first `n` bytes of its body, then close the
    /// connection (a FIN: the body ends early, short of its Content-Length).
    Truncate(u64),
    /// Send the body in pieces of `chunk` bytes with `pause` between them (a slow server).
    Slow { chunk: usize, pause: Duration },
    /// Wait this long before forwarding (a server that takes its time to answer).
    Stall(Duration),
    /// Forward without the `Range` and `If-Range` headers: the server sends the whole object
    /// with 200, as a server without range support does.
    IgnoreRange,
    /// Before forwarding, rename `with` over `path`: the object is replaced between two
    /// requests (give `with` the same size and another mtime, so nginx's ETag changes).
    Replace { path: PathBuf, with: PathBuf },
    /// Answer `302 Found` with `Location: {base}{request target}`, without asking the server.
    Redirect(String),
}

impl Fault {
    /// The name the counters use.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ResetBeforeHeaders => "reset-before-headers",
            Fault::ResetAfterHeaders => "reset-after-headers",
            Fault::Status(_) => "status",
            Fault::Truncate(_) => "truncate",
            Fault::Slow { .. } => "slow",
            Fault::Stall(_) => "stall",
            Fault::IgnoreRange => "ignore-range",
            Fault::Replace { .. } => "replace",
            Fault::Redirect(_) => "redirect",
        }
    }
}

/// When a fault applies: counting only the requests the rule is eligible for (all, or only
/// GETs with a Range header), to the `from`-th one (0-based) and every `every`-th after it,
/// at most `times` times. The first rule that applies to a request wins.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    pub from: u64,
    pub every: u64,
    pub times: u64,
    pub ranged_only: bool,
    eligible: u64,
    applied: u64,
}

impl Rule {
    /// `fault` on every request, without limit.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            from: 0,
            every: 1,
            times: u64::MAX,
            ranged_only: false,
            eligible: 0,
            applied: 0,
        }
    }
    /// From the `n`-th eligible request on (0-based).
    pub fn from(mut self, n: u64) -> Rule {
        self.from = n;
        self
    }
    /// To every `n`-th eligible request.
    pub fn every(mut self, n: u64) -> Rule {
        self.every = n.max(1);
        self
    }
    /// At most `n` times.
    pub fn times(mut self, n: u64) -> Rule {
        self.times = n;
        self
    }
    /// Only GETs carrying a Range header are eligible (the data fetches, not a first probe).
    pub fn ranged_only(mut self) -> Rule {
        self.ranged_only = true;
        self
    }
}

/// A request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// 0-based, in the order requests arrived.
    pub seq: u64,
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Every header as received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The fault injected into it, if any.
    pub fault: Option<&'static str>,
    /// The status the client was sent (0 if none: reset, or the server unreachable).
    pub status: u16,
}

impl Seen {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    body_bytes: Mutex<u64>,
}

/// The running proxy; stopped on drop.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 in front of `upstream`, injecting `rules`.
    pub fn start(upstream: SocketAddr, rules: Vec<Rule>) -> Proxy {
        Self::start_on("127.0.0.1", upstream, rules)
    }

    /// A proxy on `ip` (another loopback address such as 127.0.0.2 makes it another host).
    pub fn start_on(ip: &str, upstream: SocketAddr, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(rules),
            seen: Mutex::new(Vec::new()),
            injected: Mutex::new(BTreeMap::new()),
            body_bytes: Mutex::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        // A client that goes away mid-answer is not the proxy's failure.
                        let _ = serve(conn, &shared);
                    });
                }
            })
        };
        Proxy {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://ADDR/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Replaces the rules (counts start again for the new ones).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules;
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.seen.lock().unwrap().len() as u64
    }

    /// How many times faults of `kind` ([`Fault::kind`]) were injected.
    pub fn injected(&self, kind: &str) -> u64 {
        self.shared
            .injected
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Faults injected, by kind.
    pub fn injected_all(&self) -> BTreeMap<&'static str, u64> {
        self.shared.injected.lock().unwrap().clone()
    }

    /// Body bytes relayed to clients.
    pub fn body_bytes(&self) -> u64 {
        *self.shared.body_bytes.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A request or response head: the first line and the headers.
struct Head {
    line: String,
    headers: Vec<(String, String)>,
    /// Bytes of the head on the wire, through the blank line.
    len: usize,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head rewritten: headers named in `drop` left out, `Connection: close` added.
    fn rewrite(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            if !drop.iter().any(|d| k.eq_ignore_ascii_case(d)) {
                out += &format!("{k}: {v}\r\n");
            }
        }
        out += "Connection: close\r\n\r\n";
        out.into_bytes()
    }
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&raw[..end - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Head {
        line,
        headers,
        len: end,
    })
}

const MAX_HEAD: usize = 64 << 10;

/// The request head, peeked and not consumed (see the module comment on resets).
fn peek_head(c: &TcpStream) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut last = 0;
    for _ in 0..30_000 {
        let n = c.peek(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        if let Some(h) = parse_head(&buf[..n]) {
            return Ok(h);
        }
        if n == MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        if n == last {
            // Nothing new yet: peek returns at once while data is queued.
            std::thread::sleep(Duration::from_millis(1));
        }
        last = n;
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "request head"))
}

/// Reads a response head from `s`: the head, and the body bytes read past it.
fn read_head(s: &mut TcpStream) -> io::Result<(Head, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(h) = parse_head(&raw) {
            let rest = raw[h.len..].to_vec();
            return Ok((h, rest));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed before its headers",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_HEAD {
            return Err(io::Error::other("response head too large"));
        }
    }
}

/// The fault for the request with this head, advancing every rule's counts.
fn decide(shared: &Shared, head: &Head) -> Option<Fault> {
    let ranged = head.line.starts_with("GET ") && head.header("range").is_some();
    let mut chosen = None;
    for r in shared.rules.lock().unwrap().iter_mut() {
        if r.ranged_only && !ranged {
            continue;
        }
        let i = r.eligible;
        r.eligible += 1;
        if chosen.is_none() && i >= r.from && (i - r.from) % r.every == 0 && r.applied < r.times {
            r.applied += 1;
            chosen = Some(r.fault.clone());
        }
    }
    if let Some(f) = &chosen {
        *shared.injected.lock().unwrap().entry(f.kind()).or_default() += 1;
    }
    chosen
}

fn serve(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = peek_head(&client)?;
    let fault = decide(shared, &head);
    let mut parts = head.line.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let seq = {
        let mut seen = shared.seen.lock().unwrap();
        let seq = seen.len() as u64;
        seen.push(Seen {
            seq,
            method: method.clone(),
            target: target.clone(),
            headers: head.headers.clone(),
            fault: fault.as_ref().map(Fault::kind),
            status: 0,
        });
        seq
    };
    let set_status = |status: u16| shared.seen.lock().unwrap()[seq as usize].status = status;

    if let Some(Fault::ResetBeforeHeaders) = fault {
        // Closed with the request unread: the kernel sends a RST.
        return Ok(());
    }
    if !matches!(fault, Some(Fault::ResetAfterHeaders)) {
        // Consumed, so that the close after a normal answer is a FIN.
        let mut consumed = vec![0u8; head.len];
        client.read_exact(&mut consumed)?;
    }

    match &fault {
        Some(Fault::Status(code)) => {
            set_status(*code);
            let answer = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nRetry-After: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(answer.as_bytes())?;
            return client.shutdown(Shutdown::Write);
        }
        Some(Fault::Redirect(base)) => {
            set_status(302);
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: {base}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(answer.as_bytes())?;
            return client.shutdown(Shutdown::Write);
        }
        Some(Fault::Stall(d)) => std::thread::sleep(*d),
        Some(Fault::Replace { path, with }) => std::fs::rename(with, path)?,
        _ => {}
    }

    // Forward.
    let mut drop_headers = vec!["connection", "keep-alive", "proxy-connection"];
    if let Some(Fault::IgnoreRange) = fault {
        drop_headers.extend(["range", "if-range"]);
    }
    let mut up = TcpStream::connect(shared.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(&head.rewrite(&drop_headers))?;
    // A request body (none for GET and HEAD) follows the head.
    if let Some(n) = head
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        io::copy(&mut (&client).take(n), &mut up)?;
    }
    let (rhead, first) = read_head(&mut up)?;
    let status = rhead
        .line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    set_status(status);
    client.write_all(&rhead.rewrite(&["connection", "keep-alive"]))?;

    if let Some(Fault::ResetAfterHeaders) = fault {
        // Let the client read the headers before the reset throws away what it has not read.
        client.flush()?;
        std::thread::sleep(Duration::from_millis(100));
        return Ok(());
    }

    // The body: until the server closes (it was asked to), shaped by the fault.
    let limit = match fault {
        Some(Fault::Truncate(n)) => n,
        _ => u64::MAX,
    };
    let (chunk, pause) = match fault {
        Some(Fault::Slow { chunk, pause }) => (chunk.max(1), pause),
        _ => (64 << 10, Duration::ZERO),
    };
    let mut sent = 0u64;
    let mut pending = first;
    let mut buf = vec![0u8; chunk];
    loop {
        if pending.is_empty() {
            let n = up.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending = buf[..n].to_vec();
        }
        let take = pending.len().min(chunk).min((limit - sent) as usize);
        if take == 0 {
            break;
        }
        client.write_all(&pending[..take])?;
        sent += take as u64;
        *shared.body_bytes.lock().unwrap() += take as u64;
        pending.drain(..take);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    client.shutdown(Shutdown::Write)
}
