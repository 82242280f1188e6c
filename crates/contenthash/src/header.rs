//! The bytes that describe one entry, and the digests built from them.
//!
//! An entry's digest is sha256 over its header (below), followed by the content for a
//! regular file. The header is BuildKit's "tarsum v1" selection of tar header fields,
//! written as `name` + value pairs with no separators, in this order: `name` (always
//! empty: names enter through the parent directory), `mode`, `uid`, `gid`, `size`,
//! `typeflag`, `linkname`, `uname` and `gname` (always empty), `devmajor`, `devminor`,
//! then the kept extended attributes sorted by name. Times and inode numbers are not
//! part of it. Keeping upstream's exact bytes makes our digests equal to BuildKit's for
//! the same tree, so cache keys agree across the two implementations.

use std::io::Read;

use oci::Digest;
use rustix::fs::{FileType, Stat};
use sha2::{Digest as _, Sha256};

/// Extended attributes as `(name, value)`.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The digest of no content at all (`sha256:e3b0c442…`): what a selection that matches
/// nothing hashes to.
pub(crate) fn empty() -> Digest {
    Digest::of(b"")
}

/// Whether extended attribute `name` is part of an entry's digest: file capabilities,
/// and everything outside the `security.` and `system.` namespaces (those hold labels
/// and ACLs of the machine, not of the content).
pub(crate) fn keeps_xattr(name: &[u8]) -> bool {
    name == b"security.capability"
        || !(name.starts_with(b"security.") || name.starts_with(b"system."))
}

/// What the header of one entry is made of.
#[derive(Debug)]
pub(crate) struct Meta<'a> {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `st_size` (only a regular file's enters the header).
    pub size: u64,
    /// `st_rdev` (only a device's enters the header).
    pub rdev: u64,
    /// The target of a symlink.
    pub link: &'a [u8],
    /// Extended attributes; [`write_header`] keeps those [`keeps_xattr`] selects.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Meta<'a> {
    /// The header fields of `st`, with the symlink target and attributes read apart.
    pub(crate) fn from_stat(st: &Stat, link: &'a [u8], xattrs: &'a [(Vec<u8>, Vec<u8>)]) -> Self {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev,
            link,
            xattrs,
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
}

/// Writes the header of `m` into `h`.
pub(crate) fn write_header(h: &mut Sha256, m: &Meta<'_>) {
    let ft = m.file_type();
    // A symlink's permission bits are meaningless; they count as 0777 everywhere.
    let mut mode = m.mode & 0o7777;
    if ft == FileType::Symlink {
        mode |= 0o777;
    }
    // Sockets have no tar type: upstream clears the socket bit, which leaves them looking
    // like regular files (of size 0).
    let (typeflag, size) = match ft {
        FileType::RegularFile | FileType::Socket => (b'0', m.size),
        FileType::Directory => (b'5', 0),
        FileType::Symlink => (b'2', 0),
        FileType::CharacterDevice => (b'3', 0),
        FileType::BlockDevice => (b'4', 0),
        FileType::Fifo => (b'6', 0),
        FileType::Unknown => (b'0', 0),
    };
    let (major, minor) = match ft {
        FileType::CharacterDevice | FileType::BlockDevice => {
            (rustix::fs::major(m.rdev), rustix::fs::minor(m.rdev))
        }
        _ => (0, 0),
    };
    let link: &[u8] = if ft == FileType::Symlink { m.link } else { b"" };

    let mut field = |name: &[u8], value: &[u8]| {
        h.update(name);
        h.update(value);
    };
    field(b"name", b"");
    field(b"mode", mode.to_string().as_bytes());
    field(b"uid", m.uid.to_string().as_bytes());
    field(b"gid", m.gid.to_string().as_bytes());
    field(b"size", size.to_string().as_bytes());
    field(b"typeflag", &[typeflag]);
    field(b"linkname", link);
    field(b"uname", b"");
    field(b"gname", b"");
    field(b"devmajor", major.to_string().as_bytes());
    field(b"devminor", minor.to_string().as_bytes());

    let mut kept: Vec<&(Vec<u8>, Vec<u8>)> =
        m.xattrs.iter().filter(|(k, _)| keeps_xattr(k)).collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in kept {
        field(k, v);
    }
}

/// The digest of an entry without content: a directory's own header, a symlink, a
/// device, a fifo.
pub(crate) fn digest_of(m: &Meta<'_>) -> Digest {
    let mut h = Sha256::new();
    write_header(&mut h, m);
    finish(h)
}

/// The digest of a regular file: its header, then everything `content` yields. Returns
/// the digest and the number of content bytes.
pub(crate) fn digest_with_content(
    m: &Meta<'_>,
    content: &mut dyn Read,
) -> std::io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    write_header(&mut h, m);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((finish(h), total))
}

/// A running digest over a list of `(name, digest)` pairs, as directories and
/// selections combine their members: each name, then the member's digest in its text
/// form (`sha256:<hex>`).
#[derive(Default)]
pub(crate) struct ListHasher(Sha256);

impl ListHasher {
    pub(crate) fn add(&mut self, name: &[u8], d: &Digest) {
        self.0.update(name);
        self.0.update(d.to_string().as_bytes());
    }

    pub(crate) fn finish(self) -> Digest {
        finish(self.0)
    }
}

fn finish(h: Sha256) -> Digest {
    Digest::from_bytes(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: u32 = 0o040000;
    const REG: u32 = 0o100000;
    const LNK: u32 = 0o120000;
    const CHR: u32 = 0o020000;

    fn meta(mode: u32, size: u64, link: &[u8]) -> Meta<'_> {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            size,
            rdev: 0,
            link,
            xattrs: &[],
        }
    }

    fn file(data: &[u8]) -> Digest {
        let m = meta(REG | 0o644, data.len() as u64, b"");
        digest_with_content(&m, &mut &data[..]).unwrap().0
    }

    /// `dgstFileData0` of upstream's checksum tests: a 0644 root-owned file "data0".
    #[test]
    fn file_digest_matches_upstream() {
        assert_eq!(
            file(b"data0").to_string(),
            "sha256:cd8e75bca50f2d695f220d0cb0997d8ead387e4f926e8669a92d7f104cc9885b"
        );
        assert_eq!(
            file(b"data1").to_string(),
            "sha256:c2b5e234f5f38fc5864da7def04782f82501a40d46192e4207d5b3f0c3c4732b"
        );
    }

    /// `expectedSym` of upstream's TestSymlinksNoFollow: a symlink to "target".
    #[test]
    fn symlink_digest_matches_upstream() {
        // The symlink's own mode bits do not matter.
        for perm in [0o777, 0o755, 0] {
            assert_eq!(
                digest_of(&meta(LNK | perm, 6, b"target")).to_string(),
                "sha256:a2ba571981f48ec34eb79c9a3ab091b6491e825c2f7e9914ea86e8e958be7fae"
            );
        }
    }

    #[test]
    fn header_covers_mode_owner_type_and_devices() {
        let base = meta(REG | 0o644, 3, b"");
        let d = digest_of(&base);
        assert_ne!(d, digest_of(&meta(REG | 0o4644, 3, b"")), "setuid");
        assert_ne!(d, digest_of(&meta(REG | 0o1644, 3, b"")), "sticky");
        assert_ne!(d, digest_of(&meta(REG | 0o640, 3, b"")), "mode");
        assert_ne!(
            d,
            digest_of(&Meta {
                uid: 1,
                ..meta(REG | 0o644, 3, b"")
            })
        );
        assert_ne!(
            d,
            digest_of(&Meta {
                gid: 1,
                ..meta(REG | 0o644, 3, b"")
            })
        );
        // A directory's size never counts.
        assert_eq!(
            digest_of(&meta(DIR | 0o755, 4096, b"")),
            digest_of(&meta(DIR | 0o755, 0, b""))
        );
        let dev = |rdev| {
            digest_of(&Meta {
                rdev,
                ..meta(CHR | 0o666, 0, b"")
            })
        };
        assert_ne!(
            dev(rustix::fs::makedev(1, 3)),
            dev(rustix::fs::makedev(1, 5))
        );
        // rdev of a non-device is ignored.
        assert_eq!(
            d,
            digest_of(&Meta {
                rdev: 77,
                ..meta(REG | 0o644, 3, b"")
            })
        );
    }

    #[test]
    fn only_selected_xattrs_count() {
        let none = digest_of(&meta(REG | 0o644, 0, b""));
        let with = |xattrs: &[(Vec<u8>, Vec<u8>)]| {
            digest_of(&Meta {
                xattrs,
                ..meta(REG | 0o644, 0, b"")
            })
        };
        let x = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(none, with(&[x("security.selinux", "label")]));
        assert_eq!(none, with(&[x("system.posix_acl_access", "acl")]));
        assert_ne!(none, with(&[x("security.capability", "caps")]));
        assert_ne!(none, with(&[x("user.key", "v")]));
        // Order of listing does not matter.
        assert_eq!(
            with(&[x("user.a", "1"), x("user.b", "2")]),
            with(&[x("user.b", "2"), x("user.a", "1")])
        );
    }

    #[test]
    fn list_digest_is_names_then_digest_text() {
        let d = file(b"data0");
        let mut l = ListHasher::default();
        l.add(b"\0foo", &d);
        let mut raw = b"\0foo".to_vec();
        raw.extend_from_slice(d.to_string().as_bytes());
        assert_eq!(l.finish(), Digest::of(&raw));
        assert_eq!(
            empty().to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
