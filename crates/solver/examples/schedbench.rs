//! Scheduler overhead: solves a synthetic graph of N vertices (default 1,000; each vertex
//! depends on up to three earlier ones) whose ops do nothing, cold and then fully cached,
//! and prints the time per vertex. Run by `bench/solver.sh`.

use std::sync::Arc;
use std::time::Instant;

use oci::Digest;
use solver::{
    BoxFuture, CacheMap, Dep, Edge, Graph, Op, OpContext, OpError, Progress, ResultStore, Solver,
    SolverOptions, Vertex,
};
use tokio_util::sync::CancellationToken;

struct Noop(Digest, usize);

impl Op<u64> for Noop {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(async move {
            Ok(CacheMap {
                digest: self.0,
                deps: vec![Dep::default(); self.1],
                always_run: false,
            })
        })
    }
    fn exec<'a>(
        &'a self,
        _: &'a OpContext,
        inputs: Vec<u64>,
    ) -> BoxFuture<'a, Result<Vec<u64>, OpError>> {
        Box::pin(async move { Ok(vec![inputs.iter().sum::<u64>() + 1]) })
    }
}

struct Store;

impl ResultStore<u64> for Store {
    fn id(&self, r: &u64) -> String {
        r.to_string()
    }
    fn load(&self, id: &str) -> Option<u64> {
        id.parse().ok()
    }
}

fn graph(n: usize) -> Graph<u64> {
    let vertices = (0..n)
        .map(|i| {
            let inputs: Vec<Edge> = [i / 2, i / 3, i.saturating_sub(1)]
                .into_iter()
                .filter(|j| *j < i)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|vertex| Edge { vertex, output: 0 })
                .collect();
            Vertex {
                digest: format!("v{i}"),
                name: format!("vertex {i}"),
                op: Arc::new(Noop(Digest::of(format!("op{i}").as_bytes()), inputs.len()))
                    as Arc<dyn Op<u64>>,
                inputs,
                ignore_cache: false,
            }
        })
        .collect();
    Graph {
        vertices,
        target: Edge {
            vertex: n - 1,
            output: 0,
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let md: Arc<dyn metadata::MetadataStore> =
        Arc::new(metadata::RedbStore::open(&dir.path().join("m.redb"), &[])?);
    let rt = tokio::runtime::Runtime::new()?;
    let s = Solver::new(
        md,
        Arc::new(Store) as Arc<dyn ResultStore<u64>>,
        SolverOptions::default(),
    );
    for label in ["cold (every vertex runs and is recorded)", "fully cached"] {
        let (p, mut rx) = Progress::channel();
        let t = Instant::now();
        rt.block_on(s.solve(graph(n), false, p, CancellationToken::new()))?;
        let e = t.elapsed();
        let mut events = 0;
        while rx.try_recv().is_ok() {
            events += 1;
        }
        println!(
            "{n} vertices, {label}: {:.1} ms total, {:.1} µs per vertex ({events} progress messages)",
            e.as_secs_f64() * 1e3,
            e.as_secs_f64() * 1e6 / n as f64
        );
    }
    Ok(())
}
