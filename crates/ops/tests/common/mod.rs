//! A worker, a solver and a busybox image in a local registry, for solving LLB graphs
//! with real runc and overlayfs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llb::{LoadedDefinition, MarshalOptions, State};
use ops::{DirProvider, OpsContext, Ref, RefStore};
use prost::Message;
use proto::control::StatusResponse;
use solver::{Progress, SolveError, Solver, SolverOptions};
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerOptions};

pub struct Env {
    pub registry: testkit::Registry,
    pub root: tempfile::TempDir,
    pub context: tempfile::TempDir,
    pub ctx: Arc<OpsContext>,
    pub solver: Solver<Ref>,
    pub image: String,
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The environment, or `None` (with a loud message) when this machine cannot run it;
/// in CI that is a failure.
pub async fn env() -> Option<Env> {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ops tests need root in CI"
        );
        eprintln!("SKIPPED: ops tests need root");
        return None;
    }
    let registry = testkit::Registry::start_or_skip().unwrap()?;
    let image = testkit::BusyboxImage::new().unwrap();
    registry
        .client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    let (ctx, solver) = open(root.path(), context.path()).await;
    let image = format!("{}/busybox:latest", registry.host());
    Some(Env {
        registry,
        root,
        context,
        ctx,
        solver,
        image,
    })
}

pub async fn open(root: &Path, context: &Path) -> (Arc<OpsContext>, Solver<Ref>) {
    let w = Worker::open(
        root,
        WorkerOptions {
            snapshotter: Some("overlayfs".into()),
            ..WorkerOptions::default()
        },
    )
    .await
    .unwrap();
    let ctx = OpsContext::new(
        Arc::new(w),
        Arc::new(DirProvider::new().with("context", context.to_path_buf())),
    );
    let solver = Solver::new(
        ctx.worker.metadata.clone(),
        Arc::new(RefStore::new(ctx.clone())),
        SolverOptions::default(),
    );
    (ctx, solver)
}

impl Env {
    pub fn base(&self) -> State {
        llb::image(&self.image).env("PATH", llb::DEFAULT_PATH)
    }

    pub async fn solve(&self, st: &State) -> (Result<Ref, SolveError>, Vec<StatusResponse>) {
        solve_with(&self.ctx, &self.solver, st).await
    }

    /// Closes the worker and solver and opens new ones on the same root, as a restarted
    /// daemon would.
    pub async fn restart(self) -> Env {
        let Env {
            registry,
            root,
            context,
            ctx,
            solver,
            image,
        } = self;
        drop(solver);
        drop(ctx);
        let (ctx, solver) = open(root.path(), context.path()).await;
        Env {
            registry,
            root,
            context,
            ctx,
            solver,
            image,
        }
    }

    pub fn read(&self, r: &Ref, path: &str) -> Option<Vec<u8>> {
        read(&self.ctx, r, path)
    }

    pub fn write_context(&self, name: &str, data: &str) {
        let p: PathBuf = self.context.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

pub async fn solve_with(
    ctx: &Arc<OpsContext>,
    solver: &Solver<Ref>,
    st: &State,
) -> (Result<Ref, SolveError>, Vec<StatusResponse>) {
    let def = st
        .marshal(&MarshalOptions {
            local_unique_id: Some("testclient".into()),
            ..MarshalOptions::default()
        })
        .unwrap();
    let loaded = LoadedDefinition::from_bytes(&def.encode_to_vec()).unwrap();
    let graph = ops::build_graph(&loaded, ctx).unwrap();
    let (progress, mut rx) = Progress::channel();
    let r = solver
        .solve(graph, false, progress, CancellationToken::new())
        .await;
    let mut events = Vec::new();
    while let Ok(m) = rx.try_recv() {
        events.push(m);
    }
    (r, events)
}

/// Reads a file of a result through a read-only mount.
pub fn read(ctx: &OpsContext, r: &Ref, path: &str) -> Option<Vec<u8>> {
    let key = r.key()?;
    let snap = &ctx.worker.snapshotter;
    let view = format!("test-view/{}", llb::random_id());
    let mounts = snap.view(&view, Some(key)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let guard = snapshot::mount::mount_all(&mounts, dir.path()).unwrap();
    let data = std::fs::read(dir.path().join(path.trim_start_matches('/'))).ok();
    guard.release().unwrap();
    snap.remove(&view).unwrap();
    data
}

/// Names of vertices that completed by running (not from the cache), in the events.
pub fn ran(events: &[StatusResponse]) -> Vec<String> {
    let cached: std::collections::HashSet<&str> = events
        .iter()
        .flat_map(|e| &e.vertexes)
        .filter(|v| v.cached)
        .map(|v| v.digest.as_str())
        .collect();
    let mut out: Vec<String> = events
        .iter()
        .flat_map(|e| &e.vertexes)
        .filter(|v| v.completed.is_some() && !v.cached && !cached.contains(v.digest.as_str()))
        .map(|v| v.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Names of vertices reported cached.
pub fn cached(events: &[StatusResponse]) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .flat_map(|e| &e.vertexes)
        .filter(|v| v.cached)
        .map(|v| v.name.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// (started, completed) in seconds of the named vertex's run.
pub fn span(events: &[StatusResponse], name: &str) -> (f64, f64) {
    let secs = |t: &prost_types::Timestamp| t.seconds as f64 + t.nanos as f64 / 1e9;
    let v = events
        .iter()
        .flat_map(|e| &e.vertexes)
        .rfind(|v| v.name == name && v.completed.is_some())
        .unwrap_or_else(|| panic!("no completed vertex {name}"));
    (
        secs(v.started.as_ref().unwrap()),
        secs(v.completed.as_ref().unwrap()),
    )
}
