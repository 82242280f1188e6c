//! Exporters: `local` (the files, by the fsutil protocol) and `tar` (one tar stream), sent
//! to the client over its session; `image` (an image in the content store, pushed when
//! asked), and `oci` and `docker` (image tarballs streamed to the client), made by the
//! `exporter` crate.
//!
//! A multi-platform result (a result per platform) becomes an image index (an OCI index,
//! or a Docker manifest list) listing an image per platform; `local` and `tar` send a
//! directory per platform, or the platforms merged with `platform-split=false` (see
//! [`crate::stage`]). The `docker` exporter refuses it, as upstream's does.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use exporter::{ExportOptions, Exported, Format, ImageSource, Kind};
use ops::{OpsContext, Ref};
use proto::control::Exporter;
use solver::Progress;
use tonic::Status;

use crate::errors::unimplemented;
use crate::jobsession::JobSession;

/// Bytes of tarball sent to the client at a time (under the session's chunk limit).
const TARBALL_CHUNK: usize = 1 << 20;

/// Whether exporter `ty` sends its result to the client (and so needs a session).
fn sends_to_client(ty: &str) -> bool {
    matches!(ty, "local" | "tar" | "oci" | "docker")
}

/// Checks the exporters of a Solve request before any work starts: known types, valid
/// attributes, and a session for those that send to the client.
pub(crate) fn check(exporters: &[Exporter], session: &str) -> Result<(), Status> {
    for e in exporters {
        match e.r#type.as_str() {
            "local" | "tar" => {
                crate::stage::platform_split(&e.r#type, &e.attrs)?;
            }
            t => match Kind::from_type(t) {
                Some(kind) => {
                    ExportOptions::parse(kind, &e.attrs)
                        .map_err(|err| exporter_status(kind, &err))?;
                }
                None => return Err(unimplemented(&format!("exporter {t:?}"))),
            },
        }
        if sends_to_client(&e.r#type) && session.is_empty() {
            return Err(Status::invalid_argument(format!(
                "solve: the {} exporter sends its result over a client session, and none was given",
                e.r#type
            )));
        }
    }
    Ok(())
}

/// Checks the exporters against what the frontend builds, before it is built: the
/// `docker` exporter cannot hold a multi-platform result.
pub(crate) fn check_result(exporters: &[Exporter], multi_platform: bool) -> Result<(), Status> {
    if !multi_platform {
        return Ok(());
    }
    if exporters.iter().any(|e| e.r#type == Kind::Docker.as_str()) {
        return Err(docker_refusal());
    }
    Ok(())
}

/// The `docker` exporter's answer to a multi-platform result.
fn docker_refusal() -> Status {
    let err = exporter::Error::Unsupported(exporter::DOCKER_NO_INDEX.into());
    exporter_status(Kind::Docker, &err)
}

/// What the image exporters take from the frontend for one platform: its image config,
/// its platform (`platform`, the target platform of a multi-platform build; else the one
/// the config names), and `SOURCE_DATE_EPOCH` from the build arguments (upstream's
/// Dockerfile frontend passes it on the same way).
pub(crate) fn image_source(
    config: Vec<u8>,
    frontend_attrs: &BTreeMap<String, String>,
    platform: Option<&llb::Platform>,
) -> ImageSource {
    #[derive(serde::Deserialize)]
    struct Platform {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: String,
    }
    let platform = match platform {
        Some(p) => Some(p.clone()),
        None => serde_json::from_slice::<Platform>(&config)
            .ok()
            .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
            .map(|p| llb::Platform::new(&p.os, &p.architecture, &p.variant)),
    };
    let epoch = frontend_attrs
        .get("build-arg:SOURCE_DATE_EPOCH")
        .and_then(|v| v.parse().ok());
    ImageSource {
        config: Some(config),
        platform,
        epoch,
    }
}

/// The result of one platform's build.
pub(crate) struct PlatformResult {
    /// The target platform; `None` for an LLB build, which names none.
    pub(crate) platform: Option<llb::Platform>,
    pub(crate) result: Ref,
    /// The frontend's image config and platform, the build's `SOURCE_DATE_EPOCH`.
    pub(crate) source: ImageSource,
}

/// What a Solve built: a result per platform, in the order the platforms were asked for.
pub(crate) struct BuildResult {
    pub(crate) parts: Vec<PlatformResult>,
    /// A multi-platform result, even if of one platform (upstream's result with a ref per
    /// platform): exported as an index, or a directory per platform.
    pub(crate) multi_platform: bool,
}

/// What the exporters of one Solve work with.
pub(crate) struct Export<'a> {
    pub(crate) ops: &'a Arc<OpsContext>,
    pub(crate) sessions: &'a session::SessionManager,
    /// The client session of the build (empty: none).
    pub(crate) session: &'a str,
    /// Registry credentials for pushes.
    pub(crate) job: &'a JobSession,
    pub(crate) progress: &'a Progress,
    /// The build's steps, when an inline cache goes into the image.
    pub(crate) inline_cache: Option<&'a [exporter::remotecache::CacheVertex]>,
}

/// Sends `result` to every exporter, in order (exporter `i` is the client's target `i`);
/// returns what they answer, merged (a later exporter's key wins, as upstream's).
pub(crate) async fn export(
    x: &Export<'_>,
    exporters: &[Exporter],
    result: &BuildResult,
) -> Result<BTreeMap<String, String>, Status> {
    let mut response = BTreeMap::new();
    let mut caller: Option<session::Caller> = None;
    for (i, e) in exporters.iter().enumerate() {
        let id = i as u64;
        if sends_to_client(&e.r#type) && caller.is_none() {
            caller = Some(
                x.sessions
                    .get(x.session, crate::SESSION_WAIT)
                    .await
                    .map_err(|e| e.to_status())?,
            );
        }
        match (e.r#type.as_str(), &caller) {
            ("local" | "tar", Some(caller)) => {
                let step = Step::start(
                    x.progress,
                    if e.r#type == "local" {
                        "exporting to client directory"
                    } else {
                        "exporting to client tarball"
                    },
                );
                let sent = send_files(x.ops, caller, id, e, result, &step).await;
                step.finish(sent.as_ref().err().map(|s| s.message().to_string()));
                sent?
            }
            (t, caller) => match Kind::from_type(t) {
                Some(kind) => {
                    let r = export_image(x, caller.as_ref(), id, kind, &e.attrs, result).await?;
                    response.extend(r);
                }
                None => return Err(unimplemented(&format!("exporter {t:?}"))),
            },
        }
    }
    Ok(response)
}

/// `local` and `tar`.
async fn send_files(
    ops: &Arc<OpsContext>,
    caller: &session::Caller,
    id: u64,
    e: &Exporter,
    result: &BuildResult,
    step: &Step<'_>,
) -> Result<(), Status> {
    let split = crate::stage::platform_split(&e.r#type, &e.attrs)?;
    let (ctx, ty, multi) = (ops.clone(), e.r#type.clone(), result.multi_platform);
    let parts: Vec<_> = result
        .parts
        .iter()
        .map(|p| (p.platform.clone(), p.result.clone()))
        .collect();
    let view =
        tokio::task::spawn_blocking(move || crate::stage::stage(&ctx, &ty, parts, multi, split))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
    if e.r#type == "local" {
        // The client asks only for the files it lacks: "copying files" counts what
        // went over (STATs and the data asked for), as upstream shows it.
        let started = SystemTime::now();
        let sent = session::filesend::copy_to_caller(caller, id, view.path())
            .await
            .map_err(|err| Status::unknown(format!("exporter local: {err}")))?;
        tracing::debug!(?sent, "local export sent");
        let bytes = i64::try_from(sent.wire_bytes).unwrap_or(i64::MAX);
        step.progress.status(
            &step.digest,
            "copying files",
            "copying files",
            bytes,
            0,
            started,
            Some(SystemTime::now()),
        );
        return Ok(());
    }
    let dir = view.path().to_path_buf();
    let tar = tokio::task::spawn_blocking(move || {
        let empty = tempfile::tempdir()?;
        let mut out = Vec::new();
        archive::diff_dirs(
            empty.path(),
            &dir,
            &mut out,
            &archive::DiffOptions::default(),
        )
        .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(out)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|err| Status::internal(format!("exporter tar: {err}")))?;
    let mut w = session::filesend::copy_file_writer(caller, id, &BTreeMap::new())
        .await
        .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
    w.write(&tar)
        .await
        .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
    w.finish()
        .await
        .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
    drop(view);
    Ok(())
}

fn exporter_status(kind: Kind, e: &exporter::Error) -> Status {
    let msg = format!("exporter {}: {e}", kind.as_str());
    match e {
        exporter::Error::Option(_) => Status::invalid_argument(msg),
        exporter::Error::Unsupported(_) => Status::unimplemented(msg),
        _ => Status::unknown(msg),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("internal: {e}"))
}

/// A progress step of its own (one exporter's, a cache import's or export's), with
/// sub-tasks as statuses (`exporting layers`, `pushing layers`, ...), as upstream shows
/// them.
pub(crate) struct Step<'a> {
    pub(crate) progress: &'a Progress,
    pub(crate) digest: String,
    name: String,
    started: SystemTime,
}

impl<'a> Step<'a> {
    pub(crate) fn start(progress: &'a Progress, name: impl Into<String>) -> Step<'a> {
        let name = name.into();
        let digest = llb::digest_of(format!("{name} {}", llb::random_id()).as_bytes());
        let started = SystemTime::now();
        progress.step(&digest, &name, started, None, None);
        Step {
            progress,
            digest,
            name,
            started,
        }
    }

    /// Marks sub-task `name` started at `started`, and done when `done`.
    fn task(&self, name: &str, started: SystemTime, done: bool) {
        let completed = done.then(SystemTime::now);
        self.progress
            .status(&self.digest, name, name, 0, 0, started, completed);
    }

    /// Shows `message` as a warning in the step's output.
    pub(crate) fn warn(&self, message: &str) {
        self.progress
            .log(&self.digest, 2, format!("WARNING: {message}\n").as_bytes());
    }

    pub(crate) fn finish(self, error: Option<String>) {
        self.progress.step(
            &self.digest,
            &self.name,
            self.started,
            Some(SystemTime::now()),
            error,
        );
    }
}

/// `image`, `oci` and `docker`.
async fn export_image(
    x: &Export<'_>,
    caller: Option<&session::Caller>,
    id: u64,
    kind: Kind,
    attrs: &BTreeMap<String, String>,
    result: &BuildResult,
) -> Result<BTreeMap<String, String>, Status> {
    let opts = ExportOptions::parse(kind, attrs).map_err(|e| exporter_status(kind, &e))?;
    let step = Step::start(x.progress, kind.step_name());
    let out = export_image_steps(x, &step, caller, id, &opts, result).await;
    step.finish(out.as_ref().err().map(|s| s.message().to_string()));
    out
}

async fn export_image_steps(
    x: &Export<'_>,
    step: &Step<'_>,
    caller: Option<&session::Caller>,
    id: u64,
    opts: &ExportOptions,
    result: &BuildResult,
) -> Result<BTreeMap<String, String>, Status> {
    let kind = opts.kind;
    let fail = |e: exporter::Error| exporter_status(kind, &e);
    if result.multi_platform && kind == Kind::Docker {
        return Err(docker_refusal());
    }
    let worker = x.ops.worker.clone();
    // One SOURCE_DATE_EPOCH for the whole build.
    let build_epoch = result.parts.first().and_then(|p| p.source.epoch);

    let layer_opts = exporter::LayerOptions {
        compression: opts.compression,
        rewrite_epoch: opts.rewrite_epoch(build_epoch),
    };
    // Upstream rewrites the layers in a step of its own; here they are made rewritten,
    // so the one step says so.
    let task = match layer_opts.rewrite_epoch {
        Some(epoch) => {
            format!("exporting layers (rewriting timestamps to source-date-epoch {epoch})")
        }
        None => "exporting layers".to_string(),
    };
    let t = SystemTime::now();
    step.task(&task, t, false);
    let keys: Vec<Option<String>> = result
        .parts
        .iter()
        .map(|p| p.result.key().map(String::from))
        .collect();
    let w = worker.clone();
    let layers = tokio::task::spawn_blocking(move || {
        keys.iter()
            .map(|key| exporter::export_layers(&w, key.as_deref(), &layer_opts))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(internal)?
    .map_err(fail)?;
    step.task(&task, t, true);

    let now = SystemTime::now();
    let timestamp = exporter::time::Timestamp::from_system(now);
    let store = worker.content.clone();
    let o = opts.clone();
    let mut sources: Vec<ImageSource> = result.parts.iter().map(|p| p.source.clone()).collect();
    if let Some(vertices) = x.inline_cache {
        let t = SystemTime::now();
        step.task("preparing build cache for export", t, false);
        for (i, part) in result.parts.iter().enumerate() {
            let (ops, vs, key, ls) = (
                x.ops.clone(),
                vertices.to_vec(),
                part.result.key().map(String::from),
                layers[i].clone(),
            );
            let value = tokio::task::spawn_blocking(move || {
                crate::remotecache::inline_value(&ops, &vs, key.as_deref(), &ls, &layer_opts)
            })
            .await
            .map_err(internal)?
            .map_err(fail)?;
            if let Some(value) = value {
                let platform = part.platform.clone().unwrap_or_else(llb::Platform::host);
                let config = sources[i]
                    .config
                    .clone()
                    .unwrap_or_else(|| exporter::config::default_config(&platform));
                let mut v: serde_json::Value = serde_json::from_slice(&config)
                    .map_err(|e| internal(format!("image config: {e}")))?;
                v[exporter::remotecache::INLINE_CACHE_KEY] = serde_json::Value::String(value);
                sources[i].config = Some(
                    serde_json::to_vec(&v).map_err(|e| internal(format!("image config: {e}")))?,
                );
            }
        }
        step.task("preparing build cache for export", t, true);
    }
    let parts: Vec<(Vec<exporter::Layer>, ImageSource)> = layers.into_iter().zip(sources).collect();
    let multi = result.multi_platform;
    let mut exported = tokio::task::spawn_blocking(move || {
        if multi {
            exporter::commit_index(&store, &parts, &o, timestamp)
                .map(|i| Exported::Index(Box::new(i)))
        } else {
            let (layers, source) = parts
                .first()
                .ok_or_else(|| exporter::Error::Invalid("the build has no result".into()))?;
            exporter::commit(&store, layers, source, &o, timestamp)
                .map(|i| Exported::Image(Box::new(i)))
        }
    })
    .await
    .map_err(internal)?
    .map_err(fail)?;
    let t = SystemTime::now();
    for image in exported.images() {
        step.task(
            &format!("exporting manifest {}", image.manifest.digest),
            t,
            true,
        );
        step.task(
            &format!("exporting config {}", image.config.digest),
            t,
            true,
        );
    }
    let root_digest = exported.root().digest;
    if let Exported::Index(_) = &exported {
        step.task(&format!("exporting manifest list {root_digest}"), t, true);
    }

    if kind == Kind::Image {
        let names = exporter::image_names(opts, &root_digest);
        let response = exporter::response(&exported, &names);
        if opts.push {
            for name in names.split(',').filter(|n| !n.is_empty()) {
                let t = SystemTime::now();
                step.task("pushing layers", t, false);
                exporter::push(
                    &worker,
                    &exported,
                    name,
                    opts.push_by_digest,
                    opts.insecure,
                    x.job.credential_source(),
                )
                .await
                .map_err(fail)?;
                step.task("pushing layers", t, true);
                step.task(
                    &format!("pushing manifest for {name}@{root_digest}"),
                    SystemTime::now(),
                    true,
                );
            }
        }
        return Ok(response);
    }

    // The tarballs say when they were made, as upstream's do.
    let created = match opts.epoch(build_epoch) {
        Some(secs) => exporter::time::Timestamp::from_secs(secs),
        None => exporter::time::Timestamp::from_system(now),
    };
    exported
        .root_mut()
        .annotations
        .entry(exporter::ANNOTATION_CREATED.into())
        .or_insert_with(|| created.to_rfc3339_secs());
    let names = exporter::normalized_names(&opts.name).map_err(fail)?;
    let response = exporter::response(&exported, &names.join(","));
    let Some(caller) = caller else {
        return Err(internal("no client session for a tarball"));
    };
    let format = if kind == Kind::Docker {
        Format::Docker
    } else {
        Format::Oci
    };
    let t = SystemTime::now();
    step.task("sending tarball", t, false);
    send_tarball(
        &worker.content,
        caller,
        id,
        &response,
        exported,
        names,
        format,
    )
    .await
    .map_err(|e| Status::unknown(format!("exporter {}: {}", kind.as_str(), e.message())))?;
    step.task("sending tarball", t, true);
    Ok(response)
}

/// A writer handing fixed-size chunks to an async receiver, for blocking code that writes
/// what an async task sends on.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(TARBALL_CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped receiving",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(TARBALL_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= TARBALL_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Streams the tarball of what an export made to the client's target `id`, while it is
/// written.
async fn send_tarball(
    store: &content::ContentStore,
    caller: &session::Caller,
    id: u64,
    response: &BTreeMap<String, String>,
    exported: Exported,
    names: Vec<String>,
    format: Format,
) -> Result<(), Status> {
    let mut w = session::filesend::copy_file_writer(caller, id, response)
        .await
        .map_err(|e| e.to_status())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let store = store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(TARBALL_CHUNK),
        };
        let mut out = exporter::write_tarball(&store, &exported, &names, format, out)?;
        out.flush().map_err(|source| exporter::Error::Write {
            entry: "the end of the tarball".into(),
            source,
        })
    });
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = w.write(&chunk).await {
            sent = Err(e);
            break;
        }
    }
    // Unblocks the writer if the client went away.
    drop(rx);
    let written = writer.await.map_err(internal)?;
    if let Err(e) = sent {
        // The client declined the file (it exists already, say): not an error upstream.
        let status = e.to_status();
        if status.code() == tonic::Code::AlreadyExists {
            return Ok(());
        }
        return Err(status);
    }
    written.map_err(|e| Status::unknown(e.to_string()))?;
    match w.finish().await {
        Ok(()) => Ok(()),
        Err(e) if e.to_status().code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(e.to_status()),
    }
}
