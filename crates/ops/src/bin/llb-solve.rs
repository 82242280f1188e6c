//! `llb-solve`: solves a marshaled LLB Definition (standard input) on a worker root, in
//! this process, and prints one line per vertex event (`cached`, `done`, `error`) and the
//! result's snapshot key. A debugging tool, and how tests check that a new process finds
//! the cache a previous one left.
//!
//! Usage: `llb-solve --root DIR [--local NAME=DIR]... < definition.pb`

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, bail};
use llb::LoadedDefinition;
use ops::{DirProvider, OpsContext, RefStore};
use solver::{Progress, Solver, SolverOptions};
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut root = None;
    let mut locals = DirProvider::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = Some(args.next().context("--root needs a directory")?),
            "--local" => {
                let spec = args.next().context("--local needs NAME=DIR")?;
                let (name, dir) = spec
                    .split_once('=')
                    .with_context(|| format!("--local {spec}: expected NAME=DIR"))?;
                locals = locals.with(name, dir);
            }
            other => bail!(
                "unknown argument {other:?}; usage: llb-solve --root DIR [--local NAME=DIR]..."
            ),
        }
    }
    let root = root.context("--root is required")?;
    let mut def = Vec::new();
    std::io::stdin()
        .read_to_end(&mut def)
        .context("reading the definition from standard input")?;
    let loaded = LoadedDefinition::from_bytes(&def).context("standard input")?;
    let worker = Worker::open(std::path::Path::new(&root), WorkerOptions::default())
        .await
        .with_context(|| format!("opening the worker at {root}"))?;
    let ctx = OpsContext::new(Arc::new(worker), Arc::new(locals));
    let solver = Solver::new(
        ctx.worker.metadata.clone(),
        Arc::new(RefStore::new(ctx.clone())),
        SolverOptions::default(),
    );
    let graph = ops::build_graph(&loaded, &ctx).map_err(anyhow::Error::msg)?;
    let (progress, mut rx) = Progress::channel();
    let printer = tokio::spawn(async move {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        while let Some(m) = rx.recv().await {
            for v in m.vertexes {
                let state = if v.cached {
                    "cached"
                } else if !v.error.is_empty() {
                    "error"
                } else if v.completed.is_some() {
                    "done"
                } else {
                    continue;
                };
                if last.insert(v.digest.clone(), state.into()).as_deref() != Some(state) {
                    println!("{state} {}", v.name);
                }
            }
        }
    });
    let result = solver
        .solve(graph, false, progress, CancellationToken::new())
        .await;
    drop(solver);
    let _ = printer.await;
    let r = result?;
    println!("result {}", r.key().unwrap_or("scratch"));
    Ok(())
}
