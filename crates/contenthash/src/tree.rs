//! What is known about one tree: its entries, found lazily, and the digests computed so
//! far.
//!
//! Entries are keyed by their resolved path relative to the root (`""` for the root,
//! `a/b` below it). A directory whose entries have been read holds their sorted names;
//! any name missing from such a directory does not exist, so lookups inside it never
//! touch the filesystem again. A directory's content digest, once computed, stands for
//! its whole subtree: that is what makes a second checksum of any path below it free.
//!
//! Digests follow upstream BuildKit exactly: a directory's content digest is a list
//! digest of `"\0"` with its header digest, then `"\0" + name` with each child's digest
//! (a subdirectory's content digest, any other entry's own digest), children sorted
//! bytewise by name.

use std::collections::{HashMap, HashSet};

use oci::Digest;

use crate::Error;
use crate::fs::{Fs, Kind, child, shown};
use crate::header::ListHasher;

/// Upstream's limit on symlinks followed while resolving one path.
const MAX_LINKS: usize = 255;

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// A non-directory's digest, or a directory's header digest.
    pub digest: Option<Digest>,
    /// A directory's content digest.
    pub tree: Option<Digest>,
    /// A directory's entries, sorted, once read.
    pub children: Option<Vec<Vec<u8>>>,
}

impl Node {
    fn new(kind: Kind) -> Node {
        Node {
            kind,
            digest: None,
            tree: None,
            children: None,
        }
    }
}

/// A directory as read: its header digest and entry names.
pub(crate) struct Listed {
    pub header: Digest,
    pub names: Vec<Vec<u8>>,
}

/// The entries and digests known for one tree, and which of them changed since they
/// were last persisted.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<Vec<u8>, Node>,
    dirty: HashSet<Vec<u8>>,
}

impl Default for Tree {
    /// A tree knowing only that its root is a directory (to be persisted with the rest).
    fn default() -> Self {
        let mut tree = Tree {
            nodes: HashMap::new(),
            dirty: HashSet::new(),
        };
        tree.insert(Vec::new(), Node::new(Kind::Dir));
        tree
    }
}

/// The parent of a normalized relative path (`""` for a top-level entry).
pub(crate) fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => b"",
    }
}

/// The last component of a normalized relative path.
fn name_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[i + 1..],
        None => rel,
    }
}

fn sep_name(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(0);
    k.extend_from_slice(name);
    k
}

fn vanished(rel: &[u8]) -> Error {
    Error::Io {
        path: shown(rel),
        op: "walk",
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "entry listed in its directory is gone",
        ),
    }
}

impl Tree {
    /// A tree from persisted nodes, if they are consistent: the root is a directory and
    /// every listed directory's entries are present.
    pub(crate) fn from_nodes(nodes: HashMap<Vec<u8>, Node>) -> Option<Tree> {
        if nodes.get(&b""[..]).map(|n| &n.kind) != Some(&Kind::Dir) {
            return None;
        }
        for (rel, node) in &nodes {
            if let Some(children) = &node.children {
                if children.iter().any(|c| !nodes.contains_key(&child(rel, c))) {
                    return None;
                }
            }
        }
        Some(Tree {
            nodes,
            dirty: HashSet::new(),
        })
    }

    pub(crate) fn node(&self, rel: &[u8]) -> Option<&Node> {
        self.nodes.get(rel)
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The keys changed since the last call, for persisting.
    pub(crate) fn take_dirty(&mut self) -> Vec<Vec<u8>> {
        self.dirty.drain().collect()
    }

    /// Marks keys changed again (their persisting failed).
    pub(crate) fn restore_dirty(&mut self, keys: Vec<Vec<u8>>) {
        self.dirty.extend(keys);
    }

    fn insert(&mut self, rel: Vec<u8>, node: Node) {
        self.dirty.insert(rel.clone());
        self.nodes.insert(rel, node);
    }

    fn node_mut(&mut self, rel: &[u8]) -> Result<&mut Node, Error> {
        self.dirty.insert(rel.to_vec());
        self.nodes.get_mut(rel).ok_or_else(|| vanished(rel))
    }

    /// Whether entry `rel` (resolved: no symlink among its parents) exists, looking it up
    /// on the filesystem only when no listed directory answers.
    pub(crate) fn known(&mut self, fs: &mut Fs<'_>, rel: &[u8]) -> Result<bool, Error> {
        if self.nodes.contains_key(rel) {
            return Ok(true);
        }
        if rel.is_empty() {
            self.insert(Vec::new(), Node::new(Kind::Dir));
            return Ok(true);
        }
        let parent = parent_of(rel);
        if !self.known(fs, parent)? {
            return Ok(false);
        }
        match self.nodes.get(parent) {
            Some(p) if p.kind == Kind::Dir && p.children.is_none() => {}
            _ => return Ok(false),
        }
        match fs.lstat(rel)? {
            Some(kind) => {
                self.insert(rel.to_vec(), Node::new(kind));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(crate) fn kind(&self, rel: &[u8]) -> Option<&Kind> {
        self.nodes.get(rel).map(|n| &n.kind)
    }

    /// Resolves `path` inside the root, as if the root were `/`: symlinks met on the way
    /// are followed (absolute targets restart at the root, `..` never climbs above it);
    /// the last component only when `follow_trailing`. Missing components are taken
    /// lexically. Returns the resolved key if the entry exists.
    pub(crate) fn resolve(
        &mut self,
        fs: &mut Fs<'_>,
        path: &[u8],
        follow_trailing: bool,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut current: Vec<u8> = Vec::new();
        let mut rest: Vec<u8> = path.to_vec();
        let mut pos = 0;
        let mut links = 0;
        loop {
            while rest.get(pos) == Some(&b'/') {
                pos += 1;
            }
            if pos >= rest.len() {
                break;
            }
            let end = rest[pos..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rest.len(), |i| pos + i);
            let part = &rest[pos..end];
            pos = end;
            if part == b"." {
                continue;
            }
            if part == b".." {
                current.truncate(parent_of(&current).len());
                continue;
            }
            let next = child(&current, part);
            let last = rest[pos..].iter().all(|&b| b == b'/');
            if self.known(fs, &next)? {
                if let Some(Kind::Symlink(target)) = self.kind(&next) {
                    if !last || follow_trailing {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(Error::TooManyLinks {
                                path: String::from_utf8_lossy(path).into_owned(),
                            });
                        }
                        let mut expanded = target.clone();
                        expanded.push(b'/');
                        expanded.extend_from_slice(&rest[pos..]);
                        if target.starts_with(b"/") {
                            current.clear();
                        }
                        rest = expanded;
                        pos = 0;
                        continue;
                    }
                }
            }
            current = next;
        }
        Ok(self.known(fs, &current)?.then_some(current))
    }

    /// Reads directory `rel` if it has not been read yet; returns its header digest and
    /// entry names.
    pub(crate) fn list(&mut self, fs: &mut Fs<'_>, rel: &[u8]) -> Result<Listed, Error> {
        let node = self.nodes.get(rel).ok_or_else(|| vanished(rel))?;
        if node.kind != Kind::Dir {
            return Err(Error::Io {
                path: shown(rel),
                op: "readdir",
                source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()),
            });
        }
        if let (Some(header), Some(names)) = (node.digest, &node.children) {
            return Ok(Listed {
                header,
                names: names.clone(),
            });
        }
        let listing = fs.list(rel)?;
        let mut names = Vec::with_capacity(listing.entries.len());
        for (name, kind) in listing.entries {
            let key = child(rel, &name);
            // Keep what an earlier single lookup found (and maybe hashed) if it agrees.
            if self.nodes.get(&key).map(|n| &n.kind) != Some(&kind) {
                self.insert(key, Node::new(kind));
            }
            names.push(name);
        }
        let node = self.node_mut(rel)?;
        node.digest = Some(listing.header);
        node.children = Some(names.clone());
        Ok(Listed {
            header: listing.header,
            names,
        })
    }

    /// The digest of `rel` on its own: a non-directory's digest, a directory's header.
    pub(crate) fn entry_digest(&mut self, fs: &mut Fs<'_>, rel: &[u8]) -> Result<Digest, Error> {
        let node = self.nodes.get(rel).ok_or_else(|| vanished(rel))?;
        if node.kind == Kind::Dir {
            return Ok(self.list(fs, rel)?.header);
        }
        if let Some(d) = node.digest {
            return Ok(d);
        }
        let kind = node.kind.clone();
        let d = fs.entry_digest(rel, &kind)?;
        self.node_mut(rel)?.digest = Some(d);
        Ok(d)
    }

    /// The digest of `rel` as a whole: a directory's content digest, or the entry's own.
    pub(crate) fn digest(&mut self, fs: &mut Fs<'_>, rel: &[u8]) -> Result<Digest, Error> {
        match self.kind(rel) {
            Some(Kind::Dir) => self.dir_digest(fs, rel),
            Some(_) => self.entry_digest(fs, rel),
            None => Err(vanished(rel)),
        }
    }

    /// A directory's content digest, reusing every subdirectory digest already known.
    /// Walks with an explicit stack: trees can be deeper than a thread's stack allows.
    fn dir_digest(&mut self, fs: &mut Fs<'_>, rel: &[u8]) -> Result<Digest, Error> {
        struct Frame {
            rel: Vec<u8>,
            names: Vec<Vec<u8>>,
            next: usize,
            hash: ListHasher,
        }
        let open = |tree: &mut Tree, fs: &mut Fs<'_>, rel: Vec<u8>| -> Result<Frame, Error> {
            let listed = tree.list(fs, &rel)?;
            let mut hash = ListHasher::default();
            hash.add(b"\0", &listed.header);
            Ok(Frame {
                rel,
                names: listed.names,
                next: 0,
                hash,
            })
        };

        if let Some(d) = self.nodes.get(rel).and_then(|n| n.tree) {
            return Ok(d);
        }
        let mut stack = vec![open(self, fs, rel.to_vec())?];
        while let Some(top) = stack.last_mut() {
            if let Some(name) = top.names.get(top.next) {
                top.next += 1;
                let key = child(&top.rel, name);
                let name = sep_name(name);
                let node = self.nodes.get(&key).ok_or_else(|| vanished(&key))?;
                match (&node.kind, node.tree) {
                    (Kind::Dir, Some(d)) => top.hash.add(&name, &d),
                    (Kind::Dir, None) => {
                        let frame = open(self, fs, key)?;
                        stack.push(frame);
                    }
                    _ => {
                        let d = self.entry_digest(fs, &key)?;
                        top.hash.add(&name, &d);
                    }
                }
                continue;
            }
            let Some(done) = stack.pop() else { break };
            let d = done.hash.finish();
            self.node_mut(&done.rel)?.tree = Some(d);
            match stack.last_mut() {
                Some(parent) => parent.hash.add(&sep_name(name_of(&done.rel)), &d),
                None => return Ok(d),
            }
        }
        Err(vanished(rel))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::Counters;

    fn resolve(root: &Path, path: &str, follow: bool) -> Option<String> {
        let counters = Counters::default();
        let mut fs = Fs::new(root, &counters);
        let mut tree = Tree::default();
        tree.resolve(&mut fs, path.as_bytes(), follow)
            .unwrap()
            .map(|k| String::from_utf8(k).unwrap())
    }

    /// The layout of upstream's TestChecksumNonLexicalSymlinks and
    /// TestSymlinkThroughParent.
    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["target", "link1", "link2", "link3", "lib/sub", "lib2/sub"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("target/file"), "data0").unwrap();
        std::fs::write(r.join("lib/sub/foo"), "data0").unwrap();
        let links = [
            ("link1/target_file", "../target/file"),
            ("link1/target_file_abs", "/target/file"),
            ("link1/target_dir", "../target"),
            ("link1/target_dir_abs", "/target"),
            ("link2/link1_rel", "../link1"),
            ("link2/link1_abs", "/link1"),
            ("link3/target", "../link2/link1_rel/target_dir"),
            ("link3/target_file", "../link2/link1_rel/target_file"),
            ("lib/sub/link", "../../lib2"),
            ("l1", "/lib"),
            ("l2", "/lib/"),
            ("l3", "/lib/."),
            ("l4", "/lib/../lib"),
            ("l5", "../lib"),
            ("up", "../../../../.."),
            ("loop", "loop"),
        ];
        for (l, t) in links {
            symlink(t, r.join(l)).unwrap();
        }
        d
    }

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let d = fixture();
        let r = d.path();
        for p in [
            "target/file",
            "link1/target_file",
            "link1/target_dir/file",
            "link2/link1_rel/target_file_abs",
            "link2/link1_abs/target_dir_abs/file",
            "link3/target_file",
            "link3/target/file",
            "up/up/target/file",
        ] {
            assert_eq!(resolve(r, p, true).as_deref(), Some("target/file"), "{p}");
        }
        for p in [
            "l1/sub/foo",
            "l2/sub/foo",
            "l3/sub/foo",
            "l4/sub/foo",
            "l5/sub/foo",
        ] {
            assert_eq!(resolve(r, p, true).as_deref(), Some("lib/sub/foo"), "{p}");
        }
        assert_eq!(
            resolve(r, "l1/sub/link/sub", true).as_deref(),
            Some("lib2/sub")
        );
        // The last component is followed only when asked.
        assert_eq!(
            resolve(r, "link1/target_file", false).as_deref(),
            Some("link1/target_file")
        );
        assert_eq!(resolve(r, "up", true).as_deref(), Some(""));
        assert_eq!(resolve(r, "nosuch/x", true), None);
        assert_eq!(resolve(r, "target/file/x", true), None);
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let d = fixture();
        let counters = Counters::default();
        let mut fs = Fs::new(d.path(), &counters);
        let err = Tree::default()
            .resolve(&mut fs, b"loop/x", true)
            .unwrap_err();
        assert!(matches!(err, Error::TooManyLinks { .. }), "{err}");
        // Not following the last component, a loop is just a symlink.
        assert!(
            Tree::default()
                .resolve(&mut fs, b"loop", false)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn listed_directories_answer_lookups() {
        let d = fixture();
        let counters = Counters::default();
        let mut fs = Fs::new(d.path(), &counters);
        let mut tree = Tree::default();
        let whole = tree.digest(&mut fs, b"").unwrap();
        let stats = counters.snapshot();
        // Everything below is known now: no more filesystem access, same digests.
        let target = tree.resolve(&mut fs, b"link3/target/file", true).unwrap();
        assert_eq!(target.as_deref(), Some(&b"target/file"[..]));
        assert_eq!(tree.resolve(&mut fs, b"nosuch", true).unwrap(), None);
        assert_eq!(tree.digest(&mut fs, b"").unwrap(), whole);
        assert_eq!(counters.snapshot(), stats);
        assert!(tree.len() > 20);
    }

    #[test]
    fn from_nodes_rejects_inconsistent_records() {
        let mut nodes = HashMap::new();
        assert!(Tree::from_nodes(nodes.clone()).is_none(), "no root");
        let mut root = Node::new(Kind::Dir);
        root.children = Some(vec![b"a".to_vec()]);
        nodes.insert(Vec::new(), root);
        assert!(Tree::from_nodes(nodes.clone()).is_none(), "missing child");
        nodes.insert(b"a".to_vec(), Node::new(Kind::File));
        assert!(Tree::from_nodes(nodes).is_some());
    }
}
