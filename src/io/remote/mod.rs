//! Images on web servers and in object storage, read as sources like any file.
//!
//! A [`Location`] is parsed from what the user typed (`http://`, `https://`, `s3://`); an
//! [`Object`](http::Object) knows how to ask for it (a plain URL, or a signed bucket request);
//! a [`RemoteSource`] reads it with HTTP range requests through a bounded cache, ahead of the
//! reader, and in parallel when the reader says up front what it will read
//! ([`crate::io::ReadAt::will_read`]). What was fetched is counted ([`RemoteStats`]), so the
//! commands can say how little of an object they downloaded.
//!
//! Nothing here prints a credential: URLs in messages pass through [`redact`].

use std::io;
use std::sync::Arc;

pub(crate) mod http;
pub(crate) mod s3;
mod source;
pub mod upload;

pub use source::{RemoteSource, RemoteStats};

/// Where a remote image lives, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An `http://` or `https://` URL.
    Http(String),
    /// `s3://bucket/key`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key (no leading `/`).
        key: String,
    },
}

impl Location {
    /// The location `s` names, if it is a URL this tool reads (`http://`, `https://`,
    /// `s3://`, in any letter case); `None` for everything else, which is a local path.
    /// An `s3://` address without a key is an error.
    pub fn parse(s: &str) -> Option<io::Result<Location>> {
        let scheme_end = s.find("://")?;
        let scheme = s[..scheme_end].to_ascii_lowercase();
        let rest = &s[scheme_end + 3..];
        match scheme.as_str() {
            "http" | "https" => Some(Ok(Location::Http(format!("{scheme}://{rest}")))),
            "s3" => Some(parse_s3(rest)),
            _ => None,
        }
    }

    /// The location for messages: query string redacted, no user or password.
    pub fn shown(&self) -> String {
        match self {
            Location::Http(u) => redact(u),
            Location::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }

    /// The location of a file next to this one: `name` in place of the last path component
    /// (a bmap sidecar, a CUE sheet's BIN). The query string of a URL is not carried over:
    /// a presigned URL's signature is for its own object only.
    pub fn sibling(&self, name: &str) -> Location {
        match self {
            Location::Http(u) => {
                let base = u.split(['?', '#']).next().unwrap_or(u);
                let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
                Location::Http(format!("{dir}{name}"))
            }
            Location::S3 { bucket, key } => {
                let dir = key.rfind('/').map_or("", |i| &key[..=i]);
                Location::S3 {
                    bucket: bucket.clone(),
                    key: format!("{dir}{name}"),
                }
            }
        }
    }

    /// The last path component (the object's file name), without a query string.
    pub fn file_name(&self) -> &str {
        let path = match self {
            Location::Http(u) => {
                let no_query = u.split(['?', '#']).next().unwrap_or(u);
                no_query.split_once("://").map_or(no_query, |(_, r)| r)
            }
            Location::S3 { key, .. } => key,
        };
        path.rsplit('/').next().unwrap_or(path)
    }
}

fn parse_s3(rest: &str) -> io::Result<Location> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("s3://{rest}: an object is named s3://BUCKET/KEY"),
        ));
    }
    Ok(Location::S3 {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    })
}

/// `url` fit to print: the query string (a presigned URL's signature, a token) replaced by
/// `?…`, a user and password dropped, a fragment dropped. Anything that is not a URL is
/// returned with the same treatment of `?`.
pub fn redact(url: &str) -> String {
    let (head, had_query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], url[i..].starts_with('?') && url.len() > i + 1),
        None => (url, false),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => head.to_owned(),
    };
    if had_query {
        out.push_str("?…");
    }
    out
}

/// How remote objects are reached and read.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// An S3-compatible server's address (`--endpoint`, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Size of one range request, and of the cache's blocks: a power of two, at least 64 KiB.
    pub block: u64,
    /// Range requests in flight at once, at most.
    pub parallel: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            endpoint: None,
            block: 1 << 20,
            parallel: 8,
        }
    }
}

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

/// Where bmaptool would look for the bmap of the image at `loc`: `NAME.bmap` beside it, then
/// with one extension stripped at a time.
pub fn sidecar_candidates(loc: &Location) -> Vec<Location> {
    let mut stem = loc.file_name().to_owned();
    let mut out = Vec::new();
    loop {
        out.push(loc.sibling(&format!("{stem}.bmap")));
        match stem.rfind('.') {
            Some(i) if i > 0 => stem.truncate(i),
            _ => break,
        }
    }
    out
}

/// How to ask for the object at `loc`.
pub(crate) fn object(loc: &Location, opts: &RemoteOptions) -> io::Result<Arc<dyn http::Object>> {
    match loc {
        Location::Http(url) => Ok(Arc::new(HttpObject::new(url)?)),
        Location::S3 { bucket, key } => Ok(Arc::new(s3::S3Object::new(
            bucket.clone(),
            key.clone(),
            Arc::new(s3::Config::from_env(opts.endpoint.as_deref())?),
        ))),
    }
}

/// A file on a web server: the URL, with a user and password (if the URL has them) sent as
/// HTTP Basic authentication and never shown.
struct HttpObject {
    url: String,
    shown: String,
    basic: Option<String>,
}

impl HttpObject {
    fn new(url: &str) -> io::Result<HttpObject> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let (auth, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let (userinfo, host) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        let path = match path.split('#').next() {
            Some("") | None => "/",
            Some(p) => p,
        };
        let clean = format!("{scheme}://{host}{path}");
        clean.parse::<ureq::http::Uri>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a valid URL", redact(url)),
            )
        })?;
        let basic = userinfo.map(|u| format!("Basic {}", base64(percent_decode(u).as_bytes())));
        Ok(HttpObject {
            shown: redact(&clean),
            url: clean,
            basic,
        })
    }
}

impl http::Object for HttpObject {
    fn shown(&self) -> &str {
        &self.shown
    }
    fn request(
        &self,
        method: &str,
        headers: &[(&str, String)],
    ) -> io::Result<ureq::http::Request<Vec<u8>>> {
        let mut b = ureq::http::Request::builder().method(method).uri(&self.url);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        if let Some(a) = &self.basic {
            b = b.header("authorization", a);
        }
        b.body(Vec::new())
            .map_err(|_| io::Error::other(format!("{}: cannot make a request", self.shown)))
    }
    fn follows_redirects(&self) -> bool {
        true
    }
}

/// `%XX` escapes of a URL's user and password decoded (as browsers and curl do).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (for a Basic authorization header).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(A[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_recognised_by_scheme_only() {
        assert_eq!(
            Location::parse("HTTPS://example.org/a.img")
                .unwrap()
                .unwrap(),
            Location::Http("https://example.org/a.img".into())
        );
        assert_eq!(
            Location::parse("s3://b/dir/card.img.zst").unwrap().unwrap(),
            Location::S3 {
                bucket: "b".into(),
                key: "dir/card.img.zst".into()
            }
        );
        assert!(Location::parse("s3://bucket").unwrap().is_err());
        assert!(Location::parse("s3://bucket/").unwrap().is_err());
        assert!(Location::parse("/dev/sdb").is_none());
        assert!(Location::parse("card.img").is_none());
        assert!(Location::parse("ftp://x/y").is_none());
    }

    #[test]
    fn redaction_hides_queries_and_passwords() {
        assert_eq!(
            redact("https://u:pw@h.example/a.img?X-Amz-Signature=SECRET&b=1"),
            "https://h.example/a.img?…"
        );
        assert_eq!(redact("http://h/a.img"), "http://h/a.img");
        assert_eq!(redact("http://h/a.img#frag"), "http://h/a.img");
        assert_eq!(redact("http://h/a?"), "http://h/a");
    }

    #[test]
    fn sidecars_are_looked_for_as_bmaptool_does() {
        let l = Location::parse("http://h/d/card.img.xz?sig=S")
            .unwrap()
            .unwrap();
        let c: Vec<String> = sidecar_candidates(&l).iter().map(Location::shown).collect();
        assert_eq!(
            c,
            [
                "http://h/d/card.img.xz.bmap",
                "http://h/d/card.img.bmap",
                "http://h/d/card.bmap"
            ]
        );
    }

    #[test]
    fn siblings_drop_the_query() {
        let l = Location::parse("http://h/d/card.img.zst?sig=S")
            .unwrap()
            .unwrap();
        assert_eq!(
            l.sibling("card.bmap"),
            Location::Http("http://h/d/card.bmap".into())
        );
        assert_eq!(l.file_name(), "card.img.zst");
        let s = Location::parse("s3://b/x/y.img").unwrap().unwrap();
        assert_eq!(s.file_name(), "y.img");
        assert_eq!(s.sibling("y.img.bmap").shown(), "s3://b/x/y.img.bmap");
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_is_never_shown() {
        let o = HttpObject::new("http://al%40x:se%3Acret@h.example:81/a.img").unwrap();
        assert_eq!(o.shown, "http://h.example:81/a.img");
        assert_eq!(o.url, "http://h.example:81/a.img");
        assert_eq!(
            o.basic.as_deref(),
            Some(format!("Basic {}", base64(b"al@x:se:cret")).as_str())
        );
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
