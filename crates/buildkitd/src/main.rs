//! `buildkitd`: the BuildKit daemon.
//!
//! The daemon itself (Control service, workers, session) is not built yet; this binary
//! parses upstream's command line so that scripts get the same flag errors, and says
//! plainly that serving is not available in this release.

use std::process::ExitCode;

use clap::Parser;

/// BuildKit daemon (buildkit-rs).
#[derive(Parser, Debug)]
#[command(name = "buildkitd", version, about)]
struct Args {
    /// Path to the config file.
    #[arg(long, default_value = "/etc/buildkit/buildkitd.toml")]
    config: String,
    /// Enable debug output in logs.
    #[arg(long)]
    debug: bool,
    /// Path to the state directory.
    #[arg(long, default_value = "/var/lib/buildkit")]
    root: String,
    /// Listening address (unix://, tcp://); repeatable.
    #[arg(long = "addr")]
    addr: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let addrs = if args.addr.is_empty() {
        vec!["unix:///run/buildkit/buildkitd.sock".to_string()]
    } else {
        args.addr
    };
    eprintln!(
        "buildkitd: serving {} is not implemented yet in buildkit-rs (root {}, config {}); \
         see docs/unsupported.md",
        addrs.join(", "),
        args.root,
        args.config
    );
    ExitCode::from(1)
}
