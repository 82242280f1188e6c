//! Writing and checking OCI image layout directories.
//!
//! A layout is `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json` listing manifests,
//! and `blobs/sha256/<hex>` holding every blob. [`write()`] produces one for an [`Image`];
//! [`verify`] checks one produced by anything (us, the `oci` exporter, skopeo) for dangling
//! references and content that does not match its name.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
    PlatformBuilder,
};

use crate::image::{Blob, Image, host_goarch};
use crate::{Error, Result, sha256_digest};

/// Contents of the `oci-layout` marker file.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// What [`verify`] found in a valid layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSummary {
    /// `(org.opencontainers.image.ref.name, manifest digest)` for each `index.json` entry.
    pub manifests: Vec<(Option<String>, String)>,
    /// Number of files under `blobs/sha256/`, all verified.
    pub blob_count: usize,
}

/// Writes `image` to `dir` as an OCI layout whose `index.json` lists only this image, annotated
/// with `ref_name`. Creates `dir` if needed; an existing `index.json` is replaced.
pub fn write(dir: &Path, image: &Image, ref_name: &str) -> Result<()> {
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(Error::io(format!("create {}", blob_dir.display())))?;
    for blob in image.all_blobs() {
        write_file(&blob_dir.join(blob.hex()), blob.bytes())?;
    }
    write_file(&dir.join("oci-layout"), OCI_LAYOUT.as_bytes())?;

    let mut descriptor = image.manifest().descriptor()?;
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        ref_name.to_owned(),
    )])));
    let platform = PlatformBuilder::default()
        .architecture(host_goarch())
        .os("linux")
        .build()
        .map_err(|source| Error::Oci {
            context: "index platform".into(),
            source,
        })?;
    descriptor.set_platform(Some(platform));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(|source| Error::Oci {
            context: "index.json".into(),
            source,
        })?;
    let bytes = serde_json::to_vec(&index).map_err(|source| Error::Json {
        context: "serialize index.json".into(),
        source,
    })?;
    write_file(&dir.join("index.json"), &bytes)
}

/// Checks that `dir` is a valid OCI layout: the marker file is right, `index.json` parses, every
/// manifest it lists (and each manifest's config and layers) exists with the declared size, and
/// every file under `blobs/sha256/` hashes to its own name.
pub fn verify(dir: &Path) -> Result<LayoutSummary> {
    let fail = |reason: String| Error::Layout {
        dir: dir.to_path_buf(),
        reason,
    };
    let marker: serde_json::Value = read_json(dir, "oci-layout")?;
    if marker["imageLayoutVersion"] != "1.0.0" {
        return Err(fail(format!("oci-layout has unexpected content {marker}")));
    }
    let index: ImageIndex = read_json(dir, "index.json")?;
    let mut manifests = Vec::new();
    for desc in index.manifests() {
        let bytes = read_blob(dir, desc)?;
        let is_manifest = *desc.media_type() == MediaType::ImageManifest;
        if is_manifest {
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                    context: format!("parse manifest {}", desc.digest()),
                    source,
                })?;
            read_blob(dir, manifest.config())?;
            for layer in manifest.layers() {
                read_blob(dir, layer)?;
            }
        }
        let name = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME).cloned());
        manifests.push((name, desc.digest().to_string()));
    }

    let blob_dir = dir.join("blobs").join("sha256");
    let mut blob_count = 0;
    for entry in
        fs::read_dir(&blob_dir).map_err(Error::io(format!("list {}", blob_dir.display())))?
    {
        let entry = entry.map_err(Error::io(format!("list {}", blob_dir.display())))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        let actual = sha256_digest(&bytes);
        if actual != format!("sha256:{name}") {
            return Err(Error::DigestMismatch {
                what: path.display().to_string(),
                expected: format!("sha256:{name}"),
                actual,
            });
        }
        blob_count += 1;
    }
    Ok(LayoutSummary {
        manifests,
        blob_count,
    })
}

/// Reads the blob `desc` points at, checking its size and digest.
pub fn read_blob(dir: &Path, desc: &Descriptor) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(Error::Layout {
            dir: dir.to_path_buf(),
            reason: format!("unsupported digest algorithm in {digest}"),
        });
    };
    let path = blob_path(dir, hex);
    let bytes = fs::read(&path).map_err(Error::io(format!(
        "read blob {digest} ({}) referenced by the layout",
        path.display()
    )))?;
    if bytes.len() as u64 != desc.size() {
        return Err(Error::Layout {
            dir: dir.to_path_buf(),
            reason: format!(
                "blob {digest} is {} bytes, descriptor says {}",
                bytes.len(),
                desc.size()
            ),
        });
    }
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: path.display().to_string(),
            expected: digest,
            actual,
        });
    }
    Ok(bytes)
}

/// `dir/blobs/sha256/<hex>`.
pub fn blob_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join("blobs").join("sha256").join(hex)
}

/// Loads a [`Blob`] of the given media type from a layout, verifying its digest.
pub fn load_blob(dir: &Path, media_type: &str, digest: &str) -> Result<Blob> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let path = blob_path(dir, hex);
    let bytes = fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    let blob = Blob::new(media_type, bytes);
    if blob.digest() != digest {
        return Err(Error::DigestMismatch {
            what: path.display().to_string(),
            expected: digest.to_owned(),
            actual: blob.digest().to_owned(),
        });
    }
    Ok(blob)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        context: format!("parse {}", path.display()),
        source,
    })
}

/// Writes via a temp file and rename so a reader never sees a half-written blob.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-testkit");
    fs::write(&tmp, bytes).map_err(Error::io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageSettings, Layer};
    use crate::layer::{LayerBuilder, Meta};

    fn tiny() -> Image {
        let mut b = LayerBuilder::new();
        b.file("hello", "hi\n", Meta::root(0o644)).unwrap();
        let settings = ImageSettings {
            env: vec![],
            cmd: vec!["true".into()],
            working_dir: None,
            user: None,
            history: vec!["tiny".into()],
        };
        Image::assemble(vec![Layer::from_bytes(b.finish().unwrap())], &settings).unwrap()
    }

    #[test]
    fn written_layout_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let img = tiny();
        write(dir.path(), &img, "v1").unwrap();
        let summary = verify(dir.path()).unwrap();
        assert_eq!(
            summary.manifests,
            [(Some("v1".to_owned()), img.manifest().digest().to_owned())]
        );
        assert_eq!(summary.blob_count, 3);
        let cfg = load_blob(dir.path(), "x", img.config().digest()).unwrap();
        assert_eq!(cfg.bytes(), img.config().bytes());
    }

    #[test]
    fn corrupted_blob_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let img = tiny();
        write(dir.path(), &img, "v1").unwrap();
        let layer = blob_path(dir.path(), img.layers()[0].blob().hex());
        let mut bytes = fs::read(&layer).unwrap();
        bytes[0] ^= 0xff;
        fs::write(&layer, bytes).unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn missing_blob_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let img = tiny();
        write(dir.path(), &img, "v1").unwrap();
        fs::remove_file(blob_path(dir.path(), img.config().hex())).unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert!(err.to_string().contains(img.config().digest()), "{err}");
    }
}
