//! The records, their usage, and removing them.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metadata::MetadataStore;
use serde::{Deserialize, Serialize};
use snapshot::{Kind, Snapshotter};

use crate::filter::{Filter, any_matches};
use crate::holds::{Hold, Holds};
use crate::{Error, PruneOptions, RecordType, UsageRecord};

/// The metadata table of records: id → JSON [`Meta`].
pub const TABLE: &str = "cache.records";
/// Prefix of cache mount record ids.
const CACHE_MOUNT: &str = "cachemount/";
/// Prefix of the record ids of kept local source directories.
const LOCAL_SOURCE: &str = "localsource/";
/// Where kept local source directories live, under the worker root.
const LOCAL_SOURCES_DIR: &str = "local-sources";

/// What the cache keeps about a record besides what the snapshotter knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// What made it.
    #[serde(rename = "type", default)]
    pub record_type: RecordType,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// Unix nanoseconds (0: unknown).
    #[serde(default)]
    pub created: u64,
    /// Unix nanoseconds of the last use (0: never used).
    #[serde(default)]
    pub last_used: u64,
    /// Uses by builds.
    #[serde(default)]
    pub usage_count: u64,
    /// Apparent size in bytes, once computed (immutable records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Called with the ids of removed records, to forget what else refers to them (cache
/// keys, checksums).
pub type Cleanup = Arc<dyn Fn(&[String]) + Send + Sync>;

/// What a prune removed.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// The removed records, in removal order.
    pub removed: Vec<UsageRecord>,
    /// Their total size.
    pub bytes_freed: u64,
}

/// The records of one worker.
pub struct CacheManager {
    md: Arc<dyn MetadataStore>,
    snapshotter: Arc<dyn Snapshotter>,
    root: PathBuf,
    mounts_root: PathBuf,
    holds: Arc<Holds>,
    cleanups: Mutex<Vec<Cleanup>>,
    /// Key prefixes of view snapshots that only keep a record for later reuse (a local
    /// source's previous copy): they do not make it in use, and go with it.
    pin_prefixes: Mutex<Vec<String>>,
    /// One prune at a time.
    pruning: Mutex<()>,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    to_ns(SystemTime::now())
}

fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn from_ns(ns: u64) -> Option<SystemTime> {
    (ns > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ns))
}

/// A name part unique to `id` (its characters that are safe in a file name).
fn file_name_of(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Bytes of everything under `path` as `du -sb` counts them: the apparent size of every
/// inode (directories and symlinks too), hard links once, symlinks not followed.
pub(crate) fn apparent_size(path: &Path) -> Result<u64, Error> {
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = match std::fs::symlink_metadata(&p) {
            Ok(md) => md,
            // Removed while walking (a cache mount in use): not there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("stat", &p)(e)),
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.size();
        if md.is_dir() {
            let entries = match std::fs::read_dir(&p) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read directory", &p)(e)),
            };
            for e in entries {
                todo.push(e.map_err(io("read directory", &p))?.path());
            }
        }
    }
    Ok(total)
}

impl CacheManager {
    /// The records of the worker rooted at `root` (cache mounts under
    /// `root/cachemounts`), snapshots in `snapshotter`, metadata in `md`.
    pub fn new(
        md: Arc<dyn MetadataStore>,
        snapshotter: Arc<dyn Snapshotter>,
        root: &Path,
    ) -> Arc<CacheManager> {
        Arc::new(CacheManager {
            md,
            snapshotter,
            root: root.to_path_buf(),
            mounts_root: root.join("cachemounts"),
            holds: Arc::new(Holds::default()),
            cleanups: Mutex::new(Vec::new()),
            pin_prefixes: Mutex::new(Vec::new()),
            pruning: Mutex::new(()),
        })
    }

    /// Where cache mount directories live.
    pub fn cache_mounts_root(&self) -> &Path {
        &self.mounts_root
    }

    /// The record id of instance `instance` of the cache mount whose id digests to
    /// `hex` (its directory is `cachemounts/<hex>/<instance>`).
    pub fn cache_mount_id(hex: &str, instance: usize) -> String {
        format!("{CACHE_MOUNT}{hex}/{instance}")
    }

    /// The record id of the kept local source directory `local-sources/<key>`.
    pub fn local_source_id(key: &str) -> String {
        format!("{LOCAL_SOURCE}{key}")
    }

    /// The directory of a directory record (a cache mount or a kept local source), and
    /// the directory it lives in.
    fn record_dir(&self, id: &str) -> Option<(PathBuf, PathBuf)> {
        let (base, rest) = if let Some(rest) = id.strip_prefix(CACHE_MOUNT) {
            (self.mounts_root.clone(), rest)
        } else if let Some(rest) = id.strip_prefix(LOCAL_SOURCE) {
            (self.root.join(LOCAL_SOURCES_DIR), rest)
        } else {
            return None;
        };
        // Ids come from directory names: nothing that could leave the base.
        if rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return None;
        }
        Some((base.join(rest), base))
    }

    /// Holds record `id` (see [`Holds::hold`]).
    pub fn hold(&self, id: &str) -> Option<Hold> {
        self.holds.hold(id)
    }

    /// The holds.
    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    /// Views whose keys start with `prefix` pin records for reuse only: such a record is
    /// not in use, and a prune removes the pin with it.
    pub fn add_pin_prefix(&self, prefix: &str) {
        self.pin_prefixes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.to_string());
    }

    fn is_pin(&self, key: &str) -> bool {
        self.pin_prefixes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| key.starts_with(p.as_str()))
    }

    /// Registers what to forget when records go.
    pub fn on_remove(&self, cleanup: Cleanup) {
        self.cleanups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cleanup);
    }

    fn meta(&self, id: &str) -> Result<Option<Meta>, Error> {
        Ok(self
            .md
            .get(TABLE, id.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn update(&self, id: &str, f: impl Fn(&mut Meta)) -> Result<(), Error> {
        self.md.update(&mut |txn| {
            let mut meta: Meta = txn
                .get(TABLE, id.as_bytes())?
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or_default();
            f(&mut meta);
            let bytes = serde_json::to_vec(&meta).unwrap_or_default();
            txn.put(TABLE, id.as_bytes(), &bytes)
        })?;
        Ok(())
    }

    /// Notes that record `id` was just made, by `record_type`, described so.
    pub fn created(&self, id: &str, record_type: RecordType, description: &str) {
        let now = now_ns();
        let result = self.update(id, |m| {
            m.record_type = record_type;
            m.description = description.to_string();
            m.created = now;
            m.last_used = now;
            m.usage_count = 1;
        });
        if let Err(e) = result {
            tracing::warn!(id, error = %e, "recording a new cache record failed");
        }
    }

    /// Notes a use of record `id` by a build; a record not seen before gets
    /// `record_type` and `description`.
    pub fn used(&self, id: &str, record_type: RecordType, description: &str) {
        let now = now_ns();
        let result = self.update(id, |m| {
            if m.created == 0 {
                m.created = now;
                m.record_type = record_type;
                m.description = description.to_string();
            }
            m.last_used = now;
            m.usage_count += 1;
        });
        if let Err(e) = result {
            tracing::warn!(id, error = %e, "recording a cache record's use failed");
        }
    }

    /// Every record, sizes computed where not known yet.
    pub fn records(&self) -> Result<Vec<UsageRecord>, Error> {
        let infos = self.snapshotter.list()?;
        let mut metas: HashMap<String, Meta> = self
            .md
            .scan(TABLE, b"")?
            .into_iter()
            .filter_map(|(k, v)| {
                let k = String::from_utf8(k).ok()?;
                Some((k, serde_json::from_slice(&v).ok()?))
            })
            .collect();
        // Snapshots being written or read (an op running on them) use their parents.
        let busy_parents: HashSet<&str> = infos
            .iter()
            .filter(|i| i.kind != Kind::Committed && !self.is_pin(&i.key))
            .filter_map(|i| i.parent.as_deref())
            .collect();
        let mut out = Vec::new();
        let mut computed = Vec::new();
        for info in infos.iter().filter(|i| i.kind == Kind::Committed) {
            let mut meta = metas.remove(&info.key).unwrap_or_default();
            let size = match meta.size {
                Some(s) => s,
                None => {
                    let dir = self.snapshotter.layer_dir(&info.key)?;
                    let s = apparent_size(&dir)?;
                    meta.size = Some(s);
                    computed.push((info.key.clone(), s));
                    s
                }
            };
            let created =
                from_ns(meta.created).unwrap_or(UNIX_EPOCH + Duration::from_secs(info.created));
            out.push(UsageRecord {
                id: info.key.clone(),
                mutable: false,
                in_use: self.holds.is_held(&info.key) || busy_parents.contains(info.key.as_str()),
                size,
                parents: info.parent.iter().cloned().collect(),
                created: Some(created),
                last_used: from_ns(meta.last_used),
                usage_count: meta.usage_count,
                description: meta.description,
                record_type: meta.record_type,
                shared: false,
            });
        }
        if let Err(e) = self.remember_sizes(&computed) {
            tracing::debug!(error = %e, "remembering record sizes failed");
        }
        let mut dirs: Vec<(String, PathBuf, RecordType)> = self
            .cache_mount_dirs()?
            .into_iter()
            .map(|(id, dir)| (id, dir, RecordType::ExecCacheMount))
            .collect();
        dirs.extend(
            self.local_source_dirs()?
                .into_iter()
                .map(|(id, dir)| (id, dir, RecordType::SourceLocal)),
        );
        for (id, dir, record_type) in dirs {
            let meta = metas.remove(&id).unwrap_or_default();
            let size = apparent_size(&dir)?;
            let created = from_ns(meta.created).or_else(|| {
                std::fs::symlink_metadata(&dir)
                    .ok()
                    .and_then(|m| m.modified().ok())
            });
            out.push(UsageRecord {
                in_use: self.holds.is_held(&id),
                id,
                mutable: true,
                size,
                parents: Vec::new(),
                created,
                last_used: from_ns(meta.last_used),
                usage_count: meta.usage_count,
                description: meta.description,
                record_type,
                shared: false,
            });
        }
        Ok(out)
    }

    /// The kept local source directories: (record id, path).
    fn local_source_dirs(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let base = self.root.join(LOCAL_SOURCES_DIR);
        let entries = match std::fs::read_dir(&base) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    op: "read directory",
                    path: base,
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            out.push((Self::local_source_id(&name), e.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Saves computed sizes, in one transaction.
    fn remember_sizes(&self, sizes: &[(String, u64)]) -> Result<(), Error> {
        if sizes.is_empty() {
            return Ok(());
        }
        self.md.update(&mut |txn| {
            for (id, size) in sizes {
                let mut meta: Meta = txn
                    .get(TABLE, id.as_bytes())?
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default();
                meta.size = Some(*size);
                let bytes = serde_json::to_vec(&meta).unwrap_or_default();
                txn.put(TABLE, id.as_bytes(), &bytes)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The cache mount directories: (record id, path).
    fn cache_mount_dirs(&self) -> Result<Vec<(String, PathBuf)>, Error> {
        let io = |op, p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io {
                op,
                path: p,
                source,
            }
        };
        let mut out = Vec::new();
        let top = match std::fs::read_dir(&self.mounts_root) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("read directory", &self.mounts_root)(e)),
        };
        for id_dir in top {
            let id_dir = id_dir.map_err(io("read directory", &self.mounts_root))?;
            let hex = id_dir.file_name().to_string_lossy().into_owned();
            if hex.starts_with('.') || !id_dir.path().is_dir() {
                continue;
            }
            for inst in
                std::fs::read_dir(id_dir.path()).map_err(io("read directory", &id_dir.path()))?
            {
                let inst = inst.map_err(io("read directory", &id_dir.path()))?;
                let Ok(n) = inst.file_name().to_string_lossy().parse::<usize>() else {
                    continue;
                };
                out.push((Self::cache_mount_id(&hex, n), inst.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The records that match `filters` (any of them; all records when empty).
    pub fn disk_usage(&self, filters: &[String]) -> Result<Vec<UsageRecord>, Error> {
        let filters = Filter::parse_all(filters)?;
        let mut recs = self.records()?;
        recs.retain(|r| any_matches(&filters, r));
        Ok(recs)
    }

    /// Total and free bytes of the disk holding the worker's root.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.root).ok()?;
        Some((
            st.f_blocks.saturating_mul(st.f_frsize),
            st.f_bavail.saturating_mul(st.f_frsize),
        ))
    }

    /// Removes the records `opts` selects, least recently used first, until the sizes
    /// it names are met (or every candidate, when it names none); calls `on_removed`
    /// for each as it goes. Held records, records in use and parents of other records
    /// stay (a parent can go once its children have).
    pub fn prune(
        &self,
        opts: &PruneOptions,
        on_removed: &mut dyn FnMut(&UsageRecord),
    ) -> Result<PruneReport, Error> {
        let filters = Filter::parse_all(&opts.filters)?;
        let _one = self.pruning.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = PruneReport::default();
        let mut removed_ids = Vec::new();
        let result = self.prune_rounds(opts, &filters, on_removed, &mut report, &mut removed_ids);
        if !removed_ids.is_empty() {
            let cleanups = self
                .cleanups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for c in cleanups {
                c(&removed_ids);
            }
            tracing::info!(
                records = removed_ids.len(),
                bytes = report.bytes_freed,
                "pruned build cache"
            );
        }
        result.map(|()| report)
    }

    fn prune_rounds(
        &self,
        opts: &PruneOptions,
        filters: &[Filter],
        on_removed: &mut dyn FnMut(&UsageRecord),
        report: &mut PruneReport,
        removed_ids: &mut Vec<String>,
    ) -> Result<(), Error> {
        let now = SystemTime::now();
        loop {
            let recs = self.records()?;
            let mut total: u64 = recs.iter().map(|r| r.size).sum();
            let keep = opts.keep_bytes(total, self.disk_space().map(|(_, free)| free));
            // As upstream: a bound of 0 removes every candidate.
            let keep = (keep > 0).then_some(keep);
            if keep.is_some_and(|k| total < k) {
                return Ok(());
            }
            let parents: HashSet<&str> = recs
                .iter()
                .flat_map(|r| r.parents.iter().map(String::as_str))
                .collect();
            let mut candidates: Vec<&UsageRecord> = recs
                .iter()
                .filter(|r| !r.in_use && !parents.contains(r.id.as_str()))
                .filter(|r| {
                    opts.all
                        || !matches!(r.record_type, RecordType::Internal | RecordType::Frontend)
                })
                .filter(|r| any_matches(filters, r))
                // As upstream, a record with no recorded use is not kept by the duration.
                .filter(|r| match (opts.keep_duration, r.last_used) {
                    (Some(keep), Some(used)) => {
                        now.duration_since(used).unwrap_or_default() >= keep
                    }
                    _ => true,
                })
                .collect();
            candidates.sort_by_key(|r| (r.last_used.or(r.created), r.usage_count));
            let mut progressed = false;
            for r in candidates {
                if keep.is_some_and(|k| total < k) {
                    return Ok(());
                }
                if self.remove(r)? {
                    total = total.saturating_sub(r.size);
                    report.bytes_freed += r.size;
                    report.removed.push(r.clone());
                    removed_ids.push(r.id.clone());
                    on_removed(r);
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Removes one record unless something holds it now; whether it went.
    fn remove(&self, r: &UsageRecord) -> Result<bool, Error> {
        let Some(claim) = self.holds.claim(&r.id) else {
            return Ok(false);
        };
        if let Some((dir, base)) = self.record_dir(&r.id) {
            // Moved aside while claimed (fast), deleted after: a build may make the
            // directory anew meanwhile.
            let trash = base.join(format!(".removing-{}", file_name_of(&r.id)));
            match std::fs::rename(&dir, &trash) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(source) => {
                    return Err(Error::Io {
                        op: "move aside",
                        path: dir,
                        source,
                    });
                }
            }
            self.md.delete(TABLE, r.id.as_bytes())?;
            drop(claim);
            std::fs::remove_dir_all(&trash).map_err(|source| Error::Io {
                op: "remove",
                path: trash,
                source,
            })?;
            return Ok(true);
        }
        match self.snapshotter.remove(&r.id) {
            Ok(()) => {}
            Err(snapshot::Error::HasChildren(_)) => {
                // Only pins on it: they go first. Anything else built on it meanwhile
                // keeps it.
                let children: Vec<snapshot::Info> = self
                    .snapshotter
                    .list()?
                    .into_iter()
                    .filter(|i| i.parent.as_deref() == Some(r.id.as_str()))
                    .collect();
                if children.is_empty() || !children.iter().all(|c| self.is_pin(&c.key)) {
                    return Ok(false);
                }
                for c in &children {
                    self.snapshotter.remove(&c.key)?;
                }
                match self.snapshotter.remove(&r.id) {
                    Ok(()) => {}
                    Err(snapshot::Error::HasChildren(_)) | Err(snapshot::Error::NotFound(_)) => {
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // It went already.
            Err(snapshot::Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.md.delete(TABLE, r.id.as_bytes())?;
        drop(claim);
        Ok(true)
    }

    /// The remembered facts about `id`, if any.
    pub fn meta_of(&self, id: &str) -> Result<Option<Meta>, Error> {
        self.meta(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;
    use snapshot::NativeSnapshotter;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        snap: Arc<dyn Snapshotter>,
        cache: Arc<CacheManager>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let md: Arc<dyn MetadataStore> = Arc::new(MemStore::default());
        let snap: Arc<dyn Snapshotter> =
            Arc::new(NativeSnapshotter::new(&root.join("snapshots"), md.clone()).unwrap());
        let cache = CacheManager::new(md, snap.clone(), &root);
        Fixture {
            _dir: dir,
            root,
            snap,
            cache,
        }
    }

    impl Fixture {
        /// A committed snapshot `name` over `parent` holding `bytes` bytes in one file.
        fn commit(&self, name: &str, parent: Option<&str>, bytes: usize) {
            let active = format!("active-{name}");
            self.snap.prepare(&active, parent).unwrap();
            let mounts = self.snap.mounts(&active).unwrap();
            // The native snapshotter's mount is a bind of its directory.
            let dir = PathBuf::from(&mounts[0].source);
            std::fs::write(dir.join(format!("file-{name}")), vec![1u8; bytes]).unwrap();
            self.snap.commit(name, &active).unwrap();
            self.cache
                .created(name, RecordType::Regular, &format!("made {name}"));
        }

        fn ids(&self) -> Vec<String> {
            let mut ids: Vec<_> = self
                .cache
                .records()
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    }

    #[test]
    fn records_have_sizes_types_and_parents() {
        let f = fixture();
        f.commit("a", None, 1000);
        f.commit("b", Some("a"), 5000);
        let mount = f.root.join("cachemounts/abcd/0");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(mount.join("x"), vec![0u8; 300]).unwrap();
        f.cache.used(
            &CacheManager::cache_mount_id("abcd", 0),
            RecordType::ExecCacheMount,
            "cached mount /root/.cache",
        );
        let recs = f.cache.records().unwrap();
        let by_id: HashMap<_, _> = recs.iter().map(|r| (r.id.as_str(), r)).collect();
        let a = by_id["a"];
        let b = by_id["b"];
        let dir_a = f.snap.layer_dir("a").unwrap();
        assert_eq!(a.size, apparent_size(&dir_a).unwrap());
        assert!(a.size >= 1000 && a.size < 1000 + 64 * 1024, "{}", a.size);
        assert!(
            b.size >= 6000,
            "the native snapshot holds the parent's files too"
        );
        assert_eq!(b.parents, ["a"]);
        assert_eq!(a.description, "made a");
        assert_eq!(a.usage_count, 1);
        let m = by_id["cachemount/abcd/0"];
        assert!(m.mutable);
        assert_eq!(m.record_type, RecordType::ExecCacheMount);
        assert_eq!(m.size, apparent_size(&mount).unwrap());
        assert_eq!(m.description, "cached mount /root/.cache");
        assert_eq!(
            f.cache.meta_of("a").unwrap().unwrap().size,
            Some(a.size),
            "remembered"
        );
    }

    #[test]
    fn prune_all_takes_children_before_parents_and_spares_what_is_held() {
        let f = fixture();
        f.commit("base", None, 100);
        f.commit("child", Some("base"), 100);
        f.commit("held", None, 100);
        f.commit("under-active", None, 100);
        f.snap.prepare("running", Some("under-active")).unwrap();
        let hold = f.cache.hold("held").unwrap();
        let mut streamed = Vec::new();
        let report = f
            .cache
            .prune(&PruneOptions::default(), &mut |r| {
                streamed.push(r.id.clone())
            })
            .unwrap();
        assert_eq!(streamed, ["child", "base"]);
        assert_eq!(report.removed.len(), 2);
        assert_eq!(f.ids(), ["held", "under-active"]);
        drop(hold);
        f.snap.remove("running").unwrap();
        f.cache
            .prune(&PruneOptions::default(), &mut |_| {})
            .unwrap();
        assert!(f.ids().is_empty());
        assert!(
            f.cache.meta_of("held").unwrap().is_none(),
            "its record went too"
        );
    }

    #[test]
    fn pins_do_not_keep_records_in_use_and_go_with_them() {
        let f = fixture();
        f.commit("ctx", None, 10);
        f.snap.view("pin/ctx", Some("ctx")).unwrap();
        f.snap.view("busy-view", Some("ctx")).unwrap();
        f.cache.add_pin_prefix("pin/");
        let in_use = |f: &Fixture| f.cache.records().unwrap()[0].in_use;
        assert!(in_use(&f), "a view that is not a pin uses it");
        f.cache
            .prune(&PruneOptions::default(), &mut |_| {})
            .unwrap();
        assert_eq!(f.ids(), ["ctx"]);
        f.snap.remove("busy-view").unwrap();
        assert!(!in_use(&f), "pinned only");
        f.cache
            .prune(&PruneOptions::default(), &mut |_| {})
            .unwrap();
        assert!(f.ids().is_empty());
        assert!(f.snap.stat("pin/ctx").is_err(), "the pin went with it");
    }

    #[test]
    fn size_driven_prune_removes_least_recently_used_first() {
        let f = fixture();
        for name in ["old", "middle", "new"] {
            f.commit(name, None, 10_000);
            std::thread::sleep(Duration::from_millis(5));
        }
        // "old" is used again: now the most recent.
        f.cache.used("old", RecordType::Regular, "");
        let sizes: u64 = f.cache.records().unwrap().iter().map(|r| r.size).sum();
        let opts = PruneOptions {
            max_used_space: sizes - 5_000,
            ..PruneOptions::default()
        };
        let report = f.cache.prune(&opts, &mut |_| {}).unwrap();
        assert_eq!(
            report
                .removed
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["middle"],
            "one record was enough, the least recently used"
        );
        let left: u64 = f.cache.records().unwrap().iter().map(|r| r.size).sum();
        assert!(left <= opts.max_used_space);
    }

    #[test]
    fn filters_and_keep_duration_limit_a_prune() {
        let f = fixture();
        f.commit("regular", None, 10);
        f.commit("ctx", None, 10);
        f.cache
            .created("ctx", RecordType::SourceLocal, "local source for context");
        let opts = PruneOptions {
            filters: vec!["type==source.local".into()],
            ..PruneOptions::default()
        };
        f.cache.prune(&opts, &mut |_| {}).unwrap();
        assert_eq!(f.ids(), ["regular"]);
        let recent = PruneOptions {
            keep_duration: Some(Duration::from_secs(3600)),
            ..PruneOptions::default()
        };
        f.cache.prune(&recent, &mut |_| {}).unwrap();
        assert_eq!(f.ids(), ["regular"], "used within the hour: kept");
        let bad = PruneOptions {
            filters: vec!["nope==1".into()],
            ..PruneOptions::default()
        };
        assert!(f.cache.prune(&bad, &mut |_| {}).is_err());
    }

    #[test]
    fn kept_local_sources_are_mutable_records() {
        let f = fixture();
        for key in ["aaaa", "bbbb"] {
            let d = f.root.join("local-sources").join(key);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), vec![1u8; 100]).unwrap();
        }
        let busy = f
            .cache
            .hold(&CacheManager::local_source_id("bbbb"))
            .unwrap();
        let recs = f.cache.records().unwrap();
        let a = recs.iter().find(|r| r.id == "localsource/aaaa").unwrap();
        assert_eq!(a.record_type, RecordType::SourceLocal);
        assert!(a.mutable && !a.in_use);
        assert!(a.size >= 100);
        f.cache
            .prune(&PruneOptions::default(), &mut |_| {})
            .unwrap();
        assert!(!f.root.join("local-sources/aaaa").exists());
        assert!(f.root.join("local-sources/bbbb/f").exists(), "in use: kept");
        let left: Vec<_> = std::fs::read_dir(f.root.join("local-sources"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "nothing moved aside is left: {left:?}");
        drop(busy);
        assert!(f.cache.record_dir("localsource/../x").is_none());
        assert!(f.cache.record_dir("cachemount/a/../../x").is_none());
    }

    #[test]
    fn cache_mounts_go_unless_in_use() {
        let f = fixture();
        for i in 0..2 {
            let d = f.root.join(format!("cachemounts/ff/{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), b"data").unwrap();
        }
        let busy = f
            .cache
            .hold(&CacheManager::cache_mount_id("ff", 1))
            .unwrap();
        let removed = Arc::new(Mutex::new(Vec::new()));
        let seen = removed.clone();
        f.cache.on_remove(Arc::new(move |ids: &[String]| {
            seen.lock().unwrap().extend_from_slice(ids)
        }));
        f.cache
            .prune(&PruneOptions::default(), &mut |_| {})
            .unwrap();
        assert!(!f.root.join("cachemounts/ff/0").exists());
        assert!(f.root.join("cachemounts/ff/1/f").exists());
        assert_eq!(*removed.lock().unwrap(), ["cachemount/ff/0"]);
        let leftovers: Vec<_> = std::fs::read_dir(f.root.join("cachemounts"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "nothing moved aside is left: {leftovers:?}"
        );
        drop(busy);
    }
}
