//! Start-up cleanup of what a killed daemon left in the executor's state directory:
//! containers under the runtime root, mounts below the state directory, bundle
//! directories.

use std::io;
use std::path::{Path, PathBuf};

use snapshot::mountinfo;

use crate::bundle::remove_unmounted;
use crate::error::{ExecError, Result};
use crate::runc::RUNTIME_ROOT_DIR;
use crate::runtime::Runtime;

/// What [`cleanup_stale`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Ids of containers deleted (killed first if they still ran).
    pub containers: Vec<String>,
    /// Mount points detached.
    pub unmounted: Vec<PathBuf>,
    /// Bundle directories removed.
    pub removed: Vec<PathBuf>,
}

impl CleanupReport {
    /// Whether nothing was left behind.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.unmounted.is_empty() && self.removed.is_empty()
    }
}

/// Deletes every container under `<state_dir>/runc`, detaches every mount below
/// `state_dir`, and removes every other entry of `state_dir`. Meant for daemon
/// start-up: it destroys running containers too. Keeps going after an error and reports
/// the first one at the end.
pub async fn cleanup_stale(state_dir: &Path, runtime: &Runtime) -> Result<CleanupReport> {
    let runtime_root = state_dir.join(RUNTIME_ROOT_DIR);
    let mut report = CleanupReport::default();
    let mut problems = Vec::new();
    match runtime.list(&runtime_root).await {
        Ok(ids) => {
            for id in ids {
                match runtime.delete(&runtime_root, &id).await {
                    Ok(()) => {
                        tracing::info!(id = %id, "deleted stale container");
                        report.containers.push(id);
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }

    let dir = state_dir.to_path_buf();
    let (unmounted, removed, more) = tokio::task::spawn_blocking(move || clean_dir(&dir))
        .await
        .map_err(|e| ExecError::Internal {
            id: String::new(),
            reason: e.to_string(),
        })?;
    report.unmounted = unmounted;
    report.removed = removed;
    problems.extend(more);

    if problems.is_empty() {
        Ok(report)
    } else {
        Err(ExecError::Cleanup {
            id: state_dir.display().to_string(),
            reason: problems.join("; "),
        })
    }
}

/// Blocking part: mounts first (deepest first), then directories.
fn clean_dir(state_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
    let mut problems = Vec::new();
    let mut unmounted = Vec::new();
    match mountinfo::mounts_under(state_dir) {
        Ok(points) => {
            for p in points {
                match snapshot::mount::unmount(&p) {
                    Ok(()) => {
                        tracing::info!(mount = %p.display(), "detached stale mount");
                        unmounted.push(p);
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Err(e) => problems.push(format!("read mountinfo: {e}")),
    }

    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (unmounted, removed, problems),
        Err(e) => {
            problems.push(format!("read {}: {e}", state_dir.display()));
            return (unmounted, removed, problems);
        }
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                problems.push(format!("read {}: {e}", state_dir.display()));
                continue;
            }
        };
        if path.file_name().is_some_and(|n| n == RUNTIME_ROOT_DIR) {
            continue;
        }
        match remove_unmounted(&path) {
            Ok(()) => {
                tracing::info!(bundle = %path.display(), "removed stale bundle");
                removed.push(path);
            }
            Err(e) => problems.push(e),
        }
    }
    (unmounted, removed, problems)
}
