//! A minimal blocking Registry V2 (OCI distribution) client over plain HTTP.
//!
//! Enough to seed a test registry and read it back: check and upload blobs (monolithic upload),
//! put and get manifests, get blobs with digest verification, list tags. Optional HTTP basic auth
//! for an htpasswd registry. It is deliberately not the production client (that is the
//! `registry` crate over `oci-client`); it exists so tests do not depend on the code they test.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::Response;
use ureq::typestate::{WithBody, WithoutBody};
use ureq::{Body, RequestBuilder};

use crate::image::{Blob, Image, MEDIA_TYPE_MANIFEST};
use crate::{Error, Result, sha256_digest};

/// Largest response body read into memory (manifests and test layers are far smaller).
const MAX_BODY: u64 = 512 * 1024 * 1024;

/// `HOST[:PORT]/NAME[:TAG|@DIGEST]`, with the host always explicit (no Docker Hub defaulting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host and optional port, e.g. `127.0.0.1:5000`.
    pub host: String,
    /// Repository name, e.g. `library/busybox`.
    pub repository: String,
    /// Tag or `sha256:` digest; `latest` when neither was given.
    pub reference: String,
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::Invalid {
            what: "image reference",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected HOST[:PORT]/NAME[:TAG]"))?;
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(invalid("bad registry host"));
        }
        let (name, reference) = if let Some((name, digest)) = rest.split_once('@') {
            if !digest.starts_with("sha256:") || digest.len() != 71 {
                return Err(invalid("digest must be sha256:<64 hex digits>"));
            }
            (name, digest.to_owned())
        } else {
            match rest.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => {
                    let tag_ok = !tag.is_empty()
                        && tag.len() <= 128
                        && tag
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                    if !tag_ok {
                        return Err(invalid("bad tag"));
                    }
                    (name, tag.to_owned())
                }
                _ => (rest, "latest".to_owned()),
            }
        };
        validate_repository(name).map_err(|reason| invalid(&reason))?;
        Ok(ImageRef {
            host: host.to_owned(),
            repository: name.to_owned(),
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.host, self.repository, self.reference
        )
    }
}

/// Repository names: lowercase alphanumeric path components joined by `.`, `_`, `-`.
fn validate_repository(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty repository name".into());
    }
    for component in name.split('/') {
        let ok = !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(format!("bad repository path component {component:?}"));
        }
    }
    Ok(())
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The `Content-Type` header.
    pub media_type: String,
    /// The `Docker-Content-Digest` header, if sent.
    pub digest_header: Option<String>,
    /// The exact bytes served; their sha256 is the manifest digest.
    pub bytes: Vec<u8>,
}

/// A blocking client for one registry host over plain HTTP.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`), speaking `http://`.
    pub fn new(host: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        RegistryClient {
            agent,
            base: format!("http://{host}"),
            authorization: None,
        }
    }

    /// Sends `Authorization: Basic ...` with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    /// `GET /v2/` and return the status code (200, or 401 without valid credentials).
    pub fn ping(&self) -> Result<u16> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send("GET", &url, self.agent.get(&url))?;
        Ok(resp.status().as_u16())
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: whether the registry already has the blob.
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = self.send("HEAD", &url, self.agent.head(&url))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(unexpected("HEAD", &url, resp)),
        }
    }

    /// Uploads `blob` to `repo` with a monolithic upload unless it is already there.
    /// Returns `true` when it was uploaded, `false` when it existed.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<bool> {
        if self.blob_exists(repo, blob.digest())? {
            return Ok(false);
        }
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self.send_body("POST", &start, self.agent.post(&start), None, &[])?;
        if resp.status().as_u16() != 202 {
            return Err(unexpected("POST", &start, resp));
        }
        let location = header(&resp, "Location").ok_or_else(|| Error::Registry {
            method: "POST",
            url: start.clone(),
            reason: "202 without a Location header".into(),
        })?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", blob.digest().replace(':', "%3A")));
        let resp = self.send_body(
            "PUT",
            &url,
            self.agent.put(&url),
            Some("application/octet-stream"),
            blob.bytes(),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(unexpected("PUT", &url, resp));
        }
        check_digest_header(&resp, "PUT", &url, blob.digest())?;
        Ok(true)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the blob's media type as `Content-Type`.
    /// Returns the digest, after checking the registry's `Docker-Content-Digest` agrees.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Blob) -> Result<String> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = self.send_body(
            "PUT",
            &url,
            self.agent.put(&url),
            Some(manifest.media_type()),
            manifest.bytes(),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(unexpected("PUT", &url, resp));
        }
        check_digest_header(&resp, "PUT", &url, manifest.digest())?;
        Ok(manifest.digest().to_owned())
    }

    /// Pushes every blob of `image`, then its manifest as `repo:tag`. Returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image) -> Result<String> {
        validate_repository(repo).map_err(|reason| Error::Invalid {
            what: "repository name",
            value: repo.to_owned(),
            reason,
        })?;
        for blob in image.content_blobs() {
            self.push_blob(repo, blob)?;
        }
        self.push_manifest(repo, tag, image.manifest())
    }

    /// `GET /v2/<repo>/manifests/<reference>` with `Accept: <accept>`.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<FetchedManifest> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let mut resp = self.send("GET", &url, self.agent.get(&url).header("Accept", accept))?;
        if resp.status().as_u16() != 200 {
            return Err(unexpected("GET", &url, resp));
        }
        let media_type = header(&resp, "Content-Type").unwrap_or_default();
        let digest_header = header(&resp, "Docker-Content-Digest");
        let bytes = read_body(&mut resp, "GET", &url)?;
        Ok(FetchedManifest {
            media_type,
            digest_header,
            bytes,
        })
    }

    /// [`RegistryClient::get_manifest`] accepting an OCI image manifest.
    pub fn get_oci_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.get_manifest(repo, reference, MEDIA_TYPE_MANIFEST)
    }

    /// `GET /v2/<repo>/blobs/<digest>`, verifying the content hashes to `digest`.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let mut resp = self.send("GET", &url, self.agent.get(&url))?;
        if resp.status().as_u16() != 200 {
            return Err(unexpected("GET", &url, resp));
        }
        let bytes = read_body(&mut resp, "GET", &url)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: url,
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// `GET /v2/<repo>/tags/list`.
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        let url = format!("{}/v2/{repo}/tags/list", self.base);
        let mut resp = self.send("GET", &url, self.agent.get(&url))?;
        if resp.status().as_u16() != 200 {
            return Err(unexpected("GET", &url, resp));
        }
        let bytes = read_body(&mut resp, "GET", &url)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                context: format!("parse tag list from {url}"),
                source,
            })?;
        Ok(value["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn send(
        &self,
        method: &'static str,
        url: &str,
        req: RequestBuilder<WithoutBody>,
    ) -> Result<Response<Body>> {
        self.authorize(req)
            .call()
            .map_err(|e| http_error(method, url, e))
    }

    fn send_body(
        &self,
        method: &'static str,
        url: &str,
        req: RequestBuilder<WithBody>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response<Body>> {
        let mut req = self.authorize(req);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req.send(body).map_err(|e| http_error(method, url, e))
    }

    fn authorize<B>(&self, req: RequestBuilder<B>) -> RequestBuilder<B> {
        match &self.authorization {
            Some(value) => req.header("Authorization", value),
            None => req,
        }
    }
}

fn http_error(method: &'static str, url: &str, e: ureq::Error) -> Error {
    Error::Http {
        method,
        url: url.to_owned(),
        source: Box::new(e),
    }
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn read_body(resp: &mut Response<Body>, method: &'static str, url: &str) -> Result<Vec<u8>> {
    resp.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| http_error(method, url, e))
}

fn check_digest_header(
    resp: &Response<Body>,
    method: &'static str,
    url: &str,
    expected: &str,
) -> Result<()> {
    match header(resp, "Docker-Content-Digest") {
        Some(actual) if actual == expected => Ok(()),
        Some(actual) => Err(Error::DigestMismatch {
            what: format!("{method} {url} (Docker-Content-Digest)"),
            expected: expected.to_owned(),
            actual,
        }),
        None => Err(Error::Registry {
            method,
            url: url.to_owned(),
            reason: "response has no Docker-Content-Digest header".into(),
        }),
    }
}

/// An error naming the status and (the start of) the body the registry sent.
fn unexpected(method: &'static str, url: &str, mut resp: Response<Body>) -> Error {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    Error::Registry {
        method,
        url: url.to_owned(),
        reason: format!("unexpected status {status}: {}", body.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_name_and_tag() {
        let r: ImageRef = "127.0.0.1:5000/busybox:latest".parse().unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.reference, "latest");
        let r: ImageRef = "localhost:5000/library/busybox".parse().unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("library/busybox", "latest")
        );
        assert_eq!(r.to_string(), "localhost:5000/library/busybox:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r: ImageRef = format!("h:1/x@{digest}").parse().unwrap();
        assert_eq!(r.reference, digest);
        assert_eq!(r.to_string(), format!("h:1/x@{digest}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "busybox",
            "/busybox",
            "h:1/",
            "h:1/Busybox",
            "h:1/busy box",
            "h:1/busybox:",
            "h:1/busybox:t@g",
            "h:1/x@sha256:short",
            "h:1/a//b",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn basic_auth_header_is_base64_of_user_colon_password() {
        let c = RegistryClient::new("127.0.0.1:1").with_basic_auth("user", "pass");
        assert_eq!(c.authorization.as_deref(), Some("Basic dXNlcjpwYXNz"));
    }
}
