//! The file behind a secret mount: the secret's value on a private tmpfs under the
//! worker's tmp dir, bound read-only into the container for one run.
//!
//! A tmpfs, so that the value never reaches a disk; under the worker's tmp dir, so that a
//! daemon that crashes mid-run leaves it where the next start detaches and removes it.
//! The container sees only the file, never a snapshot: nothing of it is committed or
//! cached (the executor removes the empty stub it may create at the destination).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use snapshot::mount::MountGuard;

/// A secret's file, unmounted and removed when dropped.
#[derive(Debug)]
pub(crate) struct SecretFile {
    /// Taken on drop, to unmount before the directory is removed.
    mount: Option<MountGuard>,
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl SecretFile {
    /// Writes `data` to a new tmpfs under `tmp`, as a file owned by `uid`:`gid` with
    /// permission bits `mode`. Blocking.
    pub(crate) fn create(
        tmp: &Path,
        data: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<SecretFile, String> {
        std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        // tempfile creates the directory with mode 0700: only root may look inside.
        let dir = tempfile::Builder::new()
            .prefix("secret-")
            .tempdir_in(tmp)
            .map_err(|e| format!("temporary directory in {}: {e}", tmp.display()))?;
        let mut options = vec!["nodev".to_string(), "nosuid".into(), "mode=0700".into()];
        // As upstream: a secret that is not meant to be run is not runnable.
        if mode & 0o111 == 0 {
            options.push("noexec".into());
        }
        let tmpfs = snapshot::Mount {
            fstype: "tmpfs".into(),
            source: "tmpfs".into(),
            options,
        };
        let mount = snapshot::mount::mount_all(std::slice::from_ref(&tmpfs), dir.path())
            .map_err(|e| format!("cannot set up the secret's tmpfs: {e}"))?;
        let path = dir.path().join("secret");
        let file = SecretFile {
            mount: Some(mount),
            dir,
            path,
        };
        file.fill(data, uid, gid, mode)?;
        Ok(file)
    }

    fn fill(&self, data: &[u8], uid: u32, gid: u32, mode: u32) -> Result<(), String> {
        let io = |what: &str, e: std::io::Error| format!("{what} the secret's file: {e}");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| io("creating", e))?;
        f.write_all(data).map_err(|e| io("writing", e))?;
        drop(f);
        std::os::unix::fs::chown(&self.path, Some(uid), Some(gid))
            .map_err(|e| io("changing the owner of", e))?;
        // After chown, which may clear special bits.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| io("changing the mode of", e))?;
        Ok(())
    }

    /// The file to bind into the container.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the tmpfs is mounted on.
    #[cfg(test)]
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take()
            && let Err(e) = m.release()
        {
            // The directory then cannot go either; the next daemon start reclaims both.
            tracing::warn!(dir = %self.dir.path().display(), error = %e, "cannot unmount a secret's tmpfs");
        }
        // `dir` is removed when its field drops, right after this.
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn is_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn the_file_has_the_value_owner_and_mode_and_goes_away() {
        if !is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let f = SecretFile::create(tmp.path(), b"hunter2", 1000, 1001, 0o440).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"hunter2");
        let md = std::fs::metadata(f.path()).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1000, 1001, 0o440)
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = f.dir().to_path_buf();
        assert!(
            mounts.contains(&format!(" {} ", dir.display())),
            "a tmpfs is mounted on {}",
            dir.display()
        );
        drop(f);
        assert!(!dir.exists(), "{} is removed", dir.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&format!(" {} ", dir.display())));
    }
}
