//! Cache records over the worker's storage, as upstream's cache manager keeps them:
//! every committed snapshot (build results, pulled layers, synced contexts, git
//! checkouts), every `RUN --mount=type=cache` directory and every kept copy of a local
//! source (`<root>/local-sources/<key>`, what the next sync is compared with) is a
//! record with a type, a
//! description, creation and last-use times, a usage count and a size (computed when
//! first asked and remembered: committed snapshots never change).
//!
//! [`CacheManager::disk_usage`] lists them (`buildctl du`), [`CacheManager::prune`]
//! removes the ones a [`PruneOptions`] selects, least recently used first (`buildctl
//! prune`, and the GC policies of [`policy`]). A record that something [`Hold`]s (a
//! running build's result, a cache mount being used) or that another record builds on
//! (a snapshot's children) is never removed.
//!
//! Records live in the metadata table `cache.records` (id → JSON [`Meta`]); the
//! snapshotter's records stay the truth about which snapshots exist.
#![forbid(unsafe_code)]

mod filter;
mod holds;
mod manager;
pub mod policy;

pub use filter::{Filter, any_matches};
pub use holds::{Hold, Holds};
pub use manager::{CacheManager, Cleanup, Meta, PruneReport};
pub use policy::PruneOptions;

use std::time::SystemTime;

/// Errors of the cache manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filter that does not parse.
    #[error("filter {filter:?}: {reason}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bad size, duration or policy.
    #[error("{0}")]
    Config(String),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    /// The snapshotter failed.
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What made a record, as upstream names it in `UsageRecord.RecordType`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RecordType {
    /// Build results and pulled layers.
    #[default]
    #[serde(rename = "regular")]
    Regular,
    /// Synced local contexts.
    #[serde(rename = "source.local")]
    SourceLocal,
    /// `RUN --mount=type=cache` directories.
    #[serde(rename = "exec.cachemount")]
    ExecCacheMount,
    /// Git checkouts.
    #[serde(rename = "source.git.checkout")]
    GitCheckout,
    /// Frontend images.
    #[serde(rename = "frontend")]
    Frontend,
    /// Helper records (pruned only with `all`).
    #[serde(rename = "internal")]
    Internal,
}

impl RecordType {
    /// Upstream's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Regular => "regular",
            RecordType::SourceLocal => "source.local",
            RecordType::ExecCacheMount => "exec.cachemount",
            RecordType::GitCheckout => "source.git.checkout",
            RecordType::Frontend => "frontend",
            RecordType::Internal => "internal",
        }
    }
}

/// One record, as `DiskUsage` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageRecord {
    /// The record id: a snapshot key, or `cachemount/<id digest>/<instance>`.
    pub id: String,
    /// Whether it can still change (cache mounts).
    pub mutable: bool,
    /// Whether something holds it, or a snapshot being used builds on it.
    pub in_use: bool,
    /// Bytes: the apparent size of the record's own files (as `du -sb` counts them).
    pub size: u64,
    /// The records it builds on (a snapshot's parent).
    pub parents: Vec<String>,
    /// When it was made.
    pub created: Option<SystemTime>,
    /// When a build last used it.
    pub last_used: Option<SystemTime>,
    /// How many times builds used it.
    pub usage_count: u64,
    /// What it is.
    pub description: String,
    /// What made it.
    pub record_type: RecordType,
    /// Shared with an image store (never: there is none).
    pub shared: bool,
}
