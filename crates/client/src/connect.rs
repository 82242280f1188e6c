//! Daemon addresses and connections.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use proto::control::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where a daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

/// Why no connection could be made. The message names the address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("invalid address {addr:?}: {reason}")]
    Invalid { addr: String, reason: String },
    #[error("failed to connect to {addr}: {reason} (is buildkitd running?)")]
    Unreachable { addr: String, reason: String },
}

impl Address {
    /// Parses `unix:///path` or `tcp://host:port`.
    pub fn parse(addr: &str) -> Result<Address, ConnectError> {
        let bad = |reason: &str| ConnectError::Invalid {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = addr.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = addr.strip_prefix("tcp://") {
            if !hostport.contains(':') {
                return Err(bad("expected tcp://HOST:PORT"));
            }
            return Ok(Address::Tcp(hostport.to_string()));
        }
        Err(bad("supported schemes are unix:// and tcp://"))
    }
}

/// Connects to the daemon at `addr`, failing after `timeout`.
pub async fn connect(
    addr: &str,
    timeout: Duration,
) -> Result<ControlClient<Channel>, ConnectError> {
    let unreachable = |e: &dyn std::fmt::Display| ConnectError::Unreachable {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let channel = match Address::parse(addr)? {
        Address::Tcp(hostport) => {
            let ep = Endpoint::from_shared(format!("http://{hostport}"))
                .map_err(|e| unreachable(&e))?
                .connect_timeout(timeout);
            ep.connect()
                .await
                .map_err(|e| unreachable(&source_chain(&e)))?
        }
        Address::Unix(path) => {
            // The URI is a placeholder: the connector below decides where to go.
            let ep = Endpoint::from_static("http://localhost").connect_timeout(timeout);
            let connector = tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            });
            tokio::time::timeout(timeout, ep.connect_with_connector(connector))
                .await
                .map_err(|_| unreachable(&"timed out"))?
                .map_err(|e| unreachable(&source_chain(&e)))?
        }
    };
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20))
}

/// An error with its causes, `a: b: c`, for one-line messages.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Address::parse("unix:///run/buildkit/buildkitd.sock").unwrap(),
            Address::Unix("/run/buildkit/buildkitd.sock".into())
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:1234").unwrap(),
            Address::Tcp("127.0.0.1:1234".into())
        );
        for bad in ["", "unix://", "tcp://host", "npipe:////./pipe/x", "/tmp/x"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_missing_daemon_is_one_clear_line() {
        let dir = tempfile_dir();
        let addr = format!("unix://{}/nope.sock", dir.display());
        let err = connect(&addr, Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr), "{err}");
        assert!(!err.contains('\n'), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("client-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
