//! The client's content stores (containerd's `Content` service over OCI layout
//! directories) driven by the daemon end through a real session tunnel: blobs written,
//! read back, refused when they do not match their digest, digests that would leave the
//! directory refused, ingests resumed and aborted, and the `index.json` helpers.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::containerd_content as api;
use proto::containerd_content::content_client::ContentClient;
use proto::control::control_client::ControlClient;
use session::content::{
    self, CallerStore, ContentStores, Descriptor, StoreIndex, WriteOutcome, local_store_id,
    sha256_digest,
};
use session::{Caller, HealthConfig, Session, SessionManager};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

/// Starts the daemon side on a socket in `dir`; returns the manager and a client.
async fn daemon(dir: &Path) -> (SessionManager, ControlClient<Channel>) {
    let sessions = SessionManager::with_health(HealthConfig {
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        failure_threshold: 3,
    });
    let client = common::serve(dir, sessions.clone()).await;
    (sessions, client)
}

/// Runs a client session serving `stores`; returns the daemon's caller and a closer.
async fn start(
    tmp: &Path,
    stores: ContentStores,
) -> (
    Caller,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), session::Error>>,
) {
    let (sessions, control) = daemon(tmp).await;
    let mut session = Session::new("shared-key");
    session.allow(stores);
    let id = session.id().to_string();
    let closer = session.closer();
    let task = tokio::spawn(session.run(control));
    let caller = sessions.get(&id, Duration::from_secs(10)).await.unwrap();
    (caller, closer, task)
}

async fn finish(
    closer: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), session::Error>>,
) {
    closer.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("client session ends")
        .unwrap()
        .unwrap();
}

/// Deterministic bytes that differ at every position (so misordered chunks show).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn blob_file(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[track_caller]
fn assert_content_error(err: &session::Error, want: Code, text: &str) {
    match err {
        session::Error::Content { code, message, .. } => {
            assert_eq!(*code, want, "{err}");
            assert!(message.contains(text), "{err}");
        }
        other => panic!("expected a content store error, got {other:?}"),
    }
}

fn with_store<T>(msg: T, id: &str) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert(content::STORE_ID_KEY, id.parse().unwrap());
    request
}

/// A raw `Write` stream: one response per request.
struct RawWrite {
    tx: mpsc::Sender<api::WriteContentRequest>,
    rx: Streaming<api::WriteContentResponse>,
}

impl RawWrite {
    async fn open(
        client: &ContentClient<Channel>,
        store: &str,
        first: api::WriteContentRequest,
    ) -> Result<(RawWrite, api::WriteContentResponse), Status> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(first).await.unwrap();
        let mut rx = client
            .clone()
            .write(with_store(ReceiverStream::new(rx), store))
            .await?
            .into_inner();
        let first = rx
            .message()
            .await?
            .expect("a response to the first message");
        Ok((RawWrite { tx, rx }, first))
    }

    async fn send(
        &mut self,
        req: api::WriteContentRequest,
    ) -> Result<api::WriteContentResponse, Status> {
        self.tx
            .send(req)
            .await
            .map_err(|_| Status::aborted("closed"))?;
        Ok(self.rx.message().await?.expect("a response"))
    }
}

fn stat(r: &str, total: i64, expected: &str) -> api::WriteContentRequest {
    api::WriteContentRequest {
        action: api::WriteAction::Stat as i32,
        r#ref: r.into(),
        total,
        expected: expected.into(),
        ..Default::default()
    }
}

fn write_at(offset: i64, data: &[u8]) -> api::WriteContentRequest {
    api::WriteContentRequest {
        action: api::WriteAction::Write as i32,
        offset,
        data: data.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_writes_and_reads_client_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache_str = cache.to_str().unwrap().to_string();
    let (caller, closer, task) = start(tmp.path(), ContentStores::new().local(&cache_str)).await;
    for method in [
        content::INFO_METHOD,
        content::READ_METHOD,
        content::WRITE_METHOD,
        content::DELETE_METHOD,
        content::ABORT_METHOD,
        "/containerd.services.content.v1.Content/ListStatuses",
    ] {
        assert!(caller.supports(method), "{method} announced");
    }
    let store = CallerStore::new(&caller, local_store_id(&cache_str));
    assert_eq!(store.store_id(), format!("local:{cache_str}"));

    let small = b"{\"schemaVersion\":2}".to_vec();
    let medium = pattern(300 << 10, 1);
    let large = pattern((3 << 20) + 12_345, 2);
    let empty = Vec::new();
    let digests: Vec<String> = [&small, &medium, &large, &empty]
        .iter()
        .map(|d| sha256_digest(d))
        .collect();

    // Nothing there yet: Info on a missing blob is None, not an error.
    assert_eq!(store.info(&digests[0]).await.unwrap(), None);
    assert!(!store.exists(&digests[2]).await.unwrap());
    let err = store.read(&digests[0]).await.unwrap_err();
    assert_content_error(&err, Code::NotFound, "not found");
    assert!(err.to_string().contains(&cache_str), "{err}");
    assert!(err.to_string().contains(&digests[0]), "{err}");

    // Three ways of sending: from memory, from a stream of odd pieces, from a reader.
    assert_eq!(
        store.write_bytes(&digests[0], &small).await.unwrap(),
        WriteOutcome::Written
    );
    let pieces: Vec<std::io::Result<Bytes>> = medium
        .chunks(7_001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    assert_eq!(
        store
            .write(
                &digests[1],
                medium.len() as u64,
                futures::stream::iter(pieces)
            )
            .await
            .unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        store
            .write_reader(&digests[2], large.len() as u64, &large[..])
            .await
            .unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        store.write_bytes(&digests[3], &empty).await.unwrap(),
        WriteOutcome::Written
    );

    // On the client's disk: an OCI layout, blobs under their digests, no ingest left.
    for (digest, data) in digests.iter().zip([&small, &medium, &large, &empty]) {
        assert_eq!(&std::fs::read(blob_file(&cache, digest)).unwrap(), data);
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(entries(&cache.join("ingest")), Vec::<String>::new());

    // Written twice: the second time nothing is sent.
    assert_eq!(
        store.write_bytes(&digests[2], &large).await.unwrap(),
        WriteOutcome::AlreadyExists
    );

    // Read back, whole, by range and as a stream of at most 1 MiB pieces.
    for (digest, data) in digests.iter().zip([&small, &medium, &large, &empty]) {
        assert_eq!(store.info(digest).await.unwrap(), Some(data.len() as u64));
        assert_eq!(&store.read(digest).await.unwrap(), data);
    }
    let at = (1 << 20) - 3;
    assert_eq!(
        store.read_range(&digests[2], at, 10).await.unwrap(),
        &large[at as usize..at as usize + 10]
    );
    assert_eq!(
        store
            .read_range(&digests[2], large.len() as u64 - 4, 100)
            .await
            .unwrap(),
        &large[large.len() - 4..]
    );
    let mut stream = store.read_stream(&digests[2]).await.unwrap();
    let mut sizes = Vec::new();
    let mut joined = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        sizes.push(piece.len());
        joined.extend_from_slice(&piece);
    }
    assert_eq!(joined, large);
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= content::CHUNK_SIZE), "{sizes:?}");

    // A blob that does not match its digest is refused and leaves nothing behind.
    let claimed = sha256_digest(b"what was promised");
    let err = store
        .write_bytes(&claimed, b"what was delivered")
        .await
        .unwrap_err();
    assert_content_error(&err, Code::FailedPrecondition, "unexpected commit digest");
    assert!(err.to_string().contains(&claimed), "{err}");
    assert_eq!(store.info(&claimed).await.unwrap(), None);
    assert!(!blob_file(&cache, &claimed).exists());
    assert_eq!(entries(&cache.join("ingest")), Vec::<String>::new());
    // So is data of the wrong size, before it is committed.
    let err = store
        .write(
            &claimed,
            100,
            futures::stream::iter([Ok(Bytes::from_static(b"what was promised"))]),
        )
        .await
        .unwrap_err();
    assert_content_error(
        &err,
        Code::InvalidArgument,
        "17 bytes of data for a blob of 100",
    );
    assert!(!blob_file(&cache, &claimed).exists());
    assert_eq!(entries(&cache.join("ingest")), Vec::<String>::new());

    // Delete.
    assert!(store.delete(&digests[0]).await.unwrap());
    assert_eq!(store.info(&digests[0]).await.unwrap(), None);
    assert!(!store.delete(&digests[0]).await.unwrap());

    finish(closer, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_that_leave_the_layout_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("a/b/layout");
    std::fs::create_dir_all(&layout).unwrap();
    let (caller, closer, task) = start(tmp.path(), ContentStores::new().store("s", &layout)).await;
    let before = entries(tmp.path());

    // The daemon's handle refuses them before calling.
    let store = CallerStore::new(&caller, "s");
    for bad in [
        "sha256:../../x",
        "sha256:../../../../../../etc/passwd",
        "sha512:00",
        "../x",
        "",
    ] {
        let err = store.info(bad).await.unwrap_err();
        assert_content_error(&err, Code::InvalidArgument, "invalid digest");
        let err = store.write_bytes(bad, b"x").await.unwrap_err();
        assert_content_error(&err, Code::InvalidArgument, "invalid digest");
    }

    // The client refuses them whoever asks.
    let client = ContentClient::new(caller.channel());
    let bad = "sha256:../../x";
    let info = client
        .clone()
        .info(with_store(api::InfoRequest { digest: bad.into() }, "s"))
        .await
        .unwrap_err();
    assert_eq!(info.code(), Code::InvalidArgument, "{info:?}");
    let read = client
        .clone()
        .read(with_store(
            api::ReadContentRequest {
                digest: bad.into(),
                ..Default::default()
            },
            "s",
        ))
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::InvalidArgument, "{read:?}");
    let delete = client
        .clone()
        .delete(with_store(
            api::DeleteContentRequest { digest: bad.into() },
            "s",
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::InvalidArgument, "{delete:?}");
    let write = RawWrite::open(&client, "s", stat("r", 1, bad))
        .await
        .err()
        .unwrap();
    assert_eq!(write.code(), Code::InvalidArgument, "{write:?}");
    // A commit with such an expected digest, after data.
    let (mut w, _) = RawWrite::open(&client, "s", stat("r", 0, ""))
        .await
        .unwrap();
    let commit = w
        .send(api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            expected: "sha256:../../../x".into(),
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(commit.code(), Code::InvalidArgument, "{commit:?}");

    // Requests without a store, or for a store the client does not have.
    let good = sha256_digest(b"x");
    let missing = client
        .clone()
        .info(Request::new(api::InfoRequest {
            digest: good.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains(content::STORE_ID_KEY),
        "{missing:?}"
    );
    let unknown = CallerStore::new(&caller, "local:/elsewhere")
        .info(&good)
        .await
        .unwrap_err();
    assert_content_error(&unknown, Code::NotFound, "unknown store local:/elsewhere");

    assert_eq!(entries(tmp.path()), before);
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("a/x").exists());
    assert_eq!(entries(&layout.join("blobs")), Vec::<String>::new());

    finish(closer, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_resume_by_ref_and_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let (caller, closer, task) = start(tmp.path(), ContentStores::new().store("s", &layout)).await;
    let client = ContentClient::new(caller.channel());
    let data = pattern(10_000, 3);
    let digest = sha256_digest(&data);

    // A first stream writes part of the blob and goes away.
    let (mut w, st) = RawWrite::open(&client, "s", stat("job-1", data.len() as i64, &digest))
        .await
        .unwrap();
    assert_eq!((st.offset, st.total), (0, data.len() as i64));
    assert_eq!(st.action, api::WriteAction::Stat as i32);
    let r = w.send(write_at(0, &data[..4_000])).await.unwrap();
    assert_eq!(r.offset, 4_000);
    assert_eq!(r.digest, sha256_digest(&data[..4_000]));
    drop(w);

    // Its progress is visible, and a second stream with the same ref resumes it.
    let status = || {
        let mut client = client.clone();
        async move {
            client
                .status(with_store(
                    api::StatusRequest {
                        r#ref: "job-1".into(),
                    },
                    "s",
                ))
                .await
        }
    };
    let mut found = None;
    for _ in 0..100 {
        // The first stream's end reaches the client asynchronously.
        match status().await {
            Ok(s)
                if s.get_ref()
                    .status
                    .as_ref()
                    .is_some_and(|s| s.offset == 4_000) =>
            {
                found = s.into_inner().status;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let found = found.expect("status of the ingest");
    assert_eq!(
        (found.r#ref.as_str(), found.total),
        ("job-1", data.len() as i64)
    );
    let listed = client
        .clone()
        .list_statuses(with_store(api::ListStatusesRequest::default(), "s"))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].r#ref, "job-1");

    let (mut w, st) = loop {
        match RawWrite::open(&client, "s", stat("job-1", 0, &digest)).await {
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(st.offset, 4_000);
    assert_eq!(st.digest, sha256_digest(&data[..4_000]));
    // Not at the current offset: refused.
    let gap = w.send(write_at(5_000, &data[5_000..])).await.unwrap_err();
    assert_eq!(gap.code(), Code::OutOfRange, "{gap:?}");
    let (mut w, _) = RawWrite::open(&client, "s", stat("job-1", 0, &digest))
        .await
        .unwrap();
    let r = w.send(write_at(4_000, &data[4_000..])).await.unwrap();
    assert_eq!(r.offset, data.len() as i64);
    let done = w
        .send(api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            offset: data.len() as i64,
            total: data.len() as i64,
            expected: digest.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.action, api::WriteAction::Commit as i32);
    assert_eq!(
        (done.offset, done.digest.as_str()),
        (data.len() as i64, digest.as_str())
    );
    assert_eq!(std::fs::read(blob_file(&layout, &digest)).unwrap(), data);

    // Once committed, a write of it is answered AlreadyExists at once.
    let again = RawWrite::open(&client, "s", stat("job-2", 0, &digest))
        .await
        .err()
        .unwrap();
    assert_eq!(again.code(), Code::AlreadyExists);

    // Abort drops an ingest.
    let other = pattern(100, 4);
    let (mut w, _) = RawWrite::open(&client, "s", stat("job-3", 0, ""))
        .await
        .unwrap();
    w.send(write_at(0, &other[..50])).await.unwrap();
    drop(w);
    let mut aborted = false;
    for _ in 0..100 {
        let status = client
            .clone()
            .status(with_store(
                api::StatusRequest {
                    r#ref: "job-3".into(),
                },
                "s",
            ))
            .await;
        if status.is_ok() {
            client
                .clone()
                .abort(with_store(
                    api::AbortRequest {
                        r#ref: "job-3".into(),
                    },
                    "s",
                ))
                .await
                .unwrap();
            aborted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(aborted);
    let gone = client
        .clone()
        .status(with_store(
            api::StatusRequest {
                r#ref: "job-3".into(),
            },
            "s",
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // List shows the committed blob.
    let mut list = client
        .clone()
        .list(with_store(api::ListContentRequest::default(), "s"))
        .await
        .unwrap()
        .into_inner();
    let batch = list.message().await.unwrap().unwrap();
    assert_eq!(batch.info.len(), 1);
    assert_eq!(
        (batch.info[0].digest.as_str(), batch.info[0].size),
        (digest.as_str(), data.len() as i64)
    );

    finish(closer, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_chosen_by_id_and_concurrent_writers_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let context = tmp.path().join("context");
    // A layout that exists before the build, as an `--oci-layout` context would.
    let existing = b"a blob already in the layout".to_vec();
    let existing_digest = sha256_digest(&existing);
    std::fs::create_dir_all(context.join("blobs/sha256")).unwrap();
    std::fs::write(blob_file(&context, &existing_digest), &existing).unwrap();
    let stores = ContentStores::new()
        .local(cache.to_str().unwrap())
        .store("oci:ctx", &context);
    assert_eq!(
        stores.ids(),
        [
            "local:".to_string() + cache.to_str().unwrap(),
            "oci:ctx".into()
        ]
    );
    let (caller, closer, task) = start(tmp.path(), stores).await;
    let cache_store = CallerStore::new(&caller, local_store_id(cache.to_str().unwrap()));
    let context_store = CallerStore::new(&caller, "oci:ctx");
    assert_eq!(
        context_store.read(&existing_digest).await.unwrap(),
        existing
    );
    assert_eq!(cache_store.info(&existing_digest).await.unwrap(), None);

    // Two writers of one blob at once: both succeed, one of them writes it.
    let data = pattern(2 << 20, 5);
    let digest = sha256_digest(&data);
    let (a, b) = tokio::join!(
        cache_store.write_bytes(&digest, &data),
        cache_store.write_bytes(&digest, &data)
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| *o == WriteOutcome::Written);
    assert_eq!(
        outcomes,
        [WriteOutcome::AlreadyExists, WriteOutcome::Written]
    );
    assert_eq!(cache_store.read(&digest).await.unwrap(), data);
    assert_eq!(context_store.info(&digest).await.unwrap(), None);

    finish(closer, task).await;
}

#[test]
fn index_json_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let index = StoreIndex::new(&dir);
    let err = index.read().unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("index.json"), "{err}");

    // The descriptor buildctl gets back as the cache manifest.
    let first: Descriptor = serde_json::from_str(&format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":123,"annotations":{{"x":"y"}}}}"#,
        sha256_digest(b"one")
    ))
    .unwrap();
    let mut second = first.clone();
    second.digest = sha256_digest(b"two");
    let mut third = first.clone();
    third.digest = sha256_digest(b"three");

    index.put(&first, content::index::DEFAULT_TAG).unwrap();
    index.put(&second, "v2").unwrap();
    assert_eq!(index.get("latest").unwrap().unwrap().digest, first.digest);
    index.put(&third, "latest").unwrap();

    let got = index.get("latest").unwrap().unwrap();
    assert_eq!(got.digest, third.digest);
    assert_eq!(got.size, 123);
    assert_eq!(got.annotations["x"], "y");
    assert_eq!(
        got.annotations[content::index::REF_NAME_ANNOTATION],
        "latest"
    );
    assert_eq!(index.get("v2").unwrap().unwrap().digest, second.digest);
    assert_eq!(index.get("v3").unwrap(), None);

    // The files as another OCI tool sees them.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(raw["schemaVersion"], 2);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests = raw["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(
        manifests[1]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(manifests[1]["digest"], third.digest.as_str());
    assert_eq!(
        std::fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    // Nothing left over: no lock file, no temporary file.
    assert_eq!(entries(&dir), ["index.json", "oci-layout"]);

    // Writers in several threads lose none of each other's tags.
    std::thread::scope(|s| {
        for i in 0..8 {
            let index = index.clone();
            let desc = first.clone();
            s.spawn(move || index.put(&desc, &format!("t{i}")).unwrap());
        }
    });
    let all = index.read().unwrap();
    for i in 0..8 {
        assert!(all.get(&format!("t{i}")).is_some(), "t{i} kept");
    }
    assert_eq!(all.manifests.len(), 10);
}
