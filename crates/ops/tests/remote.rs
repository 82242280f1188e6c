//! `http(s)://` and `git://` sources, solved on a real worker (overlayfs) against servers
//! on loopback: a small HTTP server in a thread, and `git daemon` over a repository made
//! here.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cached, ran, solve_with};
use llb::{CopyOptions, FileAction, State};
use ops::{OpsContext, Ref};
use solver::Solver;

struct Env {
    _root: tempfile::TempDir,
    _context: tempfile::TempDir,
    ctx: Arc<OpsContext>,
    solver: Solver<Ref>,
}

/// A worker and solver, or `None` (loudly) where this machine cannot run them; in CI that
/// is a failure. No registry or image: these sources need neither.
async fn env() -> Option<Env> {
    if !common::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "remote source tests need root in CI"
        );
        eprintln!("SKIPPED: remote source tests need root");
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let context = tempfile::tempdir().unwrap();
    let (ctx, solver) = common::open(root.path(), context.path()).await;
    Some(Env {
        _root: root,
        _context: context,
        ctx,
        solver,
    })
}

impl Env {
    async fn solve(
        &self,
        st: &State,
    ) -> (Result<Ref, String>, Vec<proto::control::StatusResponse>) {
        let (r, events) = solve_with(&self.ctx, &self.solver, st).await;
        (r.map_err(|e| e.to_string()), events)
    }

    /// Runs `f` on a read-only mount of `r`.
    fn with_view<T>(&self, r: &Ref, f: impl FnOnce(&Path) -> T) -> T {
        let m = ops::mount_view(&self.ctx, r).unwrap();
        f(m.path())
    }

    fn read(&self, r: &Ref, path: &str) -> Option<String> {
        common::read(&self.ctx, r, path).map(|b| String::from_utf8(b).unwrap())
    }

    fn names(&self, r: &Ref) -> Vec<String> {
        self.with_view(r, |dir| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        })
    }
}

fn copy_opts() -> CopyOptions {
    CopyOptions {
        create_dest_path: true,
        ..CopyOptions::default()
    }
}

// ---- HTTP ----

#[derive(Default)]
struct Served {
    body: Vec<u8>,
    last_modified: Option<String>,
    disposition: Option<String>,
    /// Send an `ETag` (derived from the body) and answer `If-None-Match` with 304.
    etag: bool,
    /// Paths requested, in order.
    requests: Vec<String>,
    /// How many 304 answers were sent.
    not_modified: usize,
}

/// A tiny HTTP/1.1 server: `GET /missing` is 404, anything else answers `body`.
struct HttpServer {
    addr: String,
    state: Arc<Mutex<Served>>,
}

impl HttpServer {
    fn start(body: &str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(Served {
            body: body.as_bytes().to_vec(),
            ..Served::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        HttpServer { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_body(&self, body: &str) {
        self.state.lock().unwrap().body = body.as_bytes().to_vec();
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

fn serve(conn: TcpStream, state: &Mutex<Served>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut if_none_match = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("if-none-match")
            {
                if_none_match = Some(v.trim().to_string());
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (status, body, extra) = {
            let mut s = state.lock().unwrap();
            s.requests.push(path.clone());
            let etag = format!("\"{}\"", &oci::Digest::of(&s.body).hex()[..16]);
            if path == "/missing" {
                ("404 Not Found", b"no".to_vec(), String::new())
            } else if s.etag && if_none_match.as_deref() == Some(etag.as_str()) {
                s.not_modified += 1;
                ("304 Not Modified", Vec::new(), format!("ETag: {etag}\r\n"))
            } else {
                let mut extra = String::new();
                if s.etag {
                    extra.push_str(&format!("ETag: {etag}\r\n"));
                }
                if let Some(lm) = &s.last_modified {
                    extra.push_str(&format!("Last-Modified: {lm}\r\n"));
                }
                if let Some(d) = &s.disposition {
                    extra.push_str(&format!("Content-Disposition: {d}\r\n"));
                }
                ("200 OK", s.body.clone(), extra)
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{extra}\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_source_downloads_keys_by_content_and_checks_checksums() {
    let Some(env) = env().await else { return };
    let server = HttpServer::start("hello v1\n");
    server.state.lock().unwrap().last_modified = Some("Wed, 21 Oct 2015 07:28:00 GMT".into());
    let url = server.url("/files/tool.sh");

    // The file alone: its name, mode, owner and time.
    let src = llb::Http::new(&url).perm(0o750).owner(1000, 1001).state();
    let (r, _) = env.solve(&src).await;
    let r = r.unwrap();
    assert_eq!(env.names(&r), ["tool.sh"]);
    let md = env.with_view(&r, |d| std::fs::metadata(d.join("tool.sh")).unwrap());
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!(md.mtime(), 1_445_412_480);
    assert_eq!(env.read(&r, "tool.sh").unwrap(), "hello v1\n");

    // Defaults: mode 0600, the epoch without Last-Modified; a name from the attribute.
    server.state.lock().unwrap().last_modified = None;
    let (r, _) = env
        .solve(&llb::Http::new(&url).filename("renamed").state())
        .await;
    let r = r.unwrap();
    assert_eq!(env.names(&r), ["renamed"]);
    let md = env.with_view(&r, |d| std::fs::metadata(d.join("renamed")).unwrap());
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), 0);

    // Copied into scratch; a second solve with the same content is cached.
    let build = |url: &str| {
        let src = llb::Http::new(url).state();
        llb::scratch().file(
            &FileAction::copy(&src, "/tool.sh", "/bin/tool.sh", copy_opts()),
            llb::OpOptions::new().custom_name("copy tool"),
        )
    };
    let (r, events) = env.solve(&build(&url)).await;
    assert_eq!(env.read(&r.unwrap(), "bin/tool.sh").unwrap(), "hello v1\n");
    assert_eq!(ran(&events), ["copy tool", url.as_str()], "{events:?}");
    let before = server.requests();
    let (r, events) = env.solve(&build(&url)).await;
    assert_eq!(env.read(&r.unwrap(), "bin/tool.sh").unwrap(), "hello v1\n");
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));
    assert!(cached(&events).contains(&url), "{:?}", cached(&events));
    // The key needed the content: one request, and only one.
    assert_eq!(server.requests(), before + 1);

    // Changed content runs again, and is downloaded once for key and result.
    server.set_body("hello v2\n");
    let before = server.requests();
    let (r, events) = env.solve(&build(&url)).await;
    assert_eq!(env.read(&r.unwrap(), "bin/tool.sh").unwrap(), "hello v2\n");
    assert_eq!(ran(&events), ["copy tool", url.as_str()], "{events:?}");
    assert_eq!(server.requests(), before + 1);

    // A pinned checksum: a mismatch names the URL and both digests.
    let good = format!("sha256:{}", oci::Digest::of(b"hello v2\n").hex());
    let bad = format!("sha256:{}", oci::Digest::of(b"something else").hex());
    let (r, _) = env
        .solve(&llb::Http::new(&url).checksum(&bad).state())
        .await;
    let err = r.unwrap_err();
    assert!(
        err.contains("digest mismatch")
            && err.contains(&url)
            && err.contains(&bad)
            && err.contains(&good),
        "{err}"
    );
    // The right one builds, and once cached the key needs no request at all.
    let pinned = llb::Http::new(&url).checksum(&good).state();
    let (r, _) = env.solve(&pinned).await;
    assert_eq!(env.read(&r.unwrap(), "tool.sh").unwrap(), "hello v2\n");
    let before = server.requests();
    let (r, events) = env.solve(&pinned).await;
    assert_eq!(env.read(&r.unwrap(), "tool.sh").unwrap(), "hello v2\n");
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));
    assert_eq!(server.requests(), before);

    // Content-Disposition names the file when no attribute does.
    server.state.lock().unwrap().disposition = Some("attachment; filename=\"real.tar\"".into());
    let (r, _) = env.solve(&llb::http(&server.url("/dl?id=3"))).await;
    assert_eq!(env.names(&r.unwrap()), ["real.tar"]);

    // A failing status names the URL and the status.
    let missing = server.url("/missing");
    let (r, _) = env.solve(&llb::http(&missing)).await;
    let err = r.unwrap_err();
    assert!(
        err.contains(&format!("http GET {missing}: 404 Not Found")),
        "{err}"
    );

    // Nothing listening: a clear error, not a hang.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/x", l.local_addr().unwrap())
    };
    let (r, _) = env.solve(&llb::http(&closed)).await;
    let err = r.unwrap_err();
    assert!(err.contains(&format!("http GET {closed}")), "{err}");

    // With an ETag, an unchanged file is not downloaded again to make the key.
    {
        let mut s = server.state.lock().unwrap();
        s.etag = true;
        s.disposition = None;
    }
    let tagged = llb::http(&server.url("/tagged"));
    let (r, _) = env.solve(&tagged).await;
    assert_eq!(env.read(&r.unwrap(), "tagged").unwrap(), "hello v2\n");
    let (r, events) = env.solve(&tagged).await;
    assert_eq!(env.read(&r.unwrap(), "tagged").unwrap(), "hello v2\n");
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));
    assert_eq!(server.state.lock().unwrap().not_modified, 1);
    // A new version has a new ETag: downloaded, and built again.
    server.set_body("hello v3\n");
    let (r, events) = env.solve(&tagged).await;
    assert_eq!(env.read(&r.unwrap(), "tagged").unwrap(), "hello v3\n");
    assert_eq!(ran(&events), [server.url("/tagged")]);
    assert_eq!(server.state.lock().unwrap().not_modified, 1);
    // The key of the old version is still known by its ETag.
    server.set_body("hello v2\n");
    let (r, events) = env.solve(&tagged).await;
    assert_eq!(env.read(&r.unwrap(), "tagged").unwrap(), "hello v2\n");
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));

    // Downloads do not outlive the solves that made them.
    let leftovers: Vec<_> = std::fs::read_dir(env.ctx.worker.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("http-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---- git ----

/// Runs git with no user or system config.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn write(dir: &Path, path: &str, data: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `git daemon` serving every repository under a directory on a loopback port.
struct GitDaemon {
    child: Child,
    base: tempfile::TempDir,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitDaemon {
    fn start() -> GitDaemon {
        let base = tempfile::tempdir().unwrap();
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
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.path().display()),
            ])
            .arg(base.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let d = GitDaemon { child, base, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn repo(&self, name: &str) -> PathBuf {
        let p = self.base.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        git(&p, &["init", "--quiet", "--initial-branch=main"]);
        p
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

fn git_available() -> bool {
    let ok = Command::new("git")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "git is missing in CI");
        eprintln!("SKIPPED: git is not installed");
    }
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn git_source_checks_out_refs_subdirs_and_follows_branches() {
    if !git_available() {
        return;
    }
    let Some(env) = env().await else { return };
    let daemon = GitDaemon::start();
    let repo = daemon.repo("repo");
    write(&repo, "a", "one\n");
    write(&repo, "sub/b", "sub one\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "one"]);
    git(&repo, &["tag", "-a", "v1", "-m", "version 1"]);
    git(&repo, &["tag", "light"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    write(&repo, "a", "two\n");
    git(&repo, &["commit", "--quiet", "-am", "two"]);
    let url = daemon.url("repo");

    // An annotated tag: the tree of its commit, without .git.
    let (r, _) = env.solve(&llb::git(&url, "v1")).await;
    let r = r.unwrap();
    assert_eq!(env.names(&r), ["a", "sub"]);
    assert_eq!(env.read(&r, "a").unwrap(), "one\n");
    assert_eq!(env.read(&r, "sub/b").unwrap(), "sub one\n");
    // A lightweight tag and a commit sha give the same tree.
    for reference in ["light", first.as_str()] {
        let (r, _) = env.solve(&llb::git(&url, reference)).await;
        assert_eq!(env.read(&r.unwrap(), "a").unwrap(), "one\n", "{reference}");
    }

    // A branch, and the default branch.
    let (r, _) = env.solve(&llb::git(&url, "main")).await;
    assert_eq!(env.read(&r.unwrap(), "a").unwrap(), "two\n");
    let (r, _) = env.solve(&llb::git(&url, "")).await;
    assert_eq!(env.read(&r.unwrap(), "a").unwrap(), "two\n");

    // A sub directory becomes the root.
    let (r, _) = env.solve(&llb::git(&url, "v1:sub")).await;
    let r = r.unwrap();
    assert_eq!(env.names(&r), ["b"]);
    assert_eq!(env.read(&r, "b").unwrap(), "sub one\n");

    // Keeping .git: a repository at the commit, origin without the fetch's traces.
    let (r, _) = env
        .solve(&llb::Git::new(&url, "v1").keep_git_dir().state())
        .await;
    let r = r.unwrap();
    assert_eq!(env.names(&r), [".git", "a", "sub"]);
    env.with_view(&r, |dir| {
        assert_eq!(git(dir, &["rev-parse", "HEAD"]), first);
        assert_eq!(git(dir, &["config", "remote.origin.url"]), url);
        assert_eq!(git(dir, &["status", "--porcelain"]), "");
        assert!(!dir.join(".git/FETCH_HEAD").exists());
    });

    // A branch that moves builds again; an unmoved one is cached.
    let branch = llb::git(&url, "main");
    let name = format!("{url}#main");
    let (_, events) = env.solve(&branch).await;
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));
    write(&repo, "a", "three\n");
    git(&repo, &["commit", "--quiet", "-am", "three"]);
    let (r, events) = env.solve(&branch).await;
    assert_eq!(env.read(&r.unwrap(), "a").unwrap(), "three\n");
    assert_eq!(ran(&events), [name.as_str()], "{events:?}");

    // A missing ref names the remote and the ref.
    let (r, _) = env.solve(&llb::git(&url, "nope")).await;
    let err = r.unwrap_err();
    assert!(
        err.contains(&url) && err.contains("does not contain ref nope"),
        "{err}"
    );
    // So does a missing sub directory.
    let (r, _) = env.solve(&llb::git(&url, "v1:absent")).await;
    let err = r.unwrap_err();
    assert!(err.contains(&url) && err.contains("absent"), "{err}");
    // And a checksum that does not match.
    let (r, _) = env
        .solve(&llb::Git::new(&url, "v1").checksum("0000000").state())
        .await;
    let err = r.unwrap_err();
    assert!(err.contains("expected checksum"), "{err}");
    // And a repository that is not there.
    let (r, _) = env.solve(&llb::git(&daemon.url("absent"), "main")).await;
    let err = r.unwrap_err();
    assert!(err.contains(&daemon.url("absent")), "{err}");

    // Scratch repositories do not outlive the solves.
    let leftovers: Vec<_> = std::fs::read_dir(env.ctx.worker.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("git-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_source_updates_submodules_unless_skipped() {
    if !git_available() {
        return;
    }
    let Some(env) = env().await else { return };
    let daemon = GitDaemon::start();
    let lib = daemon.repo("lib");
    write(&lib, "lib.txt", "library\n");
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "--quiet", "-m", "lib"]);
    let app = daemon.repo("app");
    write(&app, "main.txt", "app\n");
    git(&app, &["add", "."]);
    git(
        &app,
        &[
            "submodule",
            "--quiet",
            "add",
            &daemon.url("lib"),
            "vendor/lib",
        ],
    );
    git(&app, &["commit", "--quiet", "-m", "app"]);
    let url = daemon.url("app");

    let (r, _) = env.solve(&llb::git(&url, "main")).await;
    let r = r.unwrap();
    assert_eq!(env.read(&r, "main.txt").unwrap(), "app\n");
    assert_eq!(env.read(&r, "vendor/lib/lib.txt").unwrap(), "library\n");

    let (r, _) = env
        .solve(&llb::Git::new(&url, "main").skip_submodules().state())
        .await;
    let r = r.unwrap();
    assert_eq!(env.read(&r, "main.txt").unwrap(), "app\n");
    assert!(env.read(&r, "vendor/lib/lib.txt").is_none());
}
