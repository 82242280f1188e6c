//! Verified, atomic ingest: content streams through a sha256 hasher into a temp file under
//! `content/ingest/`, which is fsynced and renamed to its digest path only when the digest
//! and size are the expected ones.
//!
//! Each temp file is `flock`ed by its writer for as long as the writer lives. The kernel
//! drops the lock when the process dies, so an unlocked temp file is one a crashed (or
//! finished) writer left behind, and the sweep at open removes exactly those, never the
//! file of a writer that is still running in this or another process.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oci::{Digest, HashingWriter};
use rustix::fs::{FlockOperation, flock};

use crate::{ContentStore, Error, Result, sync_dir};

/// Buffer between callers' small writes and the temp file.
const BUFFER: usize = 128 * 1024;

/// An ingest in progress: write the content, then [`commit`](Writer::commit). Dropping it
/// without committing removes its temp file.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    path: PathBuf,
    out: Option<HashingWriter<BufWriter<File>>>,
    lease: Option<String>,
    /// The temp file was renamed into place or removed.
    done: bool,
}

impl ContentStore {
    /// Starts an ingest into a new temp file.
    pub fn writer(&self) -> Result<Writer> {
        let dir = &self.inner.ingest;
        for _ in 0..8 {
            let path = dir.join(temp_name());
            let file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", &path)(e)),
            };
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| Error::io("lock", &path)(e.into()))?;
            // A sweep in another store may have removed the file between create and lock.
            let md = file.metadata().map_err(Error::io("stat", &path))?;
            if md.nlink() == 0 {
                continue;
            }
            tracing::trace!(path = %path.display(), "ingest started");
            return Ok(Writer {
                store: self.clone(),
                path,
                out: Some(HashingWriter::new(BufWriter::with_capacity(BUFFER, file))),
                lease: None,
                done: false,
            });
        }
        Err(Error::Io {
            op: "create ingest file in",
            path: dir.clone(),
            source: io::Error::other("no free temp name after 8 tries"),
        })
    }

    /// Stores `data` and returns its digest. The blob is held by no lease.
    pub fn put(&self, data: &[u8]) -> Result<Digest> {
        self.ingest_into(None, data, None)
    }

    /// Stores `data` and records it in the lease `lease` (which must exist).
    pub fn put_in_lease(&self, lease: &str, data: &[u8]) -> Result<Digest> {
        self.ingest_into(Some(lease), data, None)
    }

    /// Stores everything `reader` yields, checked against `expected` (digest, size) when
    /// given. When the expected blob is present already, `reader` is not read at all.
    pub fn ingest(&self, reader: impl Read, expected: Option<(Digest, u64)>) -> Result<Digest> {
        self.ingest_into(None, reader, expected)
    }

    /// [`ingest`](ContentStore::ingest), recording the blob in the lease `lease`.
    pub fn ingest_in_lease(
        &self,
        lease: &str,
        reader: impl Read,
        expected: Option<(Digest, u64)>,
    ) -> Result<Digest> {
        self.ingest_into(Some(lease), reader, expected)
    }

    pub(crate) fn ingest_into(
        &self,
        lease: Option<&str>,
        mut reader: impl Read,
        expected: Option<(Digest, u64)>,
    ) -> Result<Digest> {
        if let Some((digest, size)) = expected {
            let _shared = self.shared();
            if self.info(&digest).is_ok_and(|i| i.size == size) {
                if let Some(lease) = lease {
                    self.record_in_lease(lease, &digest)?;
                }
                tracing::debug!(%digest, "blob already present; ingest skipped");
                return Ok(digest);
            }
        }
        let mut w = self.writer()?;
        w.lease = lease.map(str::to_string);
        io::copy(&mut reader, &mut w).map_err(Error::io("copy into", &w.path))?;
        w.commit(expected)
    }

    /// Removes ingest temp files no live writer holds (left by a crashed process).
    /// Returns how many were removed.
    pub(crate) fn remove_stale_ingests(&self) -> Result<usize> {
        let dir = &self.inner.ingest;
        let mut removed = 0;
        for entry in std::fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
            let entry = entry.map_err(Error::io("read directory", dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(Error::io("stat", &path))?;
            if file_type.is_dir() {
                std::fs::remove_dir_all(&path).map_err(Error::io("remove", &path))?;
            } else if file_type.is_file() {
                if !remove_if_unlocked(&path)? {
                    continue;
                }
            } else {
                std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
            tracing::info!(path = %path.display(), "removed stale ingest");
            removed += 1;
        }
        if removed > 0 {
            sync_dir(dir)?;
        }
        Ok(removed)
    }
}

/// Removes the temp file at `path` unless a live writer holds its lock.
fn remove_if_unlocked(path: &Path) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path)(e)),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(false),
        Err(e) => return Err(Error::io("lock", path)(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// A name no other writer (in this or another process) uses.
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}.tmp", std::process::id())
}

impl Writer {
    /// Records the committed blob in the lease `lease` (checked at commit), atomically
    /// with respect to GC.
    pub fn in_lease(mut self, lease: impl Into<String>) -> Writer {
        self.lease = Some(lease.into());
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.as_ref().map_or(0, HashingWriter::written)
    }

    /// The temp file being written.
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Finishes the ingest: flushes and fsyncs the temp file, checks it against
    /// `expected` (digest, size) when given, and renames it to its digest path. On a
    /// mismatch the temp file is removed and nothing appears under the digest path. If
    /// the blob is present already (another ingest of the same content won), the temp file
    /// is dropped and the commit succeeds.
    pub fn commit(mut self, expected: Option<(Digest, u64)>) -> Result<Digest> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::WriterFinished(self.path.clone()))?;
        let (buffered, actual, size) = out.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io("write", &self.path)(e.into_error()))?;
        file.sync_all().map_err(Error::io("fsync", &self.path))?;
        if let Some((expected, expected_size)) = expected {
            if size != expected_size {
                return Err(Error::SizeMismatch {
                    expected,
                    expected_size,
                    actual,
                    actual_size: size,
                });
            }
            if actual != expected {
                return Err(Error::DigestMismatch {
                    expected,
                    actual,
                    size,
                });
            }
        }
        file.set_permissions(Permissions::from_mode(0o444))
            .map_err(Error::io("chmod", &self.path))?;

        let store = self.store.clone();
        let _shared = store.shared();
        if let Some(lease) = &self.lease {
            store.record_in_lease(lease, &actual)?;
        }
        if store.exists(&actual)? {
            tracing::debug!(digest = %actual, "blob already present; ingest discarded");
            return Ok(actual);
        }
        let target = store.blob_path(&actual);
        std::fs::rename(&self.path, &target).map_err(Error::io("rename into", &target))?;
        self.done = true;
        drop(file);
        sync_dir(&store.inner.blobs)?;
        tracing::debug!(digest = %actual, size, "blob committed");
        Ok(actual)
    }

    /// Abandons the ingest and removes its temp file.
    pub fn abort(mut self) -> Result<()> {
        self.out = None;
        self.done = true;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.path)(e)),
        }
    }

    fn finished(&self) -> io::Error {
        io::Error::other(format!(
            "ingest {}: writer already finished",
            self.path.display()
        ))
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Some(w) => w.write(buf),
            None => Err(self.finished()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Err(self.finished()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove ingest temp file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path(), Arc::new(MemStore::default())).unwrap();
        (dir, s)
    }

    fn ingest_files(s: &ContentStore) -> usize {
        std::fs::read_dir(&s.inner.ingest).unwrap().count()
    }

    #[test]
    fn writer_streams_and_commits() {
        let (_dir, s) = store();
        let mut w = s.writer().unwrap();
        for _ in 0..100 {
            w.write_all(b"chunk-").unwrap();
        }
        assert_eq!(w.written(), 600);
        let data = b"chunk-".repeat(100);
        let d = w.commit(Some((Digest::of(&data), 600))).unwrap();
        assert_eq!(d, Digest::of(&data));
        assert_eq!(s.read_all(&d).unwrap(), data);
        assert_eq!(ingest_files(&s), 0);
        let mode = std::fs::metadata(s.blob_path(&d)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[test]
    fn drop_and_abort_remove_the_temp_file() {
        let (_dir, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        let temp = w.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(w);
        assert!(!temp.exists());
        let w = s.writer().unwrap();
        w.abort().unwrap();
        assert_eq!(ingest_files(&s), 0);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn mismatch_removes_temp_and_names_both_digests() {
        let (_dir, s) = store();
        let wrong = Digest::of(b"something else");
        let mut w = s.writer().unwrap();
        w.write_all(b"content").unwrap();
        let err = w.commit(Some((wrong, 7))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&wrong.to_string()), "{msg}");
        assert!(msg.contains(&Digest::of(b"content").to_string()), "{msg}");
        assert_eq!(ingest_files(&s), 0);
        assert!(!s.exists(&Digest::of(b"content")).unwrap());
        assert!(!s.exists(&wrong).unwrap());
    }

    #[test]
    fn sweep_spares_live_writers_and_removes_dead_ones() {
        let (dir, s) = store();
        let mut live = s.writer().unwrap();
        live.write_all(b"still going").unwrap();
        live.flush().unwrap();
        // a temp file whose writer died: nobody holds its lock
        std::fs::write(s.inner.ingest.join("1-2-3.tmp"), b"junk").unwrap();
        std::fs::create_dir(s.inner.ingest.join("olddir")).unwrap();
        // a second store on the same root sweeps at open
        let other = ContentStore::open(dir.path(), Arc::new(MemStore::default())).unwrap();
        assert_eq!(ingest_files(&other), 1);
        assert!(live.temp_path().exists());
        let d = live.commit(None).unwrap();
        assert_eq!(other.read_all(&d).unwrap(), b"still going");
    }

    #[test]
    fn ingest_skips_reading_when_blob_present() {
        let (_dir, s) = store();
        let d = s.put(b"known").unwrap();
        // a reader that fails if read proves it was not used
        struct Fails;
        impl Read for Fails {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("read"))
            }
        }
        assert_eq!(s.ingest(Fails, Some((d, 5))).unwrap(), d);
        assert!(s.ingest(Fails, None).is_err());
    }
}
