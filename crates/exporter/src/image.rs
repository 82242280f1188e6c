//! Committing an image: the config and the manifest (Docker schema 2 or OCI) written to the
//! content store, and what the exporter answers the client about it.

use std::collections::BTreeMap;

use base64::Engine;
use content::ContentStore;
use oci::{Digest, media};
use serde::Serialize;

use crate::config::{LayerInfo, default_config, patch_config};
use crate::layers::{Layer, convert_media_type};
use crate::options::{Annotations, ExportOptions};
use crate::time::Timestamp;
use crate::{Error, Result, go_escape};

/// Exporter response key: the digest of the image's manifest.
pub const RESPONSE_DIGEST: &str = "containerimage.digest";
/// Exporter response key: the digest of the image's config.
pub const RESPONSE_CONFIG_DIGEST: &str = "containerimage.config.digest";
/// Exporter response key: the manifest's descriptor, base64 of its JSON.
pub const RESPONSE_DESCRIPTOR: &str = "containerimage.descriptor";
/// Exporter response key: the image's names, comma-separated.
pub const RESPONSE_NAME: &str = "image.name";
/// The annotation the tarball exporters put on the descriptor: when the image was made.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// A platform in a descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl From<&llb::Platform> for Platform {
    fn from(p: &llb::Platform) -> Platform {
        Platform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            os_version: p.os_version.clone(),
            os_features: p.os_features.clone(),
            variant: p.variant.clone(),
        }
    }
}

/// A content descriptor, with its fields in image-spec order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor of `media_type` for `bytes`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// The descriptor as Go's encoder writes it (compact).
    pub fn to_json(&self) -> Vec<u8> {
        go_escape(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

/// What the image is made from besides its layers.
#[derive(Clone, Debug, Default)]
pub struct ImageSource {
    /// The frontend's image config; an LLB build has none and gets the host platform's
    /// empty config.
    pub config: Option<Vec<u8>>,
    /// The platform the frontend built for, given to the manifest's descriptor.
    pub platform: Option<llb::Platform>,
    /// `SOURCE_DATE_EPOCH` from the build (the frontend's build argument); the
    /// exporter's own `source-date-epoch` wins over it.
    pub epoch: Option<i64>,
}

/// An image committed to the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The manifest's descriptor, with the `manifest-descriptor` annotations and the
    /// platform when known.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The image index of a multi-platform export, committed to the content store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    /// The index's descriptor, with the `index-descriptor` annotations.
    pub descriptor: Descriptor,
    /// The images it lists, in order, each manifest descriptor with its platform.
    pub manifests: Vec<Image>,
}

/// What an image export made: one image, or an index of one image per platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exported {
    Image(Box<Image>),
    Index(Box<ImageIndex>),
}

impl Exported {
    /// The descriptor of what is named, pushed and listed in a layout: the manifest, or
    /// the index.
    pub fn root(&self) -> &Descriptor {
        match self {
            Exported::Image(i) => &i.manifest,
            Exported::Index(x) => &x.descriptor,
        }
    }

    /// [`Exported::root`], to add annotations to.
    pub fn root_mut(&mut self) -> &mut Descriptor {
        match self {
            Exported::Image(i) => &mut i.manifest,
            Exported::Index(x) => &mut x.descriptor,
        }
    }

    /// The images, in order.
    pub fn images(&self) -> &[Image] {
        match self {
            Exported::Image(i) => std::slice::from_ref(&**i),
            Exported::Index(x) => &x.manifests,
        }
    }

    /// Every blob it is made of (the root first), each once.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let root = matches!(self, Exported::Index(_)).then(|| self.root());
        for d in root.into_iter().chain(
            self.images()
                .iter()
                .flat_map(|i| [&i.manifest, &i.config].into_iter().chain(&i.layers)),
        ) {
            if seen.insert(d.digest) {
                out.push(d);
            }
        }
        out
    }
}

/// Writes the config and manifest of an image of `layers` into `store`.
pub fn commit(
    store: &ContentStore,
    layers: &[Layer],
    source: &ImageSource,
    opts: &ExportOptions,
    now: Timestamp,
) -> Result<Image> {
    let platform = source.platform.as_ref().map(ToString::to_string);
    let annotations = opts.annotations.for_platform(platform.as_deref())?;
    commit_manifest(store, layers, source, opts, now, &annotations)
}

/// Writes the images of a multi-platform export, one per platform in the order given
/// (each `(layers, source)`, the source naming its platform), and the image index (an
/// OCI index, or a Docker manifest list without OCI media types) listing them, each
/// with its platform, as upstream's image writer does.
pub fn commit_index(
    store: &ContentStore,
    parts: &[(Vec<Layer>, ImageSource)],
    opts: &ExportOptions,
    now: Timestamp,
) -> Result<ImageIndex> {
    let mut platforms = Vec::with_capacity(parts.len());
    for (_, source) in parts {
        let p = source.platform.as_ref().ok_or_else(|| {
            Error::Invalid("a multi-platform export needs the platform of every image".into())
        })?;
        platforms.push(p.to_string());
    }
    opts.annotations.check_platforms(&platforms)?;
    let mut manifests = Vec::with_capacity(parts.len());
    for ((layers, source), platform) in parts.iter().zip(&platforms) {
        let annotations = opts.annotations.manifest_for(Some(platform));
        manifests.push(commit_manifest(
            store,
            layers,
            source,
            opts,
            now,
            &annotations,
        )?);
    }
    let media_type = if opts.oci_types() {
        media::OCI_INDEX
    } else {
        media::DOCKER_MANIFEST_LIST
    };
    let (index_annotations, descriptor_annotations) = opts.annotations.index_annotations();
    let index = Index {
        schema_version: 2,
        media_type,
        manifests: manifests.iter().map(|m| m.manifest.clone()).collect(),
        annotations: &index_annotations,
    };
    let bytes = go_escape(
        serde_json::to_vec_pretty(&index)
            .map_err(|e| Error::Invalid(format!("image index: {e}")))?,
    );
    let mut descriptor = Descriptor::of(media_type, &bytes);
    store.ingest(bytes.as_slice(), Some((descriptor.digest, descriptor.size)))?;
    descriptor.annotations = descriptor_annotations;
    tracing::debug!(
        index = %descriptor.digest,
        manifests = manifests.len(),
        "image index committed"
    );
    Ok(ImageIndex {
        descriptor,
        manifests,
    })
}

/// Writes the config and manifest of one image, with `annotations` (already chosen for
/// its platform).
fn commit_manifest(
    store: &ContentStore,
    layers: &[Layer],
    source: &ImageSource,
    opts: &ExportOptions,
    now: Timestamp,
    annotations: &Annotations,
) -> Result<Image> {
    let oci = opts.oci_types();
    let config = match &source.config {
        Some(c) if !c.is_empty() => c.clone(),
        _ => default_config(&llb::Platform::host()),
    };
    let epoch = opts.epoch(source.epoch).map(Timestamp::from_secs);
    let infos: Vec<LayerInfo> = layers
        .iter()
        .map(|l| LayerInfo {
            diff_id: l.diff_id,
            created: l.created,
        })
        .collect();
    let config = patch_config(&config, &infos, epoch, now)?;
    let (manifest_type, config_type) = if oci {
        (media::OCI_MANIFEST, media::OCI_CONFIG)
    } else {
        (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
    };
    let config_desc = Descriptor::of(config_type, &config);
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor {
            media_type: convert_media_type(&l.media_type, oci),
            digest: l.digest,
            size: l.size,
            annotations: BTreeMap::new(),
            platform: None,
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest_type,
        config: config_desc.clone(),
        layers: layer_descs.clone(),
        annotations: &annotations.manifest,
    };
    let manifest = go_escape(
        serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Invalid(format!("image manifest: {e}")))?,
    );
    store.ingest(
        config.as_slice(),
        Some((config_desc.digest, config_desc.size)),
    )?;
    let mut manifest_desc = Descriptor::of(manifest_type, &manifest);
    store.ingest(
        manifest.as_slice(),
        Some((manifest_desc.digest, manifest_desc.size)),
    )?;
    manifest_desc
        .annotations
        .clone_from(&annotations.manifest_descriptor);
    manifest_desc.platform = source.platform.as_ref().map(Platform::from);
    tracing::debug!(
        manifest = %manifest_desc.digest,
        config = %config_desc.digest,
        layers = layers.len(),
        "image committed"
    );
    Ok(Image {
        manifest: manifest_desc,
        config: config_desc,
        layers: layer_descs,
    })
}

/// The exporter response for what an export made: the digest of its root (the manifest,
/// or the index of a multi-platform export), the config's digest (a single image only),
/// the root's descriptor, and `names` when there are any.
pub fn response(exported: &Exported, names: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let root = exported.root();
    out.insert(RESPONSE_DIGEST.into(), root.digest.to_string());
    if let Exported::Image(image) = exported {
        out.insert(
            RESPONSE_CONFIG_DIGEST.into(),
            image.config.digest.to_string(),
        );
    }
    out.insert(
        RESPONSE_DESCRIPTOR.into(),
        base64::engine::general_purpose::STANDARD.encode(root.to_json()),
    );
    if !names.is_empty() {
        out.insert(RESPONSE_NAME.into(), names.to_string());
    }
    out
}

/// The names of an `image` export: `name`, plus `PREFIX@DIGEST` when a dangling prefix
/// is set (and, with `danging-name-empty-only`, no name is).
pub fn image_names(opts: &ExportOptions, digest: &Digest) -> String {
    let mut names = opts.name.clone();
    if !opts.dangling_prefix.is_empty() && (!opts.dangling_empty_only || names.is_empty()) {
        let dangling = format!("{}@{digest}", opts.dangling_prefix);
        if names.is_empty() {
            names = dangling;
        } else {
            names = format!("{names},{dangling}");
        }
    }
    names
}

/// A name as a fully qualified reference, with `latest` when it has neither tag nor
/// digest (what the tarball exporters name images by).
pub fn normalize_name(name: &str) -> Result<llb::reference::Reference> {
    llb::reference::Reference::parse_normalized(name)
        .map(llb::reference::Reference::with_default_tag)
        .map_err(|e| Error::Option(format!("failed to parse {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Kind;

    #[test]
    fn descriptor_json_is_compact_in_spec_order() {
        let mut d = Descriptor::of(media::OCI_MANIFEST, b"{}");
        assert_eq!(
            String::from_utf8(d.to_json()).unwrap(),
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":2}}"#,
                media::OCI_MANIFEST,
                Digest::of(b"{}")
            )
        );
        d.annotations.insert("b".into(), "<x>".into());
        d.annotations.insert("a".into(), "y".into());
        d.platform = Some(Platform::from(&llb::Platform::new("linux", "arm", "v7")));
        let j = String::from_utf8(d.to_json()).unwrap();
        assert!(
            j.ends_with(r#""size":2,"annotations":{"a":"y","b":"\u003cx\u003e"},"platform":{"architecture":"arm","os":"linux","variant":"v7"}}"#),
            "{j}"
        );
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(
            dir.path(),
            std::sync::Arc::new(metadata::MemStore::default()),
        )
        .unwrap();
        (dir, store)
    }

    fn source(arch: &str) -> ImageSource {
        let platform = llb::Platform::new("linux", arch, "");
        ImageSource {
            config: Some(default_config(&platform)),
            platform: Some(platform),
            epoch: None,
        }
    }

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn index_lists_one_manifest_per_platform() {
        let (_dir, store) = store();
        let parts = vec![(Vec::new(), source("amd64")), (Vec::new(), source("arm64"))];
        let opts = ExportOptions::parse(
            Kind::Image,
            &attrs(&[
                ("annotation-index.i", "1"),
                ("annotation-index-descriptor.d", "2"),
                ("annotation[linux/arm64].m", "3"),
            ]),
        )
        .unwrap();
        let now = Timestamp::from_secs(0);
        let index = commit_index(&store, &parts, &opts, now).unwrap();
        assert_eq!(index.descriptor.media_type, media::OCI_INDEX);
        assert_eq!(index.descriptor.annotations["d"], "2");
        let bytes = store.read_all(&index.descriptor.digest).unwrap();
        assert_eq!(Digest::of(&bytes), index.descriptor.digest);
        assert_eq!(bytes.len() as u64, index.descriptor.size);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["schemaVersion"], 2);
        assert_eq!(doc["mediaType"], media::OCI_INDEX);
        assert_eq!(doc["annotations"]["i"], "1");
        let listed = doc["manifests"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        for (m, (arch, image)) in listed
            .iter()
            .zip(["amd64", "arm64"].iter().zip(&index.manifests))
        {
            assert_eq!(m["platform"]["architecture"], *arch, "{doc:#}");
            assert_eq!(m["platform"]["os"], "linux");
            assert_eq!(m["digest"], image.manifest.digest.to_string());
            let manifest: serde_json::Value =
                serde_json::from_slice(&store.read_all(&image.manifest.digest).unwrap()).unwrap();
            let config: serde_json::Value =
                serde_json::from_slice(&store.read_all(&image.config.digest).unwrap()).unwrap();
            assert_eq!(config["architecture"], *arch);
            assert_eq!(
                manifest["config"]["digest"],
                image.config.digest.to_string()
            );
            // the platform-specific annotation is on the arm64 manifest only
            assert_eq!(
                manifest["annotations"]["m"].as_str(),
                (*arch == "arm64").then_some("3")
            );
        }
        let exported = Exported::Index(Box::new(index.clone()));
        let blobs = exported.blobs();
        assert_eq!(blobs[0].digest, index.descriptor.digest);
        // both images share nothing but are listed with their configs
        assert_eq!(blobs.len(), 5);

        // Docker media types: a manifest list
        let opts =
            ExportOptions::parse(Kind::Image, &attrs(&[("oci-mediatypes", "false")])).unwrap();
        let list = commit_index(&store, &parts, &opts, now).unwrap();
        assert_eq!(list.descriptor.media_type, media::DOCKER_MANIFEST_LIST);
        assert_eq!(
            list.manifests[0].manifest.media_type,
            media::DOCKER_MANIFEST
        );

        // an annotation for a platform the build does not have
        let opts = ExportOptions::parse(Kind::Image, &attrs(&[("annotation[linux/s390x].a", "b")]))
            .unwrap();
        let err = commit_index(&store, &parts, &opts, now).unwrap_err();
        assert!(err.to_string().contains("no platform linux/s390x"), "{err}");
        // index annotations need an index
        let opts =
            ExportOptions::parse(Kind::Image, &attrs(&[("annotation-index.a", "b")])).unwrap();
        let err = commit(&store, &[], &parts[0].1, &opts, now).unwrap_err();
        assert!(err.to_string().contains("single platform"), "{err}");
    }

    #[test]
    fn dangling_names() {
        let mut o = ExportOptions::parse(Kind::Image, &BTreeMap::new()).unwrap();
        let d = Digest::of(b"m");
        assert_eq!(image_names(&o, &d), "");
        o.dangling_prefix = "dang".into();
        assert_eq!(image_names(&o, &d), format!("dang@{d}"));
        o.name = "a:1".into();
        assert_eq!(image_names(&o, &d), format!("a:1,dang@{d}"));
        o.dangling_empty_only = true;
        assert_eq!(image_names(&o, &d), "a:1");
    }

    #[test]
    fn response_keys() {
        let image = Image {
            manifest: Descriptor::of(media::OCI_MANIFEST, b"m"),
            config: Descriptor::of(media::OCI_CONFIG, b"c"),
            layers: Vec::new(),
        };
        let exported = Exported::Image(Box::new(image.clone()));
        let r = response(&exported, "x:1");
        assert_eq!(r[RESPONSE_DIGEST], Digest::of(b"m").to_string());
        assert_eq!(r[RESPONSE_CONFIG_DIGEST], Digest::of(b"c").to_string());
        assert_eq!(r[RESPONSE_NAME], "x:1");
        let desc = base64::engine::general_purpose::STANDARD
            .decode(&r[RESPONSE_DESCRIPTOR])
            .unwrap();
        assert_eq!(desc, image.manifest.to_json());
        assert!(!response(&exported, "").contains_key(RESPONSE_NAME));

        // an index: its digest and descriptor, no config digest
        let index = Exported::Index(Box::new(ImageIndex {
            descriptor: Descriptor::of(media::OCI_INDEX, b"i"),
            manifests: vec![image],
        }));
        let r = response(&index, "");
        assert_eq!(r[RESPONSE_DIGEST], Digest::of(b"i").to_string());
        assert!(!r.contains_key(RESPONSE_CONFIG_DIGEST));
        let desc = base64::engine::general_purpose::STANDARD
            .decode(&r[RESPONSE_DESCRIPTOR])
            .unwrap();
        assert_eq!(desc, index.root().to_json());
    }
}
