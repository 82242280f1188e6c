//! Issue acceptance: LLB graphs built with the `llb` builder, solved with real runc and
//! overlayfs on a busybox image from a local registry.

mod common;

use common::*;
use llb::{CacheSharing, CopyOptions, FileAction, Mount, OpOptions, State};

fn named(name: &str) -> OpOptions {
    OpOptions::new().custom_name(name)
}

fn run(st: &State, name: &str, script: &str) -> State {
    st.run().shell(script).options(named(name)).build().root()
}

fn copy_opts() -> CopyOptions {
    CopyOptions {
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..CopyOptions::default()
    }
}

/// A diamond: two slow branches over one base, joined by copying both into scratch.
fn diamond(env: &Env) -> State {
    let base = run(&env.base(), "base", "echo base > /base");
    let left = run(&base, "left", "sleep 1; echo left > /left");
    let right = run(&base, "right", "sleep 1; echo right > /right");
    let fa = FileAction::copy(&left, "/left", "/left", copy_opts()).and_copy(
        &right,
        "/right",
        "/right",
        copy_opts(),
    );
    llb::scratch().file(&fa, named("join"))
}

#[tokio::test(flavor = "multi_thread")]
async fn diamond_runs_in_parallel_then_caches_then_survives_restart() {
    let Some(env) = env().await else { return };
    let st = diamond(&env);
    let (r, events) = env.solve(&st).await;
    let r = r.unwrap();
    assert_eq!(env.read(&r, "left").unwrap(), b"left\n");
    assert_eq!(env.read(&r, "right").unwrap(), b"right\n");
    let (ls, le) = span(&events, "left");
    let (rs, re) = span(&events, "right");
    assert!(
        ls < re && rs < le,
        "the branches overlap: left {ls}..{le}, right {rs}..{re}"
    );

    // Again: every vertex cached, no container runs.
    let (r2, events) = env.solve(&st).await;
    assert_eq!(r2.unwrap(), r);
    assert!(ran(&events).is_empty(), "ran: {:?}", ran(&events));
    for v in ["base", "left", "right", "join"] {
        assert!(
            cached(&events).contains(&v.to_string()),
            "{v} not cached: {:?}",
            cached(&events)
        );
    }

    // A new worker and solver on the same root still find everything.
    let env = env.restart().await;
    let (r3, events) = env.solve(&st).await;
    assert_eq!(r3.unwrap(), r);
    assert!(
        ran(&events).is_empty(),
        "ran after restart: {:?}",
        ran(&events)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_solves_run_a_shared_prefix_once() {
    let Some(env) = env().await else { return };
    let shared = run(
        &env.base(),
        "stamp",
        "sleep 1; cat /proc/sys/kernel/random/uuid > /stamp",
    );
    let a = run(&shared, "a", "echo a > /a");
    let b = run(&shared, "b", "echo b > /b");
    let ((ra, _), (rb, _)) = tokio::join!(env.solve(&a), env.solve(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let (sa, sb) = (
        env.read(&ra, "stamp").unwrap(),
        env.read(&rb, "stamp").unwrap(),
    );
    assert_eq!(sa, sb, "the shared step ran once");
    assert_eq!(env.read(&ra, "a").unwrap(), b"a\n");
    assert_eq!(env.read(&rb, "b").unwrap(), b"b\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_changes_rerun_only_what_depends_on_them() {
    let Some(env) = env().await else { return };
    env.write_context("a", "one");
    env.write_context("b", "unrelated");
    let ctx = llb::Local::new("context").state();
    let build = |env: &Env| {
        let copied = env.base().file(
            &FileAction::copy(&ctx, "a", "/a", copy_opts()),
            named("copy a"),
        );
        run(&copied, "use a", "cat /a > /out")
    };
    let (r, events) = env.solve(&build(&env)).await;
    assert_eq!(env.read(&r.unwrap(), "out").unwrap(), b"one");
    // the copy reports what it copied
    assert!(
        events
            .iter()
            .flat_map(|e| &e.statuses)
            .any(|s| s.name.starts_with("copying 1 files") && s.current == 1),
        "{events:?}"
    );

    // A file the COPY does not select: nothing re-runs but the context sync.
    env.write_context("b", "changed");
    let (r, events) = env.solve(&build(&env)).await;
    assert_eq!(env.read(&r.unwrap(), "out").unwrap(), b"one");
    assert_eq!(ran(&events), ["local://context"], "{events:?}");

    // The selected file: the COPY and the RUN after it run again, the base does not.
    env.write_context("a", "two");
    let (r, events) = env.solve(&build(&env)).await;
    assert_eq!(env.read(&r.unwrap(), "out").unwrap(), b"two");
    assert_eq!(ran(&events), ["copy a", "local://context", "use a"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_mounts_persist_lock_and_stay_private() {
    let Some(env) = env().await else { return };
    let append = |n: &str, sharing: CacheSharing| {
        env.base()
            .run()
            .shell(&format!("echo {n} >> /cache/log; cat /cache/log > /out"))
            .mount(Mount::cache("/cache", "log", sharing))
            .options(named(&format!("append {n}")))
            .build()
            .root()
    };
    let (r1, _) = env.solve(&append("1", CacheSharing::Shared)).await;
    assert_eq!(env.read(&r1.unwrap(), "out").unwrap(), b"1\n");
    let (r2, _) = env.solve(&append("2", CacheSharing::Shared)).await;
    assert_eq!(
        env.read(&r2.unwrap(), "out").unwrap(),
        b"1\n2\n",
        "the second build sees the first's data"
    );

    // locked: two users take turns
    let locked = |n: &str| {
        env.base()
            .run()
            .shell(&format!(
                "s=$(cut -d' ' -f1 /proc/uptime); sleep 1; echo {n} > /cache/who; \
                 echo $s $(cut -d' ' -f1 /proc/uptime) > /out"
            ))
            .mount(Mount::cache("/cache", "lock", CacheSharing::Locked))
            .options(named(&format!("locked {n}")))
            .build()
            .root()
    };
    let (la, lb) = (locked("a"), locked("b"));
    let ((a, _), (b, _)) = tokio::join!(env.solve(&la), env.solve(&lb));
    // each process recorded when it ran (kernel uptime, the same clock for both)
    let times = |r: ops::Ref| -> (f64, f64) {
        let out = String::from_utf8(env.read(&r, "out").unwrap()).unwrap();
        let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let ((as_, ae), (bs, be)) = (times(a.unwrap()), times(b.unwrap()));
    assert!(
        ae <= bs || be <= as_,
        "locked users overlapped: a {as_}..{ae}, b {bs}..{be}"
    );

    // private: a busy cache gives the next user its own directory
    let private = |n: &str| {
        env.base()
            .run()
            .shell(&format!("touch /cache/{n}; sleep 1; ls /cache > /out"))
            .mount(Mount::cache("/cache", "priv", CacheSharing::Private))
            .options(named(&format!("private {n}")))
            .build()
            .root()
    };
    let (pa, pb) = (private("a"), private("b"));
    let ((a, _), (b, _)) = tokio::join!(env.solve(&pa), env.solve(&pb));
    assert_eq!(env.read(&a.unwrap(), "out").unwrap(), b"a\n");
    assert_eq!(env.read(&b.unwrap(), "out").unwrap(), b"b\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_exec_names_its_command_and_caches_nothing() {
    let Some(env) = env().await else { return };
    let st = run(&env.base(), "broken", "echo oops; exit 3");
    let (r, events) = env.solve(&st).await;
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("echo oops; exit 3"), "{msg}");
    assert!(msg.contains("exit code: 3"), "{msg}");
    match &err {
        solver::SolveError::Vertex { source, .. } => {
            assert!(
                source.details.iter().any(|l| l == "oops"),
                "{:?}",
                source.details
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        events
            .iter()
            .flat_map(|e| &e.logs)
            .any(|l| l.msg == b"oops\n")
    );
    // nothing was cached for it: it runs again
    let (r, events) = env.solve(&st).await;
    assert!(r.is_err());
    assert!(ran(&events).contains(&"broken".to_string()));
    // and no active snapshot is left behind
    let leftovers: Vec<_> = env
        .ctx
        .worker
        .snapshotter
        .list()
        .unwrap()
        .into_iter()
        .filter(|i| i.kind != snapshot::Kind::Committed)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn file_merge_and_diff_ops() {
    let Some(env) = env().await else { return };
    let files = llb::scratch().file(
        &FileAction::mkdir("/d", 0o755, llb::MkdirOptions::default())
            .and_mkfile(
                "/d/f",
                0o640,
                b"data".to_vec(),
                llb::MkfileOptions::default(),
            )
            .and_symlink("/d/f", "/link", llb::SymlinkOptions::default()),
        named("files"),
    );
    let merged = llb::merge(&[env.base(), files.clone()], named("merge"));
    let checked = run(
        &merged,
        "check",
        "cat /link > /out; stat -c %a /d/f >> /out",
    );
    let (r, _) = env.solve(&checked).await;
    assert_eq!(env.read(&r.unwrap(), "out").unwrap(), b"data640\n");
    // the merge shares the file with the layer it came from instead of copying it
    let (m, _) = env.solve(&merged).await;
    let m = m.unwrap();
    let upper = env
        .ctx
        .worker
        .snapshotter
        .layer_dir(m.key().unwrap())
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(upper.join("d/f")).unwrap().nlink() >= 2,
        "hard-linked, not copied"
    );
    assert_eq!(env.read(&m, "d/f").unwrap(), b"data");
    // a whiteout in a merged input hides what the first input has
    let removed = run(&env.base(), "remove", "rm /etc/group");
    let merged2 = llb::merge(&[env.base(), removed], named("merge2"));
    let (m2, _) = env.solve(&merged2).await;
    let m2 = m2.unwrap();
    assert!(env.read(&m2, "etc/group").is_none());
    assert!(env.read(&m2, "etc/passwd").is_some());

    let changed = run(&env.base(), "change", "echo new > /new");
    let diff = llb::diff(&env.base(), &changed, named("diff"));
    let (r, _) = env.solve(&diff).await;
    let r = r.unwrap();
    assert_eq!(env.read(&r, "new").unwrap(), b"new\n");
    assert!(
        env.read(&r, "bin/busybox").is_none(),
        "the diff holds only the change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_process_on_the_same_root_finds_the_cache() {
    let Some(env) = env().await else { return };
    env.write_context("a", "from the context");
    let ctx = llb::Local::new("context").state();
    let st = run(
        &env.base().file(
            &FileAction::copy(&ctx, "a", "/a", copy_opts()),
            named("copy a"),
        ),
        "use a",
        "cat /a > /out",
    );
    let def = st.marshal(&llb::MarshalOptions::default()).unwrap();
    let bytes = prost::Message::encode_to_vec(&def);
    // a root of its own, used by two processes one after the other
    let root = tempfile::tempdir().unwrap();
    let solve_in_new_process = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llb-solve"))
            .arg("--root")
            .arg(root.path())
            .arg("--local")
            .arg(format!("context={}", env.context.path().display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "llb-solve failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let first = solve_in_new_process();
    assert!(first.contains("done use a"), "{first}");
    let second = solve_in_new_process();
    assert!(second.contains("cached use a"), "{second}");
    assert!(second.contains("cached copy a"), "{second}");
    assert!(
        !second.contains("done use a") && !second.contains("done copy a"),
        "{second}"
    );
    let result = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("result "))
            .map(String::from)
    };
    assert_eq!(
        result(&first),
        result(&second),
        "the same snapshot both times"
    );
}
