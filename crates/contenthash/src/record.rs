//! How tree entries and results are stored in the metadata store.
//!
//! Two tables, both keyed first by ref id and a NUL (ref ids never contain one), so
//! that forgetting a ref is one prefix scan per table:
//!
//! - `contenthash.records`: `ref \0 path` → one tree entry ([`encode`]): its kind, its
//!   digest (a directory's header), a directory's content digest and entry names.
//! - `contenthash.results`: `ref \0 options-fingerprint \0 path` → the 32 digest bytes
//!   of a finished checksum.
//!
//! The value encoding is ours: a version byte, a kind byte, a flags byte, then the
//! present digests (32 bytes each) and length-prefixed (u32 little-endian) byte strings.

use oci::Digest;

use crate::fs::Kind;
use crate::tree::Node;

/// The table of tree entries.
pub(crate) const RECORDS: &str = "contenthash.records";
/// The table of finished checksums.
pub(crate) const RESULTS: &str = "contenthash.results";

const VERSION: u8 = 1;
const HAS_DIGEST: u8 = 1;
const HAS_TREE: u8 = 2;
const HAS_CHILDREN: u8 = 4;

/// `ref \0` followed by `rest`.
pub(crate) fn key(ref_id: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ref_id.len() + 1 + rest.len());
    k.extend_from_slice(ref_id.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// The key of a finished checksum.
pub(crate) fn result_key(ref_id: &str, fingerprint: &Digest, path: &str) -> Vec<u8> {
    let mut rest = fingerprint.hex().into_bytes();
    rest.push(0);
    rest.extend_from_slice(path.as_bytes());
    key(ref_id, &rest)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Names and link targets are bounded by PATH_MAX; u32 is plenty.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// The stored form of `node`.
pub(crate) fn encode(node: &Node) -> Vec<u8> {
    let kind = match node.kind {
        Kind::Dir => 0,
        Kind::File => 1,
        Kind::Symlink(_) => 2,
        Kind::Special => 3,
    };
    let mut flags = 0;
    if node.digest.is_some() {
        flags |= HAS_DIGEST;
    }
    if node.tree.is_some() {
        flags |= HAS_TREE;
    }
    if node.children.is_some() {
        flags |= HAS_CHILDREN;
    }
    let mut out = vec![VERSION, kind, flags];
    for d in [node.digest, node.tree].into_iter().flatten() {
        out.extend_from_slice(d.as_bytes());
    }
    if let Kind::Symlink(target) = &node.kind {
        put_bytes(&mut out, target);
    }
    if let Some(children) = &node.children {
        out.extend_from_slice(
            &u32::try_from(children.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for c in children {
            put_bytes(&mut out, c);
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    }

    fn digest(&mut self) -> Option<Digest> {
        let b: [u8; 32] = self.take(32)?.try_into().ok()?;
        Some(Digest::from_bytes(b))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()?;
        self.take(n).map(<[u8]>::to_vec)
    }
}

/// The node stored as `value`, or `None` if it is not one we wrote.
pub(crate) fn decode(value: &[u8]) -> Option<Node> {
    let mut r = Reader(value);
    if r.byte()? != VERSION {
        return None;
    }
    let kind = r.byte()?;
    let flags = r.byte()?;
    let digest = if flags & HAS_DIGEST != 0 {
        Some(r.digest()?)
    } else {
        None
    };
    let tree = if flags & HAS_TREE != 0 {
        Some(r.digest()?)
    } else {
        None
    };
    let kind = match kind {
        0 => Kind::Dir,
        1 => Kind::File,
        2 => Kind::Symlink(r.bytes()?),
        3 => Kind::Special,
        _ => return None,
    };
    let children = if flags & HAS_CHILDREN != 0 {
        let n = r.u32()?;
        // Each name takes at least its 4-byte length: a bogus count cannot allocate.
        if n > r.0.len() / 4 {
            return None;
        }
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(r.bytes()?);
        }
        Some(names)
    } else {
        None
    };
    if !r.0.is_empty() || (kind != Kind::Dir && (tree.is_some() || children.is_some())) {
        return None;
    }
    Some(Node {
        kind,
        digest,
        tree,
        children,
    })
}

/// The digest stored as a result value.
pub(crate) fn decode_digest(value: &[u8]) -> Option<Digest> {
    let b: [u8; 32] = value.try_into().ok()?;
    Some(Digest::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(kind: Kind, digest: bool, tree: bool, children: Option<Vec<Vec<u8>>>) -> Node {
        Node {
            kind,
            digest: digest.then(|| Digest::of(b"d")),
            tree: tree.then(|| Digest::of(b"t")),
            children,
        }
    }

    #[test]
    fn nodes_round_trip() {
        let cases = [
            node(Kind::Dir, false, false, None),
            node(
                Kind::Dir,
                true,
                true,
                Some(vec![b"a".to_vec(), b"b\xff".to_vec()]),
            ),
            node(Kind::Dir, true, false, Some(vec![])),
            node(Kind::File, true, false, None),
            node(Kind::Symlink(b"../x".to_vec()), false, false, None),
            node(Kind::Special, true, false, None),
        ];
        for n in cases {
            assert_eq!(decode(&encode(&n)), Some(n.clone()), "{n:?}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let good = encode(&node(Kind::Dir, true, true, Some(vec![b"a".to_vec()])));
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "truncated at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other_version = good;
        other_version[0] = 9;
        assert_eq!(decode(&other_version), None);
        // A file cannot have entries.
        let mut file_with_children = encode(&node(Kind::Dir, false, false, Some(vec![])));
        file_with_children[1] = 1;
        assert_eq!(decode(&file_with_children), None);
        assert_eq!(decode_digest(&[0; 31]), None);
    }

    #[test]
    fn keys_are_prefixed_by_ref() {
        let fp = Digest::of(b"opts");
        let k = result_key("ref1", &fp, "/a");
        assert!(k.starts_with(&key("ref1", b"")));
        assert!(!k.starts_with(&key("ref", b"")));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
