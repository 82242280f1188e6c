//! Making a layer: the changes of an overlayfs upper directory, or between two full trees,
//! written as a deterministic tar.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::apply::os;
use crate::error::lossy;
use crate::header::{Entry, Kind};
use crate::pipe;
use crate::scan::{self, Node, Scan, Type, What};
use crate::writer::{DiffStats, Output, TarWriter};
use crate::{Compression, Error, XattrPolicy};

/// Options for [`diff_overlay`] and [`diff_dirs`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Compression of the blob written (default: none).
    pub compression: Compression,
    /// Compression level; the codec's default when `None`.
    pub compression_level: Option<i32>,
    /// Clamp every mtime to at most this many seconds since the epoch
    /// (`SOURCE_DATE_EPOCH`), for reproducible layers.
    pub source_date_epoch: Option<i64>,
    /// Which extended attributes to write.
    pub xattrs: XattrPolicy,
}

/// Writes the layer held by the overlayfs upper directory `upper` to `writer`.
///
/// Everything in `upper` is written as it is, except: a character device 0/0 becomes a
/// whiteout `.wh.<name>`, a directory with `trusted.overlay.opaque=y` (or
/// `user.overlay.opaque=y`) is written followed by `.wh..wh..opq`, and overlayfs' own
/// xattrs are dropped. Upper directories using `redirect_dir` or `metacopy` are refused.
/// The upper directory must not change meanwhile (unmount the overlay or hold it
/// read-only). Directories copied up without change are written too: they are the
/// parents of what changed, and a layer needs them to carry their metadata. To leave out
/// entries copied up without any change, use [`diff_overlay_with_base`].
pub fn diff_overlay<W: Write + Send>(
    upper: &Path,
    writer: W,
    opts: &DiffOptions,
) -> Result<DiffStats, Error> {
    let nodes = scan::scan(upper, Scan::Overlay { base: None }, opts.xattrs)?;
    write(upper, nodes, writer, opts)
}

/// Like [`diff_overlay`], comparing each entry of `upper` with the same path in `base`,
/// the merged view of the layers below (a read-only mount of the parent snapshot):
/// entries copied up without change (same type, mode, owner, xattrs, and for files size,
/// mtime and content; directory mtimes are not compared) are left out, unless something
/// below them is written. A directory copied up only because a file was created and
/// removed in it (a mount stub, say) then adds nothing to the layer, as upstream's
/// overlay differ does.
pub fn diff_overlay_with_base<W: Write + Send>(
    upper: &Path,
    base: &Path,
    writer: W,
    opts: &DiffOptions,
) -> Result<DiffStats, Error> {
    let mut nodes = scan::scan(upper, Scan::Overlay { base: Some(base) }, opts.xattrs)?;
    close_hardlinks(&mut nodes);
    write(upper, nodes, writer, opts)
}

/// Writes the changes from the tree `lower` to the tree `upper` (two full trees, as a
/// native snapshot and its parent) to `writer`: entries added or changed in `upper`, their
/// parent directories, and a `.wh.<name>` for each path of `lower` missing from `upper`
/// (one for a whole deleted directory). What counts as changed is described on the
/// comparison: type, mode, owner, device number, xattrs, symlink target, and for files
/// size and mtime, with a content comparison when the mtimes are whole seconds. All links
/// of a hard-linked file are written when one of them is, so the link survives.
pub fn diff_dirs<W: Write + Send>(
    lower: &Path,
    upper: &Path,
    writer: W,
    opts: &DiffOptions,
) -> Result<DiffStats, Error> {
    let mut nodes = scan::scan(upper, Scan::Dirs { lower }, opts.xattrs)?;
    close_hardlinks(&mut nodes);
    write(upper, nodes, writer, opts)
}

/// Marks every link of a hard-linked file for writing when one of them is.
fn close_hardlinks(nodes: &mut [Node]) {
    let mut groups: HashMap<(u64, u64), (bool, Vec<usize>)> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let What::Entry(st, _) = &n.what {
            if st.ty != Type::Dir && st.nlink > 1 {
                let g = groups.entry((st.dev, st.ino)).or_default();
                g.0 |= n.emit;
                g.1.push(i);
            }
        }
    }
    for (any, members) in groups.into_values() {
        if any {
            for i in members {
                nodes[i].emit = true;
            }
        }
    }
}

/// Marks the parents of every node written, so each entry's directory comes first with
/// its own metadata. Parents precede children, so one pass in order suffices.
fn include_parents(nodes: &mut [Node]) {
    for i in 0..nodes.len() {
        if !nodes[i].emit {
            continue;
        }
        let mut p = nodes[i].parent;
        while let Some(pi) = p {
            if nodes[pi].emit {
                break;
            }
            nodes[pi].emit = true;
            p = nodes[pi].parent;
        }
    }
}

fn write<W: Write + Send>(
    upper: &Path,
    mut nodes: Vec<Node>,
    writer: W,
    opts: &DiffOptions,
) -> Result<DiffStats, Error> {
    include_parents(&mut nodes);
    let output = Output::new(writer, opts.compression, opts.compression_level)?;
    let finishing = |source| Error::Write {
        entry: String::new(),
        source,
    };
    // Hashing, compressing and writing run on a second thread (see `pipe`).
    let (written, consumed) = std::thread::scope(|scope| {
        let (pipe, consumer) = pipe::spawn_writer(scope, output);
        let mut tar = TarWriter::new(pipe);
        let written = write_entries(&mut tar, upper, &nodes, opts).and_then(|()| {
            let (pipe, entries) = tar.finish().map_err(finishing)?;
            pipe.close().map_err(finishing)?;
            Ok(entries)
        });
        (written, consumer.join())
    });
    let output = match consumed {
        Ok(Ok(output)) => output,
        // The writer thread's error is the cause of the BrokenPipe the walk saw.
        Ok(Err(source)) => {
            return Err(match written {
                Err(Error::Write { entry, .. }) => Error::Write { entry, source },
                _ => finishing(source),
            });
        }
        Err(_) => {
            return Err(finishing(io::Error::other(
                "the layer writer thread panicked",
            )));
        }
    };
    let entries = written?;
    let d = output.finish().map_err(finishing)?;
    let stats = DiffStats {
        compression: opts.compression,
        diff_id: d.diff_id,
        uncompressed_size: d.uncompressed_size,
        digest: d.digest,
        size: d.size,
        entries,
    };
    tracing::debug!(
        upper = %upper.display(), diff_id = %stats.diff_id, digest = %stats.digest,
        entries = stats.entries, "wrote layer"
    );
    Ok(stats)
}

/// Writes the nodes marked for writing, in order.
fn write_entries<O: Write>(
    out: &mut TarWriter<O>,
    upper: &Path,
    nodes: &[Node],
    opts: &DiffOptions,
) -> Result<(), Error> {
    // First path written for each hard-linked inode.
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let clamp = |t: i64| opts.source_date_epoch.map_or(t, |e| t.min(e));
    for node in nodes.iter().filter(|n| n.emit) {
        let write_err = |source| Error::Write {
            entry: lossy(&node.path),
            source,
        };
        let (st, xattrs) = match &node.what {
            What::Whiteout | What::Opaque => {
                // Whiteouts carry no metadata; mtime 0 as containerd writes them.
                let e = Entry {
                    name: &node.path,
                    kind: Kind::File { size: 0 },
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    xattrs: &[],
                };
                out.append(&e, None).map_err(write_err)?;
                continue;
            }
            What::Entry(st, x) => (st, x),
        };
        let path = upper.join(os(&node.path));
        let mut entry = Entry {
            name: &node.path,
            kind: Kind::Dir,
            mode: st.mode,
            uid: st.uid.into(),
            gid: st.gid.into(),
            mtime: clamp(st.mtime),
            xattrs,
        };
        if st.ty != Type::Dir && st.nlink > 1 {
            if let Some(first) = links.get(&(st.dev, st.ino)) {
                let link = Entry {
                    kind: Kind::Hardlink(first),
                    xattrs: &[],
                    ..entry
                };
                out.append(&link, None).map_err(write_err)?;
                continue;
            }
            links.insert((st.dev, st.ino), node.path.clone());
        }
        let target;
        let mut file = None;
        entry.kind = match st.ty {
            Type::Dir => Kind::Dir,
            Type::File => {
                file = Some(open_nofollow(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    op: "open",
                    source,
                })?);
                Kind::File { size: st.size }
            }
            Type::Symlink => {
                target = fs::read_link(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    op: "readlink",
                    source,
                })?;
                Kind::Symlink(target.as_os_str().as_bytes())
            }
            Type::Char => Kind::Char(rustix::fs::major(st.rdev), rustix::fs::minor(st.rdev)),
            Type::Block => Kind::Block(rustix::fs::major(st.rdev), rustix::fs::minor(st.rdev)),
            Type::Fifo => Kind::Fifo,
            Type::Socket => continue,
        };
        out.append(&entry, file.as_mut().map(|f| f as &mut dyn Read))
            .map_err(write_err)?;
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_writer_reports_its_own_error() {
        let tree = tempfile::tempdir().unwrap();
        for i in 0..40 {
            fs::write(tree.path().join(format!("f{i}")), vec![b'x'; 100_000]).unwrap();
        }
        for compression in [Compression::Uncompressed, Compression::Zstd] {
            let opts = DiffOptions {
                compression,
                ..DiffOptions::default()
            };
            let err = diff_overlay(tree.path(), Full, &opts).unwrap_err();
            assert!(matches!(&err, Error::Write { .. }), "{err}");
            assert!(err.to_string().contains("disk full"), "{err}");
        }
    }

    #[test]
    fn a_missing_tree_names_the_path() {
        let err = diff_overlay(
            Path::new("/nonexistent/upper"),
            Vec::new(),
            &DiffOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/upper"), "{err}");
    }
}
