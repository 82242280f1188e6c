//! The BuildKit daemon: configuration (`buildkitd.toml`), the `Control` gRPC service over
//! one OCI worker, and the listeners it serves on (unix sockets, TCP).
//!
//! What works today: `Session` (the client's tunnel: local directories, outputs),
//! `Solve` of LLB definitions with the `local`, `tar`, `image`, `oci` and `docker`
//! exporters, `Status`, `Info`,
//! `ListWorkers`; the other RPCs answer `Unimplemented` with a message saying so. Errors become gRPC statuses in one place (`errors`).
#![forbid(unsafe_code)]

pub mod config;
mod control;
mod errors;
mod export;
mod frontend;
mod gc;
mod jobs;
mod jobsession;
mod listen;
mod remotecache;
mod stage;

use std::path::PathBuf;
use std::sync::Arc;

use ops::{LocalProvider, OpsContext, RefStore, SyncStats};
use solver::{Solver, SolverOptions};
use worker::{Worker, WorkerOptions};

pub use config::{Config, ConfigError};
pub use control::Controller;
pub use listen::{ListenError, serve};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("worker at {root}: {source}")]
    Worker {
        root: PathBuf,
        #[source]
        source: worker::Error,
    },
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// How long a build waits for the client's session to connect.
pub(crate) const SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Local sources come from the client's session named in `local.session`.
struct SessionLocal {
    sessions: session::SessionManager,
    runtime: tokio::runtime::Handle,
}

fn patterns(
    attrs: &std::collections::BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<String>, String> {
    match attrs.get(key) {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_str(v).map_err(|e| format!("attribute {key}: {e}")),
    }
}

impl SessionLocal {
    /// The build's session for local source `name`. Called on a blocking thread:
    /// waiting for the async lookup here is fine.
    fn caller(
        &self,
        name: &str,
        attrs: &std::collections::BTreeMap<String, String>,
    ) -> Result<session::Caller, String> {
        let id = attrs
            .get("local.session")
            .ok_or_else(|| format!("local source {name:?}: no client session for it"))?;
        self.runtime
            .block_on(self.sessions.get(id, SESSION_WAIT))
            .map_err(|e| format!("local source {name:?}: {e}"))
    }
}

impl LocalProvider for SessionLocal {
    fn shared_key(
        &self,
        name: &str,
        attrs: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        // The receiver updates an earlier copy in place, so each client (by its shared
        // key) can keep one.
        Ok(Some(self.caller(name, attrs)?.shared_key().to_string()))
    }

    fn sync(
        &self,
        name: &str,
        attrs: &std::collections::BTreeMap<String, String>,
        dest: &std::path::Path,
    ) -> Result<SyncStats, String> {
        let opts = session::filesync::SyncOptions {
            name: name.to_string(),
            filter: session::fsutil::FilterOptions {
                include_patterns: patterns(attrs, "local.includepattern")?,
                exclude_patterns: patterns(attrs, "local.excludepatterns")?,
                follow_paths: patterns(attrs, "local.followpaths")?,
            },
            // The default receive compares by metadata and does not merge: `dest` may
            // hold the previous build's copy, and what the client no longer has must go.
            ..Default::default()
        };
        let caller = self.caller(name, attrs)?;
        let stats = self
            .runtime
            .block_on(session::filesync::sync(&caller, dest, &opts))
            .map_err(|e| format!("local source {name:?}: {e}"))?;
        tracing::debug!(
            name,
            entries = stats.entries,
            files = stats.files_requested,
            bytes = stats.bytes_received,
            deleted = stats.deleted,
            "local source synced"
        );
        Ok(SyncStats {
            entries: stats.entries,
            files: stats.files_requested,
            bytes: stats.bytes_received,
            deleted: stats.deleted,
        })
    }
}

/// Opens the worker under `root` (reclaiming what a crashed daemon left) and builds the
/// Control service over it.
pub async fn open(root: PathBuf, config: &Config) -> Result<Controller, Error> {
    let oci = &config.worker.oci;
    let w = Worker::open(
        &root,
        WorkerOptions {
            snapshotter: oci.snapshotter.clone(),
            hosts: config.hosts(),
            credentials: None,
            runtime: oci.binary.clone(),
        },
    )
    .await
    .map_err(|source| Error::Worker {
        root: root.clone(),
        source,
    })?;
    let worker_id = worker_id(&w);
    let sessions = session::SessionManager::new();
    let ops = OpsContext::new(
        Arc::new(w),
        Arc::new(SessionLocal {
            sessions: sessions.clone(),
            runtime: tokio::runtime::Handle::current(),
        }),
    );
    let mut opts = SolverOptions::default();
    if let Some(n) = oci.max_parallelism {
        opts.parallelism = n;
    }
    let solver = Solver::new(
        ops.worker.metadata.clone(),
        Arc::new(RefStore::new(ops.clone())),
        opts,
    );
    // What refers to a pruned record goes with it: cache keys and content checksums.
    let keys = solver::PersistentCache::new(ops.worker.metadata.clone());
    let hasher = ops.clone();
    ops.cache.on_remove(Arc::new(move |ids: &[String]| {
        let set: std::collections::HashSet<String> = ids.iter().cloned().collect();
        if let Err(e) = keys.remove_results(&set) {
            tracing::warn!(error = %e, "forgetting the cache keys of pruned records failed");
        }
        for id in ids {
            if let Err(e) = hasher.hasher.forget(id) {
                tracing::debug!(id, error = %e, "forgetting checksums failed");
            }
        }
    }));
    let disk_total = ops.cache.disk_space().map(|(total, _)| total);
    let policies = oci.gc_policies(disk_total).map_err(|reason| ConfigError {
        path: "buildkitd.toml".into(),
        reason,
    })?;
    let interval = oci
        .gc_interval
        .as_ref()
        .map(|d| d.value("worker.oci.gc-interval"))
        .transpose()
        .map_err(|reason| ConfigError {
            path: "buildkitd.toml".into(),
            reason,
        })?
        .unwrap_or(std::time::Duration::from_secs(60));
    let gc_enabled = oci.gc.unwrap_or(true);
    if gc_enabled {
        let w = ops.worker.clone();
        match tokio::task::spawn_blocking(move || gc::collect_unused_blobs(&w)).await {
            Ok(Ok(report)) if !report.removed.is_empty() => tracing::info!(
                blobs = report.removed.len(),
                bytes = report.bytes_freed,
                "removed content-store blobs nothing uses any more"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "content-store garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "content-store garbage collection failed"),
        }
    }
    let gc = gc::Gc::new(ops.cache.clone(), policies, gc_enabled, interval);
    let shutdown = tokio_util::sync::CancellationToken::new();
    gc.start(shutdown.clone());
    Ok(Controller {
        ops,
        solver,
        jobs: jobs::Jobs::default(),
        worker_id,
        sessions,
        shutdown,
        entitlements: config.insecure_entitlements.clone(),
        gc,
    })
}

/// The worker's id: random once, then kept in the metadata DB.
fn worker_id(w: &Worker) -> String {
    const TABLE: &str = "daemon";
    if let Ok(Some(v)) = w.metadata.get(TABLE, b"worker-id")
        && let Ok(s) = String::from_utf8(v)
    {
        return s;
    }
    let id = llb::random_id();
    if let Err(e) = w.metadata.put(TABLE, b"worker-id", id.as_bytes()) {
        tracing::warn!(error = %e, "could not record the worker id");
    }
    id
}
