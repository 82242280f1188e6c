//! The client end of a session: serve gRPC services to the daemon over the
//! `Control.Session` stream the client opened.
//!
//! The client calls `Control.Session` as a gRPC client, announcing its id, shared key
//! and methods in the request metadata, then runs an HTTP/2 gRPC *server* over the
//! stream, on which the daemon is the client. The server always includes
//! `grpc.health.v1.Health`, which the daemon polls.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use proto::control::BytesMessage;
use proto::control::control_client::ControlClient;
use proto::health::health_check_response::ServingStatus;
use proto::health::health_server::{Health, HealthServer};
use proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::metadata::{SessionInfo, method_url, new_id};
use crate::pipe::MessagePipe;

/// Largest message the session's services accept, as upstream (16 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// HTTP/2 receive windows of the connection tunneled through the session, at both ends.
/// A file transfer is one stream, and every byte of it crosses two HTTP/2 connections
/// and several tasks before the receiver can give the window back, so a wider window
/// than the defaults (1 MiB on a server) keeps the sender from waiting for updates when
/// the machine is busy.
pub(crate) const TUNNEL_STREAM_WINDOW: u32 = 4 << 20;
/// See [`TUNNEL_STREAM_WINDOW`].
///
/// Twice the stream window: a transfer whose receiver stalls (a slow disk) may fill
/// its stream's window, and the other streams (health checks, a second transfer) still
/// find room on the connection instead of waiting behind it.
pub(crate) const TUNNEL_CONNECTION_WINDOW: u32 = 8 << 20;
/// Largest HTTP/2 frame the client's end accepts: room for a whole fsutil DATA packet
/// ([`crate::fsutil::CHUNK_SIZE`]), so that each becomes one frame, one message on the
/// tunnel, instead of 16 KiB pieces each costing a message. A peer may still send
/// smaller frames.
pub(crate) const TUNNEL_MAX_FRAME: u32 = 512 << 10;

/// Something a session can serve: one or more gRPC services (upstream's `Attachable`).
pub trait Attachable: Send + 'static {
    /// Adds the services to the session's server.
    fn register(self: Box<Self>, services: &mut Services);
}

/// The services of a session being built, and the methods they expose.
pub struct Services {
    routes: RoutesBuilder,
    methods: Vec<String>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Adds a gRPC service, announcing `methods` (bare names such as `DiffCopy`) under
    /// its full name.
    pub fn add<S>(&mut self, service: S, methods: &[&str]) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        for m in methods {
            self.methods.push(method_url(S::NAME, m));
        }
        self.routes.add_service(service);
        self
    }

    /// The method URLs announced so far.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
}

/// A session being set up by a client: add services with [`Session::allow`], then
/// [`Session::run`] it.
pub struct Session {
    id: String,
    shared_key: String,
    services: Services,
    health_timeout: Option<std::time::Duration>,
    closer: CancellationToken,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("methods", &self.services.methods)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session with a random id, serving health checks.
    pub fn new(shared_key: impl Into<String>) -> Session {
        Session::with_id(new_id(), shared_key)
    }

    /// A new session with the given id, serving health checks.
    pub fn with_id(id: impl Into<String>, shared_key: impl Into<String>) -> Session {
        let mut services = Services {
            routes: RoutesBuilder::default(),
            methods: Vec::new(),
        };
        services.add(
            HealthServer::new(HealthService),
            &["Check", "List", "Watch"],
        );
        Session {
            id: id.into(),
            shared_key: shared_key.into(),
            services,
            health_timeout: None,
            closer: CancellationToken::new(),
        }
    }

    /// The session id, to put in `SolveRequest.Session` and the like.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The method URLs the session will announce.
    pub fn methods(&self) -> &[String] {
        self.services.methods()
    }

    /// Serves `attachable` on this session.
    pub fn allow(&mut self, attachable: impl Attachable) -> &mut Self {
        Box::new(attachable).register(&mut self.services);
        self
    }

    /// Asks the daemon to check health at this period (and give up after one failure)
    /// instead of its default (`x-buildkit-session-health-custom-timeout`).
    pub fn health_timeout(&mut self, period: std::time::Duration) -> &mut Self {
        self.health_timeout = Some(period);
        self
    }

    /// A token that ends [`Session::run`] when cancelled.
    pub fn closer(&self) -> CancellationToken {
        self.closer.clone()
    }

    /// Opens `Control.Session` on the daemon and serves the session's services over it
    /// until the daemon ends the stream or [`Session::closer`] is cancelled.
    pub async fn run(self, client: ControlClient<Channel>) -> Result<(), Error> {
        let info = SessionInfo {
            id: self.id,
            shared_key: self.shared_key,
            methods: self.services.methods,
            health_timeout: self.health_timeout,
        };
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(16);
        let outbound = crate::pipe::outgoing(out_rx).map(|data| BytesMessage { data });
        let mut request = Request::new(outbound);
        info.to_metadata(request.metadata_mut())?;

        let failure: Arc<Mutex<Option<Status>>> = Arc::default();
        let closed = self.closer.child_token();
        let inbound = crate::pipe::drained(
            open_stream(client, request, failure.clone()),
            crate::pipe::READ_AHEAD,
        );
        let pipe = MessagePipe::new(inbound, out_tx, closed.clone());

        let incoming = futures::stream::once(async move { Ok::<_, io::Error>(pipe) })
            .chain(futures::stream::pending());
        let served = tonic::transport::Server::builder()
            .initial_stream_window_size(TUNNEL_STREAM_WINDOW)
            .initial_connection_window_size(TUNNEL_CONNECTION_WINDOW)
            .max_frame_size(TUNNEL_MAX_FRAME)
            .add_routes(self.services.routes.routes())
            .serve_with_incoming_shutdown(incoming, closed.cancelled_owned())
            .await;
        if let Some(status) = failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(Error::from(status));
        }
        served.map_err(Error::from)
    }
}

type Inbound = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The daemon-to-client half of the tunnel. The call is made lazily, when the server
/// first reads, so that the request stream is already being served: a daemon may send
/// its response headers only with its first message.
fn open_stream<S>(
    mut client: ControlClient<Channel>,
    request: Request<S>,
    failure: Arc<Mutex<Option<Status>>>,
) -> Inbound
where
    S: Stream<Item = BytesMessage> + Send + 'static,
{
    let call = async move { client.session(request).await };
    let stream = futures::stream::once(call).flat_map(move |opened| -> Inbound {
        match opened {
            Ok(response) => {
                let failure = failure.clone();
                Box::pin(response.into_inner().map(move |m| match m {
                    Ok(m) => Ok(Bytes::from(m.data)),
                    Err(status) => {
                        let e = io::Error::other(status.to_string());
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(status);
                        }
                        Err(e)
                    }
                }))
            }
            Err(status) => {
                let e = io::Error::other(status.to_string());
                if let Ok(mut f) = failure.lock() {
                    *f = Some(status);
                }
                Box::pin(futures::stream::iter([Err(e)]))
            }
        }
    });
    Box::pin(stream)
}

/// `grpc.health.v1.Health`: the client is serving as long as the session runs.
#[derive(Clone, Copy, Debug)]
struct HealthService;

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(serving()))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let statuses = [(String::new(), serving())].into_iter().collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let updates =
            futures::stream::once(async { Ok(serving()) }).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(updates)))
    }
}
