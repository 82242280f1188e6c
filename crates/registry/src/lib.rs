//! Registry access for the worker: resolve and pull images into the content store, push
//! them back, and unpack pulled images into snapshots.
//!
//! Built on `oci-client` (HTTP, token auth, blob streaming). What this crate adds: host
//! configuration (plain HTTP for loopback and configured hosts, skipping TLS verification
//! for insecure ones), credentials per call (a build's client session) or from a
//! daemon-wide callback, with one HTTP client per set of credentials, platform
//! selection from indexes, verified storage of every blob, and [`unpack`], which applies
//! layers once per chain ID so that images sharing layers share snapshots.
//!
//! It does not decide what to pull (the source op does) or garbage-collect (the cache does).
#![forbid(unsafe_code)]

mod hosts;
mod pull;
mod push;
mod unpack;

pub use hosts::{CredentialSource, Credentials, CredentialsFn, HostConfig, Hosts, auth_host};
pub use pull::{PulledImage, Registry, select_manifest};
pub use push::BLOB_SOURCES_TABLE;
pub use unpack::{LAYER_BLOBS_TABLE, LayerBlob, chain_ids, layer_blobs, unpack, unpack_layers};

/// Errors of registry access and unpacking. Each names the reference, host or digest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("{reference}: {reason}")]
    Registry { reference: String, reason: String },
    /// The registry refused the credentials used (or their absence).
    #[error("{reference}: unauthorized: {reason}")]
    Unauthorized { reference: String, reason: String },
    /// Looking up credentials failed (the client session did not answer, say).
    #[error("credentials for {host}: {reason}")]
    Credentials { host: String, reason: String },
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: invalid {what}: {reason}")]
    BadDocument {
        reference: String,
        what: &'static str,
        reason: String,
    },
    #[error("{reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("layer {layer}: {reason}")]
    Unpack { layer: String, reason: String },
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Archive(#[from] archive::Error),
    #[error("internal: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
