//! LLB file actions run on directories: what BuildKit's `solver/llbsolver/file` backend
//! and fsutil's `copy` package do for a FileOp.
//!
//! This crate owns:
//! - the five actions: [`mkdir`], [`mkfile`], [`rm`], [`symlink`] and [`copy`], each
//!   taking the LLB message (`proto::pb::FileAction*`) and the directory (a mounted
//!   snapshot) it runs on;
//! - BuildKit's copy semantics: wildcard sources, the destination rules (`dest/`,
//!   `dirCopyContents`, `createDestPath`), `mode`/`modeStr` (symbolic chmod), timestamps,
//!   include/exclude patterns, hard links, xattrs, replacing existing paths, and `ADD`'s
//!   archive unpacking;
//! - resolving an action's owner ([`resolve_owner`]): numeric ids, or names from the
//!   `/etc/passwd` and `/etc/group` of a root.
//!
//! **Every path stays inside its root.** Action paths are cleaned (`..` stops at the
//! root), symlinks are followed as if the root were `/`, and every file is opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` or `*at` calls relative to a
//! directory descriptor that never follow the last component. A symlink `link -> /etc`
//! in a source means the root's own `etc`; nothing is ever read or written outside the
//! roots, whatever they contain.
//!
//! It does not own mounting snapshots, choosing which input an action reads or writes,
//! cache keys or content checksums (the ops layer); pattern syntax (`patternmatcher`);
//! or tar extraction (`archive`). All functions are blocking; async callers run them in
//! `spawn_blocking`. Nothing is done about user namespaces (ids are used as given).
//!
//! Deliberate differences from upstream: modes given to `mkdir`/`mkfile` are applied
//! exactly (not masked by the daemon's umask, and also on an existing file); unknown
//! user or group names are errors (upstream uses 0); malformed wildcards are errors
//! (upstream matches nothing); `symlink` never follows an existing link at `newpath`.
#![forbid(unsafe_code)]

mod actions;
mod copy;
mod error;
mod meta;
mod mode;
mod owner;
mod root;
mod tree;
mod unpack;
mod wildcard;

pub use actions::{mkdir, mkfile, rm, symlink};
pub use copy::{CopyStats, copy};
pub use error::{Error, Result};
pub use owner::{Owner, resolve_owner};
