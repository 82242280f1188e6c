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
            for (i, rule) in w.gc_policy.iter().enumerate() {
                println!("GC Policy rule#{i}:");
                println!("\tAll:\t{}", rule.all);
                if !rule.filters.is_empty() {
                    println!("\tFilters:\t{}", rule.filters.join(" "));
                }
                if rule.keep_duration > 0 {
                    println!(
                        "\tKeep duration:\t{}",
                        llb::duration::format(rule.keep_duration)
                    );
                }
                if rule.reserved_space > 0 {
                    println!("\tReserved space:\t{}", short_bytes(rule.reserved_space));
                }
                if rule.min_free_space > 0 {
                    println!(
                        "\tMinimum free space:\t{}",
                        short_bytes(rule.min_free_space)
                    );
                }
                if rule.max_used_space > 0 {
                    println!(
                        "\tMaximum used space:\t{}",
                        short_bytes(rule.max_used_space)
                    );
                }
            }
            println!();
        } else {
            println!("{:<27} {}", w.id, platforms.join(","));
        }
    }
    Ok(())
}

/// Bytes as Go's `%g` of `units.Bytes` prints them (`512MB`, `1.5kB`, `999B`).
fn short_bytes(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v}{}", UNITS[unit])
}

/// Prints the daemon's version.
pub async fn info(global: &GlobalArgs) -> anyhow::Result<()> {
    let mut c = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let resp = c.info(InfoRequest::default()).await?.into_inner();
    let v = resp.buildkit_version.unwrap_or_default();
    println!("BuildKit: {} {} {}", v.package, v.version, v.revision);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_go_prints_them() {
        assert_eq!(short_bytes(512_000_000), "512MB");
        assert_eq!(short_bytes(1500), "1.5kB");
        assert_eq!(short_bytes(999), "999B");
    }
}
