//! Unpacking a pulled image into snapshots, one committed snapshot per layer chain.
//!
//! Each snapshot's source blob is recorded in the metadata DB ([`LAYER_BLOBS_TABLE`]), so
//! that exporting an image built on a pulled one can send the base image's original
//! compressed blobs instead of compressing the same files again (with other digests).

use archive::{ApplyOptions, WhiteoutMode};
use content::ContentStore;
use oci::Digest;
use snapshot::Snapshotter;

use crate::pull::PulledImage;
use crate::{Error, Result};

/// The chain IDs of a layer stack: the first is the first diffID, each next one is
/// `sha256(previous + " " + diffID)` (OCI image spec). A chain ID names a whole stack, so
/// two images with the same bottom layers share those snapshots.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => *d,
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn snapshot_key(chain: &Digest) -> String {
    format!("layer/{chain}")
}

/// The metadata table recording which pulled blobs each unpacked snapshot holds: key
/// `<snapshot key> NUL <blob digest>`, value a JSON [`LayerBlob`]. One snapshot can have
/// several (the same layer pulled from images compressing it differently).
pub const LAYER_BLOBS_TABLE: &str = "registry.layer_blobs";

/// A pulled layer blob that an unpacked snapshot is the content of.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The blob's digest in the content store.
    pub digest: Digest,
    pub size: u64,
    /// The layer media type the image's manifest gave it.
    pub media_type: String,
}

fn layer_blob_key(snapshot: &str, blob: &Digest) -> Vec<u8> {
    let mut k = snapshot.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(blob.to_string().as_bytes());
    k
}

/// The pulled blobs recorded for snapshot `key` (see [`LAYER_BLOBS_TABLE`]); records that
/// cannot be decoded are skipped. The blobs may have been removed from the content store
/// since: callers check.
pub fn layer_blobs(store: &ContentStore, key: &str) -> Result<Vec<LayerBlob>> {
    let mut prefix = key.as_bytes().to_vec();
    prefix.push(0);
    let rows = store
        .metadata()
        .scan(LAYER_BLOBS_TABLE, &prefix)
        .map_err(|source| content::Error::Metadata {
            what: format!("read the pulled blobs of snapshot {key}"),
            source,
        })?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Records that snapshot `key` is the content of `blob`. Only an optimization for exports,
/// so a failure is logged, not returned.
fn record_layer_blob(store: &ContentStore, key: &str, blob: LayerBlob) {
    let value = match serde_json::to_vec(&blob) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot encode the pulled blob record");
            return;
        }
    };
    let k = layer_blob_key(key, &blob.digest);
    // Every pull of an image passes here; a durable write only when something is new.
    if matches!(store.metadata().get(LAYER_BLOBS_TABLE, &k), Ok(Some(v)) if v == value) {
        return;
    }
    if let Err(e) = store.metadata().put(LAYER_BLOBS_TABLE, &k, &value) {
        tracing::warn!(key, blob = %blob.digest, error = %e, "cannot record the pulled blob of a snapshot");
    }
}

/// Applies the image's layers into `snapshotter`, skipping stacks that are already there,
/// and returns the key of the committed top snapshot (`None` for an image with no layers).
/// Each layer's diffID is checked while it is applied. Blocking: run it on a blocking
/// thread.
pub fn unpack(
    image: &PulledImage,
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
) -> Result<Option<String>> {
    unpack_layers(&image.layers, &image.diff_ids, store, snapshotter)
}

/// [`unpack`] of a layer stack given as blobs (digest, size, media type, in the content
/// store) and their diffIDs, bottom first: how an imported build cache result becomes
/// a snapshot.
pub fn unpack_layers(
    layers: &[(Digest, u64, String)],
    diff_ids: &[Digest],
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
) -> Result<Option<String>> {
    if layers.len() != diff_ids.len() {
        return Err(Error::Unpack {
            layer: layers.first().map(|l| l.0.to_string()).unwrap_or_default(),
            reason: format!("{} layers but {} diffIDs", layers.len(), diff_ids.len()),
        });
    }
    let chains = chain_ids(diff_ids);
    let mode = if snapshotter.name() == "overlayfs" {
        WhiteoutMode::Overlay { userxattr: false }
    } else {
        WhiteoutMode::Delete
    };
    let mut parent: Option<String> = None;
    for (i, chain) in chains.iter().enumerate() {
        let key = snapshot_key(chain);
        let (layer, size, media_type) = &layers[i];
        let record = LayerBlob {
            diff_id: diff_ids[i],
            digest: *layer,
            size: *size,
            media_type: media_type.clone(),
        };
        if snapshotter.stat(&key).is_ok() {
            // Recorded again: this image may compress the layer differently.
            record_layer_blob(store, &key, record);
            parent = Some(key);
            continue;
        }
        let tmp = format!(
            "extract/{}/{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        snapshotter.prepare(&tmp, parent.as_deref())?;
        let applied = (|| -> Result<()> {
            let dir = snapshotter.layer_dir(&tmp)?;
            let blob = store.open_blob(layer)?;
            let stats = archive::apply_layer(blob, &dir, &ApplyOptions::new(mode))?;
            if stats.diff_id != diff_ids[i] {
                return Err(Error::Unpack {
                    layer: layer.to_string(),
                    reason: format!(
                        "uncompressed digest {} does not match the config's diff_id {}",
                        stats.diff_id, diff_ids[i]
                    ),
                });
            }
            snapshotter.commit(&key, &tmp)?;
            Ok(())
        })();
        match applied {
            Ok(()) => {
                tracing::debug!(%layer, key, "layer unpacked");
                record_layer_blob(store, &key, record);
            }
            Err(e) => {
                let _ = snapshotter.remove(&tmp);
                // Another unpack of the same stack may have won the race.
                if snapshotter.stat(&key).is_err() {
                    return Err(e);
                }
                record_layer_blob(store, &key, record);
            }
        }
        parent = Some(key);
    }
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a, b]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
