//! `http://` and `git://` sources through the real binaries: `buildctl build` of an LLB
//! that copies a file served by a loopback HTTP server and a repository served by a
//! loopback `git daemon`, exported to a local directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, definition, text, wait_for};
use llb::{CopyOptions, FileAction};

/// Serves `body` for any path but `/missing` (404), until the process ends.
fn http_server(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut request = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if request.is_empty() {
                        request = line.clone();
                    }
                    line.clear();
                }
                let (status, body) = if request.contains(" /missing ") {
                    ("404 Not Found", "")
                } else {
                    ("200 OK", body)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

struct GitDaemon(Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git daemon` exporting the repositories under `base`; returns it and its port.
fn git_daemon(base: &Path) -> (GitDaemon, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    let d = GitDaemon(child);
    wait_for(Duration::from_secs(10), "git daemon to listen", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (d, port)
}

#[test]
fn http_and_git_sources_through_the_daemon() {
    if !common::require_root("http_and_git_sources_through_the_daemon") {
        return;
    }
    if Command::new("git").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "git is missing in CI");
        eprintln!("SKIPPED: git is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let d = Daemon::start(work.path());

    let base = work.path().join("repos");
    let repo = base.join("project");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/main.txt"), "main\n").unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    git(&repo, &["tag", "v1"]);
    let (_git, port) = git_daemon(&base);
    let web = http_server("downloaded\n");

    let copy = CopyOptions {
        create_dest_path: true,
        dir_copy_contents: true,
        ..CopyOptions::default()
    };
    let file = llb::Http::new(&format!("{web}/files/tool.txt"))
        .perm(0o755)
        .state();
    let tree = llb::git(&format!("git://127.0.0.1:{port}/project"), "v1:src");
    let result = llb::scratch().file(
        &FileAction::copy(&file, "/tool.txt", "/tool.txt", copy.clone())
            .and_copy(&tree, "/", "/src", copy),
        llb::OpOptions::new(),
    );
    let dest = work.path().join("out");
    let out = d.buildctl(
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
        Some(&definition(&result)),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("tool.txt")).unwrap(),
        "downloaded\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("src/main.txt")).unwrap(),
        "main\n"
    );

    // A failing download fails the build, naming the URL and the status.
    let missing = format!("{web}/missing");
    let out = d.buildctl(
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
        Some(&definition(&llb::http(&missing))),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{missing}: 404 Not Found")),
        "{}",
        text(&out)
    );
    d.stop();
}

/// ADD of a URL (with and without `--checksum`, `--chmod`) and of a git repository
/// (`#ref:subdir`, `--keep-git-dir`) in a Dockerfile.
#[test]
fn dockerfile_add_of_urls_and_git_repositories() {
    if !common::require_root("dockerfile_add_of_urls_and_git_repositories") {
        return;
    }
    let url = http_server("served over http\n");
    let work = tempfile::tempdir().unwrap();
    let repos = work.path().join("repos");
    let repo = repos.join("proj.git");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    std::fs::write(repo.join("sub/inner.txt"), "in the subdir\n").unwrap();
    std::fs::write(repo.join("top.txt"), "v1\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("top.txt"), "v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let (_daemon, port) = git_daemon(&repos);

    let sum = {
        let mut h = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        h.stdin
            .take()
            .unwrap()
            .write_all(b"served over http\n")
            .unwrap();
        let o = h.wait_with_output().unwrap();
        String::from_utf8(o.stdout).unwrap()[..64].to_string()
    };
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             ADD {url}/files/hello.txt /dl/\n\
             ADD --checksum=sha256:{sum} --chmod=0644 {url}/files/hello.txt /pinned.txt\n\
             ADD git://127.0.0.1:{port}/proj.git#v1 /tagged\n\
             ADD git://127.0.0.1:{port}/proj.git#main:sub /subdir\n\
             ADD --keep-git-dir=true git://127.0.0.1:{port}/proj.git#main /withgit\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(work.path());
    let out_dir = work.path().join("out");
    let c = ctx.display().to_string();
    let out = d.buildctl(
        &[
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={c}"),
            "--local",
            &format!("dockerfile={c}"),
            "--output",
            &format!("type=local,dest={}", out_dir.display()),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let read = |p: &str| std::fs::read_to_string(out_dir.join(p)).unwrap();
    assert_eq!(read("dl/hello.txt"), "served over http\n");
    assert_eq!(read("pinned.txt"), "served over http\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out_dir.join("pinned.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
    assert_eq!(read("tagged/top.txt"), "v1\n");
    assert!(!out_dir.join("tagged/.git").exists());
    assert_eq!(read("subdir/inner.txt"), "in the subdir\n");
    assert!(!out_dir.join("subdir/top.txt").exists());
    assert_eq!(read("withgit/top.txt"), "v2\n");
    assert!(out_dir.join("withgit/.git").is_dir());

    // a wrong checksum fails, naming the URL
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum=sha256:{} {url}/files/hello.txt /x\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = d.buildctl(
        &[
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={c}"),
            "--local",
            &format!("dockerfile={c}"),
        ],
        None,
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("hello.txt"), "{t}");
}
