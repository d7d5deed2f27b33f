//! A real nginx (the Debian package) serving a directory on 127.0.0.1, for the remote-image
//! tests: its own config in a temporary directory, a free port, an access log that records
//! every request's line, status, bytes sent (with and without headers) and Range header, and
//! the helpers that read that log back. Stopped on drop.
//!
//! nginx is run as a single process (`master_process off`, one worker), so a `stub_status`
//! request answered with `Writing: 1` (itself) proves every other request has finished and
//! been logged: that is how [`Nginx::requests`] waits before reading the log.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{skip, Need};

/// One line of the access log: a request nginx answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// nginx's connection serial number (requests on one keep-alive connection share it).
    pub connection: u64,
    /// `GET`, `HEAD`...
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Response status.
    pub status: u16,
    /// Bytes sent to the client, headers included.
    pub bytes_sent: u64,
    /// Bytes of the response body sent.
    pub body_bytes_sent: u64,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    /// The request's `If-Match` header, if any (nginx escapes `"` as `\x22`; undone here).
    pub if_match: Option<String>,
    /// Seconds nginx spent on the request.
    pub request_time: f64,
}

impl Logged {
    /// The path of the target, without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Body bytes sent over `reqs`.
pub fn body_bytes(reqs: &[Logged]) -> u64 {
    reqs.iter().map(|r| r.body_bytes_sent).sum()
}

/// Bytes sent over `reqs`, headers included.
pub fn bytes_sent(reqs: &[Logged]) -> u64 {
    reqs.iter().map(|r| r.bytes_sent).sum()
}

/// A summary of `reqs` for assertion messages: one line per request.
pub fn describe(reqs: &[Logged]) -> String {
    let mut s = String::new();
    for r in reqs {
        s += &format!(
            "  #{} {} {} -> {} body {} (sent {}) range {}{}\n",
            r.connection,
            r.method,
            r.target,
            r.status,
            r.body_bytes_sent,
            r.bytes_sent,
            r.range.as_deref().unwrap_or("-"),
            r.if_match
                .as_deref()
                .map(|m| format!(" if-match {m}"))
                .unwrap_or_default(),
        );
    }
    s
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a server started right after binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The nginx binary: on the PATH, else Debian's `/usr/sbin/nginx` (not on a user's PATH);
/// `None` after a [`skip`] when neither exists.
#[track_caller]
pub fn nginx_binary() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let found = on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nginx");
        p.exists().then_some(p)
    });
    if found.is_none() {
        skip(
            Need::Oracle,
            "`nginx` is not installed (Debian package nginx-light)",
        );
    }
    found
}

/// How the server treats requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ranges {
    /// Range requests answered with 206 (nginx's default).
    #[default]
    Honoured,
    /// `max_ranges 0`: every Range header ignored, the whole object sent with 200 and no
    /// `Accept-Ranges` (a server or CDN without range support).
    Ignored,
}

/// A running nginx serving one directory; killed on drop.
pub struct Nginx {
    /// The port it serves `root` on.
    pub port: u16,
    /// The directory served.
    pub root: PathBuf,
    status_port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// nginx serving `root` with range support; `None` after a [`skip`] without nginx.
    #[track_caller]
    pub fn start(root: &Path) -> Option<Nginx> {
        Self::start_with(root, Ranges::Honoured)
    }

    /// nginx serving `root`, honouring or ignoring Range as asked.
    #[track_caller]
    pub fn start_with(root: &Path, ranges: Ranges) -> Option<Nginx> {
        let bin = nginx_binary()?;
        // The port is free when picked but may be taken before nginx binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&bin, root, ranges) {
                Ok(n) => return Some(n),
                Err(e) => last = e,
            }
        }
        panic!("nginx did not start: {last}");
    }

    fn try_start(bin: &Path, root: &Path, ranges: Ranges) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (port, status_port) = (free_port(), free_port());
        let root = root.canonicalize().unwrap();
        let ranges = match ranges {
            Ranges::Honoured => "",
            Ranges::Ignored => "max_ranges 0;",
        };
        // Tab-separated fields; nginx escapes tabs and quotes inside values (`escape=default`).
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format bytes escape=default
        '$connection	$request	$status	$bytes_sent	$body_bytes_sent	$http_range	$http_if_match	$request_time';
    access_log {d}/access.log bytes;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {ranges}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        access_log off;
        location / {{ stub_status; }}
    }}
}}
"#,
            d = d.display(),
            root = root.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        // `-e`: the startup error log too, which is otherwise /var/log/nginx (root's).
        let child = Command::new(bin)
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut n = Nginx {
            port,
            root,
            status_port,
            dir,
            child,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = n.child.try_wait() {
                return Err(format!("nginx exited ({st}): {}", n.errors()));
            }
            if n.status().is_some() && TcpStream::connect(n.addr()).is_ok() {
                return Ok(n);
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("nginx did not answer in 10 s: {}", n.errors()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// nginx's stderr and error log, for failure messages.
    pub fn errors(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// (reading, writing) from `stub_status`, or `None` if it does not answer.
    fn status(&self) -> Option<(u64, u64)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.status_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        // "Reading: 0 Writing: 1 Waiting: 0"
        let field = |name: &str| -> Option<u64> {
            let i = text.find(name)? + name.len();
            text[i..].split_whitespace().next()?.parse().ok()
        };
        Some((field("Reading:")?, field("Writing:")?))
    }

    /// Waits until no request but the status request itself is being read or answered, so
    /// every finished request is in the access log (nginx writes a line when a request ends).
    fn settle(&self) {
        let start = Instant::now();
        loop {
            match self.status() {
                Some((0, 1)) => return,
                Some(_) | None if start.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => panic!(
                    "nginx still has requests in progress after 20 s (reading, writing incl. \
                     the status request: {other:?}); {}",
                    self.errors()
                ),
            }
        }
    }

    /// Every request logged so far, in order, once the requests in progress have ended.
    pub fn requests(&self) -> Vec<Logged> {
        self.settle();
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().map(parse_line).collect()
    }

    /// How many requests are logged so far: pass it to [`Nginx::requests_since`] to see only
    /// the requests of what runs in between.
    pub fn mark(&self) -> usize {
        self.requests().len()
    }

    /// The requests logged after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<Logged> {
        let mut all = self.requests();
        all.drain(..mark.min(all.len()));
        all
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes nginx's `escape=default` (`\xHH`) in one log field; `-` is an absent value.
fn unescape(s: &str) -> Option<String> {
    if s == "-" {
        return None;
    }
    Some(super::blkid_unescape(s))
}

fn parse_line(line: &str) -> Logged {
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!(f.len(), 8, "unexpected access log line: {line:?}");
    let num = |i: usize| -> u64 {
        f[i].parse()
            .unwrap_or_else(|_| panic!("field {i} of {line:?}"))
    };
    // "$request" is "GET /x HTTP/1.1" (or whatever garbage a client sent: kept whole).
    let mut req = f[1].splitn(3, ' ');
    let method = req.next().unwrap_or("").to_string();
    let target = req.next().unwrap_or("").to_string();
    Logged {
        connection: num(0),
        method,
        target: unescape(&target).unwrap_or_default(),
        status: num(2) as u16,
        bytes_sent: num(3),
        body_bytes_sent: num(4),
        range: unescape(f[5]),
        if_match: unescape(f[6]),
        request_time: f[7].parse().unwrap_or(0.0),
    }
}
