//! `buildctl build`: solve a build on the daemon and print its progress.
//!
//! Today: an LLB definition on standard input (no `--frontend`), progress `plain`/`quiet`.
//! Frontends go to the daemon, which says whether it has them; outputs, `--local` and
//! `--secret` need client sessions, which are not built yet.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use prost::Message;
use proto::control::{SolveRequest, StatusRequest};

use crate::cli::GlobalArgs;

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
    /// Secret, id=ID,src=PATH|env=VAR (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
}

/// Runs the build; returns an error with the failing step's message on failure.
pub async fn run(global: &GlobalArgs, args: &BuildArgs) -> anyhow::Result<()> {
    if let Some(o) = args.outputs.first() {
        bail!("--output {o}: outputs need client sessions, which buildkit-rs does not support yet");
    }
    if let Some(l) = args.locals.first() {
        bail!(
            "--local {l}: local directories need client sessions, which buildkit-rs does not support yet"
        );
    }
    if let Some(s) = args.secrets.first() {
        bail!("--secret {s}: secrets need client sessions, which buildkit-rs does not support yet");
    }
    let quiet = match args.progress.as_str() {
        "quiet" => true,
        // tty redrawing is not built yet: auto and tty print plain lines
        "auto" | "plain" | "tty" => false,
        "rawjson" => bail!("--progress rawjson is not supported yet"),
        other => bail!("--progress {other}: expected auto, tty, plain, rawjson or quiet"),
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
    let build_ref = llb::random_id();
    let mut status_client = control.clone();
    let status_ref = build_ref.clone();
    let printer = tokio::spawn(async move {
        let mut stream = status_client
            .status(StatusRequest { r#ref: status_ref })
            .await?
            .into_inner();
        let mut p = client::progress::PlainPrinter::new();
        let mut err = std::io::stderr();
        while let Some(msg) = stream.message().await? {
            if !quiet {
                let text = p.update(&msg);
                let _ = err.write_all(text.as_bytes());
            }
        }
        Ok::<(), tonic::Status>(())
    });
    let solved = control
        .solve(SolveRequest {
            r#ref: build_ref,
            definition,
            frontend: args.frontend.clone().unwrap_or_default(),
            frontend_attrs,
            ..SolveRequest::default()
        })
        .await;
    // The status stream ends when the job does.
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    match solved {
        Ok(_) => Ok(()),
        Err(status) => bail!("{}", status.message()),
    }
}
