//! fsutil's diff-copy protocol (`fsutil.types.Packet`), both ends, over any pair of
//! packet streams.
//!
//! The **sender** walks a directory in fsutil's order (entries of a directory sorted by
//! name byte-wise, each directory followed by its contents), applying include/exclude
//! patterns, and sends one STAT per entry and then an empty STAT. Each STAT has an
//! implicit id, its index in that sequence. The **receiver** compares the stream with
//! what its destination already holds, asks for the contents of regular files it needs
//! with REQ{id}, gets DATA{id, chunk}… DATA{id, empty}, deletes what the sender does not
//! have, then sends FIN; the sender answers FIN. Either side may send ERR{data=message}.
//!
//! [`send`] and [`receive`] run the two ends over a [`PacketConn`]; the gRPC glue for
//! FileSync and FileSend lives in [`crate::filesync`] and [`crate::filesend`].
//!
//! Upstream: `github.com/tonistiigi/fsutil` (`send.go`, `receive.go`, `filter.go`,
//! `followlinks.go`, `validator.go`, `diskwriter.go`).

pub mod mode;
mod path;
mod receive;
mod root;
mod send;
mod stat;
mod walk;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::fsutil_types::Packet;
use proto::fsutil_types::packet::PacketType;
use tokio::sync::mpsc;

pub use receive::{Differ, ReceiveOptions, Stats, Written, receive, receive_tracked};
pub use send::{Sent, send};
pub use walk::FilterOptions;

/// Size of the DATA chunks a sender reads and sends. fsutil sends 32 KiB; any
/// receiver takes bigger ones (each is one gRPC message, and upstream accepts 4 MiB),
/// and every packet costs its way through the session tunnel, so a large file goes in
/// fewer, larger pieces.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Packets a transfer queues between its file system threads and its stream, each way:
/// with DATA of [`CHUNK_SIZE`], at most 8 MiB of file data waits in memory.
pub(crate) const QUEUE: usize = 32;

/// A failed transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other end sent ERR with this message.
    #[error("error from peer: {0}")]
    Peer(String),
    /// A path from the wire that is not clean, relative and inside the destination.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as received (or as found while walking).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A STAT that does not follow fsutil's order (or whose parent was never sent).
    #[error("changes out of order: {path:?} after {previous:?}")]
    OutOfOrder {
        /// The offending path.
        path: String,
        /// The last path accepted in its directory.
        previous: String,
    },
    /// A hard link whose target was not sent before it as a regular file.
    #[error("invalid hard link {path:?} to unknown path {target:?}")]
    InvalidLink {
        /// The link.
        path: String,
        /// Its claimed first path.
        target: String,
    },
    /// A REQ or DATA for an id that is not a requestable (or requested) file.
    #[error("invalid file id {0}")]
    UnknownId(u32),
    /// A packet that makes no sense at this point of the protocol.
    #[error("unexpected packet: {0}")]
    Unexpected(String),
    /// The stream ended before FIN.
    #[error("stream ended before the transfer finished")]
    UnexpectedEof,
    /// The local end of the stream is gone (the RPC ended).
    #[error("transfer stream closed")]
    Closed,
    /// An include or exclude pattern that does not compile.
    #[error("invalid pattern: {0}")]
    Pattern(#[from] patternmatcher::Error),
    /// A file system operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path (relative to the root for received paths).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The RPC carrying the packets failed.
    #[error("rpc failed: {0}")]
    Status(Box<tonic::Status>),
    /// A worker thread died (a bug, reported instead of propagating a panic).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid_path(path: &str, reason: &'static str) -> Self {
        Error::InvalidPath {
            path: path.to_string(),
            reason,
        }
    }

    /// The gRPC status this error is reported with when it ends an RPC we serve.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Error::Status(s) => (**s).clone(),
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                tonic::Status::not_found(self.to_string())
            }
            Error::Pattern(_) => tonic::Status::invalid_argument(self.to_string()),
            Error::Closed => tonic::Status::cancelled(self.to_string()),
            _ => tonic::Status::unknown(self.to_string()),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(Box::new(status))
    }
}

/// What each end sends into: the response stream of a served RPC or the request stream
/// of a call. An `Err` item ends a served RPC with that status.
pub type PacketSender = mpsc::Sender<Result<Packet, tonic::Status>>;

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Error>> + Send>>;

/// One end of a packet exchange: the packets coming in and a sender for going out.
pub struct PacketConn {
    inbound: PacketStream,
    outbound: PacketSender,
}

impl std::fmt::Debug for PacketConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketConn").finish_non_exhaustive()
    }
}

impl PacketConn {
    /// Joins an incoming packet stream with an outgoing sender.
    pub fn new<S>(inbound: S, outbound: PacketSender) -> Self
    where
        S: Stream<Item = Result<Packet, Error>> + Send + 'static,
    {
        PacketConn {
            inbound: Box::pin(inbound),
            outbound,
        }
    }

    /// The next packet, `None` at the end of the stream.
    async fn recv(&mut self) -> Result<Option<Packet>, Error> {
        self.inbound.next().await.transpose()
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Error> {
        self.outbound
            .send(Ok(packet))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Half-closes the outgoing side and waits for the peer to end the stream; for an
    /// end that made the call, after the transfer finished. Packets still arriving are
    /// ignored; an error status ending the stream is returned.
    pub async fn close(self) -> Result<(), Error> {
        let PacketConn {
            mut inbound,
            outbound,
        } = self;
        drop(outbound);
        while let Some(item) = inbound.next().await {
            item?;
        }
        Ok(())
    }

    /// Why the outgoing side found the stream closed: the first error the incoming side
    /// reports within a short wait (typically the status that ended the RPC), if any.
    async fn why_closed(&mut self) -> Option<Error> {
        let first_error = async {
            while let Some(item) = self.inbound.next().await {
                if let Err(e) = item {
                    return Some(e);
                }
            }
            None
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), first_error)
            .await
            .ok()
            .flatten()
    }

    /// Tells the peer about a failure, best effort (the stream may already be gone).
    async fn send_err(&mut self, err: &Error) {
        let _ = self.outbound.send(Ok(err_packet(&err.to_string()))).await;
    }
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Packet::default()
    }
}

fn err_packet(message: &str) -> Packet {
    Packet {
        data: message.as_bytes().to_vec(),
        ..packet(PacketType::PacketErr)
    }
}

/// The packet's type, or an error for a value the protocol does not define.
fn packet_type(p: &Packet) -> Result<PacketType, Error> {
    PacketType::try_from(p.r#type)
        .map_err(|_| Error::Unexpected(format!("unknown packet type {}", p.r#type)))
}

/// Joins a blocking worker, turning a panic into an error rather than propagating it.
async fn join<T>(handle: tokio::task::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    match handle.await {
        Ok(result) => result,
        Err(e) => Err(Error::Internal(format!("file transfer worker failed: {e}"))),
    }
}
