//! Layers and images from snapshot chains on a real worker (both snapshotters): a pulled
//! base image's blob is reused as it is, a layer made once is remembered and not made
//! again, compression options pick other blobs, and the committed image names them all.

use std::collections::BTreeMap;
use std::io::Read;

use archive::Compression;
use exporter::{CompressionConfig, ExportOptions, ImageSource, Kind, LayerOptions, Origin};
use worker::{Worker, WorkerOptions};

fn require_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "exporter tests need root in CI"
        );
        eprintln!("SKIPPED: needs root (mounts)");
    }
    root
}

/// Commits a snapshot over `parent` whose own change is `files` (path, content).
fn commit_layer(w: &Worker, parent: Option<&str>, name: &str, files: &[(&str, &str)]) {
    let active = format!("active-{name}");
    w.snapshotter.prepare(&active, parent).unwrap();
    let dir = w.snapshotter.layer_dir(&active).unwrap();
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    w.snapshotter.commit(name, &active).unwrap();
}

/// The paths in a layer blob.
fn layer_paths(w: &Worker, digest: &oci::Digest) -> Vec<String> {
    let blob = w.content.open_blob(digest).unwrap();
    let (_, dec) = archive::Decoder::detect(std::io::BufReader::new(blob)).unwrap();
    let mut a = tar::Archive::new(dec);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn opts(compression: CompressionConfig) -> LayerOptions {
    LayerOptions {
        compression,
        rewrite_epoch: None,
    }
}

fn blob_count(w: &Worker) -> usize {
    w.content.list().unwrap().len()
}

async fn layers_of_a_chain(snapshotter: &str) {
    if !require_root() {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", busybox.image())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::open(
        dir.path(),
        WorkerOptions {
            snapshotter: Some(snapshotter.into()),
            ..WorkerOptions::default()
        },
    )
    .await
    .unwrap();
    let (_, base) = w
        .pull(
            &format!("{}/busybox:latest", reg.host()),
            &llb::Platform::host(),
            None,
        )
        .await
        .unwrap();
    let base = base.unwrap();
    commit_layer(&w, Some(&base), "top", &[("hi", "hi\n")]);
    commit_layer(&w, Some("top"), "same", &[]);

    let gzip = CompressionConfig::default();
    let layers = exporter::export_layers(&w, Some("same"), &opts(gzip)).unwrap();
    assert_eq!(layers.len(), 3, "{layers:#?}");
    assert_eq!(layers[0].origin, Origin::Pulled);
    assert_eq!(layers[0].digest.to_string(), busybox.layer_digest());
    assert_eq!(layers[0].diff_id.to_string(), busybox.diff_id());
    assert_eq!(layers[1].origin, Origin::Computed);
    assert_eq!(layers[1].media_type, oci::media::OCI_LAYER_GZIP);
    assert_eq!(layer_paths(&w, &layers[1].digest), ["hi"]);
    // a snapshot without changes still is a layer, an empty one
    assert_eq!(layers[2].origin, Origin::Computed);
    assert!(layer_paths(&w, &layers[2].digest).is_empty());

    // the second export makes nothing
    let blobs = blob_count(&w);
    let again = exporter::export_layers(&w, Some("same"), &opts(gzip)).unwrap();
    assert_eq!(blob_count(&w), blobs);
    assert_eq!(again[1].origin, Origin::Remembered);
    let digests = |l: &[exporter::Layer]| l.iter().map(|l| l.digest).collect::<Vec<_>>();
    assert_eq!(digests(&again), digests(&layers));

    // another level is another blob; the pulled one stays
    let gzip1 = CompressionConfig {
        level: Some(1),
        ..gzip
    };
    let fast = exporter::export_layers(&w, Some("top"), &opts(gzip1)).unwrap();
    assert_eq!(fast[0].origin, Origin::Pulled);
    assert_eq!(fast[1].origin, Origin::Computed);
    assert_eq!(fast[1].diff_id, layers[1].diff_id);

    // zstd applies to new layers only, unless forced
    let zstd = CompressionConfig {
        compression: Compression::Zstd,
        ..gzip
    };
    let z = exporter::export_layers(&w, Some("top"), &opts(zstd)).unwrap();
    assert_eq!(z[0].digest, layers[0].digest);
    assert_eq!(z[1].media_type, oci::media::OCI_LAYER_ZSTD);
    assert_ne!(z[1].digest, layers[1].digest);
    assert_eq!(z[1].diff_id, layers[1].diff_id);
    let forced = exporter::export_layers(
        &w,
        Some("top"),
        &opts(CompressionConfig {
            force: true,
            ..zstd
        }),
    )
    .unwrap();
    assert_eq!(forced[0].origin, Origin::Computed);
    assert_eq!(forced[0].media_type, oci::media::OCI_LAYER_ZSTD);
    assert_eq!(forced[1].digest, z[1].digest);
    let raw = exporter::export_layers(
        &w,
        Some("top"),
        &opts(CompressionConfig {
            compression: Compression::Uncompressed,
            force: true,
            ..gzip
        }),
    )
    .unwrap();
    assert_eq!(raw[1].digest, raw[1].diff_id);
    assert_eq!(raw[1].diff_id, layers[1].diff_id);

    // rewrite-timestamp: the same files written a second apart give the same layer once
    // their times are clamped; the base keeps its blob, and the rewritten blobs are
    // remembered apart from the plain ones.
    commit_layer(&w, Some(&base), "early", &[("d/f", "same\n")]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    commit_layer(&w, Some(&base), "late", &[("d/f", "same\n")]);
    let plain_early = exporter::export_layers(&w, Some("early"), &opts(gzip)).unwrap();
    let plain_late = exporter::export_layers(&w, Some("late"), &opts(gzip)).unwrap();
    assert_ne!(
        plain_early[1].digest, plain_late[1].digest,
        "file times differ, so must the plain layers"
    );
    let epoch = 1_000_000_000;
    let rewrite = LayerOptions {
        compression: gzip,
        rewrite_epoch: Some(epoch),
    };
    let early = exporter::export_layers(&w, Some("early"), &rewrite).unwrap();
    let late = exporter::export_layers(&w, Some("late"), &rewrite).unwrap();
    assert_eq!(early[0].origin, Origin::Pulled);
    assert_eq!(early[0].digest.to_string(), busybox.layer_digest());
    assert_eq!(early[1].origin, Origin::Computed);
    assert_eq!(early[1].digest, late[1].digest);
    assert_eq!(early[1].diff_id, late[1].diff_id);
    assert_ne!(early[1].digest, plain_early[1].digest);
    let blob = w.content.open_blob(&early[1].digest).unwrap();
    let (_, dec) = archive::Decoder::detect(std::io::BufReader::new(blob)).unwrap();
    let mut a = tar::Archive::new(dec);
    let mut seen = 0;
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mtime().unwrap(), epoch as u64, "{:?}", e.path());
        seen += 1;
    }
    assert_eq!(seen, 2, "d/ and d/f");
    // remembered under their own keys: each kind of export gets its own blob back
    let again = exporter::export_layers(&w, Some("early"), &rewrite).unwrap();
    assert_eq!(again[1].origin, Origin::Remembered);
    assert_eq!(again[1].digest, early[1].digest);
    let plain_again = exporter::export_layers(&w, Some("early"), &opts(gzip)).unwrap();
    assert_eq!(plain_again[1].origin, Origin::Remembered);
    assert_eq!(plain_again[1].digest, plain_early[1].digest);
    let other = LayerOptions {
        rewrite_epoch: Some(epoch + 1),
        ..rewrite
    };
    let other_epoch = exporter::export_layers(&w, Some("early"), &other).unwrap();
    assert_eq!(other_epoch[1].origin, Origin::Computed);

    // an image of the chain: Docker media types, diff_ids and history in line
    let mut attrs = BTreeMap::new();
    attrs.insert("oci-mediatypes".to_string(), "false".to_string());
    let opts = ExportOptions::parse(Kind::Image, &attrs).unwrap();
    let source = ImageSource {
        config: Some(
            br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hi"]},"history":[{"created":"2020-01-01T00:00:00Z","created_by":"base"},{"created_by":"RUN x","comment":"buildkit.dockerfile.v0"}]}"#
                .to_vec(),
        ),
        ..ImageSource::default()
    };
    let image = exporter::commit(
        &w.content,
        &layers,
        &source,
        &opts,
        exporter::time::Timestamp::from_secs(0),
    )
    .unwrap();
    assert_eq!(image.manifest.media_type, oci::media::DOCKER_MANIFEST);
    let manifest: serde_json::Value =
        serde_json::from_slice(&w.content.read_all(&image.manifest.digest).unwrap()).unwrap();
    assert_eq!(manifest["config"]["mediaType"], oci::media::DOCKER_CONFIG);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        oci::media::DOCKER_LAYER_GZIP
    );
    assert_eq!(manifest["layers"][0]["digest"], busybox.layer_digest());
    let mut config = Vec::new();
    w.content
        .open_blob(&image.config.digest)
        .unwrap()
        .read_to_end(&mut config)
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "one entry added for the third layer");
    assert_eq!(history[2]["comment"], "buildkit.exporter.image.v0");
    assert_eq!(config["config"]["Cmd"][0], "cat");
}

#[tokio::test]
async fn layers_of_a_chain_overlayfs() {
    layers_of_a_chain("overlayfs").await;
}

#[tokio::test]
async fn layers_of_a_chain_native() {
    layers_of_a_chain("native").await;
}
