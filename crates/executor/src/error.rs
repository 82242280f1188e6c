//! The crate's error type.

use std::path::PathBuf;

use crate::user::UserError;

/// Why a run (or executor set-up, or stale-state cleanup) failed.
///
/// Variants that a build step can cause name its command (`args` joined with spaces), so
/// that the solver can show them as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The process ran and exited with a non-zero code.
    ///
    /// runc reports a process killed by signal `S` as exit code `128 + S`, exactly as a
    /// shell's `exit 137` would; the two cannot be told apart, so such codes land here.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    ExitCode { command: String, code: i32 },
    /// The runtime process itself was killed by a signal (for example by the OOM killer),
    /// so there is no exit code.
    #[error("process \"{command}\" was killed by signal {signal}")]
    Signaled { command: String, signal: i32 },
    /// The run was cancelled; the container was killed and removed.
    #[error("process \"{command}\" was cancelled")]
    Cancelled { command: String },
    /// The runtime could not start the process (for example: the executable does not exist
    /// in the container). `message` is the runtime's own error.
    #[error("{runtime} could not run \"{command}\": {message}")]
    Runtime {
        runtime: String,
        command: String,
        message: String,
    },
    /// A runtime sub-command (`kill`, `delete`, `list`) failed.
    #[error("{runtime} {verb} {id}: {message}")]
    RuntimeCommand {
        runtime: String,
        verb: &'static str,
        id: String,
        message: String,
    },
    /// Neither `runc` nor `crun` was found.
    #[error("no OCI runtime found: looked for {candidates} in PATH ({path})")]
    RuntimeNotFound { candidates: String, path: String },
    /// The container id is not usable (empty, reserved, or not letters and digits).
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    /// A container with this id is already running (or its bundle was left behind).
    #[error("container {id:?} already exists (bundle {})", path.display())]
    AlreadyExists { id: String, path: PathBuf },
    /// The request is malformed: empty args, a relative working directory, ...
    #[error("invalid run request for container {id:?}: {reason}")]
    InvalidRequest { id: String, reason: String },
    /// The user could not be resolved in the container's rootfs.
    #[error(transparent)]
    User(#[from] UserError),
    /// Mounting or unmounting a snapshot failed.
    #[error(transparent)]
    Mount(#[from] snapshot::Error),
    /// Building the OCI runtime spec failed.
    #[error("runtime spec for container {id:?}: {source}")]
    Spec {
        id: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Mounts, runtime state or directories of a finished run could not be removed.
    #[error("cleaning up container {id:?}: {reason}")]
    Cleanup { id: String, reason: String },
    /// A task of the executor itself failed (a bug).
    #[error("executor task for container {id:?} failed: {reason}")]
    Internal { id: String, reason: String },
}

impl ExecError {
    /// An [`ExecError::Io`] maker for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ExecError::Io { op, path, source }
    }

    /// The process's exit code, if the error is a non-zero exit.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecError::ExitCode { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, ExecError::Cancelled { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = ExecError> = std::result::Result<T, E>;
