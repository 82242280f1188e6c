//! The command line: upstream buildctl's global flags and the subcommands we have.
//!
//! Global flags are accepted (and validated) even where nothing uses them yet, so scripts
//! written for upstream's buildctl parse the same way.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::build::BuildArgs;
use crate::commands::debug::dump_llb::DumpLlbArgs;

/// Default daemon address when neither `--addr` nor `BUILDKIT_HOST` is set.
pub const DEFAULT_ADDR: &str = "unix:///run/buildkit/buildkitd.sock";

/// build utility (buildkit-rs)
#[derive(Debug, Parser)]
#[command(name = "buildctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that apply to every command (upstream's `buildctl` app flags).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Enable debug output in logs.
    #[arg(long)]
    pub debug: bool,
    /// buildkitd address.
    #[arg(long, env = "BUILDKIT_HOST", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Log formatter.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// buildkitd server name for certificate validation.
    #[arg(long)]
    pub tlsservername: Option<String>,
    /// CA certificate for validation.
    #[arg(long)]
    pub tlscacert: Option<String>,
    /// Client certificate.
    #[arg(long)]
    pub tlscert: Option<String>,
    /// Client key.
    #[arg(long)]
    pub tlskey: Option<String>,
    /// Directory containing CA certificate, client certificate, and client key
    /// (ca.pem, cert.pem, key.pem or ca.crt, tls.crt, tls.key).
    #[arg(long)]
    pub tlsdir: Option<String>,
    /// Timeout backend connection after value seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
    /// Block RPCs until the connection becomes available.
    #[arg(long)]
    pub wait: bool,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build.
    #[command(alias = "b")]
    Build(BuildArgs),
    /// Debug utilities.
    Debug(DebugArgs),
    /// disk usage
    Du(crate::commands::cache::DuArgs),
    /// clean up build cache
    Prune(crate::commands::cache::PruneArgs),
}

/// `buildctl debug ...`.
#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(subcommand)]
    pub command: DebugCommand,
}

/// The `debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Dump LLB in human-readable format. LLB can be also passed via stdin. This command does
    /// not require the daemon to be running.
    DumpLlb(DumpLlbArgs),
    /// List workers.
    Workers(WorkersArgs),
    /// Display the daemon's version.
    Info,
}

/// `buildctl debug workers` flags.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Verbose output.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_and_defaults() {
        let cli = Cli::try_parse_from(["buildctl", "debug", "dump-llb"]).unwrap();
        // BUILDKIT_HOST may be set in the environment running the tests.
        if std::env::var_os("BUILDKIT_HOST").is_none() {
            assert_eq!(cli.global.addr, DEFAULT_ADDR);
        }
        assert_eq!(cli.global.timeout, 5);
        assert_eq!(cli.global.log_format, LogFormat::Text);
        assert!(!cli.global.debug);

        let cli = Cli::try_parse_from([
            "buildctl",
            "--debug",
            "--addr",
            "tcp://127.0.0.1:1234",
            "--timeout",
            "30",
            "--log-format",
            "json",
            "debug",
            "dump-llb",
            "--dot",
            "def.pb",
        ])
        .unwrap();
        assert!(cli.global.debug);
        assert_eq!(cli.global.addr, "tcp://127.0.0.1:1234");
        assert_eq!(cli.global.timeout, 30);
        let Command::Debug(DebugArgs {
            command: DebugCommand::DumpLlb(args),
        }) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert!(args.dot);
        assert_eq!(args.file.as_deref(), Some(std::path::Path::new("def.pb")));
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(
            Cli::try_parse_from(["buildctl", "--log-format", "xml", "debug", "dump-llb"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["buildctl", "--timeout", "soon", "debug", "dump-llb"]).is_err()
        );
        assert!(Cli::try_parse_from(["buildctl", "debug", "dump-llb", "a", "b"]).is_err());
    }
}
