//! Docker image references, normalized as the Docker CLI and BuildKit do:
//! `busybox` is `docker.io/library/busybox:latest`. Only what the LLB builder needs: parse,
//! validate, normalize and print.

use std::fmt;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes a reference, adding the default domain and `library/`.
    /// A reference with neither tag nor digest is returned without a tag; see
    /// [`Reference::with_default_tag`].
    pub fn parse_normalized(input: &str) -> Result<Reference, crate::Error> {
        let bad = |reason: &str| crate::Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("cannot specify 64-byte hexadecimal strings"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|r| bad(&r))?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // The tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(t[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(|r| bad(&r))?;
        }
        let (domain, path) = split_domain(name);
        if path.to_ascii_lowercase() != path {
            return Err(bad("repository name must be lowercase"));
        }
        validate_domain(&domain).map_err(|r| bad(&r))?;
        for component in path.split('/') {
            validate_path_component(component).map_err(|r| bad(&r))?;
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Adds the `latest` tag when the reference has neither a tag nor a digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(stripped) = domain.strip_prefix('[') {
        // IPv6 literal: [addr]:port
        let (addr, after) = stripped
            .split_once(']')
            .ok_or_else(|| format!("invalid domain {domain:?}"))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("invalid IPv6 domain {domain:?}"));
        }
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return Err(format!("invalid domain {domain:?}")),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!("invalid domain {domain:?}"));
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("invalid port in domain {domain:?}"));
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_path_component(c: &str) -> Result<(), String> {
    let err = || format!("invalid reference format: repository name component {c:?}");
    let bytes = c.as_bytes();
    if bytes.is_empty() {
        return Err(err());
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return Err(err());
        }
        // a separator: '.', '_', '__' or a run of '-'
        let sep_len = match bytes[i] {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|b| **b == b'-').count(),
            _ => return Err(err()),
        };
        i += sep_len;
        expect_alnum = true;
    }
    if expect_alnum {
        return Err(err());
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = match chars.next() {
        Some(first) => {
            word(first) && tag.len() <= 128 && chars.all(|c| word(c) || c == '.' || c == '-')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

/// `algorithm:hex` with at least 32 hex digits (sha256 needs exactly 64).
pub(crate) fn validate_digest(d: &str) -> Result<(), String> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("invalid digest {d:?}"))?;
    let alg_ok = !alg.is_empty()
        && alg.starts_with(|c: char| c.is_ascii_alphabetic())
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c));
    if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("invalid digest {d:?}"));
    }
    if alg == "sha256" && (hex.len() != 64 || hex.chars().any(|c| c.is_ascii_uppercase())) {
        return Err(format!("invalid sha256 digest {d:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse_normalized(s)
            .unwrap()
            .with_default_tag()
            .to_string()
    }

    #[test]
    fn normalizes_docker_hub_names() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(norm("index.docker.io/foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("golang:1.24-alpine"),
            "docker.io/library/golang:1.24-alpine"
        );
    }

    #[test]
    fn keeps_registries_and_digests() {
        assert_eq!(
            norm("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        let d = "sha256:7632065f5f1a7788c92ec84bfcf9bbe7f0e2da14cdeb1f8f79290a120b87fe28";
        assert_eq!(
            norm(&format!("127.0.0.1:5000/busybox@{d}")),
            format!("127.0.0.1:5000/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "a//b",
            "-a",
            "a-",
            "foo/Bar",
            "busybox:-x",
            &"a".repeat(64).replace('a', "f"),
        ] {
            assert!(
                Reference::parse_normalized(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
