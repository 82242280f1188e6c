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
    fn bad_config_names_file_and_line() {
        let err = Config::parse("root = \n[grpc", "/etc/buildkit/buildkitd.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/buildkit/buildkitd.toml"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
        let err = Config::parse("debug = \"yes\"", "x.toml").unwrap_err();
        assert!(err.to_string().contains("x.toml"));
    }
}
