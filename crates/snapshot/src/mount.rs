//! Mounting [`Mount`]s: the one place that mounts and unmounts (through rustix's safe
//! wrappers, so no `unsafe` is needed).
//!
//! Overlay mounts go through the new mount API: `fsopen("overlay")`, one
//! `fsconfig(lowerdir+)` per layer, `fsmount`, `move_mount`. That has no limit on the
//! number of layers, whereas `mount(2)` takes all options in one page (4 KiB: about 150
//! layers with short paths). When the kernel lacks the new API (`ENOSYS`) or `lowerdir+`
//! (before Linux 6.8), we fall back to `mount(2)` and fail clearly if the options do not
//! fit ([`Error::OptionsTooLong`]). Other filesystems use `mount(2)`.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::{Error, Mount, Result};

fn mount_err(m: &Mount, target: &Path, e: impl std::fmt::Display) -> Error {
    Error::Mount {
        fstype: m.fstype.clone(),
        target: target.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Mounts one mount on `target` (an existing directory).
pub fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    match m.fstype.as_str() {
        "bind" | "rbind" => mount_bind(m, target),
        "overlay" => match mount_overlay_fsapi(m, target) {
            Ok(()) => Ok(()),
            Err(FsApiError::Unsupported(why)) => {
                tracing::debug!(target = %target.display(), why, "new mount API unusable; using mount(2)");
                mount_one_classic(m, target)
            }
            Err(FsApiError::Failed(e)) => Err(e),
        },
        _ => mount_one_classic(m, target),
    }
}

fn mount_bind(m: &Mount, target: &Path) -> Result<()> {
    let recursive = m.fstype == "rbind" || m.options.iter().any(|o| o == "rbind");
    let r = if recursive {
        rustix::mount::mount_bind_recursive(m.source.as_str(), target)
    } else {
        rustix::mount::mount_bind(m.source.as_str(), target)
    };
    r.map_err(|e| mount_err(m, target, format!("bind {}: {e}", m.source)))?;
    if m.is_readonly() {
        // A bind mount takes the read-only flag only on a remount.
        let flags = MountFlags::BIND | MountFlags::RDONLY | classic_flags(m).0;
        if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
            if let Err(u) = unmount(target) {
                tracing::warn!(target = %target.display(), error = %u, "undoing a bind mount failed");
            }
            return Err(mount_err(m, target, format!("remount read-only: {e}")));
        }
    }
    tracing::debug!(source = %m.source, target = %target.display(), ro = m.is_readonly(), "bind mounted");
    Ok(())
}

/// Splits options into `mount(2)` flags and the comma-joined data string.
fn classic_flags(m: &Mount) -> (MountFlags, Vec<&str>) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" | "bind" | "rbind" => {}
            "nosuid" => flags |= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            "noatime" => flags |= MountFlags::NOATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            other => data.push(other),
        }
    }
    (flags, data)
}

/// The `mount(2)` data for `m`, if it fits in `max` bytes (NUL included).
fn classic_data(m: &Mount, target: &Path, max: usize) -> Result<(MountFlags, CString)> {
    let (flags, data) = classic_flags(m);
    let data = data.join(",");
    if data.len() + 1 > max {
        return Err(Error::OptionsTooLong {
            fstype: m.fstype.clone(),
            target: target.to_path_buf(),
            len: data.len() + 1,
            max,
        });
    }
    let data = CString::new(data).map_err(|e| mount_err(m, target, e))?;
    Ok((flags, data))
}

/// Mounts with `mount(2)` only: what [`mount_one`] falls back to on kernels without the
/// new mount API. Public so that callers and tests can exercise that path.
pub fn mount_one_classic(m: &Mount, target: &Path) -> Result<()> {
    if matches!(m.fstype.as_str(), "bind" | "rbind") {
        return mount_bind(m, target);
    }
    let (flags, data) = classic_data(m, target, rustix::param::page_size())?;
    rustix::mount::mount(
        m.source.as_str(),
        target,
        m.fstype.as_str(),
        flags,
        Some(data.as_c_str()),
    )
    .map_err(|e| mount_err(m, target, e))?;
    tracing::debug!(fstype = %m.fstype, target = %target.display(), "mounted with mount(2)");
    Ok(())
}

enum FsApiError {
    /// The kernel cannot do this through the new API; `mount(2)` may.
    Unsupported(&'static str),
    Failed(Error),
}

/// The layers of a `lowerdir=` value: split at `:` not escaped by `\`.
fn split_lowerdirs(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(s)) = (chars.next(), out.last_mut()) {
                    s.push(n);
                }
            }
            ':' => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c);
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The kernel's messages about a failed fs context (`e overlay: ...` lines).
fn kernel_log(fs: &OwnedFd) -> String {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf[..]) {
            Ok(n) if n > 0 => msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    msgs.join("; ")
}

/// Longest string value `fsconfig(FSCONFIG_SET_STRING)` accepts (the kernel copies 256
/// bytes with the NUL).
const FSCONFIG_MAX: usize = 255;

fn mount_overlay_fsapi(m: &Mount, target: &Path) -> Result<(), FsApiError> {
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS | Errno::PERM) => return Err(FsApiError::Unsupported("no fsopen")),
        Err(e) => {
            return Err(FsApiError::Failed(mount_err(
                m,
                target,
                format!("fsopen: {e}"),
            )));
        }
    };
    let failed = |what: String, e: Errno| {
        let log = kernel_log(&fs);
        let reason = if log.is_empty() {
            format!("{what}: {e}")
        } else {
            format!("{what}: {e} ({log})")
        };
        FsApiError::Failed(mount_err(m, target, reason))
    };
    let set = |key: &str, value: &str| -> Result<(), FsApiError> {
        if value.len() > FSCONFIG_MAX {
            return Err(FsApiError::Unsupported(
                "option value longer than fsconfig takes",
            ));
        }
        rustix::mount::fsconfig_set_string(fs.as_fd(), key, value)
            .map_err(|e| failed(format!("fsconfig {key}={value}"), e))
    };
    set("source", &m.source)?;
    let mut attrs = MountAttrFlags::empty();
    let mut layers = 0usize;
    for o in &m.options {
        let (key, value) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (key, value) {
            ("ro", None) => attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY,
            ("rw", None) => {}
            ("nosuid", None) => attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID,
            ("nodev", None) => attrs |= MountAttrFlags::MOUNT_ATTR_NODEV,
            ("noexec", None) => attrs |= MountAttrFlags::MOUNT_ATTR_NOEXEC,
            ("noatime", None) => attrs |= MountAttrFlags::MOUNT_ATTR_NOATIME,
            ("lowerdir", Some(v)) => {
                for dir in split_lowerdirs(v) {
                    if dir.len() > FSCONFIG_MAX {
                        return Err(FsApiError::Unsupported(
                            "lowerdir longer than fsconfig takes",
                        ));
                    }
                    match rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", &dir) {
                        Ok(()) => layers += 1,
                        // Unknown parameter: a kernel before 6.8.
                        Err(Errno::INVAL) if layers == 0 => {
                            return Err(FsApiError::Unsupported("no overlay lowerdir+"));
                        }
                        Err(e) => return Err(failed(format!("fsconfig lowerdir+={dir}"), e)),
                    }
                }
            }
            (k, Some(v)) => set(k, v)?,
            (k, None) => rustix::mount::fsconfig_set_flag(fs.as_fd(), k)
                .map_err(|e| failed(format!("fsconfig {k}"), e))?,
        }
    }
    rustix::mount::fsconfig_create(fs.as_fd())
        .map_err(|e| failed("create superblock".into(), e))?;
    let mnt = rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| failed("fsmount".into(), e))?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| FsApiError::Failed(mount_err(m, target, format!("move_mount: {e}"))))?;
    tracing::debug!(target = %target.display(), layers, "overlay mounted with the new mount API");
    Ok(())
}

/// Mounts `mounts` in order on `target`; on failure, undoes what it mounted.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<MountGuard> {
    let mut guard = MountGuard {
        targets: Vec::new(),
    };
    for m in mounts {
        mount_one(m, target)?;
        guard.targets.push(target.to_path_buf());
    }
    Ok(guard)
}

/// Detaches a mount (lazily, so a busy mount does not keep us waiting).
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| Error::Mount {
        fstype: "umount".into(),
        target: target.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Detaches every mount at or below `dir` in this mount namespace, the deepest and newest
/// first, reading the mount table again after each one: a mount point can hold stacked
/// mounts, and detaching a parent takes its children with it. Meant for reclaiming what a
/// killed process left; returns the mount points detached. Fails if a mount stays.
pub fn unmount_all_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = || {
        crate::mountinfo::mounts_under(dir).map_err(|source| Error::Io {
            op: "read the mount table for",
            path: dir.to_path_buf(),
            source,
        })
    };
    let mut points = read()?;
    // Each round removes at least one mount, or fails; the bound only guards against a
    // mount table that keeps changing under us.
    let mut rounds = points.len() * 2 + 8;
    let mut detached = Vec::new();
    while let Some(p) = points.first().cloned() {
        if rounds == 0 {
            return Err(Error::Mount {
                fstype: "umount".into(),
                target: p,
                reason: "mounts below keep reappearing".into(),
            });
        }
        rounds -= 1;
        let result = unmount(&p);
        points = read()?;
        match result {
            Ok(()) => detached.push(p),
            // Already gone (taken away with a parent, or by someone else): fine.
            Err(_) if !points.contains(&p) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(detached)
}

/// Unmounts what it holds when dropped (last mounted first).
#[derive(Debug)]
#[must_use = "the mounts are undone when the guard is dropped"]
pub struct MountGuard {
    targets: Vec<PathBuf>,
}

impl MountGuard {
    /// Unmounts now, reporting the first error.
    pub fn release(mut self) -> Result<()> {
        let mut first = None;
        while let Some(t) = self.targets.pop() {
            if let Err(e) = unmount(&t) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        while let Some(t) = self.targets.pop() {
            if let Err(e) = unmount(&t) {
                tracing::warn!(target = %t.display(), error = %e, "unmount failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(layers: usize) -> Mount {
        let lower: Vec<String> = (0..layers)
            .map(|i| format!("/var/lib/buildkit/snapshots/{i}/fs"))
            .collect();
        Mount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", lower.join(":")),
                "upperdir=/u".into(),
                "workdir=/w".into(),
                "ro".into(),
            ],
        }
    }

    #[test]
    fn classic_data_fits_a_page_or_says_why_not() {
        let t = Path::new("/mnt/x");
        let (flags, data) = classic_data(&overlay(2), t, 4096).unwrap();
        assert_eq!(flags, MountFlags::RDONLY);
        assert_eq!(
            data.to_str().unwrap(),
            "lowerdir=/var/lib/buildkit/snapshots/0/fs:/var/lib/buildkit/snapshots/1/fs,upperdir=/u,workdir=/w"
        );
        let e = classic_data(&overlay(200), t, 4096).unwrap_err();
        assert!(
            matches!(e, Error::OptionsTooLong { len, max: 4096, .. } if len > 4096),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("/mnt/x") && msg.contains("lowerdir+"), "{msg}");
    }

    #[test]
    fn lowerdirs_split_at_unescaped_colons() {
        assert_eq!(split_lowerdirs("/a:/b"), ["/a", "/b"]);
        assert_eq!(split_lowerdirs("/a\\:b:/c"), ["/a:b", "/c"]);
        assert_eq!(split_lowerdirs("/a::/b:"), ["/a", "/b"]);
        assert!(split_lowerdirs("").is_empty());
    }

    #[test]
    fn bind_options_are_not_data() {
        let m = Mount::bind("/x", true);
        let (flags, data) = classic_flags(&m);
        assert_eq!(flags, MountFlags::RDONLY);
        assert!(data.is_empty(), "{data:?}");
    }
}
