//! `buildctl debug dump-llb [--dot] [FILE|-]`: print a marshaled Definition as upstream does,
//! one JSON object per op (or a Graphviz graph with `--dot`). Needs no daemon.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use prost::Message;
use proto::pb;

/// Arguments of `debug dump-llb`.
#[derive(Debug, Args)]
pub struct DumpLlbArgs {
    /// Output dot format.
    #[arg(long)]
    pub dot: bool,
    /// The LLB file (a marshaled pb.Definition); `-` or none reads standard input.
    #[arg(value_name = "llbfile")]
    pub file: Option<PathBuf>,
}

/// Reads, validates and prints the Definition to standard output.
pub fn run(args: &DumpLlbArgs) -> anyhow::Result<()> {
    let (name, bytes) = read_input(args)?;
    let out = render(&bytes, args.dot).with_context(|| format!("dump-llb: {name}"))?;
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // The reader went away (`dump-llb | head`): not an error of ours.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("dump-llb: writing standard output"),
    }
}

/// The input's name for messages, and its bytes.
fn read_input(args: &DumpLlbArgs) -> anyhow::Result<(String, Vec<u8>)> {
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let name = path.display().to_string();
            let bytes = fs::read(path).with_context(|| format!("dump-llb: {name}"))?;
            Ok((name, bytes))
        }
        _ => {
            let mut bytes = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("dump-llb: stdin")?;
            Ok(("stdin".to_string(), bytes))
        }
    }
}

/// Validates the Definition with the LLB loader, then renders it.
fn render(bytes: &[u8], dot: bool) -> anyhow::Result<String> {
    // Validation only: the dump shows every entry of `def` in order, as received.
    llb::LoadedDefinition::from_bytes(bytes)?;
    let def = pb::Definition::decode(bytes).context("definition is not valid protobuf")?;
    let out = if dot {
        llb::dump::dot(&def)?
    } else {
        llb::dump::json_lines(&def)?
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b"\xff\xff\xff"[..], b"hello world", b"\x0a\x05ab"] {
            assert!(render(bytes, false).is_err());
            assert!(render(bytes, true).is_err());
        }
    }

    #[test]
    fn empty_definition_is_rejected() {
        let err = render(&[], false).unwrap_err();
        assert!(format!("{err:#}").contains("no ops"), "{err:#}");
    }
}
