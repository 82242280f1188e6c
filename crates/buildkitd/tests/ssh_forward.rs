//! SSH agent forwarding end to end: `buildctl --ssh` lends agents running in this test
//! (fake ones, on unix sockets) to `RUN --mount=type=ssh` steps of a Dockerfile, which
//! talk to them from inside the container. Real binaries, runc underneath.
//!
//! busybox has no client for unix sockets (its `nc` speaks TCP only), so the steps use
//! a tiny agent client compiled here with `rustc` as a static executable (glibc's
//! static libraries come with the toolchain's usual `libc6-dev`), copied into the image
//! from the build context.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{Daemon, text};

/// The client the steps run: `list` asks for the keys (printing `keys N` and `key
/// COMMENT` lines), `remove-all` asks to remove them all (printing `reply TYPE`),
/// `line TEXT` sends a line, half-closes and prints everything that comes back. It
/// talks to `$SSH_AUTH_SOCK`.
const CLIENT: &str = r#"
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn fail(msg: String) -> ! {
    eprintln!("agent-client: {msg}");
    std::process::exit(1)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn read_frame(s: &mut UnixStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap_or_else(|e| fail(format!("reply: {e}")));
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).unwrap_or_else(|e| fail(format!("reply: {e}")));
    body
}

fn string(b: &[u8], at: &mut usize) -> Vec<u8> {
    let len = b.get(*at..*at + 4).unwrap_or_else(|| fail("short reply".into()));
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let s = b.get(*at + 4..*at + 4 + len).unwrap_or_else(|| fail("short reply".into()));
    *at += 4 + len;
    s.to_vec()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sock = std::env::var("SSH_AUTH_SOCK").unwrap_or_else(|_| fail("no SSH_AUTH_SOCK".into()));
    let mut s = UnixStream::connect(&sock).unwrap_or_else(|e| fail(format!("{sock}: {e}")));
    let write = |s: &mut UnixStream, b: &[u8]| {
        s.write_all(b).unwrap_or_else(|e| fail(format!("request: {e}")))
    };
    match args.get(1).map(String::as_str) {
        Some("list") => {
            write(&mut s, &frame(&[11]));
            let r = read_frame(&mut s);
            if r.first() != Some(&12) || r.len() < 5 {
                fail(format!("unexpected reply {r:?}"));
            }
            let n = u32::from_be_bytes([r[1], r[2], r[3], r[4]]);
            println!("keys {n}");
            let mut at = 5;
            for _ in 0..n {
                let _blob = string(&r, &mut at);
                println!("key {}", String::from_utf8_lossy(&string(&r, &mut at)));
            }
        }
        Some("remove-all") => {
            write(&mut s, &frame(&[19]));
            println!("reply {}", read_frame(&mut s).first().copied().unwrap_or(0));
        }
        Some("line") => {
            let line = format!("{}\n", args.get(2).map(String::as_str).unwrap_or(""));
            write(&mut s, line.as_bytes());
            s.shutdown(std::net::Shutdown::Write).unwrap_or_else(|e| fail(format!("{e}")));
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap_or_else(|e| fail(format!("answer: {e}")));
            print!("{out}");
        }
        _ => fail("usage: agent-client list|remove-all|line TEXT".into()),
    }
}
"#;

/// `rustc`: the one cargo runs with, else the one next to cargo, else from `PATH`.
fn rustc() -> PathBuf {
    if let Some(r) = std::env::var_os("RUSTC") {
        return r.into();
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        let sibling = Path::new(&cargo).with_file_name("rustc");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("rustc")
}

/// Compiles [`CLIENT`] to a static executable at `dest`.
fn build_client(dir: &Path, dest: &Path) {
    let src = dir.join("agent-client.rs");
    std::fs::write(&src, CLIENT).unwrap();
    let out = Command::new(rustc())
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=1",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "-o"])
        .arg(dest)
        .arg(&src)
        .output()
        .expect("rustc runs");
    assert!(
        out.status.success(),
        "compiling the static agent client (needs glibc's libc.a, from libc6-dev): {}",
        text(&out)
    );
}

/// A fake agent speaking the agent protocol on `path`: a key listing gets one key with
/// comment `comment`; anything else gets success, so that a failure the build sees can
/// only come from buildkit's filter. Records the type of every request that reached it.
fn framed_agent(path: &Path, comment: &'static str) -> Arc<Mutex<Vec<u8>>> {
    fn serve(mut conn: UnixStream, comment: &str, seen: &Mutex<Vec<u8>>) -> std::io::Result<()> {
        loop {
            let mut header = [0u8; 4];
            conn.read_exact(&mut header)?;
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            conn.read_exact(&mut body)?;
            seen.lock()
                .unwrap()
                .push(body.first().copied().unwrap_or(0));
            let mut reply = Vec::new();
            if body.first() == Some(&11) {
                reply.push(12);
                reply.extend_from_slice(&1u32.to_be_bytes());
                for field in [&b"fake-key-blob"[..], comment.as_bytes()] {
                    reply.extend_from_slice(&(field.len() as u32).to_be_bytes());
                    reply.extend_from_slice(field);
                }
            } else {
                reply.push(6);
            }
            conn.write_all(&(reply.len() as u32).to_be_bytes())?;
            conn.write_all(&reply)?;
        }
    }
    let listener = UnixListener::bind(path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, comment, &log);
            });
        }
    });
    seen
}

/// A fake agent speaking no agent protocol on `path`: every line gets `agent got: LINE`.
/// Only a raw agent gets its bytes through.
fn line_agent(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(out, "agent got: {line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// `buildctl build` of the Dockerfile in `ctx` with `args`, `SSH_AUTH_SOCK` set to
/// `auth_sock` (or unset).
fn build(d: &Daemon, ctx: &Path, auth_sock: Option<&Path>, args: &[&str]) -> Output {
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let mut cmd = Command::new(common::buildctl_bin());
    cmd.args(["--addr", &d.addr, "build", "--progress", "plain"])
        .args(["--frontend", "dockerfile.v0"])
        .args(["--local", &local_ctx, "--local", &local_df])
        .args(args);
    match auth_sock {
        Some(p) => cmd.env("SSH_AUTH_SOCK", p),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    cmd.output().unwrap()
}

/// The ssh sockets' private directories the daemon still has.
fn leftover_sockets(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.root.join("tmp"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ssh-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn steps_talk_to_the_clients_agents() {
    if !common::require_root("steps_talk_to_the_clients_agents") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    build_client(dir.path(), &ctx.join("agent-client"));
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {busybox} AS test\n\
             COPY agent-client /usr/bin/agent-client\n\
             RUN mkdir -m 777 /r\n\
             RUN --mount=type=ssh echo \"$SSH_AUTH_SOCK\" > /r/default.env && \
                 stat -c '%a %u:%g %F' \"$SSH_AUTH_SOCK\" > /r/default.stat && \
                 agent-client list > /r/default.list && \
                 agent-client remove-all > /r/default.remove\n\
             USER user\n\
             RUN --mount=type=ssh,id=mykey,uid=1000,gid=1000,mode=0600 \
                 --mount=type=ssh,id=lines,target=/run/lines.sock,uid=1000 \
                 id -u > /r/user.uid && echo \"$SSH_AUTH_SOCK\" > /r/user.env && \
                 stat -c '%a %u:%g %F' \"$SSH_AUTH_SOCK\" > /r/user.stat && \
                 agent-client list > /r/user.list && \
                 SSH_AUTH_SOCK=/run/lines.sock agent-client line hello > /r/lines.txt\n\
             USER root\n\
             RUN --mount=type=ssh,id=absent \
                 if test -e \"$SSH_AUTH_SOCK\"; then echo present; else echo absent; fi \
                 > /r/optional.txt\n\
             RUN for p in /run/buildkit/ssh_agent.0 /run/lines.sock; do \
                 if test -e $p; then echo $p; fi; done > /r/stubs.txt\n\
             FROM scratch\n\
             COPY --from=test /r /\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(dir.path());

    let agent = dir.path().join("agent.sock");
    let lines = dir.path().join("lines.sock");
    let seen = framed_agent(&agent, "test-key@buildkit");
    line_agent(&lines);
    let out_dir = dir.path().join("out");
    let output = format!("type=local,dest={}", out_dir.display());
    let mykey = format!("mykey={}", agent.display());
    let raw = format!("lines={},raw=true", lines.display());
    let args = [
        "--ssh", "default", "--ssh", &mykey, "--ssh", &raw, "--output", &output,
    ];
    let out = build(&d, &ctx, Some(&agent), &args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let read = |name: &str| {
        std::fs::read_to_string(out_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{t}"))
    };

    // The default agent, at the default place, which SSH_AUTH_SOCK names.
    assert_eq!(read("default.env"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("default.stat"), "600 0:0 socket\n");
    assert_eq!(read("default.list"), "keys 1\nkey test-key@buildkit\n");
    // Refused on the client's side: the agent never saw the request (5: failure).
    assert_eq!(read("default.remove"), "reply 5\n");
    assert_eq!(
        *seen.lock().unwrap(),
        [11, 11],
        "only listings reach the agent"
    );

    // Another id, owned by the step's user; a raw agent gets any bytes through.
    assert_eq!(read("user.uid"), "1000\n");
    assert_eq!(read("user.env"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("user.stat"), "600 1000:1000 socket\n");
    assert_eq!(read("user.list"), "keys 1\nkey test-key@buildkit\n");
    assert_eq!(read("lines.txt"), "agent got: hello\n");

    // An agent the client does not have is optional unless `required`: not mounted.
    assert_eq!(read("optional.txt"), "absent\n");
    // The mount points runc made for the sockets are not left in the image.
    assert_eq!(read("stubs.txt"), "");
    assert!(
        leftover_sockets(&d).is_empty(),
        "{:?}",
        leftover_sockets(&d)
    );

    // Other agents on other sockets do not change the cache key: nothing runs again
    // (the new default agent would list another key).
    let agent2 = dir.path().join("agent2.sock");
    let lines2 = dir.path().join("lines2.sock");
    let seen2 = framed_agent(&agent2, "other-key");
    line_agent(&lines2);
    let out_dir2 = dir.path().join("out2");
    let output2 = format!("type=local,dest={}", out_dir2.display());
    let mykey2 = format!("mykey={}", agent2.display());
    let raw2 = format!("lines={},raw=true", lines2.display());
    let args = [
        "--ssh", "default", "--ssh", &mykey2, "--ssh", &raw2, "--output", &output2,
    ];
    let out = build(&d, &ctx, Some(&agent2), &args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("CACHED"), "{t}");
    assert_eq!(
        std::fs::read_to_string(out_dir2.join("default.list")).unwrap(),
        "keys 1\nkey test-key@buildkit\n"
    );
    assert!(seen2.lock().unwrap().is_empty(), "{t}");

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&d.root.join("tmp").display().to_string()),
        "{mounts}"
    );
    d.stop();
}

#[test]
fn a_required_agent_the_client_does_not_forward_fails_the_step() {
    if !common::require_root("a_required_agent_the_client_does_not_forward_fails_the_step") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {busybox}\nRUN --mount=type=ssh,id=nokey,required true\n"),
    )
    .unwrap();
    let d = Daemon::start(dir.path());
    let agent = dir.path().join("agent.sock");
    framed_agent(&agent, "test-key");
    let want = "no SSH key \"nokey\" forwarded from the client";

    // The client forwards other agents...
    let out = build(&d, &ctx, Some(&agent), &["--ssh", "default"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(want), "{t}");
    // ...or none at all.
    let out = build(&d, &ctx, None, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains(want), "{t}");
    assert!(
        leftover_sockets(&d).is_empty(),
        "{:?}",
        leftover_sockets(&d)
    );
    d.stop();
}

/// `buildctl` checks `--ssh` before it talks to a daemon (none runs here).
#[test]
fn bad_ssh_flags_fail_before_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let sock = dir.path().join("agent.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    let addr = format!("unix://{}", dir.path().join("no-daemon.sock").display());
    let run = |auth_sock: Option<&Path>, ssh: &[&str]| {
        let mut cmd = Command::new(common::buildctl_bin());
        cmd.args(["--addr", &addr, "build"]);
        for s in ssh {
            cmd.args(["--ssh", s]);
        }
        match auth_sock {
            Some(p) => cmd.env("SSH_AUTH_SOCK", p),
            None => cmd.env_remove("SSH_AUTH_SOCK"),
        };
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        text(&out)
    };
    let t = run(None, &["default"]);
    assert!(
        t.contains("--ssh") && t.contains("SSH_AUTH_SOCK is not set"),
        "{t}"
    );
    let t = run(Some(&sock), &[&format!("k={}", key.display())]);
    assert!(t.contains("key files are not supported yet"), "{t}");
    let t = run(
        Some(&sock),
        &["default", &format!("default={}", sock.display())],
    );
    assert!(t.contains("duplicate ssh agent id \"default\""), "{t}");
    let t = run(Some(&sock), &["k=/does/not/exist"]);
    assert!(t.contains("/does/not/exist"), "{t}");
    // Well-formed: the failure is the missing daemon, not the flag.
    let t = run(
        Some(&sock),
        &["default", &format!("k={},raw=true", sock.display())],
    );
    assert!(!t.contains("--ssh"), "{t}");
}

#[test]
fn a_cancelled_step_closes_its_agent_socket() {
    if !common::require_root("a_cancelled_step_closes_its_agent_socket") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {busybox}\nRUN --mount=type=ssh,required sleep 60\n"),
    )
    .unwrap();
    let d = Daemon::start(dir.path());
    let agent = dir.path().join("agent.sock");
    framed_agent(&agent, "test-key");
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let client = Command::new(common::buildctl_bin())
        .args(["--addr", &d.addr, "build", "--progress", "plain"])
        .args(["--frontend", "dockerfile.v0", "--ssh", "default"])
        .args(["--local", &local_ctx, "--local", &local_df])
        .env("SSH_AUTH_SOCK", &agent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(
        std::time::Duration::from_secs(60),
        "the step's agent socket",
        || (!leftover_sockets(&d).is_empty()).then_some(()),
    );
    // SIGTERM cancels the running step; its socket goes with it, not at the next start.
    d.stop();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let tmp = dir.path().join("root/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|e| e.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("ssh-")),
        "{left:?}"
    );
}

/// Kills the `ssh-agent` a test started.
struct AgentProcess(std::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// OpenSSH's own tools against a step's socket (from the host, where they run; busybox
/// has none): a real agent lists its key and signs through it, and refuses nothing by
/// itself, yet removing and locking keys through the step's socket fail.
#[test]
fn openssh_tools_use_the_agent_through_a_steps_socket() {
    if !common::require_root("openssh_tools_use_the_agent_through_a_steps_socket") {
        return;
    }
    for tool in [
        "/usr/bin/ssh-agent",
        "/usr/bin/ssh-add",
        "/usr/bin/ssh-keygen",
    ] {
        if !testkit::require_tool(Path::new(tool), "apt-get install openssh-client").unwrap() {
            return;
        }
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "real-key@test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let agent = dir.path().join("agent.sock");
    let _agent = AgentProcess(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_for(
        std::time::Duration::from_secs(10),
        "ssh-agent's socket",
        || agent.exists().then_some(()),
    );
    let ssh_add = |sock: &Path, args: &[&str]| {
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", sock)
            .output()
            .unwrap()
    };
    let out = ssh_add(&agent, &[key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {busybox}\nRUN --mount=type=ssh,required sleep 60\n"),
    )
    .unwrap();
    let d = Daemon::start(dir.path());
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let client = Command::new(common::buildctl_bin())
        .args(["--addr", &d.addr, "build", "--progress", "plain"])
        .args(["--frontend", "dockerfile.v0", "--ssh", "default"])
        .args(["--local", &local_ctx, "--local", &local_df])
        .env("SSH_AUTH_SOCK", &agent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sock = common::wait_for(
        std::time::Duration::from_secs(60),
        "the step's agent socket",
        || {
            leftover_sockets(&d)
                .first()
                .map(|n| d.root.join("tmp").join(n).join("agent.sock"))
                .filter(|p| p.exists())
        },
    );

    let out = ssh_add(&sock, &["-l"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("real-key@test"), "{t}");
    // Signing goes through to the agent (ssh-keygen signs with the agent's key when
    // given only the public half).
    let data = dir.path().join("data");
    std::fs::write(&data, "signed through buildkit\n").unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "test", "-f"])
        .arg(key.with_extension("pub"))
        .arg(&data)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", "test", "-f"])
        .arg(key.with_extension("pub"))
        .arg("-s")
        .arg(data.with_extension("sig"))
        .stdin(std::fs::File::open(&data).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Changing the agent is refused; the real agent still has its key.
    let out = ssh_add(&sock, &["-D"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = ssh_add(&sock, &["-d", key.with_extension("pub").to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = ssh_add(&agent, &["-l"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("real-key@test"), "{t}");

    d.stop();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}
