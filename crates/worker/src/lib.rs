//! The OCI worker: everything that holds data or runs processes, opened together under
//! one root directory, as upstream's `runc` worker is.
//!
//! Layout under the root: `metadata.redb` (the metadata DB), `content/` (blobs),
//! `snapshots/` (the snapshotter), `executor/` (runc bundles and state), `tmp/` (mount
//! points of snapshots mounted for the length of one operation). Opening a worker
//! reclaims what a crashed daemon left: runc containers (killed) and mounts under
//! `executor/`, everything under `tmp/` (mounts detached first), snapshots that were never
//! committed (writable ones and views: only a running process can use them), snapshot
//! directories without records, partial ingests.
//!
//! This crate wires the parts together and adds layer computation ([`Worker::diff`]). It
//! does not schedule work (the solver does) or know about LLB.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use archive::{DiffOptions, DiffStats};
use content::ContentStore;
use executor::{Executor, RuncExecutor, Runtime};
use metadata::{MetadataStore, RedbStore};
use registry::{CredentialSource, CredentialsFn, Hosts, PulledImage, Registry};
use snapshot::{Kind, Snapshotter};

/// The directory under the root that holds the mount points of snapshots mounted for the
/// length of one operation. Nothing in it outlives the process that made it.
pub const TMP_DIR: &str = "tmp";

/// Errors of opening and using a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("worker root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Archive(#[from] archive::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Exec(#[from] executor::ExecError),
    #[error("internal: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to open a worker.
#[derive(Clone, Default)]
pub struct WorkerOptions {
    /// `auto` (default), `overlayfs` or `native`.
    pub snapshotter: Option<String>,
    /// Registry host settings.
    pub hosts: Hosts,
    /// Registry credentials lookup.
    pub credentials: Option<CredentialsFn>,
    /// The OCI runtime binary; found on `PATH` when `None`.
    pub runtime: Option<PathBuf>,
}

/// The worker's parts, opened under one root.
pub struct Worker {
    root: PathBuf,
    pub metadata: Arc<dyn MetadataStore>,
    pub content: ContentStore,
    pub snapshotter: Arc<dyn Snapshotter>,
    pub registry: Registry,
    pub executor: Arc<dyn Executor>,
    /// The same executor, for the runc-specific clean-up at shutdown.
    runc: Arc<RuncExecutor>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("root", &self.root)
            .field("snapshotter", &self.snapshotter.name())
            .finish()
    }
}

/// The schema of the worker's metadata DB. Each part keeps its own tables; version 1 is
/// the initial layout.
fn migrations() -> Vec<metadata::Migration> {
    vec![metadata::Migration {
        version: 1,
        description: "initial layout",
        apply: |_| Ok(()),
    }]
}

impl Worker {
    /// Opens (creating if needed) the worker under `root` and reclaims leftovers from a
    /// previous process.
    pub async fn open(root: &Path, opts: WorkerOptions) -> Result<Worker> {
        let io = |source| Error::Root {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io)?;
        let root = root.canonicalize().map_err(io)?;
        // Opened first: the database's lock makes this process the root's only user, which
        // is what makes it safe to kill containers and unmount below.
        let metadata: Arc<dyn MetadataStore> =
            Arc::new(RedbStore::open(&root.join("metadata.redb"), &migrations())?);
        let content = ContentStore::open(&root, metadata.clone())?;
        let name = opts.snapshotter.as_deref().unwrap_or("auto");
        let snapshotter = snapshot::by_name(name, &root, metadata.clone())?;
        let runtime = match &opts.runtime {
            Some(p) => Runtime::from_path(p)?,
            None => Runtime::detect()?,
        };
        let executor = Arc::new(RuncExecutor::new(root.join("executor"), runtime)?);
        let report = executor.cleanup_stale().await?;
        if !report.containers.is_empty() || !report.unmounted.is_empty() {
            tracing::warn!(
                containers = report.containers.len(),
                mounts = report.unmounted.len(),
                "reclaimed state left by a previous process"
            );
        }
        // The executor's containers are gone now, so nothing uses what is mounted under
        // tmp/ any more, nor any uncommitted snapshot.
        let (tmp, s2) = (root.join(TMP_DIR), snapshotter.clone());
        let (unmounted, removed, uncommitted, orphans) = tokio::task::spawn_blocking(move || {
            let (unmounted, removed) = reclaim_tmp(&tmp)?;
            let uncommitted = remove_uncommitted(s2.as_ref())?;
            let orphans = s2.cleanup()?;
            Ok::<_, Error>((unmounted, removed, uncommitted, orphans))
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
        if unmounted + removed + uncommitted.len() + orphans > 0 {
            tracing::warn!(
                mounts = unmounted,
                tmp_entries = removed,
                uncommitted = uncommitted.len(),
                orphans,
                "reclaimed temporary mounts and snapshots left by a previous process"
            );
        }
        Ok(Worker {
            registry: Registry::new(opts.hosts, opts.credentials),
            root,
            metadata,
            content,
            snapshotter,
            executor: executor.clone(),
            runc: executor,
        })
    }

    /// Releases what running steps hold, for a daemon that is stopping after cancelling
    /// its builds: containers still alive are killed and deleted, and the mounts under
    /// `tmp/` are detached. A cancelled step normally cleans up after itself; this covers
    /// one whose clean-up had not finished when the daemon exits.
    pub async fn release(&self) -> Result<()> {
        let report = self.runc.cleanup_stale().await?;
        let tmp = self.tmp_dir();
        let (unmounted, _) = tokio::task::spawn_blocking(move || reclaim_tmp(&tmp))
            .await
            .map_err(|e| Error::Join(e.to_string()))??;
        if !report.containers.is_empty() || unmounted > 0 {
            tracing::info!(
                containers = report.containers.len(),
                mounts = unmounted,
                "released the steps of cancelled builds"
            );
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/tmp`: where to create the mount point of a snapshot mounted for the length
    /// of one operation, so that a crash leaves it where the next start looks.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// A new empty directory under [`Worker::tmp_dir`], removed when dropped.
    fn tempdir(&self) -> Result<tempfile::TempDir> {
        let tmp = self.tmp_dir();
        std::fs::create_dir_all(&tmp)
            .and_then(|()| tempfile::tempdir_in(&tmp))
            .map_err(|source| Error::Root { path: tmp, source })
    }

    /// Pulls `reference` for `platform` and unpacks it; returns the image and the key of
    /// its top snapshot (`None` for an image without layers).
    pub async fn pull(
        &self,
        reference: &str,
        platform: &llb::Platform,
        lease: Option<&str>,
    ) -> Result<(PulledImage, Option<String>)> {
        self.pull_with(reference, platform, lease, None).await
    }

    /// [`Worker::pull`] with the registry credentials of `creds` (a build's session).
    pub async fn pull_with(
        &self,
        reference: &str,
        platform: &llb::Platform,
        lease: Option<&str>,
        creds: Option<&dyn CredentialSource>,
    ) -> Result<(PulledImage, Option<String>)> {
        let image = self
            .registry
            .pull_with(reference, platform, &self.content, lease, creds)
            .await?;
        let (img, store, snap) = (
            image.clone(),
            self.content.clone(),
            self.snapshotter.clone(),
        );
        let top =
            tokio::task::spawn_blocking(move || registry::unpack(&img, &store, snap.as_ref()))
                .await
                .map_err(|e| Error::Join(e.to_string()))??;
        Ok((image, top))
    }

    /// Writes the layer of committed snapshot `key` over `parent` as a tar (compressed as
    /// `opts` says) to `writer`. Overlay snapshots are diffed from their upper directory,
    /// compared with a read-only view of the parent so that what was copied up without
    /// change is left out; native ones by comparing the two trees. Blocking.
    pub fn diff<W: Write + Send>(
        &self,
        key: &str,
        parent: Option<&str>,
        writer: W,
        opts: &DiffOptions,
    ) -> Result<DiffStats> {
        let upper = self.snapshotter.layer_dir(key)?;
        if self.snapshotter.name() == "overlayfs" {
            let Some(parent) = parent else {
                return Ok(archive::diff_overlay(&upper, writer, opts)?);
            };
            return self.with_view(parent, |base| {
                Ok(archive::diff_overlay_with_base(&upper, base, writer, opts)?)
            });
        }
        match parent {
            Some(p) => {
                let lower = self.snapshotter.layer_dir(p)?;
                Ok(archive::diff_dirs(&lower, &upper, writer, opts)?)
            }
            None => {
                let empty = self.tempdir()?;
                Ok(archive::diff_dirs(empty.path(), &upper, writer, opts)?)
            }
        }
    }

    /// Mounts a read-only view of committed snapshot `key` for the length of `f`.
    fn with_view<T>(&self, key: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let view_key = format!(
            "view/{}/{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mounts = self.snapshotter.view(&view_key, Some(key))?;
        let result = (|| {
            let target = self.tempdir()?;
            let guard = snapshot::mount::mount_all(&mounts, target.path())?;
            let out = f(target.path());
            guard.release()?;
            out
        })();
        self.snapshotter.remove(&view_key)?;
        result
    }
}

/// Detaches every mount under `tmp` and empties it (creating it if missing); returns how
/// many mounts were detached and how many entries removed. Blocking.
fn reclaim_tmp(tmp: &Path) -> Result<(usize, usize)> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Root { path, source }
    };
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    // Detach first: removing a directory tree would delete through a mount into the
    // snapshot mounted there. This fails if any mount stays, so nothing below is mounted
    // when the entries go.
    let unmounted = snapshot::mount::unmount_all_under(tmp)?;
    for p in &unmounted {
        tracing::info!(mount = %p.display(), "detached stale temporary mount");
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp).map_err(io(tmp))? {
        let path = entry.map_err(io(tmp))?.path();
        let r = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok((unmounted.len(), removed))
}

/// Removes every snapshot that is not committed: writable snapshots being prepared and
/// read-only views exist only for an operation of a running process, so at start-up they
/// are garbage (their data was never a result). Returns their keys. Blocking.
fn remove_uncommitted(s: &dyn Snapshotter) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for info in s.list()? {
        if info.kind == Kind::Committed {
            continue;
        }
        s.remove(&info.key)?;
        tracing::info!(key = %info.key, kind = %info.kind, "removed uncommitted snapshot");
        removed.push(info.key);
    }
    Ok(removed)
}
