//! OCI image layouts (image-spec `image-layout.md`): an `oci-layout` marker, an
//! `index.json` naming the images (`org.opencontainers.image.ref.name`), and
//! `blobs/sha256/<hex>`.
//!
//! Writing walks each image from the store (index → manifests, manifest → config and
//! layers) and copies every blob it reaches, to a directory or as a tar stream. Reading
//! imports every blob reachable from `index.json` into the store, verifying each one's
//! digest and size as it is ingested.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci::Digest;
use oci::media;
use oci::spec::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};

use crate::{ContentStore, Error, Result};

/// The annotation that names an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The image layout version we write and accept (major version 1).
pub const LAYOUT_VERSION: &str = "1.0.0";
const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";

/// One image of a layout: the descriptor of a manifest or an index, and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutImage {
    /// The image's top descriptor, without the ref-name annotation.
    pub descriptor: Descriptor,
    /// The `org.opencontainers.image.ref.name` annotation.
    pub name: Option<String>,
}

/// Errors specific to image layouts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The layout directory is not a valid layout.
    #[error("OCI layout {dir}: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    /// A blob of the layout is missing, misnamed or not what it claims to be.
    #[error("OCI layout {dir}: blob {digest}: {reason}")]
    BadBlob {
        dir: PathBuf,
        digest: String,
        reason: String,
    },
    /// Importing a blob of the layout failed (for example, a digest mismatch).
    #[error("OCI layout {dir}: blob {digest}: {source}")]
    Import {
        dir: PathBuf,
        digest: String,
        #[source]
        source: Box<Error>,
    },
    /// An image in the content store cannot be walked.
    #[error("image blob {digest} in the content store: {reason}")]
    BadImage { digest: String, reason: String },
    /// Writing a layout tar stream failed.
    #[error("OCI layout tar stream: writing {entry}: {source}")]
    TarWrite {
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// Every blob reachable from `roots` in the store (the roots included), each once, parents
/// before children. Checks that each is present with the size its descriptor gives.
pub fn image_blobs(store: &ContentStore, roots: &[Descriptor]) -> Result<Vec<Descriptor>> {
    Ok(walk(store, roots)?.into_iter().map(|(_, d)| d).collect())
}

fn walk(store: &ContentStore, roots: &[Descriptor]) -> Result<Vec<(Digest, Descriptor)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<Descriptor> = roots.iter().rev().cloned().collect();
    while let Some(d) = stack.pop() {
        let raw = d.digest().to_string();
        let bad = |reason: String| LayoutError::BadImage {
            digest: raw.clone(),
            reason,
        };
        let digest: Digest = raw
            .parse()
            .map_err(|e: oci::DigestError| bad(e.to_string()))?;
        if !seen.insert(digest) {
            continue;
        }
        let size = store.size(&digest)?;
        if size != d.size() {
            return Err(bad(format!(
                "descriptor says {} bytes, the store has {size}",
                d.size()
            ))
            .into());
        }
        let kids = if is_parent(&d) {
            children(&d, &store.read_all(&digest)?).map_err(bad)?
        } else {
            Vec::new()
        };
        stack.extend(kids.into_iter().rev());
        out.push((digest, d));
    }
    Ok(out)
}

fn is_parent(d: &Descriptor) -> bool {
    let mt: &str = d.media_type().as_ref();
    media::is_index(mt) || media::is_manifest(mt)
}

/// The descriptors an index or a manifest refers to.
fn children(d: &Descriptor, bytes: &[u8]) -> std::result::Result<Vec<Descriptor>, String> {
    let mt: &str = d.media_type().as_ref();
    if media::is_index(mt) {
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| format!("not an image index: {e}"))?;
        Ok(index.manifests().clone())
    } else if media::is_manifest(mt) {
        let m: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not an image manifest: {e}"))?;
        let mut out = vec![m.config().clone()];
        out.extend(m.layers().iter().cloned());
        Ok(out)
    } else {
        Ok(Vec::new())
    }
}

/// The bytes of `index.json` for `images`.
fn index_json(images: &[LayoutImage]) -> Result<Vec<u8>> {
    let manifests: Vec<Descriptor> = images
        .iter()
        .map(|i| {
            let mut d = i.descriptor.clone();
            if let Some(name) = &i.name {
                let mut ann = d.annotations().clone().unwrap_or_default();
                ann.insert(REF_NAME_ANNOTATION.to_string(), name.clone());
                d.set_annotations(Some(ann));
            }
            d
        })
        .collect();
    let bad = |reason: String| LayoutError::BadImage {
        digest: "index.json".into(),
        reason,
    };
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    Ok(serde_json::to_vec_pretty(&index).map_err(|e| bad(e.to_string()))?)
}

fn layout_marker() -> Vec<u8> {
    format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").into_bytes()
}

/// Writes an image layout of `images` into `dir` (created if needed): their blobs, then
/// `oci-layout`, then `index.json` (replaced atomically, so a reader never sees an index
/// naming blobs that are not there yet). Blobs already in `dir` with the right size are
/// kept.
pub fn write_layout(store: &ContentStore, dir: &Path, images: &[LayoutImage]) -> Result<()> {
    let roots: Vec<Descriptor> = images.iter().map(|i| i.descriptor.clone()).collect();
    let blobs = walk(store, &roots)?;
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(Error::io("create directory", &blob_dir))?;
    for (digest, d) in &blobs {
        let dest = blob_dir.join(digest.hex());
        if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == d.size()) {
            continue;
        }
        let tmp = blob_dir.join(format!(".{}.tmp", digest.hex()));
        let mut src = store.open_blob(digest)?;
        let mut out = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        io::copy(&mut src, &mut out).map_err(Error::io("copy into", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(Error::io("rename into", &dest))?;
    }
    write_atomic(&dir.join(LAYOUT_FILE), &layout_marker())?;
    write_atomic(&dir.join(INDEX_FILE), &index_json(images)?)?;
    tracing::debug!(dir = %dir.display(), blobs = blobs.len(), "OCI layout written");
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("rename into", path))
}

/// Writes an image layout of `images` as a tar stream to `out` and returns `out`. Entries
/// are `blobs/`, `blobs/sha256/`, each blob, `oci-layout`, `index.json`, with fixed
/// owners, modes and times, so the same images give the same bytes.
pub fn write_layout_tar<W: Write>(
    store: &ContentStore,
    images: &[LayoutImage],
    out: W,
) -> Result<W> {
    let roots: Vec<Descriptor> = images.iter().map(|i| i.descriptor.clone()).collect();
    let blobs = walk(store, &roots)?;
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, io::empty())
            .map_err(|e| tar_err(dir, e))?;
    }
    for (digest, d) in &blobs {
        let name = format!("blobs/sha256/{}", digest.hex());
        let f = store.open_blob(digest)?;
        let mut h = header(tar::EntryType::Regular, 0o444, d.size());
        tar.append_data(&mut h, &name, f.take(d.size()))
            .map_err(|e| tar_err(&name, e))?;
    }
    for (name, bytes) in [
        (LAYOUT_FILE, layout_marker()),
        (INDEX_FILE, index_json(images)?),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o444, bytes.len() as u64);
        tar.append_data(&mut h, name, bytes.as_slice())
            .map_err(|e| tar_err(name, e))?;
    }
    tar.into_inner().map_err(|e| tar_err("end of archive", e))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn tar_err(entry: &str, source: io::Error) -> Error {
    LayoutError::TarWrite {
        entry: entry.to_string(),
        source,
    }
    .into()
}

/// Reads the image layout in `dir`: checks `oci-layout`, parses `index.json`, and imports
/// every blob reachable from it into `store` (recorded in `lease` when given), verifying
/// each one's digest and size. Returns the images `index.json` lists. A blob whose digest
/// the store already has is not read again.
pub fn read_layout(
    store: &ContentStore,
    dir: &Path,
    lease: Option<&str>,
) -> Result<Vec<LayoutImage>> {
    let invalid = |reason: String| LayoutError::Invalid {
        dir: dir.to_path_buf(),
        reason,
    };
    let marker = std::fs::read(dir.join(LAYOUT_FILE))
        .map_err(|e| invalid(format!("cannot read {LAYOUT_FILE}: {e}")))?;
    let marker: serde_json::Value =
        serde_json::from_slice(&marker).map_err(|e| invalid(format!("{LAYOUT_FILE}: {e}")))?;
    match marker.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => {}
        Some(v) => return Err(invalid(format!("unsupported image layout version {v:?}")).into()),
        None => return Err(invalid(format!("{LAYOUT_FILE} has no imageLayoutVersion")).into()),
    }
    let index = std::fs::read(dir.join(INDEX_FILE))
        .map_err(|e| invalid(format!("cannot read {INDEX_FILE}: {e}")))?;
    let index: ImageIndex =
        serde_json::from_slice(&index).map_err(|e| invalid(format!("{INDEX_FILE}: {e}")))?;

    let mut seen = HashSet::new();
    let mut stack: Vec<Descriptor> = index.manifests().iter().rev().cloned().collect();
    while let Some(d) = stack.pop() {
        let raw = d.digest().to_string();
        let bad = |reason: String| LayoutError::BadBlob {
            dir: dir.to_path_buf(),
            digest: raw.clone(),
            reason,
        };
        let digest: Digest = raw
            .parse()
            .map_err(|e: oci::DigestError| bad(e.to_string()))?;
        if !seen.insert(digest) {
            continue;
        }
        let path = dir.join("blobs").join("sha256").join(digest.hex());
        let file =
            File::open(&path).map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
        store
            .ingest_into(lease, file, Some((digest, d.size())))
            .map_err(|e| LayoutError::Import {
                dir: dir.to_path_buf(),
                digest: raw.clone(),
                source: Box::new(e),
            })?;
        if is_parent(&d) {
            let kids = children(&d, &store.read_all(&digest)?).map_err(bad)?;
            stack.extend(kids.into_iter().rev());
        }
    }
    tracing::debug!(dir = %dir.display(), blobs = seen.len(), "OCI layout imported");
    Ok(index.manifests().iter().map(named).collect())
}

/// Splits the ref-name annotation off a descriptor from `index.json`.
fn named(d: &Descriptor) -> LayoutImage {
    let mut descriptor = d.clone();
    let mut name = None;
    if let Some(mut ann) = d.annotations().clone() {
        name = ann.remove(REF_NAME_ANNOTATION);
        descriptor.set_annotations(if ann.is_empty() { None } else { Some(ann) });
    }
    LayoutImage { descriptor, name }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::str::FromStr;

    fn desc(mt: MediaType, data: &[u8]) -> Descriptor {
        let d = oci::spec::Digest::from_str(&Digest::of(data).to_string()).unwrap();
        Descriptor::new(mt, data.len() as u64, d)
    }

    #[test]
    fn index_json_names_images_and_read_strips_the_name() {
        let mut d = desc(MediaType::ImageManifest, b"m");
        d.set_annotations(Some(HashMap::from([("a".to_string(), "b".to_string())])));
        let images = [LayoutImage {
            descriptor: d.clone(),
            name: Some("docker.io/library/x:1".into()),
        }];
        let bytes = index_json(&images).unwrap();
        let index: ImageIndex = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index.schema_version(), 2);
        let ann = index.manifests()[0].annotations().clone().unwrap();
        assert_eq!(ann[REF_NAME_ANNOTATION], "docker.io/library/x:1");
        assert_eq!(named(&index.manifests()[0]), images[0]);
    }

    #[test]
    fn children_of_manifest_and_index() {
        let config = desc(MediaType::ImageConfig, b"{}");
        let layer = desc(MediaType::ImageLayerGzip, b"layer");
        let m = oci::spec::ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(config.clone())
            .layers(vec![layer.clone()])
            .build()
            .unwrap();
        let mbytes = serde_json::to_vec(&m).unwrap();
        let md = desc(MediaType::ImageManifest, &mbytes);
        assert_eq!(children(&md, &mbytes).unwrap(), vec![config.clone(), layer]);
        assert!(children(&config, b"{}").unwrap().is_empty());
        let err = children(&md, b"[1,2]").unwrap_err();
        assert!(err.contains("not an image manifest"), "{err}");
        let docker_list = desc(MediaType::Other(media::DOCKER_MANIFEST_LIST.into()), b"x");
        let list = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(children(&docker_list, list).unwrap().is_empty());
    }
}
