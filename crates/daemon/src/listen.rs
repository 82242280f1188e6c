//! Listening on `unix://` and `tcp://` addresses and serving the Control service until
//! shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use proto::control::control_server::ControlServer;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;

use crate::Controller;

/// Why an address could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    #[error("invalid address {0:?}: supported schemes are unix:// and tcp://")]
    Scheme(String),
    #[error("listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("serving {addr}: {reason}")]
    Serve { addr: String, reason: String },
}

/// Removes a socket file left by a dead daemon; refuses one a live daemon answers on.
async fn clear_stale_socket(path: &Path, addr: &str) -> Result<(), ListenError> {
    if !path.exists() {
        return Ok(());
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(ListenError::Bind {
            addr: addr.to_string(),
            reason: "another daemon is listening there".into(),
        });
    }
    std::fs::remove_file(path).map_err(|e| ListenError::Bind {
        addr: addr.to_string(),
        reason: format!("removing the stale socket: {e}"),
    })
}

/// Serves `controller` on every address until `shutdown` completes, then cancels the
/// running builds (their steps are killed and their mounts released), stops accepting
/// and lets the calls in flight return.
pub async fn serve(
    controller: Controller,
    addresses: &[String],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    let jobs = controller.shutdown.clone();
    let worker = controller.ops.worker.clone();
    let service = ControlServer::from_arc(Arc::new(controller))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let stop = CancellationToken::new();
    let mut servers = tokio::task::JoinSet::new();
    for addr in addresses {
        let bind = |reason: String| ListenError::Bind {
            addr: addr.clone(),
            reason,
        };
        let router = tonic::transport::Server::builder().add_service(service.clone());
        let stop = stop.clone();
        let shown = addr.clone();
        if let Some(path) = addr.strip_prefix("unix://") {
            let path = Path::new(path);
            clear_stale_socket(path, addr).await?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| bind(e.to_string()))?;
            }
            let l = tokio::net::UnixListener::bind(path).map_err(|e| bind(e.to_string()))?;
            tracing::info!(addr, "listening");
            servers.spawn(async move {
                router
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(l),
                        stop.cancelled_owned(),
                    )
                    .await
                    .map_err(|e| ListenError::Serve {
                        addr: shown,
                        reason: e.to_string(),
                    })
            });
        } else if let Some(hostport) = addr.strip_prefix("tcp://") {
            let l = tokio::net::TcpListener::bind(hostport)
                .await
                .map_err(|e| bind(e.to_string()))?;
            tracing::info!(addr, "listening");
            servers.spawn(async move {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(l), stop.cancelled_owned())
                    .await
                    .map_err(|e| ListenError::Serve {
                        addr: shown,
                        reason: e.to_string(),
                    })
            });
        } else {
            return Err(ListenError::Scheme(addr.clone()));
        }
    }
    let stopper = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: cancelling running builds");
        jobs.cancel();
        stopper.cancel();
    });
    while let Some(r) = servers.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.cancel();
                return Err(e);
            }
            Err(e) => {
                stop.cancel();
                return Err(ListenError::Serve {
                    addr: "listener".into(),
                    reason: e.to_string(),
                });
            }
        }
    }
    // Cancelled steps release what they hold as they end; whatever is still held (a step
    // whose clean-up had not finished) goes now, before the process exits.
    if let Err(e) = worker.release().await {
        tracing::warn!(error = %e, "releasing the steps of cancelled builds");
    }
    for addr in addresses {
        if let Some(path) = addr.strip_prefix("unix://") {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}
