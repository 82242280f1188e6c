//! Filesystem layers as tar streams: what BuildKit's `util/overlay`, `util/compression` and
//! containerd's `archive` package do.
//!
//! This crate owns:
//! - **Compression**: detecting gzip/zstd/plain by magic bytes, a decompressing
//!   [`Decoder`], compressing [`Encoder`]s ([`Compression`]); gzip on all cores
//!   ([`GzipEncoder`]).
//! - **Apply** ([`apply_layer`]): unpacking a layer into a directory with OCI whiteouts
//!   turned into overlayfs whiteouts or deletions ([`WhiteoutMode`]), owners, modes,
//!   mtimes, xattrs, links and device nodes kept, and *safe extraction*: nothing is ever
//!   written outside the target, whatever the tar holds.
//! - **Diff** ([`diff_overlay`], [`diff_dirs`]): writing the changes of an overlay upper
//!   directory, or between two trees, as a deterministic tar (sorted entries, normalized
//!   headers, PAX only when needed), hashing the uncompressed stream (the diffID) and the
//!   compressed blob in the same pass.
//!
//! It does not own snapshots or mounts (`snapshot`), the content store where blobs land
//! (`content`), image manifests and configs (`oci`), or choosing a layer's compression
//! from build options (the exporter). The API is synchronous; async callers run it in
//! `spawn_blocking`.
//!
//! Layer tar format, as written and as read:
//! - Names are relative, `/`-separated, directories end with `/`, the root is never
//!   written. On apply, absolute names are taken relative to the target (as Docker does)
//!   and names with a `..` component are refused.
//! - Whiteouts are empty regular files `.wh.<name>`; an opaque directory is marked with
//!   `.wh..wh..opq`, written right after the directory. Other `.wh..wh.*` names are
//!   reserved and skipped on apply.
//! - Extended attributes are PAX `SCHILY.xattr.<name>` records.
#![forbid(unsafe_code)]

mod apply;
mod compression;
mod diff;
mod error;
mod header;
mod name;
mod pargz;
mod pipe;
mod root;
mod scan;
mod unpack;
mod writer;
mod xattr;

pub use apply::{ApplyOptions, ApplyStats, WhiteoutMode, apply_layer};
pub use compression::{Compression, Decoder, Encoder};
pub use diff::{DiffOptions, diff_dirs, diff_overlay, diff_overlay_with_base};
pub use error::Error;
pub use name::{OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX};
pub use pargz::GzipEncoder;
pub use writer::DiffStats;
pub use xattr::XattrPolicy;
