//! Build cache export and import in upstream's format (`application/vnd.buildkit.cacheconfig.v0`):
//! a cache config listing layer blobs (each with its parent) and records (cache keys,
//! their results as layer indexes, and links to the records of their inputs), carried
//! either by an OCI index whose `manifests` are the layer blobs plus the config (the
//! default), by an image manifest whose config is the cache config
//! (`image-manifest=true`), or inline in an image config (`moby.buildkit.cache.v0`: the
//! records only, layer indexes counting the image's own layers).
//!
//! A record's digest is `sha256("<cache key>@<output>")` of this solver's cache key of a
//! vertex, which already covers the vertex's inputs: an importer matches a record by
//! digest alone, and the links are there for upstream's readers. Upstream computes its
//! keys differently, so caches of the two never match each other's records, but each
//! reads the other's documents.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use oci::{Digest, media};
use serde::{Deserialize, Serialize};
use worker::Worker;

use crate::image::Descriptor;
use crate::layers::{Layer, LayerOptions, chain, export_layers};
use crate::options::{CompressionConfig, compression_attr, parse_flag};
use crate::{Error, Result};

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The image config key of an inline cache.
pub const INLINE_CACHE_KEY: &str = "moby.buildkit.cache.v0";
/// Layer descriptor annotation: the uncompressed digest.
pub const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Layer descriptor annotation: when the layer was made.
pub const ANNOTATION_CREATED_AT: &str = "buildkit/createdat";

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn zero_time() -> String {
    GO_ZERO_TIME.to_string()
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The cache config (upstream's `CacheConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<CacheRecord>,
}

/// A layer blob and the index of its parent (-1: none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blob: String,
    /// As upstream writes it: omitted when 0 (so a missing parent means layer 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

/// What the index descriptor of a layer says, kept in the config too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerAnnotations {
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(rename = "diffID", default, skip_serializing_if = "String::is_empty")]
    pub diff_id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(rename = "createdAt", default = "zero_time")]
    pub created_at: String,
}

/// A record: a cache key, its results and its inputs' records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CacheResult>,
    #[serde(rename = "chains", default, skip_serializing_if = "Vec::is_empty")]
    pub chained_results: Vec<ChainedResult>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<CacheInput>>,
}

/// A result: a layer with all its parents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheResult {
    pub layer: i64,
    #[serde(rename = "createdAt", default = "zero_time")]
    pub created_at: String,
}

/// A result given as layers in order, without parents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedResult {
    pub layers: Vec<i64>,
    #[serde(rename = "createdAt", default = "zero_time")]
    pub created_at: String,
}

/// A link to the record of an input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInput {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    pub link: i64,
}

/// `min` (the records of the final result's layers) or `max` (every step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    #[default]
    Min,
    Max,
}

/// The attributes of one `--export-cache` or `--import-cache` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheOptions {
    pub mode: CacheMode,
    /// OCI media types (default) or Docker's.
    pub oci_types: bool,
    pub compression: CompressionConfig,
    /// An image manifest carries the cache instead of an index.
    pub image_manifest: bool,
    /// A failure is a warning, not a failed build.
    pub ignore_error: bool,
    /// Plain HTTP to the registry.
    pub insecure: bool,
    /// The other attributes (`ref`, `dest`, `src`, `tag`, `digest`, ...).
    pub attrs: BTreeMap<String, String>,
}

impl CacheOptions {
    /// Parses the attributes of a cache entry of type `ty`.
    pub fn parse(ty: &str, attrs: &BTreeMap<String, String>) -> Result<CacheOptions> {
        let mut o = CacheOptions {
            oci_types: true,
            ..CacheOptions::default()
        };
        for (k, v) in attrs {
            match k.as_str() {
                "mode" => {
                    o.mode = match v.as_str() {
                        "" | "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        other => {
                            return Err(Error::Option(format!(
                                "cache {ty}: invalid mode {other:?} (min or max)"
                            )));
                        }
                    }
                }
                "oci-mediatypes" => o.oci_types = parse_flag(k, v)?,
                "image-manifest" => o.image_manifest = parse_flag(k, v)?,
                "ignore-error" => o.ignore_error = parse_flag(k, v)?,
                "registry.insecure" => o.insecure = parse_flag(k, v)?,
                "compression" | "compression-level" | "force-compression" => {
                    compression_attr(&mut o.compression, k, v)
                        .map_err(|e| Error::Option(format!("cache {ty}: {e}")))?;
                }
                _ => {
                    o.attrs.insert(k.clone(), v.clone());
                }
            }
        }
        if o.image_manifest && !o.oci_types {
            return Err(Error::Option(format!(
                "cache {ty}: image-manifest=true needs oci-mediatypes=true"
            )));
        }
        Ok(o)
    }
}

/// A solved step, as an export needs it.
#[derive(Clone, Debug)]
pub struct CacheVertex {
    pub key: Digest,
    /// Per input: the input step's key, output and selector (inputs consumed by
    /// content have none).
    pub inputs: Vec<Option<(Digest, usize, Option<String>)>>,
    /// The result snapshot of each output (`None`: scratch).
    pub outputs: Vec<Option<String>>,
}

/// The digest of the record of output `output` of the step with key `key`.
pub fn record_digest(key: &Digest, output: usize) -> Digest {
    Digest::of(format!("{key}@{output}").as_bytes())
}

/// A cache made ready for export: its config and the layer blobs it names (in the
/// content store), in config order.
#[derive(Clone, Debug, Default)]
pub struct CacheExport {
    pub config: CacheConfig,
    pub layers: Vec<Layer>,
}

/// The steps of `vertices` that `mode` exports, given the final results' snapshots:
/// with `min`, only steps whose results are layers of a final result.
pub fn select(
    worker: &Worker,
    vertices: &[CacheVertex],
    finals: &[Option<String>],
    mode: CacheMode,
) -> Result<Vec<CacheVertex>> {
    if mode == CacheMode::Max {
        return Ok(vertices.to_vec());
    }
    let mut in_final = std::collections::HashSet::new();
    for f in finals.iter().flatten() {
        for info in chain(worker.snapshotter.as_ref(), f)? {
            in_final.insert(info.key);
        }
    }
    Ok(vertices
        .iter()
        .filter(|v| v.outputs.iter().flatten().any(|s| in_final.contains(s)))
        .cloned()
        .collect())
}

/// Makes the layers of `vertices`' results (reusing blobs made before) and the cache
/// config naming them. Steps with a scratch output are left out. Blocking.
pub fn build(
    worker: &Worker,
    vertices: &[CacheVertex],
    opts: &LayerOptions,
) -> Result<CacheExport> {
    let mut out = CacheExport::default();
    // (blob, parent index) → index in the layer list.
    let mut layer_index: HashMap<(Digest, i64), i64> = HashMap::new();
    let mut record_index: HashMap<Digest, i64> = HashMap::new();
    let mut pending_inputs = Vec::new();
    let mut seen_keys = std::collections::HashSet::new();
    for v in vertices {
        if v.outputs.iter().any(Option::is_none) || !seen_keys.insert(v.key) {
            continue;
        }
        for (o, snapshot) in v.outputs.iter().enumerate() {
            let layers = export_layers(worker, snapshot.as_deref(), opts)?;
            let mut parent = -1i64;
            for l in &layers {
                let idx = match layer_index.get(&(l.digest, parent)) {
                    Some(i) => *i,
                    None => {
                        let i = out.config.layers.len() as i64;
                        out.config.layers.push(CacheLayer {
                            blob: l.digest.to_string(),
                            parent,
                            annotations: Some(LayerAnnotations {
                                media_type: l.media_type.clone(),
                                diff_id: l.diff_id.to_string(),
                                size: i64::try_from(l.size).unwrap_or(i64::MAX),
                                created_at: l.created.to_rfc3339_nano(),
                            }),
                        });
                        out.layers.push(l.clone());
                        layer_index.insert((l.digest, parent), i);
                        i
                    }
                };
                parent = idx;
            }
            let digest = record_digest(&v.key, o);
            record_index.insert(digest, out.config.records.len() as i64);
            out.config.records.push(CacheRecord {
                results: vec![CacheResult {
                    layer: parent,
                    created_at: layers
                        .last()
                        .map_or_else(zero_time, |l| l.created.to_rfc3339_nano()),
                }],
                digest: digest.to_string(),
                ..CacheRecord::default()
            });
            pending_inputs.push((out.config.records.len() - 1, v.inputs.clone()));
        }
    }
    // Links to the records of inputs that are part of the export.
    for (rec, inputs) in pending_inputs {
        let links: Vec<Vec<CacheInput>> = inputs
            .iter()
            .map(|i| match i {
                Some((key, output, selector)) => record_index
                    .get(&record_digest(key, *output))
                    .map(|link| CacheInput {
                        selector: selector.clone().unwrap_or_default(),
                        link: *link,
                    })
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            })
            .collect();
        if links.iter().any(|l| !l.is_empty()) {
            out.config.records[rec].inputs = links;
        }
    }
    Ok(out)
}

/// The descriptor of layer `l` in a cache index or manifest.
fn layer_descriptor(l: &Layer, oci_types: bool) -> Descriptor {
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_UNCOMPRESSED.to_string(), l.diff_id.to_string());
    annotations.insert(
        ANNOTATION_CREATED_AT.to_string(),
        l.created.to_rfc3339_nano(),
    );
    Descriptor {
        media_type: crate::layers::convert_media_type(&l.media_type, oci_types),
        digest: l.digest,
        size: l.size,
        annotations,
        platform: None,
    }
}

/// Writes the cache's config and its index (or image manifest) into the worker's
/// content store; returns the root descriptor. Blocking.
pub fn commit(worker: &Worker, cache: &CacheExport, opts: &CacheOptions) -> Result<Descriptor> {
    let config = serde_json::to_vec(&cache.config)
        .map_err(|e| Error::Invalid(format!("cache config: {e}")))?;
    let config_desc = Descriptor::of(CACHE_CONFIG_MEDIA_TYPE, &config);
    worker.content.put(&config)?;
    let layers: Vec<Descriptor> = cache
        .layers
        .iter()
        .map(|l| layer_descriptor(l, opts.oci_types))
        .collect();
    let (media_type, doc) = if opts.image_manifest {
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config_desc,
            "layers": layers,
        });
        (media::OCI_MANIFEST, doc)
    } else {
        let media_type = if opts.oci_types {
            media::OCI_INDEX
        } else {
            media::DOCKER_MANIFEST_LIST
        };
        let mut manifests = layers;
        manifests.push(config_desc);
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        (media_type, doc)
    };
    let bytes =
        serde_json::to_vec(&doc).map_err(|e| Error::Invalid(format!("cache index: {e}")))?;
    worker.content.put(&bytes)?;
    Ok(Descriptor::of(media_type, &bytes))
}

/// The inline cache of an image whose layers (bottom first) are `image_layers`: the
/// exported records whose results are a prefix of those layers, their layer indexes
/// counted in the image, as the base64 value of [`INLINE_CACHE_KEY`]. `None` when no
/// record matches.
pub fn inline_value(cache: &CacheExport, image_layers: &[Layer]) -> Option<String> {
    // The blobs of each cache layer's stack, bottom first.
    let stack = |mut i: i64| {
        let mut blobs = Vec::new();
        while i >= 0 && (i as usize) < cache.config.layers.len() {
            blobs.push(cache.config.layers[i as usize].blob.clone());
            i = cache.config.layers[i as usize].parent;
        }
        blobs.reverse();
        blobs
    };
    let image: Vec<String> = image_layers.iter().map(|l| l.digest.to_string()).collect();
    let mut index_of = HashMap::new();
    let mut records = Vec::new();
    for (i, r) in cache.config.records.iter().enumerate() {
        let Some(res) = r.results.first() else {
            continue;
        };
        let blobs = stack(res.layer);
        if blobs.is_empty() || blobs.len() > image.len() || blobs[..] != image[..blobs.len()] {
            continue;
        }
        index_of.insert(i as i64, records.len() as i64);
        records.push(CacheRecord {
            results: vec![CacheResult {
                layer: blobs.len() as i64 - 1,
                created_at: res.created_at.clone(),
            }],
            digest: r.digest.clone(),
            inputs: r.inputs.clone(),
            ..CacheRecord::default()
        });
    }
    if records.is_empty() {
        return None;
    }
    // Links only to records kept.
    for r in &mut records {
        for alternatives in &mut r.inputs {
            alternatives.retain_mut(|l| match index_of.get(&l.link) {
                Some(n) => {
                    l.link = *n;
                    true
                }
                None => false,
            });
        }
        if r.inputs.iter().all(Vec::is_empty) {
            r.inputs.clear();
        }
    }
    let json = serde_json::to_vec(&records).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(json))
}

/// One layer of an imported result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// An imported cache: the results of each record, by record digest.
#[derive(Clone, Debug, Default)]
pub struct ImportedCache {
    results: HashMap<Digest, Vec<ImportedLayer>>,
}

/// What a cache document says about a blob (from its index or image manifest).
#[derive(Clone, Debug, Default)]
pub struct BlobInfo {
    pub size: u64,
    pub media_type: String,
    pub diff_id: Option<Digest>,
}

fn bad(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cache {what}: {reason}"))
}

impl ImportedCache {
    /// Reads a cache config; `blobs` are the layer descriptors of its index or manifest
    /// (layer annotations in the config fill what they lack).
    pub fn parse(config: &[u8], blobs: &HashMap<Digest, BlobInfo>) -> Result<ImportedCache> {
        let cfg: CacheConfig = serde_json::from_slice(config).map_err(|e| bad("config", e))?;
        let mut layers = Vec::with_capacity(cfg.layers.len());
        for (i, l) in cfg.layers.iter().enumerate() {
            let digest: Digest = l
                .blob
                .parse()
                .map_err(|e| bad("config", format!("layer {i}: {e}")))?;
            let info = blobs.get(&digest).cloned().unwrap_or_default();
            let ann = l.annotations.clone().unwrap_or_default();
            let diff_id = match info.diff_id {
                Some(d) => d,
                None => ann
                    .diff_id
                    .parse()
                    .map_err(|_| bad("config", format!("layer {i} has no uncompressed digest")))?,
            };
            let size = if info.size > 0 {
                info.size
            } else {
                u64::try_from(ann.size).unwrap_or(0)
            };
            let media_type = if info.media_type.is_empty() {
                ann.media_type
            } else {
                info.media_type
            };
            layers.push(ImportedLayer {
                digest,
                size,
                media_type,
                diff_id,
            });
        }
        let stack = |top: i64| -> Result<Vec<ImportedLayer>> {
            let mut out = Vec::new();
            let mut i = top;
            while i >= 0 {
                let l = cfg
                    .layers
                    .get(i as usize)
                    .ok_or_else(|| bad("config", format!("layer index {i} out of range")))?;
                out.push(layers[i as usize].clone());
                if out.len() > cfg.layers.len() {
                    return Err(bad("config", "layer parents form a cycle"));
                }
                i = l.parent;
            }
            out.reverse();
            Ok(out)
        };
        let mut results = HashMap::new();
        for r in &cfg.records {
            let Ok(digest) = r.digest.parse::<Digest>() else {
                continue;
            };
            if let Some(res) = r.results.first() {
                results.insert(digest, stack(res.layer)?);
            } else if let Some(c) = r.chained_results.first() {
                let mut out = Vec::new();
                for i in &c.layers {
                    out.push(
                        layers
                            .get(usize::try_from(*i).unwrap_or(usize::MAX))
                            .cloned()
                            .ok_or_else(|| {
                                bad("config", format!("layer index {i} out of range"))
                            })?,
                    );
                }
                results.insert(digest, out);
            }
        }
        Ok(ImportedCache { results })
    }

    /// Reads an inline cache (the base64 value of [`INLINE_CACHE_KEY`]) of an image with
    /// `layers` (bottom first).
    pub fn parse_inline(value: &str, layers: &[ImportedLayer]) -> Result<ImportedCache> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| bad("inline records", e))?;
        let records: Vec<CacheRecord> =
            serde_json::from_slice(&json).map_err(|e| bad("inline records", e))?;
        let mut results = HashMap::new();
        for r in records {
            let Ok(digest) = r.digest.parse::<Digest>() else {
                continue;
            };
            if let Some(res) = r.results.first() {
                let n = usize::try_from(res.layer + 1).unwrap_or(0);
                if n == 0 || n > layers.len() {
                    return Err(bad(
                        "inline records",
                        format!("layer index {} out of range", res.layer),
                    ));
                }
                results.insert(digest, layers[..n].to_vec());
            } else if let Some(c) = r.chained_results.first() {
                let mut out = Vec::new();
                for i in &c.layers {
                    out.push(
                        layers
                            .get(usize::try_from(*i).unwrap_or(usize::MAX))
                            .cloned()
                            .ok_or_else(|| {
                                bad("inline records", format!("layer index {i} out of range"))
                            })?,
                    );
                }
                results.insert(digest, out);
            }
        }
        Ok(ImportedCache { results })
    }

    /// How many records have results.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether no record has a result.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The layers of every output of the step with cache key `key`: outputs 0, 1, ...
    /// as long as the cache has them; `None` when it has not even output 0.
    pub fn lookup(&self, key: &Digest) -> Option<Vec<Vec<ImportedLayer>>> {
        let mut out = Vec::new();
        while let Some(l) = self.results.get(&record_digest(key, out.len())) {
            out.push(l.clone());
        }
        (!out.is_empty()).then_some(out)
    }
}

/// What a cache index or image manifest lists.
#[derive(Clone, Debug, Default)]
pub struct CacheDocument {
    /// The layer blobs.
    pub blobs: HashMap<Digest, BlobInfo>,
    /// The digest and size of the cache config (`None`: the document carries none, say
    /// an image).
    pub config: Option<(Digest, u64)>,
}

/// Reads a cache index or image manifest.
pub fn parse_document(doc: &[u8]) -> Result<CacheDocument> {
    let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| bad("manifest", e))?;
    let mut descs: Vec<&serde_json::Value> = Vec::new();
    descs.extend(v["manifests"].as_array().into_iter().flatten());
    descs.extend(v["layers"].as_array().into_iter().flatten());
    let mut config = None;
    if v["config"]["mediaType"] == CACHE_CONFIG_MEDIA_TYPE {
        config = v["config"]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .map(|d| (d, v["config"]["size"].as_u64().unwrap_or(0)));
    }
    let mut blobs = HashMap::new();
    for d in descs {
        let Some(digest) = d["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()) else {
            continue;
        };
        let media_type = d["mediaType"].as_str().unwrap_or_default().to_string();
        if media_type == CACHE_CONFIG_MEDIA_TYPE {
            config = Some((digest, d["size"].as_u64().unwrap_or(0)));
            continue;
        }
        blobs.insert(
            digest,
            BlobInfo {
                size: d["size"].as_u64().unwrap_or(0),
                media_type,
                diff_id: d["annotations"][ANNOTATION_UNCOMPRESSED]
                    .as_str()
                    .and_then(|s| s.parse().ok()),
            },
        );
    }
    Ok(CacheDocument { blobs, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> ImportedLayer {
        ImportedLayer {
            digest: Digest::of(&[n]),
            size: 10 + u64::from(n),
            media_type: media::OCI_LAYER_GZIP.into(),
            diff_id: Digest::of(&[n, n]),
        }
    }

    #[test]
    fn configs_round_trip_in_upstreams_shape() {
        let key = Digest::of(b"key");
        let cfg = CacheConfig {
            layers: vec![
                CacheLayer {
                    blob: layer(0).digest.to_string(),
                    parent: -1,
                    annotations: Some(LayerAnnotations {
                        diff_id: layer(0).diff_id.to_string(),
                        ..LayerAnnotations::default()
                    }),
                },
                CacheLayer {
                    blob: layer(1).digest.to_string(),
                    parent: 0,
                    annotations: None,
                },
            ],
            records: vec![
                CacheRecord {
                    digest: record_digest(&key, 0).to_string(),
                    results: vec![CacheResult {
                        layer: 1,
                        created_at: zero_time(),
                    }],
                    inputs: vec![vec![CacheInput {
                        selector: String::new(),
                        link: 1,
                    }]],
                    ..CacheRecord::default()
                },
                CacheRecord {
                    digest: record_digest(&Digest::of(b"base"), 0).to_string(),
                    results: vec![CacheResult {
                        layer: 0,
                        created_at: zero_time(),
                    }],
                    ..CacheRecord::default()
                },
            ],
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""parent":-1"#), "{json}");
        assert!(
            !json.contains(r#""parent":0"#),
            "0 is omitted, as Go's omitempty does: {json}"
        );
        assert!(json.contains(r#""inputs":[[{"link":1}]]"#), "{json}");
        let mut blobs = HashMap::new();
        blobs.insert(
            layer(1).digest,
            BlobInfo {
                size: 11,
                media_type: media::OCI_LAYER_GZIP.into(),
                diff_id: Some(layer(1).diff_id),
            },
        );
        let imported = ImportedCache::parse(json.as_bytes(), &blobs).unwrap();
        let got = imported.lookup(&key).unwrap();
        assert_eq!(got.len(), 1, "one output");
        assert_eq!(
            got[0].iter().map(|l| l.digest).collect::<Vec<_>>(),
            [layer(0).digest, layer(1).digest],
            "the result is its layer with all parents, bottom first"
        );
        assert_eq!(got[0][1].size, 11);
        assert!(imported.lookup(&Digest::of(b"other")).is_none());
    }

    #[test]
    fn inline_records_count_the_images_layers() {
        let key = Digest::of(b"k");
        let records = vec![CacheRecord {
            digest: record_digest(&key, 0).to_string(),
            results: vec![CacheResult {
                layer: 1,
                created_at: zero_time(),
            }],
            ..CacheRecord::default()
        }];
        let value =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&records).unwrap());
        let image = [layer(0), layer(1), layer(2)];
        let imported = ImportedCache::parse_inline(&value, &image).unwrap();
        assert_eq!(imported.lookup(&key).unwrap()[0], image[..2].to_vec());
        let out_of_range = base64::engine::general_purpose::STANDARD.encode(
            serde_json::to_vec(&[CacheRecord {
                digest: record_digest(&key, 0).to_string(),
                results: vec![CacheResult {
                    layer: 7,
                    created_at: zero_time(),
                }],
                ..CacheRecord::default()
            }])
            .unwrap(),
        );
        assert!(ImportedCache::parse_inline(&out_of_range, &image).is_err());
        assert!(ImportedCache::parse_inline("not base64!", &image).is_err());
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for bad in [
            &b"{"[..],
            b"\"text\"",
            b"{\"layers\":[{\"blob\":\"nope\"}]}",
        ] {
            assert!(ImportedCache::parse(bad, &HashMap::new()).is_err());
        }
        let cyclic = br#"{"layers":[{"blob":"sha256:0000000000000000000000000000000000000000000000000000000000000000","parent":0,"annotations":{"diffID":"sha256:0000000000000000000000000000000000000000000000000000000000000000","createdAt":"0001-01-01T00:00:00Z"}}],"records":[{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","layers":[{"layer":0,"createdAt":"0001-01-01T00:00:00Z"}]}]}"#;
        assert!(ImportedCache::parse(cyclic, &HashMap::new()).is_err());
        let CacheDocument { blobs, config } = parse_document(
            br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":5,"annotations":{"containerd.io/uncompressed":"sha256:2222222222222222222222222222222222222222222222222222222222222222"}},{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":9}]}"#,
        )
        .unwrap();
        assert_eq!(blobs.len(), 1);
        assert!(config.is_some());
        let opts =
            CacheOptions::parse("registry", &BTreeMap::from([("mode".into(), "all".into())]));
        assert!(opts.unwrap_err().to_string().contains("mode"));
    }
}
