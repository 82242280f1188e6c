//! Time of a fully cached re-solve of a 50-vertex LLB graph (a busybox image, 24 execs and
//! 25 file ops) with real runc and overlayfs, after one cold solve. Needs root, runc and
//! docker-registry. Run by `bench/solver.sh`.

use std::sync::Arc;
use std::time::Instant;

use llb::{FileAction, LoadedDefinition, MarshalOptions, MkfileOptions, OpOptions};
use ops::{DirProvider, OpsContext, RefStore};
use prost::Message;
use solver::{Progress, Solver, SolverOptions};
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reg = testkit::Registry::start()?;
    let image = testkit::BusyboxImage::new()?;
    reg.client()
        .push_image("busybox", "latest", image.image())?;
    let reference = format!("{}/busybox:latest", reg.host());
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let w = Worker::open(dir.path(), WorkerOptions::default()).await?;
        let ctx = OpsContext::new(Arc::new(w), Arc::new(DirProvider::new()));
        let solver = Solver::new(
            ctx.worker.metadata.clone(),
            Arc::new(RefStore::new(ctx.clone())),
            SolverOptions::default(),
        );
        let mut st = llb::image(&reference).env("PATH", llb::DEFAULT_PATH);
        for i in 0..49 {
            st = if i % 2 == 0 {
                st.file(
                    &FileAction::mkfile(
                        &format!("/f{i}"),
                        0o644,
                        format!("{i}\n"),
                        MkfileOptions::default(),
                    ),
                    OpOptions::new(),
                )
            } else {
                st.run().shell(&format!("echo {i} >> /log")).build().root()
            };
        }
        let def = st.marshal(&MarshalOptions::default())?;
        let loaded = LoadedDefinition::from_bytes(&def.encode_to_vec())?;
        println!("graph: {} vertices", loaded.ops.len());
        for label in ["cold", "fully cached"] {
            let graph = ops::build_graph(&loaded, &ctx)?;
            let t = Instant::now();
            solver
                .solve(graph, false, Progress::discard(), CancellationToken::new())
                .await?;
            println!("{label} solve: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
