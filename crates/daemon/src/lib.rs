//! The BuildKit daemon: configuration (`buildkitd.toml`), the `Control` gRPC service over
//! one OCI worker, and the listeners it serves on (unix sockets, TCP).
//!
//! What works today: `Session` (the client's tunnel: local directories, outputs),
//! `Solve` of LLB definitions with `local` and `tar` exporters, `Status`, `Info`,
//! `ListWorkers`; the other RPCs answer `Unimplemented` with a message saying so. Errors become gRPC statuses in one place (`errors`).
#![forbid(unsafe_code)]

pub mod config;
mod control;
mod errors;
mod export;
mod jobs;
mod listen;

use std::path::PathBuf;
use std::sync::Arc;

use ops::{LocalProvider, OpsContext, RefStore};
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

impl LocalProvider for SessionLocal {
    fn sync(
        &self,
        name: &str,
        attrs: &std::collections::BTreeMap<String, String>,
        dest: &std::path::Path,
    ) -> Result<(), String> {
        let id = attrs
            .get("local.session")
            .ok_or_else(|| format!("local source {name:?}: no client session for it"))?;
        let opts = session::filesync::SyncOptions {
            name: name.to_string(),
            filter: session::fsutil::FilterOptions {
                include_patterns: patterns(attrs, "local.includepattern")?,
                exclude_patterns: patterns(attrs, "local.excludepatterns")?,
                follow_paths: patterns(attrs, "local.followpaths")?,
            },
            ..Default::default()
        };
        // Called on a blocking thread: waiting for the async transfer here is fine.
        self.runtime.block_on(async {
            let caller = self
                .sessions
                .get(id, SESSION_WAIT)
                .await
                .map_err(|e| format!("local source {name:?}: {e}"))?;
            session::filesync::sync(&caller, dest, &opts)
                .await
                .map(|_| ())
                .map_err(|e| format!("local source {name:?}: {e}"))
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
    Ok(Controller {
        ops,
        solver,
        jobs: jobs::Jobs::default(),
        worker_id,
        sessions,
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
