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
    // the snapshot remembers the blob it came from, for exports
    let blobs = registry::layer_blobs(&e.store, &key).unwrap();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].digest, pulled.layers[0].0);
    assert_eq!(blobs[0].diff_id, pulled.diff_ids[0]);
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

/// Puts a one-layer image whose layer is `layer` into `store`; returns the manifest's
/// digest.
fn store_image(store: &ContentStore, layer: &[u8]) -> oci::Digest {
    let layer_digest = store.put(layer).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = store.put(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{layer_digest}","size":{}}}]}}"#,
        oci::media::OCI_MANIFEST,
        oci::media::OCI_CONFIG,
        config.len(),
        oci::media::OCI_LAYER,
        layer.len()
    );
    store.put(manifest.as_bytes()).unwrap()
}

/// Bytes that do not compress and are not all alike (xorshift), so the registry stores
/// what was sent and nothing can be mistaken for it.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_blobs_stream_in_chunks_and_mount_across_repositories() {
    let Some(_) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    // Basic auth: every chunk of an upload must carry the credentials.
    let reg = testkit::Registry::start_with_htpasswd("pusher", "pw-7f3").unwrap();
    let host = reg.host();
    let creds: registry::CredentialsFn = Arc::new(move |h: &str| {
        (h == host).then(|| Credentials {
            username: "pusher".into(),
            secret: "pw-7f3".into(),
        })
    });
    let r = Registry::new(Hosts::default(), Some(creds));
    let e = env();
    // Several upload reads and client chunks, the last one short.
    let layer = noise(19 * 1024 * 1024 + 123);
    let manifest = store_image(&e.store, &layer);
    let layer_digest = testkit::sha256_digest(&layer);

    r.push(
        &format!("{}/big/one:v1", reg.host()),
        &manifest,
        oci::media::OCI_MANIFEST,
        &e.store,
    )
    .await
    .unwrap();
    let client = reg.client();
    assert_eq!(client.get_blob("big/one", &layer_digest).unwrap(), layer);
    let log = reg.log();
    assert!(
        !log.contains("mount="),
        "nothing to mount from on a first push"
    );
    let patches = log.matches("\"PATCH /v2/big/one/blobs/uploads/").count();
    assert!(
        patches >= 5,
        "the layer goes in chunks, {patches} here:\n{log}"
    );
    // the registry's query escaping of the digest's colon
    let mounted = format!(
        "mount=sha256%3A{}",
        layer_digest.trim_start_matches("sha256:")
    );

    // Another repository of the same registry: the layer is mounted, not sent again.
    r.push(
        &format!("{}/big/two:v1", reg.host()),
        &manifest,
        oci::media::OCI_MANIFEST,
        &e.store,
    )
    .await
    .unwrap();
    assert!(
        reg.log().contains(&mounted),
        "the second push mounts the layer:\n{}",
        reg.log()
    );
    assert!(!reg.log().contains("\"PATCH /v2/big/two/"), "{}", reg.log());
    assert_eq!(client.get_blob("big/two", &layer_digest).unwrap(), layer);
    let fetched = client.get_oci_manifest("big/two", "v1").unwrap();
    assert_eq!(testkit::sha256_digest(&fetched.bytes), manifest.to_string());

    // The same repository again: everything is there, nothing is sent.
    let posts = reg.log().matches("\"POST /v2/").count();
    r.push(
        &format!("{}/big/two:v2", reg.host()),
        &manifest,
        oci::media::OCI_MANIFEST,
        &e.store,
    )
    .await
    .unwrap();
    assert_eq!(reg.log().matches("\"POST /v2/").count(), posts);
    let tags = client.list_tags("big/two").unwrap();
    assert!(tags.contains(&"v2".to_string()), "{tags:?}");
}
