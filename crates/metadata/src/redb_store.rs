//! The redb-backed store.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::{Error, META_TABLE, MetadataStore, Migration, Result, Txn, check_table, migrate};

fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// A metadata database in one file (`<root>/metadata.redb` by convention).
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: String,
    version: u32,
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<RedbStore> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| Error::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut store = RedbStore {
            db,
            path: shown.clone(),
            version: 0,
        };
        let mut version = 0;
        store.update(&mut |t| {
            version = migrate(t, &shown, migrations)?;
            Ok(())
        })?;
        store.version = version;
        Ok(store)
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> u32 {
        self.version
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

struct WriteTxn<'a>(&'a redb::WriteTransaction);

impl Txn for WriteTxn<'_> {
    fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_table(name).or_else(|e| if name == META_TABLE { Ok(()) } else { Err(e) })?;
        let t = self.0.open_table(table(name)).map_err(storage)?;
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, name: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_table(name)?;
        let t = self.0.open_table(table(name)).map_err(storage)?;
        collect_prefix(&t, prefix)
    }

    fn put(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        check_table(name).or_else(|e| if name == META_TABLE { Ok(()) } else { Err(e) })?;
        let mut t = self.0.open_table(table(name)).map_err(storage)?;
        t.insert(key, value).map_err(storage)?;
        Ok(())
    }

    fn delete(&mut self, name: &str, key: &[u8]) -> Result<bool> {
        check_table(name)?;
        let mut t = self.0.open_table(table(name)).map_err(storage)?;
        let removed = t.remove(key).map_err(storage)?.is_some();
        Ok(removed)
    }
}

fn collect_prefix<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in t.range(prefix..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

impl MetadataStore for RedbStore {
    fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_table(name)?;
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, name: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_table(name)?;
        let r = self.db.begin_read().map_err(storage)?;
        let t = match r.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
        };
        collect_prefix(&t, prefix)
    }

    fn update(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<()>) -> Result<()> {
        let w = self.db.begin_write().map_err(storage)?;
        let result = f(&mut WriteTxn(&w));
        match result {
            Ok(()) => w.commit().map_err(storage),
            Err(e) => {
                w.abort().map_err(storage)?;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(t: &mut dyn Txn) -> Result<()> {
        t.put("mig", b"seed", b"1")
    }

    fn v2(t: &mut dyn Txn) -> Result<()> {
        let old = t.get("mig", b"seed")?.unwrap_or_default();
        t.put("mig", b"seed2", &old)
    }

    const V1: &[Migration] = &[Migration {
        version: 1,
        description: "seed",
        apply: v1,
    }];
    const V2: &[Migration] = &[
        Migration {
            version: 1,
            description: "seed",
            apply: v1,
        },
        Migration {
            version: 2,
            description: "copy seed",
            apply: v2,
        },
    ];

    #[test]
    fn redb_store_behaves() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("m.redb"), V1).unwrap();
        crate::tests::exercise(&s);
    }

    #[test]
    fn data_survives_reopen_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        {
            let s = RedbStore::open(&path, V1).unwrap();
            assert_eq!(s.schema_version(), 1);
            s.put("refs", b"k", b"v").unwrap();
        }
        let s = RedbStore::open(&path, V2).unwrap();
        assert_eq!(s.schema_version(), 2);
        assert_eq!(s.get("refs", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get("mig", b"seed2").unwrap().as_deref(), Some(&b"1"[..]));
        drop(s);
        // an older build refuses a newer database
        let err = RedbStore::open(&path, V1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooNew {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        std::fs::write(
            &path,
            b"this is not a database at all, not even close......",
        )
        .unwrap();
        let err = RedbStore::open(&path, V1).unwrap_err();
        assert!(err.to_string().contains("m.redb"), "{err}");
    }
}
