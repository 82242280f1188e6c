//! The persistent cache: cache key → the ids of the results it produced, in the metadata
//! DB, so results are found again after a restart.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metadata::MetadataStore;
use oci::Digest;
use serde::{Deserialize, Serialize};

const TABLE: &str = "solver.cache";

/// One cache record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Result ids, one per output.
    pub results: Vec<String>,
    /// Unix seconds.
    pub created: u64,
}

/// The cache records, by key.
#[derive(Clone, Debug)]
pub struct PersistentCache {
    md: Arc<dyn MetadataStore>,
}

impl PersistentCache {
    pub fn new(md: Arc<dyn MetadataStore>) -> PersistentCache {
        PersistentCache { md }
    }

    /// The record for `key`; a record that does not decode counts as absent.
    pub fn get(&self, key: &Digest) -> Result<Option<CacheRecord>, metadata::Error> {
        Ok(self
            .md
            .get(TABLE, key.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn put(&self, key: &Digest, results: Vec<String>) -> Result<(), metadata::Error> {
        let rec = CacheRecord {
            results,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        self.md.put(TABLE, key.as_bytes(), &bytes)
    }

    pub fn remove(&self, key: &Digest) -> Result<bool, metadata::Error> {
        self.md.delete(TABLE, key.as_bytes())
    }

    /// Removes every record that names one of `ids` among its results (they were
    /// pruned); returns how many went.
    pub fn remove_results(
        &self,
        ids: &std::collections::HashSet<String>,
    ) -> Result<usize, metadata::Error> {
        let stale: Vec<Vec<u8>> = self
            .all()?
            .into_iter()
            .filter(|(_, r)| r.results.iter().any(|id| ids.contains(id)))
            .map(|(k, _)| k)
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        self.md.update(&mut |t| {
            for k in &stale {
                t.delete(TABLE, k)?;
            }
            Ok(())
        })?;
        Ok(stale.len())
    }

    /// Every record (for disk usage and pruning).
    pub fn all(&self) -> Result<Vec<(Vec<u8>, CacheRecord)>, metadata::Error> {
        Ok(self
            .md
            .scan(TABLE, b"")?
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|r| (k, r)))
            .collect())
    }
}
