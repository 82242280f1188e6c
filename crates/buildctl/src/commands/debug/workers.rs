//! `buildctl debug workers` and `buildctl debug info`.

use std::time::Duration;

use proto::control::{InfoRequest, ListWorkersRequest};

use crate::cli::GlobalArgs;

/// Prints the daemon's workers, as upstream's table (ID, PLATFORMS).
pub async fn workers(global: &GlobalArgs, verbose: bool) -> anyhow::Result<()> {
    let mut c = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let resp = c
        .list_workers(ListWorkersRequest::default())
        .await?
        .into_inner();
    if !verbose {
        println!("{:<27} PLATFORMS", "ID");
    }
    for w in resp.record {
        let platforms: Vec<String> = w
            .platforms
            .iter()
            .map(|p| {
                let mut s = format!("{}/{}", p.os, p.architecture);
                if !p.variant.is_empty() {
                    s.push('/');
                    s.push_str(&p.variant);
                }
                s
            })
            .collect();
        if verbose {
            println!("ID:\t\t{}", w.id);
            println!("Platforms:\t{}", platforms.join(","));
            if let Some(v) = &w.buildkit_version {
                println!("BuildKit:\t{} {} {}", v.package, v.version, v.revision);
            }
            println!("Labels:");
            for (k, v) in &w.labels {
                println!("\t{k}:\t{v}");
            }
            println!();
        } else {
            println!("{:<27} {}", w.id, platforms.join(","));
        }
    }
    Ok(())
}

/// Prints the daemon's version.
pub async fn info(global: &GlobalArgs) -> anyhow::Result<()> {
    let mut c = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let resp = c.info(InfoRequest::default()).await?.into_inner();
    let v = resp.buildkit_version.unwrap_or_default();
    println!("BuildKit: {} {} {}", v.package, v.version, v.revision);
    Ok(())
}
