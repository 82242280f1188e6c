//! Reproducible images with the real binaries: the same Dockerfile built on two fresh
//! daemons with `SOURCE_DATE_EPOCH` and `rewrite-timestamp=true` gives the same manifest
//! digest, as an OCI tarball and pushed to a registry; without either, it does not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Daemon, text};
use serde_json::Value;

const EPOCH: &str = "1700000000";

/// A build context: a base image, a `RUN` writing files (times of the run) and a `COPY`
/// (the time of the context file, made now).
fn context(dir: &Path, base: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo hi > /hi && touch /stamp\nCOPY file /file\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("file"), "content\n").unwrap();
    ctx
}

/// Builds `ctx` with `extra` arguments; returns the manifest digest the metadata file
/// gives.
fn build_digest(d: &Daemon, ctx: &Path, extra: &[&str]) -> String {
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let meta = tempfile::NamedTempFile::new().unwrap();
    let meta_path = meta.path().to_str().unwrap();
    let mut args = vec![
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &local_ctx,
        "--local",
        &local_df,
        "--progress",
        "plain",
        "--metadata-file",
        meta_path,
    ];
    args.extend_from_slice(extra);
    let out: Output = d.buildctl(&args, None);
    assert!(out.status.success(), "{}", text(&out));
    let md: Value = serde_json::from_slice(&std::fs::read(meta.path()).unwrap()).unwrap();
    md["containerimage.digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in the metadata: {md:#}"))
        .to_string()
}

/// The mtimes of the entries of every layer in an OCI tarball.
fn layer_mtimes(tarball: &Path) -> Vec<(String, u64)> {
    let bytes = std::fs::read(tarball).unwrap();
    let mut blobs = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        blobs.insert(path, data);
    }
    let index: Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let blob = |d: &Value| {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        &blobs[&format!("blobs/sha256/{hex}")]
    };
    let manifest: Value = serde_json::from_slice(blob(&index["manifests"][0]["digest"])).unwrap();
    let mut out = Vec::new();
    // The first layer is the base image's own blob, kept as it is.
    for l in manifest["layers"].as_array().unwrap().iter().skip(1) {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let gz = gunzip(blob(&l["digest"]));
        for e in tar::Archive::new(&gz[..]).entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            out.push((path, e.header().mtime().unwrap()));
        }
    }
    out
}

/// gunzip with the system tool: the test crate has no gzip decoder of its own.
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn source_date_epoch_and_rewrite_timestamp_make_builds_reproducible() {
    if !common::require_root("source_date_epoch_and_rewrite_timestamp_make_builds_reproducible") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let work = tempfile::tempdir().unwrap();
    let ctx = context(work.path(), &busybox);
    let epoch_arg = format!("build-arg:SOURCE_DATE_EPOCH={EPOCH}");

    let mut oci = Vec::new();
    let mut pushed = Vec::new();
    let mut plain = Vec::new();
    let mut epoch_only = Vec::new();
    let mut tarballs = Vec::new();
    for run in 0..2 {
        // A fresh daemon root each time: nothing is shared but the context and the base.
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path());
        let tarball = work.path().join(format!("run{run}.tar"));
        oci.push(build_digest(
            &d,
            &ctx,
            &[
                "--opt",
                &epoch_arg,
                "--output",
                &format!("type=oci,dest={},rewrite-timestamp=true", tarball.display()),
            ],
        ));
        tarballs.push(tarball);
        pushed.push(build_digest(
            &d,
            &ctx,
            &[
                "--opt",
                &epoch_arg,
                "--output",
                &format!(
                    "type=image,name={}/repro:run{run},push=true,rewrite-timestamp=true",
                    reg.host()
                ),
            ],
        ));
        // The same build without SOURCE_DATE_EPOCH, and with it but without rewriting
        // the layers: what the digests would be without each half of the feature.
        plain.push(build_digest(
            &d,
            &ctx,
            &[
                "--output",
                &format!(
                    "type=oci,dest={},rewrite-timestamp=true",
                    dir.path().join("plain.tar").display()
                ),
            ],
        ));
        epoch_only.push(build_digest(
            &d,
            &ctx,
            &[
                "--opt",
                &epoch_arg,
                "--output",
                &format!("type=oci,dest={}", dir.path().join("epoch.tar").display()),
            ],
        ));
        d.stop();
        // The next run's files get other times.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(oci[0], oci[1], "OCI tarballs of two fresh builds");
    assert_eq!(pushed[0], pushed[1], "pushed images of two fresh builds");
    assert_eq!(oci[0], pushed[0], "the same image either way");
    assert_ne!(plain[0], plain[1], "without SOURCE_DATE_EPOCH");
    assert_ne!(epoch_only[0], epoch_only[1], "without rewrite-timestamp");
    // a layer blob made with rewritten times is not reused for the plain export
    assert_ne!(epoch_only[0], oci[0]);

    let epoch: u64 = EPOCH.parse().unwrap();
    let times = layer_mtimes(&tarballs[0]);
    let paths: Vec<&str> = times.iter().map(|(p, _)| p.as_str()).collect();
    for want in ["hi", "stamp", "file"] {
        assert!(paths.contains(&want), "{want} missing: {times:?}");
    }
    assert!(times.iter().all(|(_, t)| *t == epoch), "{times:?}");
    assert_eq!(layer_mtimes(&tarballs[1]), times);

    // what was pushed is what the tarball holds
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/repro:run1", reg.host()))
        .output();
    if let Ok(out) = out {
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(testkit::sha256_digest(&out.stdout), pushed[1]);
    }
}
