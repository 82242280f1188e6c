//! The daemon end of sessions: accept `Control.Session` streams, dial a gRPC client
//! back over each, keep it healthy, and hand it to builds by id.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use proto::control::BytesMessage;
use proto::health::HealthCheckRequest;
use proto::health::health_client::HealthClient;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::metadata::SessionInfo;
use crate::pipe::MessagePipe;

/// How the daemon checks that a session's client is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between checks.
    pub interval: Duration,
    /// Least time a check may take (a check may take up to 1.5× the previous one).
    pub timeout: Duration,
    /// Consecutive failures after which the session is closed.
    pub failure_threshold: u32,
}

impl Default for HealthConfig {
    /// Upstream's: every 5 s, 15 s timeout, closed after 2 failures in a row.
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            failure_threshold: 2,
        }
    }
}

impl HealthConfig {
    /// The configuration a client asked for with a custom period: check at that
    /// period (at least one second), give up after one failure.
    fn with_custom(self, period: Option<Duration>) -> HealthConfig {
        match period {
            Some(p) => {
                let p = p.max(Duration::from_secs(1));
                HealthConfig {
                    interval: p,
                    timeout: p,
                    failure_threshold: 1,
                }
            }
            None => self,
        }
    }
}

/// The response stream of the daemon's `Control.Session` handler.
pub type SessionStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

/// An active session, as builds use it: a gRPC channel to the client's services.
#[derive(Clone)]
pub struct Caller {
    info: Arc<SessionInfo>,
    channel: Channel,
    closed: CancellationToken,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("info", &self.info)
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The client's shared key.
    pub fn shared_key(&self) -> &str {
        &self.info.shared_key
    }

    /// Everything the client announced.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Whether the client serves `method` (`/pkg.Service/Method`, any case).
    pub fn supports(&self, method: &str) -> bool {
        self.info.supports(method)
    }

    /// Fails with [`Error::Unsupported`] unless the client serves `method`.
    pub fn require(&self, method: &str) -> Result<(), Error> {
        if self.supports(method) {
            Ok(())
        } else {
            Err(Error::Unsupported(method.to_string()))
        }
    }

    /// The channel to the client's services (authority `localhost`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the session ends.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Ends the session: its stream is finished and it leaves the manager.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// The sessions currently open on this daemon.
#[derive(Clone, Default)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: Mutex<HashMap<String, Caller>>,
    /// Ids whose stream arrived but whose channel is still being set up.
    starting: Mutex<std::collections::HashSet<String>>,
    changed: Notify,
    health: HealthConfig,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("health", &self.inner.health)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager with upstream's health checks.
    pub fn new() -> SessionManager {
        SessionManager::default()
    }

    /// A manager checking health with `health` (unless a client asks for its own).
    pub fn with_health(health: HealthConfig) -> SessionManager {
        SessionManager {
            inner: Arc::new(Inner {
                health,
                ..Inner::default()
            }),
        }
    }

    /// The body of the daemon's `Control.Session` handler: takes over the stream,
    /// dials the client's services over it and registers the session.
    pub fn handle_session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let info = SessionInfo::from_metadata(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let inbound = request.into_inner().map(|m| match m {
            Ok(m) => Ok(Bytes::from(m.data)),
            Err(status) => Err(io::Error::other(status.to_string())),
        });
        let stream = self
            .handle_conn(info, inbound)
            .map_err(|e| Status::already_exists(e.to_string()))?;
        Ok(Response::new(stream))
    }

    /// Takes over a session tunnel: `inbound` is what the client sends, the returned
    /// stream what goes back. The session is registered once the channel is up and
    /// removed when the tunnel or the health checks fail.
    pub fn handle_conn<S>(&self, info: SessionInfo, inbound: S) -> Result<SessionStream, Error>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        {
            let sessions = self.inner.sessions.lock().map_err(|_| poisoned())?;
            let mut starting = self.inner.starting.lock().map_err(|_| poisoned())?;
            if sessions.contains_key(&info.id) || !starting.insert(info.id.clone()) {
                return Err(Error::Duplicate(info.id));
            }
        }
        let closed = CancellationToken::new();
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(16);
        let inbound = crate::pipe::drained(inbound, crate::pipe::READ_AHEAD);
        let pipe = MessagePipe::new(inbound, out_tx, closed.clone());
        let outbound = crate::pipe::outgoing(out_rx)
            .map(|data| Ok(BytesMessage { data }))
            .take_until(closed.clone().cancelled_owned());
        tokio::spawn(self.clone().run_session(info, pipe, closed));
        Ok(Box::pin(outbound))
    }

    async fn run_session(self, info: SessionInfo, pipe: MessagePipe, closed: CancellationToken) {
        let id = info.id.clone();
        let health = self.inner.health.with_custom(info.health_timeout);
        let channel = match dial(pipe).await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "cannot dial session");
                closed.cancel();
                self.finish(&id, false);
                return;
            }
        };
        let caller = Caller {
            info: Arc::new(info),
            channel: channel.clone(),
            closed: closed.clone(),
        };
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.insert(id.clone(), caller);
        }
        self.finish(&id, false);
        tracing::debug!(session = %id, "session registered");
        monitor_health(channel, health, &closed).await;
        closed.cancel();
        self.finish(&id, true);
        tracing::debug!(session = %id, "session closed");
    }

    /// Clears the starting mark of `id`, drops its registration once closed (a
    /// session with the same id cannot be registered while this one is), and wakes
    /// waiters.
    fn finish(&self, id: &str, remove: bool) {
        if let Ok(mut starting) = self.inner.starting.lock() {
            starting.remove(id);
        }
        if remove {
            if let Ok(mut sessions) = self.inner.sessions.lock() {
                if sessions.get(id).is_some_and(Caller::is_closed) {
                    sessions.remove(id);
                }
            }
        }
        self.inner.changed.notify_waiters();
    }

    /// The session `id`, waiting up to `timeout` for it to arrive. An id of the form
    /// `prefix:id` (a build's per-context key) is looked up by its last part.
    pub async fn get(&self, id: &str, timeout: Duration) -> Result<Caller, Error> {
        let id = match id.split_once(':') {
            Some((_, rest)) if !rest.is_empty() => rest,
            _ => id,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(caller) = self.try_get(id) {
                return Ok(caller);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::NoSession(id.to_string()));
            }
        }
    }

    /// The session `id` if it is open now.
    pub fn try_get(&self, id: &str) -> Option<Caller> {
        let sessions = self.inner.sessions.lock().ok()?;
        sessions.get(id).filter(|c| !c.is_closed()).cloned()
    }

    /// The ids of the open sessions.
    pub fn ids(&self) -> Vec<String> {
        match self.inner.sessions.lock() {
            Ok(sessions) => sessions.keys().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn poisoned() -> Error {
    Error::Metadata("session table poisoned".into())
}

/// Dials a gRPC client over the tunnel: exactly one connection, authority `localhost`.
async fn dial(pipe: MessagePipe) -> Result<Channel, Error> {
    let slot = Arc::new(Mutex::new(Some(pipe)));
    let connector = tower::service_fn(move |_: Uri| {
        let pipe = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            pipe.map(TokioIo::new)
                .ok_or_else(|| io::Error::other("only one connection allowed"))
        }
    });
    // Wide windows, as the client's end has (see `TUNNEL_STREAM_WINDOW`): the build
    // context flows this way.
    let channel = Endpoint::from_static("http://localhost")
        .initial_stream_window_size(crate::client::TUNNEL_STREAM_WINDOW)
        .initial_connection_window_size(crate::client::TUNNEL_CONNECTION_WINDOW)
        .connect_with_connector(connector)
        .await?;
    Ok(channel)
}

/// Polls `grpc.health.v1.Health/Check` until `closed` or too many failures.
async fn monitor_health(channel: Channel, cfg: HealthConfig, closed: &CancellationToken) {
    let mut client = HealthClient::new(channel);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut failures = 0;
    let mut last = Duration::ZERO;
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let timeout = cfg.timeout.max(last.mul_f64(1.5));
        let started = Instant::now();
        let check = client.check(HealthCheckRequest::default());
        let result = tokio::select! {
            () = closed.cancelled() => return,
            r = tokio::time::timeout(timeout, check) => r,
        };
        last = started.elapsed();
        match result {
            Ok(Ok(_)) => failures = 0,
            Ok(Err(status)) => {
                failures += 1;
                tracing::warn!(error = %status, failures, "session health check failed");
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(?timeout, failures, "session health check timed out");
            }
        }
        if failures >= cfg.failure_threshold {
            return;
        }
    }
}
