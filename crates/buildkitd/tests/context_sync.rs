//! Incremental build contexts with the real binaries: a second build of an unchanged
//! `--local context=DIR` transfers no file data and reuses the synced ref, a one-file
//! change transfers that file only, and a deleted file leaves the result.
//!
//! The daemon helper lives here rather than in a shared module so that this test does
//! not depend on how other test files set theirs up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn buildkitd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildkitd"))
}

/// `buildctl` is another package's binary: a workspace build puts it next to ours.
fn buildctl_bin() -> PathBuf {
    let p = buildkitd_bin().with_file_name("buildctl");
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build -p buildctl)",
        p.display()
    );
    p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `buildkitd` on a private socket and root under a temporary directory; stopped (and
/// its log shown if the test failed) when dropped.
struct Daemon {
    child: Child,
    addr: String,
    root: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join("buildkitd.log");
        // Appended to, so that a restart keeps one log.
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let addr = format!("unix://{}", dir.join("buildkitd.sock").display());
        let root = dir.join("root");
        let child = Command::new(buildkitd_bin())
            .arg("--root")
            .arg(&root)
            .arg("--addr")
            .arg(&addr)
            .arg("--debug")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            addr,
            root,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("buildkitd exited with {status}:\n{}", d.log_tail());
            }
            if d.buildctl(&["debug", "workers"], None).status.success() {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "buildkitd did not answer:\n{}",
                d.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn buildctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(buildctl_bin())
            .arg("--addr")
            .arg(&self.addr)
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
        child.wait_with_output().unwrap()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Snapshot directories in the root: a build that reuses the synced ref and hits the
    /// cache for everything else adds none.
    fn snapshot_dirs(&self) -> usize {
        std::fs::read_dir(self.root.join("snapshots"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().parse::<u64>().is_ok())
            .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- buildkitd log ----\n{}", self.log_tail());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes the build reported on its finished `transferring context:` line, as
/// printed: `100kB`, `100.02kB` or `15B`, or nothing at all for zero (upstream's printer
/// leaves a zero count out, so then a duration or `done` follows the colon).
fn transferred(out: &str) -> f64 {
    const PREFIX: &str = "transferring context: ";
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(PREFIX) && l.ends_with(" done"))
        .collect();
    assert_eq!(lines.len(), 1, "one finished transfer status:\n{out}");
    let rest = &lines[0][lines[0].find(PREFIX).unwrap() + PREFIX.len()..];
    let token = rest.split_whitespace().next().unwrap_or_default();
    let Some(number) = token.strip_suffix('B') else {
        return 0.0;
    };
    let (digits, scale) = [("k", 1e3), ("M", 1e6), ("G", 1e9)]
        .iter()
        .find_map(|(prefix, scale)| number.strip_suffix(prefix).map(|d| (d, *scale)))
        .unwrap_or((number, 1.0));
    let value: f64 = digits
        .parse()
        .unwrap_or_else(|e| panic!("{token:?} in {:?}: {e}", lines[0]));
    value * scale
}

/// Whether a printed size shows `bytes` (printers round to three or four digits).
fn shows(printed: f64, bytes: u64) -> bool {
    (printed - bytes as f64).abs() <= bytes as f64 * 0.005
}

/// Every regular file under `dir`, by relative path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn unchanged_context_transfers_nothing_and_changes_transfer_only_themselves() {
    if !is_root() {
        eprintln!(
            "\n**********\nSKIPPED: needs root (context sync mounts snapshots)\n**********\n"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());

    let context = tmp.path().join("context");
    std::fs::create_dir_all(context.join("sub")).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(context.join("big.bin"), &big).unwrap();
    std::fs::write(context.join("a.txt"), "hello\n").unwrap();
    std::fs::write(context.join("sub/b.txt"), "world\n").unwrap();
    std::fs::write(context.join("c.txt"), "delete me\n").unwrap();

    let local = llb::Local::new("context").state();
    let copy = llb::CopyOptions {
        dir_copy_contents: true,
        create_dest_path: true,
        ..llb::CopyOptions::default()
    };
    let result = llb::scratch().file(
        &llb::FileAction::copy(&local, "/", "/", copy),
        llb::OpOptions::new(),
    );
    let def = result
        .marshal(&llb::MarshalOptions::default())
        .unwrap()
        .encode_to_vec();

    let mut n = 0;
    let mut build = |d: &Daemon| {
        n += 1;
        let out_dir = tmp.path().join(format!("out{n}"));
        let out = d.buildctl(
            &[
                "build",
                "--progress",
                "plain",
                "--local",
                &format!("context={}", context.display()),
                "--output",
                &format!("type=local,dest={}", out_dir.display()),
            ],
            Some(&def),
        );
        let t = text(&out);
        assert!(out.status.success(), "build {n}:\n{t}");
        (transferred(&t), files(&out_dir), t)
    };

    let expected = |a: &str, with_c: bool| {
        let mut v = vec![
            ("a.txt".to_string(), a.as_bytes().to_vec()),
            ("big.bin".to_string(), big.clone()),
            ("sub/b.txt".to_string(), b"world\n".to_vec()),
        ];
        if with_c {
            v.push(("c.txt".to_string(), b"delete me\n".to_vec()));
        }
        v.sort();
        v
    };

    let (size, got, t) = build(&d);
    assert!(shows(size, 100_000 + 6 + 6 + 10), "everything\n{t}");
    assert_eq!(got, expected("hello\n", true));
    let snapshots = d.snapshot_dirs();

    let (size, got, t) = build(&d);
    assert!(shows(size, 0), "unchanged: nothing transferred\n{t}");
    assert_eq!(got, expected("hello\n", true));
    assert_eq!(
        d.snapshot_dirs(),
        snapshots,
        "unchanged: the synced ref is reused, no new snapshot\n{t}"
    );

    std::fs::write(context.join("a.txt"), "hello, changed\n").unwrap();
    let (size, got, t) = build(&d);
    assert!(shows(size, 15), "only the changed file\n{t}");
    assert_eq!(got, expected("hello, changed\n", true));

    std::fs::remove_file(context.join("c.txt")).unwrap();
    let (size, got, t) = build(&d);
    assert!(shows(size, 0), "a deletion transfers nothing\n{t}");
    assert_eq!(got, expected("hello, changed\n", false), "c.txt is gone");

    // And the deletion's result is itself reused next time.
    let snapshots = d.snapshot_dirs();
    let (size, got, t) = build(&d);
    assert!(shows(size, 0), "{t}");
    assert_eq!(got, expected("hello, changed\n", false));
    assert_eq!(d.snapshot_dirs(), snapshots, "{t}");

    // The synced directory and the mapping to its ref survive a restart.
    drop(d);
    let d = Daemon::start(tmp.path());
    let (size, got, t) = build(&d);
    assert!(shows(size, 0), "after a restart\n{t}");
    assert_eq!(got, expected("hello, changed\n", false));
    assert_eq!(d.snapshot_dirs(), snapshots, "after a restart\n{t}");
}
