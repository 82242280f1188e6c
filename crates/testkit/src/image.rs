//! Content-addressed blobs and single-platform OCI image assembly.
//!
//! An [`Image`] is the three kinds of blob a registry or an OCI layout stores for one platform:
//! the manifest, the config, and the layers. Each [`Blob`] carries its media type, digest and raw
//! bytes, so the same value can be written to a layout directory or pushed to a registry without
//! re-serializing anything (re-encoding would change digests).

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::layer::LayerBytes;
use crate::{Error, Result, sha256_digest};

/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Fixed creation time for reproducible images (the Unix epoch, as with `SOURCE_DATE_EPOCH=0`).
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Raw content plus the media type and digest that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    media_type: String,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    /// Wraps `bytes`, computing their sha256 digest.
    pub fn new(media_type: impl Into<String>, bytes: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.into(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    /// The media type, e.g. [`MEDIA_TYPE_LAYER_GZIP`].
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// `sha256:<hex>` of [`Blob::bytes`].
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The lowercase hex part of the digest (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// The raw content.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// An OCI descriptor (media type, digest, size) pointing at this blob.
    pub fn descriptor(&self) -> Result<Descriptor> {
        let digest: Digest = self.digest.parse().map_err(|source| Error::Oci {
            context: format!("parse digest {}", self.digest),
            source,
        })?;
        DescriptorBuilder::default()
            .media_type(MediaType::from(self.media_type.as_str()))
            .digest(digest)
            .size(self.size())
            .build()
            .map_err(|source| Error::Oci {
                context: format!("descriptor for {}", self.digest),
                source,
            })
    }
}

/// One layer: its compressed blob and the digest of its uncompressed tar (diff id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    blob: Blob,
    diff_id: String,
}

impl Layer {
    /// A gzip layer from the output of [`crate::LayerBuilder::finish`].
    pub fn from_bytes(bytes: LayerBytes) -> Self {
        Layer {
            diff_id: sha256_digest(&bytes.tar),
            blob: Blob::new(MEDIA_TYPE_LAYER_GZIP, bytes.gzip),
        }
    }

    /// The compressed blob, as stored in a registry.
    pub fn blob(&self) -> &Blob {
        &self.blob
    }

    /// `sha256:<hex>` of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }
}

/// What goes into an image config besides its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// `config.Env`.
    pub env: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.WorkingDir`, if any.
    pub working_dir: Option<String>,
    /// `config.User`, if any.
    pub user: Option<String>,
    /// One `created_by` string per layer, for the config's history.
    pub history: Vec<String>,
}

/// A single-platform OCI image: manifest, config and layers, all as exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    manifest: Blob,
    config: Blob,
    layers: Vec<Layer>,
}

impl Image {
    /// Builds the config (linux, host architecture, created at [`EPOCH`]) and manifest for
    /// `layers`. The JSON encodings are deterministic, so equal inputs give equal digests.
    pub fn assemble(layers: Vec<Layer>, settings: &ImageSettings) -> Result<Self> {
        let oci = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Oci { context, source }
        };
        let mut exec = ConfigBuilder::default()
            .env(settings.env.clone())
            .cmd(settings.cmd.clone());
        if let Some(dir) = &settings.working_dir {
            exec = exec.working_dir(dir.clone());
        }
        if let Some(user) = &settings.user {
            exec = exec.user(user.clone());
        }
        let history = settings
            .history
            .iter()
            .map(|created_by| {
                HistoryBuilder::default()
                    .created(EPOCH)
                    .created_by(created_by.clone())
                    .comment("buildkit-rs testkit")
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(oci("image history"))?;
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
            .build()
            .map_err(oci("image rootfs"))?;
        let config: ImageConfiguration = ImageConfigurationBuilder::default()
            .created(EPOCH)
            .architecture(Arch::from(host_goarch()))
            .os(Os::Linux)
            .config(exec.build().map_err(oci("image exec config"))?)
            .rootfs(rootfs)
            .history(history)
            .build()
            .map_err(oci("image config"))?;
        let config_bytes = serde_json::to_vec(&config).map_err(|source| Error::Json {
            context: "serialize image config".into(),
            source,
        })?;
        let config = Blob::new(MEDIA_TYPE_CONFIG, config_bytes);

        let layer_descriptors = layers
            .iter()
            .map(|l| l.blob.descriptor())
            .collect::<Result<Vec<_>>>()?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor()?)
            .layers(layer_descriptors)
            .build()
            .map_err(oci("image manifest"))?;
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Json {
            context: "serialize image manifest".into(),
            source,
        })?;
        Ok(Image {
            manifest: Blob::new(MEDIA_TYPE_MANIFEST, manifest_bytes),
            config,
            layers,
        })
    }

    /// The manifest blob (media type [`MEDIA_TYPE_MANIFEST`]).
    pub fn manifest(&self) -> &Blob {
        &self.manifest
    }

    /// The config blob (media type [`MEDIA_TYPE_CONFIG`]).
    pub fn config(&self) -> &Blob {
        &self.config
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Every blob a registry needs *before* the manifest: config first, then layers.
    pub fn content_blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter().map(|l| &l.blob))
    }

    /// Every blob of the image including the manifest.
    pub fn all_blobs(&self) -> impl Iterator<Item = &Blob> {
        self.content_blobs().chain(std::iter::once(&self.manifest))
    }
}

/// The Go architecture name (`GOARCH`) of the host, as OCI configs spell it.
pub fn host_goarch() -> &'static str {
    goarch(std::env::consts::ARCH)
}

/// Maps a Rust `target_arch` name to its `GOARCH` equivalent; unknown names pass through.
pub fn goarch(rust_arch: &'static str) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{LayerBuilder, Meta};

    fn tiny() -> Image {
        let mut b = LayerBuilder::new();
        b.file("hello", "hi\n", Meta::root(0o644)).unwrap();
        let settings = ImageSettings {
            env: vec!["PATH=/bin".into()],
            cmd: vec!["sh".into()],
            working_dir: None,
            user: None,
            history: vec!["test layer".into()],
        };
        Image::assemble(vec![Layer::from_bytes(b.finish().unwrap())], &settings).unwrap()
    }

    #[test]
    fn manifest_references_config_and_layers() {
        let img = tiny();
        let m: serde_json::Value = serde_json::from_slice(img.manifest().bytes()).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MEDIA_TYPE_CONFIG);
        assert_eq!(m["config"]["digest"], img.config().digest());
        assert_eq!(m["config"]["size"], img.config().size());
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_GZIP);
        assert_eq!(m["layers"][0]["digest"], img.layers()[0].blob().digest());
    }

    #[test]
    fn config_has_platform_rootfs_and_history() {
        let img = tiny();
        let c: serde_json::Value = serde_json::from_slice(img.config().bytes()).unwrap();
        assert_eq!(c["os"], "linux");
        assert_eq!(c["architecture"], host_goarch());
        assert_eq!(c["config"]["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(c["rootfs"]["type"], "layers");
        assert_eq!(c["rootfs"]["diff_ids"][0], img.layers()[0].diff_id());
        assert_eq!(c["history"][0]["created_by"], "test layer");
        assert_eq!(c["created"], EPOCH);
    }

    #[test]
    fn goarch_maps_rust_names() {
        assert_eq!(goarch("x86_64"), "amd64");
        assert_eq!(goarch("aarch64"), "arm64");
        assert_eq!(goarch("riscv64"), "riscv64");
        assert_eq!(goarch("s390x"), "s390x");
    }

    #[test]
    fn blobs_are_listed_config_first_manifest_last() {
        let img = tiny();
        let kinds: Vec<_> = img.all_blobs().map(Blob::media_type).collect();
        assert_eq!(
            kinds,
            [
                MEDIA_TYPE_CONFIG,
                MEDIA_TYPE_LAYER_GZIP,
                MEDIA_TYPE_MANIFEST
            ]
        );
    }
}
