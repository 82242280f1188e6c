//! [`RuncExecutor`]: one `runc run` per request, in the foreground, with the process's
//! stdout and stderr piped to the caller.
//!
//! Lifecycle of a run: validate the request; build the bundle (mount the rootfs and
//! extra snapshot mounts, resolve the user, create the working directory, write hosts,
//! resolv.conf and config.json) on a blocking thread; `runc run`; stream output; on
//! cancellation `runc kill <id> KILL` (retried until runc has created the container) and
//! wait; then, whatever happened, `runc delete --force <id>` and tear the bundle down.
//!
//! The run happens in its own tokio task, so dropping the future returned by
//! [`Executor::run`] cancels the run and the task still cleans up.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bundle::Bundle;
use crate::cleanup::{self, CleanupReport};
use crate::error::{ExecError, Result};
use crate::request::{Output, OutputSink, RunRequest, Stream};
use crate::runtime::{self, Runtime};
use crate::spec::HostFacts;
use crate::{Executor, RunFuture};

/// Name of the runtime's state directory inside the executor's state directory.
pub const RUNTIME_ROOT_DIR: &str = "runc";

/// Pause between `runc kill` attempts while runc is still creating the container.
const KILL_RETRY: Duration = Duration::from_millis(50);
/// How long to try `runc kill`, and then to wait for runc to exit, before killing runc.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep reading output after runc exited (a process that escaped the
/// container could hold the pipes open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// Read size for the output pipes.
const CHUNK: usize = 32 * 1024;

/// Runs containers with runc (or crun) through OCI bundles under a state directory.
#[derive(Clone, Debug)]
pub struct RuncExecutor {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug)]
struct Inner {
    state_dir: PathBuf,
    runtime_root: PathBuf,
    runtime: Runtime,
    facts: HostFacts,
    no_new_privileges: bool,
}

impl RuncExecutor {
    /// An executor keeping bundles in `state_dir` (created `0711` if missing) and the
    /// runtime's state in `<state_dir>/runc`.
    pub fn new(state_dir: impl Into<PathBuf>, runtime: Runtime) -> Result<RuncExecutor> {
        let state_dir = state_dir.into();
        create_private_dir(&state_dir)?;
        let state_dir = state_dir
            .canonicalize()
            .map_err(ExecError::io("resolve state directory", &state_dir))?;
        let runtime_root = state_dir.join(RUNTIME_ROOT_DIR);
        create_private_dir(&runtime_root)?;
        Ok(RuncExecutor {
            inner: Arc::new(Inner {
                state_dir,
                runtime_root,
                runtime,
                facts: HostFacts::probe(),
                no_new_privileges: false,
            }),
        })
    }

    /// Whether sandboxed processes run with `noNewPrivileges` (default: no, as upstream
    /// BuildKit, so that setuid binaries such as `sudo` and file capabilities (`ping`)
    /// work in `RUN` steps). Turning it on hardens steps at that cost. Insecure processes
    /// never have it.
    pub fn with_no_new_privileges(mut self, on: bool) -> RuncExecutor {
        Arc::make_mut(&mut self.inner).no_new_privileges = on;
        self
    }

    /// The (canonical) state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The runtime's `--root`: `<state_dir>/runc`.
    pub fn runtime_root(&self) -> &Path {
        &self.inner.runtime_root
    }

    /// The runtime binary in use.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Removes what a previous daemon left in the state directory (see
    /// [`cleanup::cleanup_stale`]). Call it at start-up, before any run: it also removes
    /// containers that are running right now.
    pub async fn cleanup_stale(&self) -> Result<CleanupReport> {
        cleanup::cleanup_stale(&self.inner.state_dir, &self.inner.runtime).await
    }
}

impl Executor for RuncExecutor {
    fn run(&self, request: RunRequest, output: OutputSink, cancel: CancellationToken) -> RunFuture {
        let id = request.id.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Box::pin(async move {
                Err(ExecError::Internal {
                    id,
                    reason: "RuncExecutor::run needs a tokio runtime".into(),
                })
            });
        };
        let token = cancel.child_token();
        let inner = self.inner.clone();
        let span = tracing::info_span!("container", id = %id);
        let task = handle.spawn(inner.run(request, output, token.clone()).instrument(span));
        // Dropping the future (even unpolled) drops the guard, which cancels the run; the
        // task still cleans up.
        let cancel_on_drop = token.drop_guard();
        Box::pin(async move {
            let _cancel_on_drop = cancel_on_drop;
            task.await.unwrap_or_else(|e| {
                Err(ExecError::Internal {
                    id,
                    reason: e.to_string(),
                })
            })
        })
    }
}

impl Inner {
    async fn run(
        self: Arc<Self>,
        req: RunRequest,
        output: OutputSink,
        cancel: CancellationToken,
    ) -> Result<()> {
        req.validate()?;
        let started = Instant::now();
        let this = self.clone();
        let prepared = {
            let req2 = req.clone();
            tokio::task::spawn_blocking(move || {
                Bundle::prepare(&this.state_dir, &req2, &this.facts, this.no_new_privileges)
            })
            .await
            .map_err(|e| internal(&req.id, e))??
        };
        tracing::debug!(elapsed = ?started.elapsed(), command = %req.command(), "bundle ready");

        let result = if cancel.is_cancelled() {
            Err(ExecError::Cancelled {
                command: req.command(),
            })
        } else {
            self.execute(&req, &prepared, output, &cancel).await
        };

        let deleted = self.runtime.delete(&self.runtime_root, &req.id).await;
        let torn_down = tokio::task::spawn_blocking(move || prepared.teardown())
            .await
            .map_err(|e| internal(&req.id, e))
            .and_then(|r| r);
        tracing::info!(elapsed = ?started.elapsed(), ok = result.is_ok(), "container finished");
        match result {
            Err(e) => {
                for cleanup in [deleted, torn_down] {
                    if let Err(c) = cleanup {
                        tracing::error!(error = %c, "cleanup after failed run");
                    }
                }
                Err(e)
            }
            Ok(()) => deleted.and(torn_down),
        }
    }

    async fn execute(
        &self,
        req: &RunRequest,
        bundle: &Bundle,
        output: OutputSink,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let log_path = bundle.log_path();
        let mut cmd = self.runtime.command(&self.runtime_root);
        cmd.arg("--log")
            .arg(&log_path)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--bundle")
            .arg(bundle.dir())
            .arg(&req.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(ExecError::io("start", self.runtime.path()))?;
        let pumps = [
            child
                .stdout
                .take()
                .map(|r| tokio::spawn(pump(r, Stream::Stdout, output.clone()))),
            child
                .stderr
                .take()
                .map(|r| tokio::spawn(pump(r, Stream::Stderr, output))),
        ];

        let (status, cancelled) = tokio::select! {
            biased;
            status = child.wait() => (status, false),
            _ = cancel.cancelled() => (self.kill(&req.id, &mut child).await, true),
        };
        for mut pump in pumps.into_iter().flatten() {
            if tokio::time::timeout(OUTPUT_GRACE, &mut pump).await.is_err() {
                tracing::warn!(
                    "output still open {OUTPUT_GRACE:?} after the container exited; dropping it"
                );
                pump.abort();
            }
        }

        let command = req.command();
        if cancelled {
            return Err(ExecError::Cancelled { command });
        }
        let status = status.map_err(ExecError::io("wait for", self.runtime.path()))?;
        let log = tokio::fs::read_to_string(&log_path)
            .await
            .unwrap_or_default();
        outcome(&self.runtime, command, status, &log)
    }

    /// Kills the container's process and waits for runc to exit; kills runc itself if
    /// that takes longer than [`KILL_TIMEOUT`].
    async fn kill(&self, id: &str, child: &mut Child) -> std::io::Result<ExitStatus> {
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            match self.runtime.kill(&self.runtime_root, id, "KILL").await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "cannot kill the container; killing the runtime");
                    child.start_kill()?;
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "kill not possible yet"),
            }
            tokio::select! {
                status = child.wait() => return status,
                _ = tokio::time::sleep(KILL_RETRY) => {}
            }
        }
        match tokio::time::timeout(KILL_TIMEOUT, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!("runtime still running {KILL_TIMEOUT:?} after kill; killing it");
                child.start_kill()?;
                child.wait().await
            }
        }
    }
}

/// Maps runc's exit status (and its log) to the run's result.
fn outcome(runtime: &Runtime, command: String, status: ExitStatus, log: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    if let Some(signal) = status.signal() {
        return Err(ExecError::Signaled { command, signal });
    }
    if let Some(message) = runtime::log_errors(log) {
        return Err(ExecError::Runtime {
            runtime: runtime.name(),
            command,
            message,
        });
    }
    Err(ExecError::ExitCode {
        command,
        code: status.code().unwrap_or(-1),
    })
}

/// Copies a pipe to the sink until EOF; once the sink is gone, keeps reading (so the
/// process never blocks on a full pipe) and discards.
async fn pump(mut r: impl AsyncRead + Unpin, stream: Stream, sink: OutputSink) {
    let mut buf = vec![0u8; CHUNK];
    let mut open = true;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if open {
                    let chunk = Output {
                        stream,
                        data: buf[..n].to_vec(),
                    };
                    open = sink.send(chunk).await.is_ok();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(?stream, error = %e, "reading container output failed");
                break;
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(ExecError::io("create state directory", dir))
}

fn internal(id: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Internal {
        id: id.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn outcomes() {
        let rt = Runtime::from_path("/bin/sh").unwrap();
        assert!(outcome(&rt, "true".into(), status(0), "").is_ok());
        let e = outcome(&rt, "sh -c exit 3".into(), status(3 << 8), "").unwrap_err();
        assert_eq!(e.exit_code(), Some(3));
        assert_eq!(
            e.to_string(),
            "process \"sh -c exit 3\" did not complete successfully: exit code: 3"
        );
        let e = outcome(&rt, "x".into(), status(9), "").unwrap_err();
        assert!(matches!(e, ExecError::Signaled { signal: 9, .. }), "{e}");
        let log = "{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": no such file\"}\n";
        let e = outcome(&rt, "/nope".into(), status(1 << 8), log).unwrap_err();
        assert!(matches!(e, ExecError::Runtime { .. }), "{e}");
        assert!(e.to_string().contains("/nope"), "{e}");
    }

    #[tokio::test]
    async fn pump_forwards_then_discards() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        pump(&b"hello"[..], Stream::Stderr, tx).await;
        let got = rx.recv().await.unwrap();
        assert_eq!(
            got,
            Output {
                stream: Stream::Stderr,
                data: b"hello".to_vec()
            }
        );
        assert!(rx.recv().await.is_none());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        // Must not hang or fail with the receiver gone.
        pump(&vec![b'x'; 3 * CHUNK][..], Stream::Stdout, tx).await;
    }

    #[tokio::test]
    async fn invalid_requests_fail_before_touching_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let exec = RuncExecutor::new(dir.path(), Runtime::from_path("/bin/sh").unwrap()).unwrap();
        assert!(exec.runtime_root().ends_with("runc"));
        let req = RunRequest::new(
            "bad/id",
            vec![snapshot::Mount::bind("/", true)],
            vec!["true".into()],
        );
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let e = exec
            .run(req, tx, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(e, ExecError::InvalidId { .. }), "{e}");
        let entries: Vec<_> = std::fs::read_dir(exec.state_dir()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the runtime root");
    }
}
