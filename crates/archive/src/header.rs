//! Deterministic tar headers: a ustar block when the entry fits in one, preceded by a PAX
//! extended header only for what does not (long names, large ids, sizes or times, xattrs).
//! No user or group names, no access or change times, so the same tree gives the same
//! bytes on every machine.

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    File { size: u64 },
    Dir,
    Symlink(&'a [u8]),
    Hardlink(&'a [u8]),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One entry's header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    /// Normalized path, without the trailing `/` of a directory (added here).
    pub name: &'a [u8],
    pub kind: Kind<'a>,
    /// Permission bits, set-id and sticky bits (0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: usize = 257;
const DEVMAJOR: (usize, usize) = (329, 8);
const DEVMINOR: (usize, usize) = (337, 8);
const PREFIX: (usize, usize) = (345, 155);

/// Largest value an octal field of `width` bytes holds (one byte is the NUL).
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width as u32 - 1))) - 1
}

fn put_octal(block: &mut [u8], (off, width): (usize, usize), v: u64) {
    let digits = width - 1;
    let s = format!("{v:0digits$o}");
    block[off..off + digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    block[off + digits] = 0;
}

fn put_bytes(block: &mut [u8], (off, width): (usize, usize), v: &[u8]) {
    let n = v.len().min(width);
    block[off..off + n].copy_from_slice(&v[..n]);
}

/// Splits `path` into ustar `(prefix, name)` if it fits.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= NAME.1 {
        return Some((&[], path));
    }
    // The split is at a '/', with the prefix at most 155 bytes and a non-empty name at
    // most 100; the latest such '/' keeps the name short.
    let limit = (path.len() - 1).min(PREFIX.1 + 1);
    let i = path[..limit].iter().rposition(|&b| b == b'/')?;
    let name = &path[i + 1..];
    (i > 0 && !name.is_empty() && name.len() <= NAME.1 && i <= PREFIX.1).then(|| (&path[..i], name))
}

/// Appends one PAX record (`"<len> <key>=<value>\n"`, len counting itself).
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn finish_block(block: &mut [u8]) {
    block[CHKSUM.0..CHKSUM.0 + CHKSUM.1].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(block, (CHKSUM.0, 7), sum);
    block[CHKSUM.0 + 7] = b' ';
}

fn ustar_block(path: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    match split_ustar(path) {
        Some((prefix, name)) => {
            put_bytes(&mut block, NAME, name);
            put_bytes(&mut block, PREFIX, prefix);
        }
        // The real name is in the PAX header; readers that ignore PAX see a truncation.
        None => put_bytes(&mut block, NAME, path),
    }
    block[TYPEFLAG] = typeflag;
    block[MAGIC..MAGIC + 8].copy_from_slice(b"ustar\x0000");
    put_octal(&mut block, SIZE, size);
    block
}

/// Encodes the header block(s) of `e` into `out` (cleared first). The caller writes the
/// content (`size` bytes for a file) and pads it to a block.
pub(crate) fn encode(e: &Entry<'_>, out: &mut Vec<u8>) {
    out.clear();
    let mut path = e.name.to_vec();
    if e.kind == Kind::Dir {
        path.push(b'/');
    }
    let (typeflag, size, link) = match e.kind {
        Kind::File { size } => (b'0', size, None),
        Kind::Dir => (b'5', 0, None),
        Kind::Symlink(t) => (b'2', 0, Some(t)),
        Kind::Hardlink(t) => (b'1', 0, Some(t)),
        Kind::Char(..) => (b'3', 0, None),
        Kind::Block(..) => (b'4', 0, None),
        Kind::Fifo => (b'6', 0, None),
    };

    // PAX records, in key order.
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut num = |key: &str, v: u64, width: usize| {
        if v > octal_max(width) {
            records.push((key.as_bytes().to_vec(), v.to_string().into_bytes()));
        }
    };
    num("gid", e.gid, GID.1);
    num("size", size, SIZE.1);
    num("uid", e.uid, UID.1);
    if let Some(t) = link {
        if t.len() > LINKNAME.1 {
            records.push((b"linkpath".to_vec(), t.to_vec()));
        }
    }
    if e.mtime < 0 || e.mtime as u64 > octal_max(MTIME.1) {
        records.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
    }
    if split_ustar(&path).is_none() {
        records.push((b"path".to_vec(), path.clone()));
    }
    for (k, v) in e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        records.push((key, v.clone()));
    }
    records.sort();

    if !records.is_empty() {
        let mut data = Vec::new();
        for (k, v) in &records {
            pax_record(&mut data, k, v);
        }
        let mut block = ustar_block(b"././@PaxHeader", b'x', data.len() as u64);
        put_octal(&mut block, MODE, 0o644);
        for f in [UID, GID, MTIME, DEVMAJOR, DEVMINOR] {
            put_octal(&mut block, f, 0);
        }
        finish_block(&mut block);
        out.extend_from_slice(&block);
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    let mut block = ustar_block(&path, typeflag, size.min(octal_max(SIZE.1)));
    put_octal(&mut block, MODE, u64::from(e.mode & 0o7777));
    put_octal(&mut block, UID, e.uid.min(octal_max(UID.1)));
    put_octal(&mut block, GID, e.gid.min(octal_max(GID.1)));
    put_octal(
        &mut block,
        MTIME,
        e.mtime.clamp(0, octal_max(MTIME.1) as i64) as u64,
    );
    if let Some(t) = link {
        put_bytes(&mut block, LINKNAME, t);
    }
    let (major, minor) = match e.kind {
        Kind::Char(a, b) | Kind::Block(a, b) => (a, b),
        _ => (0, 0),
    };
    put_octal(&mut block, DEVMAJOR, u64::from(major));
    put_octal(&mut block, DEVMINOR, u64::from(minor));
    finish_block(&mut block);
    out.extend_from_slice(&block);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entry<'a>(name: &'a [u8], kind: Kind<'a>, xattrs: &'a [(Vec<u8>, Vec<u8>)]) -> Entry<'a> {
        Entry {
            name,
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 1001,
            mtime: 1_700_000_000,
            xattrs,
        }
    }

    /// An entry read back: path, header, PAX records.
    type ReadBack = (Vec<u8>, tar::Header, Vec<(String, Vec<u8>)>);

    /// Encodes entries into a tar and reads it back with the `tar` crate.
    fn read_back(entries: &[Entry<'_>]) -> Vec<ReadBack> {
        let mut tarball = Vec::new();
        let mut buf = Vec::new();
        for e in entries {
            encode(e, &mut buf);
            tarball.extend_from_slice(&buf);
            if let Kind::File { size } = e.kind {
                tarball.extend(std::iter::repeat_n(b'x', size as usize));
                tarball.resize(tarball.len().next_multiple_of(BLOCK), 0);
            }
        }
        tarball.extend([0u8; 1024]);
        let mut ar = tar::Archive::new(&tarball[..]);
        let mut out = Vec::new();
        for en in ar.entries().unwrap() {
            let mut en = en.unwrap();
            let mut pax = Vec::new();
            if let Some(exts) = en.pax_extensions().unwrap() {
                for x in exts {
                    let x = x.unwrap();
                    pax.push((x.key().unwrap().to_string(), x.value_bytes().to_vec()));
                }
            }
            let path = en.path_bytes().into_owned();
            let h = en.header().clone();
            let mut content = Vec::new();
            en.read_to_end(&mut content).unwrap();
            out.push((path, h, pax));
        }
        out
    }

    #[test]
    fn short_entries_are_plain_ustar() {
        let got = read_back(&[
            entry(b"dir", Kind::Dir, &[]),
            entry(b"dir/f", Kind::File { size: 3 }, &[]),
            entry(b"dir/l", Kind::Symlink(b"../f"), &[]),
            entry(b"dir/c", Kind::Char(1, 3), &[]),
        ]);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, b"dir/");
        assert!(got.iter().all(|(_, _, pax)| pax.is_empty()));
        let h = &got[1].1;
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o4755, 1000, 1001)
        );
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.username().unwrap(), Some(""));
        assert_eq!(got[2].1.link_name_bytes().unwrap(), &b"../f"[..]);
        assert_eq!(got[3].1.device_major().unwrap(), Some(1));
        assert_eq!(got[3].1.device_minor().unwrap(), Some(3));
    }

    #[test]
    fn long_values_go_to_pax() {
        let long_name = [b'n'; 180];
        let split_name = format!("{}/{}", "p".repeat(120), "f".repeat(90));
        let target = [b't'; 150];
        let xattrs = vec![
            (b"user.b".to_vec(), b"2".to_vec()),
            (b"security.capability".to_vec(), vec![0, 1, 2, 0xff]),
        ];
        let mut big = entry(&long_name, Kind::Symlink(&target), &xattrs);
        big.uid = 1 << 30;
        big.mtime = -5;
        let got = read_back(&[big, entry(split_name.as_bytes(), Kind::Fifo, &[])]);
        assert_eq!(got[0].0, long_name);
        assert_eq!(got[0].1.uid().unwrap(), 1 << 30);
        let keys: Vec<_> = got[0].2.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "SCHILY.xattr.security.capability",
                "SCHILY.xattr.user.b",
                "linkpath",
                "mtime",
                "path",
                "uid"
            ]
        );
        assert_eq!(got[0].2[0].1, vec![0, 1, 2, 0xff]);
        // A long path that splits into prefix and name needs no PAX.
        assert_eq!(got[1].0, split_name.as_bytes());
        assert!(got[1].2.is_empty());
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for vlen in [0, 1, 5, 6, 7, 90, 94, 95, 96, 99, 100, 995, 996, 1000] {
            let mut out = Vec::new();
            pax_record(&mut out, b"k", &vec![b'v'; vlen]);
            let s = String::from_utf8(out.clone()).unwrap();
            let n: usize = s.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n, out.len(), "{s:?}");
        }
    }

    #[test]
    fn ustar_split_respects_field_sizes() {
        assert!(split_ustar(&[b'a'; 101]).is_none());
        let p = format!("{}/{}", "a".repeat(155), "b".repeat(100));
        assert_eq!(
            split_ustar(p.as_bytes()).map(|(a, b)| (a.len(), b.len())),
            Some((155, 100))
        );
        let p = format!("{}/{}", "a".repeat(156), "b".repeat(10));
        assert!(split_ustar(p.as_bytes()).is_none());
        let p = format!("{}/", "a".repeat(120));
        assert!(split_ustar(p.as_bytes()).is_none());
    }
}
