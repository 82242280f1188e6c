//! The crate's error type. Every variant names the action's path (or pattern, or user)
//! it is about, relative to the action's root, as upstream reports them.

use std::io;

/// Everything that can go wrong running a file action.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed. `path` is the action's path inside its root (for
    /// example `/app/a.txt`), `op` what was being done.
    #[error("{action} {path}: {op}: {source}")]
    Io {
        /// The action: `mkdir`, `mkfile`, `rm`, `symlink`, `copy`, `chown`.
        action: &'static str,
        /// The path inside the root.
        path: String,
        /// The operation that failed (`lstat`, `create`, `write`, `chmod`, ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// An action that cannot be done as asked (removing the root, replacing a directory
    /// with a file, ...).
    #[error("{action} {path}: {reason}")]
    Invalid {
        /// The action.
        action: &'static str,
        /// The path inside the root.
        path: String,
        /// Why it cannot be done.
        reason: String,
    },

    /// A copy source with wildcards matched nothing (and empty matches are not allowed).
    #[error("copy {src}: no source files were specified (the wildcard matched nothing)")]
    NoMatch {
        /// The source pattern.
        src: String,
    },

    /// A source path the copy requires does not exist.
    #[error("copy {src}: required path {path:?}: not found")]
    RequiredPath {
        /// The copy's source.
        src: String,
        /// The missing path.
        path: String,
    },

    /// A wildcard, include or exclude pattern is malformed.
    #[error("{action}: invalid {which} pattern: {source}")]
    Pattern {
        /// The action.
        action: &'static str,
        /// `wildcard`, `include` or `exclude`.
        which: &'static str,
        /// The pattern error, naming the pattern.
        source: patternmatcher::Error,
    },

    /// A copy's symbolic mode (`modeStr`) cannot be parsed.
    #[error("copy: invalid chmod mode {mode:?}: {reason}")]
    Mode {
        /// The mode string.
        mode: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An owner given by name is not in the root's `/etc/passwd`.
    #[error("unknown user {name:?}: not found in /etc/passwd")]
    UnknownUser {
        /// The user name.
        name: String,
    },

    /// A group given by name is not in the root's `/etc/group`.
    #[error("unknown group {name:?}: not found in /etc/group")]
    UnknownGroup {
        /// The group name.
        name: String,
    },

    /// A user or group was given by name, but no root to look names up in.
    #[error("cannot resolve {what} {name:?}: no filesystem to read /etc/{what_file} from")]
    NoUserDb {
        /// `user` or `group`.
        what: &'static str,
        /// `passwd` or `group`.
        what_file: &'static str,
        /// The name.
        name: String,
    },

    /// An owner id that cannot be set (`4294967295` means "unchanged" to the kernel).
    #[error("invalid owner {uid}:{gid}")]
    InvalidOwner {
        /// The user id.
        uid: u32,
        /// The group id.
        gid: u32,
    },

    /// Unpacking an archive source into the destination failed.
    #[error("copy {src}: unpacking into {dest}: {source}")]
    Unpack {
        /// The archive, inside the source root.
        src: String,
        /// The destination directory, inside the destination root.
        dest: String,
        /// The extraction error.
        source: archive::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A closure turning an `io::Error` into [`Error::Io`] for `action` on `path`.
pub(crate) fn io_err(
    action: &'static str,
    path: &str,
    op: &'static str,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_string();
    move |source| Error::Io {
        action,
        path,
        op,
        source,
    }
}

/// Same as [`io_err`] for the `rustix` error type.
pub(crate) fn errno(
    action: &'static str,
    path: &str,
    op: &'static str,
) -> impl FnOnce(rustix::io::Errno) -> Error {
    let f = io_err(action, path, op);
    move |e| f(e.into())
}
