//! Helpers shared by the integration tests: the root check, a temp-dir fixture that
//! never leaves a mount behind, and a mountinfo reader.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metadata::{MemStore, MetadataStore};

/// Whether the test may run: true as root. Without root it fails when `CI` is set (CI
/// must run everything) and otherwise skips loudly.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root to mount, and CI is set: refusing to skip"
    );
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root to mount");
    false
}

/// A fresh in-memory metadata store.
pub fn mem() -> Arc<dyn MetadataStore> {
    Arc::new(MemStore::default())
}

/// Undoes the `\NNN` octal escapes of `/proc/self/mountinfo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.len() >= i + 4 {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A temporary directory for one test. Dropping it first detaches anything still mounted
/// under it (a failed test must not leave mounts, nor delete through one).
pub struct Fixture {
    /// Removed on drop, after the mounts under it are gone.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
        Fixture { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshotter root.
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// A new, empty mount target.
    pub fn target(&self, name: &str) -> PathBuf {
        let t = self.path.join("mnt").join(name);
        std::fs::create_dir_all(&t).expect("create target");
        t
    }

    /// Fails if anything is still mounted under the fixture.
    pub fn assert_no_mounts(&self) {
        let left = mounts_under(&self.path);
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for m in mounts_under(&self.path).iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// The raw OS error of writing `data` to `path`, or `None` if it succeeded.
pub fn write_errno(path: &Path, data: &[u8]) -> Option<i32> {
    std::fs::write(path, data)
        .err()
        .and_then(|e| e.raw_os_error())
}

pub fn read(path: &Path) -> String {
    String::from_utf8_lossy(
        &std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .into_owned()
}
