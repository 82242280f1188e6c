//! Per-call credentials against a real Distribution registry requiring a password: each
//! call uses what its own source says, and nothing one call authenticated with serves a
//! later call without credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use content::ContentStore;
use futures::future::BoxFuture;
use llb::Platform;
use registry::{CredentialSource, Credentials, Error, Hosts, Registry};

/// Answers with fixed credentials (or none, or an error) and counts the questions.
struct Fixed {
    answer: Result<Option<Credentials>, String>,
    asked: AtomicUsize,
    hosts: std::sync::Mutex<Vec<String>>,
}

impl Fixed {
    fn new(answer: Result<Option<Credentials>, String>) -> Fixed {
        Fixed {
            answer,
            asked: AtomicUsize::new(0),
            hosts: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl CredentialSource for Fixed {
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>, String>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.hosts.lock().unwrap().push(host.to_string());
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

fn store(dir: &std::path::Path) -> ContentStore {
    let md: Arc<dyn metadata::MetadataStore> =
        Arc::new(metadata::RedbStore::open(&dir.join("metadata.redb"), &[]).unwrap());
    ContentStore::open(dir, md).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_call_uses_its_own_credentials() {
    if !testkit::require_tool(
        std::path::Path::new(testkit::registry::DOCKER_REGISTRY),
        testkit::registry::INSTALL_HINT,
    )
    .unwrap()
    {
        return;
    }
    let reg = testkit::Registry::start_with_htpasswd("alice", "s3cret").unwrap();
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let reference = format!("{}/busybox:latest", reg.host());
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let r = Registry::new(Hosts::default(), None);
    let platform = Platform::host();

    let anonymous = Fixed::new(Ok(None));
    let wrong = Fixed::new(Ok(Some(Credentials {
        username: "alice".into(),
        secret: "wrong".into(),
    })));
    let right = Fixed::new(Ok(Some(Credentials {
        username: "alice".into(),
        secret: "s3cret".into(),
    })));
    let broken = Fixed::new(Err("the session is gone".into()));

    let refused = |e: Error| {
        let msg = e.to_string();
        assert!(matches!(e, Error::Unauthorized { .. }), "{msg}");
        assert!(msg.contains(&reference) && msg.contains("401"), "{msg}");
    };
    refused(
        r.resolve_with(&reference, &platform, Some(&anonymous))
            .await
            .unwrap_err(),
    );
    refused(
        r.resolve_with(&reference, &platform, Some(&wrong))
            .await
            .unwrap_err(),
    );
    let pulled = r
        .pull_with(&reference, &platform, &store, None, Some(&right))
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    let (digest, _) = r
        .resolve_config_with(&reference, &platform, Some(&right))
        .await
        .unwrap();
    assert_eq!(digest, pulled.manifest_digest);
    // What the right credentials opened stays theirs.
    refused(
        r.resolve_with(&reference, &platform, Some(&anonymous))
            .await
            .unwrap_err(),
    );
    refused(r.resolve(&reference, &platform).await.unwrap_err());

    let err = r
        .resolve_with(&reference, &platform, Some(&broken))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Credentials { .. }), "{err}");
    assert!(err.to_string().contains("the session is gone"), "{err}");

    assert_eq!(right.hosts.lock().unwrap()[0], reg.host());
    assert!(right.asked.load(Ordering::SeqCst) >= 2);
}
