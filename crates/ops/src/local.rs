//! Where `local://` sources come from: the client's directories, synced over the session
//! (later), or host directories (daemonless use and tests).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use proto::pb;

/// Fills `dest` (an empty directory) with the contents of the local source `name`,
/// honouring the `local.*` attributes (include/exclude patterns, follow paths).
pub trait LocalProvider: Send + Sync + 'static {
    fn sync(&self, name: &str, attrs: &BTreeMap<String, String>, dest: &Path)
    -> Result<(), String>;
}

/// Serves local sources from host directories by name.
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

fn patterns(attrs: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
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
    ) -> Result<(), String> {
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
        fileop::copy(src, dest, &copy, None)
            .map(|_| ())
            .map_err(|e| format!("local source {name:?}: {e}"))
    }
}
