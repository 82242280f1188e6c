//! Pushing images from the content store (used by the image exporter).

use content::ContentStore;
use oci::{Digest, media};

use crate::pull::{Registry, parse_digest};
use crate::{Error, Result};

impl Registry {
    /// Pushes the manifest or index `root` (of `media_type`) and every blob it names from
    /// `store` to `reference` (a tag or a bare name). Blobs the registry already has are
    /// not sent again. Returns the digest the registry stored the root under.
    pub async fn push(
        &self,
        reference: &str,
        root: &Digest,
        media_type: &str,
        store: &ContentStore,
    ) -> Result<Digest> {
        let (full, host, r) = Self::parse(reference)?;
        let client = self.client(&host);
        client
            .auth(&r, &self.auth(&host), oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| Self::registry_error(&full, e))?;

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
                let child = r.clone_with_digest(d.to_string());
                Box::pin(self.push_manifest_with_blobs(&full, &child, &d, t, store)).await?;
            }
            self.put_manifest(&full, &r, &bytes, media_type).await?;
        } else {
            self.push_manifest_with_blobs(&full, &r, root, media_type, store)
                .await?;
        }
        Ok(*root)
    }

    async fn push_manifest_with_blobs(
        &self,
        shown: &str,
        r: &oci_client::Reference,
        digest: &Digest,
        media_type: &str,
        store: &ContentStore,
    ) -> Result<()> {
        let bytes = store.read_all(digest)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
                reference: shown.to_string(),
                what: "manifest",
                reason: e.to_string(),
            })?;
        let mut blobs = vec![&doc["config"]];
        blobs.extend(doc["layers"].as_array().into_iter().flatten());
        let client = self.client(r.registry());
        for b in blobs {
            let d = parse_digest(shown, "blob descriptor", b["digest"].as_str().unwrap_or(""))?;
            let exists = client
                .blob_exists(r, &d.to_string())
                .await
                .map_err(|e| Self::registry_error(shown, e))?;
            if exists {
                tracing::debug!(%d, "blob already in registry");
                continue;
            }
            let data = store.read_all(&d)?;
            client
                .push_blob(r, data, &d.to_string())
                .await
                .map_err(|e| Self::registry_error(shown, format!("pushing blob {d}: {e}")))?;
        }
        self.put_manifest(shown, r, &bytes, media_type).await
    }

    async fn put_manifest(
        &self,
        shown: &str,
        r: &oci_client::Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let content_type = media_type
            .parse()
            .map_err(|e| Self::registry_error(shown, format!("media type {media_type}: {e}")))?;
        self.client(r.registry())
            .push_manifest_raw(r, bytes.to_vec(), content_type)
            .await
            .map_err(|e| Self::registry_error(shown, format!("pushing manifest: {e}")))?;
        Ok(())
    }
}
