//! A local S3 server for the tests: moto's server mode (`moto_server`, from PyPI's
//! `moto[server]`, which `.ci/run` installs), started on a free port of 127.0.0.1 and stopped
//! when the [`Moto`] is dropped. Each test starts its own, so one test's buckets, keys and
//! authentication switch never meet another's.
//!
//! Without authentication moto takes any request, signed or not. [`Moto::require_signatures`]
//! creates an IAM user with an access key allowed everything on S3 and then makes moto check
//! every request's SigV4 signature against it (as AWS does), so a signing mistake fails.
//! The harness's own requests (bucket creation, reading objects back, listing pending
//! uploads) switch the check off around themselves.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, skip, Need};

/// An `Authorization` header moto reads the service from when it checks nothing.
fn unchecked_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20000101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// `moto_server` on the PATH, in the scripts directory of `python3` (a pyenv or venv Python
/// whose shims were not refreshed after `pip install`), or in its user scripts directory
/// (`pip install --user`).
pub fn moto_server() -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let python_dir = |code: &str, rel: &str| {
        let o = Command::new("python3").args(["-c", code]).output().ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join(rel);
        p.is_file().then_some(p)
    };
    on_path
        .or_else(|| {
            python_dir(
                "import sysconfig; print(sysconfig.get_path('scripts'))",
                "moto_server",
            )
        })
        .or_else(|| python_dir("import site; print(site.USER_BASE)", "bin/moto_server"))
}

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    agent: ureq::Agent,
    /// Signatures are being checked.
    checking: bool,
    /// An empty directory given to blockwise as HOME (no `~/.aws` of the machine's).
    home: tempfile::TempDir,
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Moto {
    /// Starts a server; `None` after a [`skip`] when moto is not installed.
    #[track_caller]
    pub fn start() -> Option<Moto> {
        let Some(bin) = moto_server() else {
            skip(
                Need::Oracle,
                "moto_server is not installed (python3 -m pip install 'moto[server]')",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        let mut m = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            agent,
            checking: false,
            home: tempfile::tempdir().unwrap(),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("moto_server exited at start ({status})");
            }
            if m.agent
                .get(format!("{}/moto-api/", m.endpoint))
                .call()
                .is_ok()
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(m)
    }

    /// A request with a body, as moto takes it when it checks nothing.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let service = if path.starts_with("/?") || path == "/" {
            "iam"
        } else {
            "s3"
        };
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint))
            .header("authorization", unchecked_auth(service));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = self
            .agent
            .run(b.body(body.to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        Answer { status, body }
    }

    /// Switches the signature check (`POST /moto-api/reset-auth`).
    fn set_checking(&self, on: bool) {
        let r = self
            .agent
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("content-type", "text/plain")
            .send(if on { "0" } else { "inf" })
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "reset-auth");
    }

    /// Runs `f` with the signature check off (the harness's own unsigned requests).
    fn unchecked<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.checking {
            self.set_checking(false);
        }
        let r = f();
        if self.checking {
            self.set_checking(true);
        }
        r
    }

    /// Makes moto check every signature from now on, and returns the access key ID and secret
    /// of a user allowed everything on S3.
    pub fn require_signatures(&mut self) -> (String, String) {
        let form = |params: &str| {
            let a = self.raw(
                "POST",
                "/",
                &[("content-type", "application/x-www-form-urlencoded")],
                format!("{params}&Version=2010-05-08").as_bytes(),
            );
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            String::from_utf8_lossy(&a.body).into_owned()
        };
        form("Action=CreateUser&UserName=blockwise");
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect\
                      %22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A*%22%2C%22Resource%22%3A%22*%22\
                      %7D%5D%7D";
        form(&format!(
            "Action=PutUserPolicy&UserName=blockwise&PolicyName=s3&PolicyDocument={policy}"
        ));
        let key = form("Action=CreateAccessKey&UserName=blockwise");
        let between = |a: &str, b: &str| {
            let s = key.split(a).nth(1).expect("access key in the answer");
            s.split(b).next().unwrap().to_string()
        };
        let id = between("<AccessKeyId>", "</AccessKeyId>");
        let secret = between("<SecretAccessKey>", "</SecretAccessKey>");
        self.set_checking(true);
        self.checking = true;
        (id, secret)
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let a = self.unchecked(|| self.raw("PUT", &format!("/{bucket}"), &[], &[]));
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }

    /// Stores `data` as `bucket/key`, readable by anyone when `public`.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8], public: bool) {
        let acl: &[(&str, &str)] = if public {
            &[("x-amz-acl", "public-read")]
        } else {
            &[]
        };
        let a = self.unchecked(|| self.raw("PUT", &format!("/{bucket}/{key}"), acl, data));
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }

    /// The bytes of `bucket/key`, or `None` if there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let a = self.unchecked(|| self.raw("GET", &format!("/{bucket}/{key}"), &[], &[]));
        match a.status {
            200 => Some(a.body),
            404 => None,
            s => panic!("GET {bucket}/{key}: HTTP {s}"),
        }
    }

    /// Texts of every `<tag>` in `xml`.
    fn all(xml: &[u8], tag: &str) -> Vec<String> {
        let s = String::from_utf8_lossy(xml);
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        s.split(&open)
            .skip(1)
            .filter_map(|p| p.split(&close).next())
            .map(str::to_string)
            .collect()
    }

    /// The keys of `bucket`'s objects.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let a = self.unchecked(|| self.raw("GET", &format!("/{bucket}?list-type=2"), &[], &[]));
        assert_eq!(a.status, 200);
        Self::all(&a.body, "Key")
    }

    /// The keys with a multipart upload in progress in `bucket` (ListMultipartUploads).
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let a = self.unchecked(|| self.raw("GET", &format!("/{bucket}?uploads"), &[], &[]));
        assert_eq!(a.status, 200);
        Self::all(&a.body, "Key")
    }

    /// `blockwise ARGS` set up to talk to this server: its endpoint, the given keys (none:
    /// anonymous), an empty HOME, and no AWS variable of the caller's environment.
    pub fn blockwise(&self, keys: Option<(&str, &str)>) -> Command {
        let mut c = common::blockwise();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.home.path())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null());
        if let Some((id, secret)) = keys {
            c.env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        c
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of a [`Moto`] that answers some requests itself with an S3 error instead
/// of passing them on (a failure injected at a chosen point of an upload). Requests are read
/// whole and forwarded one connection each; the proxy's threads end with the process.
pub struct FailingProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl FailingProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`), except requests whose first line
    /// contains `fail_on`, answered `400 InvalidRequest`.
    pub fn start(upstream: &str, fail_on: &'static str) -> FailingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = upstream.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let up = up.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, fail_on);
                });
            }
        });
        FailingProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// One client connection: request after request until it closes.
fn serve(mut conn: std::net::TcpStream, upstream: &str, fail_on: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let len: usize = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        if text.lines().next().is_some_and(|l| l.contains(fail_on)) {
            let err = "<Error><Code>InvalidRequest</Code><Message>injected by the test \
                       proxy</Message></Error>";
            write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/xml\r\n\
                 content-length: {}\r\n\r\n{err}",
                err.len()
            )?;
            continue;
        }
        // One upstream connection per request, closed after its answer.
        let mut up = std::net::TcpStream::connect(upstream)?;
        let mut fwd = String::new();
        for l in text.split("\r\n").filter(|l| !l.is_empty()) {
            if !l.to_ascii_lowercase().starts_with("connection:") {
                fwd.push_str(l);
                fwd.push_str("\r\n");
            }
        }
        fwd.push_str("connection: close\r\n\r\n");
        up.write_all(fwd.as_bytes())?;
        up.write_all(&body)?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        conn.write_all(&answer)?;
        // The answer says `connection: close` (or is HTTP/1.0): the client opens another.
        return Ok(());
    }
}
