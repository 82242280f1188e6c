//! Per-host settings (`[registry."host"]` in buildkitd.toml) and credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

/// Settings for one registry host (`host[:port]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Speak plain HTTP.
    pub http: bool,
    /// Use HTTPS but accept any certificate.
    pub insecure: bool,
}

/// Settings for all hosts. Hosts not listed use HTTPS, except loopback hosts
/// (`localhost`, `127.0.0.0/8`, `::1`), which use plain HTTP as upstream does.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub hosts: BTreeMap<String, HostConfig>,
}

impl Hosts {
    /// The settings for `host` (as in a reference: `name[:port]`).
    pub fn config(&self, host: &str) -> HostConfig {
        if let Some(c) = self.hosts.get(host) {
            return c.clone();
        }
        HostConfig {
            http: is_loopback(host),
            insecure: false,
        }
    }
}

/// Whether `host[:port]` names the local machine.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A username and secret (password or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Docker Hub as references name it.
const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// Docker Hub's registry, where its requests go.
const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// The host credentials are looked up for, given a reference's domain: the host requests
/// go to. Upstream asks clients about `registry-1.docker.io` for Docker Hub, and clients
/// map that name to the `https://index.docker.io/v1/` entry of their Docker config.
pub fn auth_host(domain: &str) -> &str {
    if domain == DOCKER_HUB_DOMAIN {
        DOCKER_HUB_REGISTRY
    } else {
        domain
    }
}

/// Daemon-wide credentials: looked up by [`auth_host`] when an operation brings no
/// [`CredentialSource`] of its own.
pub type CredentialsFn = Arc<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

/// Credentials for the registry operations of one build (the daemon asks the build's
/// client session). Passed per call, so that concurrent builds each use their own.
pub trait CredentialSource: Send + Sync {
    /// The credentials for `host` (see [`auth_host`]); `Ok(None)` means anonymous access.
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>, String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_default_to_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(Hosts::default().config(h).http, "{h}");
        }
        for h in ["docker.io", "registry.example.com:5000", "10.0.0.1:5000"] {
            assert!(!Hosts::default().config(h).http, "{h}");
        }
    }

    #[test]
    fn configured_hosts_win() {
        let mut hosts = Hosts::default();
        hosts.hosts.insert(
            "reg.local:5000".into(),
            HostConfig {
                http: true,
                insecure: false,
            },
        );
        assert!(hosts.config("reg.local:5000").http);
        assert!(!hosts.config("reg.local").http);
    }

    #[test]
    fn docker_hub_credentials_are_asked_for_its_registry_host() {
        assert_eq!(auth_host("docker.io"), "registry-1.docker.io");
        assert_eq!(auth_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(auth_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
