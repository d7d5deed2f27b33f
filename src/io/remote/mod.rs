//! Images on web servers and in object storage, read as sources like any file.
//!
//! A [`Location`] is parsed from what the user typed (`http://`, `https://`, `s3://`); an
//! `Object` (in `http.rs`) knows how to ask for it (a plain URL, or a signed bucket request);
//! a [`RemoteSource`] reads it with HTTP range requests through a bounded cache, ahead of the
//! reader, and in parallel when the reader says up front what it will read
//! ([`crate::io::ReadAt::will_read`]). What was fetched is counted ([`RemoteStats`]), so the
//! commands can say how little of an object they downloaded.
//!
//! Nothing here prints a credential: URLs in messages pass through [`redact`].

use std::io;
use std::sync::Arc;

pub(crate) mod http;
mod location;
pub(crate) mod s3;
mod source;
pub mod upload;
mod web;

pub use location::{redact, sidecar_candidates, Location, RemoteOptions};

/// The parsers of what servers and users hand this layer, for the fuzz target `remote`: not
/// an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs every parser on `data`: a `Content-Range` value, a URL (parsed, redacted, its
    /// sidecar names), an S3 XML answer and error document, an AWS credentials/config file.
    pub fn parsers(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        if let Some((s, e, t)) = super::source::parse_content_range(&text) {
            assert!(s <= e && t.is_none_or(|t| e < t || (s, e) == (0, 0)));
        }
        if let Some(Ok(loc)) = super::Location::parse(&text) {
            let shown = loc.shown();
            // A bucket key may hold a `?`; a URL's query never shows.
            if let super::Location::Http(_) = loc {
                assert!(!shown.contains('?') || shown.ends_with("?…"));
            }
            let _ = super::sidecar_candidates(&loc);
        }
        let _ = super::redact(&text);
        let _ = super::web::HttpObject::new(&text);
        super::s3::fuzz_answers(data);
    }
}
pub use source::{RemoteSource, RemoteStats};

/// Opens the object at `loc` for reading.
pub fn open(loc: &Location, opts: &RemoteOptions) -> io::Result<RemoteSource> {
    let key = format!("{loc:?} {:?}", opts.endpoint);
    RemoteSource::open_keyed(key, object(loc, opts)?, opts)
}

/// The whole object at `loc` if it exists and is at most `limit` bytes (a bmap sidecar, a
/// checksum file); `None` if the server says there is no such object.
pub fn fetch_small(
    loc: &Location,
    opts: &RemoteOptions,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let obj = object(loc, opts)?;
    let what = format!("GET {}", obj.shown());
    let mut resp =
        http::Transport::shared().send_following(&what, obj.follows_redirects(), &mut || {
            obj.request("GET", &[])
        })?;
    match resp.status().as_u16() {
        200 => {}
        404 | 410 => return Ok(None),
        // Anonymous requests to a bucket that lists nothing: as good as absent.
        403 if matches!(loc, Location::S3 { .. }) => return Ok(None),
        s => {
            return Err(obj
                .explain(&what, &mut resp)
                .unwrap_or_else(|| io::Error::other(format!("{what}: the server answered {s}"))))
        }
    }
    let (_, body) = resp.into_parts();
    let mut v = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(body.into_reader(), limit + 1), &mut v)?;
    if v.len() as u64 > limit {
        return Err(io::Error::other(format!(
            "{what}: larger than {limit} bytes, not what was looked for"
        )));
    }
    Ok(Some(v))
}

/// How to ask for the object at `loc`.
pub(crate) fn object(loc: &Location, opts: &RemoteOptions) -> io::Result<Arc<dyn http::Object>> {
    match loc {
        Location::Http(url) => Ok(Arc::new(web::HttpObject::new(url)?)),
        Location::S3 { bucket, key } => Ok(Arc::new(s3::S3Object::new(
            bucket.clone(),
            key.clone(),
            Arc::new(s3::Config::from_env(opts.endpoint.as_deref())?),
        ))),
    }
}
