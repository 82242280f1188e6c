//! Fills a worker root with cache records, for `bench/cache.sh`: `N` committed
//! snapshots (default 10,000; the last `PRUNE` of them, default 1,000, described
//! `bench-prune`), each holding one small file, in chains of 10 as builds make them.
//! Prints how long the cache manager takes to list them (sizes computed, then
//! remembered) and to prune the `bench-prune` ones; with `--fill-only` it stops after
//! making them (for timing `buildctl du` and `prune` through a daemon on ROOT).
//!
//! `cargo run --release -p cache --example cache_bench -- ROOT [N] [PRUNE] [--fill-only]`

use std::path::PathBuf;
use std::time::Instant;

use cache::{CacheManager, PruneOptions, RecordType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fill_only = std::env::args().any(|a| a == "--fill-only");
    let mut args = std::env::args().skip(1).filter(|a| a != "--fill-only");
    let root = PathBuf::from(args.next().ok_or("usage: cache_bench ROOT [N] [PRUNE]")?);
    let n: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let prune: usize = args.next().map_or(Ok(1_000), |s| s.parse())?;
    let w = worker::Worker::open(&root, worker::WorkerOptions::default()).await?;
    let cache = CacheManager::new(w.metadata.clone(), w.snapshotter.clone(), w.root());
    let snap = w.snapshotter.clone();
    let started = Instant::now();
    let mut parent: Option<String> = None;
    for i in 0..n {
        if i % 10 == 0 {
            parent = None;
        }
        let active = format!("bench-active-{i}");
        let name = format!("ref/bench-{i:06}");
        let mounts = snap.prepare(&active, parent.as_deref())?;
        let dir = tempfile::tempdir_in(w.tmp_dir())?;
        let guard = snapshot::mount::mount_all(&mounts, dir.path())?;
        std::fs::write(dir.path().join(format!("f{i}")), format!("record {i}\n"))?;
        guard.release()?;
        snap.commit(&name, &active)?;
        let what = if i >= n - prune {
            "bench-prune"
        } else {
            "bench"
        };
        cache.created(&name, RecordType::Regular, what);
        parent = Some(name);
    }
    println!("created {n} records in {:.2?}", started.elapsed());
    if fill_only {
        return Ok(());
    }
    let t = Instant::now();
    let recs = cache.disk_usage(&[])?;
    println!(
        "disk usage, sizes computed: {} records in {:.2?}",
        recs.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let recs = cache.disk_usage(&[])?;
    println!(
        "disk usage, sizes remembered: {} records in {:.2?}",
        recs.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let opts = PruneOptions {
        filters: vec!["description==bench-prune".into()],
        ..PruneOptions::default()
    };
    let report = cache.prune(&opts, &mut |_| {})?;
    println!(
        "prune: {} records ({} bytes) in {:.2?}",
        report.removed.len(),
        report.bytes_freed,
        t.elapsed()
    );
    Ok(())
}
