//! LLB: build graphs for BuildKit, wire-compatible with upstream's `client/llb`.
//!
//! This crate owns building graphs ([`State`] and the op builders), marshaling them into a
//! `pb.Definition` whose op bytes (and so digests) equal what upstream's Go client
//! produces for the same graph, and loading a received Definition back into a validated
//! graph ([`LoadedDefinition`]). It does not run anything: solving lives in `solver`/`ops`.
//!
//! ```
//! use llb::{MarshalOptions, image};
//! let st = image("busybox").run().shell("echo hi > /x").build().root();
//! let def = st.marshal(&MarshalOptions::default()).unwrap();
//! assert_eq!(def.def.len(), 3); // image, exec, terminal
//! ```
#![forbid(unsafe_code)]

pub mod caps;
mod definition;
pub mod dump;
pub mod duration;
mod error;
mod exec;
mod file;
mod marshal;
mod ops;
mod platform;
pub mod reference;
mod source;
mod state;

pub use definition::{LoadedDefinition, LoadedOp};
pub use error::{Error, LoadError};
pub use exec::{
    CacheSharing, ContentCache, DEFAULT_PATH, Exec, ExecState, Mount, ProxyEnv, Secret, Ssh,
};
pub use file::{
    BoundActions, Chmod, CopyOptions, CopySource, FileAction, MkdirOptions, MkfileOptions, Owner,
    RmOptions, SymlinkOptions, UserRef,
};
pub use marshal::{MarshalOptions, digest_of, random_id};
pub use ops::{diff, merge};
pub use platform::Platform;
pub use source::{Differ, Git, Http, Image, Local, ResolveMode, git, http, image, local, scratch};
pub use state::{
    LinuxResources, NetMode, OpOptions, Output, ProgressGroup, SecurityMode, State, Ulimit,
};

/// Re-export of the generated protobuf types this crate speaks.
pub use proto::pb;
