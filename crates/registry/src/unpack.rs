//! Unpacking a pulled image into snapshots, one committed snapshot per layer chain.

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

/// Applies the image's layers into `snapshotter`, skipping stacks that are already there,
/// and returns the key of the committed top snapshot (`None` for an image with no layers).
/// Each layer's diffID is checked while it is applied. Blocking: run it on a blocking
/// thread.
pub fn unpack(
    image: &PulledImage,
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
) -> Result<Option<String>> {
    let chains = chain_ids(&image.diff_ids);
    let mode = if snapshotter.name() == "overlayfs" {
        WhiteoutMode::Overlay { userxattr: false }
    } else {
        WhiteoutMode::Delete
    };
    let mut parent: Option<String> = None;
    for (i, chain) in chains.iter().enumerate() {
        let key = snapshot_key(chain);
        if snapshotter.stat(&key).is_ok() {
            parent = Some(key);
            continue;
        }
        let (layer, _, _) = &image.layers[i];
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
            if stats.diff_id != image.diff_ids[i] {
                return Err(Error::Unpack {
                    layer: layer.to_string(),
                    reason: format!(
                        "uncompressed digest {} does not match the config's diff_id {}",
                        stats.diff_id, image.diff_ids[i]
                    ),
                });
            }
            snapshotter.commit(&key, &tmp)?;
            Ok(())
        })();
        match applied {
            Ok(()) => tracing::debug!(%layer, key, "layer unpacked"),
            Err(e) => {
                let _ = snapshotter.remove(&tmp);
                // Another unpack of the same stack may have won the race.
                if snapshotter.stat(&key).is_err() {
                    return Err(e);
                }
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
