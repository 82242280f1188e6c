//! Checksums of committed snapshots, kept per ref.
//!
//! Each ref has a [`Tree`] (what is known of its entries and their digests) and a table
//! of finished results. Both live in memory for the most recently used refs and in the
//! metadata store for all of them (see [`crate::record`] for the layout): a result
//! asked for again is answered without touching the tree, and a new path in a known
//! ref reuses every directory and file digest computed before, across restarts too.
//!
//! Work on one ref is serialized (its state is behind a mutex); different refs hash in
//! parallel. A ref's records are written in one transaction after each computed
//! checksum; failing to write them costs only the reuse, never the result.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use metadata::MetadataStore;
use oci::Digest;

use crate::fs::Fs;
use crate::record::{self, RECORDS, RESULTS};
use crate::tree::Tree;
use crate::{ChecksumOptions, Counters, Error, Stats, select};

/// How many refs keep their trees in memory; the others are reloaded from the store.
const MEMORY_REFS: usize = 64;

/// Content checksums of immutable refs, memoized in memory and in the metadata store.
///
/// A ref id must name content that never changes (a committed snapshot): results are
/// reused for it without looking at the files again. Call [`forget`](Self::forget)
/// when the snapshot is removed.
pub struct ContentHasher {
    md: Arc<dyn MetadataStore>,
    refs: Mutex<Refs>,
    counters: Counters,
}

#[derive(Default)]
struct Refs {
    map: HashMap<String, Slot>,
    clock: u64,
}

struct Slot {
    state: Arc<Mutex<RefState>>,
    used: u64,
}

#[derive(Default)]
struct RefState {
    /// Loaded from the store on first use.
    tree: Option<Tree>,
    /// Finished checksums by (options fingerprint, path as requested).
    results: HashMap<(Digest, String), Digest>,
    /// Set by `forget`: whoever waited on this state must take a fresh one.
    forgotten: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; should something, the state is still a
    // set of true facts about the ref.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_ref(ref_id: &str) -> Result<(), Error> {
    let reason = if ref_id.is_empty() {
        "empty"
    } else if ref_id.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidRef {
        id: ref_id.to_string(),
        reason,
    })
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentHasher")
            .field("refs_in_memory", &lock(&self.refs).map.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ContentHasher {
    /// A hasher keeping its records in `md` (tables `contenthash.records` and
    /// `contenthash.results`).
    pub fn new(md: Arc<dyn MetadataStore>) -> ContentHasher {
        ContentHasher {
            md,
            refs: Mutex::new(Refs::default()),
            counters: Counters::default(),
        }
    }

    /// The content digest of `path` in the immutable ref `ref_id`, whose files are
    /// under `root`. Same result as [`crate::checksum`], reusing what earlier calls for
    /// this ref computed; `root` is not even opened when they cover the request.
    pub fn checksum_ref(
        &self,
        ref_id: &str,
        root: &Path,
        path: &str,
        opts: &ChecksumOptions,
    ) -> Result<Digest, Error> {
        check_ref(ref_id)?;
        let fingerprint = opts.fingerprint();
        let memo_key = (fingerprint, path.to_string());
        loop {
            let slot = self.slot(ref_id);
            let mut state = lock(&slot);
            if state.forgotten {
                continue;
            }
            if let Some(d) = state.results.get(&memo_key) {
                self.counters.results_reused.fetch_add(1, Ordering::Relaxed);
                return Ok(*d);
            }
            let result_key = record::result_key(ref_id, &fingerprint, path);
            if let Some(value) = self.md.get(RESULTS, &result_key)? {
                match record::decode_digest(&value) {
                    Some(d) => {
                        self.counters.results_reused.fetch_add(1, Ordering::Relaxed);
                        state.results.insert(memo_key, d);
                        return Ok(d);
                    }
                    None => tracing::warn!(ref_id, path, "ignoring a corrupt content hash result"),
                }
            }

            let mut tree = match state.tree.take() {
                Some(tree) => tree,
                None => self.load(ref_id)?,
            };
            let started = Instant::now();
            let before = self.counters.snapshot();
            let mut fs = Fs::new(root, &self.counters);
            let result = select::checksum(&mut tree, &mut fs, path, opts);
            if let Ok(d) = &result {
                self.persist(ref_id, &mut tree, &result_key, d);
                state.results.insert(memo_key, *d);
                let after = self.counters.snapshot();
                tracing::debug!(
                    ref_id,
                    path,
                    digest = %d,
                    files_hashed = after.files_hashed.saturating_sub(before.files_hashed),
                    dirs_listed = after.dirs_listed.saturating_sub(before.dirs_listed),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "content checksum"
                );
            }
            // Whatever was learned before an error is still true of the ref.
            state.tree = Some(tree);
            return result;
        }
    }

    /// Drops everything recorded for `ref_id`, in memory and in the store (call it when
    /// the snapshot is removed). Waits for a checksum of the ref in progress.
    pub fn forget(&self, ref_id: &str) -> Result<(), Error> {
        check_ref(ref_id)?;
        let slot = lock(&self.refs).map.get(ref_id).map(|s| s.state.clone());
        // Lock order as in `checksum_ref`: never wait for a ref's state while holding the
        // map, but hold the map while deleting, so that no caller loads the rows being
        // deleted into a fresh state.
        let mut state = slot.as_ref().map(|s| lock(s));
        if let Some(state) = state.as_mut() {
            state.forgotten = true;
            state.tree = None;
            state.results.clear();
        }
        let mut refs = lock(&self.refs);
        if let (Some(slot), Some(current)) = (&slot, refs.map.get(ref_id)) {
            if Arc::ptr_eq(slot, &current.state) {
                refs.map.remove(ref_id);
            }
        }
        self.delete_rows(ref_id)
    }

    /// What this hasher has done so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The state of `ref_id`, created if needed; evicts the least recently used ref's
    /// state from memory beyond [`MEMORY_REFS`].
    fn slot(&self, ref_id: &str) -> Arc<Mutex<RefState>> {
        let mut refs = lock(&self.refs);
        refs.clock += 1;
        let now = refs.clock;
        if let Some(slot) = refs.map.get_mut(ref_id) {
            slot.used = now;
            return slot.state.clone();
        }
        if refs.map.len() >= MEMORY_REFS {
            let oldest = refs
                .map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                refs.map.remove(&oldest);
            }
        }
        let state = Arc::new(Mutex::new(RefState::default()));
        refs.map.insert(
            ref_id.to_string(),
            Slot {
                state: state.clone(),
                used: now,
            },
        );
        state
    }

    /// The tree recorded for `ref_id`; an empty one when there is none, or when the
    /// records are not consistent (they are then dropped).
    fn load(&self, ref_id: &str) -> Result<Tree, Error> {
        let prefix = record::key(ref_id, b"");
        let rows = self.md.scan(RECORDS, &prefix)?;
        if rows.is_empty() {
            return Ok(Tree::default());
        }
        let mut nodes = HashMap::with_capacity(rows.len());
        for (k, v) in rows {
            let Some(node) = record::decode(&v) else {
                nodes.clear();
                break;
            };
            nodes.insert(k[prefix.len()..].to_vec(), node);
        }
        match Tree::from_nodes(nodes) {
            Some(tree) => {
                tracing::debug!(ref_id, entries = tree.len(), "content hash records loaded");
                Ok(tree)
            }
            None => {
                tracing::warn!(ref_id, "dropping inconsistent content hash records");
                self.delete_rows(ref_id)?;
                Ok(Tree::default())
            }
        }
    }

    /// Writes the entries of `tree` that changed and the result, in one transaction.
    fn persist(&self, ref_id: &str, tree: &mut Tree, result_key: &[u8], digest: &Digest) {
        let keys = tree.take_dirty();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .filter_map(|k| {
                tree.node(k)
                    .map(|n| (record::key(ref_id, k), record::encode(n)))
            })
            .collect();
        let written = self.md.update(&mut |t| {
            for (k, v) in &rows {
                t.put(RECORDS, k, v)?;
            }
            t.put(RESULTS, result_key, digest.as_bytes())
        });
        if let Err(e) = written {
            tracing::warn!(ref_id, error = %e, "content hash records not saved");
            tree.restore_dirty(keys);
        }
    }

    fn delete_rows(&self, ref_id: &str) -> Result<(), Error> {
        let prefix = record::key(ref_id, b"");
        self.md.update(&mut |t| {
            for table in [RECORDS, RESULTS] {
                for (k, _) in t.scan(table, &prefix)? {
                    t.delete(table, &k)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use metadata::MemStore;

    use super::*;

    fn tree_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "x").unwrap();
        std::fs::write(d.path().join("top"), "y").unwrap();
        d
    }

    #[test]
    fn a_hasher_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + fmt::Debug>() {}
        shared::<ContentHasher>();
    }

    #[test]
    fn ref_ids_are_checked() {
        let h = ContentHasher::new(Arc::new(MemStore::default()));
        let d = tree_dir();
        for bad in ["", "a\0b"] {
            let err = h
                .checksum_ref(bad, d.path(), "/", &ChecksumOptions::default())
                .unwrap_err();
            assert!(matches!(err, Error::InvalidRef { .. }), "{err}");
            assert!(h.forget(bad).is_err());
        }
    }

    #[test]
    fn memory_is_bounded_and_evicted_refs_reload() {
        let md: Arc<dyn MetadataStore> = Arc::new(MemStore::default());
        let h = ContentHasher::new(md);
        let d = tree_dir();
        let opts = ChecksumOptions::default();
        let first = h.checksum_ref("r0", d.path(), "/a", &opts).unwrap();
        for i in 1..=MEMORY_REFS {
            h.checksum_ref(&format!("r{i}"), d.path(), "/top", &opts)
                .unwrap();
        }
        assert_eq!(lock(&h.refs).map.len(), MEMORY_REFS);
        assert!(!lock(&h.refs).map.contains_key("r0"), "least recently used");
        // r0's records come back from the store: /a/b is known, nothing is read.
        let before = h.stats();
        let sub = h.checksum_ref("r0", d.path(), "/a/b", &opts).unwrap();
        let after = h.stats();
        assert_eq!(after.files_hashed, before.files_hashed);
        assert_eq!(after.dirs_listed, before.dirs_listed);
        assert_ne!(sub, first);
        assert_eq!(sub, crate::checksum(d.path(), "/a/b", &opts).unwrap());
    }

    #[test]
    fn corrupt_records_are_dropped_and_recomputed() {
        let md: Arc<dyn MetadataStore> = Arc::new(MemStore::default());
        let d = tree_dir();
        let opts = ChecksumOptions::default();
        let want = ContentHasher::new(md.clone())
            .checksum_ref("r", d.path(), "/", &opts)
            .unwrap();
        md.put(RECORDS, &record::key("r", b"a"), b"garbage")
            .unwrap();
        let h = ContentHasher::new(md.clone());
        assert_eq!(h.checksum_ref("r", d.path(), "/a", &opts).unwrap(), {
            crate::checksum(d.path(), "/a", &opts).unwrap()
        });
        assert_eq!(h.checksum_ref("r", d.path(), "/", &opts).unwrap(), want);
        assert!(h.stats().files_hashed > 0, "recomputed from the files");
        let rows = md.scan(RECORDS, &record::key("r", b"")).unwrap();
        assert!(rows.iter().all(|(_, v)| record::decode(v).is_some()));
    }
}
