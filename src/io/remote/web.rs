//! A file on a web server as an [`Object`]: its URL, and HTTP Basic authentication from a
//! user and password in it.

use std::io;

use super::http::Object;
use super::location::redact;

/// A file on a web server: the URL, with a user and password (if the URL has them) sent as
/// HTTP Basic authentication and never shown.
pub(crate) struct HttpObject {
    url: String,
    shown: String,
    basic: Option<String>,
}

impl HttpObject {
    pub(crate) fn new(url: &str) -> io::Result<HttpObject> {
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

impl Object for HttpObject {
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
