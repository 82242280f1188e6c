//! The tree the `local` and `tar` exporters send, as upstream's local exporter lays it
//! out: the result itself; for a multi-platform result, one directory per platform
//! (`linux_amd64`, `linux_arm_v7`: the platform with `/` replaced by `_`); or, with
//! `platform-split=false`, the platforms' files merged into one tree, which fails when
//! two platforms have a file at the same path.
//!
//! Nothing is copied: each platform's result is mounted read-only (a view), and the
//! split tree binds the views into a directory of their own, the merged one stacks them
//! in a read-only overlay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ops::{Mounted, OpsContext};
use snapshot::Mount;
use snapshot::mount::{MountGuard, mount_all};
use tonic::Status;

/// The attribute that chooses between the layouts, as upstream names it.
pub(crate) const PLATFORM_SPLIT: &str = "platform-split";

/// `platform-split` from the attributes of a local or tar exporter: `None` when not given
/// (split when the result is multi-platform).
pub(crate) fn platform_split(
    ty: &str,
    attrs: &std::collections::BTreeMap<String, String>,
) -> Result<Option<bool>, Status> {
    let Some(v) = attrs.get(PLATFORM_SPLIT) else {
        return Ok(None);
    };
    match v.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Some(true)),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Some(false)),
        _ => Err(Status::invalid_argument(format!(
            "exporter {ty}: non-bool value for {PLATFORM_SPLIT}: {v}"
        ))),
    }
}

/// The directory a platform's files go to in a split tree: `linux/arm/v7` →
/// `linux_arm_v7`.
pub(crate) fn platform_dir(platform: &llb::Platform) -> String {
    platform.to_string().replace('/', "_")
}

/// A tree ready to send: unmounted and removed when dropped.
pub(crate) struct Staged {
    // Dropped in this order: the binds and overlay first, then their mount points, then
    // the views under them.
    mounts: Vec<MountGuard>,
    dir: Option<tempfile::TempDir>,
    views: Vec<Mounted>,
}

impl Staged {
    /// The root of the tree.
    pub(crate) fn path(&self) -> &Path {
        match (&self.dir, self.views.first()) {
            (Some(d), _) => d.path(),
            (None, Some(v)) => v.path(),
            (None, None) => unreachable!("a staged tree has a directory or a view"),
        }
    }
}

fn internal(ty: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("exporter {ty}: {e}"))
}

/// A directory under the worker's tmp dir (which the next start empties of what a killed
/// daemon left mounted).
fn tmpdir(ctx: &OpsContext) -> std::io::Result<tempfile::TempDir> {
    let base = ctx.worker.tmp_dir();
    std::fs::create_dir_all(&base)?;
    tempfile::tempdir_in(&base)
}

/// Escapes a path for an overlay `lowerdir=` list.
fn lowerdir_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ':' | '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One platform's result: its platform (`None` for an LLB build) and the result.
pub(crate) type Part = (Option<llb::Platform>, ops::Ref);

/// Mounts and lays out the result `parts` (a multi-platform one when `multi_platform`) for
/// exporter `ty` (`local` or `tar`); `split` is its `platform-split`. Blocking.
pub(crate) fn stage(
    ctx: &OpsContext,
    ty: &str,
    parts: Vec<Part>,
    multi_platform: bool,
    split: Option<bool>,
) -> Result<Staged, Status> {
    // An LLB build names no platform: there is nothing to split by.
    let split = split.unwrap_or(multi_platform) && parts.iter().all(|p| p.0.is_some());
    let mut staged = Staged {
        mounts: Vec::new(),
        dir: None,
        views: Vec::with_capacity(parts.len()),
    };
    for (_, r) in &parts {
        let view = ops::mount_view(ctx, r).map_err(|e| internal(ty, e.message))?;
        staged.views.push(view);
    }
    let ids: Vec<String> = parts
        .iter()
        .map(|p| p.0.as_ref().map(ToString::to_string).unwrap_or_default())
        .collect();
    if split {
        let dir = tmpdir(ctx).map_err(|e| internal(ty, e))?;
        for ((platform, _), view) in parts.iter().zip(&staged.views) {
            let Some(platform) = platform else {
                continue;
            };
            let sub = dir.path().join(platform_dir(platform));
            std::fs::create_dir(&sub)
                .map_err(|e| internal(ty, format!("{}: {e}", sub.display())))?;
            let bind = Mount::bind(view.path().to_string_lossy(), true);
            let guard = mount_all(&[bind], &sub).map_err(|e| internal(ty, e))?;
            staged.mounts.push(guard);
        }
        staged.dir = Some(dir);
        tracing::debug!(exporter = ty, platforms = ?ids, "result split by platform");
        return Ok(staged);
    }
    if staged.views.len() == 1 {
        return Ok(staged);
    }
    let roots: Vec<&Path> = staged.views.iter().map(Mounted::path).collect();
    check_conflicts(&roots, &ids)?;
    // The later platform on top, as it would win a merge; files do not overlap (checked
    // above), so only the directories' own metadata depends on that.
    let lower: Vec<String> = roots.iter().rev().map(|r| lowerdir_escape(r)).collect();
    let overlay = Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options: vec![format!("lowerdir={}", lower.join(":")), "ro".into()],
    };
    let dir = tmpdir(ctx).map_err(|e| internal(ty, e))?;
    let guard = mount_all(&[overlay], dir.path()).map_err(|e| internal(ty, e))?;
    staged.mounts.push(guard);
    staged.dir = Some(dir);
    tracing::debug!(exporter = ty, platforms = ?ids, "platforms merged");
    Ok(staged)
}

/// Fails when two of the trees `roots` (of platforms `ids`) have something other than a
/// directory at the same path, as upstream refuses to merge them.
fn check_conflicts(roots: &[&Path], ids: &[String]) -> Result<(), Status> {
    // path → (which tree first had it, whether it is a directory there)
    let mut seen: HashMap<String, (usize, bool)> = HashMap::new();
    for (i, root) in roots.iter().enumerate() {
        let mut todo: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = todo.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| Status::internal(format!("reading {}: {e}", dir.display())))?;
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry
                    .map_err(|e| Status::internal(format!("reading {}: {e}", dir.display())))?;
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                names.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
            }
            names.sort();
            for (name, is_dir) in names {
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                match seen.get(&path) {
                    Some(&(j, was_dir)) if j != i && !(was_dir && is_dir) => {
                        return Err(Status::failed_precondition(format!(
                            "cannot overwrite {path} from {} with {} when split option is disabled",
                            ids[j], ids[i]
                        )));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(path.clone(), (i, is_dir));
                    }
                }
                if is_dir {
                    todo.push((dir.join(&name), path));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_dirs_and_split_attribute() {
        assert_eq!(
            platform_dir(&llb::Platform::new("linux", "amd64", "")),
            "linux_amd64"
        );
        assert_eq!(
            platform_dir(&llb::Platform::new("linux", "arm", "v7")),
            "linux_arm_v7"
        );
        let attrs = |v: &str| {
            std::collections::BTreeMap::from([(PLATFORM_SPLIT.to_string(), v.to_string())])
        };
        assert_eq!(platform_split("local", &Default::default()).unwrap(), None);
        assert_eq!(platform_split("local", &attrs("true")).unwrap(), Some(true));
        assert_eq!(platform_split("tar", &attrs("0")).unwrap(), Some(false));
        let e = platform_split("tar", &attrs("yes")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("platform-split"), "{}", e.message());
    }

    #[test]
    fn conflicting_files_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("shared/dir")).unwrap();
        }
        std::fs::write(a.path().join("shared/dir/a"), "a").unwrap();
        std::fs::write(b.path().join("shared/dir/b"), "b").unwrap();
        let ids = ["linux/amd64".to_string(), "linux/arm64".to_string()];
        check_conflicts(&[a.path(), b.path()], &ids).unwrap();

        std::fs::write(b.path().join("shared/dir/a"), "also a").unwrap();
        let e = check_conflicts(&[a.path(), b.path()], &ids).unwrap_err();
        assert_eq!(
            e.message(),
            "cannot overwrite shared/dir/a from linux/amd64 with linux/arm64 when split option is disabled"
        );
        // a file where the other has a directory
        std::fs::remove_file(b.path().join("shared/dir/a")).unwrap();
        std::fs::write(b.path().join("x"), "").unwrap();
        std::fs::create_dir(a.path().join("x")).unwrap();
        assert!(check_conflicts(&[a.path(), b.path()], &ids).is_err());
    }
}
