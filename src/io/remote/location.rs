//! What the user typed for a remote image: a [`Location`] (`http(s)://…` or
//! `s3://bucket/key`), how it is shown ([`redact`]), where its bmap would be
//! ([`sidecar_candidates`]), and the [`RemoteOptions`] it is read with. Plain data, imported
//! by the transport, the sources and the stores alike.

use std::io;

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
}
