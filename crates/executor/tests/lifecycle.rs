//! Container lifecycle: cancellation, dropped futures, concurrent runs, start-up cleanup
//! of a crashed daemon's leftovers, and per-run overhead. Root and runc required (see
//! `common`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sh;
use executor::{ExtraMount, MountSource};

#[tokio::test]
async fn cancellation_kills_the_process_within_seconds() {
    let env = env_or_skip!();
    let mut running = env.start(env.request("cancel1", sh("echo ready; exec sleep 100")));
    running.wait_ready().await;
    let start = Instant::now();
    running.cancel.cancel();
    let ran = running.finish().await;
    let took = start.elapsed();
    let e = ran.result.unwrap_err();
    assert!(e.is_cancelled(), "{e}");
    assert!(e.to_string().contains("sleep 100"), "{e}");
    assert!(took < Duration::from_secs(5), "cancellation took {took:?}");
    eprintln!("cancellation took {took:?}");
    env.assert_clean();
}

#[tokio::test]
async fn cancellation_before_start_is_clean() {
    let env = env_or_skip!();
    let running = env.start(env.request("cancel2", sh("sleep 100")));
    running.cancel.cancel();
    let e = running.finish().await.result.unwrap_err();
    assert!(e.is_cancelled(), "{e}");
    env.assert_clean();
}

#[tokio::test]
async fn dropping_the_future_cancels_and_cleans_up() {
    let env = env_or_skip!();
    let mut running = env.start(env.request("drop1", sh("echo ready; exec sleep 100")));
    running.wait_ready().await;
    assert!(
        !env.leftovers().is_empty(),
        "a running container should be visible"
    );
    drop(running);
    env.wait_clean(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_run_at_the_same_time() {
    let env = env_or_skip!();
    let shared = tempfile::tempdir().unwrap();
    let mount = ExtraMount {
        dest: "/shared".into(),
        source: MountSource::Bind {
            path: shared.path().into(),
            readonly: false,
        },
    };
    // Each waits for the other's mark: this finishes only if both run at once.
    let script = |me: &str, other: &str| {
        sh(&format!(
            "touch /shared/{me}; i=0; while [ ! -e /shared/{other} ]; do \
             i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.1; done; echo {me}-saw-{other}"
        ))
    };
    let mut a = env.request("concA", script("a", "b"));
    a.mounts = vec![mount.clone()];
    // Each container gets its own rootfs, as each run gets its own snapshot in a build.
    // (Sharing one would let the first run's mount-stub cleanup remove the second's
    // mount point from under it.)
    let other_rootfs = common::busybox_rootfs();
    let mut b = env.request("concB", script("b", "a"));
    b.rootfs = vec![snapshot::Mount::bind(
        other_rootfs.path().to_string_lossy(),
        false,
    )];
    b.mounts = vec![mount];
    let (ra, rb) = tokio::join!(env.run(a), env.run(b));
    assert_eq!(ra.ok(), "a-saw-b\n");
    assert_eq!(rb.ok(), "b-saw-a\n");
    env.assert_clean();
}

#[tokio::test]
async fn cleanup_stale_removes_a_crashed_daemons_leftovers() {
    let env = env_or_skip!();
    let state = env.state().to_path_buf();
    let runtime_root = env.exec.runtime_root().to_path_buf();

    // What a daemon killed mid-run leaves: a bundle with a mounted rootfs and a running
    // container, plus a stray mount and a stray directory.
    let bundle = state.join("stale1");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let bind = snapshot::Mount::bind(env.rootfs.path().to_string_lossy(), false);
    std::mem::forget(snapshot::mount::mount_all(&[bind], &rootfs).unwrap());
    write_config(&env, &bundle, &rootfs);
    let status = Command::new(env.exec.runtime().path())
        .arg("--root")
        .arg(&runtime_root)
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg("stale1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "runc run -d failed: {status}");
    let pid = container_pid(&env, "stale1");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    let stray_mount = state.join("junk2").join("m");
    std::fs::create_dir_all(&stray_mount).unwrap();
    let tmpfs = snapshot::Mount {
        fstype: "tmpfs".into(),
        source: "tmpfs".into(),
        options: Vec::new(),
    };
    std::mem::forget(snapshot::mount::mount_all(&[tmpfs], &stray_mount).unwrap());
    std::fs::create_dir_all(state.join("junk/sub")).unwrap();
    assert!(!env.leftovers().is_empty());

    let report = env.exec.cleanup_stale().await.unwrap();
    assert_eq!(report.containers, ["stale1"]);
    assert!(report.unmounted.contains(&rootfs), "{report:?}");
    assert!(report.unmounted.contains(&stray_mount), "{report:?}");
    assert_eq!(report.removed.len(), 3, "{report:?}");
    env.assert_clean();
    // The container's process is gone.
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived"
    );
    // Nothing to do the second time.
    assert!(env.exec.cleanup_stale().await.unwrap().is_empty());
}

/// A `config.json` from `runc spec`, running `sleep 100` on `rootfs`.
fn write_config(env: &common::Env, bundle: &Path, rootfs: &Path) {
    let status = Command::new(env.exec.runtime().path())
        .args(["spec", "--bundle"])
        .arg(bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", "100"]);
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

fn container_pid(env: &common::Env, id: &str) -> u64 {
    let out = Command::new(env.exec.runtime().path())
        .arg("--root")
        .arg(env.exec.runtime_root())
        .args(["state", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    state["pid"].as_u64().unwrap()
}

#[tokio::test]
async fn per_run_overhead_of_true() {
    let env = env_or_skip!();
    let mut times = Vec::new();
    for n in 0..10 {
        let start = Instant::now();
        env.run(env.request(&format!("true{n}"), vec!["true".into()]))
            .await
            .ok();
        times.push(start.elapsed());
    }
    times.sort();
    let total: Duration = times.iter().sum();
    eprintln!(
        "per-run overhead of `true` over 10 runs: min {:?}, median {:?}, max {:?}, mean {:?}",
        times[0],
        times[5],
        times[9],
        total / 10
    );
    assert!(
        times[5] < Duration::from_secs(2),
        "median run took {:?}",
        times[5]
    );
    env.assert_clean();
}
