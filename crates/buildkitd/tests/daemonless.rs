//! `scripts/buildctl-daemonless.sh` with the binaries cargo built: it starts a private
//! daemon, passes its arguments and standard input to buildctl, returns buildctl's exit
//! status, and leaves no daemon, socket or temporary directory behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{buildctl_bin, buildkitd_bin, definition, text, wait_for};

/// Seconds any one run of the script may take.
const SCRIPT_TIMEOUT: &str = "120";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/buildctl-daemonless.sh")
}

/// One isolated set-up: its own state root and its own TMPDIR (so that "no temporary
/// directory left" means that directory is empty again).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Env { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn tmpdir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// The script under timeout(1), so that a hang fails the test instead of blocking it
    /// (the script's trap still stops its daemon on the SIGTERM).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(SCRIPT_TIMEOUT)
            .arg("bash")
            .arg(script())
            .args(args)
            .env("BUILDKITD", buildkitd_bin())
            .env("BUILDCTL", buildctl_bin())
            .env("BUILDKITD_ROOT", self.root())
            .env("TMPDIR", self.tmpdir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, args: &[&str], stdin: Option<&[u8]>, flags: &str) -> Child {
        let mut child = self
            .command(args)
            .env("BUILDKITD_FLAGS", flags)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            std::io::Write::write_all(&mut input, bytes).unwrap();
        }
        drop(input);
        child
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.spawn(args, stdin, "").wait_with_output().unwrap()
    }

    /// Live `buildkitd` processes started on this set-up's root.
    fn daemons(&self) -> Vec<u32> {
        let root = self.root().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
                .unwrap_or(true);
            if !zombie
                && args.first().is_some_and(|a| a.ends_with("buildkitd"))
                && args.contains(&root)
            {
                found.push(pid);
            }
        }
        found
    }

    /// Nothing left: no daemon on this root, nothing in TMPDIR (the socket and the log
    /// lived there).
    fn assert_clean(&self) {
        assert!(
            self.daemons().is_empty(),
            "daemon still runs: {:?}",
            self.daemons()
        );
        let left: Vec<_> = std::fs::read_dir(self.tmpdir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

#[test]
fn daemonless_script_runs_buildctl_against_a_private_daemon() {
    if !common::require_root("daemonless_script_runs_buildctl_against_a_private_daemon") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let env = Env::new();

    let out = env.run(&["debug", "workers"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("linux/"), "{}", text(&out));
    env.assert_clean();
    assert!(
        env.root().join("metadata.redb").is_file(),
        "state is kept in BUILDKITD_ROOT"
    );

    // an LLB build from standard input, results into a local directory; the step is slow
    // enough to see the daemon while it runs
    let base = llb::image(&busybox).env("PATH", llb::DEFAULT_PATH);
    let step = base
        .run()
        .shell("sleep 1; echo built without a daemon > /result")
        .build()
        .root();
    let copy = llb::CopyOptions {
        create_dest_path: true,
        ..llb::CopyOptions::default()
    };
    let result = llb::scratch().file(
        &llb::FileAction::copy(&step, "/result", "/result", copy),
        llb::OpOptions::new(),
    );
    let dest = env.dir.path().join("out");
    let output = format!("type=local,dest={}", dest.display());
    let started = Instant::now();
    let child = env.spawn(
        &["build", "--progress", "plain", "--output", &output],
        Some(&definition(&result)),
        "",
    );
    let daemon = wait_for(Duration::from_secs(30), "the private daemon to run", || {
        env.daemons().first().copied()
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("result")).unwrap(),
        "built without a daemon\n"
    );
    assert!(
        !env.daemons().contains(&daemon),
        "daemon {daemon} outlived the script"
    );
    env.assert_clean();
    eprintln!("build through the script: {:?}", started.elapsed());

    // buildctl's exit status is the script's: a failing step (1) and a usage error (2)
    let broken = base.run().shell("echo oops; exit 3").build().root();
    let out = env.run(&["build"], Some(&definition(&broken)));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exit code: 3"), "{}", text(&out));
    let out = env.run(&["no-such-command"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    env.assert_clean();

    // a daemon that cannot start: the script says so, shows its log, and cleans up
    let out = env
        .spawn(
            &["debug", "workers"],
            None,
            "--config /nonexistent/buildkitd.toml",
        )
        .wait_with_output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("buildkitd exited at start-up"), "{t}");
    assert!(
        t.contains("/nonexistent/buildkitd.toml"),
        "the log is shown: {t}"
    );
    env.assert_clean();
}

#[test]
fn daemonless_script_reports_missing_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg(SCRIPT_TIMEOUT)
        .arg("bash")
        .arg(script())
        .arg("debug")
        .arg("workers")
        .env("BUILDKITD", dir.path().join("nope"))
        .env("BUILDCTL", "/bin/true")
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("BUILDKITD"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// With stand-ins for both binaries (no root needed): the arguments reach buildctl after
/// `--addr`, its status is the script's, and a daemon that ignores SIGTERM is killed
/// after BUILDKITD_STOP_TIMEOUT.
#[test]
fn daemonless_script_passes_status_and_kills_a_stubborn_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let argsfile = dir.path().join("buildctl.args");
    let daemon = dir.path().join("fake-buildkitd");
    std::fs::write(
        &daemon,
        format!(
            "#!/bin/bash\ntrap '' TERM\necho $$ > {}\necho \"$@\"\nwhile :; do sleep 0.1; done\n",
            pidfile.display()
        ),
    )
    .unwrap();
    let ctl = dir.path().join("fake-buildctl");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/bash\n[ \"$3 $4\" = \"debug workers\" ] && exit 0\necho \"$@\" > {}\nexit 7\n",
            argsfile.display()
        ),
    )
    .unwrap();
    for f in [&daemon, &ctl] {
        let status = Command::new("chmod").arg("+x").arg(f).status().unwrap();
        assert!(status.success());
    }
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg(SCRIPT_TIMEOUT)
        .arg("bash")
        .arg(script())
        .args(["build", "--opt", "a b"])
        .env("BUILDKITD", &daemon)
        .env("BUILDCTL", &ctl)
        .env("BUILDKITD_ROOT", dir.path().join("state"))
        .env("BUILDKITD_STOP_TIMEOUT", "1")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(7), "{t}");
    assert!(t.contains("killing it"), "{t}");
    // Far below SCRIPT_TIMEOUT (a hang would end there with status 124, caught above), and
    // loose enough for a loaded CI machine.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the stubborn daemon was not killed promptly: {:?}",
        started.elapsed()
    );
    let args = std::fs::read_to_string(&argsfile).unwrap();
    assert!(args.starts_with("--addr unix://"), "{args}");
    assert!(args.trim_end().ends_with("build --opt a b"), "{args}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the fake daemon was killed and reaped"
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(
        dir.path().join("state").is_dir(),
        "the state directory is created"
    );
}
