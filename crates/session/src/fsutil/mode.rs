//! Go's `os.FileMode` bit layout, which fsutil puts on the wire in `Stat.mode`, and its
//! conversion to and from POSIX `st_mode`.
//!
//! Go keeps the permission bits in the low 9 bits and the file type and the special bits
//! (setuid, setgid, sticky) as single high bits, where POSIX packs the type into `S_IFMT`
//! and the special bits next to the permissions. The conversion follows Go's
//! `os.fillFileStatFromSys` (POSIX → Go) and `syscallMode` plus fsutil's
//! `handleTarTypeBlockCharFifo` (Go → POSIX).

/// `os.ModeDir`: a directory.
pub const MODE_DIR: u32 = 1 << 31;
/// `os.ModeAppend`: append-only (never produced on Linux).
pub const MODE_APPEND: u32 = 1 << 30;
/// `os.ModeExclusive`: exclusive use (never produced on Linux).
pub const MODE_EXCLUSIVE: u32 = 1 << 29;
/// `os.ModeTemporary`: temporary file (never produced on Linux).
pub const MODE_TEMPORARY: u32 = 1 << 28;
/// `os.ModeSymlink`: a symbolic link.
pub const MODE_SYMLINK: u32 = 1 << 27;
/// `os.ModeDevice`: a device (block, or character with [`MODE_CHAR_DEVICE`]).
pub const MODE_DEVICE: u32 = 1 << 26;
/// `os.ModeNamedPipe`: a FIFO.
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
/// `os.ModeSocket`: a Unix socket (fsutil clears it before sending).
pub const MODE_SOCKET: u32 = 1 << 24;
/// `os.ModeSetuid`.
pub const MODE_SETUID: u32 = 1 << 23;
/// `os.ModeSetgid`.
pub const MODE_SETGID: u32 = 1 << 22;
/// `os.ModeCharDevice`: set together with [`MODE_DEVICE`].
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
/// `os.ModeSticky`.
pub const MODE_STICKY: u32 = 1 << 20;
/// `os.ModeIrregular`: a file of unknown type.
pub const MODE_IRREGULAR: u32 = 1 << 19;
/// `os.ModeType`: every file-type bit.
pub const MODE_TYPE: u32 = MODE_DIR
    | MODE_SYMLINK
    | MODE_NAMED_PIPE
    | MODE_SOCKET
    | MODE_DEVICE
    | MODE_CHAR_DEVICE
    | MODE_IRREGULAR;
/// `os.ModePerm`: the permission bits.
pub const MODE_PERM: u32 = 0o777;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

/// The kind of file a Go mode describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file (no type bit set). Only these carry data in the protocol.
    Regular,
    /// A directory.
    Dir,
    /// A symbolic link; its target is `Stat.linkname`.
    Symlink,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// A FIFO.
    NamedPipe,
    /// A Unix socket.
    Socket,
    /// Anything else ([`MODE_IRREGULAR`], or type bits that make no sense together).
    Irregular,
}

/// Converts a POSIX `st_mode` to Go's `os.FileMode` bits, as `os.Lstat` reports them.
pub fn go_mode_from_posix(st_mode: u32) -> u32 {
    let mut mode = st_mode & MODE_PERM;
    mode |= match st_mode & S_IFMT {
        S_IFBLK => MODE_DEVICE,
        S_IFCHR => MODE_DEVICE | MODE_CHAR_DEVICE,
        S_IFDIR => MODE_DIR,
        S_IFIFO => MODE_NAMED_PIPE,
        S_IFLNK => MODE_SYMLINK,
        S_IFREG => 0,
        S_IFSOCK => MODE_SOCKET,
        _ => MODE_IRREGULAR,
    };
    if st_mode & S_ISGID != 0 {
        mode |= MODE_SETGID;
    }
    if st_mode & S_ISUID != 0 {
        mode |= MODE_SETUID;
    }
    if st_mode & S_ISVTX != 0 {
        mode |= MODE_STICKY;
    }
    mode
}

/// Converts Go's `os.FileMode` bits to a POSIX `st_mode` (type bits included). An
/// irregular mode maps to a regular file, as Go's `syscallMode` ignores unknown bits.
pub fn posix_mode_from_go(mode: u32) -> u32 {
    let kind = match file_kind(mode) {
        FileKind::Regular | FileKind::Irregular => S_IFREG,
        FileKind::Dir => S_IFDIR,
        FileKind::Symlink => S_IFLNK,
        FileKind::BlockDevice => S_IFBLK,
        FileKind::CharDevice => S_IFCHR,
        FileKind::NamedPipe => S_IFIFO,
        FileKind::Socket => S_IFSOCK,
    };
    kind | posix_permissions(mode)
}

/// The permission and special bits (`07777`) of a Go mode, as `chmod` takes them.
pub fn posix_permissions(mode: u32) -> u32 {
    let mut perm = mode & MODE_PERM;
    if mode & MODE_SETUID != 0 {
        perm |= S_ISUID;
    }
    if mode & MODE_SETGID != 0 {
        perm |= S_ISGID;
    }
    if mode & MODE_STICKY != 0 {
        perm |= S_ISVTX;
    }
    perm
}

/// What kind of file a Go mode describes. Exactly one type must be set (a character
/// device is [`MODE_DEVICE`] plus [`MODE_CHAR_DEVICE`]); other combinations are
/// [`FileKind::Irregular`].
pub fn file_kind(mode: u32) -> FileKind {
    match mode & MODE_TYPE {
        0 => FileKind::Regular,
        MODE_DIR => FileKind::Dir,
        MODE_SYMLINK => FileKind::Symlink,
        MODE_DEVICE => FileKind::BlockDevice,
        m if m == MODE_DEVICE | MODE_CHAR_DEVICE => FileKind::CharDevice,
        MODE_NAMED_PIPE => FileKind::NamedPipe,
        MODE_SOCKET => FileKind::Socket,
        _ => FileKind::Irregular,
    }
}

/// Whether the receiver may request data for an entry of this mode (fsutil's
/// `fileCanRequestData`: no type bit at all). Both ends must agree on it, because it
/// decides which STAT ids are requestable.
pub fn can_request_data(mode: u32) -> bool {
    mode & MODE_TYPE == 0
}

/// Whether a Go mode is a directory.
pub fn is_dir(mode: u32) -> bool {
    mode & MODE_DIR != 0
}

/// Whether a Go mode is a symbolic link.
pub fn is_symlink(mode: u32) -> bool {
    mode & MODE_SYMLINK != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_to_go_types() {
        assert_eq!(go_mode_from_posix(0o100644), 0o644);
        assert_eq!(go_mode_from_posix(0o040755), MODE_DIR | 0o755);
        assert_eq!(go_mode_from_posix(0o120777), MODE_SYMLINK | 0o777);
        assert_eq!(go_mode_from_posix(0o060600), MODE_DEVICE | 0o600);
        assert_eq!(
            go_mode_from_posix(0o020666),
            MODE_DEVICE | MODE_CHAR_DEVICE | 0o666
        );
        assert_eq!(go_mode_from_posix(0o010644), MODE_NAMED_PIPE | 0o644);
        assert_eq!(go_mode_from_posix(0o140755), MODE_SOCKET | 0o755);
    }

    #[test]
    fn posix_to_go_special_bits() {
        assert_eq!(go_mode_from_posix(0o104755), MODE_SETUID | 0o755);
        assert_eq!(go_mode_from_posix(0o102755), MODE_SETGID | 0o755);
        assert_eq!(go_mode_from_posix(0o041777), MODE_DIR | MODE_STICKY | 0o777);
        // Go's literal values, as `fmt.Printf("%d", os.ModeDir|0o755)` prints them.
        assert_eq!(go_mode_from_posix(0o040755), 2_147_484_141);
        assert_eq!(go_mode_from_posix(0o120777), 134_218_239);
    }

    #[test]
    fn round_trip_every_type_and_special_bit() {
        let types = [
            0o100000, 0o040000, 0o120000, 0o060000, 0o020000, 0o010000, 0o140000,
        ];
        for ty in types {
            for special in [0, 0o4000, 0o2000, 0o1000, 0o7000] {
                for perm in [0, 0o644, 0o755, 0o777, 0o400] {
                    let posix = ty | special | perm;
                    let go = go_mode_from_posix(posix);
                    assert_eq!(posix_mode_from_go(go), posix, "posix {posix:o}");
                    assert_eq!(go_mode_from_posix(posix_mode_from_go(go)), go);
                }
            }
        }
    }

    #[test]
    fn kinds_and_requestable_data() {
        assert_eq!(file_kind(0o644), FileKind::Regular);
        assert_eq!(file_kind(MODE_DIR | 0o755), FileKind::Dir);
        assert_eq!(
            file_kind(MODE_DEVICE | MODE_CHAR_DEVICE),
            FileKind::CharDevice
        );
        assert_eq!(file_kind(MODE_DEVICE), FileKind::BlockDevice);
        assert_eq!(file_kind(MODE_DIR | MODE_SYMLINK), FileKind::Irregular);
        assert!(can_request_data(0o644 | MODE_SETUID));
        assert!(!can_request_data(MODE_DIR));
        assert!(!can_request_data(MODE_SYMLINK));
        assert!(!can_request_data(MODE_IRREGULAR));
        assert_eq!(posix_permissions(MODE_DIR | MODE_STICKY | 0o777), 0o1777);
    }
}
