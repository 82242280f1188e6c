//! Building a wire `Stat` from a file on disk, as fsutil's `mkstat` does.

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use proto::fsutil_types::Stat;

use super::Error;
use super::mode::{MODE_SOCKET, go_mode_from_posix};

const S_IFMT: u32 = 0o170000;
const S_IFBLK: u32 = 0o060000;
const S_IFCHR: u32 = 0o020000;

/// Remembers the first path seen for each inode with more than one link, so later
/// links are sent as hard links to it.
#[derive(Debug, Default)]
pub(crate) struct Hardlinks {
    first: HashMap<(u64, u64), String>,
}

/// The `Stat` of `abs` (whose metadata, not following symlinks, is `md`), recorded as
/// `rel`. Hard links found through `links` carry `linkname` = the first path. As
/// upstream, the size is the file's size even for later links, and the socket bit is
/// cleared (so a socket travels as an empty regular file).
pub(crate) fn stat_file(
    abs: &Path,
    rel: &str,
    md: &Metadata,
    links: &mut Hardlinks,
) -> Result<Stat, Error> {
    let mut stat = Stat {
        path: rel.to_string(),
        mode: go_mode_from_posix(md.mode()),
        uid: md.uid(),
        gid: md.gid(),
        mod_time: mod_time_ns(md),
        ..Stat::default()
    };
    if !md.is_dir() {
        let kind = md.mode() & S_IFMT;
        if kind == S_IFBLK || kind == S_IFCHR {
            let (major, minor) = split_dev(md.rdev());
            stat.devmajor = major as i64;
            stat.devminor = minor as i64;
        }
        if md.nlink() > 1 {
            use std::collections::hash_map::Entry;
            match links.first.entry((md.dev(), md.ino())) {
                Entry::Occupied(first) => stat.linkname = first.get().clone(),
                Entry::Vacant(slot) => {
                    slot.insert(rel.to_string());
                }
            }
        }
        stat.size = i64::try_from(md.size()).unwrap_or(i64::MAX);
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(abs).map_err(|e| Error::io("readlink", abs, e))?;
            stat.linkname = target
                .to_str()
                .ok_or_else(|| Error::invalid_path(rel, "symlink target is not UTF-8"))?
                .to_string();
        }
    }
    stat.xattrs = read_xattrs(abs)?;
    stat.mode &= !MODE_SOCKET;
    Ok(stat)
}

/// Modification time in Unix nanoseconds, as Go's `ModTime().UnixNano()`.
pub(crate) fn mod_time_ns(md: &Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

/// Major and minor numbers as fsutil encodes them (the classic Linux layout; the same
/// as glibc's for every device number below 2^32).
pub(crate) fn split_dev(dev: u64) -> (u64, u64) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// The inverse of [`split_dev`].
pub(crate) fn join_dev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)
}

/// Extended attributes of `path` (not following a final symlink), skipping Apple's
/// `com.apple.*` as upstream does. A file system without xattrs yields none.
fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    let names = match list_xattrs(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(out),
        Err(e) => return Err(Error::io("listxattr", path, e)),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(key) = std::str::from_utf8(name) else {
            continue;
        };
        if key.starts_with("com.apple.") {
            continue;
        }
        // A value that vanished or cannot be read is skipped, as upstream does.
        if let Ok(value) = get_xattr(path, name) {
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}

fn list_xattrs(path: &Path) -> io::Result<Vec<u8>> {
    for _ in 0..3 {
        let len = rustix::fs::llistxattr_query(path)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The list grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("extended attributes keep changing"))
}

fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let name = std::ffi::OsStr::from_bytes(name);
    for _ in 0..3 {
        let len = rustix::fs::lgetxattr_query(path, name)?;
        let mut buf = vec![0u8; len];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("extended attribute keeps changing"))
}

#[cfg(test)]
mod tests {
    use super::super::mode::{MODE_DIR, MODE_SYMLINK};
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn dev_numbers_round_trip() {
        for (major, minor) in [(1, 3), (8, 17), (4095, 0xfffff), (0, 0), (253, 1024)] {
            assert_eq!(split_dev(join_dev(major, minor)), (major, minor));
        }
        // /dev/null is 1:3, st_rdev 0x103.
        assert_eq!(split_dev(0x103), (1, 3));
    }

    #[test]
    fn stats_of_files_dirs_symlinks_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("f"), b"hello").unwrap();
        std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(root.join("f"), root.join("g")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        symlink("f", root.join("l")).unwrap();

        let mut links = Hardlinks::default();
        let stat = |rel: &str, links: &mut Hardlinks| {
            let abs = root.join(rel);
            let md = std::fs::symlink_metadata(&abs).unwrap();
            stat_file(&abs, rel, &md, links).unwrap()
        };
        let f = stat("f", &mut links);
        assert_eq!((f.mode, f.size, f.linkname.as_str()), (0o640, 5, ""));
        let g = stat("g", &mut links);
        assert_eq!((g.linkname.as_str(), g.size), ("f", 5));
        let d = stat("d", &mut links);
        assert_eq!(d.mode & MODE_DIR, MODE_DIR);
        assert_eq!(d.size, 0);
        let l = stat("l", &mut links);
        assert_eq!(l.mode & MODE_SYMLINK, MODE_SYMLINK);
        assert_eq!(l.linkname, "f");
        let md = std::fs::metadata(root.join("f")).unwrap();
        assert_eq!(f.mod_time, mod_time_ns(&md));
        assert!(f.mod_time > 1_000_000_000_000_000_000);
    }
}
