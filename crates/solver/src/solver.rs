//! Jobs and the scheduler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::FutureExt;
use futures::future::{Shared, try_join_all};
use metadata::MetadataStore;
use oci::Digest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::PersistentCache;
use crate::error::{OpError, SolveError};
use crate::key::{self, InputKey};
use crate::op::{BoxFuture, Op, OpContext, ResultStore};
use crate::progress::{Progress, VertexInfo};

/// An edge: output `output` of vertex `vertex` (an index into [`Graph::vertices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    pub vertex: usize,
    pub output: usize,
}

/// A vertex of a job's graph.
pub struct Vertex<R> {
    /// The vertex digest (the LLB op digest): its identity in progress.
    pub digest: String,
    /// The display name.
    pub name: String,
    pub inputs: Vec<Edge>,
    pub op: Arc<dyn Op<R>>,
    /// Never take this vertex's result from the cache.
    pub ignore_cache: bool,
}

/// What a job solves: its vertices and the edge whose result it wants.
pub struct Graph<R> {
    pub vertices: Vec<Vertex<R>>,
    pub target: Edge,
}

impl<R> Graph<R> {
    fn validate(&self) -> Result<(), SolveError> {
        let n = self.vertices.len();
        if self.target.vertex >= n {
            return Err(SolveError::Graph(
                "the target is not a vertex of the graph".into(),
            ));
        }
        for (i, v) in self.vertices.iter().enumerate() {
            if let Some(e) = v.inputs.iter().find(|e| e.vertex >= n) {
                return Err(SolveError::Graph(format!(
                    "vertex {} ({}) has input {} out of range",
                    i, v.name, e.vertex
                )));
            }
        }
        // acyclic: iterative depth-first search with colours
        let mut colour = vec![0u8; n];
        for start in 0..n {
            if colour[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            colour[start] = 1;
            while let Some((v, next)) = stack.pop() {
                let inputs = &self.vertices[v].inputs;
                if next < inputs.len() {
                    stack.push((v, next + 1));
                    let c = inputs[next].vertex;
                    match colour[c] {
                        0 => {
                            colour[c] = 1;
                            stack.push((c, 0));
                        }
                        1 => {
                            return Err(SolveError::Graph(format!(
                                "cycle through vertex {}",
                                self.vertices[c].name
                            )));
                        }
                        _ => {}
                    }
                } else {
                    colour[v] = 2;
                }
            }
        }
        Ok(())
    }
}

/// Solver settings.
#[derive(Clone, Debug)]
pub struct SolverOptions {
    /// How many ops may run at once (default: the number of CPUs).
    pub parallelism: usize,
}

impl Default for SolverOptions {
    fn default() -> SolverOptions {
        SolverOptions {
            parallelism: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

type VertexResult<R> = Result<(Vec<R>, Digest), SolveError>;
type SharedVertex<R> = Shared<BoxFuture<'static, VertexResult<R>>>;
type SharedExec<R> = Shared<BoxFuture<'static, Result<Vec<R>, SolveError>>>;

struct InFlight<R> {
    fut: SharedExec<R>,
    waiters: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

struct Inner<R> {
    cache: PersistentCache,
    store: Arc<dyn ResultStore<R>>,
    limit: Arc<Semaphore>,
    inflight: Mutex<HashMap<Digest, InFlight<R>>>,
}

/// The solver: shared by all jobs, so equal work runs once.
pub struct Solver<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Solver<R> {
    fn clone(&self) -> Self {
        Solver {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Solver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solver").finish_non_exhaustive()
    }
}

struct Job<R> {
    inner: Arc<Inner<R>>,
    graph: Graph<R>,
    no_cache: bool,
    source: Option<Arc<dyn CacheSource<R>>>,
    progress: Progress,
    cancel: CancellationToken,
    memo: Mutex<HashMap<usize, SharedVertex<R>>>,
    solved: Mutex<Vec<SolvedVertex<R>>>,
}

/// Where a job finds results its own cache lacks: an imported build cache.
pub trait CacheSource<R>: Send + Sync {
    /// Every output of the vertex whose cache key is `key`, if the source has them. A
    /// source that fails reports it itself (a warning) and answers `None`: the vertex
    /// then runs.
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Option<Vec<R>>>;
}

/// How a job solves.
pub struct SolveOptions<R> {
    /// Ignore the cache for every vertex (results are still recorded).
    pub no_cache: bool,
    /// Results to use when the cache has none (imported build caches).
    pub source: Option<Arc<dyn CacheSource<R>>>,
}

impl<R> Default for SolveOptions<R> {
    fn default() -> Self {
        SolveOptions {
            no_cache: false,
            source: None,
        }
    }
}

/// One vertex of a solved job, as a cache export needs it.
#[derive(Clone, Debug)]
pub struct SolvedVertex<R> {
    /// The vertex's cache key.
    pub key: Digest,
    /// The display name.
    pub name: String,
    /// Per input: the input vertex's key, the output used and the selector, for inputs
    /// consumed by definition; `None` for inputs consumed by content (their content
    /// digest is in `key`).
    pub inputs: Vec<Option<(Digest, usize, Option<String>)>>,
    /// The results, one per output.
    pub outputs: Vec<R>,
    /// Whether the result came from a cache.
    pub cached: bool,
    /// The op runs every time (a local source): not worth exporting.
    pub always_run: bool,
}

/// A solved job: the target's result, its key, and every vertex solved.
pub struct Solved<R> {
    pub result: R,
    /// The target vertex's key and output.
    pub target: (Digest, usize),
    /// The vertices, in the order they finished.
    pub vertices: Vec<SolvedVertex<R>>,
}

impl<R: Clone + Send + Sync + 'static> Solver<R> {
    /// A solver whose cache lives in `md` and whose results are persisted by `store`.
    pub fn new(
        md: Arc<dyn MetadataStore>,
        store: Arc<dyn ResultStore<R>>,
        opts: SolverOptions,
    ) -> Solver<R> {
        Solver {
            inner: Arc::new(Inner {
                cache: PersistentCache::new(md),
                store,
                limit: Arc::new(Semaphore::new(opts.parallelism.max(1))),
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The persistent cache (for disk usage and pruning).
    pub fn cache(&self) -> &PersistentCache {
        &self.inner.cache
    }

    /// Solves `graph` and returns the target's result. `no_cache` ignores the cache for
    /// every vertex (results are still recorded). Cancelling `cancel` stops the job; ops it
    /// shares with other jobs go on for them.
    pub async fn solve(
        &self,
        graph: Graph<R>,
        no_cache: bool,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Result<R, SolveError> {
        let opts = SolveOptions {
            no_cache,
            source: None,
        };
        Ok(self.solve_with(graph, opts, progress, cancel).await?.result)
    }

    /// [`Solver::solve`] with `opts`, returning every vertex solved too (for cache
    /// exports).
    pub async fn solve_with(
        &self,
        graph: Graph<R>,
        opts: SolveOptions<R>,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Result<Solved<R>, SolveError> {
        graph.validate()?;
        let target = graph.target;
        let job = Arc::new(Job {
            inner: self.inner.clone(),
            graph,
            no_cache: opts.no_cache,
            source: opts.source,
            progress,
            cancel,
            memo: Mutex::new(HashMap::new()),
            solved: Mutex::new(Vec::new()),
        });
        let (outs, key) = job.vertex(target.vertex).await?;
        let result = outs.get(target.output).cloned().ok_or_else(|| {
            SolveError::Graph(format!("the target vertex has no output {}", target.output))
        })?;
        let vertices = std::mem::take(&mut *job.solved.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Solved {
            result,
            target: (key, target.output),
            vertices,
        })
    }
}

impl<R: Clone + Send + Sync + 'static> Inner<R> {
    fn lookup(&self, key: &Digest) -> Result<Option<Vec<R>>, SolveError> {
        let Some(rec) = self.cache.get(key)? else {
            return Ok(None);
        };
        let mut outs = Vec::with_capacity(rec.results.len());
        for id in &rec.results {
            match self.store.load(id) {
                Some(r) => outs.push(r),
                None => return Ok(None), // the result is gone: not a hit
            }
        }
        Ok(Some(outs))
    }

    /// Runs `op` for `key` once, however many jobs ask at the same time.
    #[allow(clippy::too_many_arguments)]
    async fn run_shared(
        self: &Arc<Self>,
        key: Digest,
        op: Arc<dyn Op<R>>,
        inputs: Vec<R>,
        info: VertexInfo,
        progress: &Progress,
        job_cancel: &CancellationToken,
    ) -> Result<Vec<R>, SolveError> {
        let (fut, waiters, token, ours) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&key) {
                e.waiters.fetch_add(1, Ordering::SeqCst);
                (e.fut.clone(), e.waiters.clone(), e.cancel.clone(), false)
            } else {
                let token = CancellationToken::new();
                let waiters = Arc::new(AtomicUsize::new(1));
                let inner = self.clone();
                let ctx = OpContext {
                    vertex: info.digest.clone(),
                    progress: progress.clone(),
                    cancel: token.clone(),
                };
                let task_progress = progress.clone();
                let task_info = info.clone();
                let task_token = token.clone();
                let handle = tokio::spawn(async move {
                    let permit = inner.limit.clone().acquire_owned().await;
                    let started = SystemTime::now();
                    task_progress.started(&task_info, started);
                    let res = tokio::select! {
                        r = op.exec(&ctx, inputs) => r,
                        _ = task_token.cancelled() => Err(OpError::new("cancelled")),
                    };
                    drop(permit);
                    let res = res.map_err(|source| SolveError::Vertex {
                        digest: task_info.digest.clone(),
                        name: task_info.name.clone(),
                        source,
                    });
                    let res = match res {
                        Ok(outs) => {
                            let ids = outs.iter().map(|r| inner.store.id(r)).collect();
                            inner
                                .cache
                                .put(&key, ids)
                                .map(|()| outs)
                                .map_err(SolveError::from)
                        }
                        Err(e) => Err(e),
                    };
                    task_progress.completed(
                        &task_info,
                        started,
                        SystemTime::now(),
                        res.as_ref().err().map(|e| e.to_string()),
                    );
                    inner
                        .inflight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    res
                });
                let fut: BoxFuture<'static, Result<Vec<R>, SolveError>> = Box::pin(async move {
                    handle
                        .await
                        .unwrap_or_else(|e| Err(SolveError::Graph(format!("op task failed: {e}"))))
                });
                let fut = fut.shared();
                map.insert(
                    key,
                    InFlight {
                        fut: fut.clone(),
                        waiters: waiters.clone(),
                        cancel: token.clone(),
                    },
                );
                (fut, waiters, token, true)
            }
        };
        let started = SystemTime::now();
        if !ours {
            progress.started(&info, started);
        }
        let res = tokio::select! {
            r = fut => r,
            _ = job_cancel.cancelled() => {
                if waiters.fetch_sub(1, Ordering::SeqCst) == 1 {
                    token.cancel();
                }
                return Err(SolveError::Cancelled);
            }
        };
        waiters.fetch_sub(1, Ordering::SeqCst);
        if !ours {
            progress.completed(
                &info,
                started,
                SystemTime::now(),
                res.as_ref().err().map(|e| e.to_string()),
            );
        }
        res
    }
}

impl<R: Clone + Send + Sync + 'static> Job<R> {
    fn vertex(self: &Arc<Self>, idx: usize) -> SharedVertex<R> {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = memo.get(&idx) {
            return f.clone();
        }
        let job = self.clone();
        let f: BoxFuture<'static, VertexResult<R>> =
            Box::pin(async move { job.run_vertex(idx).await });
        let f = f.shared();
        memo.insert(idx, f.clone());
        f
    }

    async fn run_vertex(self: Arc<Self>, idx: usize) -> VertexResult<R> {
        let v = &self.graph.vertices[idx];
        let info = VertexInfo {
            digest: v.digest.clone(),
            name: v.name.clone(),
            inputs: v
                .inputs
                .iter()
                .map(|e| self.graph.vertices[e.vertex].digest.clone())
                .collect(),
        };
        let inputs = try_join_all(v.inputs.iter().map(|e| self.vertex(e.vertex))).await?;
        if self.cancel.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        let ctx = OpContext {
            vertex: v.digest.clone(),
            progress: self.progress.clone(),
            cancel: self.cancel.clone(),
        };
        let vertex_error = |source: OpError| SolveError::Vertex {
            digest: v.digest.clone(),
            name: v.name.clone(),
            source,
        };
        let cm = v.op.cache_map(&ctx).await.map_err(vertex_error)?;
        if cm.deps.len() != v.inputs.len() {
            return Err(SolveError::Graph(format!(
                "{}: the op describes {} inputs but the vertex has {}",
                v.name,
                cm.deps.len(),
                v.inputs.len()
            )));
        }
        let mut keys = Vec::with_capacity(v.inputs.len());
        let mut links = Vec::with_capacity(v.inputs.len());
        let mut in_results = Vec::with_capacity(v.inputs.len());
        for (i, e) in v.inputs.iter().enumerate() {
            let (outs, key) = &inputs[i];
            let r = outs.get(e.output).cloned().ok_or_else(|| {
                SolveError::Graph(format!(
                    "{} uses output {} of {}, which has {} outputs",
                    v.name,
                    e.output,
                    self.graph.vertices[e.vertex].name,
                    outs.len()
                ))
            })?;
            let dep = &cm.deps[i];
            if dep.content_based {
                let digest =
                    v.op.content_digest(&ctx, i, &r)
                        .await
                        .map_err(vertex_error)?;
                keys.push(InputKey::Content {
                    digest,
                    selector: dep.selector.clone(),
                });
                links.push(None);
            } else {
                keys.push(InputKey::Definition {
                    key: *key,
                    output: e.output,
                    selector: dep.selector.clone(),
                });
                links.push(Some((*key, e.output, dep.selector.clone())));
            }
            in_results.push(r);
        }
        let key = key::compute(&cm.digest, &keys);
        let use_cache = !(self.no_cache || v.ignore_cache || cm.always_run);
        let solved = |outs: &Vec<R>, cached: bool| {
            self.solved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(SolvedVertex {
                    key,
                    name: v.name.clone(),
                    inputs: links.clone(),
                    outputs: outs.clone(),
                    cached,
                    always_run: cm.always_run,
                });
        };
        if use_cache && let Some(outs) = self.inner.lookup(&key)? {
            self.progress.cached(&info, SystemTime::now());
            solved(&outs, true);
            return Ok((outs, key));
        }
        if use_cache
            && let Some(source) = &self.source
            && let Some(outs) = source.load(&key).await
        {
            // Imported: remembered here, so the next build finds it without the source.
            let ids = outs.iter().map(|r| self.inner.store.id(r)).collect();
            self.inner.cache.put(&key, ids)?;
            self.progress.cached(&info, SystemTime::now());
            solved(&outs, true);
            return Ok((outs, key));
        }
        let outs = self
            .inner
            .run_shared(
                key,
                v.op.clone(),
                in_results,
                info,
                &self.progress,
                &self.cancel,
            )
            .await?;
        solved(&outs, false);
        Ok((outs, key))
    }
}
