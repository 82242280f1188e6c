//! Running build processes in containers: the [`Executor`] trait the solver's exec ops
//! call, and [`RuncExecutor`], which runs each process with an OCI runtime (runc, or crun)
//! from a bundle it builds per run, as BuildKit's `executor/runcexecutor` does.
//!
//! This crate owns: the runtime spec of a build container (namespaces, capabilities,
//! default mounts, masked paths), user and group resolution in the container's own
//! `/etc/passwd` and `/etc/group`, the generated `/etc/hosts` and `/etc/resolv.conf`,
//! mounting the rootfs and snapshot mounts for the duration of a run, the runtime's
//! lifecycle (run, kill on cancellation, delete), and cleaning up state a crashed daemon
//! left behind ([`cleanup_stale`]).
//!
//! It does not own: snapshots and their mounts as data (`snapshot`), deciding which
//! mounts an exec op gets, cache and secret mounts, entitlement checks for host network
//! or insecure mode (the ops layer), CNI networking (only "none" and "host" exist here),
//! seccomp/AppArmor profiles, rootless mode, and `exec` into a running container
//! (gateway containers); none of these exist yet.
//!
//! Runs need root (mounting, runc). Everything that can be computed without root — the
//! spec, users, hosts files — is a pure function with unit tests.
#![forbid(unsafe_code)]

mod bundle;
mod caps;
mod cleanup;
mod error;
mod hosts;
mod request;
mod rootfs;
mod runc;
mod runtime;
mod spec;
mod user;

use std::future::Future;
use std::pin::Pin;

pub use tokio_util::sync::CancellationToken;

pub use cleanup::{CleanupReport, cleanup_stale};
pub use error::{ExecError, Result};
pub use hosts::{DEFAULT_NAMESERVERS, hosts_file, resolv_conf};
pub use request::{
    DEFAULT_HOSTNAME, DEFAULT_PATH, ExtraMount, MountSource, NetworkMode, Output, OutputSink,
    RunRequest, SecurityMode, Stream, validate_id,
};
pub use runc::{RUNTIME_ROOT_DIR, RuncExecutor};
pub use runtime::{CANDIDATES, Runtime, RuntimeKind};
pub use user::{ResolvedUser, UserError, resolve as resolve_user, resolve_in_rootfs};

/// The future of one run: `Ok(())` when the process exited 0.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// Runs one process in a fresh container. Object-safe, so the solver can hold an
/// `Arc<dyn Executor>`.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Runs `request` to completion, sending its stdout and stderr to `output` as they
    /// come. The run starts when `run` is called, not when the future is first polled.
    /// Cancelling `cancel` (or dropping the returned future) kills the process; the
    /// container, its mounts and its bundle are removed in every case before the future
    /// resolves (or, if it was dropped, shortly after).
    ///
    /// Concurrent runs must not share a writable rootfs directory: mount points the
    /// runtime creates in it are removed after each run, also from under another
    /// container still using them. Each exec gets its own snapshot, so this holds in a
    /// build.
    fn run(&self, request: RunRequest, output: OutputSink, cancel: CancellationToken) -> RunFuture;
}
