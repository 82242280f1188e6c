//! `mkbusybox`: write the testkit busybox image as an OCI layout and/or push it to a registry.
//!
//! ```text
//! mkbusybox --oci DIR [--push HOST[:PORT]/NAME[:TAG]] [--user U --password P]
//! ```
//!
//! Prints the manifest, config and layer digests; with `--push`, also the pushed reference.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use testkit::{BusyboxImage, ImageRef, RegistryClient};

/// Build a reproducible busybox OCI image from the host's busybox-static binary.
#[derive(Debug, Parser)]
#[command(name = "mkbusybox", version)]
struct Args {
    /// Write the image as an OCI image layout into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    oci: Option<PathBuf>,

    /// Push over plain HTTP to HOST:PORT/NAME:TAG (port optional; tag defaults to latest).
    #[arg(long, value_name = "REF")]
    push: Option<ImageRef>,

    /// The statically linked busybox to package.
    #[arg(long, value_name = "PATH", default_value = testkit::busybox::DEFAULT_BUSYBOX)]
    busybox: PathBuf,

    /// Basic-auth user for --push.
    #[arg(long, requires = "password")]
    user: Option<String>,

    /// Basic-auth password for --push.
    #[arg(
        long,
        requires = "user",
        env = "MKBUSYBOX_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.oci.is_none() && args.push.is_none() {
        bail!("nothing to do: pass --oci DIR and/or --push HOST/NAME:TAG");
    }
    let image = BusyboxImage::from_binary(&args.busybox)
        .with_context(|| format!("build busybox image from {}", args.busybox.display()))?;
    println!("manifest {}", image.manifest_digest());
    println!("config   {}", image.config_digest());
    println!(
        "layer    {} (diff_id {})",
        image.layer_digest(),
        image.diff_id()
    );

    if let Some(dir) = &args.oci {
        testkit::layout::write(dir, image.image(), testkit::busybox::DEFAULT_REF_NAME)
            .with_context(|| format!("write OCI layout to {}", dir.display()))?;
        println!("wrote OCI layout {}", dir.display());
    }
    if let Some(target) = &args.push {
        if target.reference.starts_with("sha256:") {
            bail!("--push {target}: push to a tag, not a digest");
        }
        let mut client = RegistryClient::new(&target.host);
        if let (Some(user), Some(password)) = (&args.user, &args.password) {
            client = client.with_basic_auth(user, password);
        }
        let digest = client
            .push_image(&target.repository, &target.reference, image.image())
            .with_context(|| format!("push to {target}"))?;
        println!("pushed {target}@{digest}");
    }
    Ok(())
}
