//! `http://` and `https://` sources: one file, downloaded by the daemon, as the only entry
//! of a new snapshot.
//!
//! - Cache key: the op digest plus what was downloaded. With a pinned `http.checksum` the
//!   key is known without touching the network (the checksum is the content), and the
//!   file is only downloaded when the cache misses. Otherwise `cache_map` downloads the
//!   file (into the worker's tmp dir, hashing it on the way) and keys by its sha256, the
//!   file name it will get and its `Last-Modified`: unchanged content hits the cache,
//!   changed content runs again. The download is kept by the op for its `exec`, so a
//!   miss does not fetch the file twice; a hit drops it with the graph.
//! - The file: named by `http.filename`, else the response's `Content-Disposition`, else
//!   the last segment of the URL path, else `download` (upstream's choices); mode
//!   `http.perm` (0600 by default), owner `http.uid`/`http.gid`, and the modification
//!   time from `Last-Modified` (the epoch without it, so that equal content gives equal
//!   snapshots).
//! - Authorization comes from session secrets as upstream takes it: `http.authheadersecret`
//!   names a required one, otherwise `HTTP_AUTH_HEADER_<host>` and `HTTP_AUTH_TOKEN_<host>`
//!   are used when the client has them. Secrets never enter the key.

use std::collections::BTreeMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use oci::Digest;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::BuildSession;
use crate::mounted::Active;
use crate::{OpsContext, Ref};

/// A server that does not answer the connection in this long is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A transfer that stalls this long fails instead of holding the build forever. There is
/// no limit on the whole transfer: files can be large and links slow.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running download reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Request headers an LLB may set, as upstream: any other could override what the daemon
/// sends itself (`Authorization`, `Host`, ...).
const USER_HEADERS: [&str; 2] = ["accept", "user-agent"];
/// The name of a file whose name nothing gives (upstream's).
const DEFAULT_FILENAME: &str = "download";

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("http source {url}: attribute {key}={value:?}: {reason}")]
    Attr {
        url: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("http source {0:?}: not an http:// or https:// URL")]
    Url(String),
    #[error("http source {url}: {attr} is not supported yet")]
    Unsupported { url: String, attr: String },
    #[error("http source {url}: auth header secret {name}: {reason}")]
    Secret {
        url: String,
        name: String,
        reason: String,
    },
    #[error("http client: {0}")]
    Client(String),
    #[error("http GET {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("http GET {url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("http GET {url}: cancelled")]
    Cancelled { url: String },
    #[error("digest mismatch for {url}: got {actual} (expected {expected})")]
    Checksum {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("http source {url}: {what}: {source}")]
    Io {
        url: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A parsed http source: the identifier (the URL) and its `http.*` attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpSource {
    /// What is requested.
    url: reqwest::Url,
    /// The URL as messages show it: a password in it is masked.
    shown: String,
    checksum: Option<Digest>,
    filename: Option<String>,
    perm: u32,
    uid: u32,
    gid: u32,
    auth_header_secret: Option<String>,
    /// Allowed user headers (lower-case names), sorted.
    headers: Vec<(String, String)>,
}

/// A file downloaded into the worker's tmp dir (removed when this is dropped).
#[derive(Debug)]
pub(crate) struct Download {
    path: tempfile::TempPath,
    digest: Digest,
    size: u64,
    filename: String,
    /// The `Last-Modified` header as sent (part of the key) and as a time.
    last_modified: Option<(String, SystemTime)>,
    /// The response's `ETag`, to ask next time whether the content changed.
    etag: Option<String>,
}

/// What a response with an `ETag` was: next time the server is asked whether it still
/// has that version (`If-None-Match`), and if it does the key is made from this record
/// without downloading. Kept in the metadata DB per op digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Validator {
    etag: String,
    digest: Digest,
    filename: String,
    last_modified: Option<String>,
}

/// The metadata table of op digest → [`Validator`].
const VALIDATORS: &str = "ops.http-etags";

impl Validator {
    fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "etag": self.etag,
            "digest": self.digest.to_string(),
            "filename": self.filename,
            "last_modified": self.last_modified,
        })
        .to_string()
        .into_bytes()
    }

    /// `None` for a value this code did not write.
    fn decode(bytes: &[u8]) -> Option<Validator> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Validator {
            etag: v.get("etag")?.as_str()?.to_string(),
            digest: v.get("digest")?.as_str()?.parse().ok()?,
            filename: v.get("filename")?.as_str()?.to_string(),
            last_modified: match v.get("last_modified")? {
                serde_json::Value::Null => None,
                x => Some(x.as_str()?.to_string()),
            },
        })
    }

    pub(crate) fn etag(&self) -> &str {
        &self.etag
    }

    pub(crate) fn digest(&self) -> Digest {
        self.digest
    }

    pub(crate) fn key_material(&self) -> serde_json::Value {
        key_material(self.digest, &self.filename, self.last_modified.as_deref())
    }

    /// The record of op `op` (a bad or unreadable one counts as none). Blocking.
    pub(crate) fn load(md: &dyn metadata::MetadataStore, op: &Digest) -> Option<Validator> {
        match md.get(VALIDATORS, op.hex().as_bytes()) {
            Ok(v) => v.and_then(|v| Validator::decode(&v)),
            Err(e) => {
                tracing::warn!(error = %e, "reading an http validator failed");
                None
            }
        }
    }

    /// Drops the record of op `op`: the server's `ETag` no longer stands for the content
    /// recorded. Blocking.
    pub(crate) fn forget(md: &dyn metadata::MetadataStore, op: &Digest) {
        if let Err(e) = md.delete(VALIDATORS, op.hex().as_bytes()) {
            tracing::warn!(error = %e, "removing an http validator failed");
        }
    }

    /// Records this for op `op`; failing only costs a download next time. Blocking.
    pub(crate) fn save(&self, md: &dyn metadata::MetadataStore, op: &Digest) {
        if let Err(e) = md.put(VALIDATORS, op.hex().as_bytes(), &self.encode()) {
            tracing::warn!(error = %e, "saving an http validator failed");
        }
    }
}

/// What of a response, besides the op, decides the result: its content, the name the
/// file gets and its modification time.
fn key_material(digest: Digest, filename: &str, last_modified: Option<&str>) -> serde_json::Value {
    serde_json::json!([digest.to_string(), filename, last_modified])
}

/// An integer as Go's `strconv.ParseInt(v, 0, 64)` reads attribute values: `0x`, `0o`,
/// `0b` prefixes, and a leading `0` for octal (the builder writes perms as `0644`).
fn parse_int(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, radix) = if let Some(r) = v.strip_prefix("0x").or(v.strip_prefix("0X")) {
        (r, 16)
    } else if let Some(r) = v.strip_prefix("0o").or(v.strip_prefix("0O")) {
        (r, 8)
    } else if let Some(r) = v.strip_prefix("0b").or(v.strip_prefix("0B")) {
        (r, 2)
    } else if v.len() > 1 && v.starts_with('0') {
        (&v[1..], 8)
    } else {
        (v, 10)
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// The URL with a password masked, for messages.
fn shown_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        // Cannot fail: the URL has a host, since it has a password.
        let _ = u.set_password(Some("xxxxx"));
    }
    u.to_string()
}

impl HttpSource {
    /// Parses an `http(s)://` identifier and its attributes.
    pub(crate) fn parse(
        identifier: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<HttpSource, HttpError> {
        if !(identifier.starts_with("http://") || identifier.starts_with("https://")) {
            return Err(HttpError::Url(identifier.to_string()));
        }
        let url = reqwest::Url::parse(identifier)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
            .ok_or_else(|| HttpError::Url(identifier.to_string()))?;
        let shown = shown_url(&url);
        let mut src = HttpSource {
            url,
            shown,
            checksum: None,
            filename: None,
            perm: 0,
            uid: 0,
            gid: 0,
            auth_header_secret: None,
            headers: Vec::new(),
        };
        for (k, v) in attrs {
            let bad = |reason: &str| HttpError::Attr {
                url: src.shown.clone(),
                key: k.clone(),
                value: v.clone(),
                reason: reason.to_string(),
            };
            let id = |max: u64| parse_int(v).filter(|n| *n <= max).map(|n| n as u32);
            match k.as_str() {
                "http.checksum" => {
                    src.checksum = Some(v.parse().map_err(|e: oci::DigestError| bad(e.reason))?)
                }
                "http.filename" => src.filename = Some(v.clone()).filter(|f| !f.is_empty()),
                "http.perm" => src.perm = id(0o7777).ok_or_else(|| bad("not a file mode"))?,
                "http.uid" => src.uid = id(u32::MAX.into()).ok_or_else(|| bad("not a uid"))?,
                "http.gid" => src.gid = id(u32::MAX.into()).ok_or_else(|| bad("not a gid"))?,
                "http.authheadersecret" => {
                    src.auth_header_secret = Some(v.clone()).filter(|s| !s.is_empty())
                }
                // Ignoring a signature check would be worse than refusing the build.
                "http.sig.pubkey" | "http.sig.signature" => {
                    return Err(HttpError::Unsupported {
                        url: src.shown.clone(),
                        attr: k.clone(),
                    });
                }
                _ => {
                    if let Some(name) = k.strip_prefix("http.header.") {
                        let name = name.to_ascii_lowercase();
                        // Others are dropped silently, as upstream does.
                        if USER_HEADERS.contains(&name.as_str()) {
                            src.headers.push((name, v.clone()));
                        }
                    }
                }
            }
        }
        src.headers.sort();
        Ok(src)
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    pub(crate) fn checksum(&self) -> Option<Digest> {
        self.checksum
    }

    /// The file name when nothing from a response is known (a pinned checksum's key).
    pub(crate) fn static_filename(&self) -> String {
        file_name(&self.url, self.filename.as_deref(), None)
    }

    /// The request headers: the daemon's, the LLB's allowed ones, and authorization from
    /// the session's secrets.
    async fn headers(&self, session: Option<&dyn BuildSession>) -> Result<HeaderMap, HttpError> {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("buildkit-rs/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &self.headers {
            let bad = |reason: String| HttpError::Attr {
                url: self.shown.clone(),
                key: format!("http.header.{name}"),
                value: value.clone(),
                reason,
            };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let v = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            h.insert(n, v);
        }
        if let Some(auth) = self.authorization(session).await? {
            h.insert(header::AUTHORIZATION, auth);
        }
        Ok(h)
    }

    async fn authorization(
        &self,
        session: Option<&dyn BuildSession>,
    ) -> Result<Option<HeaderValue>, HttpError> {
        let secret_err = |name: &str, reason: String| HttpError::Secret {
            url: self.shown.clone(),
            name: name.to_string(),
            reason,
        };
        let value = |name: &str, raw: Vec<u8>| {
            let mut v = HeaderValue::from_bytes(&raw)
                .map_err(|_| secret_err(name, "not a valid header value".into()))?;
            v.set_sensitive(true);
            Ok::<_, HttpError>(v)
        };
        if let Some(name) = &self.auth_header_secret {
            // Named explicitly: the build asked for it, so not having it is an error.
            let session = session
                .ok_or_else(|| secret_err(name, "the build has no client session".into()))?;
            return match session.secret(name).await {
                Ok(Some(raw)) => value(name, raw).map(Some),
                Ok(None) => Err(secret_err(name, "not found".into())),
                Err(e) => Err(secret_err(name, e)),
            };
        }
        let (Some(session), Some(host)) = (session, self.url.host_str()) else {
            return Ok(None);
        };
        // Implicit per-host secrets, as upstream: best effort, a token wins over a header.
        let mut auth = None;
        for (name, bearer) in [
            (format!("HTTP_AUTH_HEADER_{host}"), false),
            (format!("HTTP_AUTH_TOKEN_{host}"), true),
        ] {
            match session.secret(&name).await {
                Ok(Some(mut raw)) => {
                    if bearer {
                        raw.splice(0..0, b"Bearer ".iter().copied());
                    }
                    auth = Some(value(&name, raw)?);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(secret = name, error = e, "no http auth secret"),
            }
        }
        Ok(auth)
    }

    /// Downloads the file into `tmp_dir`, hashing it. Reports progress on `ctx`'s vertex.
    /// With `if_none_match`, `None` means the server still has that version (304).
    pub(crate) async fn download(
        &self,
        session: Option<&dyn BuildSession>,
        tmp_dir: &Path,
        ctx: &solver::OpContext,
        if_none_match: Option<&str>,
    ) -> Result<Option<Download>, HttpError> {
        let url = &self.shown;
        let req_err = |e: reqwest::Error| HttpError::Request {
            url: url.clone(),
            reason: error_chain(&e.without_url()),
        };
        let cancelled = || HttpError::Cancelled { url: url.clone() };
        let mut headers = self.headers(session).await?;
        if let Some(etag) = if_none_match
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        let client = client()?;
        let started = SystemTime::now();
        tracing::debug!(url, "downloading");
        let send = client.get(self.url.clone()).headers(headers).send();
        let mut resp = with_cancel(&ctx.cancel, send)
            .await
            .ok_or_else(cancelled)?
            .map_err(req_err)?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED && if_none_match.is_some() {
            tracing::debug!(url, "not modified");
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(HttpError::Status {
                url: url.clone(),
                status: resp.status(),
            });
        }
        let filename = file_name(
            &self.url,
            self.filename.as_deref(),
            resp.headers()
                .get(header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok()),
        );
        let last_modified = resp
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| Some((s.to_string(), httpdate::parse_http_date(s).ok()?)));
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let total = resp.content_length();

        let io = |what: &str| {
            let url = url.clone();
            let what = what.to_string();
            move |source| HttpError::Io { url, what, source }
        };
        std::fs::create_dir_all(tmp_dir).map_err(io("creating the tmp dir"))?;
        let (file, path) = tempfile::Builder::new()
            .prefix("http-")
            .tempfile_in(tmp_dir)
            .map_err(io("creating a temporary file"))?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let report = |size: u64, done: bool| {
            let current = i64::try_from(size).unwrap_or(i64::MAX);
            let total = total.map_or(current, |t| i64::try_from(t).unwrap_or(i64::MAX));
            ctx.progress.status(
                &ctx.vertex,
                &format!("downloading {url}"),
                &format!("downloading {url}"),
                current,
                total,
                started,
                done.then(SystemTime::now),
            );
        };
        let mut reported = std::time::Instant::now();
        report(0, false);
        while let Some(chunk) = with_cancel(&ctx.cancel, resp.chunk())
            .await
            .ok_or_else(cancelled)?
            .map_err(req_err)?
        {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(io("writing the download"))?;
            if reported.elapsed() >= PROGRESS_EVERY {
                report(size, false);
                reported = std::time::Instant::now();
            }
        }
        file.flush().await.map_err(io("writing the download"))?;
        report(size, true);
        let digest = Digest::from_bytes(hasher.finalize().into());
        tracing::debug!(url, %digest, size, "downloaded");
        Ok(Some(Download {
            path,
            digest,
            size,
            filename,
            last_modified,
            etag,
        }))
    }
}

impl Download {
    pub(crate) fn digest(&self) -> Digest {
        self.digest
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn key_material(&self) -> serde_json::Value {
        key_material(
            self.digest,
            &self.filename,
            self.last_modified.as_ref().map(|(s, _)| s.as_str()),
        )
    }

    /// The record to revalidate this download with, if the server gave an `ETag`.
    pub(crate) fn validator(&self) -> Option<Validator> {
        Some(Validator {
            etag: self.etag.clone()?,
            digest: self.digest,
            filename: self.filename.clone(),
            last_modified: self.last_modified.as_ref().map(|(s, _)| s.clone()),
        })
    }
}

/// Fails when what was downloaded is not the `expected` content (a pinned checksum, or
/// what the key was made from).
pub(crate) fn verify(
    src: &HttpSource,
    expected: Option<Digest>,
    dl: &Download,
) -> Result<(), HttpError> {
    match expected {
        Some(expected) if expected != dl.digest => Err(HttpError::Checksum {
            url: src.shown.clone(),
            expected,
            actual: dl.digest,
        }),
        _ => Ok(()),
    }
}

/// Makes the snapshot holding the downloaded file. Blocking.
pub(crate) fn write_snapshot(
    ops: &OpsContext,
    src: &HttpSource,
    dl: &Download,
) -> Result<Ref, solver::OpError> {
    let io = |what: &str| {
        let url = src.shown.clone();
        let what = what.to_string();
        move |source| crate::op_err(HttpError::Io { url, what, source })
    };
    let active = Active::prepare(ops, &Ref::scratch())?;
    {
        let m = active.mount(ops)?;
        // `file_name` never returns a name with a separator, `.` or `..`.
        let dest = m.path().join(&dl.filename);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io("creating the file"))?;
        let mut input = File::open(&dl.path).map_err(io("reading the download"))?;
        std::io::copy(&mut input, &mut out).map_err(io("copying the download"))?;
        if src.uid != 0 || src.gid != 0 {
            std::os::unix::fs::fchown(&out, Some(src.uid), Some(src.gid))
                .map_err(io("changing the owner"))?;
        }
        // After the chown, which clears set-id bits; and exactly the mode asked for,
        // whatever the daemon's umask.
        let perm = if src.perm == 0 { 0o600 } else { src.perm };
        out.set_permissions(std::fs::Permissions::from_mode(perm))
            .map_err(io("setting the mode"))?;
        let mtime = dl
            .last_modified
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |(_, t)| *t);
        out.set_times(FileTimes::new().set_accessed(mtime).set_modified(mtime))
            .map_err(io("setting the times"))?;
    }
    active.commit(&format!("http url {}", src.shown))
}

/// The process's HTTP client: connection pools and TLS roots are shared by every source.
fn client() -> Result<&'static reqwest::Client, HttpError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .build()
                .map_err(|e| error_chain(&e))
        })
        .as_ref()
        .map_err(|e| HttpError::Client(e.clone()))
}

/// `fut`, or `None` once `cancel` fires.
async fn with_cancel<T>(cancel: &CancellationToken, fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        r = fut => Some(r),
        _ = cancel.cancelled() => None,
    }
}

/// An error and its causes, `a: b: c`, skipping causes already in the message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// A name safe to create in the snapshot root: the last path element of `s`, or
/// `download` for nothing, `.`, `..` or a name with control characters (upstream's rule).
fn safe_file_name(s: &str) -> String {
    let base = s
        .trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if base.is_empty() || base == "." || base == ".." || base.chars().any(char::is_control) {
        return DEFAULT_FILENAME.to_string();
    }
    base.to_string()
}

/// The file's name: the attribute, else `Content-Disposition`'s, else the URL's last path
/// segment, else `download`.
fn file_name(url: &reqwest::Url, manual: Option<&str>, disposition: Option<&str>) -> String {
    if let Some(m) = manual.filter(|m| !m.is_empty()) {
        return safe_file_name(m);
    }
    if let Some(name) = disposition.and_then(disposition_filename)
        && !name.ends_with('/')
    {
        return safe_file_name(&name);
    }
    let path = url.path().trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    safe_file_name(&decoded)
}

/// The `filename` parameter of a `Content-Disposition` value; `filename*` (RFC 5987,
/// UTF-8 only) wins over it as in Go's `mime.ParseMediaType`.
fn disposition_filename(v: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for (name, value) in disposition_params(v) {
        if name.eq_ignore_ascii_case("filename") {
            plain = Some(value);
        } else if name.eq_ignore_ascii_case("filename*") {
            let (charset, rest) = value.split_once('\'')?;
            let (_lang, encoded) = rest.split_once('\'')?;
            if charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii") {
                extended = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned());
            }
        }
    }
    extended.or(plain).filter(|s| !s.is_empty())
}

/// `(name, value)` parameters after the disposition type; quoted values unescaped.
fn disposition_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    // Skip the type.
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.peek().is_none() && name.is_empty() {
            break;
        }
        let name = name.trim().to_string();
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                }
            } else {
                for c in chars.by_ref() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                }
                value = value.trim().to_string();
            }
        }
        if !name.is_empty() {
            out.push((name, value));
        }
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_attributes() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let src = HttpSource::parse(
            "https://user:pw@example.com/a/b.tar.gz?x=1",
            &attrs(&[
                ("http.checksum", &digest),
                ("http.filename", "out.bin"),
                ("http.perm", "0755"),
                ("http.uid", "1000"),
                ("http.gid", "0x10"),
                ("http.header.Accept", "application/json"),
                ("http.header.X-Other", "dropped"),
                ("http.header.user-agent", "me"),
            ]),
        )
        .unwrap();
        assert_eq!(src.checksum.unwrap().to_string(), digest);
        assert_eq!(src.filename.as_deref(), Some("out.bin"));
        assert_eq!((src.perm, src.uid, src.gid), (0o755, 1000, 16));
        assert_eq!(
            src.headers,
            [
                ("accept".to_string(), "application/json".to_string()),
                ("user-agent".to_string(), "me".to_string())
            ]
        );
        assert_eq!(src.shown(), "https://user:xxxxx@example.com/a/b.tar.gz?x=1");
    }

    #[test]
    fn rejects_bad_input() {
        for (id, kv) in [
            ("ftp://example.com/x", vec![]),
            ("https://", vec![]),
            ("https://example.com/x", vec![("http.perm", "0999")]),
            ("https://example.com/x", vec![("http.perm", "-1")]),
            ("https://example.com/x", vec![("http.perm", "0o20000")]),
            ("https://example.com/x", vec![("http.uid", "4294967296")]),
            (
                "https://example.com/x",
                vec![("http.checksum", "sha512:00")],
            ),
            ("https://example.com/x", vec![("http.sig.pubkey", "k")]),
        ] {
            assert!(HttpSource::parse(id, &attrs(&kv)).is_err(), "{id} {kv:?}");
        }
    }

    #[test]
    fn validators_round_trip() {
        let v = Validator {
            etag: "W/\"x\"".into(),
            digest: Digest::of(b"x"),
            filename: "f".into(),
            last_modified: None,
        };
        assert_eq!(Validator::decode(&v.encode()), Some(v.clone()));
        let v = Validator {
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            ..v
        };
        assert_eq!(Validator::decode(&v.encode()), Some(v));
        assert_eq!(Validator::decode(b"{}"), None);
    }

    #[test]
    fn ints_like_go() {
        assert_eq!(parse_int("0644"), Some(0o644));
        assert_eq!(parse_int("420"), Some(420));
        assert_eq!(parse_int("0o755"), Some(0o755));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("12a"), None);
    }

    #[test]
    fn file_names() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let f = |url: &str, manual: Option<&str>, cd: Option<&str>| file_name(&u(url), manual, cd);
        assert_eq!(f("http://h/dir/file.txt?q=1", None, None), "file.txt");
        assert_eq!(f("http://h/dir/", None, None), "dir");
        assert_eq!(f("http://h/", None, None), "download");
        assert_eq!(f("http://h", None, None), "download");
        assert_eq!(f("http://h/a%20b", None, None), "a b");
        assert_eq!(f("http://h/x", Some("../../etc/passwd"), None), "passwd");
        assert_eq!(f("http://h/x", Some(".."), None), "download");
        assert_eq!(
            f(
                "http://h/x",
                None,
                Some("attachment; filename=\"r\\\"e.tgz\"")
            ),
            "r\"e.tgz"
        );
        assert_eq!(
            f(
                "http://h/x",
                None,
                Some("attachment; filename=a.txt; size=3")
            ),
            "a.txt"
        );
        assert_eq!(
            f(
                "http://h/x",
                None,
                Some("attachment; filename=\"plain\"; filename*=UTF-8''%C3%A9t%C3%A9.txt")
            ),
            "été.txt"
        );
        assert_eq!(
            f("http://h/x", None, Some("attachment; filename=\"/etc/\"")),
            "x"
        );
        assert_eq!(f("http://h/x", None, Some("inline")), "x");
        assert_eq!(
            f("http://h/x", Some("name"), Some("attachment; filename=y")),
            "name"
        );
    }
}
