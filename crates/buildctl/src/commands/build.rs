//! `buildctl build`: solve a build on the daemon and print its progress.
//!
//! An LLB definition on standard input (no `--frontend`), progress in any of upstream's
//! modes (`auto`, `tty`, `plain`, `rawjson`, `quiet`) on standard error. A
//! session carries `--local` directories to the daemon, results back for `--output
//! type=local|tar|oci|docker` (`type=image` stays on the daemon, pushed when asked; the
//! exporter's answer goes to `--metadata-file`), `--secret` values, `--ssh` agents, and
//! registry credentials from the Docker config (`$DOCKER_CONFIG/config.json`). Frontends
//! go to the daemon, which says whether it has them.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use prost::Message;
use proto::control::{SolveRequest, StatusRequest};

use crate::cli::GlobalArgs;

mod cachespec;
mod output;

/// `buildctl build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Frontend to use (absent: an LLB definition on standard input).
    #[arg(long)]
    pub frontend: Option<String>,
    /// Frontend option, KEY=VALUE (repeatable).
    #[arg(long = "opt")]
    pub opts: Vec<String>,
    /// Local directory, NAME=DIR (repeatable).
    #[arg(long = "local")]
    pub locals: Vec<String>,
    /// Output, type=TYPE[,KEY=VALUE]... (repeatable).
    #[arg(long = "output", short = 'o')]
    pub outputs: Vec<String>,
    /// Progress output: auto, tty, plain, rawjson or quiet.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Allow an extra privilege: security.insecure or network.host (repeatable).
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Secret, id=ID,src=PATH|env=VAR (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent to forward, ID[=SOCKET][,raw=true]; ID alone uses $SSH_AUTH_SOCK (repeatable).
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,
    /// Export build cache, e.g. type=registry,ref=example.com/foo/bar,mode=max or
    /// type=inline (repeatable).
    #[arg(long = "export-cache")]
    pub export_cache: Vec<String>,
    /// Import build cache, e.g. type=registry,ref=example.com/foo/bar (repeatable).
    #[arg(long = "import-cache")]
    pub import_cache: Vec<String>,
    /// Output build metadata (e.g., image digest) to a file as JSON.
    #[arg(long)]
    pub metadata_file: Option<std::path::PathBuf>,
}

/// Runs the build; returns an error with the failing step's message on failure.
pub async fn run(global: &GlobalArgs, args: &BuildArgs) -> anyhow::Result<()> {
    let stdout_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (exporters, target) = output::parse_outputs(&args.outputs, stdout_is_terminal)?;
    let mut session = session::Session::new("buildctl");
    if !args.locals.is_empty() {
        let mut dirs = Vec::new();
        for l in &args.locals {
            let (name, dir) = l
                .split_once('=')
                .with_context(|| format!("--local {l}: expected NAME=DIR"))?;
            let dir = std::path::Path::new(dir);
            if !dir.is_dir() {
                bail!("--local {l}: {} is not a directory", dir.display());
            }
            dirs.push((name.to_string(), dir.to_path_buf()));
        }
        session.allow(session::FileSyncProvider::new(dirs));
    }
    if let Some(target) = target {
        session.allow(target);
    }
    if !args.secrets.is_empty() {
        session.allow(session::SecretsProvider::new(secrets(&args.secrets)?));
    }
    if !args.ssh.is_empty() {
        let agents = session::SshAgentProvider::from_specs(&args.ssh).context("--ssh")?;
        session.allow(agents);
    }
    // Registry credentials from the Docker config, for the daemon's pulls. A broken config
    // only warns, as upstream's does: the build may need no credentials at all.
    match session::AuthProvider::from_env() {
        Ok(auth) => {
            session.allow(auth);
        }
        Err(e) => eprintln!("WARNING: registry credentials: {e}"),
    }
    // Progress goes to standard error (standard output may carry a tar): auto redraws
    // in place only when that is a terminal.
    let stderr_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mode = client::progress::Mode::select(&args.progress, stderr_is_terminal)
        .map_err(|e| anyhow::anyhow!("--progress {}: {e}", args.progress))?;
    for a in &args.allow {
        if a != "security.insecure" && a != "network.host" {
            bail!("--allow {a}: expected security.insecure or network.host");
        }
    }
    let exports: Vec<_> = args
        .export_cache
        .iter()
        .map(|s| cachespec::parse(s, "--export-cache"))
        .collect::<anyhow::Result<_>>()?;
    let imports: Vec<_> = args
        .import_cache
        .iter()
        .map(|s| cachespec::parse(s, "--import-cache"))
        .collect::<anyhow::Result<_>>()?;
    // Local caches: this side serves their directories as content stores.
    let local = cachespec::local_stores(exports, imports)?;
    if !local.stores.is_empty() {
        session.allow(local.stores.clone());
    }
    let cache_options = if local.exports.is_empty() && local.imports.is_empty() {
        None
    } else {
        Some(proto::control::CacheOptions {
            exports: local.exports.clone(),
            imports: local.imports.clone(),
            ..proto::control::CacheOptions::default()
        })
    };
    let mut frontend_attrs = std::collections::BTreeMap::new();
    for o in &args.opts {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--opt {o}: expected KEY=VALUE"))?;
        frontend_attrs.insert(k.to_string(), v.to_string());
    }
    let definition = match &args.frontend {
        Some(_) => None,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the LLB definition from standard input")?;
            let mut def = proto::pb::Definition::decode(bytes.as_slice())
                .context("standard input: not an LLB definition")?;
            if args.no_cache {
                for md in def.metadata.values_mut() {
                    md.ignore_cache = true;
                }
            }
            Some(def)
        }
    };
    if args.no_cache && args.frontend.is_some() {
        frontend_attrs.insert("no-cache".into(), String::new());
    }

    let mut control = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let session_id = session.id().to_string();
    let closer = session.closer();
    let session_task = tokio::spawn(session.run(control.clone()));
    let build_ref = llb::random_id();
    let mut status_client = control.clone();
    let status_ref = build_ref.clone();
    let printer = tokio::spawn(async move {
        let mut stream = status_client
            .status(StatusRequest { r#ref: status_ref })
            .await?
            .into_inner();
        let mut display = client::progress::Display::new(mode);
        let mut err = std::io::stderr();
        // The tty display also redraws on a clock, so running times advance while a step
        // is silent; a frame is at most ~100 ms old. `message()` only polls the stream,
        // which keeps its own buffer: a tick winning the race loses no message.
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ended = loop {
            let text = tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(msg)) => display.update(&msg, std::time::SystemTime::now()),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                },
                _ = ticker.tick(), if display.wants_ticks() => {
                    if let Some((width, height)) = client::progress::terminal_size() {
                        display.resize(width, height);
                    }
                    display.tick(std::time::SystemTime::now())
                }
            };
            let _ = err.write_all(text.as_bytes());
        };
        // the final frame and the failed steps' output, even if the stream broke off
        let _ = err.write_all(display.finish(std::time::SystemTime::now()).as_bytes());
        ended
    });
    let solved = control
        .solve(SolveRequest {
            r#ref: build_ref,
            definition,
            frontend: args.frontend.clone().unwrap_or_default(),
            frontend_attrs,
            entitlements: args.allow.clone(),
            session: session_id,
            exporters,
            cache: cache_options,
            ..SolveRequest::default()
        })
        .await;
    closer.cancel();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), session_task).await {
        eprintln!("session: {e}");
    }
    // The status stream ends when the job does.
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    let response = match solved {
        Ok(r) => r.into_inner().exporter_response,
        Err(status) => bail!("{}", status.message()),
    };
    // Written only when the exporters answered something, as upstream.
    cachespec::tag_exported(&local.tags, &response)?;
    if let Some(path) = &args.metadata_file
        && !response.is_empty()
    {
        output::write_metadata_file(path, &response)?;
    }
    Ok(())
}

/// Reads `--secret id=ID,src=PATH|env=VAR` values.
fn secrets(specs: &[String]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for spec in specs {
        let mut id = None;
        let mut value = None;
        for kv in spec.split(',') {
            match kv.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", p)) => {
                    value = Some(
                        std::fs::read(p)
                            .with_context(|| format!("--secret {spec}: reading {p}"))?,
                    )
                }
                Some(("env", var)) => {
                    value = Some(
                        std::env::var(var)
                            .with_context(|| {
                                format!("--secret {spec}: environment variable {var} is not set")
                            })?
                            .into_bytes(),
                    )
                }
                Some(("type", _)) => {}
                _ => bail!("--secret {spec}: expected id=ID,src=PATH or id=ID,env=VAR"),
            }
        }
        let id = id.with_context(|| format!("--secret {spec}: id= is required"))?;
        let value = match value {
            Some(v) => v,
            None => std::env::var(&id)
                .with_context(|| format!("--secret {spec}: no src= or env= and no variable {id}"))?
                .into_bytes(),
        };
        out.push((id, value));
    }
    Ok(out)
}
