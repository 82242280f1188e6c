//! The worker's content store: immutable blobs addressed by their sha256 digest, what
//! containerd's local content store is to upstream BuildKit.
//!
//! It owns:
//! - the blob files under `<root>/content/blobs/sha256/<hex>` and the ingest temp files
//!   under `<root>/content/ingest/`;
//! - verified, atomic ingest ([`Writer`]): content is hashed while it is written to a temp
//!   file, fsynced, and renamed to its digest path only when digest and size match, so a
//!   crash or a bad download leaves a temp file (swept at the next open), never a wrong blob;
//! - reading blobs (whole, by range, as a [`std::fs::File`]), listing and deleting them;
//! - leases ([`Lease`], [`LeaseGuard`]) recorded in the metadata database, and garbage
//!   collection ([`ContentStore::gc`]) of the blobs no lease holds;
//! - reading and writing OCI image layouts ([`layout`]).
//!
//! It does not own: what a blob means (images, layers and their unpacking belong to the
//! cache, snapshot and exporter crates), fetching from registries, or GC policy (when to
//! collect and which extra roots to keep are the caller's).
//!
//! One [`ContentStore`] serves one root; clone it to share it (clones share the lock that
//! keeps GC from collecting a blob between its commit and its lease record).
#![forbid(unsafe_code)]

mod gc;
mod ingest;
pub mod layout;
mod lease;

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use metadata::MetadataStore;
pub use oci::Digest;

pub use gc::GcReport;
pub use ingest::Writer;
pub use lease::{Lease, LeaseGuard, new_lease_id};

/// Errors of the content store. Every message names the blob, lease or path it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `rename`, ...).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No blob with this digest is in the store.
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    /// The written content does not hash to the expected digest; nothing was committed.
    #[error(
        "ingest: content digest {actual} does not match expected {expected} ({size} bytes written)"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    /// The written content does not have the expected size; nothing was committed.
    #[error(
        "ingest of {expected}: {actual_size} bytes written (content digest {actual}), expected {expected_size} bytes"
    )]
    SizeMismatch {
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    /// A range read past the end of a blob.
    #[error("blob {digest}: range {offset}+{len} is outside its {size} bytes")]
    OutOfRange {
        digest: Digest,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// The blob cannot be deleted while leases hold it.
    #[error("blob {digest} is held by lease(s) {}; remove it from them first", leases.join(", "))]
    Leased { digest: Digest, leases: Vec<String> },
    /// No lease with this id exists.
    #[error("lease {0:?} not found")]
    LeaseNotFound(String),
    /// A lease with this id exists already.
    #[error("lease {0:?} already exists")]
    LeaseExists(String),
    /// The lease id is not one we accept.
    #[error("invalid lease id {id:?}: {reason}")]
    InvalidLeaseId { id: String, reason: &'static str },
    /// The metadata database failed while doing `what`.
    #[error("content metadata ({what}): {source}")]
    Metadata {
        what: String,
        #[source]
        source: metadata::Error,
    },
    /// A record in the metadata database cannot be decoded.
    #[error("content metadata table {table}, key {key:?}: {reason}")]
    CorruptRecord {
        table: &'static str,
        key: String,
        reason: String,
    },
    /// A writer was used after it finished (committed, aborted or failed).
    #[error("ingest {0}: writer already finished")]
    WriterFinished(PathBuf),
    /// Reading or writing an OCI image layout failed.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `Io` error for `op` on `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// A `Metadata` error while doing `what`.
    pub(crate) fn meta(what: impl Into<String>) -> impl FnOnce(metadata::Error) -> Error {
        let what = what.into();
        move |source| Error::Metadata { what, source }
    }

    /// Whether this is a digest or size mismatch of ingested content.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. }
        )
    }

    /// Whether this says a blob is not in the store.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

/// What the store knows about one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest (and file name).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// When the blob was committed (its file's modification time).
    pub committed: SystemTime,
}

/// The content store of one worker root. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `<root>/content`.
    dir: PathBuf,
    /// `<root>/content/blobs/sha256`.
    blobs: PathBuf,
    /// `<root>/content/ingest`.
    ingest: PathBuf,
    meta: Arc<dyn MetadataStore>,
    /// Commits and lease additions hold it shared, GC and delete exclusively, so a blob is
    /// never collected between being committed and being recorded in its lease.
    gc_lock: RwLock<()>,
}

impl ContentStore {
    /// Opens (creating if needed) the content store under `root`, keeping its leases in
    /// `meta`. Ingest temp files left by a crashed process are removed.
    pub fn open(root: impl AsRef<Path>, meta: Arc<dyn MetadataStore>) -> Result<ContentStore> {
        let dir = root.as_ref().join("content");
        let blobs = dir.join("blobs").join("sha256");
        let ingest = dir.join("ingest");
        for d in [&blobs, &ingest] {
            std::fs::create_dir_all(d).map_err(Error::io("create directory", d))?;
        }
        let store = ContentStore {
            inner: Arc::new(Inner {
                dir,
                blobs,
                ingest,
                meta,
                gc_lock: RwLock::new(()),
            }),
        };
        let swept = store.remove_stale_ingests()?;
        tracing::debug!(
            dir = %store.inner.dir.display(),
            stale_ingests = swept,
            "content store opened"
        );
        Ok(store)
    }

    /// `<root>/content`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the blob `digest` lives (whether or not it is present). Callers must treat
    /// the file as read-only.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blobs.join(digest.hex())
    }

    /// The metadata database the leases live in.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.inner.meta
    }

    /// Whether the blob `digest` is present.
    pub fn exists(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("stat", path)(e)),
        }
    }

    /// Opens the blob `digest` for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| not_found_or(e, digest, "open", &path))
    }

    /// Size and commit time of the blob `digest`.
    pub fn info(&self, digest: &Digest) -> Result<Info> {
        let path = self.blob_path(digest);
        let md = std::fs::metadata(&path).map_err(|e| not_found_or(e, digest, "stat", &path))?;
        Ok(Info {
            digest: *digest,
            size: md.len(),
            committed: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Size in bytes of the blob `digest`.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        Ok(self.info(digest)?.size)
    }

    /// The whole blob `digest`.
    pub fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(Error::io("read", self.blob_path(digest)))?;
        Ok(out)
    }

    /// `len` bytes of the blob `digest` from `offset`; a range past its end is an error.
    pub fn read_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = f.metadata().map_err(Error::io("stat", &path))?.len();
        let out_of_range = Error::OutOfRange {
            digest: *digest,
            offset,
            len,
            size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(out_of_range),
        }
        let Ok(n) = usize::try_from(len) else {
            return Err(out_of_range);
        };
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, offset)
            .map_err(Error::io("read", &path))?;
        Ok(buf)
    }

    /// Re-hashes the blob `digest` and checks that it still matches its name.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let f = self.open_blob(digest)?;
        let mut r = oci::HashingReader::new(f);
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(Error::io("read", self.blob_path(digest)))?;
        let (_, actual, size) = r.finish();
        if actual == *digest {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                expected: *digest,
                actual,
                size,
            })
        }
    }

    /// Every blob in the store, in digest order. Files under the blob directory whose
    /// names are not digests are skipped (and logged).
    pub fn list(&self) -> Result<Vec<Info>> {
        let dir = &self.inner.blobs;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
            let entry = entry.map_err(Error::io("read directory", dir))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            else {
                tracing::warn!(path = %entry.path().display(), "not a blob; skipped");
                continue;
            };
            match self.info(&digest) {
                Ok(info) => out.push(info),
                // deleted while we were listing
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|i| i.digest);
        Ok(out)
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.gc_lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.inner
            .gc_lock
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// `NotFound(digest)` for a missing file, an `Io` error otherwise.
fn not_found_or(e: std::io::Error, digest: &Digest, op: &'static str, path: &Path) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(*digest)
    } else {
        Error::io(op, path)(e)
    }
}

/// Makes a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path(), Arc::new(MemStore::default())).unwrap();
        (dir, s)
    }

    #[test]
    fn layout_on_disk() {
        let (dir, s) = store();
        let d = s.put(b"hello").unwrap();
        let path = dir.path().join("content/blobs/sha256").join(d.hex());
        assert_eq!(s.blob_path(&d), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert!(dir.path().join("content/ingest").is_dir());
    }

    #[test]
    fn missing_blob_is_not_found_and_named() {
        let (_dir, s) = store();
        let d = Digest::of(b"nope");
        let err = s.read_all(&d).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        assert!(!s.exists(&d).unwrap());
        assert!(s.info(&d).unwrap_err().is_not_found());
    }

    #[test]
    fn range_reads_check_bounds() {
        let (_dir, s) = store();
        let d = s.put(b"0123456789").unwrap();
        assert_eq!(s.read_range(&d, 2, 3).unwrap(), b"234");
        assert_eq!(s.read_range(&d, 10, 0).unwrap(), b"");
        let err = s.read_range(&d, 8, 3).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { size: 10, .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()));
        assert!(s.read_range(&d, u64::MAX, 2).is_err());
    }

    #[test]
    fn list_skips_strangers_and_verify_detects_corruption() {
        let (dir, s) = store();
        let a = s.put(b"a").unwrap();
        let b = s.put(b"b").unwrap();
        std::fs::write(dir.path().join("content/blobs/sha256/README"), b"x").unwrap();
        let listed: Vec<_> = s.list().unwrap().into_iter().map(|i| i.digest).collect();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(listed, want);
        s.verify(&a).unwrap();
        std::fs::remove_file(s.blob_path(&a)).unwrap();
        std::fs::write(s.blob_path(&a), b"tampered").unwrap();
        let err = s.verify(&a).unwrap_err();
        assert!(err.is_mismatch(), "{err}");
    }
}
