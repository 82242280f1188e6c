//! One run's OCI bundle, `<state_dir>/<id>/`:
//!
//! ```text
//! config.json     the runtime spec
//! rootfs/         the request's rootfs mounts, mounted here by us
//! mounts/<n>/     extra mounts given as snapshot mounts, mounted here by us, bound into the spec
//! hosts           bound over /etc/hosts
//! resolv.conf     bound over /etc/resolv.conf
//! log.json        the runtime's log
//! ```
//!
//! [`Bundle::prepare`] builds it; [`Bundle::teardown`] (or, as a fallback, dropping the
//! bundle) removes mount stubs, unmounts everything it mounted and deletes the directory,
//! refusing to delete while anything below it is still mounted. Blocking: call from a
//! blocking context.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use snapshot::mount::{MountGuard, mount_all};
use snapshot::mountinfo;

use crate::error::{ExecError, Result};
use crate::hosts;
use crate::request::{MountSource, RunRequest};
use crate::rootfs::{MountStubs, Root};
use crate::spec::{self, HostFacts, SpecInput, SpecMount};
use crate::user;

/// Files and mounts of one run.
#[derive(Debug)]
pub(crate) struct Bundle {
    id: String,
    dir: PathBuf,
    rootfs: PathBuf,
    rootfs_guard: Option<MountGuard>,
    extra_guards: Vec<MountGuard>,
    stubs: MountStubs,
    torn_down: bool,
}

impl Bundle {
    /// Creates the bundle for `req` under `state_dir`. On error, whatever was done is
    /// undone before returning.
    pub(crate) fn prepare(
        state_dir: &Path,
        req: &RunRequest,
        facts: &HostFacts,
        no_new_privileges: bool,
    ) -> Result<Bundle> {
        let dir = state_dir.join(&req.id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ExecError::AlreadyExists {
                    id: req.id.clone(),
                    path: dir,
                });
            }
            Err(e) => return Err(ExecError::io("create bundle directory", dir)(e)),
        }
        let mut bundle = Bundle {
            id: req.id.clone(),
            rootfs: dir.join("rootfs"),
            dir,
            rootfs_guard: None,
            extra_guards: Vec::new(),
            stubs: MountStubs::default(),
            torn_down: false,
        };
        // From here on, an error drops `bundle`, which tears down what exists.
        bundle.fill(req, facts, no_new_privileges)?;
        Ok(bundle)
    }

    fn fill(&mut self, req: &RunRequest, facts: &HostFacts, no_new_privileges: bool) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.rootfs)
            .map_err(ExecError::io("create rootfs directory", &self.rootfs))?;
        self.rootfs_guard = Some(mount_all(&req.rootfs, &self.rootfs)?);

        let user = user::resolve_in_rootfs(&self.rootfs, &req.user)?;
        let root = Root::open(&self.rootfs).map_err(ExecError::io("open rootfs", &self.rootfs))?;
        let cwd = Path::new(req.cwd_or_root());
        root.mkdir_all(cwd, 0o755, user.uid, user.gid)
            .map_err(ExecError::io("create working directory", cwd))?;

        let etc = [Path::new("/etc/resolv.conf"), Path::new("/etc/hosts")];
        self.stubs = MountStubs::record(
            &root,
            etc.into_iter()
                .chain(req.mounts.iter().map(|m| m.dest.as_path())),
        );

        let hosts_file = self.dir.join("hosts");
        write_file(
            &hosts_file,
            hosts::hosts_file(&req.hostname, &req.extra_hosts).as_bytes(),
        )?;
        let resolv_conf = self.dir.join("resolv.conf");
        let resolv = hosts::read_resolv_conf(req.network).map_err(ExecError::io(
            "read host resolver configuration",
            "/etc/resolv.conf",
        ))?;
        write_file(&resolv_conf, resolv.as_bytes())?;

        let mut extra_mounts = Vec::with_capacity(req.mounts.len());
        for (n, m) in req.mounts.iter().enumerate() {
            extra_mounts.push(match &m.source {
                MountSource::Tmpfs { size } => SpecMount::tmpfs(&m.dest, *size),
                MountSource::Bind { path, readonly } => SpecMount::bind(&m.dest, path, *readonly),
                MountSource::Mounts(mounts) => {
                    let target = self.dir.join("mounts").join(n.to_string());
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&target)
                        .map_err(ExecError::io("create mount directory", &target))?;
                    self.extra_guards.push(mount_all(mounts, &target)?);
                    let readonly = mounts.iter().any(snapshot::Mount::is_readonly);
                    SpecMount::bind(&m.dest, &target, readonly)
                }
            });
        }

        let spec = spec::generate(&SpecInput {
            req,
            rootfs: &self.rootfs,
            user: &user,
            hosts_file: &hosts_file,
            resolv_conf: &resolv_conf,
            extra_mounts,
            host: facts,
            no_new_privileges,
        })?;
        let config = self.dir.join("config.json");
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| ExecError::Io {
            op: "encode",
            path: config.clone(),
            source: e.into(),
        })?;
        write_file(&config, &json)
    }

    /// The bundle directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the runtime writes its log.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("log.json")
    }

    /// Removes mount stubs, unmounts, deletes the directory. Reports every problem.
    pub(crate) fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut problems = Vec::new();
        if self.rootfs_guard.is_some() {
            match Root::open(&self.rootfs) {
                Ok(root) => self.stubs.remove(&root),
                Err(e) => problems.push(format!("open rootfs to remove mount stubs: {e}")),
            }
        }
        while let Some(g) = self.extra_guards.pop() {
            if let Err(e) = g.release() {
                problems.push(e.to_string());
            }
        }
        if let Some(Err(e)) = self.rootfs_guard.take().map(MountGuard::release) {
            problems.push(e.to_string());
        }
        match remove_unmounted(&self.dir) {
            Ok(()) => {}
            Err(e) => problems.push(e),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ExecError::Cleanup {
                id: self.id.clone(),
                reason: problems.join("; "),
            })
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if let Err(e) = self.teardown_inner() {
            tracing::error!(bundle = %self.dir.display(), error = %e, "bundle cleanup failed");
        }
    }
}

/// Detaches anything still mounted at or below `dir`, then deletes `dir` unless a mount
/// survived (deleting through a mount would delete the mounted files).
pub(crate) fn remove_unmounted(dir: &Path) -> std::result::Result<(), String> {
    let left = mountinfo::mounts_under(dir).map_err(|e| format!("read mountinfo: {e}"))?;
    for p in &left {
        tracing::warn!(mount = %p.display(), "detaching leftover mount");
        if let Err(e) = snapshot::mount::unmount(p) {
            tracing::warn!(mount = %p.display(), error = %e, "detach failed");
        }
    }
    if !left.is_empty() {
        let still = mountinfo::mounts_under(dir).map_err(|e| format!("read mountinfo: {e}"))?;
        if let Some(p) = still.first() {
            return Err(format!(
                "{} is still mounted; not removing {}",
                p.display(),
                dir.display()
            ));
        }
    }
    let removed = match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(dir),
        Ok(_) => fs::remove_file(dir),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", dir.display())),
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(ExecError::io("create", path))?;
    f.write_all(data).map_err(ExecError::io("write", path))
}
