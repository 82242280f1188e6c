//! Where `local://` sources come from: the client's directories, synced over the session,
//! or host directories (daemonless use and tests).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use proto::pb;

/// What one sync of a local source did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries the source has (files, directories, links, ...).
    pub entries: u64,
    /// Regular files whose contents were transferred.
    pub files: u64,
    /// Bytes of file contents transferred.
    pub bytes: u64,
    /// Destination entries removed because the source no longer has them.
    pub deleted: u64,
}

/// Fills a directory with the contents of a local source, honouring the `local.*`
/// attributes (include/exclude patterns, follow paths). Blocking.
pub trait LocalProvider: Send + Sync + 'static {
    /// Identifies who serves `name` in a way that stays the same across builds (the
    /// session's shared key), so that a directory synced by an earlier build can be
    /// brought up to date instead of filled again. `None`, the default, means the
    /// provider cannot update an earlier copy: every sync then gets an empty directory.
    fn shared_key(
        &self,
        _name: &str,
        _attrs: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// Makes `dest` hold exactly the contents of `name`. `dest` is empty, except when
    /// [`shared_key`](LocalProvider::shared_key) gave a key: then it may hold what an
    /// earlier sync with the same key left, and entries the source no longer has must be
    /// removed. Returns what was transferred.
    fn sync(
        &self,
        name: &str,
        attrs: &BTreeMap<String, String>,
        dest: &Path,
    ) -> Result<SyncStats, String>;
}

/// Serves local sources from host directories by name. Always copies everything: it has
/// no shared key, so every sync starts from an empty directory.
#[derive(Debug, Default, Clone)]
pub struct DirProvider {
    dirs: HashMap<String, PathBuf>,
}

impl DirProvider {
    pub fn new() -> DirProvider {
        DirProvider::default()
    }

    pub fn with(mut self, name: &str, dir: impl Into<PathBuf>) -> DirProvider {
        self.dirs.insert(name.to_string(), dir.into());
        self
    }
}

/// A JSON list of strings from `attrs[key]` (empty when absent).
pub(crate) fn patterns(attrs: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
    match attrs.get(key) {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_str(v).map_err(|e| format!("attribute {key}: {e}")),
    }
}

impl LocalProvider for DirProvider {
    fn sync(
        &self,
        name: &str,
        attrs: &BTreeMap<String, String>,
        dest: &Path,
    ) -> Result<SyncStats, String> {
        let src = self
            .dirs
            .get(name)
            .ok_or_else(|| format!("local source {name:?} was not provided"))?;
        let copy = pb::FileActionCopy {
            src: "/".into(),
            dest: "/".into(),
            mode: -1,
            timestamp: -1,
            dir_copy_contents: true,
            create_dest_path: true,
            include_patterns: patterns(attrs, "local.includepattern")?,
            exclude_patterns: patterns(attrs, "local.excludepatterns")?,
            ..pb::FileActionCopy::default()
        };
        let copied = fileop::copy(src, dest, &copy, None)
            .map_err(|e| format!("local source {name:?}: {e}"))?;
        Ok(SyncStats {
            entries: copied.files + copied.dirs,
            files: copied.files,
            bytes: copied.bytes,
            deleted: 0,
        })
    }
}
