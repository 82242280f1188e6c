//! Merging snapshots without copying file data: the layers of a snapshot chain are
//! stacked into another snapshot's overlay upper directory with hard links, as upstream's
//! merge snapshotter does. Overlayfs never writes to a layer in place (changes are copied
//! up), so a file shared by hard links between two layers stays as each saw it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode};

use crate::{Error, Result, Snapshotter};

const OPAQUE: &str = "trusted.overlay.opaque";

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The layer directories of committed snapshot `key` and its parents, bottom first.
pub fn layer_chain(s: &dyn Snapshotter, key: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut next = Some(key.to_string());
    while let Some(k) = next {
        out.push(s.layer_dir(&k)?);
        next = s.stat(&k)?.parent;
    }
    out.reverse();
    Ok(out)
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(p, OPAQUE, &mut buf), Ok(1) if buf[0] == b'y')
}

fn remove_any(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p).map_err(io_err("remove", p)),
        Ok(_) => std::fs::remove_file(p).map_err(io_err("remove", p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", p)(e)),
    }
}

/// Stacks overlay layer directory `src` on top of overlay upper directory `dst`: files
/// are hard-linked, directories created (or emptied when `src` marks them opaque),
/// whiteouts remove what is below and are kept as whiteouts, so `dst` over its own lower
/// layers shows what `src` would show over them.
pub fn stack_layer(src: &Path, dst: &Path) -> Result<()> {
    let mut dirs: Vec<(PathBuf, PathBuf, std::fs::Metadata)> = Vec::new();
    let mut todo = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((sdir, ddir)) = todo.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&sdir)
            .map_err(io_err("read directory", &sdir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io_err("read directory", &sdir))?;
        names.sort();
        for name in names {
            let (s, d) = (sdir.join(&name), ddir.join(&name));
            let md = std::fs::symlink_metadata(&s).map_err(io_err("stat", &s))?;
            let ft = md.file_type();
            if ft.is_dir() {
                let existing = std::fs::symlink_metadata(&d).ok();
                if existing.as_ref().is_some_and(|e| !e.is_dir()) {
                    remove_any(&d)?;
                }
                if is_opaque(&s) {
                    remove_any(&d)?;
                }
                if std::fs::symlink_metadata(&d).is_err() {
                    crate::store::mkdir(&d, 0o700)?;
                }
                todo.push((s.clone(), d.clone()));
                dirs.push((s, d, md));
                continue;
            }
            remove_any(&d)?;
            if is_whiteout(&md) || !ft.is_file() {
                if ft.is_symlink() {
                    let target = std::fs::read_link(&s).map_err(io_err("read link", &s))?;
                    std::os::unix::fs::symlink(&target, &d).map_err(io_err("symlink", &d))?;
                } else {
                    rustix::fs::mknodat(
                        CWD,
                        &d,
                        FileType::from_raw_mode(md.mode()),
                        Mode::from_raw_mode(md.mode() & 0o7777),
                        md.rdev(),
                    )
                    .map_err(|e| Error::Io {
                        op: "mknod",
                        path: d.clone(),
                        source: e.into(),
                    })?;
                }
                crate::tree::copy_metadata(&s, &d, &md)?;
            } else {
                std::fs::hard_link(&s, &d).map_err(io_err("hard link", &d))?;
            }
        }
    }
    // Directory metadata (mode, owner, xattrs such as the opaque mark, times) last.
    for (s, d, md) in dirs.iter().rev() {
        crate::tree::copy_metadata(s, d, md)?;
    }
    Ok(())
}
