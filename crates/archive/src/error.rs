//! The crate's error type. Every variant a bad layer or a bad tree can cause names the tar
//! entry or the path it is about.

use std::io;
use std::path::PathBuf;

use crate::Compression;

/// Everything that can go wrong reading, writing or applying a layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layer stream could not be read or parsed: truncated data, a bad header
    /// checksum, corrupt compressed data. `after` is the last entry read before it
    /// (empty at the start of the stream).
    #[error("reading the layer stream after entry {after:?}: {source}")]
    Stream {
        /// Name of the last entry read successfully.
        after: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A tar entry that is refused: a `..` component, a hard link to a path that does not
    /// exist inside the target, an entry type we do not extract, ...
    #[error("tar entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },

    /// A tar entry could not be written into the target.
    #[error("tar entry {entry:?}: {op}: {source}")]
    Apply {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// What was being done (`create file`, `chown`, ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// The target directory of an apply could not be opened or finished.
    #[error("target {}: {op}: {source}", path.display())]
    Target {
        /// The target directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// A file of a tree being diffed could not be read.
    #[error("{}: {op}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What was being done (`lstat`, `read`, `listxattr`, ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// A tree being diffed uses something a layer cannot express (for example an overlay
    /// upper directory made with `redirect_dir` or `metacopy`).
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },

    /// Writing the layer (tar, compressor or the caller's writer) failed.
    #[error("writing layer entry {entry:?}: {source}")]
    Write {
        /// The entry being written (empty while finishing the stream).
        entry: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The stream is compressed with something we do not decompress (xz, bzip2).
    #[error("unsupported layer compression: {0}")]
    UnsupportedCompression(&'static str),

    /// A compression level outside what the codec accepts.
    #[error("compression level {level} is out of range for {compression} ({min}..={max})")]
    InvalidLevel {
        /// The codec.
        compression: Compression,
        /// The level asked for.
        level: i32,
        /// The lowest level the codec accepts.
        min: i32,
        /// The highest level the codec accepts.
        max: i32,
    },
}

/// A lossy, printable form of a raw tar or file name, for error messages.
pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
