//! Shared set-up for the tests that run the real binaries: root detection, where
//! `buildctl` is, a [`Daemon`] started on a private socket and root, LLB helpers and
//! bounded polling.
//!
//! Each test binary uses a different part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;

/// How long a daemon may take to answer `buildctl debug workers` after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether the test may go on: true as root. Otherwise says loudly that it is skipped
/// (mounting and runc need root), and fails in CI, which runs as root, so that a broken
/// CI set-up is not mistaken for a pass.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: these tests need root in CI"
    );
    eprintln!("SKIPPED: needs root ({test})");
    false
}

/// `buildkitd`, built by cargo for this test.
pub fn buildkitd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildkitd"))
}

/// `buildctl`, built next to `buildkitd` by a workspace build.
pub fn buildctl_bin() -> PathBuf {
    let p = buildkitd_bin().with_file_name("buildctl");
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build -p buildctl, or cargo test --workspace)",
        p.display()
    );
    p
}

/// Pushes testkit's busybox image to `reg` as `busybox:latest`; returns its reference.
pub fn push_busybox(reg: &testkit::Registry) -> String {
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    format!("{}/busybox:latest", reg.host())
}

/// Writes `content` to `dir/name`, making parent directories.
pub fn write_file(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A scratch directory and a registry on 127.0.0.1 holding busybox (its reference);
/// `None` (said loudly, and a failure in CI) when `docker-registry` is missing.
pub fn registry_with_busybox() -> Option<(tempfile::TempDir, testkit::Registry, String)> {
    if !testkit::require_tool(
        Path::new(testkit::registry::DOCKER_REGISTRY),
        testkit::registry::INSTALL_HINT,
    )
    .unwrap()
    {
        return None;
    }
    let reg = testkit::Registry::start().unwrap();
    let base = push_busybox(&reg);
    Some((tempfile::tempdir().unwrap(), reg, base))
}

/// Runs `buildctl --addr addr ARGS` to completion, feeding `stdin`.
pub fn buildctl(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    spawn_buildctl(addr, args, stdin)
        .wait_with_output()
        .unwrap()
}

/// [`buildctl`] with extra environment variables (`DOCKER_CONFIG`, say).
pub fn buildctl_env(
    addr: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &Path)],
) -> Output {
    spawn_buildctl_env(addr, args, stdin, env)
        .wait_with_output()
        .unwrap()
}

/// Starts `buildctl --addr addr ARGS` with piped output; `stdin` is written and closed
/// before this returns (definitions are small, so the pipe never fills).
pub fn spawn_buildctl(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Child {
    spawn_buildctl_env(addr, args, stdin, &[])
}

fn spawn_buildctl_env(
    addr: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &Path)],
) -> Child {
    let mut child = Command::new(buildctl_bin())
        .envs(env.iter().copied())
        .arg("--addr")
        .arg(addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child
}

/// Sends `signal` (a name such as `TERM`) with kill(1); tests have no signal crate.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Polls `f` every 50 ms until it gives `Some`, or panics naming `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `buildkitd` on `<dir>/buildkitd.sock` with root `<dir>/root`, logging to
/// `<dir>/buildkitd.log` (appended to, so restarts on the same dir keep one log). If the
/// test panics while it runs, dropping it prints the end of that log and stops it.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon under `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    /// Starts the daemon under `dir` with extra flags and waits until it answers.
    pub fn start_with(dir: &Path, flags: &[&str]) -> Daemon {
        let socket = dir.join("buildkitd.sock");
        let log = dir.join("buildkitd.log");
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let addr = format!("unix://{}", socket.display());
        let root = dir.join("root");
        let child = Command::new(buildkitd_bin())
            .arg("--root")
            .arg(&root)
            .arg("--addr")
            .arg(&addr)
            .args(flags)
            // plain text in the log file
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            addr,
            socket,
            root,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = d.child_mut().try_wait().unwrap() {
                panic!(
                    "buildkitd exited with {status} at start-up:\n{}",
                    d.log_tail()
                );
            }
            if d.buildctl(&["debug", "workers"], None).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "buildkitd did not answer on {} within {START_TIMEOUT:?}:\n{}",
            d.addr,
            d.log_tail()
        );
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon runs")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// `buildctl build` of the Dockerfile in `ctx` (context and Dockerfile both from
    /// it) with plain progress and `extra` flags.
    pub fn build_dockerfile(&self, ctx: &Path, extra: &[&str]) -> Output {
        let local_ctx = format!("context={}", ctx.display());
        let local_df = format!("dockerfile={}", ctx.display());
        let mut args = vec![
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &local_ctx,
            "--local",
            &local_df,
            "--progress",
            "plain",
        ];
        args.extend_from_slice(extra);
        self.buildctl(&args, None)
    }

    pub fn buildctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        buildctl(&self.addr, args, stdin)
    }

    pub fn spawn_buildctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Child {
        spawn_buildctl(&self.addr, args, stdin)
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// SIGTERM; checks that it exits 0 and removes its socket.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("the daemon runs");
        send_signal(child.id(), "TERM");
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "buildkitd exited with {status} on SIGTERM:\n{}",
            self.log_tail()
        );
        assert!(!self.socket.exists(), "the socket is removed on shutdown");
    }

    /// SIGKILL, as a crash would: nothing of the daemon's own clean-up runs.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("the daemon runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "---- buildkitd log ({}) ----\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        // Never leave a daemon running after a failed test: ask, then insist.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub fn definition(st: &llb::State) -> Vec<u8> {
    st.marshal(&llb::MarshalOptions::default())
        .unwrap()
        .encode_to_vec()
}

/// stdout and stderr of a finished command, for assertions and messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
