//! Tar entry names: normalization into a path relative to the target, and the OCI
//! whiteout naming convention.
//!
//! Names are bytes (Linux file names need not be UTF-8). A normalized name has no leading
//! `/`, no empty or `.` components and no `..`; the empty name is the root itself.

/// Prefix of a whiteout entry: `.wh.<name>` deletes `<name>` from the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of names reserved for whiteout metadata.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The opaque marker: the directory holding it hides everything below it.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Why a name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameError {
    ParentComponent,
    Nul,
}

impl NameError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            NameError::ParentComponent => "a `..` component could leave the target; refused",
            NameError::Nul => "the name contains a NUL byte",
        }
    }
}

/// Normalizes a tar entry name (or hard link target) into a path relative to the root.
///
/// Absolute names are made relative (`/etc/passwd` is `etc/passwd` inside the target),
/// as Docker and containerd do; `.` and empty components are dropped; any `..` component
/// is refused, even one that would stay inside the root (`a/../b`), because no well-formed
/// layer needs it.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<u8>, NameError> {
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(NameError::ParentComponent),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(out)
}

/// Splits a normalized path into its parent (empty for the root) and its last component.
pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Joins a parent path and a name.
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    out.extend_from_slice(parent);
    if !parent.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// What the last component of an entry name means under the OCI whiteout convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// An ordinary file name.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Delete(&'a [u8]),
    /// Some other `.wh..wh.*` name: reserved metadata, skipped.
    Meta,
    /// `.wh.`, `.wh..` or `.wh...`: names nothing that can be deleted.
    Invalid,
}

/// Classifies the last component of a normalized name.
pub(crate) fn whiteout(base: &[u8]) -> Whiteout<'_> {
    if base == OPAQUE_MARKER.as_bytes() {
        return Whiteout::Opaque;
    }
    if base.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Whiteout::Meta;
    }
    match base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        None => Whiteout::None,
        Some(b"" | b"." | b"..") => Whiteout::Invalid,
        Some(name) => Whiteout::Delete(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(s: &str) -> Result<String, NameError> {
        normalize(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn normalizes_like_docker_but_refuses_dotdot() {
        assert_eq!(norm("a/b/c").unwrap(), "a/b/c");
        assert_eq!(norm("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("///").unwrap(), "");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("../escape"), Err(NameError::ParentComponent));
        assert_eq!(norm("a/../../b"), Err(NameError::ParentComponent));
        assert_eq!(norm("a/.."), Err(NameError::ParentComponent));
        assert_eq!(norm("a\0b"), Err(NameError::Nul));
        // Names that merely contain dots are fine.
        assert_eq!(norm("..a/b..").unwrap(), "..a/b..");
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"c"), b"c");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(whiteout(b"file"), Whiteout::None);
        assert_eq!(whiteout(b".wh.file"), Whiteout::Delete(b"file"));
        assert_eq!(whiteout(b".wh..hidden"), Whiteout::Delete(b".hidden"));
        assert_eq!(whiteout(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(whiteout(b".wh..wh.plnk"), Whiteout::Meta);
        assert_eq!(whiteout(b".wh."), Whiteout::Invalid);
        assert_eq!(whiteout(b".wh.."), Whiteout::Invalid);
        assert_eq!(whiteout(b".wh..."), Whiteout::Invalid);
        assert_eq!(whiteout(b".whx"), Whiteout::None);
    }

    proptest! {
        #[test]
        fn normalized_names_stay_inside(raw in proptest::collection::vec(
            prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(0u8), any::<u8>()], 0..40))
        {
            if let Ok(n) = normalize(&raw) {
                prop_assert!(!n.starts_with(b"/"));
                prop_assert!(!n.contains(&0));
                for comp in n.split(|&b| b == b'/') {
                    prop_assert!(comp != b".." && comp != b"." && (n.is_empty() || !comp.is_empty()));
                }
                // Normalizing is idempotent.
                prop_assert_eq!(normalize(&n).unwrap(), n.clone());
            } else {
                prop_assert!(raw.contains(&0) || raw.split(|&b| b == b'/').any(|c| c == b".."));
            }
        }
    }
}
