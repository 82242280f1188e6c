//! An in-memory store with the same semantics, for tests of the crates above.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{MetadataStore, Result, Txn, check_table};

type Tables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Default)]
pub struct MemStore {
    tables: Mutex<Tables>,
}

struct MemTxn(Tables);

impl Txn for MemTxn {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_table(table)?;
        Ok(self.0.get(table).and_then(|t| t.get(key).cloned()))
    }

    fn scan(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        check_table(table)?;
        Ok(self
            .0
            .get(table)
            .map(|t| {
                t.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        check_table(table)?;
        self.0
            .entry(table.to_string())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool> {
        check_table(table)?;
        Ok(self
            .0
            .get_mut(table)
            .is_some_and(|t| t.remove(key).is_some()))
    }
}

impl MetadataStore for MemStore {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        MemTxn(tables.clone()).get(table, key)
    }

    fn scan(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let txn = MemTxn(std::mem::take(&mut tables.clone()));
        txn.scan(table, prefix)
    }

    fn update(&self, f: &mut dyn FnMut(&mut dyn Txn) -> Result<()>) -> Result<()> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = MemTxn(tables.clone());
        f(&mut txn)?;
        *tables = txn.0;
        Ok(())
    }
}
