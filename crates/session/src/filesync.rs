//! `moby.filesync.v1.FileSync`: the daemon pulls a local directory from the client.
//!
//! The client serves named directories (`--local name=dir`) with [`FileSyncProvider`]
//! and applies the include/exclude patterns itself, so excluded files never leave it.
//! The daemon calls [`sync`] (or [`receive`] on a bare channel) to copy one of them into
//! a destination directory, transferring only what changed since the last copy there.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use proto::filesync::file_sync_client::FileSyncClient;
use proto::filesync::file_sync_server::{FileSync, FileSyncServer};
use proto::fsutil_types::Packet;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::client::{Attachable, MAX_MESSAGE_SIZE, Services};
use crate::fsutil::{self, FilterOptions, PacketConn, ReceiveOptions, Stats};
use crate::manager::Caller;
use crate::metadata::{append_values, values};

/// Metadata key: which of the client's directories to send.
pub const KEY_DIR_NAME: &str = "dir-name";
/// Metadata key (multi-valued): include patterns.
pub const KEY_INCLUDE_PATTERNS: &str = "include-patterns";
/// Metadata key (multi-valued): exclude patterns.
pub const KEY_EXCLUDE_PATTERNS: &str = "exclude-patterns";
/// Metadata key (multi-valued): paths whose symlinks are followed.
pub const KEY_FOLLOW_PATHS: &str = "followpaths";
/// The method the daemon calls.
pub const DIFF_COPY_METHOD: &str = "/moby.filesync.v1.FileSync/DiffCopy";

type PacketResponse = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

/// Serves the client's local directories by name.
#[derive(Clone, Debug, Default)]
pub struct FileSyncProvider {
    dirs: Arc<BTreeMap<String, PathBuf>>,
}

impl FileSyncProvider {
    /// Serves each `(name, directory)`.
    pub fn new<N, P>(dirs: impl IntoIterator<Item = (N, P)>) -> FileSyncProvider
    where
        N: Into<String>,
        P: Into<PathBuf>,
    {
        let dirs = dirs
            .into_iter()
            .map(|(n, p)| (n.into(), p.into()))
            .collect();
        FileSyncProvider {
            dirs: Arc::new(dirs),
        }
    }
}

impl Attachable for FileSyncProvider {
    fn register(self: Box<Self>, services: &mut Services) {
        let server = FileSyncServer::new(*self).max_decoding_message_size(MAX_MESSAGE_SIZE);
        services.add(server, &["DiffCopy", "TarStream"]);
    }
}

#[tonic::async_trait]
impl FileSync for FileSyncProvider {
    type DiffCopyStream = PacketResponse;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let md = request.metadata();
        let name = values(md, KEY_DIR_NAME)
            .into_iter()
            .next()
            .unwrap_or_default();
        let dir = self
            .dirs
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no access allowed to dir {name:?}")))?;
        let filter = FilterOptions {
            include_patterns: values(md, KEY_INCLUDE_PATTERNS),
            exclude_patterns: values(md, KEY_EXCLUDE_PATTERNS),
            follow_paths: values(md, KEY_FOLLOW_PATHS),
        };
        for (what, patterns) in [
            ("includepatterns", &filter.include_patterns),
            ("excludepatterns", &filter.exclude_patterns),
        ] {
            patternmatcher::PatternMatcher::new(patterns)
                .map_err(|e| Status::invalid_argument(format!("invalid {what}: {e}")))?;
        }
        let (tx, rx) = mpsc::channel(fsutil::QUEUE);
        let inbound = request.into_inner().map(|p| p.map_err(fsutil::Error::from));
        let mut conn = PacketConn::new(inbound, tx.clone());
        tokio::spawn(async move {
            if let Err(e) = fsutil::send(&mut conn, &dir, &filter).await {
                tracing::debug!(dir = %dir.display(), error = %e, "file sync failed");
                let _ = tx.send(Err(e.to_status())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TarStreamStream = PacketResponse;

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("failed to negotiate protocol"))
    }
}

/// What the daemon asks the client for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// The client's name for the directory (`--local name=...`).
    pub name: String,
    /// Patterns and follow paths, applied by the client.
    pub filter: FilterOptions,
    /// How the destination is updated.
    pub receive: ReceiveOptions,
}

/// Copies the client's directory `opts.name` into `dest` over the session.
pub async fn sync(caller: &Caller, dest: &Path, opts: &SyncOptions) -> Result<Stats, Error> {
    caller.require(DIFF_COPY_METHOD)?;
    receive(caller.channel(), dest, opts).await
}

/// Copies a directory served on `channel` into `dest` (`FileSync.DiffCopy`).
pub async fn receive(channel: Channel, dest: &Path, opts: &SyncOptions) -> Result<Stats, Error> {
    let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
    let outbound = ReceiverStream::new(rx).filter_map(|p| std::future::ready(p.ok()));
    let mut request = Request::new(outbound);
    let md = request.metadata_mut();
    append_values(md, KEY_INCLUDE_PATTERNS, &opts.filter.include_patterns)?;
    append_values(md, KEY_EXCLUDE_PATTERNS, &opts.filter.exclude_patterns)?;
    append_values(md, KEY_FOLLOW_PATHS, &opts.filter.follow_paths)?;
    append_values(md, KEY_DIR_NAME, std::slice::from_ref(&opts.name))?;
    let mut client = FileSyncClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let inbound = lazy_inbound(async move { client.diff_copy(request).await });
    let conn = PacketConn::new(inbound, tx);
    Ok(fsutil::receive(conn, dest, opts.receive.clone()).await?)
}

/// The response stream of a streaming call that is made only when first polled, so
/// that its request stream can already flow: a peer may answer (and send its response
/// headers) only after it has seen some of the request.
pub(crate) fn lazy_inbound<F, M>(call: F) -> impl Stream<Item = Result<M, fsutil::Error>> + Send
where
    F: Future<Output = Result<Response<Streaming<M>>, Status>> + Send + 'static,
    M: Send + 'static,
{
    futures::stream::once(call).flat_map(|opened| match opened {
        Ok(response) => response
            .into_inner()
            .map(|m| m.map_err(fsutil::Error::from))
            .left_stream(),
        Err(status) => futures::stream::iter([Err(fsutil::Error::from(status))]).right_stream(),
    })
}
