//! OCI basics shared by the worker crates: a validated content [`Digest`], hashing
//! readers and writers, and media type names. Image manifest and config types come from
//! `oci-spec` (re-exported as [`spec`]).
#![forbid(unsafe_code)]

mod digest;
pub mod media;

pub use digest::{Digest, DigestError, HashingReader, HashingWriter, Sha256};
pub use oci_spec::image as spec;
