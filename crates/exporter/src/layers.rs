//! The layers of a result: one per snapshot of its chain, bottom first, each as a
//! compressed blob in the content store with its diffID.
//!
//! A blob is found before it is made:
//! 1. a snapshot unpacked from a pulled image has that image's original blob
//!    ([`registry::layer_blobs`]): reused when its compression is the one asked for, and
//!    also when it is not, unless compression is forced (upstream applies the compression
//!    only to the layers an export makes);
//! 2. a blob this exporter made before for the same snapshot, compression and level is
//!    remembered in [`LAYER_BLOBS_TABLE`] and reused;
//! 3. otherwise the snapshot is diffed against its parent ([`worker::Worker::diff`]: the
//!    overlay upper directory, or a comparison of the two trees for native snapshots and
//!    for merge results) and compressed, hashing both streams in one pass, straight into
//!    the content store; then remembered.
//!
//! A snapshot that changes nothing still gives a (small, empty) layer: upstream keeps
//! such layers too, and the history of the image config counts on them.
//!
//! With `rewrite-timestamp` (a [`LayerOptions::rewrite_epoch`]), the layers this export
//! makes have every file time after the epoch clamped to it, so two builds of the same
//! thing give the same layer digests: the tar itself is already deterministic (entries
//! sorted, no access or change times, numeric owners only, a gzip header without time or
//! name). Such blobs are remembered under their own keys, so an export without the option
//! never gets a rewritten blob, nor one with another epoch. A pulled base image's layers
//! are kept as they are, as upstream keeps the layers its base image config names: they
//! are what the registry has, and rewriting them would only change their digests.

use std::collections::HashSet;

use archive::{Compression, DiffOptions};
use content::ContentStore;
use metadata::MetadataStore;
use oci::Digest;
use serde::{Deserialize, Serialize};
use snapshot::Snapshotter;
use worker::Worker;

use crate::options::CompressionConfig;
use crate::time::Timestamp;
use crate::{Error, Result};

/// The metadata table of the blobs this exporter made: key `<snapshot key> NUL
/// <compression> NUL <level>`, followed by `NUL epoch=<N>` for a blob whose file times
/// were clamped to epoch N; value a JSON record of the blob and of the parent it was
/// diffed against.
pub const LAYER_BLOBS_TABLE: &str = "exporter.layer_blobs";

/// Where a layer's blob came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The blob of the pulled image the snapshot was unpacked from.
    Pulled,
    /// A blob made by an earlier export, remembered in [`LAYER_BLOBS_TABLE`].
    Remembered,
    /// Made by this export.
    Computed,
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The snapshot whose changes the layer holds.
    pub snapshot: String,
    /// The layer media type as recorded (OCI or Docker); manifests convert it.
    pub media_type: String,
    /// The blob's digest in the content store.
    pub digest: Digest,
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// When the snapshot was made (the layer's history time when the config has none).
    pub created: Timestamp,
    pub origin: Origin,
}

#[derive(Serialize, Deserialize)]
struct Record {
    parent: Option<String>,
    diff_id: Digest,
    digest: Digest,
    size: u64,
    media_type: String,
}

/// How the layers of an export are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LayerOptions {
    pub compression: CompressionConfig,
    /// `rewrite-timestamp`: clamp the file times of the layers made to this epoch
    /// (seconds since 1970), see the module docs.
    pub rewrite_epoch: Option<i64>,
}

fn record_key(snapshot: &str, opts: &LayerOptions) -> Vec<u8> {
    let cfg = &opts.compression;
    let mut key = format!("{snapshot}\0{}\0{}", cfg.compression, cfg.effective_level());
    if let Some(epoch) = opts.rewrite_epoch {
        key.push_str(&format!("\0epoch={epoch}"));
    }
    key.into_bytes()
}

/// The committed snapshots from the bottom of `key`'s chain up to `key`.
pub fn chain(snapshotter: &dyn Snapshotter, key: &str) -> Result<Vec<snapshot::Info>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(key.to_string());
    while let Some(k) = next {
        if !seen.insert(k.clone()) {
            return Err(Error::Invalid(format!(
                "snapshot {key}: its parent chain loops at {k}"
            )));
        }
        let info = snapshotter.stat(&k)?;
        if info.kind != snapshot::Kind::Committed {
            return Err(Error::Invalid(format!(
                "snapshot {k} is {} and cannot be exported",
                info.kind
            )));
        }
        next = info.parent.clone();
        out.push(info);
    }
    out.reverse();
    Ok(out)
}

/// Whether the store has `digest` with `size` bytes.
fn present(store: &ContentStore, digest: &Digest, size: u64) -> bool {
    store.info(digest).is_ok_and(|i| i.size == size)
}

/// What the pull records say of snapshot `key` (see the module docs).
struct PulledBlobs {
    /// The snapshot was unpacked from a pulled image.
    base: bool,
    /// The pulled blob to use for it, if any.
    usable: Option<registry::LayerBlob>,
}

fn pulled(store: &ContentStore, key: &str, cfg: &CompressionConfig) -> PulledBlobs {
    let blobs = match registry::layer_blobs(store, key) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot read the pulled blobs of a snapshot");
            Vec::new()
        }
    };
    let base = !blobs.is_empty();
    let usable: Vec<_> = blobs
        .into_iter()
        .filter(|b| present(store, &b.digest, b.size))
        .collect();
    let same = usable
        .iter()
        .find(|b| Compression::from_media_type(&b.media_type) == Some(cfg.compression))
        .cloned();
    let usable = if cfg.force {
        same
    } else {
        same.or_else(|| {
            usable
                .into_iter()
                .find(|b| Compression::from_media_type(&b.media_type).is_some())
        })
    };
    PulledBlobs { base, usable }
}

/// The blob an earlier export made for `key` over `parent` with `opts`, if it is still
/// there.
fn remembered(
    md: &dyn MetadataStore,
    store: &ContentStore,
    key: &str,
    parent: Option<&str>,
    opts: &LayerOptions,
) -> Option<Record> {
    let bytes = match md.get(LAYER_BLOBS_TABLE, &record_key(key, opts)) {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot read a remembered layer blob");
            return None;
        }
    };
    let rec: Record = serde_json::from_slice(&bytes).ok()?;
    // A key names one snapshot for its whole life, but a record must never outlive a
    // snapshot removed and made again with other content under the same key.
    (rec.parent.as_deref() == parent && present(store, &rec.digest, rec.size)).then_some(rec)
}

/// Diffs snapshot `key` against `parent` into a new blob of the content store, file
/// times clamped to `epoch` when given.
fn compute(
    worker: &Worker,
    key: &str,
    parent: Option<&str>,
    cfg: &CompressionConfig,
    epoch: Option<i64>,
) -> Result<Record> {
    let mut opts = DiffOptions::default();
    opts.compression = cfg.compression;
    opts.compression_level = Some(cfg.effective_level());
    opts.source_date_epoch = epoch;
    let mut w = worker.content.writer()?;
    let stats = worker.diff(key, parent, &mut w, &opts)?;
    let digest = w.commit(Some((stats.digest, stats.size)))?;
    tracing::debug!(
        key,
        %digest,
        diff_id = %stats.diff_id,
        size = stats.size,
        entries = stats.entries,
        epoch,
        "layer blob made"
    );
    Ok(Record {
        parent: parent.map(String::from),
        diff_id: stats.diff_id,
        digest,
        size: stats.size,
        media_type: cfg.compression.layer_media_type().to_string(),
    })
}

/// The layers of `result` (a committed snapshot; `None` is scratch, which has none),
/// bottom first, each blob in the worker's content store. Blocking.
pub fn export_layers(
    worker: &Worker,
    result: Option<&str>,
    opts: &LayerOptions,
) -> Result<Vec<Layer>> {
    let Some(key) = result else {
        return Ok(Vec::new());
    };
    let store = &worker.content;
    let md = worker.metadata.as_ref();
    let cfg = &opts.compression;
    let mut out = Vec::new();
    for info in chain(worker.snapshotter.as_ref(), key)? {
        let created = Timestamp::from_secs(i64::try_from(info.created).unwrap_or(i64::MAX));
        let parent = info.parent.as_deref();
        let pulled = pulled(store, &info.key, cfg);
        if let Some(b) = pulled.usable {
            out.push(Layer {
                snapshot: info.key.clone(),
                media_type: b.media_type,
                digest: b.digest,
                size: b.size,
                diff_id: b.diff_id,
                created,
                origin: Origin::Pulled,
            });
            continue;
        }
        // A base layer made again (another compression forced, or its blob gone) keeps
        // its file times too.
        let layer_opts = LayerOptions {
            rewrite_epoch: opts.rewrite_epoch.filter(|_| !pulled.base),
            ..*opts
        };
        let (rec, origin) = match remembered(md, store, &info.key, parent, &layer_opts) {
            Some(rec) => (rec, Origin::Remembered),
            None => {
                let rec = compute(worker, &info.key, parent, cfg, layer_opts.rewrite_epoch)?;
                let value = serde_json::to_vec(&rec)
                    .map_err(|e| Error::Invalid(format!("layer record: {e}")))?;
                md.put(
                    LAYER_BLOBS_TABLE,
                    &record_key(&info.key, &layer_opts),
                    &value,
                )?;
                (rec, Origin::Computed)
            }
        };
        out.push(Layer {
            snapshot: info.key.clone(),
            media_type: rec.media_type,
            digest: rec.digest,
            size: rec.size,
            diff_id: rec.diff_id,
            created,
            origin,
        });
    }
    Ok(out)
}

/// A layer media type in the family the manifest uses (OCI or Docker), as upstream
/// converts them; unknown types are kept.
pub fn convert_media_type(media_type: &str, oci_types: bool) -> String {
    use oci::media::*;
    const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    let out = if oci_types {
        match media_type {
            DOCKER_LAYER => OCI_LAYER,
            DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
            DOCKER_LAYER_ZSTD => OCI_LAYER_ZSTD,
            DOCKER_LAYER_FOREIGN => OCI_LAYER_NONDIST,
            DOCKER_LAYER_FOREIGN_GZIP => OCI_LAYER_NONDIST_GZIP,
            other => other,
        }
    } else {
        match media_type {
            OCI_LAYER => DOCKER_LAYER,
            OCI_LAYER_GZIP => DOCKER_LAYER_GZIP,
            OCI_LAYER_ZSTD => DOCKER_LAYER_ZSTD,
            OCI_LAYER_NONDIST => DOCKER_LAYER_FOREIGN,
            OCI_LAYER_NONDIST_GZIP => DOCKER_LAYER_FOREIGN_GZIP,
            OCI_LAYER_NONDIST_ZSTD => DOCKER_LAYER_ZSTD,
            other => other,
        }
    };
    out.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::media;

    #[test]
    fn media_types_convert_both_ways() {
        assert_eq!(
            convert_media_type(media::OCI_LAYER_GZIP, false),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            convert_media_type(media::DOCKER_LAYER_GZIP, true),
            media::OCI_LAYER_GZIP
        );
        assert_eq!(
            convert_media_type(media::OCI_LAYER, false),
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(
            convert_media_type(media::OCI_LAYER_ZSTD, false),
            "application/vnd.docker.image.rootfs.diff.tar.zstd"
        );
        assert_eq!(
            convert_media_type(media::OCI_LAYER_ZSTD, true),
            media::OCI_LAYER_ZSTD
        );
        assert_eq!(convert_media_type("text/plain", true), "text/plain");
    }

    fn with(compression: CompressionConfig) -> LayerOptions {
        LayerOptions {
            compression,
            rewrite_epoch: None,
        }
    }

    #[test]
    fn record_keys_tell_compressions_and_levels_apart() {
        let gzip = CompressionConfig::default();
        let gzip6 = CompressionConfig {
            level: Some(6),
            ..gzip
        };
        let gzip9 = CompressionConfig {
            level: Some(9),
            ..gzip
        };
        let zstd = CompressionConfig {
            compression: Compression::Zstd,
            ..gzip
        };
        let key = |s, c| record_key(s, &with(c));
        assert_eq!(key("k", gzip), key("k", gzip6));
        assert_ne!(key("k", gzip), key("k", gzip9));
        assert_ne!(key("k", gzip), key("k", zstd));
        assert_ne!(key("k", gzip), key("j", gzip));
        // the keys of blobs made before rewrite-timestamp existed stay valid
        assert_eq!(key("k", gzip), b"k\x00gzip\x006");
    }

    #[test]
    fn rewritten_blobs_have_keys_of_their_own() {
        let plain = with(CompressionConfig::default());
        let at = |epoch| LayerOptions {
            rewrite_epoch: Some(epoch),
            ..plain
        };
        assert_ne!(record_key("k", &plain), record_key("k", &at(0)));
        assert_ne!(record_key("k", &at(1)), record_key("k", &at(10)));
        assert_eq!(record_key("k", &at(7)), b"k\x00gzip\x006\x00epoch=7");
    }
}
