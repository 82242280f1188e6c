//! gRPC metadata of sessions: the headers a client sends when it opens
//! `Control.Session`, and the multi-valued, URL-escaped options of file transfers.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use crate::Error;

/// Session id (`X-Docker-Expose-Session-Uuid`).
pub const HEADER_SESSION_ID: &str = "x-docker-expose-session-uuid";
/// Session name; defined upstream but no longer sent.
pub const HEADER_SESSION_NAME: &str = "x-docker-expose-session-name";
/// Shared key, which lets local-context snapshots be reused across sessions.
pub const HEADER_SESSION_SHARED_KEY: &str = "x-docker-expose-session-sharedkey";
/// One value per gRPC method the client serves (`/pkg.Service/Method`).
pub const HEADER_SESSION_METHOD: &str = "x-docker-expose-session-grpc-method";
/// Optional health-check period in milliseconds (tests use it to fail fast).
pub const HEADER_HEALTH_TIMEOUT: &str = "x-buildkit-session-health-custom-timeout";

/// What a client announced when it opened a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id builds refer to it by.
    pub id: String,
    /// The shared key.
    pub shared_key: String,
    /// The methods the client serves, as sent (`/moby.filesync.v1.FileSync/DiffCopy`).
    pub methods: Vec<String>,
    /// A custom health-check period, if the client asked for one.
    pub health_timeout: Option<Duration>,
}

impl SessionInfo {
    /// Reads the session headers. The id is required and must be non-empty.
    pub fn from_metadata(md: &MetadataMap) -> Result<SessionInfo, Error> {
        let first = |key: &str| -> Result<String, Error> {
            match md.get(key) {
                None => Ok(String::new()),
                Some(v) => v
                    .to_str()
                    .map(str::to_string)
                    .map_err(|_| Error::Metadata(format!("{key} is not ASCII"))),
            }
        };
        let id = first(HEADER_SESSION_ID)?;
        if id.is_empty() {
            return Err(Error::Metadata(format!("missing {HEADER_SESSION_ID}")));
        }
        let shared_key = first(HEADER_SESSION_SHARED_KEY)?;
        let mut methods = Vec::new();
        for v in md.get_all(HEADER_SESSION_METHOD) {
            let m = v
                .to_str()
                .map_err(|_| Error::Metadata(format!("{HEADER_SESSION_METHOD} is not ASCII")))?;
            methods.push(m.to_string());
        }
        let health_timeout = first(HEADER_HEALTH_TIMEOUT)?
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        Ok(SessionInfo {
            id,
            shared_key,
            methods,
            health_timeout,
        })
    }

    /// Writes the session headers (the inverse of [`SessionInfo::from_metadata`]).
    pub fn to_metadata(&self, md: &mut MetadataMap) -> Result<(), Error> {
        md.insert(HEADER_SESSION_ID, ascii(HEADER_SESSION_ID, &self.id)?);
        md.insert(
            HEADER_SESSION_SHARED_KEY,
            ascii(HEADER_SESSION_SHARED_KEY, &self.shared_key)?,
        );
        for m in &self.methods {
            md.append(HEADER_SESSION_METHOD, ascii(HEADER_SESSION_METHOD, m)?);
        }
        if let Some(t) = self.health_timeout {
            let ms = t.as_millis().to_string();
            md.insert(HEADER_HEALTH_TIMEOUT, ascii(HEADER_HEALTH_TIMEOUT, &ms)?);
        }
        Ok(())
    }

    /// Whether the client serves `method` (`/pkg.Service/Method`), compared without
    /// regard to case as upstream does.
    pub fn supports(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// A method's URL: `/` service `/` method.
pub fn method_url(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

fn ascii(key: &str, value: &str) -> Result<AsciiMetadataValue, Error> {
    AsciiMetadataValue::try_from(value).map_err(|_| {
        Error::Metadata(format!(
            "value of {key} is not valid in a header: {value:?}"
        ))
    })
}

/// Appends `values` under `key`. If any value has a non-ASCII character, all are
/// URL-query-escaped and `<key>-encoded: 1` is added (upstream's `encodeOpts`).
pub(crate) fn append_values(
    md: &mut MetadataMap,
    key: &str,
    values: &[String],
) -> Result<(), Error> {
    if values.is_empty() {
        return Ok(());
    }
    let encode = values.iter().any(|v| !v.is_ascii());
    let k = AsciiMetadataKey::from_bytes(key.as_bytes())
        .map_err(|_| Error::Metadata(format!("invalid metadata key {key:?}")))?;
    for v in values {
        let v = if encode { query_escape(v) } else { v.clone() };
        md.append(k.clone(), ascii(key, &v)?);
    }
    if encode {
        let ek = AsciiMetadataKey::from_bytes(format!("{key}-encoded").as_bytes())
            .map_err(|_| Error::Metadata(format!("invalid metadata key {key:?}")))?;
        md.insert(ek, AsciiMetadataValue::from_static("1"));
    }
    Ok(())
}

/// Every value of `key`, unescaped if `<key>-encoded` says so (upstream's `decodeOpts`;
/// as there, a value that fails to unescape becomes empty).
pub(crate) fn values(md: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = md
        .get(format!("{key}-encoded").as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(parse_go_bool);
    md.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                query_unescape(v).unwrap_or_default()
            } else {
                v.to_string()
            }
        })
        .collect()
}

/// Go's `strconv.ParseBool` accepting only true values.
fn parse_go_bool(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// Go's `url.QueryEscape`: unreserved characters stay, space becomes `+`, every other
/// byte becomes `%XX`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a malformed escape
/// or bytes that are not UTF-8.
pub(crate) fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A new random session id: 25 base-36 characters, like upstream's `identity.NewID`.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the OS; mixing in a counter and the clock keeps ids
    // distinct even where the seed is reused within a process.
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        h.finish()
    };
    let mut n = (u128::from(word()) << 64) | u128::from(word());
    let mut id = String::with_capacity(25);
    for _ in 0..25 {
        let digit = (n % 36) as u32;
        n /= 36;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_headers_round_trip() {
        let info = SessionInfo {
            id: "abc".into(),
            shared_key: "key".into(),
            methods: vec!["/a.B/C".into(), "/a.B/D".into()],
            health_timeout: Some(Duration::from_millis(1500)),
        };
        let mut md = MetadataMap::new();
        info.to_metadata(&mut md).unwrap();
        assert_eq!(md.get_all(HEADER_SESSION_METHOD).iter().count(), 2);
        let back = SessionInfo::from_metadata(&md).unwrap();
        assert_eq!(back, info);
        assert!(back.supports("/A.b/c"));
        assert!(!back.supports("/a.B/E"));
    }

    #[test]
    fn session_id_is_required() {
        let md = MetadataMap::new();
        assert!(matches!(
            SessionInfo::from_metadata(&md),
            Err(Error::Metadata(_))
        ));
    }

    #[test]
    fn non_ascii_values_are_escaped_with_a_flag() {
        let mut md = MetadataMap::new();
        let vals = vec!["plain".to_string(), "dïr/ä b".to_string()];
        append_values(&mut md, "include-patterns", &vals).unwrap();
        assert_eq!(md.get("include-patterns-encoded").unwrap(), "1");
        let raw: Vec<_> = md.get_all("include-patterns").iter().collect();
        assert_eq!(raw[1], "d%C3%AFr%2F%C3%A4+b");
        assert_eq!(values(&md, "include-patterns"), vals);

        let mut md = MetadataMap::new();
        let vals = vec!["a b/*.go".to_string()];
        append_values(&mut md, "exclude-patterns", &vals).unwrap();
        assert!(md.get("exclude-patterns-encoded").is_none());
        assert_eq!(values(&md, "exclude-patterns"), vals);
    }

    #[test]
    fn unescape_rejects_bad_escapes() {
        assert_eq!(query_unescape("%zz"), None);
        assert_eq!(query_unescape("%4"), None);
        assert_eq!(query_unescape("%+1"), None);
        assert_eq!(query_unescape("a%2Fb+c").as_deref(), Some("a/b c"));
    }

    #[test]
    fn ids_are_distinct_base36() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 25);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
    }
}
