//! Which mounts exist below a directory, from `/proc/self/mountinfo`: used before
//! removing a directory that may hold mount points (never delete through a mount) and to
//! find mounts a crashed daemon left behind.

use std::io;
use std::path::{Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The mount points in `mountinfo` text (field 5 of each line, octal escapes decoded),
/// in file order (parents before children).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first (the
/// order to unmount them in).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(MOUNTINFO)?;
    Ok(under(&mount_points(&text), dir))
}

fn under(points: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = points
        .iter()
        .filter(|p| p.starts_with(dir))
        .cloned()
        .collect();
    // Later mounts stack on or below earlier ones: undo them in reverse order.
    found.reverse();
    found
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
        90 27 0:50 / /var/lib/bk/abc/rootfs rw - overlay overlay rw,lowerdir=/l\n\
        91 90 0:51 / /var/lib/bk/abc/rootfs/dev rw - tmpfs tmpfs rw\n\
        92 27 0:52 / /var/lib/bk/with\\040space rw - tmpfs tmpfs rw\n\
        93 27 0:53 / /var/lib/bkother rw - tmpfs tmpfs rw\n";

    #[test]
    fn mount_points_are_decoded() {
        let points = mount_points(SAMPLE);
        assert_eq!(points.len(), 6);
        assert_eq!(points[4], PathBuf::from("/var/lib/bk/with space"));
    }

    #[test]
    fn under_is_by_path_component_and_deepest_first() {
        let points = mount_points(SAMPLE);
        assert_eq!(
            under(&points, Path::new("/var/lib/bk")),
            vec![
                PathBuf::from("/var/lib/bk/with space"),
                PathBuf::from("/var/lib/bk/abc/rootfs/dev"),
                PathBuf::from("/var/lib/bk/abc/rootfs"),
            ]
        );
        assert!(under(&points, Path::new("/nothing")).is_empty());
    }

    #[test]
    fn escapes_decode_and_odd_input_passes_through() {
        assert_eq!(unescape("a\\011b\\012c\\134d"), "a\tb\nc\\d");
        assert_eq!(unescape("trailing\\"), "trailing\\");
        assert_eq!(unescape("\\9zz"), "\\9zz");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn reads_this_process_mountinfo() {
        let root = mounts_under(Path::new("/")).unwrap();
        assert!(root.contains(&PathBuf::from("/")));
    }
}
