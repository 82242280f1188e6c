//! `--export-cache` and `--import-cache` (the Solve request's `Cache` options): build
//! caches in a registry (`type=registry,ref=...`), inline in the image
//! (`type=inline`; imported from an image with `type=registry,ref=IMAGE`), and in an
//! OCI layout directory on the client (`type=local,dest=|src=`, read and written
//! through the session's content store `local:<dir>`), as upstream.
//!
//! Imports are resolved before the build (their manifests and configs fetched); their
//! records are matched by cache key during the solve, and a matched result's layers are
//! fetched and unpacked only then, for the steps that would otherwise run. A cache that
//! cannot be read is a warning and the build goes on (`required=true`, a buildkit-rs
//! attribute, makes it an error). An export that fails fails the build, unless
//! `ignore-error=true`.

use std::collections::BTreeMap;
use std::sync::Arc;

use exporter::remotecache::{
    BlobInfo, CacheExport, CacheMode, CacheOptions, CacheVertex, ImportedCache, ImportedLayer,
};
use oci::{Digest, media};
use ops::{OpsContext, RecordType, Ref};
use proto::control::{CacheOptions as CacheRequest, CacheOptionsEntry};
use solver::{BoxFuture, Progress, SolvedVertex};
use tonic::Status;

use crate::export::Step;
use crate::jobsession::JobSession;

/// The parsed cache entries of one Solve.
#[derive(Clone, Debug, Default)]
pub(crate) struct CachePlan {
    pub(crate) exports: Vec<(String, CacheOptions)>,
    pub(crate) imports: Vec<(String, CacheOptions)>,
}

impl CachePlan {
    /// The inline export, if asked for.
    pub(crate) fn inline(&self) -> Option<&CacheOptions> {
        self.exports
            .iter()
            .find(|(t, _)| t == "inline")
            .map(|(_, o)| o)
    }
}

fn entry(e: &CacheOptionsEntry, export: bool) -> Result<(String, CacheOptions), Status> {
    let what = if export {
        "--export-cache"
    } else {
        "--import-cache"
    };
    let ty = e.r#type.as_str();
    match ty {
        "registry" | "inline" | "local" => {}
        "gha" | "s3" | "azblob" => {
            return Err(Status::unimplemented(format!(
                "{what} type={ty} is not supported by buildkit-rs (use type=registry, type=local or type=inline)"
            )));
        }
        "" => {
            return Err(Status::invalid_argument(format!(
                "{what}: type is required"
            )));
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "{what}: unknown cache type {other:?}"
            )));
        }
    }
    if ty == "inline" && !export {
        return Err(Status::invalid_argument(
            "--import-cache type=inline: import an inline cache with type=registry,ref=IMAGE",
        ));
    }
    let attrs: BTreeMap<String, String> = e
        .attrs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opts = CacheOptions::parse(ty, &attrs)
        .map_err(|err| Status::invalid_argument(format!("{what} type={ty}: {err}")))?;
    if ty == "local" {
        let (key, must) = if export {
            ("dest", "dest")
        } else {
            ("src", "src")
        };
        if opts.attrs.get(key).is_none_or(|v| v.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "{what} type=local: {must} is required"
            )));
        }
        if !export && opts.attrs.get("digest").is_none_or(|v| v.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "{what} type=local: local cache importer requires explicit digest"
            )));
        }
        // As upstream: a local cache is an image manifest unless told otherwise (or
        // Docker media types are asked for).
        if export && !attrs.contains_key("image-manifest") {
            opts.image_manifest = opts.oci_types;
        }
    }
    if ty == "registry" && opts.attrs.get("ref").is_none_or(|r| r.is_empty()) {
        return Err(Status::invalid_argument(format!(
            "{what} type=registry: ref is required"
        )));
    }
    Ok((ty.to_string(), opts))
}

/// Checks the cache options of a Solve request before any work starts.
pub(crate) fn plan(req: Option<&CacheRequest>) -> Result<CachePlan, Status> {
    let Some(req) = req else {
        return Ok(CachePlan::default());
    };
    let mut plan = CachePlan::default();
    // Pre-v0.4 fields, as upstream maps them.
    if !req.export_ref_deprecated.is_empty() {
        let mut attrs = req.export_attrs_deprecated.clone();
        attrs.insert("ref".into(), req.export_ref_deprecated.clone());
        plan.exports.push(entry(
            &CacheOptionsEntry {
                r#type: "registry".into(),
                attrs,
            },
            true,
        )?);
    }
    for r in &req.import_refs_deprecated {
        plan.imports.push(entry(
            &CacheOptionsEntry {
                r#type: "registry".into(),
                attrs: [("ref".to_string(), r.clone())].into_iter().collect(),
            },
            false,
        )?);
    }
    for e in &req.exports {
        plan.exports.push(entry(e, true)?);
    }
    for e in &req.imports {
        plan.imports.push(entry(e, false)?);
    }
    Ok(plan)
}

/// Where an imported cache's blobs come from.
enum Fetch {
    Registry,
    /// The client's content store.
    Local(Box<session::CallerStore>),
}

/// One imported cache and where its blobs come from.
struct Source {
    cache: ImportedCache,
    /// The registry reference, or `local:<dir>`.
    reference: String,
    fetch: Fetch,
}

/// The imported caches of a job: what the solver asks when its own cache has nothing.
pub(crate) struct Imports {
    ops: Arc<OpsContext>,
    sources: Vec<Source>,
    session: JobSession,
    progress: Progress,
}

/// Reads `reference`'s cache: a cache index or manifest, or an image with an inline
/// cache.
async fn read_cache(
    ops: &OpsContext,
    reference: &str,
    session: &JobSession,
) -> Result<ImportedCache, String> {
    let registry = &ops.worker.registry;
    let creds = session.credential_source();
    let (doc, _, media_type) = registry
        .fetch_raw_manifest(reference, creds)
        .await
        .map_err(|e| e.to_string())?;
    let exporter::remotecache::CacheDocument { mut blobs, config } =
        exporter::remotecache::parse_document(&doc).map_err(|e| e.to_string())?;
    if let Some((config, size)) = config {
        let bytes = fetch_bytes(ops, reference, &config, size, session).await?;
        return ImportedCache::parse(&bytes, &blobs).map_err(|e| e.to_string());
    }
    // An image: its config may carry an inline cache. An index of images: the one for
    // this machine's platform.
    let v: serde_json::Value = serde_json::from_slice(&doc).map_err(|e| e.to_string())?;
    let manifest = if media::is_index(&media_type) {
        let host = llb::Platform::host();
        let pick = v["manifests"].as_array().into_iter().flatten().find(|m| {
            m["platform"]["os"] == host.os.as_str()
                && m["platform"]["architecture"] == host.architecture.as_str()
        });
        let Some(digest) = pick.and_then(|m| m["digest"].as_str()) else {
            return Err("an index without a cache config or an image for this platform".into());
        };
        let name = reference.split('@').next().unwrap_or(reference);
        let child = format!("{name}@{digest}");
        let (doc, _, _) = registry
            .fetch_raw_manifest(&child, creds)
            .await
            .map_err(|e| e.to_string())?;
        blobs = exporter::remotecache::parse_document(&doc)
            .map_err(|e| e.to_string())?
            .blobs;
        serde_json::from_slice::<serde_json::Value>(&doc).map_err(|e| e.to_string())?
    } else {
        v
    };
    let config: Digest = manifest["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or("the manifest names no config")?;
    let size = manifest["config"]["size"].as_u64().unwrap_or(0);
    let bytes = fetch_bytes(ops, reference, &config, size, session).await?;
    let cfg: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let Some(value) = cfg[exporter::remotecache::INLINE_CACHE_KEY].as_str() else {
        return Err("neither a cache manifest nor an image with an inline cache".into());
    };
    let diff_ids: Vec<Digest> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().and_then(|s| s.parse().ok()))
        .collect();
    let layers: Vec<ImportedLayer> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(&diff_ids)
        .filter_map(|(l, diff_id)| {
            let digest: Digest = l["digest"].as_str()?.parse().ok()?;
            let info = blobs.remove(&digest).unwrap_or(BlobInfo::default());
            Some(ImportedLayer {
                digest,
                size: l["size"].as_u64().unwrap_or(info.size),
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                diff_id: *diff_id,
            })
        })
        .collect();
    ImportedCache::parse_inline(value, &layers).map_err(|e| e.to_string())
}

/// A small blob (a config) of `reference`'s repository, through the content store.
async fn fetch_bytes(
    ops: &OpsContext,
    reference: &str,
    digest: &Digest,
    size: u64,
    session: &JobSession,
) -> Result<Vec<u8>, String> {
    let store = &ops.worker.content;
    if !matches!(store.exists(digest), Ok(true)) {
        ops.worker
            .registry
            .fetch_blob(
                reference,
                digest,
                size,
                "application/octet-stream",
                store,
                session.credential_source(),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    store.read_all(digest).map_err(|e| e.to_string())
}

/// Reads the cache whose manifest (or index) is `digest` in the client's store.
async fn read_local_cache(
    store: &session::CallerStore,
    digest: &str,
) -> Result<ImportedCache, String> {
    let doc = store.read(digest).await.map_err(|e| e.to_string())?;
    let exporter::remotecache::CacheDocument { blobs, config } =
        exporter::remotecache::parse_document(&doc).map_err(|e| e.to_string())?;
    let Some((config, _)) = config else {
        return Err(format!("{digest} is not a build cache manifest"));
    };
    let bytes = store
        .read(&config.to_string())
        .await
        .map_err(|e| e.to_string())?;
    ImportedCache::parse(&bytes, &blobs).map_err(|e| e.to_string())
}

/// The job's session, for local caches.
pub(crate) struct SessionRef<'a> {
    pub(crate) sessions: &'a session::SessionManager,
    pub(crate) id: &'a str,
}

impl SessionRef<'_> {
    async fn store(&self, dir: &str) -> Result<session::CallerStore, String> {
        if self.id.is_empty() {
            return Err("a local cache needs a client session".into());
        }
        let caller = self
            .sessions
            .get(self.id, crate::SESSION_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        Ok(session::CallerStore::new(
            &caller,
            session::content::local_store_id(dir),
        ))
    }
}

/// Resolves the job's imports (each shown as a step); `None` when there are none or
/// none could be read. A cache that cannot be read is a warning, unless `required`.
pub(crate) async fn imports(
    ops: &Arc<OpsContext>,
    plan: &CachePlan,
    session: &JobSession,
    client: &SessionRef<'_>,
    progress: &Progress,
) -> Result<Option<Arc<dyn solver::CacheSource<Ref>>>, Status> {
    let mut sources = Vec::new();
    for (ty, opts) in &plan.imports {
        let (reference, name) = if ty == "local" {
            let src = opts.attrs.get("src").cloned().unwrap_or_default();
            (
                format!("local:{src}"),
                format!("importing cache manifest from local:{src}"),
            )
        } else {
            let r = opts.attrs.get("ref").cloned().unwrap_or_default();
            let name = format!("importing cache manifest from {r}");
            (r, name)
        };
        let task = Step::start(progress, name);
        let read = if ty == "local" {
            let src = opts.attrs.get("src").cloned().unwrap_or_default();
            let manifest = opts.attrs.get("digest").cloned().unwrap_or_default();
            match client.store(&src).await {
                Ok(store) => read_local_cache(&store, &manifest)
                    .await
                    .map(|cache| (cache, Fetch::Local(Box::new(store)))),
                Err(e) => Err(e),
            }
        } else {
            read_cache(ops, &reference, session)
                .await
                .map(|cache| (cache, Fetch::Registry))
        };
        match read {
            Ok((cache, fetch)) => {
                tracing::info!(reference, records = cache.len(), "cache imported");
                task.finish(None);
                sources.push(Source {
                    cache,
                    reference,
                    fetch,
                });
            }
            Err(e) => {
                let required = opts
                    .attrs
                    .get("required")
                    .is_some_and(|v| matches!(v.as_str(), "true" | "1"));
                if required {
                    let msg = format!("importing cache from {reference}: {e}");
                    task.finish(Some(msg.clone()));
                    return Err(Status::failed_precondition(msg));
                }
                tracing::warn!(reference, error = %e, "cache import failed; building without it");
                task.warn(&format!("cannot import cache from {reference}: {e}"));
                task.finish(None);
            }
        }
    }
    if sources.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Imports {
        ops: ops.clone(),
        sources,
        session: session.clone(),
        progress: progress.clone(),
    })))
}

impl Imports {
    /// Fetches and unpacks the layers of one result; its top snapshot as a result.
    async fn materialize(&self, source: &Source, layers: &[ImportedLayer]) -> Result<Ref, String> {
        let store = &self.ops.worker.content;
        for l in layers {
            match &source.fetch {
                Fetch::Registry => self
                    .ops
                    .worker
                    .registry
                    .fetch_blob(
                        &source.reference,
                        &l.digest,
                        l.size,
                        &l.media_type,
                        store,
                        self.session.credential_source(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                Fetch::Local(client) => copy_from_client(client, store, &l.digest, l.size).await?,
            }
        }
        let blobs: Vec<(Digest, u64, String)> = layers
            .iter()
            .map(|l| (l.digest, l.size, l.media_type.clone()))
            .collect();
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let worker = self.ops.worker.clone();
        let top = tokio::task::spawn_blocking(move || {
            registry::unpack_layers(
                &blobs,
                &diff_ids,
                &worker.content,
                worker.snapshotter.as_ref(),
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        match top {
            None => Ok(Ref::scratch()),
            Some(top) => self
                .ops
                .use_ref(
                    &top,
                    RecordType::Regular,
                    &format!("imported from {}", source.reference),
                )
                .map_err(|e| e.message),
        }
    }
}

impl solver::CacheSource<Ref> for Imports {
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Option<Vec<Ref>>> {
        Box::pin(async move {
            for source in &self.sources {
                let Some(outputs) = source.cache.lookup(key) else {
                    continue;
                };
                let mut refs = Vec::with_capacity(outputs.len());
                for layers in &outputs {
                    match self.materialize(source, layers).await {
                        Ok(r) => refs.push(r),
                        Err(e) => {
                            tracing::warn!(reference = source.reference, %key, error = %e, "an imported cache result is unusable; running the step");
                            let task = Step::start(
                                &self.progress,
                                format!("importing cache from {}", source.reference),
                            );
                            task.warn(&format!(
                                "cannot use a cached result from {}: {e}",
                                source.reference
                            ));
                            task.finish(None);
                            break;
                        }
                    }
                }
                if refs.len() == outputs.len() {
                    return Some(refs);
                }
            }
            None
        })
    }
}

/// Copies blob `digest` from the client's store into the worker's, verified.
async fn copy_from_client(
    client: &session::CallerStore,
    store: &content::ContentStore,
    digest: &Digest,
    size: u64,
) -> Result<(), String> {
    use futures::StreamExt;
    if matches!(store.exists(digest), Ok(true)) {
        return Ok(());
    }
    let mut stream = client
        .read_stream(&digest.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let mut w = store.writer().map_err(|e| e.to_string())?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut w, &chunk).map_err(|e| e.to_string())?;
    }
    let d = *digest;
    tokio::task::spawn_blocking(move || w.commit(Some((d, size))))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Copies blob `digest` of the worker's store to the client's.
async fn copy_to_client(
    client: &session::CallerStore,
    store: &content::ContentStore,
    digest: &Digest,
) -> Result<(), String> {
    let size = store.size(digest).map_err(|e| e.to_string())?;
    let file = store.open_blob(digest).map_err(|e| e.to_string())?;
    client
        .write_reader(&digest.to_string(), size, tokio::fs::File::from_std(file))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The steps of the solved parts as a cache export sees them (local sources left out:
/// they run every time).
pub(crate) fn cache_vertices(parts: &[Vec<SolvedVertex<Ref>>]) -> Vec<CacheVertex> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for part in parts {
        for v in part {
            if v.always_run || !seen.insert(v.key) {
                continue;
            }
            out.push(CacheVertex {
                key: v.key,
                inputs: v.inputs.clone(),
                outputs: v
                    .outputs
                    .iter()
                    .map(|r| r.key().map(String::from))
                    .collect(),
            });
        }
    }
    out
}

/// The inline cache value of one image: the records (min mode) of `vertices` whose
/// results are layers of `result`, made with the image's own layer options. Blocking.
pub(crate) fn inline_value(
    ops: &OpsContext,
    vertices: &[CacheVertex],
    result: Option<&str>,
    layers: &[exporter::Layer],
    layer_opts: &exporter::LayerOptions,
) -> Result<Option<String>, exporter::Error> {
    let finals = vec![result.map(String::from)];
    let selected = exporter::remotecache::select(&ops.worker, vertices, &finals, CacheMode::Min)?;
    let mut cache = exporter::remotecache::build(&ops.worker, &selected, layer_opts)?;
    // Creation times would differ between two builds of the same image; as the image's
    // own times are clamped, these are left out.
    for r in &mut cache.config.records {
        for res in &mut r.results {
            res.created_at = "0001-01-01T00:00:00Z".into();
        }
    }
    Ok(exporter::remotecache::inline_value(&cache, layers))
}

/// Runs the registry and local exports of `plan` (inline ones are made with the
/// image); returns the exporter response entries (`cache.manifest`: the descriptor of
/// the cache manifest, which the client tags in a local cache's `index.json`).
pub(crate) async fn export(
    ops: &Arc<OpsContext>,
    plan: &CachePlan,
    vertices: &[CacheVertex],
    finals: &[Option<String>],
    session: &JobSession,
    client: &SessionRef<'_>,
    progress: &Progress,
) -> Result<BTreeMap<String, String>, Status> {
    let mut response = BTreeMap::new();
    for (ty, opts) in &plan.exports {
        if ty != "registry" && ty != "local" {
            continue;
        }
        let (reference, name) = if ty == "local" {
            let dest = opts.attrs.get("dest").cloned().unwrap_or_default();
            (dest, "exporting cache to client directory".to_string())
        } else {
            let r = opts.attrs.get("ref").cloned().unwrap_or_default();
            let name = format!("exporting cache to registry {r}");
            (r, name)
        };
        let task = Step::start(progress, name);
        let result = if ty == "local" {
            export_local(ops, opts, vertices, finals, &reference, client).await
        } else {
            export_registry(ops, opts, vertices, finals, &reference, session).await
        };
        match result {
            Ok(desc) => {
                task.finish(None);
                response.insert(
                    "cache.manifest".to_string(),
                    String::from_utf8_lossy(&desc.to_json()).into_owned(),
                );
            }
            Err(e) if opts.ignore_error => {
                tracing::warn!(reference, error = %e, "cache export failed (ignore-error)");
                task.warn(&format!("cache export to {reference} failed: {e}"));
                task.finish(None);
            }
            Err(e) => {
                let msg = format!("exporting cache to {reference}: {e}");
                task.finish(Some(msg.clone()));
                return Err(Status::unknown(msg));
            }
        }
    }
    Ok(response)
}

/// Builds the cache and writes it into the worker's content store: the root
/// descriptor and every blob it names.
async fn build_cache(
    ops: &Arc<OpsContext>,
    opts: &CacheOptions,
    vertices: &[CacheVertex],
    finals: &[Option<String>],
) -> Result<(exporter::Descriptor, Vec<Digest>), String> {
    let (w, vs, fs, o) = (
        ops.worker.clone(),
        vertices.to_vec(),
        finals.to_vec(),
        opts.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<_, exporter::Error> {
        let selected = exporter::remotecache::select(&w, &vs, &fs, o.mode)?;
        let layer_opts = exporter::LayerOptions {
            compression: o.compression,
            rewrite_epoch: None,
        };
        let cache: CacheExport = exporter::remotecache::build(&w, &selected, &layer_opts)?;
        let root = exporter::remotecache::commit(&w, &cache, &o)?;
        let config = serde_json::to_vec(&cache.config)
            .map_err(|e| exporter::Error::Invalid(format!("cache config: {e}")))?;
        let mut blobs: Vec<Digest> = cache.layers.iter().map(|l| l.digest).collect();
        blobs.push(Digest::of(&config));
        Ok((root, blobs))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

async fn export_local(
    ops: &Arc<OpsContext>,
    opts: &CacheOptions,
    vertices: &[CacheVertex],
    finals: &[Option<String>],
    dest: &str,
    client: &SessionRef<'_>,
) -> Result<exporter::Descriptor, String> {
    let store = client.store(dest).await?;
    let (root, blobs) = build_cache(ops, opts, vertices, finals).await?;
    for b in blobs.iter().chain(std::iter::once(&root.digest)) {
        copy_to_client(&store, &ops.worker.content, b).await?;
    }
    Ok(root)
}

async fn export_registry(
    ops: &Arc<OpsContext>,
    opts: &CacheOptions,
    vertices: &[CacheVertex],
    finals: &[Option<String>],
    reference: &str,
    session: &JobSession,
) -> Result<exporter::Descriptor, String> {
    let (root, _) = build_cache(ops, opts, vertices, finals).await?;
    ops.worker
        .registry
        .push_with(
            reference,
            &root.digest,
            &root.media_type,
            &ops.worker.content,
            session.credential_source(),
            opts.insecure,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(root)
}
