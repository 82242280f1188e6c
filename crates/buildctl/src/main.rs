//! `buildctl`: the BuildKit client CLI.
//!
//! A thin binary: [`cli`] parses the command line (upstream's global flags and
//! subcommands), and each subcommand lives in its own file under [`commands`]. Today only
//! `debug dump-llb` exists; the commands that talk to a daemon come with the daemon.

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
        },
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
