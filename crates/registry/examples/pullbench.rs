//! Times pulling an image of SIZE MiB (default 100, incompressible content in 4 layers)
//! from a local Distribution registry into a fresh content store, against `skopeo copy`
//! of the same image on the same machine. Run by `bench/pull.sh`.

use std::sync::Arc;
use std::time::Instant;

use testkit::image::ImageSettings;
use testkit::layer::Meta;
use testkit::{Image, Layer, LayerBuilder, Registry as TestRegistry};

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(100), |s| s.parse())?;
    let layers_n = 4;
    let mut layers = Vec::new();
    for i in 0..layers_n {
        let mut b = LayerBuilder::new();
        b.file(
            &format!("data/part{i}"),
            noise(
                mib * 1024 * 1024 / layers_n,
                0x9e37_79b9_7f4a_7c15 + i as u64,
            ),
            Meta::root(0o644),
        )?;
        layers.push(Layer::from_bytes(b.finish()?));
    }
    let image = Image::assemble(
        layers,
        &ImageSettings {
            env: vec![],
            cmd: vec!["sh".into()],
            working_dir: None,
            user: None,
            history: vec!["bench".into(); layers_n],
        },
    )?;
    let total: u64 = image.layers().iter().map(|l| l.blob().size()).sum();
    let reg = TestRegistry::start()?;
    reg.client().push_image("bench", "latest", &image)?;
    let reference = format!("{}/bench:latest", reg.host());
    println!(
        "image {reference}: {} layers, {:.1} MiB compressed",
        layers_n,
        total as f64 / 1048576.0
    );

    let rt = tokio::runtime::Runtime::new()?;
    for run in 1..=3 {
        let dir = tempfile::tempdir()?;
        let md: Arc<dyn metadata::MetadataStore> =
            Arc::new(metadata::RedbStore::open(&dir.path().join("m.redb"), &[])?);
        let store = content::ContentStore::open(dir.path(), md)?;
        let r = registry::Registry::new(registry::Hosts::default(), None);
        let t = Instant::now();
        rt.block_on(r.pull(&reference, &llb::Platform::host(), &store, None))?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "buildkit-rs pull run {run}: {s:.2} s, {:.0} MiB/s",
            total as f64 / 1048576.0 / s
        );
    }
    if std::path::Path::new("/usr/bin/skopeo").exists() {
        for run in 1..=3 {
            let dir = tempfile::tempdir()?;
            let t = Instant::now();
            let status = std::process::Command::new("skopeo")
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("dir:{}", dir.path().join("img").display()))
                .status()?;
            let s = t.elapsed().as_secs_f64();
            println!(
                "skopeo copy run {run}: {s:.2} s, {:.0} MiB/s (exit {status})",
                total as f64 / 1048576.0 / s
            );
        }
    }
    Ok(())
}
