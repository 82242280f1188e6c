//! The `/etc/hosts` and `/etc/resolv.conf` a container sees. Both are generated in the
//! run's bundle directory and bound read-only over the image's own files, as BuildKit
//! does, so a build step can neither see the daemon's files nor leave changes to them in
//! its layer.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::request::NetworkMode;

/// The host's resolver configuration.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// What systemd-resolved writes with the real upstream servers.
const RESOLVED_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// systemd-resolved's stub listener, unusable from another network namespace.
const RESOLVED_STUB: &str = "127.0.0.53";

/// Used when no usable nameserver is left (Docker's and BuildKit's fallback).
pub const DEFAULT_NAMESERVERS: &[&str] = &[
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// The contents of `/etc/hosts`: localhost on both families, the hostname on the IPv4
/// loopback line, then one line per extra host.
pub fn hosts_file(hostname: &str, extra_hosts: &[(String, IpAddr)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra_hosts {
        s.push_str(&format!("{ip}\t{host}\n"));
    }
    s
}

/// Which host file to derive the container's resolver configuration from: with
/// systemd-resolved's stub as the only nameserver, its upstream list instead (unless the
/// container shares the host's network, where the stub is reachable).
pub fn host_resolv_conf_path(network: NetworkMode) -> PathBuf {
    if network == NetworkMode::Host {
        return PathBuf::from(RESOLV_CONF);
    }
    match std::fs::read_to_string(RESOLV_CONF) {
        Ok(text)
            if nameservers(&text).eq([RESOLVED_STUB])
                && Path::new(RESOLVED_RESOLV_CONF).exists() =>
        {
            tracing::debug!("systemd-resolved stub detected; using {RESOLVED_RESOLV_CONF}");
            PathBuf::from(RESOLVED_RESOLV_CONF)
        }
        _ => PathBuf::from(RESOLV_CONF),
    }
}

/// Reads the host's resolver configuration (see [`host_resolv_conf_path`]) and turns it
/// into the container's with [`resolv_conf`]; a missing host file counts as empty.
pub fn read_resolv_conf(network: NetworkMode) -> io::Result<String> {
    let path = host_resolv_conf_path(network);
    let host = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(resolv_conf(&host, network))
}

/// The container's `/etc/resolv.conf` made from the host's: with the host network it is
/// kept as it is; otherwise loopback nameservers (which would point into the container's
/// own namespace) are dropped. If no nameserver remains, [`DEFAULT_NAMESERVERS`] are used.
pub fn resolv_conf(host: &str, network: NetworkMode) -> String {
    let mut out = String::new();
    let mut kept = 0;
    for line in host.lines() {
        if let Some(ns) = nameserver(line) {
            let loopback = ns.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback && network != NetworkMode::Host {
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        for ns in DEFAULT_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

fn nameserver(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    (words.next() == Some("nameserver"))
        .then(|| words.next())
        .flatten()
}

fn nameservers(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(nameserver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_localhost_hostname_and_extras() {
        let extra = vec![
            ("db".to_string(), "10.0.0.5".parse().unwrap()),
            ("v6".to_string(), "fd00::1".parse().unwrap()),
        ];
        assert_eq!(
            hosts_file("box", &extra),
            "127.0.0.1\tlocalhost box\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.0.0.5\tdb\n\
             fd00::1\tv6\n"
        );
        assert_eq!(
            hosts_file("buildkitsandbox", &[]).lines().next(),
            Some("127.0.0.1\tlocalhost buildkitsandbox")
        );
    }

    #[test]
    fn loopback_nameservers_are_dropped_without_host_network() {
        let host = "# comment\nsearch example.com\nnameserver 127.0.0.11\nnameserver ::1\n\
                    nameserver 10.1.2.3\noptions ndots:2\n";
        let got = resolv_conf(host, NetworkMode::None);
        assert_eq!(
            got,
            "# comment\nsearch example.com\nnameserver 10.1.2.3\noptions ndots:2\n"
        );
        // The host network keeps them: they are reachable there.
        assert_eq!(resolv_conf(host, NetworkMode::Host), host);
    }

    #[test]
    fn falls_back_to_public_resolvers() {
        let got = resolv_conf("nameserver 127.0.0.53\noptions edns0\n", NetworkMode::None);
        assert_eq!(
            got,
            "options edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        assert!(resolv_conf("", NetworkMode::Host).contains("nameserver 8.8.8.8\n"));
    }

    #[test]
    fn nameserver_lines_are_parsed_loosely() {
        assert_eq!(nameserver("nameserver\t1.1.1.1  # x"), Some("1.1.1.1"));
        assert_eq!(nameserver("  nameserver 1.1.1.1"), Some("1.1.1.1"));
        assert_eq!(nameserver("nameservers 1.1.1.1"), None);
        assert_eq!(nameserver("nameserver"), None);
    }
}
