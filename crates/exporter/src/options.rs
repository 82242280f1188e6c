//! Exporter attributes (`--output type=image,name=...,push=true`) as upstream's image, oci
//! and docker exporters read them.

use std::collections::BTreeMap;

use archive::Compression;

use crate::Error;

/// Which exporter the attributes are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `image`: an image in the content store, pushed when asked.
    Image,
    /// `oci`: an OCI image layout tarball.
    Oci,
    /// `docker`: a tarball `docker load` reads (an OCI layout plus `manifest.json`).
    Docker,
}

impl Kind {
    /// The exporter for an `--output type=`, if it is one of these.
    pub fn from_type(t: &str) -> Option<Kind> {
        match t {
            "image" => Some(Kind::Image),
            "oci" => Some(Kind::Oci),
            "docker" => Some(Kind::Docker),
            _ => None,
        }
    }

    /// The exporter's type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Oci => "oci",
            Kind::Docker => "docker",
        }
    }

    /// The name of the progress step, as upstream shows it.
    pub fn step_name(self) -> &'static str {
        match self {
            Kind::Image => "exporting to image",
            Kind::Oci => "exporting to oci image format",
            Kind::Docker => "exporting to docker image format",
        }
    }
}

/// How layers are compressed (`compression`, `compression-level`, `force-compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompressionConfig {
    pub compression: Compression,
    /// The level asked for; the codec's default when `None`.
    pub level: Option<i32>,
    /// Recompress existing blobs (a base image's) that use another compression. Without
    /// it, the compression applies only to layers made by this export, as upstream does.
    pub force: bool,
}

impl Default for CompressionConfig {
    fn default() -> CompressionConfig {
        CompressionConfig {
            compression: Compression::Gzip,
            level: None,
            force: false,
        }
    }
}

impl CompressionConfig {
    /// The level the encoder uses: the one asked for, else the codec's default.
    pub fn effective_level(&self) -> i32 {
        self.level
            .unwrap_or_else(|| self.compression.default_level())
    }
}

/// Where an annotation goes (`annotation-TYPE.KEY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnotationTarget {
    /// `annotation.KEY`, `annotation-manifest.KEY`: on the image manifest.
    Manifest,
    /// `annotation-manifest-descriptor.KEY`: on the manifest's descriptor (in an index).
    ManifestDescriptor,
    /// `annotation-index.KEY`: on the image index (multi-platform exports only).
    Index,
    /// `annotation-index-descriptor.KEY`: on the index's descriptor (multi-platform
    /// exports only).
    IndexDescriptor,
}

/// The annotations of an export, as `annotation*` attributes give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `annotation.KEY` and `annotation-manifest.KEY`: on the manifest.
    pub manifest: BTreeMap<String, String>,
    /// `annotation-manifest-descriptor.KEY`: on the manifest's descriptor (in an index).
    pub manifest_descriptor: BTreeMap<String, String>,
    /// `annotation-index.KEY`: on the index of a multi-platform export.
    pub index: BTreeMap<String, String>,
    /// `annotation-index-descriptor.KEY`: on the index's descriptor.
    pub index_descriptor: BTreeMap<String, String>,
    /// `annotation[PLATFORM].KEY` and the like: `(platform, where, key, value)`, for the
    /// image of that platform only (index ones go on the index whatever the platform,
    /// as upstream merges them).
    pub by_platform: Vec<(String, AnnotationTarget, String, String)>,
}

impl Annotations {
    /// Checks that every platform the annotations name is one of `platforms` (the
    /// result's, `os/arch[/variant]`), as upstream does.
    pub fn check_platforms(&self, platforms: &[String]) -> Result<(), Error> {
        for (p, ..) in &self.by_platform {
            if !platforms.contains(p) {
                return Err(Error::Option(format!(
                    "invalid annotation: no platform {p} found in source"
                )));
            }
        }
        Ok(())
    }

    /// The manifest and manifest-descriptor annotations of the image of `platform`
    /// (`None` when the build does not say): the common ones, then the ones for it.
    pub fn manifest_for(&self, platform: Option<&str>) -> Annotations {
        let mut out = Annotations {
            manifest: self.manifest.clone(),
            manifest_descriptor: self.manifest_descriptor.clone(),
            ..Annotations::default()
        };
        for (p, target, k, v) in &self.by_platform {
            let map = match target {
                _ if Some(p.as_str()) != platform => continue,
                AnnotationTarget::Manifest => &mut out.manifest,
                AnnotationTarget::ManifestDescriptor => &mut out.manifest_descriptor,
                AnnotationTarget::Index | AnnotationTarget::IndexDescriptor => continue,
            };
            map.insert(k.clone(), v.clone());
        }
        out
    }

    /// The index and index-descriptor annotations: the common ones, then those given
    /// for any platform.
    pub fn index_annotations(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (mut index, mut descriptor) = (self.index.clone(), self.index_descriptor.clone());
        for (_, target, k, v) in &self.by_platform {
            match target {
                AnnotationTarget::Index => index.insert(k.clone(), v.clone()),
                AnnotationTarget::IndexDescriptor => descriptor.insert(k.clone(), v.clone()),
                _ => continue,
            };
        }
        (index, descriptor)
    }

    /// The annotations of the single image of `platform` (`os/arch[/variant]`, `None`
    /// when the build does not say): the platform-specific ones must name it, and there
    /// is no index to annotate, as upstream checks.
    pub fn for_platform(&self, platform: Option<&str>) -> Result<Annotations, Error> {
        self.check_platforms(&platform.map(String::from).into_iter().collect::<Vec<_>>())?;
        let (index, descriptor) = self.index_annotations();
        if !index.is_empty() || !descriptor.is_empty() {
            return Err(Error::Option(
                "index annotations not supported for single platform export".into(),
            ));
        }
        Ok(self.manifest_for(platform))
    }

    fn is_empty(&self) -> bool {
        self.manifest.is_empty()
            && self.manifest_descriptor.is_empty()
            && self.index.is_empty()
            && self.index_descriptor.is_empty()
            && self.by_platform.is_empty()
    }
}

/// The attributes of one `image`, `oci` or `docker` exporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    pub kind: Kind,
    /// `name`: comma-separated image names, as given.
    pub name: String,
    /// `push` (image only).
    pub push: bool,
    /// `push-by-digest` (image only): push without a tag.
    pub push_by_digest: bool,
    /// `registry.insecure` (image only): push over plain HTTP.
    pub insecure: bool,
    /// `name-canonical` (image only): also name the image `NAME@DIGEST` in the image
    /// store; there is no image store here, so it changes nothing.
    pub name_canonical: bool,
    /// `dangling-name-prefix` (image only): name the image `PREFIX@DIGEST` too.
    pub dangling_prefix: String,
    /// `danging-name-empty-only` (upstream's spelling; image only): use the dangling name
    /// only when no `name` is given.
    pub dangling_empty_only: bool,
    /// `oci-mediatypes`; `None` takes the default (OCI types, as upstream's current
    /// compatibility version does for every exporter).
    pub oci_types: Option<bool>,
    pub compression: CompressionConfig,
    /// `source-date-epoch`: clamps the config's times.
    pub epoch: Option<i64>,
    /// `rewrite-timestamp`: also clamp the file times inside the layers this export makes
    /// to the epoch, so that the same build gives the same layer digests.
    pub rewrite_timestamp: bool,
    pub annotations: Annotations,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::Option(format!(
            "non-bool value {v:?} specified for {key}"
        ))),
    }
}

/// Applies compression attribute `key` (`compression`, `compression-level` or
/// `force-compression`) to `c`; `Ok(false)` for any other attribute. Shared by the image
/// exporters and cache exports.
pub(crate) fn compression_attr(
    c: &mut CompressionConfig,
    key: &str,
    v: &str,
) -> Result<bool, Error> {
    match key {
        "compression" => {
            c.compression = match v {
                "gzip" => Compression::Gzip,
                "uncompressed" => Compression::Uncompressed,
                "zstd" => Compression::Zstd,
                "estargz" => {
                    return Err(Error::Unsupported(
                        "compression=estargz is not supported by buildkit-rs (use gzip, zstd or uncompressed)"
                            .into(),
                    ));
                }
                other => {
                    return Err(Error::Option(format!(
                        "unsupported compression type {other}"
                    )));
                }
            }
        }
        "compression-level" => {
            let level: i32 = v.parse().map_err(|_| {
                Error::Option(format!(
                    "non-integer value {v} specified for compression-level"
                ))
            })?;
            c.level = Some(level);
        }
        "force-compression" => c.force = parse_flag(key, v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A boolean that is true when given without a value (`push=`), as upstream reads
/// `push`, `push-by-digest` and the like.
pub(crate) fn parse_flag(key: &str, v: &str) -> Result<bool, Error> {
    if v.is_empty() {
        Ok(true)
    } else {
        parse_bool(key, v)
    }
}

/// Splits an annotation attribute (`annotation[-TYPE][[PLATFORM]].KEY`) into its type,
/// platform and key; `None` when the attribute is not an annotation.
fn annotation_key(attr: &str) -> Option<(&str, Option<&str>, &str)> {
    let rest = attr.strip_prefix("annotation")?;
    let (head, key) = rest.split_once('.')?;
    let (ty, platform) = match head.split_once('[') {
        Some((ty, p)) => (ty, Some(p.strip_suffix(']')?)),
        None => (head, None),
    };
    let ty = match ty {
        "" => "",
        t => t.strip_prefix('-')?,
    };
    let type_ok = ty.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    let platform_ok = platform.is_none_or(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_/-".contains(&b))
    });
    let key_ok = !key.is_empty() && !key.chars().any(char::is_whitespace);
    (type_ok && platform_ok && key_ok).then_some((ty, platform, key))
}

impl ExportOptions {
    /// Reads the attributes of a `kind` exporter. Unknown attributes are ignored, as
    /// upstream ignores them; known ones that need what this daemon does not have are
    /// refused.
    pub fn parse(kind: Kind, attrs: &BTreeMap<String, String>) -> Result<ExportOptions, Error> {
        let mut o = ExportOptions {
            kind,
            name: String::new(),
            push: false,
            push_by_digest: false,
            insecure: false,
            name_canonical: false,
            dangling_prefix: String::new(),
            dangling_empty_only: false,
            oci_types: None,
            compression: CompressionConfig::default(),
            epoch: None,
            rewrite_timestamp: false,
            annotations: Annotations::default(),
        };
        let tarball = kind != Kind::Image;
        for (k, v) in attrs {
            if let Some((ty, p, key)) = annotation_key(k) {
                let target = match ty {
                    "" | "manifest" => AnnotationTarget::Manifest,
                    "manifest-descriptor" => AnnotationTarget::ManifestDescriptor,
                    "index" => AnnotationTarget::Index,
                    "index-descriptor" => AnnotationTarget::IndexDescriptor,
                    other => {
                        return Err(Error::Option(format!(
                            "unrecognized annotation type {other}"
                        )));
                    }
                };
                let a = &mut o.annotations;
                let map = match (p, target) {
                    (Some(p), _) => {
                        a.by_platform
                            .push((p.into(), target, key.into(), v.clone()));
                        continue;
                    }
                    (None, AnnotationTarget::Manifest) => &mut a.manifest,
                    (None, AnnotationTarget::ManifestDescriptor) => &mut a.manifest_descriptor,
                    (None, AnnotationTarget::Index) => &mut a.index,
                    (None, AnnotationTarget::IndexDescriptor) => &mut a.index_descriptor,
                };
                map.insert(key.into(), v.clone());
                continue;
            }
            match k.as_str() {
                "name" => o.name = v.clone(),
                "push"
                | "push-by-digest"
                | "registry.insecure"
                | "name-canonical"
                | "danging-name-empty-only"
                | "dangling-name-prefix"
                | "unpack"
                | "store"
                    if tarball =>
                {
                    tracing::debug!(key = k.as_str(), exporter = kind.as_str(), "option ignored");
                }
                "push" => o.push = parse_flag(k, v)?,
                "push-by-digest" => o.push_by_digest = parse_flag(k, v)?,
                "registry.insecure" => o.insecure = parse_flag(k, v)?,
                "name-canonical" => o.name_canonical = parse_flag(k, v)?,
                "danging-name-empty-only" => o.dangling_empty_only = parse_flag(k, v)?,
                "dangling-name-prefix" => o.dangling_prefix = v.clone(),
                "unpack" => {
                    if parse_flag(k, v)? {
                        return Err(Error::Unsupported(
                            "unpack=true: unpack needs the containerd worker, which buildkit-rs does not have"
                                .into(),
                        ));
                    }
                }
                // The OCI worker has no image store; upstream ignores it there too.
                "store" => {
                    parse_flag(k, v)?;
                }
                "oci-mediatypes" => o.oci_types = Some(parse_bool(k, v)?),
                "compression" | "compression-level" | "force-compression" => {
                    compression_attr(&mut o.compression, k, v)?;
                }
                "source-date-epoch" => {
                    if !v.is_empty() {
                        o.epoch = Some(v.parse().map_err(|_| {
                            Error::Option(format!("invalid source-date-epoch: {v:?}"))
                        })?);
                    }
                }
                "rewrite-timestamp" => o.rewrite_timestamp = parse_bool(k, v)?,
                "tar" if tarball => {
                    if !parse_flag(k, v)? {
                        return Err(Error::Unsupported(format!(
                            "tar=false (an OCI layout directory from the {} exporter) is not supported by buildkit-rs yet",
                            kind.as_str()
                        )));
                    }
                }
                // Attestations are not made here, so their format changes nothing.
                "oci-artifact" | "attestation-inline" | "prefer-nondist-layers" => {
                    parse_bool(k, v)?;
                }
                other => tracing::debug!(key = other, "unknown exporter option ignored"),
            }
        }
        let oci = o.oci_types.unwrap_or(true);
        if !oci && !o.annotations.is_empty() {
            return Err(Error::Option(
                "cannot export annotations with \"oci-mediatypes=false\"".into(),
            ));
        }
        if let Some(level) = o.compression.level {
            let c = o.compression.compression;
            let (min, max) = c.level_range();
            if c != Compression::Uncompressed && !(min..=max).contains(&level) {
                return Err(Error::Option(format!(
                    "compression-level {level} is out of range for {c} ({min} to {max})"
                )));
            }
        }
        Ok(o)
    }

    /// The epoch `SOURCE_DATE_EPOCH` gives this export: `source-date-epoch`, else the
    /// build's (`build_epoch`, the frontend's build argument).
    pub fn epoch(&self, build_epoch: Option<i64>) -> Option<i64> {
        self.epoch.or(build_epoch)
    }

    /// The epoch to clamp file times to in the layers this export makes: the export's
    /// epoch when `rewrite-timestamp` is set. Without an epoch there is nothing to clamp
    /// to; upstream then exports the layers as they are and warns, and so does this.
    pub fn rewrite_epoch(&self, build_epoch: Option<i64>) -> Option<i64> {
        if !self.rewrite_timestamp {
            return None;
        }
        let epoch = self.epoch(build_epoch);
        if epoch.is_none() {
            tracing::warn!("rewrite-timestamp is set, but no source-date-epoch was given");
        }
        epoch
    }

    /// Whether manifests and layers get OCI media types.
    pub fn oci_types(&self) -> bool {
        self.oci_types.unwrap_or(true)
    }

    /// The names from `name`, in order, empty ones dropped.
    pub fn names(&self) -> Vec<String> {
        self.name
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn image_options_as_upstream_reads_them() {
        let o = ExportOptions::parse(
            Kind::Image,
            &attrs(&[
                ("name", "a/b:1,c/d:2"),
                ("push", "true"),
                ("registry.insecure", ""),
                ("compression", "zstd"),
                ("compression-level", "19"),
                ("force-compression", "1"),
                ("oci-mediatypes", "false"),
                ("store", "false"),
                ("something-new", "x"),
            ]),
        )
        .unwrap();
        assert!(o.push && o.insecure && !o.push_by_digest);
        assert_eq!(o.names(), ["a/b:1", "c/d:2"]);
        assert_eq!(o.compression.compression, Compression::Zstd);
        assert_eq!(o.compression.effective_level(), 19);
        assert!(o.compression.force);
        assert!(!o.oci_types());

        assert!(!o.rewrite_timestamp);
        assert_eq!(o.rewrite_epoch(Some(5)), None);

        let d = ExportOptions::parse(Kind::Oci, &BTreeMap::new()).unwrap();
        assert!(d.oci_types());
        assert_eq!(d.compression, CompressionConfig::default());
        assert_eq!(d.compression.effective_level(), 6);
    }

    #[test]
    fn rewrite_timestamp_takes_the_exports_epoch_first() {
        let o = ExportOptions::parse(
            Kind::Oci,
            &attrs(&[("rewrite-timestamp", "true"), ("source-date-epoch", "10")]),
        )
        .unwrap();
        assert!(o.rewrite_timestamp);
        assert_eq!(o.epoch(Some(20)), Some(10));
        assert_eq!(o.rewrite_epoch(Some(20)), Some(10));
        let o = ExportOptions::parse(Kind::Image, &attrs(&[("rewrite-timestamp", "1")])).unwrap();
        assert_eq!(o.rewrite_epoch(Some(20)), Some(20));
        // nothing to clamp to: the layers are exported as they are
        assert_eq!(o.rewrite_epoch(None), None);
        let err =
            ExportOptions::parse(Kind::Image, &attrs(&[("rewrite-timestamp", "yes")])).unwrap_err();
        assert!(err.to_string().contains("non-bool"), "{err}");
    }

    #[test]
    fn refusals_are_clear() {
        let err = |kind, kv: &[(&str, &str)]| {
            ExportOptions::parse(kind, &attrs(kv))
                .and_then(|o| o.annotations.for_platform(Some("linux/amd64")))
                .unwrap_err()
                .to_string()
        };
        assert!(err(Kind::Image, &[("unpack", "true")]).contains("containerd worker"));
        assert!(err(Kind::Image, &[("push", "yes")]).contains("non-bool"));
        assert!(err(Kind::Image, &[("compression", "lz4")]).contains("lz4"));
        assert!(err(Kind::Oci, &[("compression", "estargz")]).contains("estargz"));
        assert!(err(Kind::Oci, &[("tar", "false")]).contains("tar=false"));
        assert!(
            err(
                Kind::Image,
                &[("compression", "gzip"), ("compression-level", "12")]
            )
            .contains("out of range")
        );
        assert!(
            err(
                Kind::Image,
                &[("oci-mediatypes", "false"), ("annotation.a", "b")]
            )
            .contains("oci-mediatypes=false")
        );
        assert!(err(Kind::Image, &[("annotation-index.a", "b")]).contains("index annotations"));
        assert!(err(Kind::Image, &[("annotation[linux/arm64].a", "b")]).contains("linux/arm64"));
        // image-only options are ignored by the tarball exporters
        ExportOptions::parse(Kind::Docker, &attrs(&[("unpack", "true")])).unwrap();
        ExportOptions::parse(Kind::Image, &attrs(&[("unpack", "false")])).unwrap();
    }

    #[test]
    fn annotations_by_type_and_platform() {
        let o = ExportOptions::parse(
            Kind::Image,
            &attrs(&[
                ("annotation.org.opencontainers.image.title", "t"),
                ("annotation-manifest.m", "1"),
                ("annotation[linux/amd64].p", "2"),
                ("annotation-manifest-descriptor.d", "3"),
                ("annotation-manifest-descriptor[linux/amd64].e", "4"),
            ]),
        )
        .unwrap();
        let a = o.annotations.for_platform(Some("linux/amd64")).unwrap();
        assert_eq!(
            a.manifest,
            BTreeMap::from([
                ("m".to_string(), "1".to_string()),
                ("org.opencontainers.image.title".into(), "t".into()),
                ("p".into(), "2".into()),
            ])
        );
        assert_eq!(a.manifest_descriptor["d"], "3");
        assert_eq!(a.manifest_descriptor["e"], "4");
        assert!(o.annotations.for_platform(None).is_err());
        assert_eq!(annotation_key("annotations.x"), None);
        assert_eq!(annotation_key("annotation."), None);
        assert_eq!(annotation_key("name"), None);
    }
}
