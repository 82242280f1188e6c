//! The `moby.buildkit.v1.Control` service.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use llb::LoadedDefinition;
use ops::{OpsContext, Ref};
use proto::control::control_server::Control;
use proto::control::{
    BuildHistoryEvent, BuildHistoryRequest, BytesMessage, DiskUsageRequest, DiskUsageResponse,
    InfoRequest, InfoResponse, ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest,
    SolveResponse, StatusRequest, StatusResponse, UpdateBuildHistoryRequest,
    UpdateBuildHistoryResponse, UsageRecord,
};
use proto::types::{BuildkitVersion, WorkerRecord};
use solver::{Progress, Solver};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::errors::{solve_status, unimplemented};
use crate::jobs::Jobs;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Control service over one worker.
pub struct Controller {
    pub(crate) ops: Arc<OpsContext>,
    pub(crate) solver: Solver<Ref>,
    pub(crate) jobs: Jobs,
    pub(crate) worker_id: String,
    pub(crate) sessions: session::SessionManager,
    /// Cancelled when the daemon shuts down: every running job is a child of it.
    pub(crate) shutdown: CancellationToken,
    /// Entitlements the daemon lets builds use (`--allow-insecure-entitlement`).
    pub(crate) entitlements: Vec<String>,
    /// Automatic garbage collection.
    pub(crate) gc: Arc<crate::gc::Gc>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("worker", &self.worker_id)
            .finish()
    }
}

pub(crate) fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: "github.com/buildkit-rs/buildkit-rs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        revision: String::new(),
        dockerfile_version: String::new(),
    }
}

/// Cancels the job when the Solve call goes away (the client disconnected).
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[tonic::async_trait]
impl Control for Controller {
    async fn disk_usage(
        &self,
        request: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        let req = request.into_inner();
        let cache = self.ops.cache.clone();
        let age_limit = u64::try_from(req.age_limit).unwrap_or(0);
        let records = tokio::task::spawn_blocking(move || cache.disk_usage(&req.filter))
            .await
            .map_err(|e| Status::internal(format!("disk usage: {e}")))?
            .map_err(|e| match e {
                cache::Error::Filter { .. } => Status::invalid_argument(format!("disk usage: {e}")),
                e => Status::internal(format!("disk usage: {e}")),
            })?;
        let cutoff =
            std::time::SystemTime::now().checked_sub(std::time::Duration::from_nanos(age_limit));
        let record = records
            .iter()
            // As upstream: with an age limit, only records unused for that long.
            .filter(|r| {
                age_limit == 0 || !matches!((r.last_used, cutoff), (Some(u), Some(c)) if u > c)
            })
            .map(crate::gc::usage_record)
            .collect();
        Ok(Response::new(DiskUsageResponse { record }))
    }

    type PruneStream = BoxStream<UsageRecord>;

    async fn prune(
        &self,
        request: Request<PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
        let opts = crate::gc::prune_options(&request.into_inner())?;
        let cache = self.ops.cache.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<UsageRecord, Status>>(64);
        tokio::task::spawn_blocking(move || {
            let result = cache.prune(&opts, &mut |r| {
                let _ = tx.blocking_send(Ok(crate::gc::usage_record(r)));
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!("prune: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let req = request.into_inner();
        if req.r#ref.is_empty() {
            return Err(Status::invalid_argument("solve: a build ref is required"));
        }
        if !req.frontend.is_empty() && req.frontend != crate::frontend::DOCKERFILE_FRONTEND {
            return Err(unimplemented(&format!("frontend {:?}", req.frontend)));
        }
        if !req.exporter_deprecated.is_empty() {
            return Err(unimplemented(&format!(
                "exporter {:?}",
                req.exporter_deprecated
            )));
        }
        crate::export::check(&req.exporters, &req.session)?;
        let cache_plan = crate::remotecache::plan(req.cache.as_ref())?;
        // Checked before any work starts, so a bad request fails fast and clearly.
        let given = if req.frontend.is_empty() {
            let def = req.definition.clone().ok_or_else(|| {
                Status::invalid_argument("solve: no definition and no frontend given")
            })?;
            Some(
                LoadedDefinition::load(def)
                    .map_err(|e| Status::invalid_argument(format!("invalid definition: {e}")))?,
            )
        } else {
            None
        };

        let job = self.jobs.get(&req.r#ref);
        let (progress, mut rx) = Progress::channel();
        let forward_to = job.clone();
        let forward = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                forward_to.push(m);
            }
        });
        let cancel = self.shutdown.child_token();
        let _guard = CancelOnDrop(cancel.clone());
        // Registry credentials and secrets come from this build's own session.
        let job_session = crate::jobsession::JobSession::new(&self.sessions, &req.session);
        let result = async {
            let client = crate::remotecache::SessionRef {
                sessions: &self.sessions,
                id: &req.session,
            };
            let cache_source = crate::remotecache::imports(
                &self.ops,
                &cache_plan,
                &job_session,
                &client,
                &progress,
            )
            .await?;
            // What to build: the given LLB (no image config: the image exporters make a
            // default one), or the frontend's build of each target platform.
            let (builds, multi_platform) = match given {
                Some(l) => (vec![(l, None, exporter::ImageSource::default())], false),
                None => {
                    let frontend = self
                        .dockerfile_frontend(
                            &req.frontend_attrs,
                            &req.session,
                            &job_session,
                            &progress,
                            &cancel,
                        )
                        .await?;
                    let multi = frontend.multi_platform;
                    crate::export::check_result(&req.exporters, multi)?;
                    let builds = frontend
                        .builds
                        .into_iter()
                        .map(|b| {
                            let source = crate::export::image_source(
                                b.image_config,
                                &req.frontend_attrs,
                                multi.then_some(&b.platform),
                            );
                            (b.definition, Some(b.platform), source)
                        })
                        .collect();
                    (builds, multi)
                }
            };
            // The platforms are solved side by side; the solver runs what they share once.
            let solves = builds.into_iter().map(|(mut loaded, platform, source)| {
                let (progress, cancel, job_session, req) = (&progress, &cancel, &job_session, &req);
                let cache_source = cache_source.clone();
                async move {
                    check_entitlements(&loaded, &req.entitlements, &self.entitlements)?;
                    // Local sources without a session of their own come from this build's
                    // session.
                    crate::frontend::attach_session(&mut loaded, &req.session);
                    let graph = ops::build_graph_for(&loaded, &self.ops, job_session.for_ops())
                        .map_err(|e| {
                            Status::invalid_argument(format!("invalid definition: {e}"))
                        })?;
                    let opts = solver::SolveOptions {
                        no_cache: false,
                        source: cache_source,
                    };
                    let solved = self
                        .solver
                        .solve_with(graph, opts, progress.clone(), cancel.clone())
                        .await
                        .map_err(|e| solve_status(&e))?;
                    Ok::<_, Status>((
                        crate::export::PlatformResult {
                            platform,
                            result: solved.result,
                            source,
                        },
                        solved.vertices,
                    ))
                }
            });
            let (parts, solved): (Vec<_>, Vec<_>) = futures::future::try_join_all(solves)
                .await?
                .into_iter()
                .unzip();
            let result = crate::export::BuildResult {
                parts,
                multi_platform,
            };
            let cache_vertices = crate::remotecache::cache_vertices(&solved);
            let export = crate::export::Export {
                ops: &self.ops,
                sessions: &self.sessions,
                session: &req.session,
                job: &job_session,
                progress: &progress,
                inline_cache: cache_plan.inline().map(|_| cache_vertices.as_slice()),
            };
            let mut response = crate::export::export(&export, &req.exporters, &result).await?;
            let finals: Vec<Option<String>> = result
                .parts
                .iter()
                .map(|p| p.result.key().map(String::from))
                .collect();
            response.extend(
                crate::remotecache::export(
                    &self.ops,
                    &cache_plan,
                    &cache_vertices,
                    &finals,
                    &job_session,
                    &client,
                    &progress,
                )
                .await?,
            );
            Ok::<_, Status>(response)
        }
        .await;
        drop(progress);
        let _ = forward.await;
        self.jobs.finish(&req.r#ref);
        // The build's results are released: a good moment to collect garbage.
        self.gc.trigger();
        Ok(Response::new(SolveResponse {
            exporter_response: result?,
        }))
    }

    type StatusStream = BoxStream<StatusResponse>;

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let job = self.jobs.get(&request.into_inner().r#ref);
        let stream = futures::stream::unfold((job, 0usize), |(job, at)| async move {
            let batch = job.next(at).await?;
            let n = batch.len();
            Some((
                futures::stream::iter(batch.into_iter().map(Ok)),
                (job, at + n),
            ))
        })
        .flatten();
        Ok(Response::new(Box::pin(stream)))
    }

    type SessionStream = BoxStream<BytesMessage>;

    async fn session(
        &self,
        request: Request<tonic::Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.sessions.handle_session(request)
    }

    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let w = &self.ops.worker;
        let host = llb::Platform::host();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let label = |k: &str| format!("org.mobyproject.buildkit.worker.{k}");
        let labels = [
            (label("executor"), "oci".to_string()),
            (label("snapshotter"), w.snapshotter.name().to_string()),
            (label("hostname"), hostname),
            (label("network"), "host".to_string()),
            (label("oci.process-mode"), "sandbox".to_string()),
        ]
        .into_iter()
        .collect();
        Ok(Response::new(ListWorkersResponse {
            record: vec![WorkerRecord {
                id: self.worker_id.clone(),
                labels,
                platforms: vec![proto::pb::Platform {
                    architecture: host.architecture.clone(),
                    os: host.os.clone(),
                    variant: host.variant.clone(),
                    ..proto::pb::Platform::default()
                }],
                gc_policy: self
                    .gc
                    .policies()
                    .iter()
                    .map(|p| proto::types::GcPolicy {
                        all: p.all,
                        keep_duration: p
                            .keep_duration
                            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                        reserved_space: i64::try_from(p.reserved_space).unwrap_or(i64::MAX),
                        filters: p.filters.clone(),
                        max_used_space: i64::try_from(p.max_used_space).unwrap_or(i64::MAX),
                        min_free_space: i64::try_from(p.min_free_space).unwrap_or(i64::MAX),
                    })
                    .collect(),
                buildkit_version: Some(version()),
                cdi_devices: Vec::new(),
            }],
        }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            buildkit_version: Some(version()),
        }))
    }

    type ListenBuildHistoryStream = BoxStream<BuildHistoryEvent>;

    async fn listen_build_history(
        &self,
        _: Request<BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        Err(unimplemented("build history"))
    }

    async fn update_build_history(
        &self,
        _: Request<UpdateBuildHistoryRequest>,
    ) -> Result<Response<UpdateBuildHistoryResponse>, Status> {
        Err(unimplemented("build history"))
    }
}

/// Privileged steps need the `security.insecure` entitlement, asked for by the client
/// (`buildctl build --allow security.insecure`) and allowed by the daemon
/// (`--allow-insecure-entitlement security.insecure`), as upstream.
fn check_entitlements(
    def: &LoadedDefinition,
    asked: &[String],
    allowed: &[String],
) -> Result<(), Status> {
    let insecure = def.ops.values().any(|o| {
        matches!(&o.op.op, Some(proto::pb::op::Op::Exec(e))
            if e.security == proto::pb::SecurityMode::Insecure as i32)
    });
    if !insecure {
        return Ok(());
    }
    const E: &str = "security.insecure";
    if !asked.iter().any(|a| a == E) {
        return Err(Status::permission_denied(format!(
            "{E} is not allowed: the build runs a privileged step; pass --allow {E} to buildctl"
        )));
    }
    if !allowed.iter().any(|a| a == E) {
        return Err(Status::permission_denied(format!(
            "{E} is not allowed: start buildkitd with --allow-insecure-entitlement {E}"
        )));
    }
    Ok(())
}
