//! The LLB layer over the solver: turns a loaded LLB Definition into a solver graph whose
//! vertices run source, exec, file, merge and diff ops on the worker.
//!
//! Results are [`Ref`]s: committed snapshots of the worker's snapshotter (or scratch).
//! Cache keys: every op's cache map digest is the sha256 of its op bytes with the inputs
//! left out (inputs enter the key through the solver), plus, for image sources, the
//! resolved manifest digest. Copy sources and read-only bind mounts are consumed by
//! content: their keys use content checksums of the selected paths (`contenthash`), so an
//! unrelated change in a build context does not invalidate a step, and equal content from
//! two sources hits the same cache.
//!
//! The client session of a build reaches its ops through a [`BuildSession`], given to
//! [`build_graph_for`] per job: image sources take registry credentials from it, exec ops
//! secrets (secret mounts and secret environment variables) and SSH agents (ssh mounts).
//! Secrets are never part of a cache key, and a secret mount's file lives on a tmpfs for
//! the length of one run; an ssh mount's socket lives as long, and which agent is behind
//! it does not change the key either.
//!
//! This crate does not parse Dockerfiles (the frontend does) or talk to clients (the
//! session fills the [`LocalProvider`], the daemon implements [`BuildSession`]).
#![forbid(unsafe_code)]

mod cachemount;
mod exec;
mod file;
mod git;
mod graph;
mod http;
mod local;
mod localsync;
mod merge;
mod mounted;
mod remote;
mod secretmount;
mod source;
mod sshmount;

use std::sync::Arc;

pub use cache::{CacheManager, RecordType};
pub use cachemount::CacheMounts;
pub use graph::{build_graph, build_graph_for, vertex_name};
pub use local::{DirProvider, LocalProvider, SyncStats};
pub use mounted::Mounted;

use worker::Worker;

/// A result: a committed snapshot, or scratch. A snapshot result holds its cache record
/// for as long as any clone of it lives, so that no prune removes it under a build.
#[derive(Clone)]
pub struct Ref(Option<Arc<cache::Hold>>);

impl Ref {
    pub fn scratch() -> Ref {
        Ref(None)
    }

    /// The snapshot key, `None` for scratch.
    pub fn key(&self) -> Option<&str> {
        self.0.as_deref().map(cache::Hold::id)
    }
}

impl PartialEq for Ref {
    fn eq(&self, other: &Ref) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Ref {}

impl std::hash::Hash for Ref {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::fmt::Debug for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key() {
            Some(k) => write!(f, "Ref({k})"),
            None => f.write_str("Ref(scratch)"),
        }
    }
}

/// What the ops of one build get from that build's client session. Each job brings its
/// own (see [`build_graph_for`]), so concurrent builds never use each other's credentials
/// or secrets.
pub trait BuildSession: Send + Sync {
    /// Registry credentials for `host` (as [`registry::auth_host`] names it); `Ok(None)`
    /// means anonymous access.
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> solver::BoxFuture<'a, Result<Option<registry::Credentials>, String>>;

    /// The value of secret `id`; `Ok(None)` when the client does not have it.
    fn secret<'a>(&'a self, id: &'a str) -> solver::BoxFuture<'a, Result<Option<Vec<u8>>, String>>;

    /// Whether the client forwards its SSH agent `id`. By default a session forwards none.
    fn ssh_agent<'a>(&'a self, id: &'a str) -> solver::BoxFuture<'a, Result<bool, String>> {
        let _ = id;
        Box::pin(async { Ok(false) })
    }

    /// Carries `conn`, a connection made to an ssh mount's socket, to the client's agent
    /// `id` until either side closes.
    fn forward_ssh<'a>(
        &'a self,
        id: &'a str,
        conn: tokio::net::UnixStream,
    ) -> solver::BoxFuture<'a, Result<(), String>> {
        drop(conn);
        Box::pin(async move { Err(format!("no SSH agent {id:?} in this session")) })
    }
}

/// A build's session as the registry asks it.
pub(crate) struct SessionCredentials<'a>(pub(crate) &'a dyn BuildSession);

impl registry::CredentialSource for SessionCredentials<'_> {
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> solver::BoxFuture<'a, Result<Option<registry::Credentials>, String>> {
        self.0.credentials(host)
    }
}

/// Everything the ops share: the worker, where local sources come from, the content
/// hasher, the cache records and the cache mounts.
pub struct OpsContext {
    pub worker: Arc<Worker>,
    pub local: Arc<dyn LocalProvider>,
    pub hasher: contenthash::ContentHasher,
    pub cache: Arc<CacheManager>,
    pub cache_mounts: CacheMounts,
}

impl std::fmt::Debug for OpsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsContext")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl OpsContext {
    pub fn new(worker: Arc<Worker>, local: Arc<dyn LocalProvider>) -> Arc<OpsContext> {
        let hasher = contenthash::ContentHasher::new(worker.metadata.clone());
        let cache = CacheManager::new(
            worker.metadata.clone(),
            worker.snapshotter.clone(),
            worker.root(),
        );
        // A local source's kept copy is pinned for reuse, not in use.
        cache.add_pin_prefix(localsync::HOLD_PREFIX);
        let cache_mounts = CacheMounts::new(cache.clone());
        let ctx = Arc::new(OpsContext {
            worker,
            local,
            hasher,
            cache,
            cache_mounts,
        });
        localsync::repin(&ctx);
        ctx
    }

    /// A fresh snapshot key for a result.
    pub(crate) fn new_key(prefix: &str) -> String {
        format!("{prefix}/{}", llb::random_id())
    }

    /// The existing committed snapshot `key` as a result, held; `None` when it is gone
    /// or being removed.
    pub fn existing_ref(&self, key: &str) -> Option<Ref> {
        let hold = self.cache.hold(key)?;
        let committed = self
            .worker
            .snapshotter
            .stat(key)
            .is_ok_and(|i| i.kind == snapshot::Kind::Committed);
        committed.then(|| Ref(Some(Arc::new(hold))))
    }

    /// [`OpsContext::existing_ref`] as a result a build uses: the use is recorded
    /// (a record not seen before gets `record_type` and `description`).
    pub fn use_ref(
        &self,
        key: &str,
        record_type: RecordType,
        description: &str,
    ) -> Result<Ref, solver::OpError> {
        let r = self.existing_ref(key).ok_or_else(|| {
            op_err(format!(
                "snapshot {key} was removed (by a prune) while it was being used; build again"
            ))
        })?;
        self.cache.used(key, record_type, description);
        Ok(r)
    }
}

/// Persists [`Ref`]s for the solver's cache: the id is the snapshot key, and a ref loads
/// again only while its snapshot exists.
pub struct RefStore {
    ctx: Arc<OpsContext>,
}

impl RefStore {
    pub fn new(ctx: Arc<OpsContext>) -> RefStore {
        RefStore { ctx }
    }
}

const SCRATCH_ID: &str = "scratch";

impl solver::ResultStore<Ref> for RefStore {
    fn id(&self, r: &Ref) -> String {
        r.key().unwrap_or(SCRATCH_ID).to_string()
    }

    fn load(&self, id: &str) -> Option<Ref> {
        if id == SCRATCH_ID {
            return Some(Ref::scratch());
        }
        let r = self.ctx.existing_ref(id)?;
        self.ctx.cache.used(id, RecordType::Regular, "");
        Some(r)
    }
}

/// Mounts a read-only view of `r` (an empty directory for scratch), unmounted when the
/// returned guard is dropped. Blocking: exporters use it to read results.
pub fn mount_view(ctx: &OpsContext, r: &Ref) -> Result<Mounted, solver::OpError> {
    mounted::view(ctx, r)
}

/// Turns a displayable error into the solver's op error.
pub(crate) fn op_err(e: impl std::fmt::Display) -> solver::OpError {
    solver::OpError::new(e.to_string())
}

/// Runs blocking work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, solver::OpError> + Send + 'static,
) -> Result<T, solver::OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| solver::OpError::new(format!("internal: {e}")))?
}
