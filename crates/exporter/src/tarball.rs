//! The `oci` and `docker` tarballs, as containerd's archive exporter writes them for
//! upstream: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`), plus, for
//! `docker`, the `manifest.json` that `docker load` reads (config and layer paths into
//! `blobs/`, tags). Entries are sorted by name, with fixed owners, modes and times.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use content::ContentStore;
use oci::Digest;
use serde::Serialize;

use crate::image::{Descriptor, Exported, normalize_name};
use crate::{Error, Result, go_escape};

/// The annotation containerd names an image by (the full reference).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in a layout (the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why the `docker` exporter refuses a multi-platform result, as upstream words it.
pub const DOCKER_NO_INDEX: &str =
    "docker exporter does not currently support exporting manifest lists";

/// Which tarball.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout.
    Oci,
    /// An OCI image layout with Docker's `manifest.json`.
    Docker,
}

/// The `org.opencontainers.image.ref.name` of a fully qualified name: its tag (with the
/// digest when there is one too), or the whole name when it has only a digest.
fn oci_ref_name(r: &llb::reference::Reference) -> String {
    match (&r.tag, &r.digest) {
        (Some(t), Some(d)) => format!("{t}@{d}"),
        (Some(t), None) => t.clone(),
        _ => r.to_string(),
    }
}

/// A name as Docker shows it: without `docker.io/` and `library/`.
fn familiar(r: &llb::reference::Reference) -> String {
    let full = r.to_string();
    match full.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => full,
    }
}

/// The fully qualified names (default tag added) of `name`, a comma-separated list.
pub fn normalized_names(name: &str) -> Result<Vec<String>> {
    name.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| normalize_name(n).map(|r| r.to_string()))
        .collect()
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    /// `null` without names, as Go writes an empty list.
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

enum Body {
    Dir,
    Bytes(Vec<u8>),
    Blob(Digest, u64),
}

fn json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v)
        .map(go_escape)
        .map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

/// Writes what an export made (an image, or the index of a multi-platform export, which
/// only the OCI format holds) as a `format` tarball to `out`, named by `names` (fully
/// qualified, see [`normalized_names`]); returns `out`. Every blob is read from `store`
/// and checked against its descriptor's size.
pub fn write_tarball<W: Write>(
    store: &ContentStore,
    exported: &Exported,
    names: &[String],
    format: Format,
    out: W,
) -> Result<W> {
    let image = match (exported, format) {
        (Exported::Image(image), _) => Some(&**image),
        (Exported::Index(_), Format::Oci) => None,
        (Exported::Index(_), Format::Docker) => {
            return Err(Error::Unsupported(DOCKER_NO_INDEX.into()));
        }
    };
    let root = exported.root();
    let mut entries: BTreeMap<String, Body> = BTreeMap::new();
    entries.insert("blobs/".into(), Body::Dir);
    entries.insert("blobs/sha256/".into(), Body::Dir);
    entries.insert(
        "oci-layout".into(),
        Body::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    for d in exported.blobs() {
        entries.insert(blob_path(&d.digest), Body::Blob(d.digest, d.size));
    }

    let mut manifests = Vec::new();
    let mut tags = Vec::new();
    if names.is_empty() {
        manifests.push(root.clone());
    }
    for name in names {
        let r = normalize_name(name)?;
        let mut d = root.clone();
        d.annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), name.clone());
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), oci_ref_name(&r));
        manifests.push(d);
        tags.push(familiar(&r));
    }
    let index = Index {
        schema_version: 2,
        media_type: oci::media::OCI_INDEX,
        manifests,
    };
    entries.insert(
        "index.json".into(),
        Body::Bytes(json("index.json", &index)?),
    );
    if let (Some(image), Format::Docker) = (image, format) {
        let m = [DockerManifest {
            config: blob_path(&image.config.digest),
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers: image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        }];
        entries.insert(
            "manifest.json".into(),
            Body::Bytes(json("manifest.json", &m)?),
        );
    }

    let mut tar = tar::Builder::new(out);
    for (name, body) in entries {
        let err = |source: io::Error| Error::Write {
            entry: name.clone(),
            source,
        };
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, &name, io::empty()).map_err(err)?;
            }
            Body::Bytes(b) => {
                h.set_entry_type(tar::EntryType::Regular);
                // The layout files upstream writes read-only, the indexes writable.
                h.set_mode(if name == "oci-layout" { 0o444 } else { 0o644 });
                h.set_size(b.len() as u64);
                tar.append_data(&mut h, &name, b.as_slice()).map_err(err)?;
            }
            Body::Blob(digest, size) => {
                let f = store.open_blob(&digest)?;
                let have = f.metadata().map_err(err)?.len();
                if have != size {
                    return Err(Error::Invalid(format!(
                        "blob {digest}: the descriptor says {size} bytes, the content store has {have}"
                    )));
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o444);
                h.set_size(size);
                tar.append_data(&mut h, &name, f.take(size)).map_err(err)?;
            }
        }
    }
    tar.into_inner().map_err(|source| Error::Write {
        entry: "end of archive".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Descriptor, Image, ImageIndex};
    use oci::media;
    use std::sync::Arc;

    fn image(store: &ContentStore) -> Image {
        let layer = store.put(b"layer").unwrap();
        let config = br#"{"os":"linux"}"#;
        let config_d = store.put(config).unwrap();
        let manifest = br#"{"m":1}"#;
        store.put(manifest).unwrap();
        let mut l = Descriptor::of(media::OCI_LAYER_GZIP, b"layer");
        l.digest = layer;
        let mut c = Descriptor::of(media::OCI_CONFIG, config);
        c.digest = config_d;
        Image {
            manifest: Descriptor::of(media::OCI_MANIFEST, manifest),
            config: c,
            layers: vec![l],
        }
    }

    fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn docker_tarball_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ContentStore::open(dir.path(), Arc::new(metadata::MemStore::default())).unwrap();
        let img = image(&store);
        let names = normalized_names("x:1,quay.io/a/b").unwrap();
        assert_eq!(names, ["docker.io/library/x:1", "quay.io/a/b:latest"]);
        let exported = Exported::Image(Box::new(img.clone()));
        let out = write_tarball(&store, &exported, &names, Format::Docker, Vec::new()).unwrap();
        let e = entries(&out);
        let list: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        let hex = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let mut blobs = [
            hex(&img.manifest.digest),
            hex(&img.config.digest),
            hex(&img.layers[0].digest),
        ];
        blobs.sort();
        let mut want = vec!["blobs/", "blobs/sha256/"];
        want.extend(blobs.iter().map(String::as_str));
        want.extend(["index.json", "manifest.json", "oci-layout"]);
        assert_eq!(list, want);

        let get = |n: &str| e.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let index: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
        let m = &index["manifests"];
        assert_eq!(m.as_array().unwrap().len(), 2);
        assert_eq!(m[0]["annotations"][ANNOTATION_REF_NAME], "1");
        assert_eq!(
            m[0]["annotations"][ANNOTATION_IMAGE_NAME],
            "docker.io/library/x:1"
        );
        assert_eq!(m[1]["annotations"][ANNOTATION_REF_NAME], "latest");
        let dm: serde_json::Value = serde_json::from_slice(&get("manifest.json")).unwrap();
        assert_eq!(
            dm[0]["RepoTags"],
            serde_json::json!(["x:1", "quay.io/a/b:latest"])
        );
        assert_eq!(dm[0]["Config"], hex(&img.config.digest));
        assert_eq!(dm[0]["Layers"][0], hex(&img.layers[0].digest));
        assert_eq!(get(&hex(&img.layers[0].digest)), b"layer");
    }

    #[test]
    fn oci_tarball_without_names_and_missing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ContentStore::open(dir.path(), Arc::new(metadata::MemStore::default())).unwrap();
        let img = image(&store);
        let out = write_tarball(
            &store,
            &Exported::Image(Box::new(img.clone())),
            &[],
            Format::Oci,
            Vec::new(),
        )
        .unwrap();
        let e = entries(&out);
        assert!(!e.iter().any(|(n, _)| n == "manifest.json"));
        let index: serde_json::Value =
            serde_json::from_slice(&e.iter().find(|(n, _)| n == "index.json").unwrap().1).unwrap();
        assert!(index["manifests"][0].get("annotations").is_none());

        let mut broken = img.clone();
        broken.layers[0].digest = Digest::of(b"absent");
        let err = write_tarball(
            &store,
            &Exported::Image(Box::new(broken)),
            &[],
            Format::Oci,
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn oci_tarball_of_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ContentStore::open(dir.path(), Arc::new(metadata::MemStore::default())).unwrap();
        let img = image(&store);
        let mut other = img.clone();
        let config = br#"{"os":"linux","architecture":"arm64"}"#;
        other.config = Descriptor::of(media::OCI_CONFIG, config);
        store.put(config).unwrap();
        let manifest = br#"{"m":2}"#;
        other.manifest = Descriptor::of(media::OCI_MANIFEST, manifest);
        store.put(manifest).unwrap();
        let index_bytes = br#"{"i":1}"#;
        store.put(index_bytes).unwrap();
        let index = Exported::Index(Box::new(ImageIndex {
            descriptor: Descriptor::of(media::OCI_INDEX, index_bytes),
            manifests: vec![img.clone(), other.clone()],
        }));
        let names = normalized_names("x:1").unwrap();
        let out = write_tarball(&store, &index, &names, Format::Oci, Vec::new()).unwrap();
        let e = entries(&out);
        let hex = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        for d in [
            &index.root().digest,
            &img.manifest.digest,
            &img.config.digest,
            &img.layers[0].digest,
            &other.manifest.digest,
            &other.config.digest,
        ] {
            assert!(e.iter().any(|(n, _)| *n == hex(d)), "{d} missing");
        }
        // the shared layer once
        assert_eq!(
            e.iter()
                .filter(|(n, _)| n.starts_with("blobs/sha256/") && n.len() > 13)
                .count(),
            6
        );
        let idx: serde_json::Value =
            serde_json::from_slice(&e.iter().find(|(n, _)| n == "index.json").unwrap().1).unwrap();
        let m = idx["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["mediaType"], media::OCI_INDEX);
        assert_eq!(m[0]["digest"], index.root().digest.to_string());
        assert_eq!(m[0]["annotations"][ANNOTATION_REF_NAME], "1");

        let err = write_tarball(&store, &index, &names, Format::Docker, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), DOCKER_NO_INDEX);
    }
}
