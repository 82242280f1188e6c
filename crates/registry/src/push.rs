//! Pushing images from the content store (used by the image exporter).
//!
//! Each blob the manifest names is, in order of preference:
//! 1. skipped when the registry already has it in the target repository (`HEAD`);
//! 2. mounted from another repository of the same registry that it was pushed to before
//!    (`POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`), as upstream does, so
//!    that pushing one image under several names sends its layers once; only repositories
//!    recorded in [`BLOB_SOURCES_TABLE`] are tried (pushes record them; pulls do not yet,
//!    so a base image's layers are uploaded, not mounted, into a new repository);
//! 3. uploaded, streamed from the content store file in chunks (`POST`, `PATCH`es, `PUT
//!    ?digest=`), so that memory does not grow with the blob: a 1 GiB layer is never held
//!    whole.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use content::ContentStore;
use futures::Stream;
use oci::{Digest, media};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use tokio::io::AsyncReadExt;

use crate::hosts::CredentialSource;
use crate::pull::{Registry, parse_digest};
use crate::{Error, Result};

/// The metadata table of the repositories blobs were pushed to: key `<blob digest> NUL
/// <registry host> NUL <repository>`, empty value. Read to mount a blob instead of
/// uploading it again.
pub const BLOB_SOURCES_TABLE: &str = "registry.blob_sources";

/// Bytes read from the content store at a time while uploading. The client sends each
/// read as one or more `PATCH` requests of its own chunk size (4 MiB), so this bounds what
/// a push holds in memory per blob, whatever the blob's size.
const UPLOAD_READ: usize = 8 << 20;

/// At most this many recorded repositories are tried for a mount before uploading: a
/// failed mount costs a round trip, and one that did not work from the first few sources
/// is unlikely to work from the next.
const MAX_MOUNT_SOURCES: usize = 3;

impl Registry {
    /// Pushes the manifest or index `root` (of `media_type`) and every blob it names from
    /// `store` to `reference` (a tag, a bare name, or `name@digest` to push by digest only).
    /// Blobs the registry already has are not sent again. Returns the digest the registry
    /// stored the root under. Uses the daemon-wide credentials.
    pub async fn push(
        &self,
        reference: &str,
        root: &Digest,
        media_type: &str,
        store: &ContentStore,
    ) -> Result<Digest> {
        self.push_with(reference, root, media_type, store, None, false)
            .await
    }

    /// [`Registry::push`] with the credentials of `creds` (a build's session; see
    /// [`Registry::pull_with`]). `insecure` talks plain HTTP to the registry whatever its
    /// host settings say, as upstream's `registry.insecure=true` does.
    pub async fn push_with(
        &self,
        reference: &str,
        root: &Digest,
        media_type: &str,
        store: &ContentStore,
        creds: Option<&dyn CredentialSource>,
        insecure: bool,
    ) -> Result<Digest> {
        let (full, host, r) = Self::parse(reference)?;
        let conn = self.connect(&host, creds).await?;
        // A client of its own: the shared ones follow the host settings, and this push
        // must not change how other operations reach the host.
        let client = if insecure {
            Arc::new(Client::new(ClientConfig {
                protocol: ClientProtocol::Http,
                accept_invalid_certificates: true,
                ..ClientConfig::default()
            }))
        } else {
            conn.client
        };
        client
            .auth(&r, &conn.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| Self::client_error(&full, e))?;

        let target = Target {
            client: &client,
            shown: &full,
            host: &host,
            store,
        };
        let bytes = store.read_all(root)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: full.clone(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        if media::is_index(media_type) {
            for m in doc["manifests"].as_array().into_iter().flatten() {
                let d = parse_digest(
                    &full,
                    "manifest descriptor",
                    m["digest"].as_str().unwrap_or(""),
                )?;
                let t = m["mediaType"].as_str().unwrap_or(media::OCI_MANIFEST);
                if media::is_index(t) || is_manifest(t) {
                    let child = r.clone_with_digest(d.to_string());
                    Box::pin(target.push_manifest_with_blobs(&child, &d, t)).await?;
                } else {
                    // A build cache index lists its layers and config as plain blobs.
                    target.push_blob(&r, &d).await?;
                }
            }
            target.put_manifest(&r, &bytes, media_type).await?;
        } else {
            target
                .push_manifest_with_blobs(&r, root, media_type)
                .await?;
        }
        Ok(*root)
    }
}

/// Where one push goes, and what it reads from.
struct Target<'a> {
    client: &'a Client,
    /// The reference as shown in errors.
    shown: &'a str,
    /// The registry host as the reference names it (the key of the source records).
    host: &'a str,
    store: &'a ContentStore,
}

impl Target<'_> {
    async fn push_manifest_with_blobs(
        &self,
        r: &oci_client::Reference,
        digest: &Digest,
        media_type: &str,
    ) -> Result<()> {
        let bytes = self.store.read_all(digest)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: self.shown.to_string(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        let mut blobs = vec![&doc["config"]];
        blobs.extend(doc["layers"].as_array().into_iter().flatten());
        for b in blobs {
            let d = parse_digest(
                self.shown,
                "blob descriptor",
                b["digest"].as_str().unwrap_or(""),
            )?;
            self.push_blob(r, &d).await?;
        }
        self.put_manifest(r, &bytes, media_type).await
    }

    /// Makes blob `d` present in `r`'s repository: see the module docs.
    async fn push_blob(&self, r: &oci_client::Reference, d: &Digest) -> Result<()> {
        let digest = d.to_string();
        let exists = self
            .client
            .blob_exists(r, &digest)
            .await
            .map_err(|e| Registry::client_error(self.shown, e))?;
        if exists {
            tracing::debug!(%d, repository = r.repository(), "blob already in registry");
            self.record_source(d, r.repository());
            return Ok(());
        }
        for from in self.sources(d, r.repository()) {
            let source = oci_client::Reference::with_digest(
                r.registry().to_string(),
                from.clone(),
                digest.clone(),
            );
            match self.client.mount_blob(r, &source, &digest).await {
                Ok(()) => {
                    tracing::debug!(%d, from, repository = r.repository(), "blob mounted");
                    self.record_source(d, r.repository());
                    return Ok(());
                }
                // The source may have lost the blob, or these credentials may not read
                // it; the registry may also have begun a plain upload instead (202),
                // which is left to expire. Uploading still works in every such case.
                Err(e) => tracing::debug!(%d, from, error = %e, "cross-repository mount failed"),
            }
        }
        let size = self.store.size(d)?;
        let file = tokio::fs::File::from_std(self.store.open_blob(d)?);
        self.client
            .push_blob_stream(r, read_chunks(file, size), &digest, Some(size))
            .await
            .map_err(|e| upload_error(self.shown, d, e))?;
        tracing::debug!(%d, size, repository = r.repository(), "blob uploaded");
        self.record_source(d, r.repository());
        Ok(())
    }

    /// The repositories of this registry, other than `repository`, that `d` was pushed
    /// to before.
    fn sources(&self, d: &Digest, repository: &str) -> Vec<String> {
        let prefix = source_key(d, self.host, "");
        let rows = match self.store.metadata().scan(BLOB_SOURCES_TABLE, &prefix) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(%d, error = %e, "cannot read where a blob was pushed before");
                return Vec::new();
            }
        };
        rows.into_iter()
            .filter_map(|(k, _)| String::from_utf8(k[prefix.len()..].to_vec()).ok())
            .filter(|repo| !repo.is_empty() && repo != repository)
            .take(MAX_MOUNT_SOURCES)
            .collect()
    }

    /// Records that `repository` of this registry has `d`. Only an optimization for later
    /// pushes, so a failure is logged, not returned.
    fn record_source(&self, d: &Digest, repository: &str) {
        let key = source_key(d, self.host, repository);
        let md = self.store.metadata();
        // Every push of an image passes here; a durable write only when something is new.
        if matches!(md.get(BLOB_SOURCES_TABLE, &key), Ok(Some(_))) {
            return;
        }
        if let Err(e) = md.put(BLOB_SOURCES_TABLE, &key, &[]) {
            tracing::warn!(%d, repository, error = %e, "cannot record where a blob was pushed");
        }
    }

    async fn put_manifest(
        &self,
        r: &oci_client::Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let content_type = media_type.parse().map_err(|e| {
            Registry::registry_error(self.shown, format!("media type {media_type}: {e}"))
        })?;
        self.client
            .push_manifest_raw(r, bytes.to_vec(), content_type)
            .await
            .map_err(|e| Registry::registry_error(self.shown, format!("pushing manifest: {e}")))?;
        Ok(())
    }
}

/// Whether `t` is an image manifest media type (OCI or Docker schema 2).
fn is_manifest(t: &str) -> bool {
    t == media::OCI_MANIFEST || t == media::DOCKER_MANIFEST
}

fn source_key(d: &Digest, host: &str, repository: &str) -> Vec<u8> {
    format!("{d}\0{host}\0{repository}").into_bytes()
}

/// A failed upload: refusals as [`Error::Unauthorized`], anything else naming the blob.
fn upload_error(shown: &str, d: &Digest, e: OciDistributionError) -> Error {
    match Registry::client_error(shown, e) {
        Error::Registry { reference, reason } => Error::Registry {
            reference,
            reason: format!("pushing blob {d}: {reason}"),
        },
        other => other,
    }
}

/// The blob in `file` as a stream of reads of [`UPLOAD_READ`] bytes (the last one
/// shorter). A file that is not `size` bytes long is an error rather than a blob the
/// registry would refuse at the end for its digest.
fn read_chunks(
    file: tokio::fs::File,
    size: u64,
) -> impl Stream<Item = Result<Bytes, OciDistributionError>> + Send + 'static {
    futures::stream::try_unfold((file, 0u64), move |(mut file, sent)| async move {
        let mut buf = BytesMut::with_capacity(UPLOAD_READ);
        while buf.len() < UPLOAD_READ {
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        let sent = sent + buf.len() as u64;
        if buf.is_empty() {
            if sent != size {
                return Err(short_blob(sent, size));
            }
            return Ok(None);
        }
        if sent > size {
            return Err(short_blob(sent, size));
        }
        Ok(Some((buf.freeze(), (file, sent))))
    })
}

fn short_blob(read: u64, size: u64) -> OciDistributionError {
    OciDistributionError::IoError(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("the content store blob has {read} bytes, its record says {size}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn chunks_of(data: &[u8], size: u64) -> Result<Vec<usize>, OciDistributionError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, data).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let chunks: Vec<Bytes> = read_chunks(file, size).try_collect().await?;
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, data);
        Ok(chunks.iter().map(Bytes::len).collect())
    }

    #[tokio::test]
    async fn blobs_are_read_in_bounded_chunks() {
        let data: Vec<u8> = (0..UPLOAD_READ * 2 + 5).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            chunks_of(&data, data.len() as u64).await.unwrap(),
            [UPLOAD_READ, UPLOAD_READ, 5]
        );
        assert!(chunks_of(b"", 0).await.unwrap().is_empty());
        // a blob whose size is not the recorded one is an error, either way
        let e = chunks_of(b"abc", 4).await.unwrap_err();
        assert!(e.to_string().contains("3 bytes"), "{e}");
        assert!(chunks_of(b"abc", 2).await.is_err());
    }

    #[test]
    fn source_keys_group_by_blob_and_host() {
        let d = Digest::of(b"x");
        let k = source_key(&d, "localhost:5000", "a/b");
        assert!(k.starts_with(&source_key(&d, "localhost:5000", "")));
        assert!(!k.starts_with(&source_key(&d, "localhost:500", "")));
        assert!(k.ends_with(b"\0a/b"));
    }
}
