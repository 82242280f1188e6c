//! Reading extended attributes for a diff, and which of them a layer carries.

use std::path::Path;

use rustix::io::Errno;

use crate::Error;

/// Extended attributes as `(name, value)`, sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Which extended attributes a diff writes (as PAX `SCHILY.xattr.*` records) and compares.
/// overlayfs' own attributes (`trusted.overlay.*`, `user.overlay.*`) are never written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XattrPolicy {
    /// Every attribute except overlayfs' and `security.selinux` (a label of the machine
    /// that made the layer, not of the image).
    #[default]
    Portable,
    /// Only `security.capability` (file capabilities), as BuildKit and containerd write.
    CapabilitiesOnly,
    /// None.
    None,
}

impl XattrPolicy {
    /// Whether attribute `name` goes into a layer.
    pub fn keeps(self, name: &[u8]) -> bool {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            return false;
        }
        match self {
            XattrPolicy::Portable => name != b"security.selinux",
            XattrPolicy::CapabilitiesOnly => name == b"security.capability",
            XattrPolicy::None => false,
        }
    }
}

fn err(path: &Path, op: &'static str, e: Errno) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

/// Calls `f` with a small buffer, then, if that is too small, with the largest size the
/// kernel allows for a list or a value (64 KiB).
fn sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    let mut small = [0u8; 1024];
    match f(&mut small) {
        Ok(n) => return Ok(small[..n].to_vec()),
        Err(Errno::RANGE) => {}
        Err(e) => return Err(e),
    }
    let mut big = vec![0u8; 64 * 1024];
    let n = f(&mut big)?;
    big.truncate(n);
    Ok(big)
}

/// The names of all attributes of `path` (not following a symlink), and the names and
/// values of those `policy` keeps.
pub(crate) fn read(path: &Path, policy: XattrPolicy) -> Result<(Vec<Vec<u8>>, Xattrs), Error> {
    let list = match sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(list) => list,
        Err(Errno::NOTSUP) => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(err(path, "listxattr", e)),
    };
    let names: Vec<Vec<u8>> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut kept = Vec::new();
    for n in &names {
        if !policy.keeps(n) {
            continue;
        }
        match get(path, n) {
            Ok(Some(v)) => kept.push((n.clone(), v)),
            Ok(None) => {} // removed meanwhile
            Err(e) => return Err(err(path, "getxattr", e)),
        }
    }
    kept.sort();
    Ok((names, kept))
}

fn get(path: &Path, name: &[u8]) -> rustix::io::Result<Option<Vec<u8>>> {
    let name = crate::apply::os(name);
    match sized(|buf| rustix::fs::lgetxattr(path, name, buf)) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks the overlayfs attributes of an upper-directory entry (given the names of all
/// its attributes) and says whether it is an opaque directory. Upper directories written
/// with `redirect_dir` or `metacopy` are refused: their changes are not all in the upper
/// directory, so a layer made from it alone would be wrong.
pub(crate) fn check_overlay(path: &Path, names: &[Vec<u8>], is_dir: bool) -> Result<bool, Error> {
    let mut opaque = false;
    for n in names {
        let Some(key) = n
            .strip_prefix(b"trusted.overlay.")
            .or_else(|| n.strip_prefix(b"user.overlay."))
        else {
            continue;
        };
        match key {
            b"redirect" | b"metacopy" => {
                return Err(Error::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "overlay {} attribute found: upper directories made with redirect_dir or metacopy cannot be diffed alone",
                        String::from_utf8_lossy(key)
                    ),
                });
            }
            b"opaque" if is_dir => {
                opaque |= get(path, n)
                    .map_err(|e| err(path, "getxattr", e))?
                    .as_deref()
                    == Some(b"y");
            }
            _ => {}
        }
    }
    Ok(opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_keep_what_they_say() {
        let all = [
            &b"security.capability"[..],
            b"security.selinux",
            b"user.mime",
            b"trusted.overlay.opaque",
            b"user.overlay.origin",
            b"trusted.md5",
        ];
        let kept = |p: XattrPolicy| all.iter().filter(|n| p.keeps(n)).count();
        assert_eq!(kept(XattrPolicy::Portable), 3);
        assert_eq!(kept(XattrPolicy::CapabilitiesOnly), 1);
        assert_eq!(kept(XattrPolicy::None), 0);
    }

    #[test]
    fn reads_user_xattrs_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"").unwrap();
        let big = vec![7u8; 3000];
        let set =
            |n: &str, v: &[u8]| rustix::fs::lsetxattr(&f, n, v, rustix::fs::XattrFlags::empty());
        if set("user.z", b"1").is_err() {
            eprintln!("SKIP: user xattrs not supported here");
            assert!(
                std::env::var_os("CI").is_none(),
                "user xattrs are needed in CI"
            );
            return;
        }
        set("user.a", &big).unwrap();
        let (names, kept) = read(&f, XattrPolicy::Portable).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(
            kept,
            vec![
                (b"user.a".to_vec(), big),
                (b"user.z".to_vec(), b"1".to_vec())
            ]
        );
        assert!(
            read(&f, XattrPolicy::CapabilitiesOnly)
                .unwrap()
                .1
                .is_empty()
        );
    }
}
