//! Objects in S3 and S3-compatible stores (MinIO, Ceph RGW, R2, moto): where the credentials
//! and the region come from, AWS Signature Version 4, and the object API blockwise uses (GET
//! and HEAD through [`Object`], single PUT, and the multipart upload calls).
//!
//! Credentials: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the
//! profile (`AWS_PROFILE`, default `default`) of the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) or of the config file
//! (`AWS_CONFIG_FILE`, default `~/.aws/config`). None at all: requests go unsigned (public
//! buckets). Region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
//! us-east-1. Endpoint: the `--endpoint` option, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
//! else AWS. AWS is addressed virtual-host style (`bucket.s3.REGION.amazonaws.com`, path style
//! for bucket names that cannot be a TLS host name); a given endpoint path style.
//!
//! Secrets never reach a message: [`Credentials`]' `Debug` hides them, errors name the object
//! as `s3://bucket/key` and carry the store's error code and message, never a signature.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::http::{Object, Transport};
use crate::checksum::hex;
use ureq::http;

/// The SHA-256 of no bytes: the payload hash of every request without a body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Region used when nothing names one (as the AWS tools do).
const DEFAULT_REGION: &str = "us-east-1";

/// Largest XML answer read (a listing of 1000 uploads is a few hundred KiB).
const MAX_XML: u64 = 4 << 20;

/// Longest excerpt of a store's error message put into ours.
const MAX_MESSAGE: usize = 300;

/// An access key: the secret and the session token are never shown.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// An S3-compatible server named by URL (`--endpoint`, `AWS_ENDPOINT_URL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]`, as sent in the Host header.
    authority: String,
    /// A path prefix without a trailing slash (usually empty).
    prefix: String,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/prefix]`; credentials or a query in it are refused
    /// (they would end up in messages).
    pub(crate) fn parse(url: &str) -> io::Result<Endpoint> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("endpoint {}: {why}", super::location::redact(url)),
            )
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| bad("not a URL (expected http://host:port or https://host)"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
                s.to_ascii_lowercase()
            }
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials do not belong in the endpoint URL (use AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY)",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("an endpoint takes no query string"));
        }
        Ok(Endpoint {
            scheme,
            authority: authority.as_str().to_ascii_lowercase(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// Where requests go and how they are signed.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `None`: anonymous, unsigned requests.
    pub(crate) credentials: Option<Credentials>,
    pub(crate) region: String,
    /// `None`: AWS itself.
    pub(crate) endpoint: Option<Endpoint>,
    /// Where the credentials came from, for messages ("AWS_ACCESS_KEY_ID", "profile x of …").
    pub(crate) credentials_from: String,
}

impl Config {
    /// The configuration from the process environment and the AWS files under `$HOME`;
    /// `endpoint` (the `--endpoint` option) overrides the environment's.
    pub(crate) fn from_env(endpoint: Option<&str>) -> io::Result<Config> {
        Config::resolve(endpoint, &|name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// The configuration with `var` as the environment (tests give their own).
    pub(crate) fn resolve(
        endpoint: Option<&str>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> io::Result<Config> {
        let home = var("HOME").map(PathBuf::from);
        let expand = |p: String| -> PathBuf {
            match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(p),
            }
        };
        let file = |name: &str, default: &str| -> Option<PathBuf> {
            var(name)
                .map(&expand)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_file = file("AWS_CONFIG_FILE", "config");
        let explicit_profile = var("AWS_PROFILE");
        let profile = explicit_profile
            .clone()
            .unwrap_or_else(|| "default".to_string());

        let read = |p: &Option<PathBuf>| -> io::Result<Option<(PathBuf, Vec<Section>)>> {
            let Some(p) = p else { return Ok(None) };
            match std::fs::read_to_string(p) {
                Ok(text) => Ok(Some((p.clone(), parse_ini(&text)))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", p.display()),
                )),
            }
        };
        let creds_ini = read(&credentials_file)?;
        let config_ini = read(&config_file)?;
        let in_credentials = creds_ini.as_ref().and_then(|(p, s)| {
            s.iter()
                .find(|x| x.name == profile)
                .map(|x| (p.clone(), x.clone()))
        });
        let config_name = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let in_config = config_ini.as_ref().and_then(|(p, s)| {
            s.iter()
                .find(|x| x.name == config_name || x.name == format!("profile {profile}"))
                .map(|x| (p.clone(), x.clone()))
        });

        let (credentials, credentials_from) =
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => (
                    Some(Credentials {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: var("AWS_SESSION_TOKEN"),
                    }),
                    "the environment (AWS_ACCESS_KEY_ID)".to_string(),
                ),
                (Some(_), None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
                    ))
                }
                (None, Some(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
                    ))
                }
                (None, None) => {
                    match from_profile(&profile, [in_credentials.as_ref(), in_config.as_ref()])? {
                        Some(found) => found,
                        None if explicit_profile.is_some()
                            && in_credentials.is_none()
                            && in_config.is_none() =>
                        {
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "AWS_PROFILE={profile}: no such profile in {} or {}",
                                    shown_path(&credentials_file),
                                    shown_path(&config_file)
                                ),
                            ));
                        }
                        None => (None, "nowhere (anonymous requests)".to_string()),
                    }
                }
            };

        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| {
                in_config
                    .as_ref()
                    .and_then(|(_, s)| s.get("region").map(str::to_string))
            })
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = match endpoint
            .map(str::to_string)
            .or_else(|| var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
        {
            Some(u) => Some(Endpoint::parse(&u)?),
            None => None,
        };
        Ok(Config {
            credentials,
            region,
            endpoint,
            credentials_from,
        })
    }
}

fn shown_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "(no HOME)".to_string(), |p| p.display().to_string())
}

/// The keys of profile `profile`, from the first of `sections` that has them. A profile that
/// gets its keys another way (a role, SSO, a helper program) is an error that says how to
/// hand blockwise the keys instead.
fn from_profile(
    profile: &str,
    sections: [Option<&(PathBuf, Section)>; 2],
) -> io::Result<Option<(Option<Credentials>, String)>> {
    for (path, s) in sections.into_iter().flatten() {
        match (s.get("aws_access_key_id"), s.get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => {
                return Ok(Some((
                    Some(Credentials {
                        access_key_id: id.to_string(),
                        secret_access_key: secret.to_string(),
                        session_token: s.get("aws_session_token").map(str::to_string),
                    }),
                    format!("profile {profile} of {}", path.display()),
                )))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "profile {profile} of {} has only one of aws_access_key_id and \
                         aws_secret_access_key",
                        path.display()
                    ),
                ))
            }
            (None, None) => {}
        }
    }
    for (path, s) in sections.into_iter().flatten() {
        for other in [
            "credential_process",
            "role_arn",
            "sso_session",
            "sso_start_url",
            "web_identity_token_file",
        ] {
            if s.get(other).is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "profile {profile} of {} gets its keys through {other}, which blockwise \
                         does not use; export them instead (for example: eval \"$(aws \
                         configure export-credentials --profile {profile} --format env)\")",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(None)
}

/// One `[section]` of an AWS INI file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Section {
    /// The name between the brackets, trimmed (`default`, `profile x`, `x`).
    pub(crate) name: String,
    /// `key = value` pairs in order, keys lowercased.
    pub(crate) entries: Vec<(String, String)>,
}

impl Section {
    /// The last value of `key` (a later line wins, as in the AWS tools).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The sections of an AWS credentials or config file. Comments start with `#` or `;`; an
/// indented line after a key continues it (the nested `s3 =` settings), so it is never read
/// as a key of its own; lines before the first section and lines without `=` are ignored.
pub(crate) fn parse_ini(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // `[profile  x]` and `[profile x]` name the same profile.
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.push(Section {
                name,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        let indented = raw.starts_with([' ', '\t']);
        if indented && !section.entries.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            // An inline comment needs whitespace before it (`a = b # c`); `#` inside a secret
            // key is part of it.
            let v = v
                .find(" #")
                .or_else(|| v.find(" ;"))
                .or_else(|| v.find("\t#"))
                .map_or(v, |i| v[..i].trim_end());
            section
                .entries
                .push((k.trim().to_ascii_lowercase(), v.to_string()));
        }
    }
    out
}

/// `s3://bucket/key` split into bucket and key (the key taken literally: no percent
/// decoding, `?` and `#` are part of it, as with the AWS tools).
pub(crate) fn parse_url(url: &str) -> io::Result<(String, String)> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{url}: {why} (expected s3://BUCKET/KEY)"),
        )
    };
    let rest = url
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("s3://"))
        .map(|_| &url[5..])
        .ok_or_else(|| bad("not an s3:// URL"))?;
    let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("no object key"))?;
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    if key.is_empty() {
        return Err(bad("no object key"));
    }
    if bucket.len() > 255
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad("not a bucket name"));
    }
    if key.len() > 1024 {
        return Err(bad("the key is longer than 1024 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("the key holds control characters"));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// Percent-encodes `s` as SigV4 wants: every byte but `A-Za-z0-9-_.~` (and `/` unless
/// `slash`) as `%XX`, upper-case hex.
pub(crate) fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical query string: names and values encoded, sorted by name then value, a
/// parameter without a value written `name=`.
pub(crate) fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What a signature covers.
pub(crate) struct Canonical<'a> {
    pub(crate) method: &'a str,
    /// The encoded path, exactly as sent.
    pub(crate) path: &'a str,
    /// From [`canonical_query`].
    pub(crate) query: &'a str,
    /// Every header to sign (names in any case); `host` among them.
    pub(crate) headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (the `x-amz-content-sha256` value).
    pub(crate) payload_hash: &'a str,
}

impl Canonical<'_> {
    /// Lower-case names and trimmed values (inner runs of spaces as one), sorted by name.
    fn sorted_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        h.sort();
        h
    }

    /// `host;range;x-amz-date...`
    pub(crate) fn signed_headers(&self) -> String {
        self.sorted_headers()
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The canonical request of SigV4.
    pub(crate) fn request(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.method, self.path, self.query);
        for (k, v) in self.sorted_headers() {
            s.push_str(&k);
            s.push(':');
            s.push_str(&v);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.signed_headers());
        s.push('\n');
        s.push_str(self.payload_hash);
        s
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// `AWS4-HMAC-SHA256\n<date>\n<scope>\n<hash of the canonical request>`.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key for one day, region and service.
pub(crate) fn signing_key(secret: &str, day: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The `Authorization` header value for `c` signed with `creds` at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`) in `region`.
pub(crate) fn authorization(
    creds: &Credentials,
    amz_date: &str,
    region: &str,
    c: &Canonical<'_>,
) -> String {
    let day = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let sts = string_to_sign(amz_date, &scope, &c.request());
    let key = signing_key(&creds.secret_access_key, day, region, "s3");
    let sig = hex(&hmac(&key, sts.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={},Signature={sig}",
        creds.access_key_id,
        c.signed_headers()
    )
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of `t`.
pub(crate) fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A small XML element tree (S3's answers are a few levels deep).
#[derive(Debug, Default)]
struct Xml {
    name: String,
    text: String,
    children: Vec<Xml>,
}

impl Xml {
    fn parse(body: &[u8]) -> io::Result<Xml> {
        use quick_xml::events::Event;
        const MAX_DEPTH: usize = 16;
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let mut reader = quick_xml::Reader::from_reader(body);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<Xml> = vec![Xml::default()];
        let mut buf = Vec::new();
        loop {
            let ev = reader
                .read_event_into(&mut buf)
                .map_err(|e| bad(format!("the server's XML answer is not valid XML: {e}")))?;
            let name_of = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
            match ev {
                Event::Start(e) => {
                    if stack.len() > MAX_DEPTH {
                        return Err(bad("the server's XML answer nests too deep".into()));
                    }
                    stack.push(Xml {
                        name: name_of(e.local_name().as_ref()),
                        ..Xml::default()
                    });
                }
                Event::Empty(e) => {
                    let el = Xml {
                        name: name_of(e.local_name().as_ref()),
                        ..Xml::default()
                    };
                    if let Some(top) = stack.last_mut() {
                        top.children.push(el);
                    }
                }
                Event::Text(t) => {
                    let s = t
                        .decode()
                        .map_err(|e| bad(format!("bad text in the server's XML: {e}")))?;
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::CData(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&String::from_utf8_lossy(&t));
                    }
                }
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        _ => match &*r {
                            b"amp" => Some('&'),
                            b"lt" => Some('<'),
                            b"gt" => Some('>'),
                            b"quot" => Some('"'),
                            b"apos" => Some('\''),
                            _ => None,
                        },
                    };
                    if let (Some(c), Some(top)) = (c, stack.last_mut()) {
                        top.text.push(c);
                    }
                }
                Event::End(_) => {
                    let el = stack
                        .pop()
                        .filter(|_| !stack.is_empty())
                        .ok_or_else(|| bad("unbalanced XML from the server".into()))?;
                    if let Some(top) = stack.last_mut() {
                        top.children.push(el);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        let mut doc = stack
            .pop()
            .filter(|_| stack.is_empty())
            .ok_or_else(|| bad("the server's XML answer ends inside an element".into()))?;
        doc.children
            .pop()
            .filter(|_| doc.children.is_empty())
            .ok_or_else(|| bad("the server's answer is not one XML document".into()))
    }

    fn child(&self, name: &str) -> Option<&Xml> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Xml> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Parses `data` as each kind of answer S3 sends and as AWS credentials/config text (for
/// the fuzz target: none of it may panic or grow without bound).
pub(crate) fn fuzz_answers(data: &[u8]) {
    if let Ok(x) = Xml::parse(data) {
        let _ = (x.text_of("UploadId"), x.all("Upload").count());
    }
    let _ = error_document(data);
    let _ = parse_ini(&String::from_utf8_lossy(data));
    let _ = Endpoint::parse(&String::from_utf8_lossy(data));
}

/// The `Code` and `Message` of an S3 `<Error>` document, if the body is one.
fn error_document(body: &[u8]) -> Option<(String, String)> {
    let x = Xml::parse(body).ok()?;
    (x.name == "Error").then(|| {
        (
            x.text_of("Code").unwrap_or("").to_string(),
            x.text_of("Message").unwrap_or("").to_string(),
        )
    })
}

/// An object in a bucket: the requests for it, signed with the configuration's credentials.
#[derive(Clone)]
pub(crate) struct S3Object {
    config: Arc<Config>,
    bucket: String,
    key: String,
    shown: String,
    transport: Arc<Transport>,
}

impl fmt::Debug for S3Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Object")
            .field("url", &self.shown)
            .field("config", &self.config)
            .finish()
    }
}

/// A request before it is signed.
struct Call<'a> {
    method: &'a str,
    /// `false`: the bucket itself (listings).
    on_key: bool,
    query: &'a [(&'a str, &'a str)],
    headers: &'a [(&'a str, String)],
    payload_hash: &'a str,
}

impl S3Object {
    /// The object `s3://bucket/key` under `config`.
    pub(crate) fn new(bucket: String, key: String, config: Arc<Config>) -> S3Object {
        S3Object {
            shown: format!("s3://{bucket}/{key}"),
            config,
            bucket,
            key,
            transport: Transport::shared(),
        }
    }

    /// The object an `s3://bucket/key` URL names, with the configuration of the environment
    /// (`endpoint` from `--endpoint`).
    pub(crate) fn open(url: &str, endpoint: Option<&str>) -> io::Result<S3Object> {
        let (bucket, key) = parse_url(url)?;
        Ok(S3Object::new(
            bucket,
            key,
            Arc::new(Config::from_env(endpoint)?),
        ))
    }

    /// Another object of the same bucket, `key` (the bmap beside an archive).
    pub(crate) fn sibling(&self, key: String) -> S3Object {
        S3Object::new(self.bucket.clone(), key, self.config.clone())
    }

    /// The object's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Virtual-host addressing only for names that can be a TLS host name label.
    fn virtual_host(&self) -> bool {
        self.config.endpoint.is_none()
            && self.bucket.len() >= 3
            && self.bucket.len() <= 63
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.bucket.starts_with('-')
            && !self.bucket.ends_with('-')
    }

    /// Scheme, Host header and encoded path of a request on the object (or its bucket).
    fn address(&self, on_key: bool) -> (String, String, String) {
        let key_path = if on_key {
            format!("/{}", uri_encode(&self.key, false))
        } else {
            String::new()
        };
        match &self.config.endpoint {
            Some(e) => (
                e.scheme.clone(),
                e.authority.clone(),
                format!("{}/{}{key_path}", e.prefix, uri_encode(&self.bucket, true)),
            ),
            None => {
                let region_host = format!("s3.{}.amazonaws.com", self.config.region);
                if self.virtual_host() {
                    let path = if on_key { key_path } else { "/".to_string() };
                    (
                        "https".into(),
                        format!("{}.{region_host}", self.bucket),
                        path,
                    )
                } else {
                    (
                        "https".into(),
                        region_host,
                        format!("/{}{key_path}", uri_encode(&self.bucket, true)),
                    )
                }
            }
        }
    }

    /// The request `call` describes, signed now (when there are credentials), carrying `body`.
    fn build(&self, call: &Call<'_>, body: Vec<u8>) -> io::Result<http::Request<Vec<u8>>> {
        let (scheme, host, path) = self.address(call.on_key);
        let query = canonical_query(call.query);
        // The URL carries the parameters in the same encoding as the signature covers; a
        // parameter without a value goes as `?uploads`, as the AWS tools send it.
        let url_query = {
            let mut q: Vec<(String, String)> = call
                .query
                .iter()
                .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
                .collect();
            q.sort();
            q.iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        };
        let url = if url_query.is_empty() {
            format!("{scheme}://{host}{path}")
        } else {
            format!("{scheme}://{host}{path}?{url_query}")
        };
        let mut signed: Vec<(String, String)> = vec![("host".into(), host)];
        for (k, v) in call.headers {
            signed.push((k.to_ascii_lowercase(), v.clone()));
        }
        let mut auth = None;
        if let Some(creds) = &self.config.credentials {
            let date = amz_date(SystemTime::now());
            signed.push(("x-amz-content-sha256".into(), call.payload_hash.to_string()));
            signed.push(("x-amz-date".into(), date.clone()));
            if let Some(t) = &creds.session_token {
                signed.push(("x-amz-security-token".into(), t.clone()));
            }
            auth = Some(authorization(
                creds,
                &date,
                &self.config.region,
                &Canonical {
                    method: call.method,
                    path: &path,
                    query: &query,
                    headers: &signed,
                    payload_hash: call.payload_hash,
                },
            ));
        }
        let mut b = http::Request::builder().method(call.method).uri(&url);
        for (k, v) in &signed {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if matches!(call.method, "PUT" | "POST") {
            b = b.header("content-length", body.len().to_string());
        }
        b.body(body).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: cannot make a request: {e}", self.shown),
            )
        })
    }

    /// Sends `call` with `body` (retried by the transport, re-signed each time; `stop` is
    /// asked before each attempt) and returns the answer if it is a success.
    fn call(
        &self,
        what: &str,
        call: &Call<'_>,
        body: &[u8],
        stop: &dyn Fn() -> bool,
    ) -> io::Result<http::Response<ureq::Body>> {
        let what = format!("{what} {}", self.shown);
        let mut resp = self.transport.send(&what, &mut || {
            if stop() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            }
            self.build(call, body.to_vec())
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(&what, &mut resp))
    }

    /// The error an unsuccessful answer stands for: the store's code and message, the
    /// object's name, never a signature or a key.
    fn error_of(&self, what: &str, resp: &mut http::Response<ureq::Body>) -> io::Error {
        let status = resp.status().as_u16();
        let region = resp
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_XML)
            .read_to_vec()
            .unwrap_or_default();
        let (code, message) = error_document(&body).unwrap_or_default();
        let region = region.or_else(|| {
            Xml::parse(&body)
                .ok()
                .and_then(|x| x.text_of("Region").map(str::to_string))
        });
        self.status_error(what, status, &code, &message, region.as_deref())
    }

    fn status_error(
        &self,
        what: &str,
        status: u16,
        code: &str,
        message: &str,
        region: Option<&str>,
    ) -> io::Error {
        let shown = &self.shown;
        let detail = {
            let mut m: String = message.chars().take(MAX_MESSAGE).collect();
            if m.len() < message.len() {
                m.push('…');
            }
            match (code.is_empty(), m.is_empty()) {
                (true, _) => format!("HTTP {status}"),
                (false, true) => format!("HTTP {status} {code}"),
                (false, false) => format!("HTTP {status} {code}: {m}"),
            }
        };
        let ours = &self.config.region;
        let wrong_region = matches!(status, 301 | 307)
            || code == "PermanentRedirect"
            || code == "AuthorizationHeaderMalformed"
            || (region.is_some_and(|r| r != ours) && status == 400);
        if wrong_region {
            let msg = match region.filter(|r| *r != ours) {
                Some(r) => format!(
                    "{shown}: the bucket is in region {r}, not {ours}: set AWS_REGION={r} \
                     ({what}: {detail})"
                ),
                None => format!(
                    "{shown}: the bucket is in another region than {ours}: set AWS_REGION to \
                     its region ({what}: {detail})"
                ),
            };
            return io::Error::other(msg);
        }
        match status {
            403 => {
                let why = match code {
                    "InvalidAccessKeyId" => format!(
                        "the access key ID from {} is not known to the server",
                        self.config.credentials_from
                    ),
                    "SignatureDoesNotMatch" => format!(
                        "the secret access key from {} does not match the key ID",
                        self.config.credentials_from
                    ),
                    "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => {
                        "the session token (AWS_SESSION_TOKEN) is expired or invalid".into()
                    }
                    "RequestTimeTooSkewed" => {
                        "this machine's clock is too far from the server's".into()
                    }
                    _ if self.config.credentials.is_none() => {
                        "no credentials were found, so the request was anonymous: set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                            .into()
                    }
                    _ => format!(
                        "the credentials from {} do not allow it",
                        self.config.credentials_from
                    ),
                };
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("access denied to {shown}: {why} ({what}: {detail})"),
                )
            }
            404 => {
                let msg = match code {
                    "NoSuchBucket" => format!("{shown}: no such bucket: {}", self.bucket),
                    "NoSuchUpload" => {
                        format!("{shown}: the multipart upload is gone ({what}: {detail})")
                    }
                    _ => format!("{shown}: no such object"),
                };
                io::Error::new(io::ErrorKind::NotFound, msg)
            }
            _ => io::Error::other(format!("{what}: {detail}")),
        }
    }

    /// Whether the object exists: a GET of its first byte. Not HEAD: a HEAD answer has no
    /// body, so its 403 cannot tell wrong keys from a missing permission, nor its 404 a
    /// missing bucket from a missing key.
    pub(crate) fn exists(&self) -> io::Result<bool> {
        let headers = [("range", "bytes=0-0".to_string())];
        let call = Call {
            method: "GET",
            on_key: true,
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_SHA256,
        };
        let what = format!("GET {}", self.shown);
        let mut resp = self
            .transport
            .send(&what, &mut || self.build(&call, Vec::new()))?;
        match resp.status().as_u16() {
            // 416: an empty object has no first byte, but it is there.
            200 | 206 | 416 => Ok(true),
            404 => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_XML)
                    .read_to_vec()
                    .unwrap_or_default();
                match error_document(&body) {
                    Some((code, message)) if code != "NoSuchKey" => {
                        Err(self.status_error(&what, 404, &code, &message, None))
                    }
                    _ => Ok(false),
                }
            }
            _ => Err(self.error_of(&what, &mut resp)),
        }
    }

    /// A single PUT of the whole object (small objects: the bmap).
    pub(crate) fn put(&self, body: &[u8], stop: &dyn Fn() -> bool) -> io::Result<()> {
        let hash = sha256_hex(body);
        let call = Call {
            method: "PUT",
            on_key: true,
            query: &[],
            headers: &[],
            payload_hash: &hash,
        };
        self.call("PUT", &call, body, stop)?;
        Ok(())
    }

    /// Starts a multipart upload (`POST ?uploads`) and returns its upload ID.
    pub(crate) fn create_multipart(&self) -> io::Result<String> {
        let call = Call {
            method: "POST",
            on_key: true,
            query: &[("uploads", "")],
            headers: &[],
            payload_hash: EMPTY_SHA256,
        };
        let what = "starting a multipart upload of";
        let mut resp = self.call(what, &call, &[], &|| false)?;
        let x = read_xml(&mut resp, what, &self.shown)?;
        x.text_of("UploadId")
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{what} {}: the answer holds no UploadId", self.shown),
                )
            })
    }

    /// Uploads part `number` of upload `id` and returns its ETag. `stop` is asked before
    /// every attempt (an aborted upload retries nothing).
    pub(crate) fn upload_part(
        &self,
        id: &str,
        number: u32,
        body: &[u8],
        stop: &dyn Fn() -> bool,
    ) -> io::Result<String> {
        let hash = sha256_hex(body);
        let n = number.to_string();
        let call = Call {
            method: "PUT",
            on_key: true,
            query: &[("partNumber", &n), ("uploadId", id)],
            headers: &[],
            payload_hash: &hash,
        };
        let what = format!("uploading part {number} of");
        let resp = self.call(&what, &call, body, stop)?;
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{what} {}: the answer has no ETag", self.shown),
                )
            })
    }

    /// Completes upload `id` from its parts (number, ETag) in order: the object appears.
    /// S3 may answer 200 and still fail (an `<Error>` body): that is an error here too.
    pub(crate) fn complete_multipart(&self, id: &str, parts: &[(u32, String)]) -> io::Result<()> {
        let mut xml = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = xml.into_bytes();
        let hash = sha256_hex(&body);
        let call = Call {
            method: "POST",
            on_key: true,
            query: &[("uploadId", id)],
            headers: &[("content-type", "application/xml".to_string())],
            payload_hash: &hash,
        };
        let what = "completing the multipart upload of";
        let mut resp = self
            .call(what, &call, &body, &|| false)
            .map_err(|e| match e.kind() {
                // A retry after an answer that was lost: the first attempt may have completed.
                io::ErrorKind::NotFound if e.to_string().contains("NoSuchUpload") => {
                    io::Error::other(format!(
                    "{e}: either an earlier attempt completed it and its answer was lost (then \
                     {} is there), or it was aborted meanwhile",
                        self.shown
                    ))
                }
                _ => e,
            })?;
        let x = read_xml(&mut resp, what, &self.shown)?;
        if x.name == "Error" {
            let code = x.text_of("Code").unwrap_or("");
            let message = x.text_of("Message").unwrap_or("");
            return Err(self.status_error(
                &format!("{what} {}", self.shown),
                200,
                code,
                message,
                None,
            ));
        }
        Ok(())
    }

    /// Aborts upload `id`: its parts are deleted. An upload already gone counts as aborted.
    pub(crate) fn abort_multipart(&self, id: &str) -> io::Result<()> {
        let call = Call {
            method: "DELETE",
            on_key: true,
            query: &[("uploadId", id)],
            headers: &[],
            payload_hash: EMPTY_SHA256,
        };
        match self.call("aborting the multipart upload of", &call, &[], &|| false) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IDs of the multipart uploads in progress for exactly this key.
    pub(crate) fn list_multipart_uploads(&self) -> io::Result<Vec<String>> {
        let what = "listing the multipart uploads of";
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        // A bound on the pages read: 100 pages of 1000 uploads of one key is already absurd.
        for _ in 0..100 {
            let mut query: Vec<(&str, &str)> = vec![("uploads", ""), ("prefix", &self.key)];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let call = Call {
                method: "GET",
                on_key: false,
                query: &query,
                headers: &[],
                payload_hash: EMPTY_SHA256,
            };
            let mut resp = self.call(what, &call, &[], &|| false)?;
            let x = read_xml(&mut resp, what, &self.shown)?;
            for u in x.all("Upload") {
                if u.text_of("Key") == Some(self.key.as_str()) {
                    if let Some(id) = u.text_of("UploadId") {
                        ids.push(id.to_string());
                    }
                }
            }
            if x.text_of("IsTruncated") != Some("true") {
                break;
            }
            let next_key = x.text_of("NextKeyMarker").unwrap_or("").to_string();
            let next_id = x.text_of("NextUploadIdMarker").unwrap_or("").to_string();
            if next_key.is_empty() || (next_key == key_marker && next_id == id_marker) {
                break;
            }
            (key_marker, id_marker) = (next_key, next_id);
        }
        Ok(ids)
    }
}

fn read_xml(resp: &mut http::Response<ureq::Body>, what: &str, shown: &str) -> io::Result<Xml> {
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_XML)
        .read_to_vec()
        .map_err(|e| io::Error::other(format!("{what} {shown}: reading the answer: {e}")))?;
    Xml::parse(&body).map_err(|e| io::Error::new(e.kind(), format!("{what} {shown}: {e}")))
}

impl Object for S3Object {
    fn shown(&self) -> &str {
        &self.shown
    }

    fn request(
        &self,
        method: &str,
        headers: &[(&str, String)],
    ) -> io::Result<http::Request<Vec<u8>>> {
        self.build(
            &Call {
                method,
                on_key: true,
                query: &[],
                headers,
                payload_hash: EMPTY_SHA256,
            },
            Vec::new(),
        )
    }

    fn follows_redirects(&self) -> bool {
        false
    }

    fn explain(&self, what: &str, resp: &mut http::Response<ureq::Body>) -> Option<io::Error> {
        Some(self.error_of(what, resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn creds() -> Credentials {
        Credentials {
            access_key_id: ID.into(),
            secret_access_key: SECRET.into(),
            session_token: None,
        }
    }

    fn headers(h: &[(&str, &str)]) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Checks the canonical request's hash and the whole Authorization header of one of the
    /// published examples ("Signature Calculations for the Authorization Header: Transferring
    /// Payload in a Single Chunk", Amazon S3 API reference).
    fn check(c: &Canonical<'_>, creq_hash: &str, signature: &str) {
        let date = "20130524T000000Z";
        let sts = string_to_sign(date, "20130524/us-east-1/s3/aws4_request", &c.request());
        assert_eq!(sts.lines().last().unwrap(), creq_hash, "{}", c.request());
        let auth = authorization(&creds(), date, "us-east-1", c);
        assert_eq!(
            auth,
            format!(
                "AWS4-HMAC-SHA256 Credential={ID}/20130524/us-east-1/s3/aws4_request,\
                 SignedHeaders={},Signature={signature}",
                c.signed_headers()
            )
        );
    }

    #[test]
    fn sigv4_get_object_example() {
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let c = Canonical {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &h,
            payload_hash: EMPTY_SHA256,
        };
        assert_eq!(
            c.signed_headers(),
            "host;range;x-amz-content-sha256;x-amz-date"
        );
        check(
            &c,
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        );
    }

    #[test]
    fn sigv4_put_object_example() {
        let body = b"Welcome to Amazon S3.";
        let hash = sha256_hex(body);
        assert_eq!(
            hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", &hash),
        ]);
        let path = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(path, "/test%24file.text");
        let c = Canonical {
            method: "PUT",
            path: &path,
            query: "",
            headers: &h,
            payload_hash: &hash,
        };
        check(
            &c,
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        );
    }

    #[test]
    fn sigv4_get_bucket_lifecycle_example() {
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ]);
        let q = canonical_query(&[("lifecycle", "")]);
        assert_eq!(q, "lifecycle=");
        let c = Canonical {
            method: "GET",
            path: "/",
            query: &q,
            headers: &h,
            payload_hash: EMPTY_SHA256,
        };
        check(
            &c,
            "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        );
    }

    #[test]
    fn sigv4_list_objects_example() {
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ]);
        // Given out of order: the canonical query sorts them.
        let q = canonical_query(&[("prefix", "J"), ("max-keys", "2")]);
        assert_eq!(q, "max-keys=2&prefix=J");
        let c = Canonical {
            method: "GET",
            path: "/",
            query: &q,
            headers: &h,
            payload_hash: EMPTY_SHA256,
        };
        check(
            &c,
            "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
    }

    #[test]
    fn the_signing_key_of_the_sigv4_documentation() {
        // "Examples of how to derive a signing key for Signature Version 4" (AWS General
        // Reference): secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam.
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn encoding_follows_s3_rules() {
        assert_eq!(uri_encode("a b+c/d~e_f.g-h", false), "a%20b%2Bc/d~e_f.g-h");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode("é", false), "%C3%A9");
        assert_eq!(
            canonical_query(&[("uploadId", "x/y="), ("partNumber", "3")]),
            "partNumber=3&uploadId=x%2Fy%3D"
        );
    }

    #[test]
    fn dates_are_utc_civil() {
        let at = |s: u64| amz_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_369_353_600), "20130524T000000Z");
        assert_eq!(at(951_782_400 + 3661), "20000229T010101Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials {
            session_token: Some("TOKEN-VALUE".into()),
            ..creds()
        };
        let d = format!("{c:?}");
        assert!(d.contains(ID), "{d}");
        assert!(!d.contains(SECRET) && !d.contains("TOKEN-VALUE"), "{d}");
        let cfg = Config {
            credentials: Some(c),
            region: "eu-west-1".into(),
            endpoint: None,
            credentials_from: "test".into(),
        };
        let o = S3Object::new("b".into(), "k".into(), Arc::new(cfg));
        let d = format!("{o:?}");
        assert!(!d.contains(SECRET) && !d.contains("TOKEN-VALUE"), "{d}");
    }

    #[test]
    fn ini_files_parse_as_the_aws_tools_read_them() {
        let text = "\
; comment
stray = ignored
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key=se#cret
region = eu-central-1 # inline comment

[profile  work ]
Region = us-west-2
s3 =
  region = not-this-one
  addressing_style = path
output = json
[broken
";
        let s = parse_ini(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].name, "default");
        assert_eq!(s[0].get("aws_access_key_id"), Some("AKIADEFAULT"));
        assert_eq!(s[0].get("aws_secret_access_key"), Some("se#cret"));
        assert_eq!(s[0].get("region"), Some("eu-central-1"));
        assert_eq!(s[1].name, "profile work");
        assert_eq!(s[1].get("region"), Some("us-west-2"));
        assert_eq!(s[1].get("s3"), Some(""));
        assert_eq!(s[1].get("output"), Some("json"));
        assert_eq!(s[1].get("addressing_style"), None);
    }

    /// A temporary HOME with `.aws/credentials` and `.aws/config`.
    fn aws_home(credentials: &str, config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".aws")).unwrap();
        std::fs::write(d.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(d.path().join(".aws/config"), config).unwrap();
        d
    }

    fn resolve(env: &[(&str, &str)], endpoint: Option<&str>) -> io::Result<Config> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(endpoint, &|n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_credential_chain() {
        let home = aws_home(
            "[default]\naws_access_key_id=FILEID\naws_secret_access_key=FILESECRET\n\
             [work]\naws_access_key_id=WORKID\naws_secret_access_key=WORKSECRET\n\
             aws_session_token=WORKTOKEN\n",
            "[default]\nregion=eu-west-3\n[profile work]\nregion=ap-south-1\n\
             [profile sso]\nsso_session=corp\n",
        );
        let h = home.path().to_str().unwrap();

        // The environment first.
        let c = resolve(
            &[
                ("HOME", h),
                ("AWS_ACCESS_KEY_ID", "ENVID"),
                ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
                ("AWS_REGION", "us-west-1"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.credentials.as_ref().unwrap().access_key_id, "ENVID");
        assert_eq!(c.region, "us-west-1");
        assert!(c.endpoint.is_none());

        // Then the default profile, its region from the config file.
        let c = resolve(&[("HOME", h)], None).unwrap();
        assert_eq!(c.credentials.as_ref().unwrap().access_key_id, "FILEID");
        assert_eq!(c.region, "eu-west-3");

        // A named profile: `[work]` in credentials, `[profile work]` in config.
        let c = resolve(&[("HOME", h), ("AWS_PROFILE", "work")], None).unwrap();
        let k = c.credentials.as_ref().unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token.as_deref()),
            ("WORKID", Some("WORKTOKEN"))
        );
        assert_eq!(c.region, "ap-south-1");
        let c = resolve(
            &[
                ("HOME", h),
                ("AWS_PROFILE", "work"),
                ("AWS_DEFAULT_REGION", "sa-east-1"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.region, "sa-east-1");

        // A profile that does not exist, one whose keys come another way, half a key pair.
        let e = resolve(&[("HOME", h), ("AWS_PROFILE", "nope")], None).unwrap_err();
        assert!(e.to_string().contains("no such profile"), "{e}");
        let e = resolve(&[("HOME", h), ("AWS_PROFILE", "sso")], None).unwrap_err();
        assert!(e.to_string().contains("sso_session"), "{e}");
        let e = resolve(&[("HOME", h), ("AWS_ACCESS_KEY_ID", "X")], None).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");

        // Files named by the environment.
        let other = home.path().join("other");
        std::fs::write(
            &other,
            "[default]\naws_access_key_id=OTHERID\naws_secret_access_key=S\n",
        )
        .unwrap();
        let c = resolve(
            &[
                ("HOME", h),
                ("AWS_SHARED_CREDENTIALS_FILE", other.to_str().unwrap()),
                ("AWS_CONFIG_FILE", "~/missing"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.credentials.as_ref().unwrap().access_key_id, "OTHERID");
        assert_eq!(c.region, "us-east-1");

        // Nothing anywhere: anonymous, us-east-1.
        let empty = tempfile::tempdir().unwrap();
        let c = resolve(&[("HOME", empty.path().to_str().unwrap())], None).unwrap();
        assert!(c.credentials.is_none());
        assert_eq!(c.region, "us-east-1");
    }

    #[test]
    fn endpoints_and_addressing() {
        let empty = tempfile::tempdir().unwrap();
        let h = empty.path().to_str().unwrap();
        let c = resolve(
            &[
                ("HOME", h),
                ("AWS_ENDPOINT_URL", "http://other:1"),
                ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000/"),
            ],
            None,
        )
        .unwrap();
        let e = c.endpoint.clone().unwrap();
        assert_eq!(
            (e.scheme.as_str(), e.authority.as_str()),
            ("http", "127.0.0.1:9000")
        );
        let o = S3Object::new("my.bucket".into(), "dir/a b.img".into(), Arc::new(c));
        assert_eq!(
            o.address(true),
            (
                "http".to_string(),
                "127.0.0.1:9000".to_string(),
                "/my.bucket/dir/a%20b.img".to_string()
            )
        );
        assert_eq!(o.address(false).2, "/my.bucket");
        // The option wins over the environment.
        let c = resolve(
            &[("HOME", h), ("AWS_ENDPOINT_URL", "http://other:1")],
            Some("https://minio.example/s3"),
        )
        .unwrap();
        let o = S3Object::new("b".into(), "k".into(), Arc::new(c));
        assert_eq!(o.address(true).1, "minio.example");
        assert_eq!(o.address(true).2, "/s3/b/k");

        // AWS: virtual-host style, path style for names that cannot be a host name.
        let c = Arc::new(resolve(&[("HOME", h), ("AWS_REGION", "eu-west-1")], None).unwrap());
        let o = S3Object::new("cards".into(), "pi/2026.img.zst".into(), c.clone());
        assert_eq!(
            o.address(true),
            (
                "https".to_string(),
                "cards.s3.eu-west-1.amazonaws.com".to_string(),
                "/pi/2026.img.zst".to_string()
            )
        );
        assert_eq!(o.address(false).2, "/");
        let o = S3Object::new("my.cards".into(), "k".into(), c);
        assert_eq!(o.address(true).1, "s3.eu-west-1.amazonaws.com");
        assert_eq!(o.address(true).2, "/my.cards/k");

        for bad in [
            "ftp://x",
            "http://user:pw@host",
            "http://h/?a=b",
            "nonsense",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_url("s3://bucket/dir/key.img.zst").unwrap(),
            ("bucket".to_string(), "dir/key.img.zst".to_string())
        );
        assert_eq!(parse_url("S3://b/k?x#y").unwrap().1, "k?x#y");
        for bad in [
            "s3://",
            "s3://bucket",
            "s3://bucket/",
            "s3:///key",
            "http://b/k",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_requests_carry_what_the_signature_covers() {
        let cfg = Config {
            credentials: Some(Credentials {
                session_token: Some("TOK".into()),
                ..creds()
            }),
            region: "us-east-1".into(),
            endpoint: Some(Endpoint::parse("http://127.0.0.1:9000").unwrap()),
            credentials_from: "test".into(),
        };
        let o = S3Object::new("b".into(), "k".into(), Arc::new(cfg));
        let r = o
            .build(
                &Call {
                    method: "POST",
                    on_key: true,
                    query: &[("uploads", "")],
                    headers: &[],
                    payload_hash: EMPTY_SHA256,
                },
                Vec::new(),
            )
            .unwrap();
        assert_eq!(r.uri().to_string(), "http://127.0.0.1:9000/b/k?uploads");
        let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("host"), "127.0.0.1:9000");
        assert_eq!(h("x-amz-security-token"), "TOK");
        assert_eq!(h("content-length"), "0");
        let auth = h("authorization");
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        assert!(!auth.contains(SECRET));

        let r = o
            .request(
                "GET",
                &[("range", "bytes=0-9".into()), ("if-match", "\"e\"".into())],
            )
            .unwrap();
        let auth = r.headers().get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=host;if-match;range;x-amz-content-sha256;x-amz-date;"),
            "{auth}"
        );

        // Anonymous: nothing signed, nothing added.
        let anon = Config {
            credentials: None,
            region: "us-east-1".into(),
            endpoint: None,
            credentials_from: "nowhere".into(),
        };
        let o = S3Object::new("public-images".into(), "x.img".into(), Arc::new(anon));
        let r = o.request("GET", &[]).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "https://public-images.s3.us-east-1.amazonaws.com/x.img"
        );
        assert!(r.headers().get("authorization").is_none());
        assert!(r.headers().get("x-amz-date").is_none());
    }

    #[test]
    fn errors_name_the_object_and_the_region() {
        let cfg = Config {
            credentials: Some(creds()),
            region: "us-east-1".into(),
            endpoint: None,
            credentials_from: "the environment (AWS_ACCESS_KEY_ID)".into(),
        };
        let o = S3Object::new("b".into(), "k.img".into(), Arc::new(cfg));
        let e = o.status_error(
            "GET s3://b/k.img",
            301,
            "PermanentRedirect",
            "",
            Some("eu-west-1"),
        );
        assert!(e.to_string().contains("region eu-west-1"), "{e}");
        assert!(e.to_string().contains("AWS_REGION=eu-west-1"), "{e}");
        let e = o.status_error("HEAD s3://b/k.img", 403, "SignatureDoesNotMatch", "x", None);
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            e.to_string().contains("access denied to s3://b/k.img"),
            "{e}"
        );
        assert!(e.to_string().contains("secret access key"), "{e}");
        assert!(!e.to_string().contains(SECRET));
        let e = o.status_error("GET s3://b/k.img", 404, "NoSuchKey", "", None);
        assert_eq!(e.to_string(), "s3://b/k.img: no such object");
        let e = o.status_error("GET s3://b/k.img", 404, "NoSuchBucket", "", None);
        assert!(e.to_string().contains("no such bucket: b"), "{e}");
    }

    #[test]
    fn xml_answers() {
        let x = Xml::parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><IsTruncated>false</IsTruncated>
  <Upload><Key>a&amp;b</Key><UploadId>id1</UploadId></Upload>
  <Upload><Key>other</Key><UploadId>id2</UploadId><Owner/></Upload>
</ListMultipartUploadsResult>"#,
        )
        .unwrap();
        assert_eq!(x.name, "ListMultipartUploadsResult");
        let keys: Vec<_> = x.all("Upload").filter_map(|u| u.text_of("Key")).collect();
        assert_eq!(keys, ["a&b", "other"]);
        let e = error_document(
            b"<Error><Code>InternalError</Code><Message>try again</Message></Error>",
        );
        assert_eq!(e, Some(("InternalError".into(), "try again".into())));
        assert!(Xml::parse(b"<a><b></a>").is_err());
        assert!(Xml::parse(b"").is_err());
        assert!(Xml::parse(b"<a/><b/>").is_err());
    }
}
