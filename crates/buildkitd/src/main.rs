//! `buildkitd`: the BuildKit daemon. Flags and `buildkitd.toml` into the `daemon` crate.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use daemon::config::{Config, DEFAULT_ADDRESS, DEFAULT_ROOT};

const DEFAULT_CONFIG: &str = "/etc/buildkit/buildkitd.toml";

/// BuildKit daemon (buildkit-rs).
#[derive(Parser, Debug)]
#[command(name = "buildkitd", version, about)]
struct Args {
    /// Path to the config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Enable debug output in logs.
    #[arg(long)]
    debug: bool,
    /// Path to the state directory.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Listening address (unix:///path or tcp://host:port); repeatable.
    #[arg(long = "addr")]
    addr: Vec<String>,
    /// Snapshotter of the OCI worker: auto, overlayfs or native.
    #[arg(long = "oci-worker-snapshotter")]
    snapshotter: Option<String>,
    /// The OCI runtime binary (runc or crun).
    #[arg(long = "oci-worker-binary")]
    binary: Option<PathBuf>,
    /// How many steps may run at once.
    #[arg(long = "oci-max-parallelism")]
    max_parallelism: Option<usize>,
    /// Enable automatic garbage collection of the build cache (default true).
    #[arg(long = "oci-worker-gc", num_args = 0..=1, default_missing_value = "true")]
    gc: Option<bool>,
    /// Storage GC keeps, "Reserved[,Free[,Maximum]]" in MB.
    #[arg(long = "oci-worker-gc-keepstorage")]
    gc_keep_storage: Option<String>,
    /// Allow an insecure entitlement (security.insecure, network.host); repeatable.
    #[arg(long = "allow-insecure-entitlement")]
    allow_insecure_entitlement: Vec<String>,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (config_path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut config = Config::load(&config_path, required)?;
    let debug = args.debug || config.debug;
    tracing_subscriber::fmt()
        .with_env_filter(if debug { "debug" } else { "info" })
        .with_writer(std::io::stderr)
        // colour codes only for a terminal, not for log files
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(s) = args.snapshotter {
        config.worker.oci.snapshotter = Some(s);
    }
    if let Some(b) = args.binary {
        config.worker.oci.binary = Some(b);
    }
    if let Some(n) = args.max_parallelism {
        config.worker.oci.max_parallelism = Some(n);
    }
    if let Some(gc) = args.gc {
        config.worker.oci.gc = Some(gc);
    }
    if let Some(v) = &args.gc_keep_storage {
        let mb = v
            .split(',')
            .map(|p| {
                let n: f64 = p.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--oci-worker-gc-keepstorage {v}: expected Reserved[,Free[,Maximum]] in MB"
                    )
                })?;
                if !n.is_finite() || n < 0.0 {
                    anyhow::bail!("--oci-worker-gc-keepstorage {v}: sizes must be 0 or more");
                }
                Ok(daemon::config::Size::Bytes((n * 1e6) as u64))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if mb.is_empty() || mb.len() > 3 {
            anyhow::bail!(
                "--oci-worker-gc-keepstorage {v}: expected Reserved[,Free[,Maximum]] in MB"
            );
        }
        let mut parts = mb.into_iter();
        let oci = &mut config.worker.oci;
        oci.reserved_space = parts.next();
        oci.min_free_space = parts.next().or(oci.min_free_space.take());
        oci.max_used_space = parts.next().or(oci.max_used_space.take());
    }
    config
        .insecure_entitlements
        .extend(args.allow_insecure_entitlement.iter().cloned());
    for e in &config.insecure_entitlements {
        if e != "security.insecure" && e != "network.host" {
            anyhow::bail!("insecure entitlement {e:?}: expected security.insecure or network.host");
        }
    }
    let root = args
        .root
        .or(config.root.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let addresses = if !args.addr.is_empty() {
        args.addr
    } else if !config.grpc.address.is_empty() {
        config.grpc.address.clone()
    } else {
        vec![DEFAULT_ADDRESS.to_string()]
    };
    let controller = daemon::open(root.clone(), &config)
        .await
        .with_context(|| format!("starting the worker at {}", root.display()))?;
    tracing::info!(root = %root.display(), "buildkitd running");
    daemon::serve(controller, &addresses, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
