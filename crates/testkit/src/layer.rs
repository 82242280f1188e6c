//! A reproducible tar + gzip layer builder.
//!
//! Entries are collected in memory and written sorted by path, with every header normalized
//! (ustar format, mtime 0 unless set, uid/gid 0 unless set, no user/group names), so the same set
//! of entries always produces byte-identical tar and gzip output and therefore the same digests.
//! Parent directories that were not added explicitly are created with mode 0755.

use std::collections::BTreeMap;
use std::io::Write as _;

use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::{Error, Result};

/// Owner, mode and mtime of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits, including setuid/setgid/sticky (e.g. `0o1777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

impl Meta {
    /// Root-owned with the given mode and mtime 0.
    pub fn root(mode: u32) -> Self {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    /// Same as `self` but owned by `uid:gid`.
    pub fn owned_by(self, uid: u64, gid: u64) -> Self {
        Meta { uid, gid, ..self }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

/// Collects filesystem entries and writes them as a deterministic layer.
#[derive(Debug, Default, Clone)]
pub struct LayerBuilder {
    entries: BTreeMap<String, (Kind, Meta)>,
}

/// The output of [`LayerBuilder::finish`]: both encodings of one layer.
#[derive(Debug, Clone)]
pub struct LayerBytes {
    /// The uncompressed tar stream; its sha256 is the layer's diff id.
    pub tar: Vec<u8>,
    /// The gzip-compressed tar stream; its sha256 is the layer blob digest.
    pub gzip: Vec<u8>,
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory. Re-adding a path replaces the earlier entry.
    pub fn dir(&mut self, path: &str, meta: Meta) -> Result<&mut Self> {
        self.insert(path, Kind::Dir, meta)
    }

    /// Adds a regular file with the given contents.
    pub fn file(
        &mut self,
        path: &str,
        contents: impl Into<Vec<u8>>,
        meta: Meta,
    ) -> Result<&mut Self> {
        self.insert(path, Kind::File(contents.into()), meta)
    }

    /// Adds a symbolic link pointing at `target` (stored verbatim, absolute or relative).
    pub fn symlink(&mut self, path: &str, target: &str, meta: Meta) -> Result<&mut Self> {
        if target.is_empty() {
            return Err(invalid(path, "symlink target is empty"));
        }
        self.insert(path, Kind::Symlink(target.to_owned()), meta)
    }

    /// Adds a hard link to `target`, another path in this layer that must be a regular file.
    pub fn hardlink(&mut self, path: &str, target: &str, meta: Meta) -> Result<&mut Self> {
        let target = normalize(target)?;
        match self.entries.get(&target) {
            Some((Kind::File(_), _)) => {}
            _ => {
                return Err(invalid(
                    path,
                    "hard link target is not a file in this layer",
                ));
            }
        }
        self.insert(path, Kind::Hardlink(target), meta)
    }

    /// Number of entries, including implied parent directories.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, kind: Kind, meta: Meta) -> Result<&mut Self> {
        let path = normalize(path)?;
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            match self.entries.get(dir) {
                Some((Kind::Dir, _)) => {}
                Some(_) => return Err(invalid(&path, "a parent path is not a directory")),
                None => {
                    self.entries
                        .insert(dir.to_owned(), (Kind::Dir, Meta::root(0o755)));
                }
            }
            parent = dir;
        }
        self.entries.insert(path, (kind, meta));
        Ok(self)
    }

    /// Writes the tar stream (sorted entries, normalized headers) and its gzip encoding.
    pub fn finish(&self) -> Result<LayerBytes> {
        let mut builder = tar::Builder::new(Vec::new());
        // Sorted order puts every directory before its children ("a" < "a/b"). Hard links go in
        // a second sorted pass so their targets are always already extracted.
        let (links, others): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .partition(|(_, (kind, _))| matches!(kind, Kind::Hardlink(_)));
        for (path, (kind, meta)) in others.into_iter().chain(links) {
            let mut header = Header::new_ustar();
            header.set_mode(meta.mode);
            header.set_uid(meta.uid);
            header.set_gid(meta.gid);
            header.set_mtime(meta.mtime);
            header.set_size(0);
            let (name, data): (String, &[u8]) = match kind {
                Kind::Dir => {
                    header.set_entry_type(EntryType::Directory);
                    (format!("{path}/"), &[])
                }
                Kind::File(contents) => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(contents.len() as u64);
                    (path.clone(), contents.as_slice())
                }
                Kind::Symlink(target) | Kind::Hardlink(target) => {
                    header.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                        EntryType::Symlink
                    } else {
                        EntryType::Link
                    });
                    header
                        .set_link_name(target)
                        .map_err(Error::io(format!("layer entry {path}: link target")))?;
                    (path.clone(), &[])
                }
            };
            header
                .set_path(&name)
                .map_err(Error::io(format!("layer entry {name}: path")))?;
            header.set_cksum();
            builder
                .append(&header, data)
                .map_err(Error::io(format!("layer entry {name}: write")))?;
        }
        let tar = builder
            .into_inner()
            .map_err(Error::io("layer: finish tar stream"))?;
        // mtime 0 and OS "unknown" keep the gzip header free of host or time information.
        let mut encoder = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::default());
        encoder
            .write_all(&tar)
            .map_err(Error::io("layer: gzip tar stream"))?;
        let gzip = encoder
            .finish()
            .map_err(Error::io("layer: finish gzip stream"))?;
        Ok(LayerBytes { tar, gzip })
    }
}

/// Turns "/usr/bin/env" or "./usr/bin/env/" into "usr/bin/env"; rejects empty, `.` and `..`
/// components so no entry can escape the layer root.
fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid(path, "contains a '..' component")),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(invalid(path, "names the layer root"));
    }
    Ok(parts.join("/"))
}

fn invalid(path: &str, reason: &str) -> Error {
    Error::Invalid {
        what: "layer path",
        value: path.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, EntryType, u32, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_with_implied_parents() {
        let mut b = LayerBuilder::new();
        b.file("/usr/bin/x", "x", Meta::root(0o755)).unwrap();
        b.symlink("bin/sh", "/bin/busybox", Meta::root(0o777))
            .unwrap();
        b.dir("tmp", Meta::root(0o1777)).unwrap();
        let out = b.finish().unwrap();
        let names: Vec<_> = entries(&out.tar).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            ["bin/", "bin/sh", "tmp/", "usr/", "usr/bin/", "usr/bin/x"]
        );
        let tmp = entries(&out.tar)
            .into_iter()
            .find(|e| e.0 == "tmp/")
            .unwrap();
        assert_eq!((tmp.1, tmp.2, tmp.3), (EntryType::Directory, 0o1777, 0));
    }

    #[test]
    fn output_is_reproducible_and_gzip_roundtrips() {
        let build = || {
            let mut b = LayerBuilder::new();
            b.file(
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\n",
                Meta::root(0o644),
            )
            .unwrap();
            b.file("bin/busybox", vec![7u8; 4096], Meta::root(0o755))
                .unwrap();
            b.hardlink("bin/ls", "bin/busybox", Meta::root(0o755))
                .unwrap();
            b.finish().unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.tar, b.tar);
        assert_eq!(a.gzip, b.gzip);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&a.gzip[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, a.tar);
    }

    #[test]
    fn hard_links_come_after_their_targets() {
        let mut b = LayerBuilder::new();
        b.file("bin/busybox", "bb", Meta::root(0o755)).unwrap();
        b.hardlink("bin/arch", "/bin/busybox", Meta::root(0o755))
            .unwrap();
        let out = b.finish().unwrap();
        let got: Vec<_> = entries(&out.tar).into_iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            got,
            [
                ("bin/".to_owned(), EntryType::Directory),
                ("bin/busybox".to_owned(), EntryType::Regular),
                ("bin/arch".to_owned(), EntryType::Link),
            ]
        );
    }

    #[test]
    fn bad_paths_are_errors_not_panics() {
        let mut b = LayerBuilder::new();
        assert!(b.file("../etc/passwd", "", Meta::root(0o644)).is_err());
        assert!(b.dir("/", Meta::root(0o755)).is_err());
        assert!(
            b.hardlink("bin/ls", "bin/missing", Meta::root(0o755))
                .is_err()
        );
        b.file("etc", "not a dir", Meta::root(0o644)).unwrap();
        assert!(b.file("etc/passwd", "", Meta::root(0o644)).is_err());
        assert!(b.symlink("bin/sh", "", Meta::root(0o777)).is_err());
    }
}
