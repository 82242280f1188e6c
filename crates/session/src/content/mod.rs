//! Content stores served by the client: containerd's
//! `containerd.services.content.v1.Content` over the session, backed by OCI image layout
//! directories. Upstream uses them for `--export-cache type=local,dest=DIR`,
//! `--import-cache type=local,src=DIR` (and `--oci-layout` build contexts).
//!
//! # Protocol
//!
//! The client serves one `Content` service for all its stores ([`ContentStores`]); each
//! request names its store in the metadata key [`STORE_ID_KEY`]
//! (`buildkit-attachable-store-id`). A local cache directory is the store
//! `local:<dir>` ([`local_store_id`]), `<dir>` spelled exactly as in the cache
//! options, so that the daemon, which only sees those options, can name it too. The
//! daemon reaches a store through [`CallerStore`]:
//!
//! - `Info` gives a blob's size (`NotFound` when absent); `Read` streams its bytes from
//!   an offset in messages of at most [`CHUNK_SIZE`], each carrying its offset.
//! - `Write` is one bidirectional stream per blob, one response per request. The first
//!   message is a `STAT` naming the ingest (`ref`) with the expected size (`total`) and
//!   digest (`expected`); it answers how much of that ingest the store already has
//!   (`offset`), or `AlreadyExists` when the store has the blob. `WRITE` messages
//!   append `data` at `offset` (the current end; offset 0 starts over). `COMMIT`
//!   checks size and digest (`FailedPrecondition` otherwise), moves the ingest to
//!   `blobs/sha256/<hex>` with a rename and ends the stream. An ingest that is neither
//!   committed nor aborted stays under `ingest/` and a later `Write` with the same ref
//!   resumes it; `Abort` drops it.
//!
//! Digests are only ever `sha256:` and 64 lowercase hex digits ([`digest_hex`]);
//! anything else is refused before a path is built, so every file a store touches is
//! inside its directory: `blobs/sha256/<hex>`, `ingest/<sha256 of the ref>/` and the
//! `oci-layout` marker, written with the first blob. [`index`] reads and updates the
//! layout's `index.json`, which the client does itself after the build (the daemon
//! never writes it).

mod caller;
pub mod index;
mod local;
mod server;

pub use caller::{BlobStream, CallerStore, WriteOutcome};
pub use index::{Descriptor, Index, IndexError, StoreIndex};
pub use server::ContentStores;

/// Metadata key naming the store a request is for.
pub const STORE_ID_KEY: &str = "buildkit-attachable-store-id";
/// Prefix of the ids of local cache stores (`local:<dir>`).
pub const LOCAL_STORE_PREFIX: &str = "local:";
/// Prefix of the ids of `--oci-layout` stores (`oci:<name>`).
pub const OCI_STORE_PREFIX: &str = "oci:";
/// Id of the store an `oci`/`docker` exporter writes an unpacked layout into.
pub const EXPORT_STORE_ID: &str = "export";

/// Largest piece of a blob in one message, either way (as containerd's server reads).
pub const CHUNK_SIZE: usize = 1 << 20;

/// The gRPC service name.
pub const SERVICE: &str = "containerd.services.content.v1.Content";
/// `Info` method path.
pub const INFO_METHOD: &str = "/containerd.services.content.v1.Content/Info";
/// `Read` method path.
pub const READ_METHOD: &str = "/containerd.services.content.v1.Content/Read";
/// `Write` method path.
pub const WRITE_METHOD: &str = "/containerd.services.content.v1.Content/Write";
/// `Delete` method path.
pub const DELETE_METHOD: &str = "/containerd.services.content.v1.Content/Delete";
/// `Abort` method path.
pub const ABORT_METHOD: &str = "/containerd.services.content.v1.Content/Abort";

/// The methods a content store serves, as announced.
pub(crate) const METHODS: [&str; 9] = [
    "Info",
    "Update",
    "List",
    "Delete",
    "Read",
    "Status",
    "ListStatuses",
    "Write",
    "Abort",
];

/// The id of the local cache store for `dir`, as upstream names it: `local:` + `dir`
/// exactly as given in the cache options (`dest=` or `src=`).
pub fn local_store_id(dir: &str) -> String {
    format!("{LOCAL_STORE_PREFIX}{dir}")
}

/// The hex part of `digest` if it is `sha256:` followed by 64 lowercase hex digits,
/// the only form stores accept.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then_some(hex)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Why a digest is refused.
pub(crate) fn invalid_digest(digest: &str) -> String {
    format!("invalid digest {digest:?}: expected sha256: and 64 lowercase hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(digest_hex(&good), Some(&good[7..]));
        for bad in [
            "sha256:../../x".to_string(),
            format!("sha256:{}", "0A".repeat(32)),
            format!("sha256:{}", "0a".repeat(31)),
            format!("sha256:{}/", "0a".repeat(32)),
            format!("sha512:{}", "0a".repeat(64)),
            format!("SHA256:{}", "0a".repeat(32)),
            "0a".repeat(32),
            String::new(),
        ] {
            assert_eq!(digest_hex(&bad), None, "{bad}");
        }
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(local_store_id("/tmp/c"), "local:/tmp/c");
    }
}
