//! Incremental `local://` sources: each source keeps a directory under
//! `<root>/local-sources/<key>` that its provider brings up to date build after build (the
//! session's receiver only asks for files whose metadata changed and deletes what is
//! gone), and the result ref made from it is remembered, so an unchanged context costs
//! neither a transfer nor a copy.
//!
//! - The key is the sha256 of the source name, its `local.sharedkeyhint`, the provider's
//!   shared key (the client session's) and its include/exclude/follow patterns: a
//!   directory only ever receives one filtered view of one client's directory, because
//!   syncing another view into it would delete what the first one needs.
//! - One build at a time uses a key's directory (an in-process set of busy directories:
//!   one daemon owns the root). A second concurrent build syncs into a fresh snapshot
//!   instead of waiting, so a slow transfer never holds up another build; it only loses
//!   the incremental transfer, as upstream does when its mutable ref is busy.
//! - The key → ref mapping (with a fingerprint of the directory's metadata when the ref
//!   was made) lives in the metadata DB (table `ops.local-sources`), so it survives
//!   restarts. The mapped ref is pinned by a read-only view snapshot named
//!   `local-source/<key>`: the snapshotter refuses to remove a snapshot that has
//!   children, so whatever prunes snapshots cannot take the ref while it is mapped. A
//!   ref is reused only while that view still exists with it as parent. Opening the
//!   worker reclaims views, so [`repin`] puts the pins back when the ops context is
//!   created, before any build or prune can run.
//! - A changed sync produces a new snapshot. With the overlay snapshotter, when the
//!   mapped ref is still pinned, the new snapshot is prepared on top of it and brought up
//!   to date with the directory by a metadata walk ([`delta`]): only what changed is
//!   copied, and what is gone is removed (whiteouts in the new layer), so a one-file
//!   change costs about that file. The stack is bounded: once the mapped ref has
//!   [`MAX_LAYERS`] layers, the next change is copied in full, which flattens it again.
//!   Otherwise (first build, native snapshotter, an update that failed) the new snapshot
//!   is filled by a metadata-preserving copy of the whole directory (`fileop::copy`:
//!   owners, modes, times, xattrs, hard links; file data with `copy_file_range`, so
//!   reflinked where the filesystem can). The native snapshotter is left out of the
//!   update because its `prepare` copies the parent anyway, and a stack of full copies
//!   would keep every ancestor from being removed. Hard links from the directory into
//!   the snapshot would be cheaper still, but `link(2)` fails across the snapshot's
//!   mount point, and writing into the snapshot's backing directory behind the
//!   snapshotter's back is not worth the saving.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use metadata::MetadataStore;
use oci::Digest;
use proto::pb;
use sha2::{Digest as _, Sha256};
use snapshot::Snapshotter;
use solver::OpError;

use crate::local::{SyncStats, patterns};
use crate::mounted::Active;
use crate::{OpsContext, RecordType, Ref, op_err};

mod delta;

/// Where the directories live, under the worker root.
const DIR: &str = "local-sources";
/// The metadata table of key → mapping.
const TABLE: &str = "ops.local-sources";
/// Prefix of the view snapshots that pin mapped refs.
pub(crate) const HOLD_PREFIX: &str = "local-source/";
/// Most layers (snapshots in a parent chain) a local source's ref may have when it is
/// made by updating the previous one; a change beyond copies everything again. Each
/// layer costs every lookup in a mounted view a little, and keeps the layers below it
/// from being removed.
const MAX_LAYERS: usize = 16;

/// The key of a local source's directory (hex sha256); see the module documentation.
pub(crate) fn source_key(
    name: &str,
    attrs: &BTreeMap<String, String>,
    shared_key: &str,
) -> Result<String, String> {
    let hint = attrs.get("local.sharedkeyhint").map_or("", String::as_str);
    // A JSON array keeps the fields apart whatever they contain. Patterns are compared
    // as given: reordered patterns only cost a separate directory.
    let material = serde_json::json!([
        "local-source/v1",
        name,
        hint,
        shared_key,
        patterns(attrs, "local.includepattern")?,
        patterns(attrs, "local.excludepatterns")?,
        patterns(attrs, "local.followpaths")?,
    ]);
    Ok(Digest::of(material.to_string().as_bytes()).hex())
}

/// Directories in use by a build, by path.
static BUSY: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Exclusive use of a source directory, given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    path: PathBuf,
}

impl Lease {
    /// Takes `path` unless another build is using it.
    pub(crate) fn try_take(path: &Path) -> Option<Lease> {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(path.to_path_buf()).then(|| Lease {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        BUSY.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.path);
    }
}

/// A digest of every entry's path and the metadata the receiver compares (type, mode,
/// owner, size, modification time, link target, device numbers) below `dir`, not
/// counting `dir` itself (nothing syncs its metadata). Equal fingerprints mean the
/// receiver left the tree as it was when the fingerprint was taken.
pub(crate) fn fingerprint(dir: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        // Reversed so that the stack visits them in name order.
        for name in names.into_iter().rev() {
            let rel = rel.join(name);
            let path = dir.join(&rel);
            let md = std::fs::symlink_metadata(&path)?;
            let path_bytes = rel.as_os_str().as_bytes();
            h.update((path_bytes.len() as u64).to_le_bytes());
            h.update(path_bytes);
            h.update(md.mode().to_le_bytes());
            h.update(md.uid().to_le_bytes());
            h.update(md.gid().to_le_bytes());
            // A directory's size depends on the filesystem, not on what was synced.
            let size = if md.is_dir() { 0 } else { md.size() };
            h.update(size.to_le_bytes());
            h.update(md.mtime().to_le_bytes());
            h.update(md.mtime_nsec().to_le_bytes());
            h.update(md.rdev().to_le_bytes());
            let target = if md.file_type().is_symlink() {
                std::fs::read_link(&path)?.into_os_string().into_vec()
            } else {
                Vec::new()
            };
            h.update((target.len() as u64).to_le_bytes());
            h.update(&target);
            if md.is_dir() {
                pending.push(rel);
            }
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The ref last made from a key's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// Its snapshot key.
    pub(crate) snapshot: String,
    /// The directory's [`fingerprint`] when it was made.
    pub(crate) fingerprint: String,
}

impl Mapping {
    fn encode(&self) -> Vec<u8> {
        serde_json::json!({"ref": self.snapshot, "fingerprint": self.fingerprint})
            .to_string()
            .into_bytes()
    }

    /// `None` for a value this code did not write (treated as no mapping).
    fn decode(bytes: &[u8]) -> Option<Mapping> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Mapping {
            snapshot: v.get("ref")?.as_str()?.to_string(),
            fingerprint: v.get("fingerprint")?.as_str()?.to_string(),
        })
    }
}

/// The ref to return again, if the sync changed nothing since `previous` was made:
/// no file transferred, nothing deleted, the same entries with the same metadata, and
/// the ref still pinned (`alive`).
pub(crate) fn reusable<'a>(
    stats: &SyncStats,
    fingerprint: &str,
    previous: Option<&'a Mapping>,
    alive: impl FnOnce(&str) -> bool,
) -> Option<&'a str> {
    let previous = previous?;
    let unchanged = stats.files == 0 && stats.deleted == 0 && previous.fingerprint == fingerprint;
    (unchanged && alive(&previous.snapshot)).then_some(previous.snapshot.as_str())
}

fn hold_key(key: &str) -> String {
    format!("{HOLD_PREFIX}{key}")
}

/// The key → ref mappings and the pins that keep their refs: the worker's snapshotter
/// and metadata store.
#[derive(Clone, Copy)]
pub(crate) struct Pins<'a> {
    snapshots: &'a dyn Snapshotter,
    md: &'a dyn MetadataStore,
}

impl<'a> Pins<'a> {
    pub(crate) fn new(snapshots: &'a dyn Snapshotter, md: &'a dyn MetadataStore) -> Pins<'a> {
        Pins { snapshots, md }
    }

    fn of(ops: &'a OpsContext) -> Pins<'a> {
        Pins::new(
            ops.worker.snapshotter.as_ref(),
            ops.worker.metadata.as_ref(),
        )
    }

    /// The ref last made for `key` (a value this code did not write counts as none).
    pub(crate) fn mapping(&self, key: &str) -> Option<Mapping> {
        match self.md.get(TABLE, key.as_bytes()) {
            Ok(v) => v.as_deref().and_then(Mapping::decode),
            Err(e) => {
                tracing::warn!(error = %e, "reading the local source mapping failed");
                None
            }
        }
    }

    fn committed(&self, snapshot: &str) -> bool {
        self.snapshots
            .stat(snapshot)
            .is_ok_and(|i| i.kind == snapshot::Kind::Committed)
    }

    /// Whether `snapshot` is committed and pinned for `key`.
    pub(crate) fn pinned(&self, key: &str, snapshot: &str) -> bool {
        let held = self
            .snapshots
            .stat(&hold_key(key))
            .is_ok_and(|i| i.kind == snapshot::Kind::View && i.parent.as_deref() == Some(snapshot));
        held && self.committed(snapshot)
    }

    /// How many snapshots the chain from `snapshot` to its oldest ancestor holds,
    /// counting at most `MAX_LAYERS + 1`.
    fn layers(&self, snapshot: &str) -> usize {
        let mut n = 0;
        let mut next = Some(snapshot.to_string());
        while let Some(key) = next {
            n += 1;
            if n > MAX_LAYERS {
                break;
            }
            next = self.snapshots.stat(&key).ok().and_then(|i| i.parent);
        }
        n
    }

    /// Points the pin of `key` at committed `snapshot` (moving it off another one).
    fn pin(&self, key: &str, snapshot: &str) -> Result<(), snapshot::Error> {
        self.unpin(key)?;
        self.snapshots
            .view(&hold_key(key), Some(snapshot))
            .map(|_| ())
    }

    fn unpin(&self, key: &str) -> Result<(), snapshot::Error> {
        match self.snapshots.remove(&hold_key(key)) {
            Ok(()) | Err(snapshot::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Maps `key` to committed `snapshot`: moves the pin to it, then records the mapping.
    /// A failure between the two leaves a mapping whose ref is not pinned, which
    /// [`Pins::pinned`] refuses, so it is never reused.
    pub(crate) fn remember(
        &self,
        key: &str,
        snapshot: &str,
        fingerprint: String,
    ) -> Result<(), String> {
        self.pin(key, snapshot).map_err(|e| e.to_string())?;
        let mapping = Mapping {
            snapshot: snapshot.to_string(),
            fingerprint,
        };
        self.md
            .put(TABLE, key.as_bytes(), &mapping.encode())
            .map_err(|e| e.to_string())
    }

    /// Restores "every mapped ref is pinned" when the worker opens: opening reclaims
    /// views left by a previous process, pins included (and a crash can leave a pin
    /// without its mapping). Mappings whose ref is gone are dropped with their pins.
    /// Best effort: a mapping left unpinned is only never reused. Blocking.
    pub(crate) fn repin(&self) {
        let entries = match self.md.scan(TABLE, b"") {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the local source mappings");
                return;
            }
        };
        for (key, value) in entries {
            let key = String::from_utf8_lossy(&key).into_owned();
            let result = match Mapping::decode(&value) {
                Some(m) if self.pinned(&key, &m.snapshot) => continue,
                Some(m) if self.committed(&m.snapshot) => {
                    self.pin(&key, &m.snapshot).map_err(|e| e.to_string())
                }
                _ => self.unpin(&key).map_err(|e| e.to_string()).and_then(|()| {
                    self.md
                        .delete(TABLE, key.as_bytes())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
            };
            if let Err(e) = result {
                tracing::warn!(key, error = %e, "could not restore a local source mapping");
            }
        }
    }
}

/// Puts back the pins of mapped refs; see [`Pins::repin`]. Blocking.
pub(crate) fn repin(ops: &OpsContext) {
    Pins::of(ops).repin();
}

/// Syncs local source `name` and returns its result and what was transferred. Blocking.
pub(crate) fn sync(
    ops: &OpsContext,
    name: &str,
    attrs: &BTreeMap<String, String>,
) -> Result<(Ref, SyncStats), OpError> {
    let Some(shared) = ops.local.shared_key(name, attrs).map_err(OpError::new)? else {
        return sync_fresh(ops, name, attrs);
    };
    let key = source_key(name, attrs, &shared).map_err(OpError::new)?;
    let base = ops.worker.root().join(DIR);
    let dir = base.join(&key);
    let Some(_lease) = Lease::try_take(&dir) else {
        tracing::debug!(
            name,
            "another build is syncing this local source; syncing a fresh copy"
        );
        return sync_fresh(ops, name, attrs);
    };
    // The kept directory is a cache record of its own: held while used, so no prune
    // removes it under the sync (one being removed is left to the prune).
    let record = cache::CacheManager::local_source_id(&key);
    let Some(_hold) = ops.cache.hold(&record) else {
        return sync_fresh(ops, name, attrs);
    };
    ops.cache
        .used(&record, RecordType::SourceLocal, &describe(name));
    // Private: the copies keep the client's modes, setuid bits included.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)
        .map_err(|e| op_err(format!("{}: {e}", base.display())))?;
    let stats = ops.local.sync(name, attrs, &dir).map_err(OpError::new)?;
    let fingerprint = match fingerprint(&dir) {
        Ok(f) => Some(f),
        Err(e) => {
            // Only costs the reuse: the copy below reports a real problem itself.
            tracing::warn!(name, dir = %dir.display(), error = %e, "could not fingerprint a synced local source");
            None
        }
    };
    let pins = Pins::of(ops);
    let previous = pins.mapping(&key);
    if let Some(f) = &fingerprint
        && let Some(snapshot) = reusable(&stats, f, previous.as_ref(), |s| pins.pinned(&key, s))
        && let Some(r) = ops.existing_ref(snapshot)
    {
        tracing::debug!(name, snapshot, "local source unchanged; reusing its ref");
        ops.cache
            .used(snapshot, RecordType::SourceLocal, &describe(name));
        return Ok((r, stats));
    }
    // The previous ref is a copy of an earlier state of the directory: build on it when
    // that is cheap (see the module documentation).
    let base = previous
        .as_ref()
        .map(|m| m.snapshot.as_str())
        .filter(|s| stacks_cheaply(ops) && pins.pinned(&key, s))
        .filter(|s| pins.layers(s) < MAX_LAYERS);
    let r = match base {
        Some(base) => commit_update(ops, &dir, base, name).or_else(|e| {
            tracing::warn!(name, error = %e, "updating the previous copy of a local source failed; copying it in full");
            commit_copy(ops, &dir, name)
        })?,
        None => commit_copy(ops, &dir, name)?,
    };
    if let (Some(f), Some(snapshot)) = (fingerprint, r.key())
        && let Err(e) = pins.remember(&key, snapshot, f)
    {
        tracing::warn!(name, error = %e, "could not remember the ref of a local source; the next build copies it again");
    }
    Ok((r, stats))
}

/// Syncs into a new empty snapshot: for providers without a shared key, and when the
/// key's directory is busy.
fn sync_fresh(
    ops: &OpsContext,
    name: &str,
    attrs: &BTreeMap<String, String>,
) -> Result<(Ref, SyncStats), OpError> {
    let active = Active::prepare(ops, &Ref::scratch())?;
    let stats = {
        let m = active.mount(ops)?;
        ops.local
            .sync(name, attrs, m.path())
            .map_err(OpError::new)?
    };
    Ok((
        active.commit_as(RecordType::SourceLocal, &describe(name))?,
        stats,
    ))
}

/// The description of the cache record of local source `name`, as upstream's.
fn describe(name: &str) -> String {
    format!("local source for {name}")
}

/// Whether a snapshot prepared over another costs only what is written to it.
fn stacks_cheaply(ops: &OpsContext) -> bool {
    ops.worker.snapshotter.name() == snapshot::OverlaySnapshotter::NAME
}

/// A new snapshot on top of committed `base`, a copy of an earlier state of `dir`,
/// updated to hold what a copy of `dir` would ([`delta::update`]).
fn commit_update(ops: &OpsContext, dir: &Path, base: &str, name: &str) -> Result<Ref, OpError> {
    let base_ref = ops
        .existing_ref(base)
        .ok_or_else(|| op_err(format!("the previous copy {base} is gone")))?;
    let active = Active::prepare(ops, &base_ref)?;
    {
        let m = active.mount(ops)?;
        let stats = delta::update(dir, m.path())
            .map_err(|e| op_err(format!("updating the synced local source: {e}")))?;
        tracing::debug!(
            base,
            copied = stats.copied,
            removed = stats.removed,
            linked = stats.linked,
            unchanged = stats.unchanged,
            "local source updated over its previous ref"
        );
    }
    active.commit_as(RecordType::SourceLocal, &describe(name))
}

/// A new snapshot holding a copy of `dir`.
fn commit_copy(ops: &OpsContext, dir: &Path, name: &str) -> Result<Ref, OpError> {
    let active = Active::prepare(ops, &Ref::scratch())?;
    {
        let m = active.mount(ops)?;
        let copy = pb::FileActionCopy {
            src: "/".into(),
            dest: "/".into(),
            mode: -1,
            timestamp: -1,
            dir_copy_contents: true,
            create_dest_path: true,
            ..pb::FileActionCopy::default()
        };
        fileop::copy(dir, m.path(), &copy, None)
            .map_err(|e| op_err(format!("copying the synced local source: {e}")))?;
    }
    active.commit_as(RecordType::SourceLocal, &describe(name))
}

/// A byte count as upstream's progress shows it: decimal units, three significant
/// digits, no trailing zeros (`2B`, `1.23kB`, `524MB`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let mut digits = three_digits(value);
    // Rounding can carry into the next unit (999.7kB is 1MB); Go would print `1e+03kB`.
    if digits == "1000" && unit + 1 < UNITS.len() {
        digits = "1".into();
        unit += 1;
    }
    format!("{digits}{}", UNITS[unit])
}

/// `value` (below 1000) with three significant digits, trailing zeros dropped.
fn three_digits(value: f64) -> String {
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{value:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_covers_name_hint_session_and_filters() {
        let base = attrs(&[("local.session", "s1")]);
        let k = source_key("context", &base, "shared").unwrap();
        assert_eq!(k.len(), 64);
        assert_eq!(k, source_key("context", &base, "shared").unwrap());
        // What does not select content is not part of it: a new session of the same
        // client reuses the directory.
        let other_session = attrs(&[("local.session", "s2"), ("local.unique", "x")]);
        assert_eq!(k, source_key("context", &other_session, "shared").unwrap());

        let mut seen = BTreeSet::from([k]);
        let variants = [
            source_key("dockerfile", &base, "shared"),
            source_key("context", &base, "other-client"),
            source_key(
                "context",
                &attrs(&[("local.sharedkeyhint", "ctx")]),
                "shared",
            ),
            source_key(
                "context",
                &attrs(&[("local.includepattern", r#"["*.go"]"#)]),
                "shared",
            ),
            source_key(
                "context",
                &attrs(&[("local.excludepatterns", r#"["*.go"]"#)]),
                "shared",
            ),
            source_key(
                "context",
                &attrs(&[("local.followpaths", r#"["*.go"]"#)]),
                "shared",
            ),
            // Fields cannot run into each other.
            source_key("context:", &base, "shared"),
            source_key("context", &base, ":shared"),
        ];
        for v in variants {
            assert!(seen.insert(v.unwrap()), "every variant gets its own key");
        }
        assert!(
            source_key(
                "context",
                &attrs(&[("local.includepattern", "not json")]),
                "k"
            )
            .unwrap_err()
            .contains("local.includepattern")
        );
    }

    #[test]
    fn reuse_only_when_nothing_changed_and_the_ref_is_pinned() {
        let prev = Mapping {
            snapshot: "ref/1".into(),
            fingerprint: "fp".into(),
        };
        let quiet = SyncStats {
            entries: 5,
            ..SyncStats::default()
        };
        assert_eq!(reusable(&quiet, "fp", Some(&prev), |_| true), Some("ref/1"));
        let mut asked = None;
        reusable(&quiet, "fp", Some(&prev), |s| {
            asked = Some(s.to_string());
            true
        });
        assert_eq!(asked.as_deref(), Some("ref/1"), "checks the mapped ref");

        assert_eq!(reusable(&quiet, "fp", None, |_| true), None, "first build");
        assert_eq!(
            reusable(&quiet, "fp", Some(&prev), |_| false),
            None,
            "the ref is gone or no longer pinned"
        );
        assert_eq!(
            reusable(&quiet, "other", Some(&prev), |_| true),
            None,
            "an entry was added or its metadata changed"
        );
        let transferred = SyncStats {
            files: 1,
            bytes: 0,
            ..quiet
        };
        assert_eq!(
            reusable(&transferred, "fp", Some(&prev), |_| true),
            None,
            "an (empty) file was written"
        );
        let deleted = SyncStats {
            deleted: 1,
            ..quiet
        };
        assert_eq!(reusable(&deleted, "fp", Some(&prev), |_| true), None);
    }

    #[test]
    fn a_mapped_ref_stays_pinned_until_the_mapping_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let md: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(metadata::MemStore::default());
        let snaps = snapshot::NativeSnapshotter::new(tmp.path(), md.clone()).unwrap();
        for i in 1..=3 {
            snaps.prepare(&format!("a{i}"), None).unwrap();
            snaps.commit(&format!("ref/{i}"), &format!("a{i}")).unwrap();
        }
        let pins = Pins::new(&snaps, md.as_ref());
        assert_eq!(pins.mapping("k"), None);

        pins.remember("k", "ref/1", "fp1".into()).unwrap();
        assert!(pins.pinned("k", "ref/1"));
        assert!(
            matches!(snaps.remove("ref/1"), Err(snapshot::Error::HasChildren(_))),
            "a mapped ref cannot be removed"
        );
        pins.remember("k", "ref/2", "fp2".into()).unwrap();
        assert!(!pins.pinned("k", "ref/1"));
        assert!(pins.pinned("k", "ref/2"));
        snaps.remove("ref/1").unwrap();
        assert_eq!(
            pins.mapping("k"),
            Some(Mapping {
                snapshot: "ref/2".into(),
                fingerprint: "fp2".into(),
            })
        );

        // Opening the worker reclaims views: the pin comes back, and a mapping whose
        // ref was lost meanwhile goes.
        pins.remember("lost", "ref/3", "fp3".into()).unwrap();
        snaps.remove(&hold_key("k")).unwrap();
        snaps.remove(&hold_key("lost")).unwrap();
        snaps.remove("ref/3").unwrap();
        assert!(!pins.pinned("k", "ref/2"));
        pins.repin();
        assert!(pins.pinned("k", "ref/2"));
        assert_eq!(pins.mapping("lost"), None);
        pins.repin();
        assert!(pins.pinned("k", "ref/2"), "idempotent");
    }

    #[test]
    fn mapping_round_trips_and_ignores_garbage() {
        let m = Mapping {
            snapshot: "ref/abc".into(),
            fingerprint: "f".into(),
        };
        assert_eq!(Mapping::decode(&m.encode()), Some(m));
        assert_eq!(Mapping::decode(b"{\"ref\": 3}"), None);
        assert_eq!(Mapping::decode(b"\xff"), None);
    }

    #[test]
    fn fingerprint_sees_what_the_receiver_changes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a"), b"one").unwrap();
        std::fs::write(d.join("b"), b"two").unwrap();
        std::os::unix::fs::symlink("b", d.join("link")).unwrap();
        let first = fingerprint(d).unwrap();
        assert_eq!(first, fingerprint(d).unwrap(), "stable");

        let mut seen = BTreeSet::from([first]);
        let mut changed = |what: &str| {
            assert!(seen.insert(fingerprint(d).unwrap()), "{what}");
        };
        std::fs::create_dir(d.join("sub/empty")).unwrap();
        changed("a new directory");
        std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
        changed("a directory's mode");
        std::fs::remove_file(d.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/a", d.join("link")).unwrap();
        changed("a symlink's target");
        std::fs::write(d.join("b"), b"longer").unwrap();
        changed("a file's size");
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("b"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        changed("a file's modification time");
        std::fs::rename(d.join("b"), d.join("c")).unwrap();
        changed("a rename");
    }

    #[test]
    fn one_lease_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let first = Lease::try_take(&a).unwrap();
        assert!(Lease::try_take(&a).is_none(), "busy");
        let other = Lease::try_take(&tmp.path().join("b"));
        assert!(other.is_some(), "other keys are independent");
        drop(first);
        assert!(Lease::try_take(&a).is_some(), "free again");
    }

    #[test]
    fn layers_count_the_parent_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let md: std::sync::Arc<dyn MetadataStore> =
            std::sync::Arc::new(metadata::MemStore::default());
        let snaps = snapshot::NativeSnapshotter::new(tmp.path(), md.clone()).unwrap();
        let pins = Pins::new(&snaps, md.as_ref());
        let mut parent: Option<String> = None;
        for i in 1..=MAX_LAYERS + 3 {
            snaps.prepare(&format!("a{i}"), parent.as_deref()).unwrap();
            let name = format!("ref/{i}");
            snaps.commit(&name, &format!("a{i}")).unwrap();
            assert_eq!(pins.layers(&name), i.min(MAX_LAYERS + 1), "{name}");
            parent = Some(name);
        }
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            })
            .unwrap_or(false)
    }

    /// What a tree holds, entry by entry, for comparing two copies: everything a copy
    /// carries over except access times and xattrs, file contents, and which paths
    /// share an inode (each path names the first path of its inode).
    fn tree(root: &Path) -> Vec<(String, String)> {
        use std::collections::HashMap;
        let mut out = Vec::new();
        let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let path = root.join(&rel);
            let md = std::fs::symlink_metadata(&path).unwrap();
            let shown = rel.to_string_lossy().into_owned();
            let mut desc = format!(
                "mode={:o} uid={} gid={} mtime={}.{:09} rdev={}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.mtime(),
                md.mtime_nsec(),
                md.rdev()
            );
            let ft = md.file_type();
            if ft.is_dir() {
                let mut names: Vec<_> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for name in names.into_iter().rev() {
                    pending.push(rel.join(name));
                }
            } else if ft.is_symlink() {
                desc += &format!(" -> {}", std::fs::read_link(&path).unwrap().display());
            } else if ft.is_file() {
                let data = std::fs::read(&path).unwrap();
                desc += &format!(" size={} sha256={}", md.size(), Digest::of(&data).hex());
                let first = inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| shown.clone());
                desc += &format!(" inode-of={first}");
            }
            out.push((shown, desc));
        }
        out
    }

    fn assert_same_tree(got: &Path, want: &Path, what: &str) {
        let (got, want) = (tree(got), tree(want));
        let paths = |t: &[(String, String)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&got), paths(&want), "{what}: the same paths");
        for ((path, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(g, w, "{what}: {path:?}");
        }
    }

    fn set_mtime(path: &Path, secs: u64, nanos: u32) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let f = std::fs::File::open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn chmod(root: &Path, rel: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mkfifo(path: &Path) -> bool {
        std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The update of a previous copy and a fresh full copy of the same directory are
    /// the same tree, through changes of every kind and a stack of updates.
    #[tokio::test]
    async fn an_update_over_the_previous_copy_equals_a_full_copy() {
        use std::os::unix::fs::symlink;
        if !is_root() {
            eprintln!("SKIPPED: needs root (mounts snapshots)");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let w = worker::Worker::open(
            root.path(),
            worker::WorkerOptions {
                snapshotter: Some("overlayfs".into()),
                ..worker::WorkerOptions::default()
            },
        )
        .await
        .unwrap();
        let ops = OpsContext::new(
            std::sync::Arc::new(w),
            std::sync::Arc::new(crate::DirProvider::new()),
        );
        assert!(stacks_cheaply(&ops));
        let src_tmp = tempfile::tempdir().unwrap();
        let src = src_tmp.path();

        // The first state: a bit of everything.
        write(src, "a.txt", b"alpha\n");
        write(src, "same-size.txt", b"0123456789");
        write(src, "touched.txt", b"touched\n");
        write(src, "exec.sh", b"#!/bin/sh\n");
        chmod(src, "exec.sh", 0o755);
        write(src, "owned.txt", b"owned\n");
        write(src, "sub/b.txt", b"beta\n");
        write(src, "sub/deep/c.txt", b"gamma\n");
        write(src, "gone/x.txt", b"x\n");
        write(src, "gone/y/z.txt", b"z\n");
        write(src, "file-to-dir", b"f\n");
        write(src, "dir-to-file/inner.txt", b"inner\n");
        write(src, "private/secret.txt", b"s\n");
        write(src, "links/h1", b"linked\n");
        std::fs::hard_link(src.join("links/h1"), src.join("links/h2")).unwrap();
        write(src, "links/split1", b"split\n");
        std::fs::hard_link(src.join("links/split1"), src.join("links/split2")).unwrap();
        std::fs::create_dir(src.join("empty")).unwrap();
        symlink("a.txt", src.join("link")).unwrap();
        symlink("../nowhere", src.join("sub/dangling")).unwrap();
        symlink("sub", src.join("link-to-file")).unwrap();
        let fifo = mkfifo(&src.join("pipe"));
        set_mtime(&src.join("touched.txt"), 1_000_000_000, 5);
        set_mtime(&src.join("sub"), 1_100_000_000, 0);

        let base = commit_copy(&ops, src, "context").unwrap();

        // Every kind of change.
        write(src, "a.txt", b"alpha, longer now\n");
        std::fs::write(src.join("same-size.txt"), b"9876543210").unwrap();
        set_mtime(&src.join("same-size.txt"), 1_200_000_000, 7);
        set_mtime(&src.join("touched.txt"), 1_000_000_000, 6);
        chmod(src, "exec.sh", 0o4750);
        std::os::unix::fs::lchown(src.join("owned.txt"), Some(1000), Some(1001)).unwrap();
        std::fs::remove_dir_all(src.join("gone")).unwrap();
        std::fs::remove_file(src.join("file-to-dir")).unwrap();
        write(src, "file-to-dir/now.txt", b"now a dir\n");
        std::fs::remove_dir_all(src.join("dir-to-file")).unwrap();
        write(src, "dir-to-file", b"now a file\n");
        chmod(src, "private", 0o700);
        write(src, "new/dir/n.txt", b"new\n");
        write(src, "sub/deep/added.txt", b"added\n");
        std::fs::remove_file(src.join("link")).unwrap();
        symlink("sub/b.txt", src.join("link")).unwrap();
        std::fs::remove_file(src.join("link-to-file")).unwrap();
        write(src, "link-to-file", b"no longer a link\n");
        // A new link to an unchanged file, one across a new directory, and a link
        // broken in two copies.
        std::fs::hard_link(src.join("links/h1"), src.join("links/h3")).unwrap();
        std::fs::hard_link(src.join("links/h1"), src.join("new/dir/h4")).unwrap();
        // Split with everything else kept: only the link count tells.
        let split = std::fs::symlink_metadata(src.join("links/split1")).unwrap();
        std::fs::remove_file(src.join("links/split2")).unwrap();
        write(src, "links/split2", b"split\n");
        set_mtime(
            &src.join("links/split2"),
            split.mtime() as u64,
            split.mtime_nsec() as u32,
        );
        if fifo {
            std::fs::remove_file(src.join("pipe")).unwrap();
            write(src, "pipe", b"was a fifo\n");
        }
        set_mtime(&src.join("sub"), 1_300_000_000, 0);
        set_mtime(src, 1_400_000_000, 0);

        let updated = commit_update(&ops, src, base.key().unwrap(), "context").unwrap();
        let fresh = commit_copy(&ops, src, "context").unwrap();
        {
            let (u, f) = (
                crate::mounted::view(&ops, &updated).unwrap(),
                crate::mounted::view(&ops, &fresh).unwrap(),
            );
            assert_same_tree(u.path(), f.path(), "first update");
        }
        let pins = Pins::of(&ops);
        assert_eq!(
            pins.layers(updated.key().unwrap()),
            2,
            "stacked on the base"
        );

        // A second update on top of the first, undoing some of it.
        std::fs::remove_dir_all(src.join("new")).unwrap();
        chmod(src, "private", 0o755);
        write(src, "a.txt", b"alpha\n");
        std::fs::remove_file(src.join("links/h2")).unwrap();
        write(src, "gone/x.txt", b"back\n");
        set_mtime(&src.join("touched.txt"), 1_000_000_000, 5);

        let again = commit_update(&ops, src, updated.key().unwrap(), "context").unwrap();
        let fresh = commit_copy(&ops, src, "context").unwrap();
        let (a, f) = (
            crate::mounted::view(&ops, &again).unwrap(),
            crate::mounted::view(&ops, &fresh).unwrap(),
        );
        assert_same_tree(a.path(), f.path(), "second update");
        assert_eq!(pins.layers(again.key().unwrap()), 3);

        // Nothing changed: nothing to copy.
        let m = Active::prepare(&ops, &again).unwrap();
        let mounted = m.mount(&ops).unwrap();
        let stats = delta::update(src, mounted.path()).unwrap();
        assert_eq!(
            (stats.copied, stats.removed, stats.linked),
            (0, 0, 0),
            "{stats:?}"
        );
    }

    #[test]
    fn sizes_like_upstream_progress() {
        for (n, s) in [
            (0, "0B"),
            (2, "2B"),
            (999, "999B"),
            (1000, "1kB"),
            (1230, "1.23kB"),
            (1234, "1.23kB"),
            (10_060, "10.1kB"),
            (100_022, "100kB"),
            (999_499, "999kB"),
            (999_700, "1MB"),
            (524_000_000, "524MB"),
            (1_500_000_000, "1.5GB"),
            (u64::MAX, "18.4EB"),
        ] {
            assert_eq!(human_size(n), s, "{n}");
        }
    }
}
