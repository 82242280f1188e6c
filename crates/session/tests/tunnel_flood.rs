//! A session tunnel carrying a burst of small messages must not cost the client its
//! connection to the daemon: `h2` closes a connection on which many small DATA frames
//! wait unread ("too_many_data_frames"), and every tunneled HTTP/2 frame is a message,
//! that is a DATA frame of the `Control.Session` stream. The daemon's end reads the
//! stream ahead of its tunneled connection, so they do not wait in `h2`.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use proto::control::control_client::ControlClient;
use proto::control::control_server::{Control, ControlServer};
use proto::control::*;
use session::manager::SessionStream;
use session::{SessionInfo, SessionManager};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// A Control service that implements only `Session` (and answers `Info`, to show that
/// the connection still works).
struct TestControl {
    sessions: SessionManager,
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

async fn daemon(dir: &Path) -> ControlClient<Channel> {
    let sock = dir.join("buildkitd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let control = TestControl {
        sessions: SessionManager::new(),
    };
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

/// An HTTP/2 frame with an empty stream id.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn small_tunnel_messages_behind_a_stalled_reader_keep_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let mut client = daemon(tmp.path()).await;

    // The client's end of the tunnel, written by hand: the server preface (an empty
    // SETTINGS), then PINGs. The daemon's tunneled client answers each; those answers
    // are not read here, so once they fill the stream's window the daemon's end stops
    // reading the tunnel (it cannot answer). Then more PINGs, one message each, pile up.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<BytesMessage>();
    let mut request = Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    SessionInfo {
        id: "flood".into(),
        shared_key: "k".into(),
        methods: Vec::new(),
        health_timeout: None,
    }
    .to_metadata(request.metadata_mut())
    .unwrap();
    let ping = |i: u64| BytesMessage {
        data: frame(0x6, 0, &i.to_be_bytes()),
    };
    tx.send(BytesMessage {
        data: frame(0x4, 0, &[]),
    })
    .unwrap();
    // About 2.4 MB of answers: more than the client's default 2 MiB stream window, but
    // not so many PINGs that they fill the daemon's 1 MiB window once it stops reading.
    for i in 0..140_000 {
        tx.send(ping(i)).unwrap();
    }
    let mut replies = client.session(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Small messages, each going out on its own (the stream is empty in between).
    let mut sent = 0u64;
    for i in 0..10_000 {
        if tx.send(ping(i)).is_err() {
            break;
        }
        sent += 1;
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every PING is answered: the session (and its connection) stayed up.
    let want = (140_000 + sent as usize) * 17;
    let mut received = 0usize;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        while received < want {
            match replies.message().await {
                Ok(Some(m)) => received += m.data.len(),
                Ok(None) => return Err("the session stream ended".to_string()),
                Err(status) => return Err(status.to_string()),
            }
        }
        Ok(())
    })
    .await
    .expect("the daemon answers in time");
    assert_eq!(sent, 10_000, "the session call ended early: {answered:?}");
    answered.expect("the session stream stays up");
    client
        .info(InfoRequest::default())
        .await
        .expect("the connection to the daemon works");
}
