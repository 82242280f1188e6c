//! Crash safety (acceptance test): a process killed with SIGKILL in the middle of an
//! ingest leaves no blob under the digest, a metadata DB that opens cleanly with what it
//! had committed, and an ingest temp file that the next open removes.
//!
//! The test re-executes its own binary as the child (selected by an environment
//! variable), so no helper binary is needed.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{data, redb_store};
use oci::Digest;

const TEST_NAME: &str = "killed_ingest_leaves_no_partial_blob";
const ROOT_ENV: &str = "CONTENT_CRASH_CHILD_ROOT";
const SEED_ENV: &str = "CONTENT_CRASH_CHILD_SEED";
const SIZE: usize = 4 << 20;
const CHUNK: usize = 32 << 10;
/// The parent kills the child once its temp file has at least this much.
const KILL_AT: u64 = 256 << 10;
const SIGKILL: i32 = 9;

#[test]
fn killed_ingest_leaves_no_partial_blob() {
    if let Ok(root) = std::env::var(ROOT_ENV) {
        child(Path::new(&root));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut committed = Vec::new();
    for round in 0..5u64 {
        let seed = 1000 + round;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(ROOT_ENV, root)
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let ingest = root.join("content/ingest");
        let deadline = Instant::now() + Duration::from_secs(60);
        while largest_file(&ingest) < KILL_AT {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: child exited before being killed: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: child never wrote"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(SIGKILL), "round {round}: {status}");

        let full = data(seed, SIZE);
        let digest = Digest::of(&full);
        let blob_path = root.join("content/blobs/sha256").join(digest.hex());
        // the crash left a partial temp file, and nothing under the digest
        assert!(largest_file(&ingest) >= KILL_AT, "round {round}");
        assert!((largest_file(&ingest) as usize) < SIZE, "round {round}");
        assert!(!blob_path.exists(), "round {round}");

        // restart: the DB opens, the sweep empties the ingest dir
        let store = redb_store(root);
        assert_eq!(
            std::fs::read_dir(&ingest).unwrap().count(),
            0,
            "round {round}"
        );
        assert!(!store.exists(&digest).unwrap());
        let lease = format!("crash-{seed}");
        assert!(
            store.lease(&lease).unwrap().is_some(),
            "round {round}: lease lost"
        );
        assert!(store.lease_blobs(&lease).unwrap().is_empty());
        for d in &committed {
            store.verify(d).unwrap();
        }

        // a new ingest of the same content succeeds
        let d = store
            .ingest_in_lease(&lease, &full[..], Some((digest, SIZE as u64)))
            .unwrap();
        assert_eq!(d, digest);
        store.verify(&d).unwrap();
        assert_eq!(store.lease_blobs(&lease).unwrap(), vec![digest]);
        committed.push(d);
        drop(store); // the next child opens the same database
    }
    let store = redb_store(root);
    assert_eq!(store.list().unwrap().len(), 5);
    assert_eq!(store.leases().unwrap().len(), 5);
}

/// Size of the largest file in `dir` (0 if none).
fn largest_file(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// The child: opens the store as the daemon would, creates a lease, and writes a large
/// blob slowly, flushing each chunk to the temp file, until it is killed.
fn child(root: &Path) -> ! {
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let store = redb_store(root);
    let lease = store
        .lease_guard(&format!("crash-{seed}"), None)
        .unwrap()
        .keep();
    let mut w = store.writer().unwrap().in_lease(lease);
    for chunk in data(seed, SIZE).chunks(CHUNK) {
        w.write_all(chunk).unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Not reached in a passing run: the parent kills the child long before this.
    let _ = w.commit(None);
    std::process::exit(3);
}
