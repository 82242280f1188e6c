//! `buildctl du` and `buildctl prune`, printed as upstream's buildctl prints them.

mod tabwriter;
mod template;

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use proto::control::{DiskUsageRequest, PruneRequest, UsageRecord};
use serde_json::{Value, json};

use self::template::Template;
use crate::cli::GlobalArgs;

/// `buildctl du`.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// Filter records.
    #[arg(long, short = 'f')]
    pub filter: Vec<String>,
    /// Verbose output.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Format the output using the given Go template, e.g, '{{json .}}'.
    #[arg(long)]
    pub format: Option<String>,
}

/// `buildctl prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep data newer than this limit (a Go duration: 48h, 30m, ...).
    #[arg(long, value_parser = parse_go_duration)]
    pub keep_duration: Option<Duration>,
    /// Keep data below this limit (in MB).
    #[arg(long)]
    pub keep_storage: Option<f64>,
    /// Always allow data above this limit (in MB).
    #[arg(long)]
    pub keep_storage_min: Option<f64>,
    /// Keep free data below this limit (in MB).
    #[arg(long)]
    pub free_storage: Option<f64>,
    /// Filter records.
    #[arg(long, short = 'f')]
    pub filter: Vec<String>,
    /// Include internal/frontend references.
    #[arg(long)]
    pub all: bool,
    /// Verbose output.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Format the output using the given Go template, e.g, '{{json .}}'.
    #[arg(long)]
    pub format: Option<String>,
}

fn parse_go_duration(s: &str) -> Result<Duration, String> {
    cache::policy::parse_duration(s).map_err(|e| e.to_string())
}

/// MB as upstream's flags count them (decimal), as bytes.
fn megabytes(v: Option<f64>, flag: &str) -> anyhow::Result<i64> {
    match v {
        None => Ok(0),
        Some(mb) if mb.is_finite() && mb >= 0.0 && mb * 1e6 < i64::MAX as f64 => {
            Ok((mb * 1e6) as i64)
        }
        Some(mb) => anyhow::bail!("--{flag} {mb}: expected a size in MB, 0 or more"),
    }
}

/// `seconds`/`nanos` as Go's `time.Time` prints with `%v` (in UTC).
fn go_time(ts: &prost_types::Timestamp) -> String {
    match client::progress::rawjson::rfc3339_nano(ts.seconds, ts.nanos) {
        Some(t) => format!(
            "{} +0000 UTC",
            t.trim_end_matches('Z').replacen('T', " ", 1)
        ),
        None => format!("{}s", ts.seconds),
    }
}

fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(|t| client::progress::rawjson::rfc3339_nano(t.seconds, t.nanos))
        .map_or(Value::Null, Value::String)
}

/// A record as upstream's client encodes `UsageInfo` in JSON.
fn record_json(r: &UsageRecord) -> Value {
    json!({
        "id": r.id,
        "mutable": r.mutable,
        "inUse": r.in_use,
        "size": r.size,
        "createdAt": rfc3339(r.created_at.as_ref()).as_str().unwrap_or("0001-01-01T00:00:00Z"),
        "lastUsedAt": rfc3339(r.last_used_at.as_ref()),
        "usageCount": r.usage_count,
        "parents": if r.parents.is_empty() { Value::Null } else { json!(r.parents) },
        "description": r.description,
        "recordType": r.record_type,
        "shared": r.shared,
    })
}

fn bytes(n: i64) -> String {
    client::progress::units::bytes(n)
}

fn table_header() -> String {
    "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED".to_string()
}

fn table_row(r: &UsageRecord) -> String {
    let mut id = r.id.clone();
    if r.mutable {
        id.push('*');
    }
    let mut size = bytes(r.size);
    if r.shared {
        size.push('*');
    }
    format!("{id:<71}\t{:<11}\t{size}\t", !r.in_use)
}

fn verbose_lines(r: &UsageRecord, lines: &mut Vec<String>) {
    lines.push(format!("ID:\t{}", r.id));
    if !r.parents.is_empty() {
        lines.push(format!("Parents:\t{}", r.parents.join(";")));
    }
    let created = r.created_at.unwrap_or_default();
    lines.push(format!("Created at:\t{}", go_time(&created)));
    lines.push(format!("Mutable:\t{}", r.mutable));
    lines.push(format!("Reclaimable:\t{}", !r.in_use));
    lines.push(format!("Shared:\t{}", r.shared));
    lines.push(format!("Size:\t{}", bytes(r.size)));
    if !r.description.is_empty() {
        lines.push(format!("Description:\t{}", r.description));
    }
    lines.push(format!("Usage count:\t{}", r.usage_count));
    if let Some(t) = &r.last_used_at {
        lines.push(format!("Last used:\t{}", go_time(t)));
    }
    if !r.record_type.is_empty() {
        lines.push(format!("Type:\t{}", r.record_type));
    }
    lines.push(String::new());
}

/// `buildctl du`: the records, smallest first, then the totals.
pub async fn du(global: &GlobalArgs, args: &DuArgs) -> anyhow::Result<()> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut c = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let mut records = c
        .disk_usage(DiskUsageRequest {
            filter: args.filter.clone(),
            ..DiskUsageRequest::default()
        })
        .await
        .context("failed to call diskusage")?
        .into_inner()
        .record;
    records.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.id.cmp(&b.id)));
    if let Some(t) = template {
        let list = Value::Array(records.iter().map(record_json).collect());
        println!("{}", t.execute(&list)?);
        return Ok(());
    }
    let mut out = String::new();
    if args.verbose {
        let mut lines = Vec::new();
        for r in &records {
            verbose_lines(r, &mut lines);
        }
        out.push_str(&tabwriter::align(&lines));
    } else {
        let mut lines = vec![table_header()];
        lines.extend(records.iter().map(table_row));
        out.push_str(&tabwriter::align(&lines));
    }
    if args.filter.is_empty() {
        let total: i64 = records.iter().map(|r| r.size.max(0)).sum();
        let reclaimable: i64 = records
            .iter()
            .filter(|r| !r.in_use)
            .map(|r| r.size.max(0))
            .sum();
        let shared: i64 = records.iter().filter(|r| r.shared).map(|r| r.size).sum();
        let mut lines = Vec::new();
        if shared > 0 {
            lines.push(format!("Shared:\t{}", bytes(shared)));
            lines.push(format!("Private:\t{}", bytes(total - shared)));
        }
        lines.push(format!("Reclaimable:\t{}", bytes(reclaimable)));
        lines.push(format!("Total:\t{}", bytes(total)));
        out.push_str(&tabwriter::align(&lines));
    }
    print!("{out}");
    Ok(())
}

/// `buildctl prune`: each removed record as the daemon streams it, then the total.
pub async fn prune(global: &GlobalArgs, args: &PruneArgs) -> anyhow::Result<()> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let request = PruneRequest {
        filter: args.filter.clone(),
        all: args.all,
        keep_duration: args
            .keep_duration
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        reserved_space: megabytes(args.keep_storage_min, "keep-storage-min")?,
        max_used_space: megabytes(args.keep_storage, "keep-storage")?,
        min_free_space: megabytes(args.free_storage, "free-storage")?,
    };
    let mut c = client::connect(&global.addr, Duration::from_secs(global.timeout)).await?;
    let mut stream = c
        .prune(request)
        .await
        .context("failed to call prune")?
        .into_inner();
    let mut total = 0i64;
    let mut first = true;
    while let Some(r) = stream.message().await.context("failed to call prune")? {
        total += r.size;
        if let Some(t) = &template {
            println!("{}", t.execute(&record_json(&r))?);
        } else if args.verbose {
            let mut lines = Vec::new();
            verbose_lines(&r, &mut lines);
            print!("{}", tabwriter::align(&lines));
        } else {
            let mut lines = Vec::new();
            if first {
                lines.push(table_header());
                first = false;
            }
            lines.push(table_row(&r));
            print!("{}", tabwriter::align(&lines));
        }
    }
    if template.is_none() {
        print!(
            "{}",
            tabwriter::align(&[format!("Total:\t{}", bytes(total))])
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_times_as_upstream() {
        let r = UsageRecord {
            id: "ref/abc".into(),
            mutable: true,
            size: 1234,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000,
            }),
            ..UsageRecord::default()
        };
        assert_eq!(
            table_row(&r),
            format!("{:<71}\ttrue       \t1.23kB\t", "ref/abc*")
        );
        assert_eq!(
            go_time(r.created_at.as_ref().unwrap()),
            "2023-11-14 22:13:20.5 +0000 UTC"
        );
        let j = record_json(&r);
        assert_eq!(j["createdAt"], "2023-11-14T22:13:20.5Z");
        assert_eq!(j["lastUsedAt"], Value::Null);
        assert_eq!(j["parents"], Value::Null);
        assert_eq!(megabytes(Some(1.5), "keep-storage").unwrap(), 1_500_000);
        assert!(megabytes(Some(-1.0), "keep-storage").is_err());
    }
}
