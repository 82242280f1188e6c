//! Shared set-up for the runc integration tests: a busybox rootfs extracted from
//! testkit's image, a fresh state directory per test, output collection, and the check
//! that a run left nothing behind.
//!
//! These tests need root and a runtime on PATH. Without them they skip loudly, unless the
//! `CI` environment variable is set, in which case they fail.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use executor::{
    CancellationToken, ExecError, Executor, Output, RunFuture, RunRequest, RuncExecutor, Runtime,
    Stream,
};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A state directory and an executor over it, plus a private busybox rootfs.
pub struct Env {
    pub exec: RuncExecutor,
    pub rootfs: TempDir,
    _state: TempDir,
}

/// Returns `None` (after saying why) when the tests cannot run here; panics instead when
/// `CI` is set.
pub fn env() -> Option<Env> {
    let why = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        Runtime::detect().err().map(|e| e.to_string())
    };
    if let Some(why) = why {
        if std::env::var_os("CI").is_some() {
            panic!("runc integration test cannot run: {why} (CI is set, so this is a failure)");
        }
        // Written to the real stderr, past the test harness's output capture.
        let _ = writeln!(std::io::stderr(), "SKIPPED: runc integration test: {why}");
        return None;
    }
    let state = tempfile::Builder::new()
        .prefix("bk-exec-state")
        .tempdir()
        .expect("state dir");
    let runtime = Runtime::detect().expect("runtime");
    let exec = RuncExecutor::new(state.path(), runtime).expect("executor");
    Some(Env {
        exec,
        rootfs: busybox_rootfs(),
        _state: state,
    })
}

/// Gets an [`Env`] or returns from the test.
#[macro_export]
macro_rules! env_or_skip {
    () => {
        match common::env() {
            Some(env) => env,
            None => return,
        }
    };
}

fn layer() -> &'static [u8] {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER.get_or_init(|| {
        let image =
            testkit::BusyboxImage::new().expect("busybox image (apt-get install busybox-static)");
        image.image().layers()[0].blob().bytes().to_vec()
    })
}

/// A fresh directory with the busybox layer extracted into it.
pub fn busybox_rootfs() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bk-exec-rootfs")
        .tempdir()
        .expect("rootfs dir");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer()));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(dir.path()).expect("extract busybox layer");
    dir
}

/// `sh -c <script>`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// What a run produced.
#[derive(Debug)]
pub struct Ran {
    pub result: Result<(), ExecError>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Stdout, after asserting the run succeeded.
    pub fn ok(self) -> String {
        if let Err(e) = &self.result {
            panic!(
                "run failed: {e}\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            );
        }
        self.stdout
    }
}

/// A run in progress whose output is being collected.
pub struct Running {
    pub future: RunFuture,
    pub cancel: CancellationToken,
    collector: JoinHandle<(String, String)>,
    ready: mpsc::UnboundedReceiver<()>,
}

impl Running {
    /// Waits until the process printed a line `ready` on stdout.
    pub async fn wait_ready(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.ready.recv())
            .await
            .expect("process did not print ready within 20s")
            .expect("process ended before printing ready");
    }

    pub async fn finish(self) -> Ran {
        let result = self.future.await;
        let (stdout, stderr) = self.collector.await.expect("collector");
        Ran {
            result,
            stdout,
            stderr,
        }
    }
}

impl Env {
    /// A request for `args` on this env's rootfs (bound writable).
    pub fn request(&self, id: &str, args: Vec<String>) -> RunRequest {
        let rootfs = snapshot::Mount::bind(self.rootfs.path().to_string_lossy(), false);
        RunRequest::new(id, vec![rootfs], args)
    }

    /// Starts a run, collecting output; a stdout line `ready` is signalled.
    pub fn start(&self, req: RunRequest) -> Running {
        let (tx, mut rx) = mpsc::channel::<Output>(16);
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let collector = tokio::spawn(async move {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(o) = rx.recv().await {
                match o.stream {
                    Stream::Stdout => {
                        out.extend_from_slice(&o.data);
                        if String::from_utf8_lossy(&out).lines().any(|l| l == "ready") {
                            let _ = ready_tx.send(());
                        }
                    }
                    Stream::Stderr => err.extend_from_slice(&o.data),
                }
            }
            (
                String::from_utf8_lossy(&out).into_owned(),
                String::from_utf8_lossy(&err).into_owned(),
            )
        });
        let cancel = CancellationToken::new();
        let future = self.exec.run(req, tx, cancel.clone());
        Running {
            future,
            cancel,
            collector,
            ready,
        }
    }

    /// Runs to completion.
    pub async fn run(&self, req: RunRequest) -> Ran {
        self.start(req).finish().await
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        self.exec.state_dir()
    }

    /// Problems with what is left in the state directory; empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.state().to_string_lossy().into_owned();
        let mut problems = Vec::new();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        for line in mountinfo.lines().filter(|l| l.contains(&state)) {
            problems.push(format!("mount left: {line}"));
        }
        let out = Command::new(self.exec.runtime().path())
            .arg("--root")
            .arg(self.exec.runtime_root())
            .args(["list", "-q"])
            .output()
            .expect("runtime list");
        assert!(out.status.success(), "runtime list failed: {out:?}");
        let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !ids.is_empty() {
            problems.push(format!("containers left: {ids}"));
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(self.state())
            .expect("state dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| !p.ends_with(executor::RUNTIME_ROOT_DIR))
            .collect();
        if !entries.is_empty() {
            problems.push(format!("bundles left: {entries:?}"));
        }
        problems
    }

    /// Asserts that no mount, container or bundle is left.
    pub fn assert_clean(&self) {
        let problems = self.leftovers();
        assert!(problems.is_empty(), "state not clean: {problems:#?}");
    }

    /// Waits up to `limit` for the state to become clean.
    pub async fn wait_clean(&self, limit: Duration) {
        let start = Instant::now();
        while !self.leftovers().is_empty() && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.assert_clean();
    }
}
