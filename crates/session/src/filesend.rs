//! `moby.filesync.v1.FileSend`: the daemon pushes exporter output to the client.
//!
//! Two modes share the one method, chosen by the client from the exporter id in the
//! metadata (`buildkit-attachable-exporter-id`, the exporter's index in the solve
//! request):
//! - a directory (`type=local`): the messages are fsutil `Packet`s, the daemon is the
//!   sender ([`send_dir`]) and the client receives into its directory;
//! - a byte stream (`type=tar`, `oci`, `docker`): `BytesMessage` chunks of at most
//!   3 MiB ([`FileWriter`]) that the client writes to a file or stdout. Exporter
//!   metadata travels as `exporter-md-<key>`; a client that declines the output
//!   answers `AlreadyExists`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use prost::Message;
use proto::filesync::BytesMessage;
use proto::filesync::file_send_client::FileSendClient;
use proto::fsutil_types::Packet;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{KeyAndValueRef, MetadataMap, MetadataValue};
use tonic::server::{NamedService, StreamingService};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::client::{Attachable, MAX_MESSAGE_SIZE, Services};
use crate::filesync::lazy_inbound;
use crate::fsutil::{self, FilterOptions, PacketConn, ReceiveOptions};
use crate::manager::Caller;

/// Metadata key: the exporter's index in the solve request.
pub const KEY_EXPORTER_ID: &str = "buildkit-attachable-exporter-id";
/// Metadata key a newer daemon sets for multi-platform local exports.
pub const KEY_MULTI_PLATFORM: &str = "buildkit-exporter-multi-platform";
/// Prefix of exporter metadata keys in byte-stream mode.
pub const EXPORTER_META_PREFIX: &str = "exporter-md-";
/// The method the daemon calls.
pub const DIFF_COPY_METHOD: &str = "/moby.filesync.v1.FileSend/DiffCopy";
/// Largest chunk of a byte-stream export, as upstream (well under gRPC's limits).
pub const MAX_CHUNK: usize = 3 << 20;

fn exporter_id(md: &mut MetadataMap, id: u64) {
    let value = MetadataValue::from(id);
    md.insert(KEY_EXPORTER_ID, value);
}

/// Sends the directory `src` to the client's target for exporter `id`; returns what
/// went over (the client asks only for the files it lacks).
pub async fn copy_to_caller(caller: &Caller, id: u64, src: &Path) -> Result<fsutil::Sent, Error> {
    caller.require(DIFF_COPY_METHOD)?;
    send_dir(caller.channel(), id, src, false).await
}

/// Sends the directory `src` over `channel` as fsutil packets (`FileSend.DiffCopy`),
/// optionally announcing multi-platform support.
pub async fn send_dir(
    channel: Channel,
    id: u64,
    src: &Path,
    multi_platform: bool,
) -> Result<fsutil::Sent, Error> {
    let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(fsutil::QUEUE);
    let outbound = ReceiverStream::new(rx).filter_map(|p| std::future::ready(p.ok()));
    let mut request = Request::new(outbound);
    exporter_id(request.metadata_mut(), id);
    if multi_platform {
        request
            .metadata_mut()
            .insert(KEY_MULTI_PLATFORM, MetadataValue::from_static("1"));
    }
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let call = async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("session unavailable: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
        grpc.streaming(request, PathAndQuery::from_static(DIFF_COPY_METHOD), codec)
            .await
    };
    let mut conn = PacketConn::new(lazy_inbound(call), tx);
    let sent = fsutil::send(&mut conn, src, &FilterOptions::default()).await?;
    conn.close().await?;
    Ok(sent)
}

/// Opens a byte-stream export to the client's target for exporter `id`, passing `md`
/// as exporter metadata.
pub async fn copy_file_writer(
    caller: &Caller,
    id: u64,
    md: &BTreeMap<String, String>,
) -> Result<FileWriter, Error> {
    caller.require(DIFF_COPY_METHOD)?;
    FileWriter::open(caller.channel(), id, md)
}

/// A byte-stream export in progress: [`FileWriter::write`] the bytes, then
/// [`FileWriter::finish`].
pub struct FileWriter {
    tx: Option<mpsc::Sender<BytesMessage>>,
    call: Option<tokio::task::JoinHandle<Result<(), Status>>>,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter").finish_non_exhaustive()
    }
}

impl FileWriter {
    /// Starts the call on `channel`.
    pub fn open(
        channel: Channel,
        id: u64,
        md: &BTreeMap<String, String>,
    ) -> Result<FileWriter, Error> {
        let (tx, rx) = mpsc::channel::<BytesMessage>(8);
        let mut request = Request::new(ReceiverStream::new(rx));
        for (k, v) in md {
            let key = format!("{EXPORTER_META_PREFIX}{k}");
            let key = tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| Error::Metadata(format!("invalid exporter metadata key {k:?}")))?;
            let value = v
                .parse()
                .map_err(|_| Error::Metadata(format!("invalid exporter metadata value {v:?}")))?;
            request.metadata_mut().insert(key, value);
        }
        exporter_id(request.metadata_mut(), id);
        let mut client = FileSendClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
        // The client answers (headers included) only when it is done, so the call runs
        // on its own while the bytes flow.
        let call = tokio::spawn(async move {
            let mut replies = client.diff_copy(request).await?.into_inner();
            while replies.message().await?.is_some() {}
            Ok(())
        });
        Ok(FileWriter {
            tx: Some(tx),
            call: Some(call),
        })
    }

    /// Sends `data`, in chunks of at most [`MAX_CHUNK`].
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        for chunk in data.chunks(MAX_CHUNK) {
            let sent = match &self.tx {
                Some(tx) => tx
                    .send(BytesMessage {
                        data: chunk.to_vec(),
                    })
                    .await
                    .is_ok(),
                None => false,
            };
            if !sent {
                // The call ended early: its status says why.
                self.tx = None;
                return Err(self.outcome().await.err().unwrap_or(Error::Closed));
            }
        }
        Ok(())
    }

    /// Ends the stream and waits for the client to have written everything.
    pub async fn finish(mut self) -> Result<(), Error> {
        self.tx = None;
        self.outcome().await
    }

    async fn outcome(&mut self) -> Result<(), Error> {
        match self.call.take() {
            Some(call) => match call.await {
                Ok(result) => result.map_err(Error::from),
                Err(e) => Err(Error::Transfer(fsutil::Error::Internal(format!(
                    "file send task failed: {e}"
                )))),
            },
            None => Err(Error::Closed),
        }
    }
}

/// Opens the output of a byte-stream export, given its exporter metadata. `Ok(None)`
/// declines it (the daemon gets `AlreadyExists`).
pub type OutputFn = dyn Fn(&BTreeMap<String, String>) -> io::Result<Option<Box<dyn AsyncWrite + Send + Unpin>>>
    + Send
    + Sync;

#[derive(Clone)]
enum Target {
    /// A directory, and where the record of what was written into it is kept.
    Dir(PathBuf, Option<PathBuf>),
    Output(Arc<OutputFn>),
}

/// The client's FileSend service: where each exporter's output goes.
#[derive(Clone, Default)]
pub struct FileSendTarget {
    targets: Arc<HashMap<u64, Target>>,
}

impl std::fmt::Debug for FileSendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.targets.keys().collect();
        ids.sort();
        f.debug_struct("FileSendTarget").field("ids", &ids).finish()
    }
}

impl FileSendTarget {
    /// No targets yet.
    pub fn new() -> FileSendTarget {
        FileSendTarget::default()
    }

    fn with(mut self, id: u64, target: Target) -> FileSendTarget {
        Arc::make_mut(&mut self.targets).insert(id, target);
        self
    }

    /// Exporter `id` writes a directory tree into `dir` (merged into what is there,
    /// files owned by the current user; a file already there with the same contents is
    /// kept rather than written again).
    pub fn dir(self, id: u64, dir: impl Into<PathBuf>) -> FileSendTarget {
        self.with(id, Target::Dir(dir.into(), None))
    }

    /// [`FileSendTarget::dir`], incremental: the file `record` notes what each export
    /// wrote into `dir`, and the next one asks only for the files that are not there
    /// already as the daemon has them (same permissions, size and modification time),
    /// and removes what it no longer exports (if untouched since).
    pub fn dir_recorded(
        self,
        id: u64,
        dir: impl Into<PathBuf>,
        record: impl Into<PathBuf>,
    ) -> FileSendTarget {
        self.with(id, Target::Dir(dir.into(), Some(record.into())))
    }

    /// Exporter `id` streams bytes into what `output` opens.
    pub fn output<F>(self, id: u64, output: F) -> FileSendTarget
    where
        F: Fn(&BTreeMap<String, String>) -> io::Result<Option<Box<dyn AsyncWrite + Send + Unpin>>>
            + Send
            + Sync
            + 'static,
    {
        self.with(id, Target::Output(Arc::new(output)))
    }

    /// Exporter `id` streams bytes into the file `path` (created or truncated).
    pub fn file(self, id: u64, path: impl Into<PathBuf>) -> FileSendTarget {
        let path = path.into();
        self.output(id, move |_| {
            let file = std::fs::File::create(&path)?;
            Ok(Some(Box::new(tokio::fs::File::from_std(file))))
        })
    }

    /// Exporter `id` streams bytes to standard output.
    pub fn stdout(self, id: u64) -> FileSendTarget {
        self.output(id, |_| Ok(Some(Box::new(tokio::io::stdout()))))
    }
}

impl Attachable for FileSendTarget {
    fn register(self: Box<Self>, services: &mut Services) {
        services.add(*self, &["DiffCopy"]);
    }
}

impl NamedService for FileSendTarget {
    const NAME: &'static str = "moby.filesync.v1.FileSend";
}

impl tower::Service<http::Request<Body>> for FileSendTarget {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != DIFF_COPY_METHOD {
                return Ok(Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_SIZE), None);
            Ok(grpc.streaming(this, req).await)
        })
    }
}

type RawResponse = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl StreamingService<Bytes> for FileSendTarget {
    type Response = Bytes;
    type ResponseStream = RawResponse;
    type Future = BoxFuture<'static, Result<Response<RawResponse>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let targets = self.targets.clone();
        Box::pin(async move {
            let md = request.metadata();
            let id = md
                .get(KEY_EXPORTER_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            match targets.get(&id) {
                Some(Target::Dir(dir, record)) => {
                    Ok(receive_dir(request, dir.clone(), record.clone()))
                }
                Some(Target::Output(open)) => {
                    let meta = exporter_metadata(md);
                    let output = open(&meta)
                        .map_err(|e| Status::internal(format!("cannot open export output: {e}")))?
                        .ok_or_else(|| Status::already_exists("target already exists"))?;
                    Ok(write_output(request, output))
                }
                None => Err(Status::not_found(format!("exporter {id} not found"))),
            }
        })
    }
}

/// Exporter metadata from `exporter-md-*` keys (repeated values joined with `,`).
fn exporter_metadata(md: &MetadataMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kv in md.iter() {
        if let KeyAndValueRef::Ascii(k, v) = kv {
            if let (Some(key), Ok(v)) = (k.as_str().strip_prefix(EXPORTER_META_PREFIX), v.to_str())
            {
                out.entry(key.to_string()).or_default().push(v.to_string());
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.join(","))).collect()
}

/// The record of a previous export kept in `path`, if there is a usable one.
fn read_record(path: &Path) -> Option<Vec<fsutil::Written>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(record = %path.display(), error = %e, "cannot read the export record");
            return None;
        }
    };
    match serde_json::from_slice(&data) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(record = %path.display(), error = %e, "ignoring a malformed export record");
            None
        }
    }
}

/// Replaces the record in `path` (written aside, then renamed over it).
fn write_record(path: &Path, written: &[fsutil::Written]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        serde_json::to_writer(&mut f, written)?;
        std::io::Write::flush(&mut f)?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Directory mode: the messages are fsutil packets and the client is the receiver.
fn receive_dir(
    request: Request<Streaming<Bytes>>,
    dir: PathBuf,
    record: Option<PathBuf>,
) -> Response<RawResponse> {
    let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
    let inbound = request.into_inner().map(|m| {
        let bytes = m.map_err(fsutil::Error::from)?;
        Packet::decode(bytes)
            .map_err(|e| fsutil::Error::Unexpected(format!("malformed packet: {e}")))
    });
    let conn = PacketConn::new(inbound, tx.clone());
    let mut opts = ReceiveOptions {
        merge: true,
        owner: Some((
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )),
        ..ReceiveOptions::default()
    };
    tokio::spawn(async move {
        let received = match &record {
            None => fsutil::receive(conn, &dir, opts).await.map(|s| (s, None)),
            Some(record) => {
                opts.keep_unchanged = true;
                opts.previous = read_record(record).map(Arc::new);
                fsutil::receive_tracked(conn, &dir, opts)
                    .await
                    .map(|(s, w)| (s, Some(w)))
            }
        };
        match received {
            Ok((stats, written)) => {
                tracing::debug!(dir = %dir.display(), ?stats, "export received");
                if let (Some(record), Some(written)) = (&record, written) {
                    if let Err(e) = write_record(record, &written) {
                        // The next export sends everything again; nothing is lost.
                        tracing::warn!(record = %record.display(), error = %e, "cannot write the export record");
                    }
                }
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "file send receive failed");
                let _ = tx.send(Err(e.to_status())).await;
            }
        }
    });
    let replies = ReceiverStream::new(rx).map(|p| p.map(|p| Bytes::from(p.encode_to_vec())));
    Response::new(Box::pin(replies))
}

/// Byte-stream mode: every message's payload goes to `output`, in order.
fn write_output(
    request: Request<Streaming<Bytes>>,
    mut output: Box<dyn AsyncWrite + Send + Unpin>,
) -> Response<RawResponse> {
    let mut inbound = request.into_inner();
    let done = async move {
        while let Some(raw) = inbound.message().await? {
            let m = BytesMessage::decode(raw)
                .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))?;
            output
                .write_all(&m.data)
                .await
                .map_err(|e| Status::internal(format!("cannot write export: {e}")))?;
        }
        output
            .shutdown()
            .await
            .map_err(|e| Status::internal(format!("cannot write export: {e}")))?;
        Ok::<(), Status>(())
    };
    let replies = futures::stream::once(done).filter_map(|r| std::future::ready(r.err().map(Err)));
    Response::new(Box::pin(replies))
}

// `FileSend.DiffCopy` is declared with `BytesMessage`, but in directory mode upstream
// sends fsutil `Packet`s over it (Go's gRPC decodes into whatever the caller passes), so
// the client serves it with a codec that leaves messages undecoded and decodes each one
// as the exporter's mode requires.

/// Encodes and decodes [`Bytes`] as the message itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
