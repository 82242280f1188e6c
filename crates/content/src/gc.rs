//! Removing blobs: explicit delete (refused while a lease holds the blob) and garbage
//! collection of every blob that no lease and no extra root holds.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::time::SystemTime;

use oci::Digest;

use crate::lease::{BLOB_LEASES, LEASES, delete_lease_in};
use crate::{ContentStore, Error, Result, sync_dir};

/// What one GC run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed, in digest order.
    pub removed: Vec<Digest>,
    /// Their total size.
    pub bytes_freed: u64,
    /// Leases deleted because they had expired.
    pub expired_leases: Vec<String>,
    /// Ingest temp files left by dead writers and removed.
    pub stale_ingests: usize,
}

impl ContentStore {
    /// Deletes the blob `digest`. Fails with [`Error::Leased`] while any lease holds it,
    /// and with [`Error::NotFound`] if it is not there.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let _exclusive = self.exclusive();
        let leases = self.blob_leases(digest)?;
        if !leases.is_empty() {
            return Err(Error::Leased {
                digest: *digest,
                leases,
            });
        }
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NotFound(*digest)),
            Err(e) => return Err(Error::io("remove", &path)(e)),
        }
        sync_dir(&self.inner.blobs)?;
        tracing::debug!(%digest, "blob deleted");
        Ok(())
    }

    /// Collects garbage: deletes expired leases, then removes every blob held by no lease
    /// and not in `extra_roots`, and the temp files of dead ingests. A blob being
    /// committed into a lease is never collected: commits and GC exclude each other.
    pub fn gc(&self, extra_roots: &HashSet<Digest>) -> Result<GcReport> {
        let _exclusive = self.exclusive();
        let mut report = GcReport {
            expired_leases: self.delete_expired_leases(SystemTime::now())?,
            ..GcReport::default()
        };

        let held = self.held_blobs()?;
        for info in self.list()? {
            if held.contains(&info.digest) || extra_roots.contains(&info.digest) {
                continue;
            }
            let path = self.blob_path(&info.digest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("remove", &path)(e)),
            }
            tracing::debug!(digest = %info.digest, size = info.size, "gc removed blob");
            report.bytes_freed += info.size;
            report.removed.push(info.digest);
        }
        if !report.removed.is_empty() {
            sync_dir(&self.inner.blobs)?;
        }
        report.stale_ingests = self.remove_stale_ingests()?;
        tracing::info!(
            removed = report.removed.len(),
            bytes_freed = report.bytes_freed,
            expired_leases = report.expired_leases.len(),
            "content gc done"
        );
        Ok(report)
    }

    /// Deletes the leases expired at `now`; returns their ids.
    fn delete_expired_leases(&self, now: SystemTime) -> Result<Vec<String>> {
        let expired: Vec<String> = self
            .leases()?
            .into_iter()
            .filter(|l| l.is_expired(now))
            .map(|l| l.id)
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        self.txn("delete expired leases", |t| {
            for id in &expired {
                match delete_lease_in(t, id, &format!("delete expired lease {id:?}")) {
                    Ok(()) | Err(Error::LeaseNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        for id in &expired {
            tracing::info!(lease = %id, "expired lease deleted");
        }
        Ok(expired)
    }

    /// Every digest some lease holds. A record naming no valid digest is corrupt: GC
    /// stops rather than guess what it protected.
    fn held_blobs(&self) -> Result<HashSet<Digest>> {
        let rows = self
            .inner
            .meta
            .scan(BLOB_LEASES, b"")
            .map_err(Error::meta("list leased blobs"))?;
        let live: HashSet<Vec<u8>> = self
            .inner
            .meta
            .scan(LEASES, b"")
            .map_err(Error::meta("list leases"))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut held = HashSet::new();
        for (k, _) in rows {
            let corrupt = |reason: String| Error::CorruptRecord {
                table: BLOB_LEASES,
                key: String::from_utf8_lossy(&k).into_owned(),
                reason,
            };
            let at = k
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt("no separator".into()))?;
            if !live.contains(&k[at + 1..]) {
                // a record left for a lease that is gone protects nothing
                continue;
            }
            let digest = std::str::from_utf8(&k[..at])
                .map_err(|_| corrupt("not UTF-8".into()))?
                .parse::<Digest>()
                .map_err(|e| corrupt(e.to_string()))?;
            held.insert(digest);
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;
    use std::sync::Arc;
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path(), Arc::new(MemStore::default())).unwrap();
        (dir, s)
    }

    #[test]
    fn delete_refuses_leased_blobs_and_names_the_lease() {
        let (_d, s) = store();
        let d = s.put(b"blob").unwrap();
        s.create_lease("holder", None).unwrap();
        s.add_to_lease("holder", &d).unwrap();
        let err = s.delete(&d).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("holder") && msg.contains(&d.to_string()),
            "{msg}"
        );
        assert!(s.exists(&d).unwrap());
        s.remove_from_lease("holder", &d).unwrap();
        s.delete(&d).unwrap();
        assert!(!s.exists(&d).unwrap());
        assert!(s.delete(&d).unwrap_err().is_not_found());
    }

    #[test]
    fn gc_deletes_expired_leases_then_their_blobs() {
        let (_d, s) = store();
        let past = SystemTime::now() - Duration::from_secs(5);
        let future = SystemTime::now() + Duration::from_secs(3600);
        s.create_lease("old", Some(past)).unwrap();
        s.create_lease("young", Some(future)).unwrap();
        let a = s.put_in_lease("old", b"old blob").unwrap();
        let b = s.put_in_lease("young", b"young blob").unwrap();
        let root = s.put(b"rooted").unwrap();
        let loose = s.put(b"loose").unwrap();
        let report = s.gc(&HashSet::from([root])).unwrap();
        assert_eq!(report.expired_leases, vec!["old"]);
        let mut want = vec![a, loose];
        want.sort();
        assert_eq!(report.removed, want);
        assert_eq!(report.bytes_freed, 8 + 5);
        assert!(s.exists(&b).unwrap() && s.exists(&root).unwrap());
        assert!(s.lease("old").unwrap().is_none());
        // nothing left to do
        let again = s.gc(&HashSet::from([root])).unwrap();
        assert!(again.removed.is_empty() && again.bytes_freed == 0);
    }
}
