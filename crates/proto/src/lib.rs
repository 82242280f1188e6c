//! Protobuf messages and gRPC services of BuildKit, generated from our own `.proto` files
//! under `proto/`. They are wire-compatible with upstream moby/buildkit v0.32: same package
//! names, message names, field names and field numbers.
//!
//! Every protobuf package is one Rust module at the same path (`moby.buildkit.v1.types` is
//! [`moby::buildkit::v1::types`]), because prost refers to other packages by relative paths
//! such as `super::super::super::pb::Definition`. Short aliases for the commonly used packages
//! are re-exported at the crate root ([`control`], [`filesync`], [`fsutil_types`], ...).
//! `google.protobuf` well-known types map to [`prost_types`].
//!
//! This crate owns the wire types only; graph building and validation live in `llb`, and
//! service implementations live in the daemon and session crates. See `docs/protos.md`.
//!
//! A few `pb` messages (`Op` with its oneof `op::Op`, and the messages with maps: `SourceOp`,
//! `BuildOp`, `OpMetadata`, `Definition`, `Source`) are hand-written so that they encode byte
//! for byte as Go does (`Op`'s oneof last, map entries with key and value always present);
//! they are re-exported in [`pb`] next to the generated ones.

pub use prost_types;

mod gowire;

/// LLB (`package pb`): Definition, Op and every op, action, mount and metadata message.
#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb.rs"));

    pub use crate::gowire::{BuildOp, Definition, Op, OpMetadata, Source, SourceOp, op};
}

/// Packages under `moby.*`.
#[allow(clippy::all, rust_2018_idioms)]
pub mod moby {
    /// Packages under `moby.buildkit.*`.
    pub mod buildkit {
        /// `moby.buildkit.v1`: the Control service (`control.proto`) — Solve, Status,
        /// Session, DiskUsage, Prune, ListWorkers, Info and build history.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.rs"));

            /// `moby.buildkit.v1.types` (`worker.proto`): WorkerRecord, GCPolicy,
            /// BuildkitVersion, CDIDevice.
            pub mod types {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.types.rs"));
            }

            /// `moby.buildkit.v1.apicaps` (`caps.proto`): APICap.
            pub mod apicaps {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.v1.apicaps.rs"));
            }

            /// `moby.buildkit.v1.sourcepolicy` (`policy.proto`): source policy rules.
            pub mod sourcepolicy {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/moby.buildkit.v1.sourcepolicy.rs"
                ));
            }
        }

        /// Packages under `moby.buildkit.secrets.*`.
        pub mod secrets {
            /// `moby.buildkit.secrets.v1`: the session's Secrets service.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/moby.buildkit.secrets.v1.rs"));
            }
        }
    }

    /// Packages under `moby.filesync.*`.
    pub mod filesync {
        /// `moby.filesync.v1`: the session's FileSync, FileSend and Auth services.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.filesync.v1.rs"));
        }
    }

    /// Packages under `moby.sshforward.*`.
    pub mod sshforward {
        /// `moby.sshforward.v1`: the session's SSH agent forwarding service.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.sshforward.v1.rs"));
        }
    }

    /// Packages under `moby.upload.*`.
    pub mod upload {
        /// `moby.upload.v1`: the session's Upload service.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.upload.v1.rs"));
        }
    }

    /// Packages under `moby.exporter.*`.
    pub mod exporter {
        /// `moby.exporter.v1`: the session's client-side Exporter service.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/moby.exporter.v1.rs"));
        }
    }
}

/// Packages under `containerd.*`.
#[allow(clippy::all, rust_2018_idioms)]
pub mod containerd {
    /// Packages under `containerd.services.*`.
    pub mod services {
        /// Packages under `containerd.services.content.*`.
        pub mod content {
            /// `containerd.services.content.v1`: containerd's content store API, which a
            /// session client serves for local cache import/export and OCI layout stores.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/containerd.services.content.v1.rs"
                ));
            }
        }
    }
}

/// Packages under `fsutil.*`.
#[allow(clippy::all, rust_2018_idioms)]
pub mod fsutil {
    /// `fsutil.types`: Stat and Packet of the diff-copy file transfer protocol.
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/fsutil.types.rs"));
    }
}

/// Packages under `google.*` (other than the well-known `google.protobuf`, see
/// [`prost_types`]).
#[allow(clippy::all, rust_2018_idioms)]
pub mod google {
    /// `google.rpc`: the canonical error Status.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Packages under `grpc.*`.
#[allow(clippy::all, rust_2018_idioms)]
pub mod grpc {
    /// Packages under `grpc.health.*`.
    pub mod health {
        /// `grpc.health.v1`: the standard gRPC Health service.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
}

/// `containerd.services.content.v1`.
pub use containerd::services::content::v1 as containerd_content;
/// `fsutil.types`.
pub use fsutil::types as fsutil_types;
/// `grpc.health.v1`.
pub use grpc::health::v1 as health;
/// `moby.buildkit.secrets.v1`.
pub use moby::buildkit::secrets::v1 as secrets;
/// `moby.buildkit.v1`: the Control API.
pub use moby::buildkit::v1 as control;
/// `moby.buildkit.v1.apicaps`.
pub use moby::buildkit::v1::apicaps;
/// `moby.buildkit.v1.sourcepolicy`.
pub use moby::buildkit::v1::sourcepolicy;
/// `moby.buildkit.v1.types`.
pub use moby::buildkit::v1::types;
/// `moby.exporter.v1`.
pub use moby::exporter::v1 as session_exporter;
/// `moby.filesync.v1` (FileSync, FileSend and Auth).
pub use moby::filesync::v1 as filesync;
/// `moby.sshforward.v1`.
pub use moby::sshforward::v1 as sshforward;
/// `moby.upload.v1`.
pub use moby::upload::v1 as upload;
