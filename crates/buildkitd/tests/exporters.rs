//! The image exporters with the real binaries: a Dockerfile build on a busybox base pushed
//! to a local registry (`type=image`, OCI and Docker media types) and read back with
//! skopeo; `type=oci` and `type=docker` tarballs read by skopeo, and loaded and run by a
//! private dockerd when there is one; `--metadata-file`; a second export reusing the layer
//! blobs of the first.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Daemon, text};
use serde_json::Value;

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// Whether skopeo is there; without it these tests cannot read anything back.
fn have_skopeo() -> bool {
    let ok = Command::new("skopeo")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "skopeo is required in CI (apt-get install skopeo)"
        );
        eprintln!("SKIPPED: skopeo is not installed");
    }
    ok
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    testkit::sha256_digest(bytes)
        .trim_start_matches("sha256:")
        .to_string()
}

/// A build context whose Dockerfile adds one layer and a CMD to `base`.
fn context(dir: &Path, base: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo hi > /hi\nCMD [\"cat\", \"/hi\"]\n"),
    )
    .unwrap();
    ctx
}

fn build(d: &Daemon, ctx: &Path, extra: &[&str]) -> Output {
    d.build_dockerfile(ctx, extra)
}

/// The digests of the blobs in the daemon's content store.
fn store_blobs(d: &Daemon) -> BTreeSet<String> {
    std::fs::read_dir(d.root.join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Checks an image read back with skopeo: media types of one family, two layers (the
/// base's original blob first), a config with the CMD and one diff_id per layer.
fn check_image(manifest: &Value, config: &Value, busybox_layer: &str, oci: bool) {
    let (mt, config_mt, layer_mt) = if oci {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    } else {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    };
    assert_eq!(manifest["schemaVersion"], 2, "{manifest:#}");
    assert_eq!(manifest["mediaType"], mt, "{manifest:#}");
    assert_eq!(manifest["config"]["mediaType"], config_mt);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest:#}");
    for l in layers {
        assert_eq!(l["mediaType"], layer_mt, "{manifest:#}");
    }
    assert_eq!(
        layers[0]["digest"], busybox_layer,
        "the base layer is busybox's own blob"
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers.len()
    );
    let history = config["history"].as_array().unwrap();
    let with_layers = history
        .iter()
        .filter(|h| h["empty_layer"] != Value::Bool(true))
        .count();
    assert_eq!(with_layers, layers.len(), "{config:#}");
    assert!(
        history.iter().all(|h| h["created"].is_string()),
        "{config:#}"
    );
    assert!(config["created"].is_string(), "{config:#}");
    assert_eq!(config["os"], "linux");
}

/// Copies `src` with skopeo into a `dir:` layout and checks every blob's digest.
fn copy_and_verify(src: &str, extra: &[&str], dest: &Path) {
    let dest_ref = format!("dir:{}", dest.display());
    let mut args = vec!["copy"];
    args.extend_from_slice(extra);
    args.extend([src, dest_ref.as_str()]);
    let out = skopeo(&args);
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in digests {
        let hex = d.trim_start_matches("sha256:");
        let blob = std::fs::read(dest.join(hex)).unwrap();
        assert_eq!(sha256_hex(&blob), hex, "blob {d}");
    }
}

#[test]
fn image_exporter_pushes_and_reuses_blobs() {
    if !common::require_root("image_exporter_pushes_and_reuses_blobs") || !have_skopeo() {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox_image = testkit::BusyboxImage::new().unwrap();
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &busybox);
    let d = Daemon::start(dir.path());

    // OCI media types, the default
    let name = format!("{}/test:1", reg.host());
    let meta = dir.path().join("meta.json");
    let out = build(
        &d,
        &ctx,
        &[
            "--output",
            &format!("type=image,name={name},push=true"),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("exporting to image"), "{t}");
    assert!(t.contains("exporting layers"), "{t}");
    assert!(t.contains("pushing layers"), "{t}");
    let src = format!("docker://{name}");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &src]);
    assert!(raw.status.success(), "{}", text(&raw));
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let config = json_of(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &src,
    ]));
    check_image(&manifest, &config, busybox_image.layer_digest(), true);
    let inspect = json_of(&skopeo(&["inspect", "--tls-verify=false", &src]));
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    copy_and_verify(
        &src,
        &["--src-tls-verify=false"],
        &dir.path().join("copy-oci"),
    );

    // --metadata-file: the pushed manifest's digest, the descriptor decoded
    let digest = testkit::sha256_digest(&raw.stdout);
    let md: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(md["containerimage.digest"], digest.as_str(), "{md:#}");
    assert_eq!(md["image.name"], name.as_str());
    assert_eq!(
        md["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    let desc = &md["containerimage.descriptor"];
    assert_eq!(desc["digest"], digest.as_str(), "{md:#}");
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(desc["size"], raw.stdout.len());
    assert_eq!(desc["platform"]["os"], "linux");

    // The same result again with Docker media types: the layers are the same blobs, and
    // nothing but a manifest (and config) is written.
    let before = store_blobs(&d);
    let name2 = format!("{}/test:2", reg.host());
    let out = build(
        &d,
        &ctx,
        &[
            "--output",
            &format!("type=image,name={name2},push=true,oci-mediatypes=false"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let added: Vec<_> = store_blobs(&d).difference(&before).cloned().collect();
    assert!(added.len() <= 2, "new blobs on a second export: {added:?}");
    let src2 = format!("docker://{name2}");
    let raw2 = skopeo(&["inspect", "--tls-verify=false", "--raw", &src2]);
    let manifest2: Value = serde_json::from_slice(&raw2.stdout).unwrap();
    let config2 = json_of(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &src2,
    ]));
    check_image(&manifest2, &config2, busybox_image.layer_digest(), false);
    assert_eq!(
        manifest2["layers"][1]["digest"], manifest["layers"][1]["digest"],
        "the second export reuses the layer blob"
    );
    assert_eq!(config2["rootfs"], config["rootfs"]);
    copy_and_verify(
        &src2,
        &["--src-tls-verify=false"],
        &dir.path().join("copy-docker"),
    );

    // push-by-digest: no tag, the manifest reachable by its digest
    let by_digest = format!("{}/bydigest", reg.host());
    let meta2 = dir.path().join("meta2.json");
    let out = build(
        &d,
        &ctx,
        &[
            "--output",
            &format!("type=image,name={by_digest},push=true,push-by-digest=true"),
            "--metadata-file",
            meta2.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let md2: Value = serde_json::from_slice(&std::fs::read(&meta2).unwrap()).unwrap();
    let pushed = md2["containerimage.digest"].as_str().unwrap();
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{by_digest}@{pushed}"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(testkit::sha256_digest(&out.stdout), pushed);

    // options the daemon cannot honour fail before the build, saying why
    let out = build(&d, &ctx, &["--output", "type=image,name=x,unpack=true"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("containerd worker"), "{}", text(&out));
}

/// Lists a tarball's entries.
fn tar_entries(path: &Path) -> Vec<String> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn tar_file(path: &Path, name: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut out).unwrap();
            return out;
        }
    }
    panic!("{name} is not in {}", path.display());
}

#[test]
fn oci_and_docker_tarballs() {
    if !common::require_root("oci_and_docker_tarballs") || !have_skopeo() {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox_image = testkit::BusyboxImage::new().unwrap();
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &busybox);
    let d = Daemon::start(dir.path());

    // OCI layout tarball
    let oci = dir.path().join("image-oci.tar");
    let out = build(
        &d,
        &ctx,
        &[
            "--output",
            &format!("type=oci,dest={},name=example/oci:v1", oci.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let entries = tar_entries(&oci);
    for e in ["oci-layout", "index.json", "blobs/", "blobs/sha256/"] {
        assert!(entries.iter().any(|n| n == e), "{e} missing: {entries:?}");
    }
    assert!(!entries.iter().any(|n| n == "manifest.json"), "{entries:?}");
    let index: Value = serde_json::from_slice(&tar_file(&oci, "index.json")).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(ann["io.containerd.image.name"], "docker.io/example/oci:v1");
    assert!(ann["org.opencontainers.image.created"].is_string());
    let src = format!("oci-archive:{}", oci.display());
    let manifest: Value =
        serde_json::from_slice(&skopeo(&["inspect", "--raw", &src]).stdout).unwrap();
    let config = json_of(&skopeo(&["inspect", "--config", &src]));
    check_image(&manifest, &config, busybox_image.layer_digest(), true);
    copy_and_verify(&src, &[], &dir.path().join("copy-oci"));

    // to standard output when there is no dest (not a terminal here)
    let out = build(&d, &ctx, &["--output", "type=oci"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped = dir.path().join("piped.tar");
    std::fs::write(&piped, &out.stdout).unwrap();
    assert!(tar_entries(&piped).iter().any(|n| n == "index.json"));

    // docker-archive tarball
    let docker = dir.path().join("image-docker.tar");
    let out = build(
        &d,
        &ctx,
        &[
            "--output",
            &format!(
                "type=docker,dest={},name=exporters-test:latest",
                docker.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dm: Value = serde_json::from_slice(&tar_file(&docker, "manifest.json")).unwrap();
    assert_eq!(
        dm[0]["RepoTags"],
        serde_json::json!(["exporters-test:latest"])
    );
    assert_eq!(dm[0]["Layers"].as_array().unwrap().len(), 2);
    let src = format!("docker-archive:{}", docker.display());
    let inspect = json_of(&skopeo(&["inspect", &src]));
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let config = json_of(&skopeo(&["inspect", "--config", &src]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["cat", "/hi"]));
    copy_and_verify(&src, &[], &dir.path().join("copy-docker"));

    docker_load_and_run(dir.path(), &docker, "exporters-test:latest");
}

/// A dockerd of the test's own, on a private socket, data root and exec root.
struct Dockerd {
    child: std::process::Child,
    host: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Loads the docker tarball into a private dockerd and runs it; skipped (loudly) when
/// there is no dockerd.
fn docker_load_and_run(dir: &Path, tarball: &Path, name: &str) {
    let (Some(dockerd), Some(docker)) = (which("dockerd"), which("docker")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "dockerd is required in CI (apt-get install docker.io; scripts/deps.sh installs it)"
        );
        eprintln!("SKIPPED: docker load (dockerd is not installed: apt-get install docker.io)");
        return;
    };
    // Short paths: the daemon's unix sockets must fit in sun_path.
    let state = tempfile::Builder::new()
        .prefix("dkd")
        .tempdir_in("/tmp")
        .unwrap();
    let sock = state.path().join("d.sock");
    let host = format!("unix://{}", sock.display());
    let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
    let child = Command::new(dockerd)
        .arg("--host")
        .arg(&host)
        .arg("--data-root")
        .arg(state.path().join("data"))
        .arg("--exec-root")
        .arg(state.path().join("exec"))
        .arg("--pidfile")
        .arg(state.path().join("d.pid"))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=vfs",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let dockerd = Dockerd { child, host };
    let docker_cmd = |args: &[&str]| {
        Command::new(&docker)
            .arg("--host")
            .arg(&dockerd.host)
            .args(args)
            .output()
            .unwrap()
    };
    let mut ready = false;
    for _ in 0..600 {
        if docker_cmd(&["version"]).status.success() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dlog = || std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
    assert!(ready, "dockerd did not start:\n{}", dlog());
    let out = docker_cmd(&["load", "-i", tarball.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "docker load: {}\n{}",
        text(&out),
        dlog()
    );
    assert!(text(&out).contains(name), "{}", text(&out));
    let out = docker_cmd(&["run", "--rm", "--network", "none", name]);
    assert!(
        out.status.success(),
        "docker run: {}\n{}",
        text(&out),
        dlog()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

#[test]
fn llb_builds_get_a_default_config() {
    if !common::require_root("llb_builds_get_a_default_config") || !have_skopeo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let st = llb::scratch().file(
        &llb::FileAction::mkfile("/greeting", 0o644, "hello\n", llb::MkfileOptions::default()),
        llb::OpOptions::new(),
    );
    let oci = dir.path().join("llb.tar");
    let out = d.buildctl(
        &[
            "build",
            "--progress",
            "plain",
            "--output",
            &format!("type=oci,dest={},compression=zstd", oci.display()),
        ],
        Some(&common::definition(&st)),
    );
    assert!(out.status.success(), "{}", text(&out));
    let src = format!("oci-archive:{}", oci.display());
    let manifest: Value =
        serde_json::from_slice(&skopeo(&["inspect", "--raw", &src]).stdout).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let config = json_of(&skopeo(&["inspect", "--config", &src]));
    let host = llb::Platform::host();
    assert_eq!(config["architecture"], host.architecture.as_str());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["WorkingDir"], "/");
    assert_eq!(
        config["config"]["Env"][0],
        format!("PATH={}", llb::DEFAULT_PATH)
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(
        config["history"][0]["comment"],
        "buildkit.exporter.image.v0"
    );
    // no name: index.json names nothing
    let index: Value = serde_json::from_slice(&tar_file(&oci, "index.json")).unwrap();
    assert!(
        index["manifests"][0]["annotations"]
            .get("org.opencontainers.image.ref.name")
            .is_none()
    );
}

#[test]
fn pushes_use_the_session_credentials() {
    if !common::require_root("pushes_use_the_session_credentials") || !have_skopeo() {
        return;
    }
    if !std::path::Path::new("/usr/bin/docker-registry").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "docker-registry is required in CI"
        );
        eprintln!("SKIPPED: docker-registry is not installed");
        return;
    }
    let (user, password) = ("pusher", "push-pw-5e1");
    let reg = testkit::Registry::start_with_htpasswd(user, password).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_creds = dir.path().join("docker-config");
    std::fs::create_dir_all(&with_creds).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    std::fs::write(
        with_creds.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let without = dir.path().join("empty-docker-config");
    std::fs::create_dir_all(&without).unwrap();
    let wrong = dir.path().join("wrong-docker-config");
    std::fs::create_dir_all(&wrong).unwrap();
    let bad_auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:not-the-password"),
    );
    std::fs::write(
        wrong.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{bad_auth}"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let d = Daemon::start(dir.path());
    let st = llb::scratch().file(
        &llb::FileAction::mkfile("/f", 0o644, "private\n", llb::MkfileOptions::default()),
        llb::OpOptions::new(),
    );
    let def = common::definition(&st);
    let name = format!("{}/private:1", reg.host());
    let output = format!("type=image,name={name},push=true");
    let args = ["build", "--progress", "plain", "--output", output.as_str()];

    let out = common::buildctl_env(&d.addr, &args, Some(&def), &[("DOCKER_CONFIG", &without)]);
    assert!(!out.status.success(), "pushed without credentials");
    let t = text(&out);
    assert!(t.contains("failed to push"), "{t}");
    assert!(t.to_lowercase().contains("unauthorized"), "{t}");

    // Wrong credentials: refused with a clear error naming the image, nothing pushed.
    let out = common::buildctl_env(&d.addr, &args, Some(&def), &[("DOCKER_CONFIG", &wrong)]);
    assert!(!out.status.success(), "pushed with a wrong password");
    let t = text(&out);
    assert!(t.contains("failed to push") && t.contains(&name), "{t}");
    assert!(
        t.to_lowercase().contains("unauthorized") && t.contains("401"),
        "{t}"
    );
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{user}:{password}"),
        &format!("docker://{name}"),
    ]);
    assert!(!out.status.success(), "the image is not there yet");

    let out = common::buildctl_env(
        &d.addr,
        &args,
        Some(&def),
        &[("DOCKER_CONFIG", &with_creds)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{user}:{password}"),
        &format!("docker://{name}"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}
