//! The BuildKit daemon: configuration (`buildkitd.toml`), the `Control` gRPC service over
//! one OCI worker, and the listeners it serves on (unix sockets, TCP).
//!
//! What works today: `Solve` of LLB definitions (no frontend, no exporters, no session
//! yet), `Status`, `Info`, `ListWorkers`; the other RPCs answer `Unimplemented` with a
//! message saying so. Errors become gRPC statuses in one place (`errors`).
#![forbid(unsafe_code)]

pub mod config;
mod control;
mod errors;
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

/// Local sources come from client sessions, which are not built yet.
struct NoSession;

impl LocalProvider for NoSession {
    fn sync(
        &self,
        name: &str,
        _: &std::collections::BTreeMap<String, String>,
        _: &std::path::Path,
    ) -> Result<(), String> {
        Err(format!(
            "local source {name:?} needs a client session, which buildkit-rs does not support yet"
        ))
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
    let ops = OpsContext::new(Arc::new(w), Arc::new(NoSession));
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
