//! Leases: named sets of blobs that GC must keep, recorded in the metadata database.
//!
//! Tables (values are JSON or empty):
//! - `content.leases`: lease id → `{"created_ms": .., "expires_ms": ..}`;
//! - `content.lease_resources`: `<lease id> NUL <digest>` → empty;
//! - `content.blob_leases`: `<digest> NUL <lease id>` → empty, the reverse index that
//!   [`ContentStore::delete`] and GC read. Both indexes change in the same transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metadata::Txn;
use oci::Digest;
use serde::{Deserialize, Serialize};

use crate::{ContentStore, Error, Result};

pub(crate) const LEASES: &str = "content.leases";
pub(crate) const LEASE_RESOURCES: &str = "content.lease_resources";
pub(crate) const BLOB_LEASES: &str = "content.blob_leases";
const SEP: u8 = 0;

/// A lease: while it exists (and has not expired), GC keeps every blob recorded in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (1–255 characters of `[A-Za-z0-9._:/+-]`).
    pub id: String,
    /// When it was created (millisecond precision).
    pub created: SystemTime,
    /// When GC may delete it; `None` lives until deleted.
    pub expires: Option<SystemTime>,
}

impl Lease {
    /// Whether the lease has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    created_ms: u64,
    expires_ms: Option<u64>,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Lease ids are 1–255 characters of `[A-Za-z0-9._:/+-]`, so they cannot hold the key
/// separator.
fn check_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidLeaseId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 255 {
        return bad("must be 1 to 255 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:/+-".contains(&b))
    {
        return bad("only letters, digits and . _ : / + - are allowed");
    }
    Ok(())
}

fn key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a);
    k.push(SEP);
    k.extend_from_slice(b);
    k
}

fn prefix(a: &[u8]) -> Vec<u8> {
    key(a, b"")
}

/// The part of `k` after the first separator, as text.
fn second_part(table: &'static str, k: &[u8]) -> Result<String> {
    let corrupt = |reason: &str| Error::CorruptRecord {
        table,
        key: String::from_utf8_lossy(k).into_owned(),
        reason: reason.to_string(),
    };
    let at = k
        .iter()
        .position(|&b| b == SEP)
        .ok_or_else(|| corrupt("no separator"))?;
    String::from_utf8(k[at + 1..].to_vec()).map_err(|_| corrupt("not UTF-8"))
}

fn decode(id: &str, value: &[u8]) -> Result<Lease> {
    let r: Record = serde_json::from_slice(value).map_err(|e| Error::CorruptRecord {
        table: LEASES,
        key: id.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Lease {
        id: id.to_string(),
        created: from_ms(r.created_ms),
        expires: r.expires_ms.map(from_ms),
    })
}

/// A fresh lease id, `<prefix>-<pid>-<nanos>-<n>`, unique on this machine.
pub fn new_lease_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

impl ContentStore {
    /// Runs `f` in one metadata transaction. An error from `f` rolls it back and is
    /// returned as is; a database failure is reported as about `what`.
    pub(crate) fn txn<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut dyn Txn) -> Result<T>,
    ) -> Result<T> {
        let mut out: Option<Result<T>> = None;
        let res = self.inner.meta.update(&mut |t| match f(t) {
            Ok(v) => {
                out = Some(Ok(v));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                out = Some(Err(e));
                Err(metadata::Error::Aborted(msg))
            }
        });
        match (res, out) {
            (Ok(()), Some(v)) => v,
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(Error::meta(what)(e)),
            (Ok(()), None) => Err(Error::Metadata {
                what: what.to_string(),
                source: metadata::Error::Storage("transaction did not run".into()),
            }),
        }
    }

    /// Creates the lease `id`, which GC deletes after `expires` (if given).
    pub fn create_lease(&self, id: &str, expires: Option<SystemTime>) -> Result<Lease> {
        check_id(id)?;
        let now = SystemTime::now();
        let record = Record {
            created_ms: to_ms(now),
            expires_ms: expires.map(to_ms),
        };
        let value = serde_json::to_vec(&record).map_err(|e| Error::CorruptRecord {
            table: LEASES,
            key: id.to_string(),
            reason: e.to_string(),
        })?;
        let what = format!("create lease {id:?}");
        self.txn(&what, |t| {
            if t.get(LEASES, id.as_bytes())
                .map_err(Error::meta(&what))?
                .is_some()
            {
                return Err(Error::LeaseExists(id.to_string()));
            }
            t.put(LEASES, id.as_bytes(), &value)
                .map_err(Error::meta(&what))
        })?;
        tracing::debug!(lease = id, "lease created");
        decode(id, &value)
    }

    /// The lease `id`, if it exists.
    pub fn lease(&self, id: &str) -> Result<Option<Lease>> {
        let what = format!("read lease {id:?}");
        match self
            .inner
            .meta
            .get(LEASES, id.as_bytes())
            .map_err(Error::meta(what))?
        {
            Some(v) => decode(id, &v).map(Some),
            None => Ok(None),
        }
    }

    /// All leases, in id order.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let rows = self
            .inner
            .meta
            .scan(LEASES, b"")
            .map_err(Error::meta("list leases"))?;
        rows.iter()
            .map(|(k, v)| decode(&String::from_utf8_lossy(k), v))
            .collect()
    }

    /// Deletes the lease `id` and its records; the blobs it held become collectable.
    pub fn delete_lease(&self, id: &str) -> Result<()> {
        let what = format!("delete lease {id:?}");
        self.txn(&what, |t| delete_lease_in(t, id, &what))?;
        tracing::debug!(lease = id, "lease deleted");
        Ok(())
    }

    /// Records `digest` in the lease `id`. The blob need not be present yet (a job may
    /// lease what it is about to fetch).
    pub fn add_to_lease(&self, id: &str, digest: &Digest) -> Result<()> {
        let _shared = self.shared();
        self.record_in_lease(id, digest)
    }

    /// Records `digest` in lease `id`; the caller holds the GC lock shared.
    pub(crate) fn record_in_lease(&self, id: &str, digest: &Digest) -> Result<()> {
        let what = format!("add {digest} to lease {id:?}");
        let d = digest.to_string();
        self.txn(&what, |t| {
            if t.get(LEASES, id.as_bytes())
                .map_err(Error::meta(&what))?
                .is_none()
            {
                return Err(Error::LeaseNotFound(id.to_string()));
            }
            t.put(LEASE_RESOURCES, &key(id.as_bytes(), d.as_bytes()), b"")
                .map_err(Error::meta(&what))?;
            t.put(BLOB_LEASES, &key(d.as_bytes(), id.as_bytes()), b"")
                .map_err(Error::meta(&what))
        })
    }

    /// Removes `digest` from the lease `id`; returns whether it was recorded there.
    pub fn remove_from_lease(&self, id: &str, digest: &Digest) -> Result<bool> {
        let what = format!("remove {digest} from lease {id:?}");
        let d = digest.to_string();
        self.txn(&what, |t| {
            if t.get(LEASES, id.as_bytes())
                .map_err(Error::meta(&what))?
                .is_none()
            {
                return Err(Error::LeaseNotFound(id.to_string()));
            }
            let was = t
                .delete(LEASE_RESOURCES, &key(id.as_bytes(), d.as_bytes()))
                .map_err(Error::meta(&what))?;
            t.delete(BLOB_LEASES, &key(d.as_bytes(), id.as_bytes()))
                .map_err(Error::meta(&what))?;
            Ok(was)
        })
    }

    /// The blobs recorded in the lease `id`, in digest order.
    pub fn lease_blobs(&self, id: &str) -> Result<Vec<Digest>> {
        if self.lease(id)?.is_none() {
            return Err(Error::LeaseNotFound(id.to_string()));
        }
        let rows = self
            .inner
            .meta
            .scan(LEASE_RESOURCES, &prefix(id.as_bytes()))
            .map_err(Error::meta(format!("list blobs of lease {id:?}")))?;
        rows.iter()
            .map(|(k, _)| {
                let d = second_part(LEASE_RESOURCES, k)?;
                d.parse()
                    .map_err(|e: oci::DigestError| Error::CorruptRecord {
                        table: LEASE_RESOURCES,
                        key: String::from_utf8_lossy(k).into_owned(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// The leases holding `digest`, in id order.
    pub fn blob_leases(&self, digest: &Digest) -> Result<Vec<String>> {
        let rows = self
            .inner
            .meta
            .scan(BLOB_LEASES, &prefix(digest.to_string().as_bytes()))
            .map_err(Error::meta(format!("list leases of {digest}")))?;
        rows.iter()
            .map(|(k, _)| second_part(BLOB_LEASES, k))
            .collect()
    }

    /// Creates the lease `id` and returns a guard that deletes it when dropped: for a
    /// running job, whose blobs are safe from GC until it ends.
    pub fn lease_guard(&self, id: &str, expires: Option<SystemTime>) -> Result<LeaseGuard> {
        self.create_lease(id, expires)?;
        Ok(LeaseGuard {
            store: self.clone(),
            id: id.to_string(),
            armed: true,
        })
    }
}

/// Deletes a lease and both index entries of each of its blobs, inside `t`.
pub(crate) fn delete_lease_in(t: &mut dyn Txn, id: &str, what: &str) -> Result<()> {
    if !t.delete(LEASES, id.as_bytes()).map_err(Error::meta(what))? {
        return Err(Error::LeaseNotFound(id.to_string()));
    }
    let rows = t
        .scan(LEASE_RESOURCES, &prefix(id.as_bytes()))
        .map_err(Error::meta(what))?;
    for (k, _) in rows {
        let d = second_part(LEASE_RESOURCES, &k)?;
        t.delete(LEASE_RESOURCES, &k).map_err(Error::meta(what))?;
        t.delete(BLOB_LEASES, &key(d.as_bytes(), id.as_bytes()))
            .map_err(Error::meta(what))?;
    }
    Ok(())
}

/// A lease that lives as long as this value: dropping it deletes the lease (errors are
/// logged). Blobs written through it are recorded in the lease.
#[derive(Debug)]
pub struct LeaseGuard {
    store: ContentStore,
    id: String,
    armed: bool,
}

impl LeaseGuard {
    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records `digest` in this lease.
    pub fn add(&self, digest: &Digest) -> Result<()> {
        self.store.add_to_lease(&self.id, digest)
    }

    /// Starts an ingest whose blob is recorded in this lease.
    pub fn writer(&self) -> Result<crate::Writer> {
        Ok(self.store.writer()?.in_lease(self.id.clone()))
    }

    /// [`ContentStore::put`] into this lease.
    pub fn put(&self, data: &[u8]) -> Result<Digest> {
        self.store.put_in_lease(&self.id, data)
    }

    /// [`ContentStore::ingest`] into this lease.
    pub fn ingest(
        &self,
        reader: impl std::io::Read,
        expected: Option<(Digest, u64)>,
    ) -> Result<Digest> {
        self.store.ingest_in_lease(&self.id, reader, expected)
    }

    /// Keeps the lease after the guard is gone; returns its id.
    pub fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.id)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.store.delete_lease(&self.id) {
            Ok(()) | Err(Error::LeaseNotFound(_)) => {}
            Err(e) => tracing::warn!(lease = %self.id, error = %e, "cannot delete lease"),
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

    #[test]
    fn lease_ids_are_checked() {
        let (_d, s) = store();
        for bad in ["", "a\0b", "with space", &"x".repeat(256)] {
            let err = s.create_lease(bad, None).unwrap_err();
            assert!(
                matches!(err, Error::InvalidLeaseId { .. }),
                "{bad:?}: {err}"
            );
        }
        s.create_lease("buildkit/job-1:a+b.c_d", None).unwrap();
        let err = s.create_lease("buildkit/job-1:a+b.c_d", None).unwrap_err();
        assert!(matches!(err, Error::LeaseExists(_)), "{err}");
    }

    #[test]
    fn both_indexes_follow_adds_and_removes() {
        let (_d, s) = store();
        let a = s.put(b"a").unwrap();
        let b = s.put(b"b").unwrap();
        s.create_lease("l1", None).unwrap();
        s.create_lease("l2", None).unwrap();
        s.add_to_lease("l1", &a).unwrap();
        s.add_to_lease("l1", &b).unwrap();
        s.add_to_lease("l2", &a).unwrap();
        assert_eq!(s.blob_leases(&a).unwrap(), vec!["l1", "l2"]);
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(s.lease_blobs("l1").unwrap(), want);
        assert!(s.remove_from_lease("l1", &a).unwrap());
        assert!(!s.remove_from_lease("l1", &a).unwrap());
        assert_eq!(s.blob_leases(&a).unwrap(), vec!["l2"]);
        s.delete_lease("l2").unwrap();
        assert!(s.blob_leases(&a).unwrap().is_empty());
        assert!(matches!(s.delete_lease("l2"), Err(Error::LeaseNotFound(_))));
        assert!(matches!(
            s.add_to_lease("nope", &a),
            Err(Error::LeaseNotFound(_))
        ));
    }

    #[test]
    fn guard_deletes_its_lease_unless_kept() {
        let (_d, s) = store();
        {
            let g = s.lease_guard("job", None).unwrap();
            let d = g.put(b"x").unwrap();
            assert_eq!(s.blob_leases(&d).unwrap(), vec!["job"]);
        }
        assert!(s.lease("job").unwrap().is_none());
        assert!(s.blob_leases(&Digest::of(b"x")).unwrap().is_empty());
        let id = s.lease_guard("kept", None).unwrap().keep();
        assert_eq!(id, "kept");
        assert!(s.lease("kept").unwrap().is_some());
    }

    #[test]
    fn commit_into_missing_lease_fails_and_leaves_no_temp() {
        let (_d, s) = store();
        let err = s.put_in_lease("ghost", b"data").unwrap_err();
        assert!(
            matches!(err, Error::LeaseNotFound(ref l) if l == "ghost"),
            "{err}"
        );
        assert!(!s.exists(&Digest::of(b"data")).unwrap());
        assert_eq!(
            std::fs::read_dir(s.dir().join("ingest")).unwrap().count(),
            0
        );
    }

    #[test]
    fn expiry_and_ids() {
        let now = SystemTime::now();
        let l = Lease {
            id: "x".into(),
            created: now,
            expires: Some(now),
        };
        assert!(l.is_expired(now));
        assert!(!l.is_expired(now - Duration::from_secs(1)));
        let a = new_lease_id("job");
        let b = new_lease_id("job");
        assert_ne!(a, b);
        assert!(check_id(&a).is_ok(), "{a}");
    }
}
