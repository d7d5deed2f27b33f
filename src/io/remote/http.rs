//! The HTTP transport under every remote source: one agent, retries with backoff, and the
//! redirect rule.
//!
//! Requests are built by the caller for every attempt ([`Transport::send`] calls the builder
//! again), so a store that signs its requests signs each retry with a fresh date. Redirects
//! are followed here, not by the agent, because the rule depends on what is being sent: only
//! GET and HEAD are redirected, only for objects that say they may be, and a redirect to
//! another host drops every header that could carry a credential.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::http;

/// Something that can be fetched: a URL on a web server, or an object in a bucket.
pub(crate) trait Object: Send + Sync {
    /// The object's address for messages (query string redacted, no credentials).
    fn shown(&self) -> &str;
    /// A request for `method` on the object carrying `headers` (signed if the store needs it).
    fn request(
        &self,
        method: &str,
        headers: &[(&str, String)],
    ) -> io::Result<http::Request<Vec<u8>>>;
    /// Whether 3xx redirects may be followed (plain web servers, GET and HEAD only). Stores
    /// that sign their requests answer false: a redirect there is a misconfiguration (a
    /// wrong region), reported, not followed.
    fn follows_redirects(&self) -> bool;
    /// What an answer with an unwanted status means when the store says more than its status
    /// (a bucket's error code, the region it is in); `None`: the status's plain words.
    fn explain(&self, what: &str, resp: &mut http::Response<ureq::Body>) -> Option<io::Error> {
        let _ = (what, resp);
        None
    }
}

/// How many times a request is tried before its failure is reported.
const ATTEMPTS: u32 = 6;
/// First pause between attempts; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Redirects followed for one request before giving up (as curl and browsers bound them).
const MAX_REDIRECTS: u32 = 10;
/// Headers that may carry a credential, dropped on a redirect to another host.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-amz-security-token",
];

/// The one HTTP agent of the process (connection pool, TLS configuration).
pub(crate) struct Transport {
    agent: ureq::Agent,
}

impl Transport {
    /// One agent for the whole process.
    pub(crate) fn shared() -> Arc<Transport> {
        static SHARED: OnceLock<Arc<Transport>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Transport::new(Timeouts::from_env())))
            .clone()
    }

    fn new(t: Timeouts) -> Transport {
        let config = ureq::Agent::config_builder()
            // Statuses are ours to judge: a 206, a 412 and a 503 each mean something else.
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(t.connect))
            .timeout_recv_response(Some(t.response))
            .timeout_recv_body(Some(t.body))
            .timeout_send_body(Some(t.body))
            .user_agent(concat!("blockwise/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(32)
            .build();
        Transport {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends what `build` makes (called again for every retry, so signatures are fresh);
    /// retries transport errors, 408/429/5xx with backoff; returns every other status.
    /// `what` names the request in messages (already redacted).
    pub(crate) fn send(
        &self,
        what: &str,
        build: &mut dyn FnMut() -> io::Result<http::Request<Vec<u8>>>,
    ) -> io::Result<http::Response<ureq::Body>> {
        self.send_following(what, false, build)
    }

    /// Like [`send`](Self::send), following redirects of GET and HEAD requests when `follow`
    /// is set (see the module's rule).
    pub(crate) fn send_following(
        &self,
        what: &str,
        follow: bool,
        build: &mut dyn FnMut() -> io::Result<http::Request<Vec<u8>>>,
    ) -> io::Result<http::Response<ureq::Body>> {
        retry(|| {
            let req = build().map_err(Attempt::Fatal)?;
            self.attempt(what, follow, req)
        })
    }

    /// One attempt at `req`, redirects included: for callers that check the response further
    /// (a body's length, a validator) and retry the whole exchange with [`retry`]. A status
    /// worth retrying ([`retryable`]) is an [`Attempt::Retry`].
    pub(crate) fn attempt(
        &self,
        what: &str,
        follow: bool,
        mut req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<ureq::Body>, Attempt> {
        let may_follow =
            follow && (req.method() == http::Method::GET || req.method() == http::Method::HEAD);
        if !may_follow {
            // Sent as it is (a part upload's body is not copied): a redirect is an error.
            let resp = self.agent.run(req).map_err(|e| transport_error(what, e))?;
            return match judge(what, resp)? {
                Judged::Final(resp) => Ok(resp),
                Judged::Redirect(status, to) => Err(Attempt::Fatal(io::Error::other(format!(
                    "{what}: the server redirects ({status}) to {}, which is not followed for \
                     this request",
                    super::location::redact(&to)
                )))),
            };
        }
        for _ in 0..=MAX_REDIRECTS {
            let resp = self
                .agent
                .run(clone_request(&req))
                .map_err(|e| transport_error(what, e))?;
            match judge(what, resp)? {
                Judged::Final(resp) => return Ok(resp),
                Judged::Redirect(_, to) => {
                    req = redirected(req, &to)
                        .map_err(|e| Attempt::Fatal(io::Error::other(format!("{what}: {e}"))))?;
                }
            }
        }
        Err(Attempt::Fatal(io::Error::other(format!(
            "{what}: more than {MAX_REDIRECTS} redirects"
        ))))
    }
}

/// What an answer means for the request.
enum Judged {
    /// The answer to give the caller.
    Final(http::Response<ureq::Body>),
    /// A redirect: its status and where to.
    Redirect(http::StatusCode, String),
}

/// A status worth retrying is an [`Attempt::Retry`]; a 3xx with a `Location` a redirect;
/// anything else final.
fn judge(what: &str, resp: http::Response<ureq::Body>) -> Result<Judged, Attempt> {
    let status = resp.status();
    if retryable(status) {
        return Err(Attempt::Retry(io::Error::other(format!(
            "{what}: the server answered {status}"
        ))));
    }
    if !status.is_redirection() || status == http::StatusCode::NOT_MODIFIED {
        return Ok(Judged::Final(resp));
    }
    match resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    {
        Some(to) => Ok(Judged::Redirect(status, to.to_owned())),
        None => Ok(Judged::Final(resp)),
    }
}

/// Timeouts of one request. A stalled server fails the attempt (and it is tried again); a
/// slow one that keeps sending is waited for.
#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    response: Duration,
    body: Duration,
}

impl Timeouts {
    /// The defaults, or `BLOCKWISE_HTTP_TIMEOUT` seconds for the response and body (tests of
    /// a stalled server set it low).
    fn from_env() -> Timeouts {
        let secs = std::env::var("BLOCKWISE_HTTP_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0);
        Timeouts {
            connect: Duration::from_secs(secs.unwrap_or(15).min(15)),
            response: Duration::from_secs(secs.unwrap_or(60)),
            body: Duration::from_secs(secs.unwrap_or(600)),
        }
    }
}

/// One attempt's outcome when it did not succeed.
pub(crate) enum Attempt {
    /// Worth trying again (a reset, a timeout, a 5xx, a short body).
    Retry(io::Error),
    /// Final (a 404, a changed object, a refused redirect).
    Fatal(io::Error),
}

/// Runs `once` until it succeeds, fails for good, or [`ATTEMPTS`] are spent, pausing with
/// exponential backoff (and some jitter, so parallel fetches do not retry in lockstep).
pub(crate) fn retry<T>(mut once: impl FnMut() -> Result<T, Attempt>) -> io::Result<T> {
    let mut pause = FIRST_BACKOFF;
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let jitter = Duration::from_millis(u64::from(std::process::id() ^ attempt) % 97);
            std::thread::sleep(pause + jitter);
            pause = (pause * 2).min(MAX_BACKOFF);
        }
        match once() {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(e)) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no attempt made"));
    Err(io::Error::new(
        e.kind(),
        format!("{e} (gave up after {ATTEMPTS} attempts)"),
    ))
}

/// Whether a status is worth another attempt: the server says it is busy or failed.
pub(crate) fn retryable(status: http::StatusCode) -> bool {
    status.is_server_error()
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::REQUEST_TIMEOUT
}

/// A transport failure (connection refused or reset, a timeout, TLS), worth retrying unless
/// it is about the request itself (a bad URL, a certificate that does not verify).
fn transport_error(what: &str, e: ureq::Error) -> Attempt {
    // A certificate that does not verify will not verify on a second try; rustls reports it
    // inside an I/O error.
    let tls = match &e {
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .map(|t| format!("TLS: {t}")),
        _ => None,
    };
    if let Some(t) = tls {
        return Attempt::Fatal(io::Error::other(format!("{what}: {t}")));
    }
    let fatal = matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::Tls(_)
    ) || matches!(&e, ureq::Error::Rustls(_));
    let err = io::Error::other(format!("{what}: {}", describe(&e)));
    if fatal {
        Attempt::Fatal(err)
    } else {
        Attempt::Retry(err)
    }
}

/// The error in words, never with a URL in it: ureq's messages may carry the address with
/// its query string, which can hold a presigned URL's signature.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Rustls(t) => format!("TLS: {t}"),
        ureq::Error::Tls(t) => format!("TLS: {t}"),
        ureq::Error::BadUri(_) => "not a valid URL".into(),
        other => super::location::redact(&other.to_string()),
    }
}

/// A copy of `req` to send (the agent takes its request by value; the original stays for a
/// redirect or a retry).
fn clone_request(req: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .version(req.version());
    if let Some(h) = b.headers_mut() {
        *h = req.headers().clone();
    }
    b.body(req.body().clone())
        .expect("a copy of a valid request is valid")
}

/// The request `req` sent again to `location` (absolute, or relative to `req`'s URL). Going
/// to another host (or scheme, or port) drops the headers that could carry a credential, as
/// curl does; an `https` to `http` redirect is refused.
fn redirected(
    req: http::Request<Vec<u8>>,
    location: &str,
) -> Result<http::Request<Vec<u8>>, String> {
    let base = req.uri().clone();
    let target: http::Uri = if location.starts_with("http://") || location.starts_with("https://") {
        location.parse().map_err(|_| {
            format!(
                "a redirect to an invalid URL ({})",
                super::location::redact(location)
            )
        })?
    } else if location.starts_with('/') {
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(location.parse().map_err(|_| {
            format!(
                "a redirect to an invalid path ({})",
                super::location::redact(location)
            )
        })?);
        http::Uri::from_parts(parts).map_err(|_| "a redirect that makes no URL".to_string())?
    } else {
        return Err(format!(
            "a redirect to {} (only absolute URLs and paths are followed)",
            super::location::redact(location)
        ));
    };
    if base.scheme_str() == Some("https") && target.scheme_str() != Some("https") {
        return Err(format!(
            "a redirect from https to {}, which would drop encryption",
            super::location::redact(location)
        ));
    }
    let same_origin = base.scheme() == target.scheme() && base.authority() == target.authority();
    let (mut parts, body) = req.into_parts();
    parts.uri = target;
    if !same_origin {
        for h in CREDENTIAL_HEADERS {
            parts.headers.remove(h);
        }
    }
    parts.headers.remove(http::header::HOST);
    Ok(http::Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, auth: bool) -> http::Request<Vec<u8>> {
        let mut b = http::Request::get(url).header("range", "bytes=0-9");
        if auth {
            b = b
                .header("authorization", "Basic c2VjcmV0")
                .header("cookie", "a=b");
        }
        b.body(Vec::new()).unwrap()
    }

    #[test]
    fn redirect_to_another_host_drops_credentials_and_keeps_range() {
        let r = redirected(
            get("http://a.example/x.img", true),
            "http://b.example/y.img",
        )
        .unwrap();
        assert_eq!(r.uri(), "http://b.example/y.img");
        assert!(r.headers().get("authorization").is_none());
        assert!(r.headers().get("cookie").is_none());
        assert_eq!(r.headers().get("range").unwrap(), "bytes=0-9");
    }

    #[test]
    fn redirect_on_the_same_host_keeps_headers() {
        let r = redirected(get("http://a.example/x.img", true), "/mirror/x.img").unwrap();
        assert_eq!(r.uri(), "http://a.example/mirror/x.img");
        assert!(r.headers().get("authorization").is_some());
        let r = redirected(
            get("http://a.example/x.img", true),
            "http://a.example:8080/x",
        )
        .unwrap();
        assert!(
            r.headers().get("authorization").is_none(),
            "another port is another origin"
        );
    }

    #[test]
    fn redirect_from_https_to_http_is_refused() {
        let e = redirected(get("https://a.example/x", false), "http://a.example/x").unwrap_err();
        assert!(e.contains("drop encryption"), "{e}");
        let e = redirected(get("https://a.example/x", false), "x.img?sig=SECRET").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn retry_gives_up_after_the_attempts_and_says_so() {
        let mut n = 0;
        let r: io::Result<()> = retry(|| {
            n += 1;
            if n < 3 {
                Err(Attempt::Retry(io::Error::other("reset")))
            } else {
                Err(Attempt::Fatal(io::Error::other("gone")))
            }
        });
        assert_eq!(n, 3);
        assert_eq!(r.unwrap_err().to_string(), "gone");
    }
}
