//! Crash recovery with the real binaries: `kill -9` of `buildkitd` while a RUN step's
//! container runs, then a restart on the same root. The restarted daemon must reclaim
//! everything the dead one left (its mounts, in or out of the root; the runc container
//! and its processes; bundles, temporary directories and unfinished snapshots) before it
//! answers, and the same build must then succeed. Ten times in a row on one root, since
//! leftovers of one crash can break the recovery from the next.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, definition, text, wait_for};

const ITERATIONS: usize = 10;
/// How long the slow step may take to be seen running.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The executor's runc `--root` under the daemon root (`executor/` is the executor's
/// state directory, `runc` its runtime root: see crates/executor and crates/worker).
fn runc_root(root: &Path) -> PathBuf {
    root.join("executor").join("runc")
}

fn runc(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(runc_root(root))
        .args(args)
        .output()
        .unwrap()
}

/// Ids of the containers runc knows under the daemon's runtime root.
fn containers(root: &Path) -> Vec<String> {
    if !runc_root(root).exists() {
        return Vec::new();
    }
    let out = runc(root, &["list", "-q"]);
    assert!(out.status.success(), "runc list: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A host process, identified by pid and start time so that a reused pid is not
/// mistaken for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: u64,
    cmdline: String,
}

/// `(state, start time)` from `/proc/<pid>/stat`, if the process exists.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of the whole line is the start time; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn proc_of(pid: u32) -> Option<Proc> {
    let (_, start) = stat(pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some(Proc {
        pid,
        start,
        cmdline: cmdline.trim().to_string(),
    })
}

/// Whether `p` still runs: the same process exists and is not a zombie (a zombie is dead
/// and only waits for whoever adopted it to reap it).
fn alive(p: &Proc) -> bool {
    stat(p.pid).is_some_and(|(state, start)| start == p.start && state != 'Z')
}

/// The processes of container `id` (host pids), from `runc ps`.
fn container_procs(root: &Path, id: &str) -> Vec<Proc> {
    let out = runc(root, &["ps", "--format", "json", id]);
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter_map(proc_of)
        .collect()
}

/// Waits until the slow step's container runs its `sleep`; returns the container id and
/// its processes.
fn wait_until_running(root: &Path, build: &mut std::process::Child) -> (String, Vec<Proc>) {
    wait_for(RUN_TIMEOUT, "the RUN step's sleep to start", || {
        if let Ok(Some(status)) = build.try_wait() {
            panic!("the build ended ({status}) before its step was seen running");
        }
        containers(root).into_iter().find_map(|id| {
            let procs = container_procs(root, &id);
            procs
                .iter()
                .any(|p| p.cmdline.starts_with("sleep"))
                .then_some((id, procs))
        })
    })
}

/// Lines of `/proc/self/mountinfo` that concern `root`: a mount point at or below it, or
/// a source, root or option naming a path below it (an overlay's `lowerdir=`, a bind of a
/// snapshot directory elsewhere).
fn mounts_of(root: &Path) -> Vec<String> {
    let root_str = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let point = l
                .split(' ')
                .nth(4)
                .unwrap_or_default()
                .replace("\\040", " ");
            Path::new(&point).starts_with(root) || l.contains(&format!("{root_str}/"))
        })
        .map(String::from)
        .collect()
}

/// The entries of `dir` (file names), empty if it does not exist.
fn entries(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

/// Snapshot directories: one per snapshot record the daemon keeps.
fn snapshot_dirs(root: &Path) -> BTreeSet<String> {
    entries(&root.join("snapshots"))
}

/// The slow step: writes a marker, sleeps (it is killed long before the sleep ends),
/// then writes its output. `secs` = 0 is the variant that runs to completion. A
/// read-only bind of the base image makes the step use a mounted view under the root as
/// well as its own writable rootfs, as `RUN --mount=from=...` does.
fn build_definition(busybox: &str, i: usize, secs: u32) -> Vec<u8> {
    let base = llb::image(busybox).env("PATH", llb::DEFAULT_PATH);
    let step = base
        .run()
        .shell(&format!(
            "echo started-{i} > /x; test -x /ro/bin/busybox; sleep {secs}; echo done-{i} > /out"
        ))
        .mount(llb::Mount::bind("/ro", &base).readonly())
        .build()
        .root();
    let copy = llb::CopyOptions {
        create_dest_path: true,
        ..llb::CopyOptions::default()
    };
    let result = llb::scratch().file(
        &llb::FileAction::copy(&step, "/x", "/x", copy.clone())
            .and_copy(&step, "/out", "/out", copy),
        llb::OpOptions::new(),
    );
    definition(&result)
}

/// Runs the quick variant to completion and checks its output.
fn build_to_completion(d: &Daemon, busybox: &str, i: usize, work: &Path) {
    let dest = work.join(format!("out-{i}"));
    let out = d.buildctl(
        &[
            "build",
            "--progress",
            "plain",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
        Some(&build_definition(busybox, i, 0)),
    );
    assert!(out.status.success(), "build {i}: {}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("x")).unwrap(),
        format!("started-{i}\n")
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("out")).unwrap(),
        format!("done-{i}\n")
    );
}

/// What the dead daemon left, as seen right after the kill. Asserting that there is some
/// proves the checks after the restart look where leaks would be.
fn assert_something_to_reclaim(root: &Path, id: &str) {
    let mounts = mounts_of(root);
    assert!(
        mounts
            .iter()
            .any(|l| l.contains(&format!("/executor/{id}/"))),
        "the killed container's rootfs should still be mounted: {mounts:#?}"
    );
    assert!(
        mounts.iter().any(|l| l.contains(" overlay ")),
        "an overlay rootfs should be left: {mounts:#?}"
    );
    let tmp = root.join("tmp");
    assert!(
        mounts.iter().any(|l| l
            .split(' ')
            .nth(4)
            .is_some_and(|p| Path::new(p).starts_with(&tmp))),
        "the read-only view should still be mounted under the root's tmp/: {mounts:#?}"
    );
    assert!(containers(root).contains(&id.to_string()));
}

/// Everything the dead daemon left is gone.
fn assert_reclaimed(root: &Path, before: &BTreeSet<String>, procs: &[Proc], d: &Daemon, i: usize) {
    let ctx = || format!("iteration {i}; daemon log:\n{}", d.log_tail());
    let mounts = mounts_of(root);
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}\n{}", ctx());
    let left = containers(root);
    assert!(left.is_empty(), "containers left: {left:?}\n{}", ctx());
    let state = entries(&runc_root(root));
    assert!(state.is_empty(), "runc state left: {state:?}\n{}", ctx());
    let running: Vec<&Proc> = procs.iter().filter(|p| alive(p)).collect();
    assert!(
        running.is_empty(),
        "container processes still run: {running:?}\n{}",
        ctx()
    );
    let bundles: Vec<String> = entries(&root.join("executor"))
        .into_iter()
        .filter(|n| n != "runc")
        .collect();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}\n{}", ctx());
    let tmp = entries(&root.join("tmp"));
    assert!(
        tmp.is_empty(),
        "temporary mount dirs left: {tmp:?}\n{}",
        ctx()
    );
    let ingest = entries(&root.join("content").join("ingest"));
    assert!(ingest.is_empty(), "ingests left: {ingest:?}\n{}", ctx());
    let stray: Vec<String> = entries(root)
        .into_iter()
        .filter(|n| n.starts_with(".tmp") || n.starts_with(".overlay-probe"))
        .collect();
    assert!(
        stray.is_empty(),
        "temporary dirs left: {stray:?}\n{}",
        ctx()
    );
    // The killed step only had uncommitted snapshots (its rootfs, its view); they are
    // garbage now, and their directories must not pile up crash after crash.
    let after = snapshot_dirs(root);
    assert_eq!(
        &after,
        before,
        "snapshot directories before the crashed build vs after the restart\n{}",
        ctx()
    );
}

/// Dropped after the daemon and before the temporary directory: if the test failed with
/// leftovers, removes the containers and detaches the mounts, so that the directory's
/// removal does not delete through a mount and no `sleep` outlives the test.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        let root = &self.0;
        for id in containers(root) {
            let _ = runc(root, &["delete", "--force", &id]);
        }
        let mut points: Vec<String> = mounts_of(root)
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|p| Path::new(p).starts_with(root))
            .collect();
        // newest (and so innermost) first
        points.reverse();
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

#[test]
fn kill_9_mid_run_then_restart_reclaims_and_rebuilds() {
    if !common::require_root("kill_9_mid_run_then_restart_reclaims_and_rebuilds") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();

    let root = dir.path().canonicalize().unwrap().join("root");
    let _sweep = Sweep(root.clone());
    let mut d = Daemon::start(dir.path());
    // Pull and unpack the image once, so that the crashed builds only create
    // uncommitted snapshots, which are what the restart must drop.
    build_to_completion(&d, &busybox, 1000, work.path());

    for i in 0..ITERATIONS {
        let t = Instant::now();
        let before = snapshot_dirs(&root);
        let def = build_definition(&busybox, i, 30);
        let mut build = d.spawn_buildctl(&["build", "--progress", "plain"], Some(&def));
        let (id, procs) = wait_until_running(&root, &mut build);

        d.kill9();
        let _ = build.kill();
        let out = build.wait_with_output().unwrap();
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            procs.iter().any(alive),
            "the container outlives the daemon until the restart: {procs:?}"
        );
        assert_something_to_reclaim(&root, &id);

        d = Daemon::start(dir.path());
        assert_reclaimed(&root, &before, &procs, &d, i);
        build_to_completion(&d, &busybox, i, work.path());
        eprintln!("iteration {i}: {:?}", t.elapsed());
    }
    d.stop();
    let mounts = mounts_of(&root);
    assert!(mounts.is_empty(), "mounts after a clean stop: {mounts:#?}");
    eprintln!(
        "{ITERATIONS} crashes and recoveries in {:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_mid_run_cancels_the_build_and_releases_everything() {
    if !common::require_root("sigterm_mid_run_cancels_the_build_and_releases_everything") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("root");
    let _sweep = Sweep(root.clone());
    let d = Daemon::start(dir.path());
    let def = build_definition(&busybox, 0, 60);
    let mut build = d.spawn_buildctl(&["build", "--progress", "plain"], Some(&def));
    let (_, procs) = wait_until_running(&root, &mut build);

    // SIGTERM: the running step is cancelled rather than waited for, and the daemon exits
    // cleanly (stop() checks the exit status and that the socket is gone).
    let t = Instant::now();
    d.stop();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "shutdown waited for the 60 s step: {:?}",
        t.elapsed()
    );
    let out = build.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !procs.iter().any(alive),
        "the step's processes outlive the daemon: {procs:?}"
    );
    assert_eq!(containers(&root), Vec::<String>::new());
    let mounts = mounts_of(&root);
    assert!(mounts.is_empty(), "mounts after SIGTERM: {mounts:#?}");
}
