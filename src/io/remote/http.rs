//! The HTTP transport under the remote layer: one ureq agent (rustls) for the process, and
//! [`Transport::send`], which retries what is worth retrying and hands every other answer back.
//!
//! Requests come from an [`Object`], which knows its store: a plain web server, or a bucket
//! that signs each request. The request is built again for every attempt, so a signature
//! (which carries the time) is always fresh.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub(crate) use ureq::http;

/// Attempts per request (the first and the retries).
const ATTEMPTS: u32 = 5;
/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// An object on a server that requests can be made for.
pub(crate) trait Object: Send + Sync {
    /// The object's address for messages (query redacted, no credentials).
    fn shown(&self) -> &str;
    /// A request for `method` on the object carrying `headers` (signed if the store needs it).
    fn request(
        &self,
        method: &str,
        headers: &[(&str, String)],
    ) -> io::Result<http::Request<Vec<u8>>>;
    /// Whether 3xx redirects may be followed (plain web servers, GET/HEAD only): false for
    /// stores that sign.
    fn follows_redirects(&self) -> bool;
}

/// The process's HTTP client.
pub(crate) struct Transport {
    agent: ureq::Agent,
}

impl Transport {
    /// One agent for the whole process.
    pub(crate) fn shared() -> Arc<Transport> {
        static SHARED: OnceLock<Arc<Transport>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let config = ureq::Agent::config_builder()
                    // Statuses are the caller's to read: a 404 or a 403 is an answer.
                    .http_status_as_error(false)
                    // Redirects are the caller's decision (signed requests never follow one).
                    .max_redirects(0)
                    .max_redirects_will_error(false)
                    .timeout_connect(Some(Duration::from_secs(30)))
                    .timeout_recv_response(Some(Duration::from_secs(120)))
                    .timeout_per_read(Some(Duration::from_secs(120)))
                    .timeout_per_write(Some(Duration::from_secs(120)))
                    .user_agent(concat!("blockwise/", env!("CARGO_PKG_VERSION")))
                    .build();
                Arc::new(Transport {
                    agent: ureq::Agent::new_with_config(config),
                })
            })
            .clone()
    }

    /// Sends what `build` makes (called again for every retry, so signatures are fresh);
    /// retries transport errors, 408/429/5xx with backoff; returns every other status.
    /// `what` names the request in messages (already redacted).
    pub(crate) fn send(
        &self,
        what: &str,
        build: &mut dyn FnMut() -> io::Result<http::Request<Vec<u8>>>,
    ) -> io::Result<http::Response<ureq::Body>> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let request = build()?;
            let last = attempt >= ATTEMPTS;
            match self.agent.run(request) {
                Ok(r) if retryable(r.status().as_u16()) && !last => {}
                Ok(r) => return Ok(r),
                Err(e) if last || !transient(&e) => {
                    return Err(io::Error::new(
                        kind_of(&e),
                        format!("{what}: {e} (after {attempt} attempt(s))"),
                    ))
                }
                Err(_) => {}
            }
            std::thread::sleep(wait);
            wait *= 2;
            attempt += 1;
        }
    }
}

/// Statuses that a later attempt may not get: timeouts, throttling, server trouble.
fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Transport failures worth another attempt (a reset, a timeout), not a bad address.
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
}

fn kind_of(e: &ureq::Error) -> io::ErrorKind {
    match e {
        ureq::Error::Io(io) => io.kind(),
        ureq::Error::Timeout(_) => io::ErrorKind::TimedOut,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            io::ErrorKind::ConnectionRefused
        }
        _ => io::ErrorKind::Other,
    }
}
