//! A client session and the daemon's session manager talking through a real tonic
//! server on a unix socket: file sync both ways, secrets, auth, health and shutdown.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use proto::control::control_client::ControlClient;
use proto::control::*;
use proto::health::HealthCheckRequest;
use proto::health::health_check_response::ServingStatus;
use proto::health::health_client::HealthClient;
use session::filesync::SyncOptions;
use session::fsutil::FilterOptions;
use session::{
    AuthProvider, FileSendTarget, FileSyncProvider, HealthConfig, SecretsProvider, Session,
    SessionInfo, SessionManager, auth, filesend, filesync, secrets,
};
use tonic::Request;
use tonic::transport::Channel;

/// Starts the daemon side on a socket in `dir`; returns the manager and a client.
async fn daemon(dir: &Path, health: HealthConfig) -> (SessionManager, ControlClient<Channel>) {
    let sessions = SessionManager::with_health(health);
    let client = common::serve(dir, sessions.clone()).await;
    (sessions, client)
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn fast_health() -> HealthConfig {
    HealthConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        failure_threshold: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (sessions, control) = daemon(tmp.path(), fast_health()).await;

    let context = tmp.path().join("context");
    write(&context, "Dockerfile", "FROM scratch\n");
    write(&context, "src/main.go", "package main\n");
    write(&context, "src/main_test.go", "package main // test\n");
    write(&context, "node_modules/x/index.js", "big");
    write(&context, "README.md", "readme");
    let out_dir = tmp.path().join("out");
    let tar_path = tmp.path().join("out.tar");

    let mut session = Session::new("shared-key");
    session
        .allow(FileSyncProvider::new([("context", context.clone())]))
        .allow(FileSendTarget::new().dir(0, &out_dir).file(1, &tar_path))
        .allow(SecretsProvider::new([("token", b"s3cret".to_vec())]))
        .allow(AuthProvider::from_json(r#"{"auths":{"r.example.com":{"auth":"dTpw"}}}"#).unwrap());
    let id = session.id().to_string();
    let closer = session.closer();
    let client = tokio::spawn(session.run(control));

    // The daemon finds the session by id (also through a `prefix:id` key).
    let caller = sessions
        .get(&format!("ctx:{id}"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(caller.id(), id);
    assert_eq!(caller.shared_key(), "shared-key");
    assert!(caller.supports(filesync::DIFF_COPY_METHOD));
    assert!(caller.supports("/grpc.health.v1.Health/Check"));
    assert!(!caller.supports("/moby.sshforward.v1.SSH/ForwardAgent"));

    let health = HealthClient::new(caller.channel())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    // Several health periods later the session is still there.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(sessions.try_get(&id).is_some());

    // FileSync with patterns applied on the client.
    let dest = tmp.path().join("daemon/context");
    let opts = SyncOptions {
        name: "context".into(),
        filter: FilterOptions {
            include_patterns: vec!["Dockerfile".into(), "src".into(), "node_modules".into()],
            exclude_patterns: vec!["node_modules".into(), "**/*_test.go".into()],
            follow_paths: Vec::new(),
        },
        ..SyncOptions::default()
    };
    let stats = filesync::sync(&caller, &dest, &opts).await.unwrap();
    assert_eq!(files(&dest), ["Dockerfile", "src", "src/main.go"]);
    assert_eq!(
        stats.bytes_received,
        ("FROM scratch\n".len() + "package main\n".len()) as u64
    );

    let stats = filesync::sync(&caller, &dest, &opts).await.unwrap();
    assert_eq!((stats.bytes_received, stats.files_requested), (0, 0));

    write(&context, "src/main.go", "package main // v2\n");
    let stats = filesync::sync(&caller, &dest, &opts).await.unwrap();
    assert_eq!(stats.bytes_received, "package main // v2\n".len() as u64);
    assert_eq!(stats.files_requested, 1);
    assert_eq!(
        std::fs::read_to_string(dest.join("src/main.go")).unwrap(),
        "package main // v2\n"
    );

    let missing = SyncOptions {
        name: "nope".into(),
        ..SyncOptions::default()
    };
    let err = filesync::sync(&caller, &tmp.path().join("x"), &missing)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no access allowed to dir"),
        "{err}"
    );

    // FileSend, directory mode: the daemon sends, the client receives.
    let export = tmp.path().join("daemon/export");
    write(&export, "bin/app", "ELF...");
    write(&export, "etc/config", "k=v");
    filesend::copy_to_caller(&caller, 0, &export).await.unwrap();
    assert_eq!(files(&out_dir), ["bin", "bin/app", "etc", "etc/config"]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("bin/app")).unwrap(),
        "ELF..."
    );

    // FileSend, byte-stream mode.
    let md = BTreeMap::from([("name".to_string(), "image".to_string())]);
    let mut w = filesend::copy_file_writer(&caller, 1, &md).await.unwrap();
    w.write(b"tar bytes ").await.unwrap();
    w.write(&vec![b'x'; 5 << 20]).await.unwrap();
    w.finish().await.unwrap();
    let written = std::fs::read(&tar_path).unwrap();
    assert_eq!(written.len(), 10 + (5 << 20));
    assert!(written.starts_with(b"tar bytes x"));
    let w = filesend::copy_file_writer(&caller, 9, &md).await.unwrap();
    let err = w.finish().await.unwrap_err();
    assert!(err.to_string().contains("exporter 9 not found"), "{err}");

    // Secrets and credentials.
    assert_eq!(
        secrets::get_secret(&caller, "token").await.unwrap(),
        Some(b"s3cret".to_vec())
    );
    assert_eq!(secrets::get_secret(&caller, "other").await.unwrap(), None);
    assert_eq!(
        auth::credentials(&caller, "r.example.com").await.unwrap(),
        Some(("u".to_string(), "p".to_string()))
    );
    assert_eq!(
        auth::credentials(&caller, "q.example.com").await.unwrap(),
        None
    );

    // Closing the client ends the session on both sides.
    closer.cancel();
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("client session ends")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), caller.closed())
        .await
        .expect("daemon sees the session end");
    assert!(sessions.try_get(&id).is_none());
    assert!(sessions.get(&id, Duration::from_millis(100)).await.is_err());
}

#[tokio::test]
async fn unanswered_health_checks_close_the_session() {
    let sessions = SessionManager::with_health(HealthConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        failure_threshold: 2,
    });
    let info = SessionInfo {
        id: "silent".into(),
        ..SessionInfo::default()
    };
    // A client that never answers anything.
    let mut outbound = sessions
        .handle_conn(info.clone(), futures::stream::pending())
        .unwrap();
    let caller = sessions
        .get("silent", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(
        sessions.handle_conn(info, futures::stream::pending()),
        Err(session::Error::Duplicate(_))
    ));
    tokio::time::timeout(Duration::from_secs(5), caller.closed())
        .await
        .expect("two failed checks close the session");
    assert!(sessions.try_get("silent").is_none());
    // The stream back to the client ends too (after the HTTP/2 preface and checks).
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while outbound.next().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok());
}

#[tokio::test]
async fn missing_session_times_out() {
    let sessions = SessionManager::new();
    let err = sessions
        .get("nobody", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, session::Error::NoSession(ref id) if id == "nobody"));
}

#[tokio::test]
async fn session_without_id_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (_sessions, mut control) = daemon(tmp.path(), fast_health()).await;
    let request = Request::new(futures::stream::empty::<BytesMessage>());
    let err = control.session(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_session_and_declined_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (sessions, control) = daemon(tmp.path(), fast_health()).await;
    let mut first = Session::with_id("dup", "k");
    first.allow(FileSendTarget::new().output(2, |_| Ok(None)));
    let closer = first.closer();
    let task = tokio::spawn(first.run(control.clone()));
    let caller = sessions.get("dup", Duration::from_secs(10)).await.unwrap();

    // A second session with the same id is refused; the first one is unaffected.
    let second = Session::with_id("dup", "k");
    let err = tokio::time::timeout(Duration::from_secs(10), second.run(control.clone()))
        .await
        .expect("refused session returns")
        .unwrap_err();
    assert!(
        matches!(&err, session::Error::Status(s) if s.code() == tonic::Code::AlreadyExists),
        "{err}"
    );
    assert!(sessions.try_get("dup").is_some());

    // A client that declines an output answers AlreadyExists.
    let mut w = filesend::copy_file_writer(&caller, 2, &BTreeMap::new())
        .await
        .unwrap();
    let result = match w.write(b"x").await {
        Err(e) => Err(e),
        Ok(()) => w.finish().await,
    };
    let err = result.unwrap_err();
    assert!(err.to_string().contains("target already exists"), "{err}");

    // Without FileSync the daemon refuses to sync rather than calling.
    let err = filesync::sync(&caller, &tmp.path().join("d"), &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, session::Error::Unsupported(_)), "{err}");

    closer.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
