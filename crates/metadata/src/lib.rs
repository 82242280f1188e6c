//! The worker's metadata database: one embedded, crash-safe key-value store with named
//! tables, holding refs, snapshots, cache records and leases for the crates above it.
//!
//! It is the source of truth: a transaction is durable (fsynced) when `update` returns, and
//! a process killed at any point reopens to the last committed state. Callers see it only
//! through the narrow [`MetadataStore`] trait; [`RedbStore`] is the implementation (redb: a
//! pure-Rust copy-on-write B-tree, what bbolt is to upstream BuildKit), [`MemStore`] an
//! in-memory one for tests. Values are opaque bytes: each user owns its own encoding.
//!
//! The schema version is kept in the store itself; [`RedbStore::open`] runs the pending
//! [`Migration`]s in one transaction and refuses a database written by a newer version.
#![forbid(unsafe_code)]

mod mem;
mod redb_store;

pub use mem::MemStore;
pub use redb_store::RedbStore;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("metadata database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "metadata database {path} has schema version {found}, newer than this build supports ({supported})"
    )]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("metadata storage: {0}")]
    Storage(String),
    #[error("invalid table name {0:?}")]
    BadTable(String),
    /// An error raised by the caller inside a transaction; the transaction was rolled back.
    #[error("{0}")]
    Aborted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads and writes inside one transaction.
pub trait Txn {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes a key; returns whether it was there.
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool>;
}

/// The narrow interface every other crate uses.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn scan(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Runs `f` in a write transaction: all of its changes commit durably together when it
    /// returns `Ok`, none do when it returns `Err`. Write transactions are serialized.
    fn update(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<()>) -> Result<()>;

    fn put(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.update(&mut |t| t.put(table, key, value))
    }

    fn delete(&self, table: &str, key: &[u8]) -> Result<bool> {
        let mut found = false;
        self.update(&mut |t| {
            found = t.delete(table, key)?;
            Ok(())
        })?;
        Ok(found)
    }
}

/// One schema change, applied once, in order, when a database is opened.
pub struct Migration {
    /// The schema version this migration produces.
    pub version: u32,
    pub description: &'static str,
    pub apply: fn(&mut dyn Txn) -> Result<()>,
}

/// The table that records the schema version (reserved).
pub const META_TABLE: &str = "_meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Table names are plain identifiers, so that users cannot collide with internals.
pub(crate) fn check_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadTable(name.to_string()))
    }
}

/// Applies the migrations above the stored version; fails on a database that is newer.
pub(crate) fn migrate(txn: &mut dyn Txn, path: &str, migrations: &[Migration]) -> Result<u32> {
    let current = match txn.get(META_TABLE, SCHEMA_KEY)? {
        Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
        Some(_) => {
            return Err(Error::Open {
                path: path.to_string(),
                reason: "corrupt schema version".into(),
            });
        }
        None => 0,
    };
    let supported = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if current > supported {
        return Err(Error::TooNew {
            path: path.to_string(),
            found: current,
            supported,
        });
    }
    let mut version = current;
    for m in migrations.iter().filter(|m| m.version > current) {
        (m.apply)(txn)?;
        version = m.version;
    }
    txn.put(META_TABLE, SCHEMA_KEY, &version.to_be_bytes())?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The behaviour every implementation must have.
    pub(crate) fn exercise(store: &dyn MetadataStore) {
        store.put("refs", b"a/1", b"one").unwrap();
        store.put("refs", b"a/2", b"two").unwrap();
        store.put("refs", b"b/1", b"three").unwrap();
        assert_eq!(
            store.get("refs", b"a/1").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(store.get("refs", b"zz").unwrap(), None);
        assert_eq!(store.get("nosuchtable", b"a").unwrap(), None);
        let a: Vec<_> = store.scan("refs", b"a/").unwrap();
        assert_eq!(
            a,
            vec![
                (b"a/1".to_vec(), b"one".to_vec()),
                (b"a/2".to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(store.scan("refs", b"").unwrap().len(), 3);
        assert!(store.delete("refs", b"a/1").unwrap());
        assert!(!store.delete("refs", b"a/1").unwrap());

        // a failing transaction leaves nothing behind
        let err = store
            .update(&mut |t| {
                t.put("refs", b"c", b"x")?;
                Err(Error::Aborted("no".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Aborted(_)));
        assert_eq!(store.get("refs", b"c").unwrap(), None);

        // reads inside a transaction see its own writes
        store
            .update(&mut |t| {
                t.put("leases", b"l1", b"")?;
                assert!(t.get("leases", b"l1")?.is_some());
                assert_eq!(t.scan("leases", b"l")?.len(), 1);
                Ok(())
            })
            .unwrap();
        assert!(store.put("bad table", b"k", b"v").is_err());
    }

    #[test]
    fn mem_store_behaves() {
        exercise(&MemStore::default());
    }
}
