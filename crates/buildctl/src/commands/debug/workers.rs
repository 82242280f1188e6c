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
                        go_duration(u64::try_from(rule.keep_duration).unwrap_or(0))
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

/// Nanoseconds as Go's `time.Duration` prints them (`48h0m0s`, `1m30s`, `500ms`).
fn go_duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (v, unit) = if ns < 1_000 {
            (ns as f64, "ns")
        } else if ns < 1_000_000 {
            (ns as f64 / 1e3, "µs")
        } else {
            (ns as f64 / 1e6, "ms")
        };
        return format!("{v}{unit}");
    }
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut seconds = s.to_string();
    if frac > 0 {
        let f = format!("{frac:09}");
        seconds.push('.');
        seconds.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
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
    fn durations_and_sizes_as_go_prints_them() {
        assert_eq!(go_duration(48 * 3600 * 1_000_000_000), "48h0m0s");
        assert_eq!(go_duration(90 * 1_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(short_bytes(512_000_000), "512MB");
        assert_eq!(short_bytes(1500), "1.5kB");
        assert_eq!(short_bytes(999), "999B");
    }
}
