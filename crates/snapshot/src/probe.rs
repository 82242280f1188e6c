//! Choosing a backend: by name, or by probing whether overlay mounts work under the root.

use std::path::Path;
use std::sync::Arc;

use metadata::MetadataStore;

use crate::mount::mount_all;
use crate::store::{io_err, recorded_backend};
use crate::{Error, Mount, NativeSnapshotter, OverlaySnapshotter, Result, Snapshotter};

/// Checks that an overlay with two lower dirs can be mounted under `root`, written
/// through, and unmounted: mounts a tiny overlay in a temporary directory under `root`,
/// writes a file through it, checks that the file lands in the upper dir and that both
/// lower files show, and removes everything again. Needs the privileges to mount.
pub fn overlay_supported(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).map_err(io_err("create directory", root))?;
    let tmp = tempfile::Builder::new()
        .prefix(".overlay-probe-")
        .tempdir_in(root)
        .map_err(io_err("create probe directory in", root))?;
    let dir = tmp.path();
    let p = |name: &str| dir.join(name);
    for d in ["lower1", "lower2", "upper", "work", "merged"] {
        std::fs::create_dir(p(d)).map_err(io_err("create directory", &p(d)))?;
    }
    let write =
        |path: &Path, data: &[u8]| std::fs::write(path, data).map_err(io_err("write", path));
    write(&p("lower1/a"), b"a")?;
    write(&p("lower2/b"), b"b")?;
    let s = |name: &str| p(name).to_string_lossy().into_owned();
    let m = Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}:{}", s("lower1"), s("lower2")),
            format!("upperdir={}", s("upper")),
            format!("workdir={}", s("work")),
        ],
    };
    let merged = p("merged");
    let guard = mount_all(std::slice::from_ref(&m), &merged)?;
    let seen = (|| -> Result<bool> {
        write(&merged.join("c"), b"c")?;
        let read = |n: &str| std::fs::read(merged.join(n)).map_err(io_err("read", &merged.join(n)));
        Ok(read("a")? == b"a" && read("b")? == b"b")
    })();
    guard.release()?;
    let upper_ok = std::fs::read(p("upper/c")).is_ok_and(|d| d == b"c") && !p("upper/a").exists();
    if !(seen? && upper_ok) {
        return Err(Error::Mount {
            fstype: "overlay".into(),
            target: merged,
            reason: "probe overlay mounted but did not behave like overlayfs".into(),
        });
    }
    let dir = dir.to_path_buf();
    tmp.close().map_err(io_err("remove probe directory", &dir))
}

/// Picks the snapshotter for `root`: the one that used it before (named in its marker
/// file), else overlayfs if [`overlay_supported`], else native. Logs the choice and why.
pub fn auto(root: &Path, md: Arc<dyn MetadataStore>) -> Result<Arc<dyn Snapshotter>> {
    if let Some(owner) = recorded_backend(root) {
        tracing::info!(root = %root.display(), snapshotter = %owner, "root already holds snapshots of this snapshotter");
        return by_name(&owner, root, md);
    }
    match overlay_supported(root) {
        Ok(()) => {
            tracing::info!(root = %root.display(), snapshotter = OverlaySnapshotter::NAME, "overlay mounts work here");
            Ok(Arc::new(OverlaySnapshotter::new(root, md)?))
        }
        Err(e) => {
            tracing::info!(root = %root.display(), snapshotter = NativeSnapshotter::NAME, reason = %e, "overlay mounts do not work here");
            Ok(Arc::new(NativeSnapshotter::new(root, md)?))
        }
    }
}

/// The snapshotter called `name` (`overlayfs`, `native` or `auto`; `overlay` is accepted
/// for `overlayfs`) under `root`.
pub fn by_name(
    name: &str,
    root: &Path,
    md: Arc<dyn MetadataStore>,
) -> Result<Arc<dyn Snapshotter>> {
    match name {
        "overlayfs" | "overlay" => Ok(Arc::new(OverlaySnapshotter::new(root, md)?)),
        "native" => Ok(Arc::new(NativeSnapshotter::new(root, md)?)),
        "auto" => auto(root, md),
        other => Err(Error::UnknownSnapshotter(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    #[test]
    fn names() {
        let tmp = tempfile::tempdir().unwrap();
        let md: Arc<dyn MetadataStore> = Arc::new(MemStore::default());
        let e = by_name("zfs", tmp.path(), md.clone()).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownSnapshotter(n) if n == "zfs"),
            "{e}"
        );
        let n = by_name("native", &tmp.path().join("n"), md.clone()).unwrap();
        assert_eq!(n.name(), "native");
        // a used root keeps its snapshotter, whatever the probe would say
        let again = auto(&tmp.path().join("n"), md).unwrap();
        assert_eq!(again.name(), "native");
    }
}
