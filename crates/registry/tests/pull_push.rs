//! Pull from and push to a real Distribution registry on 127.0.0.1, and unpack into real
//! snapshots.

use std::sync::Arc;

use content::ContentStore;
use llb::Platform;
use registry::{Credentials, Hosts, Registry, unpack};

struct Env {
    _dir: tempfile::TempDir,
    store: ContentStore,
    snapshotter: Arc<dyn snapshot::Snapshotter>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let md: Arc<dyn metadata::MetadataStore> =
        Arc::new(metadata::RedbStore::open(&dir.path().join("metadata.redb"), &[]).unwrap());
    let store = ContentStore::open(dir.path(), md.clone()).unwrap();
    let snapshotter = snapshot::auto(dir.path(), md).unwrap();
    Env {
        _dir: dir,
        store,
        snapshotter,
    }
}

fn is_root() -> bool {
    uid() == 0
}

fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs root in CI"
    );
    eprintln!("SKIPPED: needs root");
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_unpack_and_push_busybox() {
    if !require_root() {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let e = env();
    let r = Registry::new(Hosts::default(), None);
    let reference = format!("{}/busybox:latest", reg.host());
    let lease = e.store.lease_guard("pull-test", None).unwrap();
    let pulled = r
        .pull(&reference, &Platform::host(), &e.store, Some(lease.id()))
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(pulled.config_digest.to_string(), image.config_digest());
    assert_eq!(pulled.diff_ids[0].to_string(), image.diff_id());
    assert_eq!(pulled.layers.len(), 1);
    for d in [
        pulled.manifest_digest,
        pulled.config_digest,
        pulled.layers[0].0,
    ] {
        e.store.verify(&d).unwrap();
    }
    // everything pulled is held by the lease
    let held = e.store.lease_blobs(lease.id()).unwrap();
    assert!(held.contains(&pulled.layers[0].0));

    let key = unpack(&pulled, &e.store, e.snapshotter.as_ref())
        .unwrap()
        .unwrap();
    let dir = e.snapshotter.layer_dir(&key).unwrap();
    assert!(dir.join("bin/busybox").is_file());
    assert!(dir.join("etc/passwd").is_file());
    assert_eq!(
        std::fs::read_link(dir.join("bin/sh")).unwrap(),
        std::path::Path::new("/bin/busybox")
    );
    // a second unpack reuses the snapshot
    let before = e.snapshotter.list().unwrap().len();
    assert_eq!(
        unpack(&pulled, &e.store, e.snapshotter.as_ref()).unwrap(),
        Some(key)
    );
    assert_eq!(e.snapshotter.list().unwrap().len(), before);

    // a second pull fetches nothing new and gives the same image
    let again = r
        .pull(&reference, &Platform::host(), &e.store, None)
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, pulled.manifest_digest);

    // push it under another name and read it back with an independent client
    let pushed = r
        .push(
            &format!("{}/copies/busybox:v1", reg.host()),
            &pulled.manifest_digest,
            &pulled.manifest_media_type,
            &e.store,
        )
        .await
        .unwrap();
    assert_eq!(pushed, pulled.manifest_digest);
    let fetched = reg
        .client()
        .get_oci_manifest("copies/busybox", "v1")
        .unwrap();
    assert_eq!(
        testkit::sha256_digest(&fetched.bytes),
        image.manifest_digest()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_tag_and_wrong_digest_are_clear_errors() {
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let e = env();
    let r = Registry::new(Hosts::default(), None);
    let err = r
        .pull(
            &format!("{}/nothing:here", reg.host()),
            &Platform::host(),
            &e.store,
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing:here"), "{err}");

    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let wrong = format!("{}/busybox@sha256:{}", reg.host(), "0".repeat(64));
    let err = r
        .pull(&wrong, &Platform::host(), &e.store, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("busybox"), "{err}");
    let err = r
        .pull("Bad Ref", &Platform::host(), &e.store, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Bad Ref"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_callback() {
    let Some(_) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let reg = testkit::Registry::start_with_htpasswd("alice", "s3cret").unwrap();
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let reference = format!("{}/busybox:latest", reg.host());
    let e = env();

    let anonymous = Registry::new(Hosts::default(), None);
    let err = anonymous
        .pull(&reference, &Platform::host(), &e.store, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&reference), "{err}");

    let host = reg.host();
    let creds: registry::CredentialsFn = Arc::new(move |h: &str| {
        (h == host).then(|| Credentials {
            username: "alice".into(),
            secret: "s3cret".into(),
        })
    });
    let authed = Registry::new(Hosts::default(), Some(creds));
    let pulled = authed
        .pull(&reference, &Platform::host(), &e.store, None)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
}
