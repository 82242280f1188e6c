//! `buildkitd.toml`: the keys upstream reads that this daemon acts on. Unknown keys are
//! accepted (they belong to features not built yet) and logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/buildkit";
/// Default listening address.
pub const DEFAULT_ADDRESS: &str = "unix:///run/buildkit/buildkitd.sock";

/// The parts of `buildkitd.toml` we use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub root: Option<PathBuf>,
    pub debug: bool,
    /// Entitlements builds may ask for (`security.insecure`, `network.host`), as upstream's
    /// `insecure-entitlements`.
    #[serde(rename = "insecure-entitlements")]
    pub insecure_entitlements: Vec<String>,
    pub grpc: Grpc,
    pub worker: Workers,
    pub registry: BTreeMap<String, RegistryHost>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Grpc {
    pub address: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Workers {
    pub oci: OciWorker,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case")]
pub struct OciWorker {
    pub enabled: Option<bool>,
    pub snapshotter: Option<String>,
    pub binary: Option<PathBuf>,
    pub max_parallelism: Option<usize>,
    /// Automatic garbage collection (default on).
    pub gc: Option<bool>,
    /// Legacy name of `reservedSpace`.
    #[serde(rename = "gckeepstorage")]
    pub gc_keep_storage: Option<Size>,
    #[serde(rename = "reservedSpace")]
    pub reserved_space: Option<Size>,
    #[serde(rename = "maxUsedSpace")]
    pub max_used_space: Option<Size>,
    #[serde(rename = "minFreeSpace")]
    pub min_free_space: Option<Size>,
    /// The GC policies, in order; none: upstream's defaults for the disk.
    #[serde(rename = "gcpolicy")]
    pub gc_policy: Vec<GcPolicy>,
    /// The least time between two automatic GC runs (a buildkit-rs setting; upstream
    /// uses one minute).
    pub gc_interval: Option<Duration>,
}

/// A size in `buildkitd.toml`: bytes, or a string with a unit (`512MB`) or a
/// percentage of the disk (`10%`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// A duration in `buildkitd.toml`: seconds, or a Go duration string (`48h`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Duration {
    Seconds(u64),
    Text(String),
}

/// One `[[worker.oci.gcpolicy]]` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct GcPolicy {
    pub all: bool,
    pub filters: Vec<String>,
    #[serde(rename = "keepDuration")]
    pub keep_duration: Option<Duration>,
    #[serde(rename = "reservedSpace", alias = "keepBytes")]
    pub reserved_space: Option<Size>,
    #[serde(rename = "maxUsedSpace")]
    pub max_used_space: Option<Size>,
    #[serde(rename = "minFreeSpace")]
    pub min_free_space: Option<Size>,
}

impl Size {
    fn bytes(&self, key: &str, disk_total: Option<u64>) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => {
                cache::policy::parse_size(t, disk_total).map_err(|e| format!("{key}: {e}"))
            }
        }
    }
}

impl Duration {
    pub(crate) fn value(&self, key: &str) -> Result<std::time::Duration, String> {
        match self {
            Duration::Seconds(s) => Ok(std::time::Duration::from_secs(*s)),
            Duration::Text(t) => {
                cache::policy::parse_duration(t).map_err(|e| format!("{key}: {e}"))
            }
        }
    }
}

fn size_of(v: &Option<Size>, key: &str, disk_total: Option<u64>) -> Result<Option<u64>, String> {
    v.as_ref().map(|s| s.bytes(key, disk_total)).transpose()
}

impl OciWorker {
    /// The GC policies, in order (upstream's defaults when none are configured), for a
    /// disk of `disk_total` bytes. Errors name the key.
    pub fn gc_policies(&self, disk_total: Option<u64>) -> Result<Vec<cache::PruneOptions>, String> {
        let w = "worker.oci";
        let reserved = match size_of(
            &self.reserved_space,
            &format!("{w}.reservedSpace"),
            disk_total,
        )? {
            Some(r) => Some(r),
            None => size_of(
                &self.gc_keep_storage,
                &format!("{w}.gckeepstorage"),
                disk_total,
            )?,
        };
        let max_used = size_of(
            &self.max_used_space,
            &format!("{w}.maxUsedSpace"),
            disk_total,
        )?;
        let min_free = size_of(
            &self.min_free_space,
            &format!("{w}.minFreeSpace"),
            disk_total,
        )?;
        if self.gc_policy.is_empty() {
            return Ok(cache::policy::default_policies(
                disk_total.unwrap_or(0),
                reserved,
                max_used,
                min_free,
            ));
        }
        self.gc_policy
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let key = |k: &str| format!("{w}.gcpolicy[{i}].{k}");
                for f in &p.filters {
                    cache::Filter::parse(f).map_err(|e| format!("{}: {e}", key("filters")))?;
                }
                Ok(cache::PruneOptions {
                    all: p.all,
                    filters: p.filters.clone(),
                    keep_duration: p
                        .keep_duration
                        .as_ref()
                        .map(|d| d.value(&key("keepDuration")))
                        .transpose()?,
                    reserved_space: size_of(&p.reserved_space, &key("reservedSpace"), disk_total)?
                        .unwrap_or(0),
                    max_used_space: size_of(&p.max_used_space, &key("maxUsedSpace"), disk_total)?
                        .unwrap_or(0),
                    min_free_space: size_of(&p.min_free_space, &key("minFreeSpace"), disk_total)?
                        .unwrap_or(0),
                })
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RegistryHost {
    pub http: bool,
    pub insecure: bool,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl Config {
    /// Parses a config; the error names `path` and, for syntax errors, the line.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            path: path.to_string(),
            reason: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Reads `path`; a missing file at the default location is an empty config.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(ConfigError {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Registry host settings for the worker.
    pub fn hosts(&self) -> registry::Hosts {
        let mut hosts = registry::Hosts::default();
        for (name, h) in &self.registry {
            hosts.hosts.insert(
                name.clone(),
                registry::HostConfig {
                    http: h.http,
                    insecure: h.insecure,
                },
            );
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_upstream_keys() {
        let c = Config::parse(
            r#"
root = "/tmp/bk"
debug = true
[grpc]
address = ["unix:///tmp/bk.sock", "tcp://127.0.0.1:1234"]
[worker.oci]
enabled = true
snapshotter = "native"
max-parallelism = 3
gc = true
[registry."127.0.0.1:5000"]
http = true
[registry."reg.local"]
insecure = true
"#,
            "buildkitd.toml",
        )
        .unwrap();
        assert_eq!(c.root.as_deref(), Some(Path::new("/tmp/bk")));
        assert!(c.debug);
        assert_eq!(c.grpc.address.len(), 2);
        assert_eq!(c.worker.oci.snapshotter.as_deref(), Some("native"));
        assert_eq!(c.worker.oci.max_parallelism, Some(3));
        let h = c.hosts();
        assert!(h.config("127.0.0.1:5000").http);
        assert!(h.config("reg.local").insecure);
    }

    #[test]
    fn gc_policies_from_the_config_or_the_defaults() {
        let c = Config::parse(
            r#"
[worker.oci]
gc = true
reservedSpace = "1GB"
[[worker.oci.gcpolicy]]
filters = ["type==source.local"]
keepDuration = "48h"
keepBytes = 512000000
[[worker.oci.gcpolicy]]
all = true
keepDuration = 3600
maxUsedSpace = "10%"
minFreeSpace = "2GiB"
"#,
            "buildkitd.toml",
        )
        .unwrap();
        let p = c.worker.oci.gc_policies(Some(100 << 30)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].filters, ["type==source.local"]);
        assert_eq!(
            p[0].keep_duration,
            Some(std::time::Duration::from_secs(48 * 3600))
        );
        assert_eq!(
            p[0].reserved_space, 512_000_000,
            "keepBytes is reservedSpace"
        );
        assert!(p[1].all);
        assert_eq!(p[1].max_used_space, 11_000_000_000);
        assert_eq!(p[1].min_free_space, 2 << 30);
        assert_eq!(c.worker.oci.gc, Some(true));

        let defaults = Config::default()
            .worker
            .oci
            .gc_policies(Some(100 << 30))
            .unwrap();
        assert_eq!(defaults.len(), 4);
        let reserved = Config::parse("[worker.oci]\ngckeepstorage = 1000\n", "x").unwrap();
        assert_eq!(
            reserved.worker.oci.gc_policies(Some(100 << 30)).unwrap()[2].reserved_space,
            1000
        );

        let bad = Config::parse(
            "[[worker.oci.gcpolicy]]\nmaxUsedSpace = \"12 parsecs\"\n",
            "x",
        )
        .unwrap();
        let e = bad.worker.oci.gc_policies(None).unwrap_err();
        assert!(e.contains("worker.oci.gcpolicy[0].maxUsedSpace"), "{e}");
        let bad = Config::parse("[[worker.oci.gcpolicy]]\nfilters = [\"kind==x\"]\n", "x").unwrap();
        assert!(
            bad.worker
                .oci
                .gc_policies(None)
                .unwrap_err()
                .contains("filters")
        );
    }

    #[test]
    fn bad_config_names_file_and_line() {
        let err = Config::parse("root = \n[grpc", "/etc/buildkit/buildkitd.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/buildkit/buildkitd.toml"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
        let err = Config::parse("debug = \"yes\"", "x.toml").unwrap_err();
        assert!(err.to_string().contains("x.toml"));
    }
}
