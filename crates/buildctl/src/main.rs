//! `buildctl`: the BuildKit client CLI.
//!
//! A thin binary: [`cli`] parses the command line (upstream's global flags and
//! subcommands), and each subcommand lives in its own file under [`commands`]: `build`,
//! `du`, `prune`, `debug dump-llb`, `debug workers`, `debug info`.

mod cli;
mod commands;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, DebugCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Debug(debug) => match &debug.command {
            DebugCommand::DumpLlb(args) => commands::debug::dump_llb::run(args),
            DebugCommand::Workers(args) => runtime().and_then(|rt| {
                rt.block_on(commands::debug::workers::workers(&cli.global, args.verbose))
            }),
            DebugCommand::Info => {
                runtime().and_then(|rt| rt.block_on(commands::debug::workers::info(&cli.global)))
            }
        },
        Command::Build(args) => {
            runtime().and_then(|rt| rt.block_on(commands::build::run(&cli.global, args)))
        }
        Command::Du(args) => {
            runtime().and_then(|rt| rt.block_on(commands::cache::du(&cli.global, args)))
        }
        Command::Prune(args) => {
            runtime().and_then(|rt| rt.block_on(commands::cache::prune(&cli.global, args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, causes joined with ": " (upstream prints `error: <err>`).
            let message = format!("{err:#}").replace('\n', " ");
            let _ = writeln!(io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime for the commands that talk to the daemon.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
}
