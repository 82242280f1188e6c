//! End-to-end checks of the testkit fixtures against the real tools: build the busybox image,
//! write and verify its OCI layout, push it to a real `docker-registry`, and read it back over
//! HTTP (and with skopeo when installed).
//!
//! Tests needing `/bin/busybox` or `docker-registry` print a loud message and return when the tool
//! is missing, unless `CI` is set, in which case they fail.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use testkit::busybox::{DEFAULT_BUSYBOX, INSTALL_HINT as BUSYBOX_HINT};
use testkit::image::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use testkit::registry::{DOCKER_REGISTRY, INSTALL_HINT as REGISTRY_HINT};
use testkit::{BusyboxImage, Registry, require_tool, sha256_digest};

const SKOPEO: &str = "/usr/bin/skopeo";

fn have_busybox() -> Result<bool> {
    Ok(require_tool(Path::new(DEFAULT_BUSYBOX), BUSYBOX_HINT)?)
}

/// Names of all entries in a gzip-compressed tar.
fn layer_entries(gzip: &[u8]) -> Result<BTreeSet<String>> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gzip).read_to_end(&mut tar)?;
    let mut names = BTreeSet::new();
    for entry in tar::Archive::new(&tar[..]).entries()? {
        let entry = entry?;
        names.insert(
            entry
                .path()?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned(),
        );
    }
    Ok(names)
}

/// Runs `skopeo inspect` on the pushed image and returns its reported digest, or `None` (with a
/// loud message) when skopeo is not installed.
fn skopeo_digest(reference: &str, creds: Option<(&str, &str)>) -> Result<Option<String>> {
    if !Path::new(SKOPEO).exists() {
        eprintln!(
            "\n!!!!! skopeo not installed (apt-get install skopeo): skipping skopeo check !!!!!\n"
        );
        return Ok(None);
    }
    let mut cmd = Command::new(SKOPEO);
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some((user, password)) = creds {
        cmd.arg(format!("--creds={user}:{password}"));
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .context("run skopeo inspect")?;
    ensure!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(report["Digest"].as_str().map(str::to_owned))
}

#[test]
fn push_busybox_and_pull_it_back() -> Result<()> {
    if !have_busybox()? {
        return Ok(());
    }
    let Some(registry) = Registry::start_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let image = BusyboxImage::build(dir.path())?;
    let client = registry.client();
    let pushed = client.push_image("busybox", "latest", image.image())?;
    assert_eq!(pushed, image.manifest_digest());

    // A second push uploads nothing new and gives the same digest.
    for blob in image.image().content_blobs() {
        assert!(client.blob_exists("busybox", blob.digest())?);
    }
    assert_eq!(
        client.push_image("busybox", "latest", image.image())?,
        pushed
    );
    assert_eq!(client.list_tags("busybox")?, ["latest"]);

    let fetched = client.get_manifest("busybox", "latest", MEDIA_TYPE_MANIFEST)?;
    assert_eq!(fetched.media_type, MEDIA_TYPE_MANIFEST);
    assert_eq!(sha256_digest(&fetched.bytes), image.manifest_digest());
    assert_eq!(
        fetched.digest_header.as_deref(),
        Some(image.manifest_digest())
    );

    let manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("config digest")?;
    assert_eq!(config_digest, image.config_digest());
    let config: serde_json::Value =
        serde_json::from_slice(&client.get_blob("busybox", config_digest)?)?;
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_id());

    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_GZIP);
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .context("layer digest")?;
    let layer = client.get_blob("busybox", layer_digest)?;
    assert_eq!(sha256_digest(&layer), layer_digest);
    let names = layer_entries(&layer)?;
    for wanted in [
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "etc/group",
        "tmp",
        "usr/bin/env",
    ] {
        assert!(names.contains(wanted), "layer lacks {wanted}");
    }

    let reference = format!("{}/busybox:latest", registry.host());
    if let Some(digest) = skopeo_digest(&reference, None)? {
        assert_eq!(digest, image.manifest_digest());
    }
    Ok(())
}

#[test]
fn building_twice_gives_identical_layouts() -> Result<()> {
    if !have_busybox()? {
        return Ok(());
    }
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let first = BusyboxImage::build(a.path())?;
    let second = BusyboxImage::build(b.path())?;
    assert_eq!(first.manifest_digest(), second.manifest_digest());
    assert_eq!(first.layer_digest(), second.layer_digest());
    assert_eq!(
        std::fs::read(a.path().join("index.json"))?,
        std::fs::read(b.path().join("index.json"))?
    );
    Ok(())
}

#[test]
fn oci_layout_is_valid() -> Result<()> {
    if !have_busybox()? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let image = BusyboxImage::build(dir.path())?;

    // Check the layout by hand first, independently of testkit::layout::verify.
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("oci-layout"))?)?;
    assert_eq!(marker, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json"))?)?;
    assert_eq!(index["schemaVersion"], 2);
    let entry = &index["manifests"][0];
    assert_eq!(entry["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(entry["digest"], image.manifest_digest());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blobs = dir.path().join("blobs/sha256");
    let manifest_hex = image.manifest_digest().trim_start_matches("sha256:");
    assert!(blobs.join(manifest_hex).is_file(), "manifest blob missing");
    let mut count = 0;
    for file in std::fs::read_dir(&blobs)? {
        let file = file?;
        let name = file.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_digest(&std::fs::read(file.path())?),
            format!("sha256:{name}")
        );
        count += 1;
    }
    assert_eq!(count, 3, "manifest, config and one layer");

    let summary = testkit::layout::verify(dir.path())?;
    assert_eq!(
        summary.manifests,
        [(
            Some("latest".to_owned()),
            image.manifest_digest().to_owned()
        )]
    );
    Ok(())
}

#[test]
fn htpasswd_registry_requires_credentials() -> Result<()> {
    if !have_busybox()? || !require_tool(Path::new(DOCKER_REGISTRY), REGISTRY_HINT)? {
        return Ok(());
    }
    let registry = Registry::start_with_htpasswd("tester", "s3cret")?;
    let anonymous = testkit::RegistryClient::new(&registry.host());
    assert_eq!(anonymous.ping()?, 401);
    let image = BusyboxImage::new()?;
    let err = anonymous
        .push_image("busybox", "latest", image.image())
        .expect_err("anonymous push must be refused");
    assert!(err.to_string().contains("401"), "{err}");

    let client = registry.client();
    assert_eq!(client.ping()?, 200);
    let wrong = testkit::RegistryClient::new(&registry.host()).with_basic_auth("tester", "nope");
    assert_eq!(wrong.ping()?, 401);
    assert_eq!(
        client.push_image("busybox", "latest", image.image())?,
        image.manifest_digest()
    );
    let reference = format!("{}/busybox:latest", registry.host());
    if let Some(digest) = skopeo_digest(&reference, registry.credentials())? {
        assert_eq!(digest, image.manifest_digest());
    }
    Ok(())
}

#[test]
fn mkbusybox_writes_layout_and_pushes() -> Result<()> {
    if !have_busybox()? {
        return Ok(());
    }
    let Some(registry) = Registry::start_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    let target = format!("{}/tools/busybox:v1", registry.host());
    let out = Command::new(env!("CARGO_BIN_EXE_mkbusybox"))
        .arg("--oci")
        .arg(&layout)
        .args(["--push", &target])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "mkbusybox failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = testkit::layout::verify(&layout)?;
    let digest = &summary.manifests[0].1;
    assert!(
        stdout.contains(&format!("pushed {target}@{digest}")),
        "{stdout}"
    );
    assert_eq!(registry.client().list_tags("tools/busybox")?, ["v1"]);

    let bad = Command::new(env!("CARGO_BIN_EXE_mkbusybox"))
        .args(["--push", "not a reference"])
        .output()?;
    assert!(!bad.status.success());
    Ok(())
}
