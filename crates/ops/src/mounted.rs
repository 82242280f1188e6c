//! Snapshots mounted for the length of an op: read-only views of results, and writable
//! active snapshots that become results when committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapshot::Snapshotter;
use snapshot::mount::{MountGuard, mount_all};
use solver::OpError;

use crate::{OpsContext, RecordType, Ref, op_err};

/// A directory holding a mounted snapshot (or an empty directory for scratch), unmounted
/// and cleaned up when dropped.
pub struct Mounted {
    dir: tempfile::TempDir,
    guard: Option<MountGuard>,
    /// A view snapshot created for this mount, removed on drop.
    view: Option<String>,
    snapshotter: Arc<dyn Snapshotter>,
}

impl Mounted {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take()
            && let Err(e) = g.release()
        {
            tracing::warn!(error = %e, "unmounting a view failed");
        }
        if let Some(v) = self.view.take()
            && let Err(e) = self.snapshotter.remove(&v)
        {
            tracing::warn!(view = v, error = %e, "removing a view failed");
        }
    }
}

/// A mount point under the worker's tmp dir, which the next start empties if this
/// process dies before dropping it.
fn tmpdir(ctx: &OpsContext) -> Result<tempfile::TempDir, OpError> {
    let base = ctx.worker.tmp_dir();
    std::fs::create_dir_all(&base).map_err(|e| op_err(format!("{}: {e}", base.display())))?;
    tempfile::tempdir_in(&base).map_err(|e| op_err(format!("{}: {e}", base.display())))
}

/// Mounts a read-only view of `r`. Blocking.
pub(crate) fn view(ctx: &OpsContext, r: &Ref) -> Result<Mounted, OpError> {
    let snapshotter = ctx.worker.snapshotter.clone();
    let dir = tmpdir(ctx)?;
    let Some(key) = r.key() else {
        return Ok(Mounted {
            dir,
            guard: None,
            view: None,
            snapshotter,
        });
    };
    let view_key = OpsContext::new_key("view");
    let mounts = snapshotter.view(&view_key, Some(key)).map_err(op_err)?;
    let mut m = Mounted {
        dir,
        guard: None,
        view: Some(view_key),
        snapshotter,
    };
    m.guard = Some(mount_all(&mounts, m.dir.path()).map_err(op_err)?);
    Ok(m)
}

/// A writable snapshot being prepared over a parent result.
pub(crate) struct Active {
    pub(crate) key: String,
    snapshotter: Arc<dyn Snapshotter>,
    cache: Arc<cache::CacheManager>,
    done: bool,
}

impl Active {
    /// Prepares a new active snapshot over `parent`. Blocking.
    pub(crate) fn prepare(ctx: &OpsContext, parent: &Ref) -> Result<Active, OpError> {
        let snapshotter = ctx.worker.snapshotter.clone();
        let key = OpsContext::new_key("active");
        snapshotter.prepare(&key, parent.key()).map_err(op_err)?;
        Ok(Active {
            key,
            snapshotter,
            cache: ctx.cache.clone(),
            done: false,
        })
    }

    pub(crate) fn mounts(&self) -> Result<Vec<snapshot::Mount>, OpError> {
        self.snapshotter.mounts(&self.key).map_err(op_err)
    }

    /// Mounts it on a temporary directory for writing. Blocking.
    pub(crate) fn mount(&self, ctx: &OpsContext) -> Result<Mounted, OpError> {
        let mounts = self.mounts()?;
        let mut m = Mounted {
            dir: tmpdir(ctx)?,
            guard: None,
            view: None,
            snapshotter: self.snapshotter.clone(),
        };
        m.guard = Some(mount_all(&mounts, m.dir.path()).map_err(op_err)?);
        Ok(m)
    }

    /// Commits it as a new (regular) result described by `description`. Blocking.
    pub(crate) fn commit(self, description: &str) -> Result<Ref, OpError> {
        self.commit_as(RecordType::Regular, description)
    }

    /// Commits it as a new result of `record_type`. Blocking.
    pub(crate) fn commit_as(
        mut self,
        record_type: RecordType,
        description: &str,
    ) -> Result<Ref, OpError> {
        let name = OpsContext::new_key("ref");
        // Held before it exists: no prune can take it between the commit and the hold.
        let hold = self
            .cache
            .hold(&name)
            .ok_or_else(|| op_err(format!("snapshot {name} is being removed before it exists")))?;
        self.snapshotter.commit(&name, &self.key).map_err(op_err)?;
        self.done = true;
        self.cache.created(&name, record_type, description);
        Ok(Ref(Some(Arc::new(hold))))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.snapshotter.remove(&self.key)
        {
            tracing::warn!(key = self.key, error = %e, "removing an unused active snapshot failed");
        }
    }
}

/// `dir` joined with an absolute-looking `sub` path, kept inside `dir` lexically (the
/// caller resolves symlinks inside the root when it matters).
pub(crate) fn join_inside(dir: &Path, sub: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for part in sub.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out != dir {
                    out.pop();
                }
            }
            p => out.push(p),
        }
    }
    out
}
