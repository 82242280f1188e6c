//! BuildKit sessions, both ends, wire-compatible with upstream v0.32.
//!
//! A build client opens the bidirectional `Control.Session` stream on the daemon and
//! turns it into a byte pipe ([`pipe`]); over that pipe the **client serves gRPC**
//! (HTTP/2 without TLS) and the **daemon is the gRPC client**. Through it the daemon
//! reads the client's local directories, sends exporter output back, reads and writes
//! the client's content stores, and asks for secrets and registry credentials.
//!
//! - Client end: [`Session`] collects [`Attachable`] services ([`FileSyncProvider`],
//!   [`FileSendTarget`], [`ContentStores`], [`SecretsProvider`], [`AuthProvider`],
//!   [`SshAgentProvider`]) and runs them over the stream; health checks are always
//!   served.
//! - Daemon end: [`SessionManager`] takes each incoming stream, dials back, polls
//!   health and hands out [`Caller`]s by session id; [`filesync::sync`],
//!   [`filesend::copy_to_caller`], [`filesend::copy_file_writer`], [`CallerStore`],
//!   [`secrets::get_secret`], [`auth::credentials`], [`sshforward::check_agent`] and
//!   [`sshforward::forward_agent`] use them.
//! - [`fsutil`]: the file transfer protocol itself (sender, receiver, walk order,
//!   include/exclude filtering, Go `os.FileMode` bits), independent of gRPC.
//!
//! This crate does not implement the Control service (only the body of its `Session`
//! handler, [`SessionManager::handle_session`]), nor uploads, the session exporter,
//! nor credential helpers and token fetching, nor SSH key files (only
//! agent sockets are forwarded).

pub mod auth;
pub mod client;
pub mod content;
pub mod filesend;
pub mod filesync;
pub mod fsutil;
pub mod manager;
pub mod metadata;
pub mod pipe;
pub mod secrets;
pub mod sshforward;

pub use auth::AuthProvider;
pub use client::{Attachable, Services, Session};
pub use content::{CallerStore, ContentStores};
pub use filesend::FileSendTarget;
pub use filesync::FileSyncProvider;
pub use manager::{Caller, HealthConfig, SessionManager};
pub use metadata::SessionInfo;
pub use secrets::SecretsProvider;
pub use sshforward::SshAgentProvider;

/// A session failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Session metadata that is missing or cannot be sent as a header.
    #[error("invalid session metadata: {0}")]
    Metadata(String),
    /// No session with this id arrived in time.
    #[error("no active session for {0}")]
    NoSession(String),
    /// A session with this id is already open.
    #[error("session {0} already exists")]
    Duplicate(String),
    /// The client does not serve a method the daemon needs.
    #[error("method {0} not supported by the client")]
    Unsupported(String),
    /// The session (or the stream of one call) ended.
    #[error("session closed")]
    Closed,
    /// A malformed client configuration (Docker `config.json`).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A call over the session failed.
    #[error("rpc failed: {0}")]
    Status(Box<tonic::Status>),
    /// The gRPC transport failed (serving or dialing over the tunnel).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A file transfer failed.
    #[error(transparent)]
    Transfer(#[from] fsutil::Error),
    /// A call to one of the client's content stores failed; `code` is the gRPC code
    /// (`NotFound` for a missing blob, `InvalidArgument` for a malformed digest,
    /// `FailedPrecondition` for content that does not match its digest or size).
    #[error("content store {store}: blob {digest}: {message}")]
    Content {
        /// The store id (`local:<dir>`, ...).
        store: String,
        /// The blob the call was about.
        digest: String,
        /// The gRPC code of the failure.
        code: tonic::Code,
        /// What went wrong.
        message: String,
    },
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(Box::new(status))
    }
}

impl Error {
    /// The gRPC status to report this error with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Error::Status(s) => (**s).clone(),
            Error::Transfer(e) => e.to_status(),
            Error::Metadata(_) | Error::Config(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Error::NoSession(_) => tonic::Status::not_found(self.to_string()),
            Error::Duplicate(_) => tonic::Status::already_exists(self.to_string()),
            Error::Unsupported(_) => tonic::Status::unimplemented(self.to_string()),
            Error::Closed => tonic::Status::cancelled(self.to_string()),
            Error::Transport(_) => tonic::Status::unavailable(self.to_string()),
            Error::Content { code, .. } => tonic::Status::new(*code, self.to_string()),
        }
    }
}
