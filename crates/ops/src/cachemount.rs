//! Cache mounts (`RUN --mount=type=cache`): directories that persist across builds by id,
//! shared, private or locked as the mount asks. Their contents never enter a cache key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci::Digest;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The sharing mode of a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// All users at once use the same directory.
    Shared,
    /// A user that finds the directory busy gets another one.
    Private,
    /// Users take turns.
    Locked,
}

#[derive(Default)]
struct IdState {
    /// Users of each instance directory.
    users: Vec<usize>,
    lock: Arc<AsyncMutex<()>>,
}

/// The cache mount directories under one root (each instance a cache record, held
/// while in use).
#[derive(Debug)]
pub struct CacheMounts {
    root: PathBuf,
    cache: Arc<cache::CacheManager>,
    state: Arc<Mutex<HashMap<String, IdState>>>,
}

impl std::fmt::Debug for IdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdState")
            .field("users", &self.users)
            .finish()
    }
}

/// A cache directory in use; released when dropped.
#[derive(Debug)]
pub struct CacheMountGuard {
    pub path: PathBuf,
    /// Whether the directory was created for this use (seed it from the mount's source).
    pub fresh: bool,
    id: String,
    instance: usize,
    state: Arc<Mutex<HashMap<String, IdState>>>,
    _lock: Option<OwnedMutexGuard<()>>,
    _hold: cache::Hold,
}

impl Drop for CacheMountGuard {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = state.get_mut(&self.id)
            && let Some(u) = s.users.get_mut(self.instance)
        {
            *u = u.saturating_sub(1);
        }
    }
}

impl CacheMounts {
    /// The cache mounts of `cache`'s worker.
    pub fn new(cache: Arc<cache::CacheManager>) -> CacheMounts {
        CacheMounts {
            root: cache.cache_mounts_root().to_path_buf(),
            cache,
            state: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn dir(&self, id: &str, instance: usize) -> PathBuf {
        self.root
            .join(Digest::of(id.as_bytes()).hex())
            .join(instance.to_string())
    }

    fn record_id(id: &str, instance: usize) -> String {
        cache::CacheManager::cache_mount_id(&Digest::of(id.as_bytes()).hex(), instance)
    }

    /// Takes the cache directory for `id` as `sharing` says, waiting for a locked one.
    pub async fn acquire(&self, id: &str, sharing: Sharing) -> Result<CacheMountGuard, String> {
        let lock = if sharing == Sharing::Locked {
            let l = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.entry(id.to_string()).or_default().lock.clone()
            };
            Some(l.lock_owned().await)
        } else {
            None
        };
        let instance = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let s = state.entry(id.to_string()).or_default();
            if s.users.is_empty() {
                s.users.push(0);
            }
            let i = match sharing {
                Sharing::Shared | Sharing::Locked => 0,
                Sharing::Private => match s.users.iter().position(|u| *u == 0) {
                    Some(i) => i,
                    None => {
                        s.users.push(0);
                        s.users.len() - 1
                    }
                },
            };
            s.users[i] += 1;
            i
        };
        // A prune moving the directory aside holds it off only for a moment.
        let record = Self::record_id(id, instance);
        let hold = loop {
            match self.cache.hold(&record) {
                Some(h) => break h,
                None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let path = self.dir(id, instance);
        let fresh = !path.exists();
        let guard = CacheMountGuard {
            path: path.clone(),
            fresh,
            id: id.to_string(),
            instance,
            state: self.state.clone(),
            _lock: lock,
            _hold: hold,
        };
        self.cache.used(
            &record,
            cache::RecordType::ExecCacheMount,
            &format!("cached mount {id}"),
        );
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cache mount {id}: {}: {e}", path.display()))?;
        Ok(guard)
    }

    /// The root of all cache mount directories.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sharing_modes() {
        let dir = tempfile::tempdir().unwrap();
        let md: Arc<dyn metadata::MetadataStore> = Arc::new(metadata::MemStore::default());
        let snap: Arc<dyn snapshot::Snapshotter> = Arc::new(
            snapshot::NativeSnapshotter::new(&dir.path().join("snapshots"), md.clone()).unwrap(),
        );
        let records = cache::CacheManager::new(md, snap, dir.path());
        let c = CacheMounts::new(records.clone());
        let a = c.acquire("go", Sharing::Shared).await.unwrap();
        let b = c.acquire("go", Sharing::Shared).await.unwrap();
        assert_eq!(a.path, b.path);
        assert!(a.fresh);
        let p = c.acquire("go", Sharing::Private).await.unwrap();
        assert_ne!(
            p.path, a.path,
            "busy: a private user gets its own directory"
        );
        drop((a, b));
        let p2 = c.acquire("go", Sharing::Private).await.unwrap();
        assert_eq!(p2.path, c.dir("go", 0), "free again");
        drop((p, p2));
        let l1 = c.acquire("x", Sharing::Locked).await.unwrap();
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            c.acquire("x", Sharing::Locked),
        )
        .await;
        assert!(second.is_err(), "a locked cache waits");
        drop(l1);
        let l2 = c.acquire("x", Sharing::Locked).await.unwrap();
        assert!(!l2.fresh);
        let held = CacheMounts::record_id("x", 0);
        assert!(records.holds().is_held(&held), "in use: held");
        drop(l2);
        assert!(!records.holds().is_held(&held));
        let recs = records.records().unwrap();
        let x = recs.iter().find(|r| r.id == held).expect("a cache record");
        assert_eq!(x.description, "cached mount x");
        assert_eq!(x.usage_count, 2);
    }
}
