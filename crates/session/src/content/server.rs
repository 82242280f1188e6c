//! The client's `Content` service: requests routed to layout directories by store id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use proto::containerd_content as api;
use proto::containerd_content::content_server::{Content, ContentServer};
use proto::prost_types::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::local::{BlobInfo, Ingest, IngestStatus, LayoutStore, read_chunk};
use super::{CHUNK_SIZE, METHODS, STORE_ID_KEY, digest_hex, invalid_digest, local_store_id};
use crate::client::{Attachable, MAX_MESSAGE_SIZE, Services};

/// The content stores a client serves, by store id, each an OCI image layout
/// directory (upstream's `sessioncontent.NewAttachable` over containerd local stores).
#[derive(Clone, Default)]
pub struct ContentStores {
    stores: Arc<HashMap<String, Arc<LayoutStore>>>,
}

impl std::fmt::Debug for ContentStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.stores.keys().collect();
        ids.sort();
        f.debug_struct("ContentStores").field("ids", &ids).finish()
    }
}

impl ContentStores {
    /// No stores yet.
    pub fn new() -> ContentStores {
        ContentStores::default()
    }

    /// Serves the layout directory `dir` as store `id` (replacing a store with that id).
    /// Nothing is created until a blob is written.
    pub fn store(mut self, id: impl Into<String>, dir: impl Into<PathBuf>) -> ContentStores {
        let store = Arc::new(LayoutStore::new(dir.into()));
        Arc::make_mut(&mut self.stores).insert(id.into(), store);
        self
    }

    /// Serves `dir` as the local cache store `local:<dir>` ([`local_store_id`]); `dir` as
    /// the cache options give it (`dest=` of an export, `src=` of an import).
    pub fn local(self, dir: &str) -> ContentStores {
        self.store(local_store_id(dir), dir)
    }

    /// The store ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.stores.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether there are no stores (a client then need not serve the service).
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    fn choose(&self, md: &MetadataMap) -> Result<Arc<LayoutStore>, Status> {
        let id = md
            .get(STORE_ID_KEY)
            .ok_or_else(|| {
                Status::invalid_argument(format!("request lacks metadata {STORE_ID_KEY:?}"))
            })?
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{STORE_ID_KEY} is not ASCII")))?;
        self.stores
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unknown store {id}")))
    }
}

impl Attachable for ContentStores {
    fn register(self: Box<Self>, services: &mut Services) {
        let server = ContentServer::new(*self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        services.add(server, &METHODS);
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("content store task failed: {e}")))?
}

fn checked(digest: &str) -> Result<(), Status> {
    match digest_hex(digest) {
        Some(_) => Ok(()),
        None => Err(Status::invalid_argument(invalid_digest(digest))),
    }
}

fn timestamp(t: Option<SystemTime>) -> Option<Timestamp> {
    t.map(Timestamp::from)
}

fn info_message(digest: String, info: &BlobInfo) -> api::Info {
    api::Info {
        digest,
        size: info.size as i64,
        created_at: timestamp(info.created),
        updated_at: timestamp(info.updated),
        labels: Default::default(),
    }
}

fn status_message(s: &IngestStatus, expected: String) -> api::Status {
    api::Status {
        started_at: timestamp(Some(s.started_at)),
        updated_at: timestamp(Some(s.updated_at)),
        r#ref: s.r#ref.clone(),
        offset: s.offset as i64,
        total: s.total,
        expected,
    }
}

fn not_found(digest: &str) -> Status {
    Status::not_found(format!("content {digest}: not found"))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentStores {
    async fn info(
        &self,
        request: Request<api::InfoRequest>,
    ) -> Result<Response<api::InfoResponse>, Status> {
        let store = self.choose(request.metadata())?;
        let digest = request.into_inner().digest;
        checked(&digest)?;
        let d = digest.clone();
        let info = blocking(move || store.info(&d)).await?;
        let info = info.ok_or_else(|| not_found(&digest))?;
        Ok(Response::new(api::InfoResponse {
            info: Some(info_message(digest, &info)),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateRequest>,
    ) -> Result<Response<api::UpdateResponse>, Status> {
        self.choose(request.metadata())?;
        let digest = request
            .into_inner()
            .info
            .map(|i| i.digest)
            .unwrap_or_default();
        checked(&digest)?;
        Err(Status::failed_precondition(
            "update not supported on immutable content store",
        ))
    }

    type ListStream = BoxStream<api::ListContentResponse>;

    async fn list(
        &self,
        request: Request<api::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let store = self.choose(request.metadata())?;
        if !request.get_ref().filters.is_empty() {
            return Err(Status::invalid_argument(
                "content filters are not supported by this store",
            ));
        }
        let blobs = blocking(move || store.list()).await?;
        let batches: Vec<Result<api::ListContentResponse, Status>> = blobs
            .chunks(100)
            .map(|batch| {
                Ok(api::ListContentResponse {
                    info: batch
                        .iter()
                        .map(|(d, i)| info_message(d.clone(), i))
                        .collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(
        &self,
        request: Request<api::DeleteContentRequest>,
    ) -> Result<Response<()>, Status> {
        let store = self.choose(request.metadata())?;
        let digest = request.into_inner().digest;
        checked(&digest)?;
        let d = digest.clone();
        if blocking(move || store.delete(&d)).await? {
            tracing::debug!(%digest, "content deleted");
            Ok(Response::new(()))
        } else {
            Err(not_found(&digest))
        }
    }

    type ReadStream = BoxStream<api::ReadContentResponse>;

    async fn read(
        &self,
        request: Request<api::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let store = self.choose(request.metadata())?;
        let req = request.into_inner();
        checked(&req.digest)?;
        let d = req.digest.clone();
        let (file, size) = blocking(move || store.open(&d))
            .await?
            .ok_or_else(|| not_found(&req.digest))?;
        let offset = req.offset.max(0) as u64;
        if offset > size {
            return Err(Status::out_of_range(format!(
                "read past object length {size} bytes"
            )));
        }
        let end = match u64::try_from(req.size) {
            Ok(n) if n > 0 => offset.saturating_add(n).min(size),
            _ => size,
        };
        let file = Arc::new(file);
        let chunks = futures::stream::try_unfold(offset, move |pos| {
            let file = file.clone();
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let len = (end - pos).min(CHUNK_SIZE as u64) as usize;
                let data = blocking(move || {
                    read_chunk(&file, pos, len)
                        .map_err(|e| super::local::io_status("read blob", &e))
                })
                .await?;
                if data.is_empty() {
                    return Err(Status::data_loss("blob shorter than its size"));
                }
                let next = pos + data.len() as u64;
                let message = api::ReadContentResponse {
                    offset: pos as i64,
                    data,
                };
                Ok(Some((message, next)))
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn status(
        &self,
        request: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        let store = self.choose(request.metadata())?;
        let r = request.into_inner().r#ref;
        let r2 = r.clone();
        let status = blocking(move || store.status(&r2))
            .await?
            .ok_or_else(|| Status::not_found(format!("could not get status for ref {r:?}")))?;
        Ok(Response::new(api::StatusResponse {
            status: Some(status_message(&status, String::new())),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<api::ListStatusesRequest>,
    ) -> Result<Response<api::ListStatusesResponse>, Status> {
        let store = self.choose(request.metadata())?;
        if !request.get_ref().filters.is_empty() {
            return Err(Status::invalid_argument(
                "status filters are not supported by this store",
            ));
        }
        let statuses = blocking(move || store.list_statuses()).await?;
        Ok(Response::new(api::ListStatusesResponse {
            statuses: statuses
                .iter()
                .map(|s| status_message(s, String::new()))
                .collect(),
        }))
    }

    type WriteStream = BoxStream<api::WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<api::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let store = self.choose(request.metadata())?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut session = WriteSession {
                store,
                ingest: None,
                tx: tx.clone(),
            };
            let result = session.run(inbound).await;
            if let Some(ingest) = session.ingest.take() {
                // Closing writes the ingest's status files.
                let _ = tokio::task::spawn_blocking(move || drop(ingest)).await;
            }
            if let Err(status) = result {
                if status.code() != tonic::Code::AlreadyExists {
                    tracing::debug!(error = %status, "content write failed");
                }
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, request: Request<api::AbortRequest>) -> Result<Response<()>, Status> {
        let store = self.choose(request.metadata())?;
        let r = request.into_inner().r#ref;
        let r2 = r.clone();
        if blocking(move || store.abort(&r2)).await? {
            Ok(Response::new(()))
        } else {
            Err(Status::not_found(format!("ingest ref {r:?}: not found")))
        }
    }
}

/// One `Write` stream: containerd's protocol, one response per request.
struct WriteSession {
    store: Arc<LayoutStore>,
    ingest: Option<Ingest>,
    tx: mpsc::Sender<Result<api::WriteContentResponse, Status>>,
}

impl WriteSession {
    async fn run(
        &mut self,
        mut inbound: Streaming<api::WriteContentRequest>,
    ) -> Result<(), Status> {
        let Some(mut req) = inbound.message().await? else {
            return Ok(());
        };
        if req.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let r#ref = req.r#ref.clone();
        let mut total = req.total;
        let mut expected = (!req.expected.is_empty()).then(|| req.expected.clone());
        if let Some(e) = &expected {
            checked(e)?;
        }
        let (store, r2, e2) = (self.store.clone(), r#ref.clone(), expected.clone());
        let ingest = blocking(move || store.writer(&r2, total, e2.as_deref())).await?;
        tracing::debug!(
            r#ref,
            total,
            ?expected,
            offset = ingest.offset(),
            "content write started"
        );
        self.ingest = Some(ingest);

        loop {
            let action = api::WriteAction::try_from(req.action).map_err(|_| {
                Status::invalid_argument(format!("unknown write action {}", req.action))
            })?;
            if !req.expected.is_empty() {
                checked(&req.expected)?;
                let (store, e) = (self.store.clone(), req.expected.clone());
                if blocking(move || store.info(&e)).await?.is_some() {
                    if let Some(ingest) = self.ingest.take() {
                        let store = self.store.clone();
                        let r = r#ref.clone();
                        blocking(move || {
                            drop(ingest);
                            store.abort(&r)
                        })
                        .await?;
                    }
                    return Err(Status::already_exists(format!(
                        "blob with expected digest {} exists",
                        req.expected
                    )));
                }
                expected = Some(req.expected.clone());
            }
            if req.total > 0 {
                total = req.total;
            }
            let mut ingest = self
                .ingest
                .take()
                .ok_or_else(|| Status::failed_precondition("write stream already finished"))?;
            ingest.set_total(total);
            let data = std::mem::take(&mut req.data);
            let offset = req.offset;
            let commit_expected = expected.clone();
            let (ingest, response) = blocking(move || {
                let mut ingest = ingest;
                let result = apply(&mut ingest, action, offset, &data, total);
                match (result, action) {
                    (Err(e), _) => Ok((Some(ingest), Err(e))),
                    (Ok(mut msg), api::WriteAction::Commit) => {
                        let committed = ingest.commit(total, commit_expected.as_deref());
                        Ok((
                            None,
                            committed.map(|digest| {
                                msg.digest = digest;
                                msg
                            }),
                        ))
                    }
                    (Ok(msg), _) => Ok((Some(ingest), Ok(msg))),
                }
            })
            .await?;
            self.ingest = ingest;
            let msg = response?;
            if action == api::WriteAction::Commit {
                tracing::debug!(r#ref, digest = %msg.digest, size = msg.offset, "content committed");
            }
            if self.tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
            if action == api::WriteAction::Commit {
                return Ok(());
            }
            match inbound.message().await? {
                Some(next) => req = next,
                None => return Ok(()),
            }
        }
    }
}

/// Applies one request to the ingest (the commit itself aside) and builds its response.
fn apply(
    ingest: &mut Ingest,
    action: api::WriteAction,
    offset: i64,
    data: &[u8],
    total: i64,
) -> Result<api::WriteContentResponse, Status> {
    let status = ingest.status();
    let mut msg = api::WriteContentResponse {
        action: action as i32,
        offset: status.offset as i64,
        ..Default::default()
    };
    match action {
        api::WriteAction::Stat => {
            msg.digest = ingest.digest();
            msg.started_at = timestamp(Some(status.started_at));
            msg.updated_at = timestamp(Some(status.updated_at));
            msg.total = total;
        }
        api::WriteAction::Write | api::WriteAction::Commit => {
            if offset < 0 {
                return Err(Status::out_of_range(format!(
                    "negative write offset {offset}"
                )));
            }
            if offset > 0 && offset as u64 != ingest.offset() {
                return Err(Status::out_of_range(format!(
                    "write @{offset} must occur at current offset {}",
                    ingest.offset()
                )));
            }
            if offset == 0 && ingest.offset() > 0 {
                ingest.truncate()?;
            }
            if !data.is_empty() {
                ingest.write(data)?;
            }
            msg.offset = ingest.offset() as i64;
            msg.digest = ingest.digest();
            if action == api::WriteAction::Commit {
                let now = ingest.status();
                msg.started_at = timestamp(Some(now.started_at));
                msg.updated_at = timestamp(Some(now.updated_at));
                msg.total = total;
            }
        }
    }
    Ok(msg)
}
