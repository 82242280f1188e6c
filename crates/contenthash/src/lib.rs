//! Content checksums of paths in a filesystem tree, for content-based cache keys.
//!
//! The solver keys a step that reads part of an input (a `COPY` source, a local
//! context) by the *content* of what it reads, so that an unrelated change elsewhere in
//! the input keeps the step cached and equal content from different sources shares a
//! cache entry. This crate computes those digests:
//!
//! - [`checksum`] digests a path inside a root directory, once, with nothing kept.
//! - [`ContentHasher`] does the same for committed (immutable) snapshots, identified by
//!   a ref id: every entry and directory digest found is kept per ref, in memory and in
//!   the metadata store, so later checksums of the same ref (after a restart too) reuse
//!   them: once `/` is hashed, any path below it costs no file read.
//!
//! What a digest covers, per entry: its type, permission and setuid/setgid/sticky bits,
//! uid, gid, symlink target, device numbers, the extended attributes outside the
//! `security.` and `system.` namespaces plus `security.capability`, and a regular
//! file's content. Never times, inode numbers, or the name of the root. A directory's
//! digest combines its own header with its entries' names and digests in bytewise name
//! order. The bytes hashed are upstream BuildKit's (`cache/contenthash`: tarsum v1
//! headers, its list digests, its selection rules for wildcards and patterns), so our
//! digests equal BuildKit's for the same tree; the unit tests check upstream's own
//! expected values.
//!
//! Paths are resolved inside the root as if it were `/`: a symlink `etc -> /etc` on the
//! way leads to `<root>/etc`, and the kernel enforces it too (`openat2(RESOLVE_IN_ROOT)`).
//!
//! This crate does not decide which paths a step reads (the ops do), mount snapshots
//! (the caller passes a directory), nor match patterns (`patternmatcher`). Keeping a
//! mutable tree's checksums up to date while it changes is not supported: a
//! [`ContentHasher`] ref must not change once hashed; use [`checksum`] for trees that do.
#![forbid(unsafe_code)]

mod fs;
mod hasher;
mod header;
mod record;
mod select;
mod tree;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use hasher::ContentHasher;
pub use oci::Digest;

/// Why a checksum could not be computed. Paths inside the root are shown absolute, as
/// the caller named them (`/src/main.rs`), never as host paths.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path (or, with wildcards, any match of it) does not exist.
    #[error("{path:?}: not found")]
    NotFound { path: String },
    /// Resolving the path met more than 255 symlinks.
    #[error("{path:?}: too many levels of symbolic links")]
    TooManyLinks { path: String },
    /// The path cannot name anything (it contains a NUL byte).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A malformed wildcard or include/exclude pattern.
    #[error("invalid {what} {patterns:?}: {reason}")]
    BadPattern {
        /// `wildcard`, `include patterns` or `exclude patterns`.
        what: &'static str,
        patterns: Vec<String>,
        reason: String,
    },
    /// The root directory cannot be opened.
    #[error("checksum root {path}: {source}")]
    Root {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading an entry inside the root failed.
    #[error("{path:?}: {op}: {source}")]
    Io {
        path: String,
        /// What was being done (`open`, `readdir`, `read`, `listxattr`, ...).
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A ref id the records cannot be keyed by.
    #[error("invalid ref id {id:?}: {reason}")]
    InvalidRef { id: String, reason: &'static str },
    /// The metadata store failed.
    #[error("content hash records: {0}")]
    Metadata(#[from] metadata::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to checksum at a path, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChecksumOptions {
    /// If the path itself is a symlink, checksum what it points to (inside the root)
    /// instead of the link. Symlinks among the path's parents are always followed.
    pub follow_links: bool,
    /// The path may hold Go `filepath.Match` wildcards (`*`, `?`, `[...]`, `\` escapes)
    /// in any component; the digest covers every match, in sorted order, each with its
    /// path relative to the components before the first wildcard.
    pub wildcard: bool,
    /// Only entries matching one of these (`.dockerignore` syntax, relative to the path)
    /// count, with the directories above them.
    pub include_patterns: Vec<String>,
    /// Entries matching these (same syntax) do not count.
    pub exclude_patterns: Vec<String>,
    /// A missing path, or a wildcard matching nothing, gives [`empty_digest`] instead of
    /// [`Error::NotFound`].
    pub allow_missing: bool,
}

impl ChecksumOptions {
    /// A digest of everything that changes the result, for keying stored results.
    pub(crate) fn fingerprint(&self) -> Digest {
        let mut b = b"contenthash.options.v1\0".to_vec();
        b.extend([
            u8::from(self.follow_links),
            u8::from(self.wildcard),
            u8::from(self.allow_missing),
        ]);
        for list in [&self.include_patterns, &self.exclude_patterns] {
            b.extend_from_slice(&(list.len() as u64).to_le_bytes());
            for p in list {
                b.extend_from_slice(&(p.len() as u64).to_le_bytes());
                b.extend_from_slice(p.as_bytes());
            }
        }
        Digest::of(&b)
    }
}

/// The digest of an empty selection (sha256 of no bytes): what a path that matches
/// nothing hashes to with [`ChecksumOptions::allow_missing`], or a selection whose
/// patterns keep nothing.
pub fn empty_digest() -> Digest {
    header::empty()
}

/// The content digest of `path` inside `root` (`""` or `/` for the whole root),
/// computed from scratch. See the crate documentation for what it covers.
///
/// Errors name the path: [`Error::NotFound`] when it (or every wildcard match) is
/// missing, [`Error::Io`] when an entry cannot be read, [`Error::Root`] when `root`
/// cannot be opened.
pub fn checksum(root: &Path, path: &str, opts: &ChecksumOptions) -> Result<Digest> {
    let counters = Counters::default();
    let mut fs = fs::Fs::new(root, &counters);
    select::checksum(&mut tree::Tree::default(), &mut fs, path, opts)
}

/// Counters of the work a [`ContentHasher`] did, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Regular files whose content was read.
    pub files_hashed: u64,
    /// Content bytes read.
    pub bytes_hashed: u64,
    /// Directories read.
    pub dirs_listed: u64,
    /// Single entries looked up or examined (symlinks, devices) on the filesystem.
    pub entries_stat: u64,
    /// Checksums answered from a stored result, in memory or in the metadata store.
    pub results_reused: u64,
}

/// [`Stats`], shared by the threads that update them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub files_hashed: AtomicU64,
    pub bytes_hashed: AtomicU64,
    pub dirs_listed: AtomicU64,
    pub entries_stat: AtomicU64,
    pub results_reused: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            files_hashed: get(&self.files_hashed),
            bytes_hashed: get(&self.bytes_hashed),
            dirs_listed: get(&self.dirs_listed),
            entries_stat: get(&self.entries_stat),
            results_reused: get(&self.results_reused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_separates_options() {
        let base = ChecksumOptions::default();
        let variants = [
            ChecksumOptions {
                follow_links: true,
                ..base.clone()
            },
            ChecksumOptions {
                wildcard: true,
                ..base.clone()
            },
            ChecksumOptions {
                allow_missing: true,
                ..base.clone()
            },
            ChecksumOptions {
                include_patterns: vec!["a".into()],
                ..base.clone()
            },
            ChecksumOptions {
                exclude_patterns: vec!["a".into()],
                ..base.clone()
            },
            ChecksumOptions {
                include_patterns: vec!["a".into(), "b".into()],
                ..base.clone()
            },
            ChecksumOptions {
                include_patterns: vec!["ab".into()],
                ..base.clone()
            },
        ];
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(base.fingerprint()));
        for v in &variants {
            assert!(seen.insert(v.fingerprint()), "{v:?}");
        }
        assert_eq!(base.fingerprint(), ChecksumOptions::default().fingerprint());
    }
}
