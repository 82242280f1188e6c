//! The generic solver with in-memory ops: parallelism, deduplication, caching across
//! solves and restarts, content-based keys, errors and cancellation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metadata::{MemStore, MetadataStore, RedbStore};
use oci::Digest;
use solver::{
    BoxFuture, CacheMap, Dep, Edge, Graph, Op, OpContext, OpError, Progress, ProgressStream,
    ResultStore, SolveError, Solver, SolverOptions, Vertex,
};
use tokio_util::sync::CancellationToken;

/// Results are strings; "deleted" ones can no longer be loaded.
#[derive(Default)]
struct Store {
    deleted: Mutex<HashSet<String>>,
}

impl ResultStore<String> for Store {
    fn id(&self, r: &String) -> String {
        r.clone()
    }
    fn load(&self, id: &str) -> Option<String> {
        (!self.deleted.lock().unwrap().contains(id)).then(|| id.to_string())
    }
}

/// Counters shared by the ops of a test.
#[derive(Default)]
struct Stats {
    runs: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

/// An op that joins its inputs' results with its name, after sleeping.
struct Join {
    name: String,
    sleep: Duration,
    fail: bool,
    /// Inputs read by content: the key uses the part of the input before '|'.
    content: Vec<bool>,
    stats: Arc<Stats>,
}

impl Op<String> for Join {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(async move {
            Ok(CacheMap {
                digest: Digest::of(self.name.as_bytes()),
                deps: self
                    .content
                    .iter()
                    .map(|c| Dep {
                        selector: None,
                        content_based: *c,
                    })
                    .collect(),
                always_run: false,
            })
        })
    }

    fn content_digest<'a>(
        &'a self,
        _: &'a OpContext,
        _: usize,
        input: &'a String,
    ) -> BoxFuture<'a, Result<Digest, OpError>> {
        Box::pin(async move { Ok(Digest::of(input.split('|').next().unwrap_or("").as_bytes())) })
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, OpError>> {
        Box::pin(async move {
            let now = self.stats.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.stats.max_running.fetch_max(now, Ordering::SeqCst);
            // counts the op as stopped however it ends, also when its future is dropped
            let _running = Running(&self.stats.running);
            self.stats.runs.lock().unwrap().push(self.name.clone());
            ctx.progress.log(
                &ctx.vertex,
                1,
                format!("running {}\n", self.name).as_bytes(),
            );
            let slept = tokio::select! {
                _ = tokio::time::sleep(self.sleep) => true,
                _ = ctx.cancel.cancelled() => false,
            };
            if !slept {
                return Err(OpError::new("cancelled"));
            }
            if self.fail {
                return Err(OpError::new(format!("{} exited with code 1", self.name)));
            }
            let mut out = self.name.clone();
            for i in inputs {
                out.push('(');
                out.push_str(&i);
                out.push(')');
            }
            Ok(vec![out])
        })
    }
}

struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// name, inputs, run time, fails, content-based inputs
type Spec = (String, Vec<usize>, Duration, bool, Vec<bool>);

struct G {
    stats: Arc<Stats>,
    vertices: Vec<Spec>,
}

impl G {
    fn new(stats: &Arc<Stats>) -> G {
        G {
            stats: stats.clone(),
            vertices: Vec::new(),
        }
    }
    fn add(&mut self, name: &str, inputs: &[usize], ms: u64) -> usize {
        self.vertices.push((
            name.into(),
            inputs.to_vec(),
            Duration::from_millis(ms),
            false,
            vec![false; inputs.len()],
        ));
        self.vertices.len() - 1
    }
    fn failing(&mut self, name: &str, inputs: &[usize]) -> usize {
        let i = self.add(name, inputs, 10);
        self.vertices[i].3 = true;
        i
    }
    fn content(&mut self, name: &str, inputs: &[usize]) -> usize {
        let i = self.add(name, inputs, 10);
        self.vertices[i].4 = vec![true; inputs.len()];
        i
    }
    fn graph(&self, target: usize) -> Graph<String> {
        Graph {
            vertices: self
                .vertices
                .iter()
                .map(|(name, inputs, sleep, fail, content)| Vertex {
                    digest: format!("sha256:{}", Digest::of(name.as_bytes()).hex()),
                    name: name.clone(),
                    inputs: inputs
                        .iter()
                        .map(|v| Edge {
                            vertex: *v,
                            output: 0,
                        })
                        .collect(),
                    op: Arc::new(Join {
                        name: name.clone(),
                        sleep: *sleep,
                        fail: *fail,
                        content: content.clone(),
                        stats: self.stats.clone(),
                    }) as Arc<dyn Op<String>>,
                    ignore_cache: false,
                })
                .collect(),
            target: Edge {
                vertex: target,
                output: 0,
            },
        }
    }
}

fn solver(md: Arc<dyn MetadataStore>) -> Solver<String> {
    Solver::new(
        md,
        Arc::new(Store::default()),
        SolverOptions { parallelism: 4 },
    )
}

async fn solve(
    s: &Solver<String>,
    g: Graph<String>,
) -> (
    Result<String, SolveError>,
    Vec<proto::control::StatusResponse>,
) {
    let (p, rx) = Progress::channel();
    let r = s.solve(g, false, p, CancellationToken::new()).await;
    (r, drain(rx))
}

fn drain(mut rx: ProgressStream) -> Vec<proto::control::StatusResponse> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

fn diamond(stats: &Arc<Stats>) -> G {
    let mut g = G::new(stats);
    let base = g.add("base", &[], 10);
    let left = g.add("left", &[base], 300);
    let right = g.add("right", &[base], 300);
    g.add("top", &[left, right], 10);
    g
}

#[tokio::test]
async fn diamond_branches_run_in_parallel() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let g = diamond(&stats);
    let t = Instant::now();
    let (r, progress) = solve(&s, g.graph(3)).await;
    assert_eq!(r.unwrap(), "top(left(base))(right(base))");
    assert_eq!(stats.max_running.load(Ordering::SeqCst), 2);
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
    // the two branches overlap in the progress timestamps too
    let span = |name: &str| {
        let vs: Vec<_> = progress
            .iter()
            .flat_map(|m| &m.vertexes)
            .filter(|v| v.name == name && v.completed.is_some())
            .collect();
        let v = vs.last().unwrap();
        (v.started.unwrap(), v.completed.unwrap())
    };
    let (ls, le) = span("left");
    let (rs, re) = span("right");
    let secs = |t: prost_types::Timestamp| t.seconds as f64 + t.nanos as f64 / 1e9;
    assert!(secs(ls) < secs(re) && secs(rs) < secs(le), "no overlap");
    // logs carry the vertex digest
    assert!(
        progress
            .iter()
            .flat_map(|m| &m.logs)
            .any(|l| l.msg == b"running left\n")
    );
}

#[tokio::test]
async fn second_solve_is_fully_cached() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let g = diamond(&stats);
    solve(&s, g.graph(3)).await.0.unwrap();
    assert_eq!(stats.runs.lock().unwrap().len(), 4);
    let (r, progress) = solve(&s, g.graph(3)).await;
    assert_eq!(r.unwrap(), "top(left(base))(right(base))");
    assert_eq!(stats.runs.lock().unwrap().len(), 4, "nothing ran again");
    let cached: HashSet<_> = progress
        .iter()
        .flat_map(|m| &m.vertexes)
        .filter(|v| v.cached)
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(cached.len(), 4, "{cached:?}");
}

#[tokio::test]
async fn cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let stats = Arc::new(Stats::default());
    {
        let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&path, &[]).unwrap());
        solve(&solver(md), diamond(&stats).graph(3))
            .await
            .0
            .unwrap();
    }
    let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&path, &[]).unwrap());
    let (r, progress) = solve(&solver(md), diamond(&stats).graph(3)).await;
    r.unwrap();
    assert_eq!(stats.runs.lock().unwrap().len(), 4);
    assert!(progress.iter().flat_map(|m| &m.vertexes).all(|v| v.cached));
}

#[tokio::test]
async fn concurrent_solves_share_a_prefix() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let mut g1 = G::new(&stats);
    let b = g1.add("slow-base", &[], 300);
    g1.add("a", &[b], 10);
    let mut g2 = G::new(&stats);
    let b2 = g2.add("slow-base", &[], 300);
    g2.add("b", &[b2], 10);
    let (r1, r2) = tokio::join!(solve(&s, g1.graph(1)), solve(&s, g2.graph(1)));
    assert_eq!(r1.0.unwrap(), "a(slow-base)");
    assert_eq!(r2.0.unwrap(), "b(slow-base)");
    let runs = stats.runs.lock().unwrap().clone();
    assert_eq!(
        runs.iter().filter(|r| *r == "slow-base").count(),
        1,
        "{runs:?}"
    );
}

#[tokio::test]
async fn content_based_inputs_ignore_unrelated_changes() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    // "src|v1" and "src|v2" differ outside the part the consumer reads.
    let mut g = G::new(&stats);
    let src = g.add("src|v1", &[], 10);
    g.content("consumer", &[src]);
    solve(&s, g.graph(1)).await.0.unwrap();
    let mut g2 = G::new(&stats);
    let src2 = g2.add("src|v2", &[], 10);
    g2.content("consumer", &[src2]);
    let (r, _) = solve(&s, g2.graph(1)).await;
    assert_eq!(
        r.unwrap(),
        "consumer(src|v1)",
        "the consumer's result came from the cache"
    );
    let runs = stats.runs.lock().unwrap().clone();
    assert_eq!(runs, ["src|v1", "consumer", "src|v2"]);
    // content that matters re-runs it
    let mut g3 = G::new(&stats);
    let src3 = g3.add("other|v1", &[], 10);
    g3.content("consumer", &[src3]);
    assert_eq!(
        solve(&s, g3.graph(1)).await.0.unwrap(),
        "consumer(other|v1)"
    );
}

#[tokio::test]
async fn a_failing_vertex_is_named_and_not_cached() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let mut g = G::new(&stats);
    let base = g.add("base", &[], 10);
    g.failing("broken", &[base]);
    let mut ok = G::new(&stats);
    let base2 = ok.add("base", &[], 10);
    ok.add("fine", &[base2], 50);
    let ((r, progress), (r2, _)) = tokio::join!(solve(&s, g.graph(1)), solve(&s, ok.graph(1)));
    let err = r.unwrap_err();
    match &err {
        SolveError::Vertex { name, source, .. } => {
            assert_eq!(name, "broken");
            assert!(source.message.contains("exited with code 1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("broken"));
    assert!(
        progress
            .iter()
            .flat_map(|m| &m.vertexes)
            .any(|v| v.name == "broken" && !v.error.is_empty())
    );
    assert_eq!(r2.unwrap(), "fine(base)", "the other job is not affected");
    // the base is cached, the failure is not: it runs again
    let (r, _) = solve(&s, g.graph(1)).await;
    assert!(r.is_err());
    let runs = stats.runs.lock().unwrap().clone();
    assert_eq!(runs.iter().filter(|r| *r == "broken").count(), 2);
    assert_eq!(runs.iter().filter(|r| *r == "base").count(), 1);
}

#[tokio::test]
async fn cancelling_stops_unshared_work_and_keeps_shared_work() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let mut g = G::new(&stats);
    g.add("long", &[], 10_000);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let t = Instant::now();
    let r = s
        .solve(g.graph(0), false, Progress::discard(), cancel)
        .await;
    assert!(matches!(r, Err(SolveError::Cancelled)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        stats.running.load(Ordering::SeqCst),
        0,
        "the op was stopped"
    );

    // shared: one job cancels, the other still gets the result
    let mut g = G::new(&stats);
    g.add("shared", &[], 400);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let (a, b) = tokio::join!(
        s.solve(g.graph(0), false, Progress::discard(), cancel),
        s.solve(
            g.graph(0),
            false,
            Progress::discard(),
            CancellationToken::new()
        ),
    );
    assert!(matches!(a, Err(SolveError::Cancelled)));
    assert_eq!(b.unwrap(), "shared");
}

#[tokio::test]
async fn no_cache_and_lost_results_run_again() {
    let stats = Arc::new(Stats::default());
    let store = Arc::new(Store::default());
    let s = Solver::new(
        Arc::new(MemStore::default()),
        store.clone() as Arc<dyn ResultStore<String>>,
        SolverOptions::default(),
    );
    let mut g = G::new(&stats);
    g.add("x", &[], 1);
    s.solve(
        g.graph(0),
        false,
        Progress::discard(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    s.solve(
        g.graph(0),
        true,
        Progress::discard(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(stats.runs.lock().unwrap().len(), 2, "no-cache ran it again");
    store.deleted.lock().unwrap().insert("x".into());
    s.solve(
        g.graph(0),
        false,
        Progress::discard(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        stats.runs.lock().unwrap().len(),
        3,
        "a result that is gone is not a hit"
    );
}

#[tokio::test]
async fn parallelism_is_bounded() {
    let stats = Arc::new(Stats::default());
    let s = Solver::new(
        Arc::new(MemStore::default()),
        Arc::new(Store::default()) as Arc<dyn ResultStore<String>>,
        SolverOptions { parallelism: 2 },
    );
    let mut g = G::new(&stats);
    let leaves: Vec<usize> = (0..6)
        .map(|i| g.add(&format!("leaf{i}"), &[], 100))
        .collect();
    g.add("all", &leaves, 1);
    s.solve(
        g.graph(6),
        false,
        Progress::discard(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(stats.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn invalid_graphs_are_rejected() {
    let stats = Arc::new(Stats::default());
    let s = solver(Arc::new(MemStore::default()));
    let mut g = G::new(&stats);
    let a = g.add("a", &[1], 1);
    g.add("b", &[a], 1);
    let err = s
        .solve(
            g.graph(0),
            false,
            Progress::discard(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let mut g = G::new(&stats);
    g.add("a", &[7], 1);
    let err = s
        .solve(
            g.graph(0),
            false,
            Progress::discard(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}
