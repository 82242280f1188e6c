//! Snapshotters: copy-on-write filesystem trees with parent chains, as containerd's
//! snapshotters provide them to BuildKit. Two backends: overlayfs, and a native one that
//! copies (chosen at start-up by probing whether overlay mounts work under the root).
//!
//! Snapshotters return [`Mount`]s as data; the caller mounts them (see [`mount`]) where
//! and when it needs them. Snapshot records (key, parent, kind) live in the metadata DB,
//! which is the truth: a directory without a record is garbage ([`Snapshotter::cleanup`]),
//! a record without its directory is an error naming both.
//!
//! This crate does not own layers (diffing, tar, whiteout conversion: `archive`), refs and
//! leases over snapshots (`cache`), or where mounts go (the executor picks targets).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod merge;
pub mod mount;
pub mod mountinfo;
mod native;
mod overlay;
mod probe;
mod records;
mod store;
mod tree;

use std::path::PathBuf;

pub use native::NativeSnapshotter;
pub use overlay::OverlaySnapshotter;
pub use probe::{auto, by_name, overlay_supported};

/// One mount, as data: what `mount(2)` needs, with the target chosen by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mount {
    /// Filesystem type: `overlay`, `bind`, `tmpfs`, ...
    pub fstype: String,
    /// Source path (a directory for `bind`; `overlay` for overlay).
    pub source: String,
    /// Options as in `mount -o`: `ro`, `rbind`, `lowerdir=...`, `upperdir=...`, ...
    pub options: Vec<String>,
}

impl Mount {
    /// A bind mount of `dir`, read-only if `readonly`.
    pub fn bind(dir: impl Into<String>, readonly: bool) -> Mount {
        let mut options = vec!["rbind".to_string()];
        options.push(if readonly { "ro" } else { "rw" }.to_string());
        Mount {
            fstype: "bind".into(),
            source: dir.into(),
            options,
        }
    }

    /// Whether the options ask for a read-only mount.
    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// The state of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, being prepared.
    Active,
    /// Read-only view of a parent.
    View,
    /// Immutable; can be a parent.
    Committed,
}

impl Kind {
    /// The name used in records and messages: `active`, `view` or `committed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the snapshotter records about a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The snapshot's key (for committed snapshots, the name given to `commit`).
    pub key: String,
    /// The committed snapshot this one is based on.
    pub parent: Option<String>,
    /// Active, view or committed.
    pub kind: Kind,
    /// Unix seconds.
    pub created: u64,
}

/// Disk usage of a snapshot's own layer (not its parents).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk (`st_blocks * 512`), each inode counted once.
    pub size: u64,
    /// Files, directories and other inodes, hard links counted once.
    pub inodes: u64,
}

/// Errors of snapshotters and mounting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No record for this key.
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    /// A record for this key exists already.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The request does not fit the snapshot (wrong kind, bad key, corrupt record, ...).
    #[error("snapshot {key:?}: {reason}")]
    Invalid {
        /// The snapshot key (or root path) concerned.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Another snapshot has this one as parent.
    #[error("snapshot {0:?} has children and cannot be removed")]
    HasChildren(String),
    /// The record exists but its directory does not (lost data, or a foreign deletion).
    #[error(
        "snapshot {key:?}: directory {path} is missing; the snapshot's data is lost, remove it"
    )]
    MissingDir {
        /// The snapshot being used.
        key: String,
        /// The directory that should exist.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error("mount {fstype} on {target}: {reason}")]
    Mount {
        /// The filesystem type (`umount` for unmounting).
        fstype: String,
        /// The mount point.
        target: PathBuf,
        /// The failing step and the kernel's reason.
        reason: String,
    },
    /// The options do not fit in the one page `mount(2)` accepts, and the new mount API
    /// (which takes overlay layers one at a time) is not available.
    #[error(
        "mount {fstype} on {target}: options are {len} bytes, more than the {max} bytes mount(2) \
         accepts, and this kernel lacks fsopen/overlay lowerdir+ (Linux >= 6.8) to pass them one by one"
    )]
    OptionsTooLong {
        /// The filesystem type.
        fstype: String,
        /// The mount point.
        target: PathBuf,
        /// Bytes the options need, with the terminating NUL.
        len: usize,
        /// Bytes `mount(2)` takes (the page size).
        max: usize,
    },
    /// The metadata store failed while handling this snapshot.
    #[error("snapshot {key:?}: metadata: {source}")]
    Record {
        /// The snapshot key (`*` for whole-table reads).
        key: String,
        /// The store's error.
        #[source]
        source: metadata::Error,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    /// `by_name` got a name it does not know.
    #[error("unknown snapshotter {0:?} (known: overlayfs, native, auto)")]
    UnknownSnapshotter(String),
    /// The root directory already holds another snapshotter's snapshots.
    #[error("snapshotter root {root} belongs to the {owner} snapshotter, not {wanted}")]
    RootInUse {
        /// The root directory.
        root: PathBuf,
        /// The snapshotter named in the root's marker file.
        owner: String,
        /// The snapshotter that was asked to open it.
        wanted: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A snapshotter. Blocking: call it from a blocking context.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// `overlayfs` or `native`.
    fn name(&self) -> &'static str;
    /// A new writable snapshot `key` on top of committed `parent` (or empty).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// A read-only view `key` of committed `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// The mounts of an existing active or view snapshot.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Turns active snapshot `key` into committed snapshot `name`.
    fn commit(&self, name: &str, key: &str) -> Result<()>;
    /// Removes a snapshot that no other snapshot uses as parent.
    fn remove(&self, key: &str) -> Result<()>;
    /// The record of `key`.
    fn stat(&self, key: &str) -> Result<Info>;
    /// All records, in key order.
    fn list(&self) -> Result<Vec<Info>>;
    /// Disk usage of `key`'s [`layer_dir`](Snapshotter::layer_dir).
    fn usage(&self, key: &str) -> Result<Usage>;
    /// The directory that holds this snapshot's own changes: the overlay upper dir, or the
    /// native snapshot's whole tree. Used to compute layers.
    fn layer_dir(&self, key: &str) -> Result<PathBuf>;
    /// Removes directories that no record points at (left by a crash); returns how many.
    fn cleanup(&self) -> Result<usize>;
}
