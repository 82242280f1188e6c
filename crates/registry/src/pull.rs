//! Resolving and pulling images into the content store.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use content::ContentStore;
use futures::{StreamExt, TryStreamExt};
use llb::Platform;
use oci::{Digest, media};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, client::ClientConfig, client::ClientProtocol};

use crate::hosts::{CredentialSource, Credentials, CredentialsFn, Hosts, auth_host};
use crate::{Error, Result};

/// Media types we ask registries for, most specific last.
pub(crate) const ACCEPTED_MANIFESTS: [&str; 4] = [
    media::OCI_INDEX,
    media::DOCKER_MANIFEST_LIST,
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
];

/// How many layers are fetched at once.
const PARALLEL_LAYERS: usize = 3;

/// How many HTTP clients with credentials are kept before they are dropped (and made
/// again on next use); anonymous ones are always kept.
const MAX_CREDENTIAL_CLIENTS: usize = 64;

/// A pulled image: every blob it names is in the content store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The normalized reference that was pulled (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// The index or manifest list the reference pointed at, if it was one.
    pub index_digest: Option<Digest>,
    /// The platform manifest.
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest: oci::spec::ImageManifest,
    pub config_digest: Digest,
    pub config: oci::spec::ImageConfiguration,
    /// The config blob as stored (the frontend reads it).
    pub config_bytes: Vec<u8>,
    /// Layer descriptors in order, with their digests parsed.
    pub layers: Vec<(Digest, u64, String)>,
    /// The uncompressed digests from the config, one per layer.
    pub diff_ids: Vec<Digest>,
}

/// A registry client for the worker: settings from [`Hosts`], credentials per call (a
/// [`CredentialSource`]) or from an optional daemon-wide callback.
///
/// There is one HTTP client per host *and set of credentials*: an `oci-client` client
/// keeps the first credentials it sees for a registry and caches the tokens it gets, so
/// a client shared by builds with different credentials would let one build read what
/// only another one may (or fail with the wrong credentials).
pub struct Registry {
    hosts: Hosts,
    credentials: Option<CredentialsFn>,
    clients: Mutex<HashMap<ClientKey, Arc<Client>>>,
}

/// A host, and a digest of the credentials its client uses (`None`: anonymous). A digest,
/// so that the table holds no secret of its own.
type ClientKey = (String, Option<Digest>);

/// What one operation talks to a registry with.
pub(crate) struct Connection {
    pub(crate) client: Arc<Client>,
    pub(crate) auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("hosts", &self.hosts)
            .finish()
    }
}

pub(crate) fn parse_digest(reference: &str, what: &'static str, s: &str) -> Result<Digest> {
    s.parse().map_err(|e: oci::DigestError| Error::BadDocument {
        reference: reference.to_string(),
        what,
        reason: e.to_string(),
    })
}

/// Chooses the manifest for `platform` from an image index (or Docker manifest list).
/// Returns its digest, media type and size.
pub fn select_manifest(
    reference: &str,
    index: &[u8],
    platform: &Platform,
) -> Result<(Digest, String, u64)> {
    let bad = |reason: String| Error::BadDocument {
        reference: reference.to_string(),
        what: "image index",
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(index).map_err(|e| bad(e.to_string()))?;
    let manifests = v["manifests"]
        .as_array()
        .ok_or_else(|| bad("no manifests array".into()))?;
    let want = platform.clone().normalized();
    let mut available = Vec::new();
    let mut fallback = None;
    for m in manifests {
        let p = &m["platform"];
        let (os, arch) = (
            p["os"].as_str().unwrap_or(""),
            p["architecture"].as_str().unwrap_or(""),
        );
        if os.is_empty() || arch.is_empty() {
            continue; // attestation manifests and the like
        }
        let have = Platform::new(os, arch, p["variant"].as_str().unwrap_or(""));
        available.push(have.to_string());
        let pick = || -> Result<(Digest, String, u64)> {
            let digest = parse_digest(
                reference,
                "manifest descriptor",
                m["digest"].as_str().unwrap_or(""),
            )?;
            let media_type = m["mediaType"]
                .as_str()
                .unwrap_or(media::OCI_MANIFEST)
                .to_string();
            Ok((digest, media_type, m["size"].as_u64().unwrap_or(0)))
        };
        if have.os == want.os && have.architecture == want.architecture {
            if have.variant == want.variant {
                return pick();
            }
            if want.variant.is_empty() && fallback.is_none() {
                fallback = Some(pick()?);
            }
        }
    }
    fallback.ok_or_else(|| Error::NoPlatform {
        reference: reference.to_string(),
        platform: want.to_string(),
        available: available.join(", "),
    })
}

fn is_index_doc(media_type: Option<&str>, v: &serde_json::Value) -> bool {
    match media_type {
        Some(t) if !t.is_empty() => media::is_index(t),
        _ => v.get("manifests").is_some(),
    }
}

impl Registry {
    pub fn new(hosts: Hosts, credentials: Option<CredentialsFn>) -> Registry {
        Registry {
            hosts,
            credentials,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `host` used with `creds`.
    fn client_for(&self, host: &str, creds: Option<&Credentials>) -> Arc<Client> {
        let key = (
            host.to_string(),
            creds.map(|c| {
                let mut material = c.username.as_bytes().to_vec();
                material.push(0);
                material.extend_from_slice(c.secret.as_bytes());
                Digest::of(&material)
            }),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return c.clone();
        }
        if key.1.is_some()
            && clients.keys().filter(|k| k.1.is_some()).count() >= MAX_CREDENTIAL_CLIENTS
        {
            clients.retain(|k, _| k.1.is_none());
        }
        let cfg = self.hosts.config(host);
        let client = Arc::new(Client::new(ClientConfig {
            protocol: if cfg.http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: cfg.insecure,
            ..ClientConfig::default()
        }));
        clients.insert(key, client.clone());
        client
    }

    /// The daemon-wide credentials for `host`, if any.
    fn default_credentials(&self, host: &str) -> Option<Credentials> {
        self.credentials.as_ref().and_then(|f| f(auth_host(host)))
    }

    /// The client and credentials for one operation on `host`: from `source` when given
    /// (it decides alone: a build's session), else the daemon-wide ones.
    pub(crate) async fn connect(
        &self,
        host: &str,
        source: Option<&dyn CredentialSource>,
    ) -> Result<Connection> {
        let creds = match source {
            Some(src) => {
                src.credentials(auth_host(host))
                    .await
                    .map_err(|reason| Error::Credentials {
                        host: host.to_string(),
                        reason,
                    })?
            }
            None => self.default_credentials(host),
        };
        let creds = creds.filter(|c| !c.username.is_empty() || !c.secret.is_empty());
        Ok(Connection {
            client: self.client_for(host, creds.as_ref()),
            auth: registry_auth(host, creds),
        })
    }

    /// Normalizes `reference` and turns it into the client's reference type.
    pub(crate) fn parse(reference: &str) -> Result<(String, String, oci_client::Reference)> {
        let normalized = llb::reference::Reference::parse_normalized(reference)
            .map_err(|e| Error::Reference {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?
            .with_default_tag();
        let full = normalized.to_string();
        let r: oci_client::Reference = full.parse().map_err(|e| Error::Reference {
            reference: reference.to_string(),
            reason: format!("{e}"),
        })?;
        Ok((full, normalized.domain, r))
    }

    pub(crate) fn registry_error(reference: &str, e: impl std::fmt::Display) -> Error {
        Error::Registry {
            reference: reference.to_string(),
            reason: e.to_string(),
        }
    }

    /// A failed registry call; refusals become [`Error::Unauthorized`], which says so
    /// plainly (the client's own wording, "Not authorized", is easy to miss).
    pub(crate) fn client_error(reference: &str, e: OciDistributionError) -> Error {
        let unauthorized = |reason: String| Error::Unauthorized {
            reference: reference.to_string(),
            reason,
        };
        match e {
            OciDistributionError::UnauthorizedError { url } => unauthorized(format!(
                "authentication required (401 Unauthorized from {url})"
            )),
            OciDistributionError::AuthenticationFailure(reason) => {
                unauthorized(format!("authentication failed: {}", reason.trim()))
            }
            OciDistributionError::RegistryError { envelope, url }
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                unauthorized(format!("{envelope} (from {url})"))
            }
            e => Self::registry_error(reference, e),
        }
    }

    /// Fetches a manifest or index and checks it against the digest in the reference.
    async fn fetch_manifest(
        &self,
        shown: &str,
        conn: &Connection,
        r: &oci_client::Reference,
    ) -> Result<(Vec<u8>, Digest, Option<String>, serde_json::Value)> {
        let (bytes, _) = conn
            .client
            .pull_manifest_raw(r, &conn.auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| Self::client_error(shown, e))?;
        let digest = Digest::of(&bytes);
        if let Some(want) = r.digest()
            && want != digest.to_string()
        {
            return Err(Error::DigestMismatch {
                reference: shown.to_string(),
                what: "manifest",
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: shown.to_string(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        let media_type = v["mediaType"].as_str().map(String::from);
        Ok((bytes.to_vec(), digest, media_type, v))
    }

    /// The manifest or index `reference` names, as stored (no platform selection): its
    /// bytes, digest and media type. With `creds` (a build's session) when given.
    pub async fn fetch_raw_manifest(
        &self,
        reference: &str,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<(Vec<u8>, Digest, String)> {
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        let (bytes, digest, media_type, _) = self.fetch_manifest(&full, &conn, &r).await?;
        Ok((
            bytes,
            digest,
            media_type.unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
        ))
    }

    /// Makes blob `digest` (`size` bytes) of `reference`'s repository present in
    /// `store`, verified, unless it is there already.
    pub async fn fetch_blob(
        &self,
        reference: &str,
        digest: &Digest,
        size: u64,
        media_type: &str,
        store: &ContentStore,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<()> {
        if matches!(store.exists(digest), Ok(true)) {
            return Ok(());
        }
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        conn.client
            .auth(&r, &conn.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| Self::client_error(&full, e))?;
        let desc = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        fetch_layer(&conn.client, &r, &full, desc, store, None, *digest, size).await
    }

    /// Resolves `reference` for `platform` to the digest of its platform manifest, without
    /// fetching config or layers (what a source op's cache key needs).
    pub async fn resolve(&self, reference: &str, platform: &Platform) -> Result<Digest> {
        self.resolve_with(reference, platform, None).await
    }

    /// [`Registry::resolve`] with the credentials of `creds` (see [`Registry::connect`]).
    pub async fn resolve_with(
        &self,
        reference: &str,
        platform: &Platform,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<Digest> {
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        let (bytes, digest, media_type, doc) = self.fetch_manifest(&full, &conn, &r).await?;
        if is_index_doc(media_type.as_deref(), &doc) {
            return Ok(select_manifest(&full, &bytes, platform)?.0);
        }
        Ok(digest)
    }

    /// Resolves `reference` for `platform` to its platform manifest digest and image
    /// config blob, without fetching layers (what a frontend needs to plan a build).
    pub async fn resolve_config(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(Digest, Vec<u8>)> {
        self.resolve_config_with(reference, platform, None).await
    }

    /// [`Registry::resolve_config`] with the credentials of `creds`.
    pub async fn resolve_config_with(
        &self,
        reference: &str,
        platform: &Platform,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<(Digest, Vec<u8>)> {
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        let (mut bytes, mut digest, mut media_type, mut doc) =
            self.fetch_manifest(&full, &conn, &r).await?;
        if is_index_doc(media_type.as_deref(), &doc) {
            let (child, _, _) = select_manifest(&full, &bytes, platform)?;
            let by_digest = r.clone_with_digest(child.to_string());
            (bytes, digest, media_type, doc) =
                self.fetch_manifest(&full, &conn, &by_digest).await?;
            if digest != child {
                return Err(Error::DigestMismatch {
                    reference: full,
                    what: "platform manifest",
                    expected: child.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        drop((media_type, doc));
        let manifest: oci::spec::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: full.clone(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        let config_desc = manifest.config();
        let config_digest =
            parse_digest(&full, "config descriptor", config_desc.digest().as_ref())?;
        let client = &conn.client;
        client
            .auth(&r, &conn.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| Self::client_error(&full, e))?;
        let mut buf = Vec::new();
        client
            .pull_blob(&r, &descriptor(config_desc), &mut buf)
            .await
            .map_err(|e| Self::client_error(&full, e))?;
        let actual = Digest::of(&buf);
        if actual != config_digest {
            return Err(Error::DigestMismatch {
                reference: full,
                what: "image config",
                expected: config_digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok((digest, buf))
    }

    /// Pulls `reference` for `platform`: index (if any), manifest, config and every layer
    /// end up in `store`, each verified against its digest, held by `lease` when given.
    /// Blobs already in the store are not fetched again.
    pub async fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        store: &ContentStore,
        lease: Option<&str>,
    ) -> Result<PulledImage> {
        self.pull_with(reference, platform, store, lease, None)
            .await
    }

    /// [`Registry::pull`] with the credentials of `creds`.
    pub async fn pull_with(
        &self,
        reference: &str,
        platform: &Platform,
        store: &ContentStore,
        lease: Option<&str>,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<PulledImage> {
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        let (mut bytes, mut digest, mut media_type, mut doc) =
            self.fetch_manifest(&full, &conn, &r).await?;
        let mut index_digest = None;
        if is_index_doc(media_type.as_deref(), &doc) {
            put_verified(store, lease, &bytes, &digest).await?;
            index_digest = Some(digest);
            let (child, child_type, _) = select_manifest(&full, &bytes, platform)?;
            let by_digest = r.clone_with_digest(child.to_string());
            let (b, d, t, v) = self.fetch_manifest(&full, &conn, &by_digest).await?;
            if d != child {
                return Err(Error::DigestMismatch {
                    reference: full,
                    what: "platform manifest",
                    expected: child.to_string(),
                    actual: d.to_string(),
                });
            }
            (bytes, digest, media_type, doc) = (b, d, t.or(Some(child_type)), v);
        }
        let manifest_media_type = media_type.unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        if !media::is_manifest(&manifest_media_type) {
            return Err(Error::BadDocument {
                reference: full,
                what: "manifest",
                reason: format!("unsupported media type {manifest_media_type}"),
            });
        }
        drop(doc);
        let manifest: oci::spec::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: full.clone(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        put_verified(store, lease, &bytes, &digest).await?;

        let client = conn.client.clone();
        client
            .auth(&r, &conn.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| Self::client_error(&full, e))?;

        let config_desc = manifest.config();
        let config_digest =
            parse_digest(&full, "config descriptor", config_desc.digest().as_ref())?;
        let config_bytes = if store.exists(&config_digest)? {
            store.read_all(&config_digest)?
        } else {
            let mut buf = Vec::new();
            client
                .pull_blob(&r, &descriptor(config_desc), &mut buf)
                .await
                .map_err(|e| Self::client_error(&full, e))?;
            put_verified(store, lease, &buf, &config_digest).await?;
            buf
        };
        if let Some(l) = lease {
            store.add_to_lease(l, &config_digest)?;
        }
        let config: oci::spec::ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::BadDocument {
                reference: full.clone(),
                what: "image config",
                reason: e.to_string(),
            })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| parse_digest(&full, "config diff_id", d))
            .collect::<Result<Vec<_>>>()?;
        let mut layers = Vec::new();
        for l in manifest.layers() {
            let d = parse_digest(&full, "layer descriptor", l.digest().as_ref())?;
            layers.push((d, l.size(), l.media_type().to_string()));
        }
        if diff_ids.len() != layers.len() {
            return Err(Error::BadDocument {
                reference: full,
                what: "image",
                reason: format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    layers.len(),
                    diff_ids.len()
                ),
            });
        }

        // Owned copies only, so the layer futures borrow nothing (and stay `Send` for any
        // caller's lifetimes).
        let jobs: Vec<(OciDescriptor, Digest, u64)> = manifest
            .layers()
            .iter()
            .zip(&layers)
            .map(|(desc, (d, size, _))| (descriptor(desc), *d, *size))
            .collect();
        let lease_owned = lease.map(String::from);
        futures::stream::iter(jobs)
            .map(|(desc, d, size)| {
                let (client, r, full) = (client.clone(), r.clone(), full.clone());
                let (store, lease) = (store.clone(), lease_owned.clone());
                async move {
                    if store.exists(&d)? {
                        if let Some(l) = &lease {
                            store.add_to_lease(l, &d)?;
                        }
                        return Ok::<(), Error>(());
                    }
                    fetch_layer(&client, &r, &full, desc, &store, lease.as_deref(), d, size).await
                }
            })
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        Ok(PulledImage {
            reference: full,
            index_digest,
            manifest_digest: digest,
            manifest_media_type,
            manifest,
            config_digest,
            config,
            config_bytes,
            layers,
            diff_ids,
        })
    }
}

/// Credentials as the client takes them. An empty username with a secret is an identity
/// (refresh) token, which needs an OAuth exchange the client cannot do: such pulls go
/// anonymously, with a warning.
fn registry_auth(host: &str, creds: Option<Credentials>) -> RegistryAuth {
    match creds {
        Some(c) if c.username.is_empty() => {
            if !c.secret.is_empty() {
                tracing::warn!(
                    host,
                    "identity tokens are not supported; accessing the registry anonymously"
                );
            }
            RegistryAuth::Anonymous
        }
        Some(c) => RegistryAuth::Basic(c.username, c.secret),
        None => RegistryAuth::Anonymous,
    }
}

fn descriptor(d: &oci::spec::Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// Stores a small document after checking its digest.
async fn put_verified(
    store: &ContentStore,
    lease: Option<&str>,
    bytes: &[u8],
    digest: &Digest,
) -> Result<()> {
    let store = store.clone();
    let lease = lease.map(String::from);
    let bytes = bytes.to_vec();
    let digest = *digest;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut w = store.writer()?;
        if let Some(l) = lease {
            w = w.in_lease(l);
        }
        w.write_all(&bytes)
            .map_err(|e| Error::Join(e.to_string()))?;
        w.commit(Some((digest, bytes.len() as u64)))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?
}

/// Streams one layer into the store; the commit checks digest and size.
#[allow(clippy::too_many_arguments)]
async fn fetch_layer(
    client: &Client,
    r: &oci_client::Reference,
    shown: &str,
    desc: OciDescriptor,
    store: &ContentStore,
    lease: Option<&str>,
    digest: Digest,
    size: u64,
) -> Result<()> {
    let mut stream = client
        .pull_blob_stream(r, &desc)
        .await
        .map_err(|e| Registry::client_error(shown, e))?;
    let mut w = store.writer()?;
    if let Some(l) = lease {
        w = w.in_lease(l.to_string());
    }
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Registry::registry_error(shown, format!("layer {digest}: {e}")))?;
        w.write_all(&chunk).map_err(|e| Error::Unpack {
            layer: digest.to_string(),
            reason: format!("writing to the content store: {e}"),
        })?;
    }
    tokio::task::spawn_blocking(move || w.commit(Some((digest, size))))
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
    tracing::debug!(%digest, size, "layer fetched");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":10,"platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":11,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":12,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":13,"platform":{"architecture":"unknown","os":"unknown"}}]}"#;

    #[test]
    fn selects_platform_manifests() {
        let pick = |p: &str| select_manifest("x", INDEX.as_bytes(), &Platform::parse(p).unwrap());
        assert!(pick("linux/amd64").unwrap().0.to_string().ends_with("1111"));
        assert!(pick("linux/arm64").unwrap().0.to_string().ends_with("2222"));
        assert_eq!(pick("linux/arm64").unwrap().2, 11);
        assert!(
            pick("linux/arm/v7")
                .unwrap()
                .0
                .to_string()
                .ends_with("3333")
        );
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/amd64"),
            "{err}"
        );
        assert!(select_manifest("x", b"{}", &Platform::host()).is_err());
    }
}
