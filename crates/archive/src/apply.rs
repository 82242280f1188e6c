//! Applying a layer tar to a directory: the public entry point, whiteouts and opaque
//! directories. Creating each entry safely is in `unpack`.

use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci::Digest;
use rustix::fs::{FileType, Mode, OFlags};

use crate::error::lossy;
use crate::name::{self, Whiteout};
use crate::pipe::{self, PipeReader};
use crate::root::{self, Root};
use crate::unpack;
use crate::{Compression, Decoder, Error};

/// How whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) in a layer are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WhiteoutMode {
    /// The target is an empty overlayfs upper directory: a whiteout becomes a character
    /// device 0/0 named `<name>`, an opaque marker the `overlay.opaque=y` xattr on its
    /// directory, in the `trusted.` namespace, or `user.` when `userxattr` is set (for an
    /// overlay mounted with the `userxattr` option, as rootless overlay is).
    Overlay {
        /// Use `user.overlay.*` instead of `trusted.overlay.*`.
        userxattr: bool,
    },
    /// The target already holds the parent layers' files (a native, copied snapshot): a
    /// whiteout removes `<name>` recursively, and an opaque marker removes every child of
    /// its directory that this layer does not itself add.
    Delete,
}

/// Options for [`apply_layer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// Set each entry's owner from the tar (needs root, or a user namespace mapping the
    /// ids). When false, files belong to the caller.
    pub same_owner: bool,
}

impl ApplyOptions {
    /// Options applying whiteouts as `whiteouts`, keeping owners.
    pub fn new(whiteouts: WhiteoutMode) -> ApplyOptions {
        ApplyOptions {
            whiteouts,
            same_owner: true,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// The compression found on the stream.
    pub compression: Compression,
    /// The diffID: sha256 of the uncompressed tar stream, all of it (trailing padding too).
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
    /// Tar entries read (whiteouts and skipped entries included).
    pub entries: u64,
    /// Whiteouts and opaque markers among them.
    pub whiteouts: u64,
    /// Bytes of regular file content written.
    pub content_bytes: u64,
}

/// Applies the layer read from `reader` (a tar, gzip or zstd, detected by magic) to the
/// directory `target`, which must exist.
///
/// Nothing is written outside `target`: a name with a `..` component is refused, an
/// absolute name is taken relative to `target`, symlinks met while resolving a parent are
/// followed as if `target` were `/`, and the last component of a name is never followed.
/// Hard links must point at a path inside `target`. An entry replacing an existing
/// non-directory, or a directory with a non-directory, removes what was there first (a
/// directory over a directory merges, taking the entry's metadata), as Docker does.
///
/// Owner, mode, mtime and `SCHILY.xattr.*` attributes are restored (`overlay.*` xattrs
/// from the tar are dropped: a layer must not steer the overlay filesystem); directory
/// mtimes are set once everything is written. Device nodes need root. Synchronous: run it
/// on a blocking thread.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    let (compression, decoder) = Decoder::detect(BufReader::with_capacity(256 * 1024, reader))?;
    let root = Root::open(target).map_err(|source| Error::Target {
        path: target.to_path_buf(),
        op: "open",
        source,
    })?;
    let mut applier = Applier {
        root,
        opts,
        dirs: Vec::new(),
        added: HashSet::new(),
        buf: vec![0; 256 * 1024],
        entries: 0,
        whiteouts: 0,
        content_bytes: 0,
    };
    // Decompression and hashing run on a second thread (see `pipe`).
    let (result, produced) = std::thread::scope(|scope| {
        let (input, producer) = pipe::spawn(scope, decoder);
        let result = applier.read_all(input);
        (result, producer.join())
    });
    let last = result?;
    let (diff_id, tar_size) = produced.map_err(|_| Error::Stream {
        after: last,
        source: io::Error::other("the layer reader thread panicked"),
    })?;
    applier.finish()?;
    tracing::debug!(
        target = %target.display(), %diff_id, %compression, entries = applier.entries,
        "applied layer"
    );
    Ok(ApplyStats {
        compression,
        diff_id,
        tar_size,
        entries: applier.entries,
        whiteouts: applier.whiteouts,
        content_bytes: applier.content_bytes,
    })
}

/// State of one apply.
pub(crate) struct Applier<'o> {
    pub(crate) root: Root,
    pub(crate) opts: &'o ApplyOptions,
    /// Directories whose mtime is set at the end, with that mtime.
    pub(crate) dirs: Vec<(Vec<u8>, rustix::fs::Timestamps)>,
    /// Delete mode: `(parent dev, parent ino, name)` of everything this layer created, so
    /// an opaque marker keeps them.
    pub(crate) added: HashSet<(u64, u64, Vec<u8>)>,
    pub(crate) buf: Vec<u8>,
    entries: u64,
    whiteouts: u64,
    pub(crate) content_bytes: u64,
}

pub(crate) fn invalid(entry: &str, reason: impl Into<String>) -> Error {
    Error::InvalidEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn failed<'a>(entry: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Apply {
        entry: entry.to_string(),
        op,
        source,
    }
}

impl Applier<'_> {
    /// Applies every entry of the tar read from `input`, then reads the stream to its end
    /// (the diffID covers what follows the end-of-archive blocks, and reading it checks
    /// the gzip/zstd trailer). Returns the name of the last entry.
    fn read_all(&mut self, input: PipeReader) -> Result<String, Error> {
        // The tar reader asks for 512-byte headers; a buffer keeps the pipe's chunks big.
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut last = String::new();
        {
            let mut archive = tar::Archive::new(&mut input);
            let entries = archive.entries().map_err(|source| Error::Stream {
                after: String::new(),
                source,
            })?;
            for entry in entries {
                let mut entry = entry.map_err(|source| Error::Stream {
                    after: last.clone(),
                    source,
                })?;
                last = lossy(&entry.path_bytes());
                self.entry(&mut entry, &last)?;
            }
        }
        match io::copy(&mut input, &mut io::sink()) {
            Ok(_) => Ok(last),
            Err(source) => Err(Error::Stream {
                after: last,
                source,
            }),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<(), Error> {
        self.entries += 1;
        if entry.header().entry_type().is_pax_global_extensions() {
            tracing::debug!(entry = shown, "PAX global header ignored");
            return Ok(());
        }
        let path = name::normalize(&entry.path_bytes()).map_err(|e| invalid(shown, e.reason()))?;
        if path.is_empty() {
            tracing::debug!(entry = shown, "entry for the root directory ignored");
            return Ok(());
        }
        let (parent, base) = name::split_parent(&path);
        match name::whiteout(base) {
            Whiteout::None => unpack::create(self, entry, parent, base, shown),
            Whiteout::Opaque => {
                self.whiteouts += 1;
                self.opaque(parent, shown)
            }
            Whiteout::Delete(target) => {
                self.whiteouts += 1;
                let (uid, gid) = unpack::owner(entry.header(), shown)?;
                self.whiteout(parent, target, uid, gid, shown)
            }
            Whiteout::Meta => {
                tracing::debug!(entry = shown, "reserved whiteout metadata entry ignored");
                Ok(())
            }
            Whiteout::Invalid => Err(invalid(shown, "a whiteout that names no file")),
        }
    }

    /// `.wh.<name>` in directory `parent`.
    fn whiteout(
        &mut self,
        parent: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
        shown: &str,
    ) -> Result<(), Error> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let Some(dir) = self
                    .root
                    .parent(parent, false)
                    .map_err(failed(shown, "resolve parent"))?
                else {
                    return Ok(()); // nothing below to delete
                };
                self.root.invalidate();
                root::remove_all(dir.as_fd(), target)
                    .map_err(failed(shown, "remove whited-out path"))?;
                Ok(())
            }
            WhiteoutMode::Overlay { .. } => {
                let dir = unpack::parent_dir(self, parent, shown)?;
                let dev = rustix::fs::makedev(0, 0);
                unpack::make(self, &dir, target, false, shown, || {
                    rustix::fs::mknodat(
                        &*dir,
                        os(target),
                        FileType::CharacterDevice,
                        Mode::empty(),
                        dev,
                    )
                })?;
                if self.opts.same_owner {
                    rustix::fs::chownat(
                        &*dir,
                        os(target),
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| failed(shown, "chown whiteout")(e.into()))?;
                }
                Ok(())
            }
        }
    }

    /// `.wh..wh..opq` in directory `dir_path`.
    fn opaque(&mut self, dir_path: &[u8], shown: &str) -> Result<(), Error> {
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let dir = match self.root.open_dir(dir_path, OFlags::RDONLY) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(failed(shown, "open opaque directory")(e)),
                };
                self.root.invalidate();
                self.clear_opaque(dir)
                    .map_err(failed(shown, "remove under opaque directory"))
            }
            WhiteoutMode::Overlay { userxattr } => {
                unpack::parent_dir(self, dir_path, shown)?;
                let dir = self
                    .root
                    .open_dir(dir_path, OFlags::RDONLY)
                    .map_err(failed(shown, "open opaque directory"))?;
                let key = if userxattr {
                    "user.overlay.opaque"
                } else {
                    "trusted.overlay.opaque"
                };
                rustix::fs::fsetxattr(&dir, key, b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| failed(shown, "set overlay.opaque xattr")(e.into()))
            }
        }
    }

    /// Removes everything below an opaque directory that this layer did not add,
    /// descending into the directories it did add (their older contents are hidden too,
    /// whatever order the entries came in).
    fn clear_opaque(&self, dir: OwnedFd) -> io::Result<()> {
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            let st = rustix::fs::fstat(&dir)?;
            for n in root::list(dir.as_fd())? {
                if !self.added.contains(&(st.st_dev, st.st_ino, n.clone())) {
                    root::remove_all(dir.as_fd(), &n)?;
                    continue;
                }
                // Kept; a directory (never a symlink: not followed) is searched too.
                match rustix::fs::openat(&dir, os(&n), root::read_dir_flags(), Mode::empty()) {
                    Ok(fd) => stack.push(fd),
                    Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Sets the directories' mtimes, now that nothing more is written into them.
    fn finish(&mut self) -> Result<(), Error> {
        let dirs = std::mem::take(&mut self.dirs);
        for (path, times) in dirs {
            let (parent, base) = name::split_parent(&path);
            let full = self.root.path().join(os(&path));
            let target_err = |source| Error::Target {
                path: full.clone(),
                op: "set directory mtime",
                source,
            };
            let Some(dir) = self.root.parent(parent, false).map_err(target_err)? else {
                continue; // removed by a later whiteout
            };
            match rustix::fs::utimensat(
                &*dir,
                os(base),
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(target_err(e.into())),
            }
        }
        Ok(())
    }
}

/// A byte name as an `OsStr`, for rustix path arguments.
pub(crate) fn os(name: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_streams_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ApplyOptions::new(WhiteoutMode::Delete);
        // A header block with a bad checksum.
        let garbage = [0x41u8; 1024];
        let err = apply_layer(&garbage[..], dir.path(), &opts).unwrap_err();
        assert!(matches!(err, Error::Stream { .. }), "{err}");
        // A truncated file body.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_size(4096);
        h.set_cksum();
        b.append(&h, &[7u8; 4096][..]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.truncate(1500);
        let err = apply_layer(&data[..], dir.path(), &opts).unwrap_err();
        assert!(err.to_string().contains("\"f\""), "{err}");
    }

    #[test]
    fn empty_stream_has_the_empty_digest() {
        let dir = tempfile::tempdir().unwrap();
        let stats = apply_layer(
            &[][..],
            dir.path(),
            &ApplyOptions::new(WhiteoutMode::Delete),
        )
        .unwrap();
        assert_eq!(stats.diff_id, Digest::of(b""));
        assert_eq!(stats.entries, 0);
    }
}
