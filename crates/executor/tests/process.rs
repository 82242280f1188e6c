//! The process a run starts: output, exit codes, user, working directory, environment,
//! hostname, capabilities. Root and runc required (see `common`).

mod common;

use std::os::unix::fs::MetadataExt;

use common::sh;
use executor::{ExecError, SecurityMode, UserError};

#[tokio::test]
async fn stdout_and_stderr_are_captured() {
    let env = env_or_skip!();
    let ran = env
        .run(env.request("out1", sh("echo hi; echo oops >&2")))
        .await;
    assert_eq!(ran.stderr, "oops\n");
    assert_eq!(ran.ok(), "hi\n");
    env.assert_clean();
}

#[tokio::test]
async fn non_zero_exit_names_command_and_code() {
    let env = env_or_skip!();
    let ran = env.run(env.request("exit1", sh("exit 3"))).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.exit_code(), Some(3), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("sh -c exit 3") && msg.contains('3'), "{msg}");
    env.assert_clean();
}

#[tokio::test]
async fn missing_executable_is_reported_by_name() {
    let env = env_or_skip!();
    let ran = env
        .run(env.request("nox1", vec!["/nonexistent".into()]))
        .await;
    let e = ran.result.unwrap_err();
    assert!(matches!(e, ExecError::Runtime { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent"), "{e}");
    env.assert_clean();
}

#[tokio::test]
async fn user_by_name_gets_its_ids_and_groups() {
    let env = env_or_skip!();
    // Make `user` a member of an extra group.
    let group = env.rootfs.path().join("etc/group");
    let mut text = std::fs::read_to_string(&group).unwrap();
    text.push_str("wheel:x:10:root,user\n");
    std::fs::write(&group, text).unwrap();
    let mut req = env.request("user1", sh("id -u; id -g; id -G"));
    req.user = "user".into();
    assert_eq!(env.run(req).await.ok(), "1000\n1000\n1000 10\n");
    env.assert_clean();
}

#[tokio::test]
async fn numeric_user_and_group() {
    let env = env_or_skip!();
    let mut req = env.request("user2", sh("id -u; id -g; id -G"));
    req.user = "1000:1000".into();
    assert_eq!(env.run(req).await.ok(), "1000\n1000\n1000\n");
    let mut req = env.request("user3", sh("id -u; id -g"));
    req.user = "4242:4343".into();
    assert_eq!(env.run(req).await.ok(), "4242\n4343\n");
    env.assert_clean();
}

#[tokio::test]
async fn unknown_user_is_an_error_naming_it() {
    let env = env_or_skip!();
    let mut req = env.request("user4", sh("true"));
    req.user = "nosuchuser".into();
    let e = env.run(req).await.result.unwrap_err();
    assert!(
        matches!(e, ExecError::User(UserError::UnknownUser { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("nosuchuser"), "{e}");
    env.assert_clean();
}

#[tokio::test]
async fn missing_working_directory_is_created_for_the_user() {
    let env = env_or_skip!();
    let mut req = env.request("cwd1", sh("pwd; touch mine"));
    req.cwd = "/work/dir".into();
    req.user = "user".into();
    assert_eq!(env.run(req).await.ok(), "/work/dir\n");
    let created = std::fs::metadata(env.rootfs.path().join("work/dir")).unwrap();
    assert_eq!((created.uid(), created.gid()), (1000, 1000));
    assert!(env.rootfs.path().join("work/dir/mine").exists());
    env.assert_clean();
}

#[tokio::test]
async fn environment_is_passed_with_a_default_path() {
    let env = env_or_skip!();
    let mut req = env.request("env1", vec!["env".into()]);
    req.env = vec!["FOO=bar baz".into()];
    let out = env.run(req).await.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"FOO=bar baz"), "{out}");
    assert!(
        lines.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
    let mut req = env.request("env2", sh("echo $PATH"));
    req.env = vec!["PATH=/bin".into()];
    assert_eq!(env.run(req).await.ok(), "/bin\n");
    env.assert_clean();
}

#[tokio::test]
async fn hostname_and_hosts_file() {
    let env = env_or_skip!();
    let ran = env.run(env.request("host1", sh("hostname"))).await;
    assert_eq!(ran.ok(), "buildkitsandbox\n");
    let mut req = env.request(
        "host2",
        sh("hostname; cat /etc/hosts; echo x >> /etc/hosts || echo ro"),
    );
    req.hostname = "testbox".into();
    req.extra_hosts = vec![("db".into(), "10.1.2.3".parse().unwrap())];
    let out = env.run(req).await.ok();
    assert!(
        out.starts_with("testbox\n127.0.0.1\tlocalhost testbox\n"),
        "{out}"
    );
    assert!(out.contains("10.1.2.3\tdb\n"), "{out}");
    assert!(out.ends_with("ro\n"), "hosts must be read-only: {out}");
    // The image's /etc/hosts was a stub made for the mount; it is gone again.
    assert!(!env.rootfs.path().join("etc/hosts").exists());
    env.assert_clean();
}

#[tokio::test]
async fn resolv_conf_is_generated() {
    let env = env_or_skip!();
    let out = env
        .run(env.request("dns1", sh("cat /etc/resolv.conf")))
        .await
        .ok();
    assert!(out.contains("nameserver "), "{out}");
    assert!(!out.contains("nameserver 127."), "{out}");
    env.assert_clean();
}

#[tokio::test]
async fn sandbox_has_default_caps_and_insecure_has_all() {
    let env = env_or_skip!();
    let script = "grep -E '^(CapEff|CapAmb|NoNewPrivs)' /proc/self/status";
    let out = env.run(env.request("caps1", sh(script))).await.ok();
    // Docker's default set.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    // off by default, as upstream BuildKit leaves it
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    let mut req = env.request("caps2", sh(script));
    req.security = SecurityMode::Insecure;
    let out = env.run(req).await.ok();
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = host.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    let want = bnd.replace("CapBnd", "CapEff");
    assert!(out.contains(&want), "{out} should contain {want}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    env.assert_clean();
}

#[tokio::test]
async fn ids_must_be_unique_while_running() {
    let env = env_or_skip!();
    let mut first = env.start(env.request("dup1", sh("echo ready; exec sleep 100")));
    first.wait_ready().await;
    let e = env
        .run(env.request("dup1", sh("true")))
        .await
        .result
        .unwrap_err();
    assert!(matches!(e, ExecError::AlreadyExists { .. }), "{e}");
    // The failed second run must not have touched the first.
    first.cancel.cancel();
    let e = first.finish().await.result.unwrap_err();
    assert!(e.is_cancelled(), "{e}");
    env.assert_clean();
}

#[tokio::test]
async fn no_new_privileges_can_be_turned_on() {
    let mut env = env_or_skip!();
    env.exec = env.exec.clone().with_no_new_privileges(true);
    let out = env
        .run(env.request("nnp1", sh("grep NoNewPrivs /proc/self/status")))
        .await
        .ok();
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    env.assert_clean();
}
