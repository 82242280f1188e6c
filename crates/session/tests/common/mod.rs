//! The daemon end the session tests share: a Control service that serves `Session`
//! through a [`SessionManager`] (and answers `Info`, to show a connection still works),
//! on a unix socket.
#![allow(dead_code)]

use std::path::Path;

use hyper_util::rt::TokioIo;
use proto::control::control_client::ControlClient;
use proto::control::control_server::{Control, ControlServer};
use proto::control::*;
use session::SessionManager;
use session::manager::SessionStream;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// A Control service that implements only `Session` (and answers `Info`, to show that
/// the connection still works).
pub struct TestControl {
    pub sessions: SessionManager,
}

#[tonic::async_trait]
impl Control for TestControl {
    async fn disk_usage(
        &self,
        _: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        Err(Status::unimplemented("disk_usage"))
    }
    type PruneStream = Stream<UsageRecord>;
    async fn prune(&self, _: Request<PruneRequest>) -> Result<Response<Self::PruneStream>, Status> {
        Err(Status::unimplemented("prune"))
    }
    async fn solve(&self, _: Request<SolveRequest>) -> Result<Response<SolveResponse>, Status> {
        Err(Status::unimplemented("solve"))
    }
    type StatusStream = Stream<StatusResponse>;
    async fn status(
        &self,
        _: Request<StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        Err(Status::unimplemented("status"))
    }
    type SessionStream = SessionStream;
    async fn session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.sessions.handle_session(request)
    }
    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Err(Status::unimplemented("list_workers"))
    }
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse::default()))
    }
    type ListenBuildHistoryStream = Stream<BuildHistoryEvent>;
    async fn listen_build_history(
        &self,
        _: Request<BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        Err(Status::unimplemented("listen_build_history"))
    }
    async fn update_build_history(
        &self,
        _: Request<UpdateBuildHistoryRequest>,
    ) -> Result<Response<UpdateBuildHistoryResponse>, Status> {
        Err(Status::unimplemented("update_build_history"))
    }
}

/// Serves `sessions` on a socket in `dir`; returns a client of it.
pub async fn serve(dir: &Path, sessions: SessionManager) -> ControlClient<Channel> {
    let sock = dir.join("buildkitd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let control = TestControl { sessions };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlServer::new(control))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let sock = sock.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(sock).await?)) }
        }))
        .await
        .unwrap();
    ControlClient::new(channel)
}
