//! Walking the tree to diff into a flat list of nodes in output order: depth first,
//! siblings sorted bytewise by the name they are written under, so a directory comes
//! right before its contents. Which nodes are written is decided here (per entry) and in
//! `diff` (hard link groups, parents).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::apply::os;
use crate::name::{self, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::xattr::{self, XattrPolicy, Xattrs};

/// File types a layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// What the differ needs of an `lstat`.
#[derive(Clone, Debug)]
pub(crate) struct Stat {
    pub ty: Type,
    /// Permission, set-id and sticky bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub rdev: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        let ty = match m.mode() & 0o170000 {
            0o040000 => Type::Dir,
            0o120000 => Type::Symlink,
            0o020000 => Type::Char,
            0o060000 => Type::Block,
            0o010000 => Type::Fifo,
            0o140000 => Type::Socket,
            _ => Type::File,
        };
        Stat {
            ty,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            rdev: m.rdev(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        }
    }
}

/// One entry of the output.
#[derive(Debug)]
pub(crate) enum What {
    /// A file, directory, ... of the upper tree, with its kept xattrs.
    Entry(Stat, Xattrs),
    /// `.wh.<name>`.
    Whiteout,
    /// `.wh..wh..opq`.
    Opaque,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// Path in the tar (for a whiteout, the `.wh.` name).
    pub path: Vec<u8>,
    /// Index of the directory node holding it (`None` at the top).
    pub parent: Option<usize>,
    pub what: What,
    pub emit: bool,
}

/// Which diff is being made.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scan<'a> {
    /// The tree is an overlayfs upper directory; with `base` (the merged view of the
    /// layers below it), entries copied up without change are left out.
    Overlay { base: Option<&'a Path> },
    /// The tree is compared against `lower`.
    Dirs { lower: &'a Path },
}

struct Child {
    /// Name it is written under.
    out_name: Vec<u8>,
    /// Name in the upper directory.
    name: Vec<u8>,
    what: What,
    emit: bool,
    /// For a directory to walk: the matching lower directory, if any.
    descend: Option<Option<PathBuf>>,
    opaque: bool,
}

struct Frame {
    rel: Vec<u8>,
    node: Option<usize>,
    children: std::vec::IntoIter<Child>,
}

fn read_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Read {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Walks `upper` into nodes, deciding per entry what is written.
pub(crate) fn scan(upper: &Path, how: Scan<'_>, policy: XattrPolicy) -> Result<Vec<Node>, Error> {
    let mut nodes = Vec::new();
    let top_lower = match how {
        Scan::Overlay { base } => base.map(Path::to_path_buf),
        Scan::Dirs { lower } => Some(lower.to_path_buf()),
    };
    if matches!(how, Scan::Overlay { .. })
        && xattr::check_overlay(upper, &xattr::read(upper, policy)?.0, true)?
    {
        nodes.push(Node {
            path: OPAQUE_MARKER.as_bytes().to_vec(),
            parent: None,
            what: What::Opaque,
            emit: true,
        });
    }
    let mut stack = vec![Frame {
        rel: Vec::new(),
        node: None,
        children: children(upper, &[], top_lower.as_deref(), how, policy)?.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.children.next() else {
            stack.pop();
            continue;
        };
        let idx = nodes.len();
        let parent = frame.node;
        let path = name::join(&frame.rel, &child.out_name);
        let rel = name::join(&frame.rel, &child.name);
        nodes.push(Node {
            path,
            parent,
            what: child.what,
            emit: child.emit,
        });
        if let Some(lower) = child.descend {
            if child.opaque {
                nodes.push(Node {
                    path: name::join(&rel, OPAQUE_MARKER.as_bytes()),
                    parent: Some(idx),
                    what: What::Opaque,
                    emit: true,
                });
            }
            let kids = children(upper, &rel, lower.as_deref(), how, policy)?;
            stack.push(Frame {
                rel,
                node: Some(idx),
                children: kids.into_iter(),
            });
        }
    }
    Ok(nodes)
}

fn list(dir: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(read_err(dir, "read directory"))? {
        let e = e.map_err(read_err(dir, "read directory"))?;
        names.push(std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec());
    }
    names.sort();
    Ok(names)
}

/// The children of upper directory `rel`, sorted by the name they are written under.
fn children(
    upper: &Path,
    rel: &[u8],
    lower: Option<&Path>,
    how: Scan<'_>,
    policy: XattrPolicy,
) -> Result<Vec<Child>, Error> {
    let dir = upper.join(os(rel));
    let names = list(&dir)?;
    let mut out = Vec::with_capacity(names.len());
    for n in &names {
        let path = dir.join(os(n));
        let st = Stat::of(&fs::symlink_metadata(&path).map_err(read_err(&path, "lstat"))?);
        if st.ty == Type::Socket {
            tracing::debug!(path = %path.display(), "socket skipped");
            continue;
        }
        if matches!(how, Scan::Overlay { .. }) && st.ty == Type::Char && st.rdev == 0 {
            out.push(whiteout(n));
            continue;
        }
        let (raw, kept) = xattr::read(&path, policy)?;
        let opaque = match how {
            Scan::Overlay { .. } => xattr::check_overlay(&path, &raw, st.ty == Type::Dir)?,
            Scan::Dirs { .. } => false,
        };
        // Below an opaque directory nothing of the layers beneath shows through.
        let lower_path = lower.filter(|_| !opaque).map(|l| l.join(os(n)));
        let (emit, lower_dir) = match &lower_path {
            None => (true, None),
            Some(lp) => match fs::symlink_metadata(lp) {
                Ok(lm) => {
                    let lst = Stat::of(&lm);
                    let changed = changed(&st, &kept, &path, &lst, lp, policy)?;
                    (changed, (lst.ty == Type::Dir).then(|| lp.clone()))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => (true, None),
                Err(e) => return Err(read_err(lp, "lstat")(e)),
            },
        };
        let descend = (st.ty == Type::Dir).then_some(lower_dir);
        out.push(Child {
            out_name: n.clone(),
            name: n.clone(),
            what: What::Entry(st, kept),
            emit,
            descend,
            opaque,
        });
    }
    if let (Some(l), Scan::Dirs { .. }) = (lower, how) {
        // What the lower directory has and the upper lost (an overlay upper directory
        // records deletions itself, as whiteouts). A deleted directory is one
        // whiteout: nothing below it is visited.
        for n in list(l)? {
            if names.binary_search(&n).is_err() {
                out.push(whiteout(&n));
            }
        }
    }
    out.sort_by(|a, b| a.out_name.cmp(&b.out_name).then(rank(a).cmp(&rank(b))));
    Ok(out)
}

fn whiteout(name: &[u8]) -> Child {
    let mut out_name = WHITEOUT_PREFIX.as_bytes().to_vec();
    out_name.extend_from_slice(name);
    Child {
        out_name,
        name: name.to_vec(),
        what: What::Whiteout,
        emit: true,
        descend: None,
        opaque: false,
    }
}

/// Orders a real `.wh.x` file and the whiteout of `x` (both written as `.wh.x`) the same
/// way every time.
fn rank(c: &Child) -> u8 {
    match c.what {
        What::Whiteout => 1,
        _ => 0,
    }
}

/// Whether upper entry `u` differs from lower entry `l` at the same path.
///
/// Compared: type, permission bits, owner, device number, kept xattrs, symlink target,
/// and for files size and mtime (seconds and nanoseconds). Directory mtimes are not
/// compared (adding a child changes them; the child is written anyway). When size and
/// mtime match and both mtimes are whole seconds, as after an extraction from a tar or a
/// `touch -d`, a same-second rewrite cannot be told from the metadata, so the contents
/// are compared; a write through the kernel always leaves a sub-second mtime.
fn changed(
    u: &Stat,
    ux: &Xattrs,
    up: &Path,
    l: &Stat,
    lp: &Path,
    policy: XattrPolicy,
) -> Result<bool, Error> {
    if (u.dev, u.ino) == (l.dev, l.ino) {
        return Ok(false); // the same inode (a hard-linked copy)
    }
    if u.ty != l.ty || u.mode != l.mode || u.uid != l.uid || u.gid != l.gid {
        return Ok(true);
    }
    if matches!(u.ty, Type::Char | Type::Block) && u.rdev != l.rdev {
        return Ok(true);
    }
    let (_, lx) = xattr::read(lp, policy)?;
    if *ux != lx {
        return Ok(true);
    }
    match u.ty {
        Type::Dir | Type::Fifo | Type::Char | Type::Block | Type::Socket => Ok(false),
        Type::Symlink => {
            let a = fs::read_link(up).map_err(read_err(up, "readlink"))?;
            let b = fs::read_link(lp).map_err(read_err(lp, "readlink"))?;
            Ok(a != b)
        }
        Type::File => {
            if u.size != l.size || u.mtime != l.mtime || u.mtime_nsec != l.mtime_nsec {
                return Ok(true);
            }
            if u.mtime_nsec != 0 || u.size == 0 {
                return Ok(false);
            }
            Ok(!same_content(up, lp)?)
        }
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool, Error> {
    let mut fa = File::open(a).map_err(read_err(a, "open"))?;
    let mut fb = File::open(b).map_err(read_err(b, "open"))?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(read_err(a, "read"))?;
        let nb = read_full(&mut fb, &mut bb).map_err(read_err(b, "read"))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
