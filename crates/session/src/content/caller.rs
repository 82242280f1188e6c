//! The daemon's handle on one of the client's content stores.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use proto::containerd_content as api;
use proto::containerd_content::content_client::ContentClient;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use super::{
    ABORT_METHOD, CHUNK_SIZE, DELETE_METHOD, INFO_METHOD, READ_METHOD, STORE_ID_KEY, WRITE_METHOD,
    digest_hex, invalid_digest,
};
use crate::Error;
use crate::client::MAX_MESSAGE_SIZE;
use crate::manager::Caller;

/// How long a write waits for another writer of the same blob before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// A blob's bytes as they arrive; the last item is an error if they do not match the
/// digest.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// Whether `status` says the blob is missing (rather than the whole store: upstream's
/// client, like ours, answers `NotFound` with "unknown store <id>" for that).
fn is_missing_blob(status: &Status) -> bool {
    status.code() == Code::NotFound && !status.message().starts_with("unknown store")
}

/// What [`CallerStore::write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The blob was sent and committed.
    Written,
    /// The store had the blob already; nothing was sent (or a concurrent writer
    /// committed it first).
    AlreadyExists,
}

/// A content store of the session's client, by store id (upstream's
/// `sessioncontent.NewCallerStore`): blobs read and written over the session.
#[derive(Clone)]
pub struct CallerStore {
    caller: Caller,
    store_id: String,
    client: ContentClient<Channel>,
}

impl std::fmt::Debug for CallerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerStore")
            .field("session", &self.caller.id())
            .field("store_id", &self.store_id)
            .finish()
    }
}

/// One `Write` call: one response per request.
struct WriteCall {
    tx: Option<mpsc::Sender<api::WriteContentRequest>>,
    responses: Streaming<api::WriteContentResponse>,
}

impl WriteCall {
    async fn send(
        &mut self,
        req: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Status> {
        let sent = match &self.tx {
            Some(tx) => tx.send(req).await.is_ok(),
            None => false,
        };
        if !sent {
            // The request stream is gone: the call ended; its status says why.
            return Err(match self.responses.message().await {
                Err(status) => status,
                Ok(_) => Status::aborted("write stream closed"),
            });
        }
        match self.responses.message().await? {
            Some(response) => Ok(response),
            None => Err(Status::aborted("write stream ended without a response")),
        }
    }

    /// Ends the request stream (upstream's `CloseSend`).
    fn close(&mut self) {
        self.tx = None;
    }
}

impl CallerStore {
    /// The store `store_id` of `caller`'s client (`local:<dir>` for a local cache).
    pub fn new(caller: &Caller, store_id: impl Into<String>) -> CallerStore {
        let client = ContentClient::new(caller.channel())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        CallerStore {
            caller: caller.clone(),
            store_id: store_id.into(),
            client,
        }
    }

    /// The store id.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    fn error(&self, digest: &str, code: Code, message: impl Into<String>) -> Error {
        Error::Content {
            store: self.store_id.clone(),
            digest: digest.to_string(),
            code,
            message: message.into(),
        }
    }

    fn status_error(&self, digest: &str, status: &Status) -> Error {
        self.error(digest, status.code(), status.message())
    }

    fn check(&self, digest: &str, method: &str) -> Result<(), Error> {
        if digest_hex(digest).is_none() {
            return Err(self.error(digest, Code::InvalidArgument, invalid_digest(digest)));
        }
        self.caller.require(method)
    }

    /// `msg` with the store id in its metadata.
    fn request<T>(&self, msg: T) -> Result<Request<T>, Error> {
        let value = AsciiMetadataValue::try_from(self.store_id.as_str()).map_err(|_| {
            Error::Metadata(format!(
                "store id {:?} cannot be sent as {STORE_ID_KEY}",
                self.store_id
            ))
        })?;
        let mut request = Request::new(msg);
        request.metadata_mut().insert(STORE_ID_KEY, value);
        Ok(request)
    }

    /// The size of blob `digest`, `None` when the store does not have it (a store the
    /// client does not serve is an error with code `NotFound`).
    pub async fn info(&self, digest: &str) -> Result<Option<u64>, Error> {
        self.check(digest, INFO_METHOD)?;
        let request = self.request(api::InfoRequest {
            digest: digest.to_string(),
        })?;
        match self.client.clone().info(request).await {
            Ok(response) => {
                let size = response.into_inner().info.map_or(0, |i| i.size);
                u64::try_from(size).map(Some).map_err(|_| {
                    self.error(digest, Code::Internal, format!("negative size {size}"))
                })
            }
            Err(status) if is_missing_blob(&status) => Ok(None),
            Err(status) => Err(self.status_error(digest, &status)),
        }
    }

    /// Whether the store has blob `digest`.
    pub async fn exists(&self, digest: &str) -> Result<bool, Error> {
        Ok(self.info(digest).await?.is_some())
    }

    async fn open_read(
        &self,
        digest: &str,
        offset: u64,
        size: u64,
    ) -> Result<Streaming<api::ReadContentResponse>, Error> {
        self.check(digest, READ_METHOD)?;
        let to_i64 = |v: u64| {
            i64::try_from(v)
                .map_err(|_| self.error(digest, Code::InvalidArgument, "range too large"))
        };
        let request = self.request(api::ReadContentRequest {
            digest: digest.to_string(),
            offset: to_i64(offset)?,
            size: to_i64(size)?,
        })?;
        self.client
            .clone()
            .read(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(digest, &status))
    }

    /// The whole blob `digest`, streamed; the stream ends with an error if the bytes do
    /// not hash to the digest (`DataLoss`) or arrive out of order.
    pub async fn read_stream(&self, digest: &str) -> Result<BlobStream, Error> {
        let responses = self.open_read(digest, 0, 0).await?;
        struct State {
            responses: Streaming<api::ReadContentResponse>,
            hasher: Sha256,
            offset: u64,
            done: bool,
            this: CallerStore,
            digest: String,
        }
        let state = State {
            responses,
            hasher: Sha256::new(),
            offset: 0,
            done: false,
            this: self.clone(),
            digest: digest.to_string(),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let item = match st.responses.message().await {
                Ok(Some(m)) if u64::try_from(m.offset).ok() != Some(st.offset) => {
                    Err(st.this.error(
                        &st.digest,
                        Code::DataLoss,
                        format!(
                            "chunk at offset {} where {} was expected",
                            m.offset, st.offset
                        ),
                    ))
                }
                Ok(Some(m)) => {
                    st.hasher.update(&m.data);
                    st.offset += m.data.len() as u64;
                    return Some((Ok(Bytes::from(m.data)), st));
                }
                Ok(None) => {
                    let got = format!("sha256:{}", hex::encode(st.hasher.clone().finalize()));
                    if got == st.digest {
                        return None;
                    }
                    Err(st.this.error(
                        &st.digest,
                        Code::DataLoss,
                        format!("content read ({} bytes) has digest {got}", st.offset),
                    ))
                }
                Err(status) => Err(st.this.status_error(&st.digest, &status)),
            };
            st.done = true;
            Some((item, st))
        });
        Ok(Box::pin(stream))
    }

    /// The whole blob `digest`, checked against its digest. A missing blob is an
    /// [`Error::Content`] with code `NotFound`.
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let mut stream = self.read_stream(digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Up to `len` bytes of blob `digest` from `offset` (fewer at its end; not checked
    /// against the digest).
    pub async fn read_range(&self, digest: &str, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut responses = self.open_read(digest, offset, len).await?;
        let mut out = Vec::new();
        loop {
            match responses.message().await {
                Ok(Some(m)) => out.extend_from_slice(&m.data),
                Ok(None) => return Ok(out),
                Err(status) => return Err(self.status_error(digest, &status)),
            }
        }
    }

    /// Sends `data` (which must be `size` bytes hashing to `digest`) as blob `digest`:
    /// STAT, WRITEs of at most [`CHUNK_SIZE`], COMMIT. Nothing is sent when the store has
    /// the blob. An unfinished ingest of the blob left by an earlier attempt is started
    /// over. Waits while another writer holds the blob's ingest. On failure the ingest is
    /// aborted; the store never has a blob that does not match its digest.
    pub async fn write<S>(&self, digest: &str, size: u64, data: S) -> Result<WriteOutcome, Error>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        self.check(digest, WRITE_METHOD)?;
        let total = i64::try_from(size)
            .map_err(|_| self.error(digest, Code::InvalidArgument, "size too large"))?;
        let Some((mut call, offset)) = self.open_write(digest, total).await? else {
            tracing::debug!(store = %self.store_id, %digest, "blob already in the client's store");
            return Ok(WriteOutcome::AlreadyExists);
        };
        if offset > 0 {
            tracing::debug!(store = %self.store_id, %digest, offset, "restarting an unfinished ingest");
        }
        let result = self.send_data(&mut call, digest, size, data).await;
        call.close();
        match result {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.abort(digest).await;
                Err(e)
            }
        }
    }

    /// [`CallerStore::write`] of `data` in memory.
    pub async fn write_bytes(&self, digest: &str, data: &[u8]) -> Result<WriteOutcome, Error> {
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(CHUNK_SIZE)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        self.write(digest, data.len() as u64, futures::stream::iter(chunks))
            .await
    }

    /// [`CallerStore::write`] of what `reader` yields.
    pub async fn write_reader<R>(
        &self,
        digest: &str,
        size: u64,
        reader: R,
    ) -> Result<WriteOutcome, Error>
    where
        R: AsyncRead + Send + Unpin,
    {
        let chunks = futures::stream::try_unfold(reader, |mut reader| async move {
            let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
            let n = reader.read_buf(&mut buf).await?;
            Ok((n > 0).then(|| (buf.freeze(), reader)))
        });
        self.write(digest, size, chunks).await
    }

    /// Removes blob `digest` from the store; false when it was not there.
    pub async fn delete(&self, digest: &str) -> Result<bool, Error> {
        self.check(digest, DELETE_METHOD)?;
        let request = self.request(api::DeleteContentRequest {
            digest: digest.to_string(),
        })?;
        match self.client.clone().delete(request).await {
            Ok(_) => Ok(true),
            Err(status) if is_missing_blob(&status) => Ok(false),
            Err(status) => Err(self.status_error(digest, &status)),
        }
    }

    /// Drops the ingest of `digest`, if any (best effort).
    async fn abort(&self, digest: &str) {
        if !self.caller.supports(ABORT_METHOD) || self.caller.is_closed() {
            return;
        }
        let Ok(request) = self.request(api::AbortRequest {
            r#ref: digest.to_string(),
        }) else {
            return;
        };
        if let Err(status) = self.client.clone().abort(request).await {
            if status.code() != Code::NotFound {
                tracing::debug!(store = %self.store_id, %digest, error = %status, "cannot abort ingest");
            }
        }
    }

    /// Opens the ingest of `digest` (its ref is the digest): the call and the offset
    /// the store has, or `None` when it has the blob. Retries while the ref is locked.
    async fn open_write(
        &self,
        digest: &str,
        total: i64,
    ) -> Result<Option<(WriteCall, u64)>, Error> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut backoff = Duration::from_millis(20);
        loop {
            let status = match self.try_open_write(digest, total).await? {
                Ok(opened) => return Ok(Some(opened)),
                Err(status) => status,
            };
            match status.code() {
                Code::AlreadyExists => return Ok(None),
                Code::Unavailable
                    if !self.caller.is_closed() && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(store = %self.store_id, %digest, error = %status, "blob being written, waiting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                _ => return Err(self.status_error(digest, &status)),
            }
        }
    }

    async fn try_open_write(
        &self,
        digest: &str,
        total: i64,
    ) -> Result<Result<(WriteCall, u64), Status>, Error> {
        let (tx, rx) = mpsc::channel(2);
        let stat = api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: digest.to_string(),
            total,
            expected: digest.to_string(),
            ..Default::default()
        };
        // Queued before the call: a server may answer (headers included) only once it
        // has read the first message.
        if tx.send(stat).await.is_err() {
            return Ok(Err(Status::internal("write request stream closed")));
        }
        let request = self.request(ReceiverStream::new(rx))?;
        let mut responses = match self.client.clone().write(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        let stat = match responses.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Ok(Err(Status::aborted(
                    "write stream ended without a response",
                )));
            }
            Err(status) => return Ok(Err(status)),
        };
        let offset = u64::try_from(stat.offset).unwrap_or(0);
        let call = WriteCall {
            tx: Some(tx),
            responses,
        };
        Ok(Ok((call, offset)))
    }

    async fn send_data<S>(
        &self,
        call: &mut WriteCall,
        digest: &str,
        size: u64,
        data: S,
    ) -> Result<WriteOutcome, Error>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        let mut data = std::pin::pin!(data);
        let mut pending = BytesMut::new();
        let mut written = 0u64;
        let mut ended = false;
        loop {
            while !ended && pending.len() < CHUNK_SIZE {
                match data.next().await {
                    Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Err(self.error(
                            digest,
                            Code::Internal,
                            format!("cannot read the blob to send: {e}"),
                        ));
                    }
                    None => ended = true,
                }
            }
            if pending.is_empty() {
                break;
            }
            let piece = pending.split_to(pending.len().min(CHUNK_SIZE));
            let len = piece.len() as u64;
            if written + len > size {
                return Err(self.error(
                    digest,
                    Code::InvalidArgument,
                    format!("more data than the blob's size {size}"),
                ));
            }
            let req = api::WriteContentRequest {
                action: api::WriteAction::Write as i32,
                offset: written as i64,
                data: piece.to_vec(),
                ..Default::default()
            };
            let response = call
                .send(req)
                .await
                .map_err(|s| self.status_error(digest, &s))?;
            if u64::try_from(response.offset).ok() != Some(written + len) {
                return Err(self.error(
                    digest,
                    Code::DataLoss,
                    format!(
                        "short write: store at offset {} after writing {} bytes at {written}",
                        response.offset, len
                    ),
                ));
            }
            written += len;
        }
        if written != size {
            return Err(self.error(
                digest,
                Code::InvalidArgument,
                format!("{written} bytes of data for a blob of {size} bytes"),
            ));
        }
        let commit = api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            total: size as i64,
            offset: written as i64,
            expected: digest.to_string(),
            ..Default::default()
        };
        let response = match call.send(commit).await {
            Ok(r) => r,
            Err(status) if status.code() == Code::AlreadyExists => {
                return Ok(WriteOutcome::AlreadyExists);
            }
            Err(status) => return Err(self.status_error(digest, &status)),
        };
        if u64::try_from(response.offset).ok() != Some(size) || response.digest != digest {
            return Err(self.error(
                digest,
                Code::DataLoss,
                format!(
                    "commit answered {} bytes with digest {:?}",
                    response.offset, response.digest
                ),
            ));
        }
        tracing::debug!(store = %self.store_id, %digest, size, "blob written to the client's store");
        Ok(WriteOutcome::Written)
    }
}
