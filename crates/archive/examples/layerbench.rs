//! Benchmark driver for `bench/layer.sh`: generates a tree, diffs it into a layer tar,
//! applies a layer tar.
//!
//! ```text
//! layerbench gen DIR SIZE_MIB [SEED]   a tree of about SIZE_MIB MiB: many small files, some large
//! layerbench diff TREE OUT [gzip|zstd] the tree as a layer (diff against nothing)
//! layerbench apply LAYER DIR           apply a layer (Delete mode) into DIR
//! ```
//! Each command prints one line with its own timing (excluding process start).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use archive::{ApplyOptions, Compression, DiffOptions, WhiteoutMode};

const MIB: u64 = 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1), arg(2)) {
        (Some("gen"), Some(dir), Some(size)) => {
            let seed = arg(3).map(str::parse).transpose()?.unwrap_or(42);
            generate(Path::new(dir), size.parse::<u64>()? * MIB, seed)
        }
        (Some("diff"), Some(tree), Some(out)) => {
            let mut opts = DiffOptions::default();
            opts.compression = match arg(3) {
                None => Compression::Uncompressed,
                Some("gzip") => Compression::Gzip,
                Some("zstd") => Compression::Zstd,
                Some(other) => bail!("unknown compression {other}"),
            };
            let empty = tempfile::tempdir()?;
            let start = Instant::now();
            let file = File::create(out).with_context(|| out.to_string())?;
            let stats = archive::diff_dirs(empty.path(), Path::new(tree), file, &opts)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "diff {}: {} entries, tar {:.1} MiB, blob {:.1} MiB, {secs:.2} s, {:.0} MiB/s of tar; diffID {}",
                stats.compression,
                stats.entries,
                stats.uncompressed_size as f64 / MIB as f64,
                stats.size as f64 / MIB as f64,
                stats.uncompressed_size as f64 / MIB as f64 / secs,
                stats.diff_id
            );
            Ok(())
        }
        (Some("apply"), Some(layer), Some(dir)) => {
            fs::create_dir_all(dir)?;
            let start = Instant::now();
            let file = File::open(layer).with_context(|| layer.to_string())?;
            let stats = archive::apply_layer(
                file,
                Path::new(dir),
                &ApplyOptions::new(WhiteoutMode::Delete),
            )?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "apply {}: {} entries, tar {:.1} MiB, {secs:.2} s, {:.0} MiB/s of tar; diffID {}",
                stats.compression,
                stats.entries,
                stats.tar_size as f64 / MIB as f64,
                stats.tar_size as f64 / MIB as f64 / secs,
                stats.diff_id
            );
            Ok(())
        }
        _ => bail!(
            "usage: layerbench gen DIR SIZE_MIB [SEED] | diff TREE OUT [gzip|zstd] | apply LAYER DIR"
        ),
    }
}

/// xorshift64: fast, deterministic, good enough to defeat compression.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "layer", "image", "build", "cache", "solver", "snapshot", "overlay", "digest", "manifest",
    "index", "config", "runc", "mount", "export", "frontend", "vertex", "/usr/lib", "/etc", "the",
    "and", "of", "to", "in", "is", "for", "0x7f", "ELF", "\n", "\t", "{", "}", "();",
];

/// Content that compresses like real layer files: half incompressible, half text-like.
fn content(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    out.clear();
    if rng.below(2) == 0 {
        while out.len() < len {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
    } else {
        while out.len() < len {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
    }
    out.truncate(len);
}

/// About `size` bytes: 60% in small files (1–64 KiB, 100 per directory, two levels
/// deep), 40% in 16 large files.
fn generate(root: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed | 1);
    let mut buf = Vec::new();
    let small_budget = size * 6 / 10;
    let (mut written, mut files) = (0u64, 0u64);
    while written < small_budget {
        let dir = root.join(format!(
            "d{:03}/s{:03}",
            files / 10_000,
            (files / 100) % 100
        ));
        if files % 100 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let len = (1024 + rng.below(63 * 1024)).min(small_budget - written + 1) as usize;
        content(&mut rng, len, &mut buf);
        fs::write(dir.join(format!("f{files:06}.dat")), &buf)?;
        written += len as u64;
        files += 1;
    }
    let large_dir = root.join("large");
    fs::create_dir_all(&large_dir)?;
    let large = (size - small_budget) / 16;
    for i in 0..16 {
        let mut w = BufWriter::new(File::create(large_dir.join(format!("blob{i:02}.bin")))?);
        let mut left = large;
        while left > 0 {
            let n = left.min(4 * MIB) as usize;
            content(&mut rng, n, &mut buf);
            w.write_all(&buf)?;
            left -= n as u64;
        }
        w.flush()?;
        written += large;
        files += 1;
    }
    println!(
        "gen: {files} files, {:.1} MiB in {}",
        written as f64 / MIB as f64,
        root.display()
    );
    Ok(())
}
