//! The image config a Dockerfile produces: the base image's config, changed by ENV, CMD,
//! LABEL and the rest, with a history entry per instruction.
//!
//! Field names and order follow the Docker/OCI image config JSON as upstream writes it, so
//! a config we produce reads the same as upstream's for the same Dockerfile. Fields we do
//! not model are dropped, as upstream drops them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `history[].comment` of entries the frontend adds.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// An empty JSON object, the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `config.Healthcheck`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The `config` object: how a container of the image runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

/// `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `null` when empty, as upstream writes it.
    #[serde(default)]
    pub diff_ids: Option<Vec<String>>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".into(),
            diff_ids: None,
        }
    }
}

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

/// An image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(default)]
    pub config: RunConfig,
}

impl ImageConfig {
    /// The config of `scratch` for `platform`: nothing but a `PATH` and `/` as working
    /// directory (what upstream starts an empty stage with).
    pub fn empty(platform: &llb::Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            os_version: platform.os_version.clone(),
            config: RunConfig {
                env: vec![format!("PATH={}", llb::DEFAULT_PATH)],
                working_dir: "/".into(),
                ..RunConfig::default()
            },
            ..ImageConfig::default()
        }
    }

    /// Parses a config blob as a registry serves it.
    pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The config as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("plain data serializes: {e}"))
    }

    /// Records an instruction in the history.
    pub(crate) fn commit(&mut self, created_by: String, with_layer: bool) {
        self.history.push(History {
            created_by,
            comment: HISTORY_COMMENT.into(),
            empty_layer: !with_layer,
            ..History::default()
        });
    }

    /// Sets `key` in the environment, replacing an earlier value in place.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .config
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = entry,
            None => self.config.env.push(entry),
        }
    }

    /// The value of `key` in the environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.config.env.iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k == key).then_some(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_config_round_trips_to_the_same_json() {
        let text = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:d60534e533b172432269facac0e5c6c0e3042681765519fe92e15cdf5e53ff70"]},"history":[{"created":"2023-11-14T22:13:20Z","created_by":"mkimage.py (rootfs)"},{"created_by":"LABEL a=b c=d e","comment":"buildkit.dockerfile.v0","empty_layer":true}],"config":{"ExposedPorts":{"53/udp":{},"80/tcp":{}},"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/bin/echo"],"Cmd":["hi"],"Volumes":{"/data":{}},"WorkingDir":"/","Labels":{"a":"b","c":"d e"},"StopSignal":"SIGTERM","ArgsEscaped":true,"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":5000000000,"Timeout":3000000000},"Shell":["/bin/sh","-ec"]}}"#;
        let c = ImageConfig::from_json(text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(c.to_json()).unwrap(), text);
    }

    #[test]
    fn empty_rootfs_is_null() {
        let c = ImageConfig::empty(&llb::Platform::new("linux", "amd64", ""));
        let j = String::from_utf8(c.to_json()).unwrap();
        assert!(
            j.contains(r#""rootfs":{"type":"layers","diff_ids":null}"#),
            "{j}"
        );
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.config.env, ["A=3", "B=2"]);
        assert_eq!(c.env("B"), Some("2"));
    }
}
