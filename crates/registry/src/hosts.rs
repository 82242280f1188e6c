//! Per-host settings (`[registry."host"]` in buildkitd.toml) and credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

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

/// Looks up credentials for a host; the daemon answers it from the client's session.
pub type CredentialsFn = Arc<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

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
    fn secrets_are_not_printed() {
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
