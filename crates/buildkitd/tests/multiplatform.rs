//! Multi-platform Dockerfile builds with the real binaries (`--opt
//! platform=linux/amd64,linux/arm64`): a directory per platform from the local and tar
//! exporters (or one merged tree with `platform-split=false`), an OCI index in the oci
//! tarball, an index or Docker manifest list pushed to a local registry, the docker
//! exporter's refusal, and single-platform builds left as they were.
//!
//! Nothing foreign runs (there is no emulation here): the per-platform steps only COPY,
//! and RUN happens in a stage on the build platform.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Daemon, text};
use serde_json::Value;

const PLATFORMS: &str = "linux/amd64,linux/arm64";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A context whose Dockerfile is `dockerfile`, with a different file per architecture.
fn context(dir: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for arch in ["amd64", "arm64"] {
        std::fs::write(
            ctx.join(format!("file-{arch}")),
            format!("{arch} content\n"),
        )
        .unwrap();
    }
    ctx
}

/// One file per platform at the same path.
const SAME_PATH: &str = "FROM scratch\nARG TARGETARCH\nCOPY file-${TARGETARCH} /out\n";
/// One file per platform at paths of their own, in a directory they share.
const OWN_PATHS: &str =
    "FROM scratch\nARG TARGETARCH\nCOPY file-${TARGETARCH} /sub/out-${TARGETARCH}\n";

fn build(d: &Daemon, ctx: &Path, extra: &[&str]) -> Output {
    d.build_dockerfile(ctx, extra)
}

fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "{t}");
    t
}

fn failed(o: &Output) -> String {
    let t = text(o);
    assert!(!o.status.success(), "the build should have failed: {t}");
    t
}

/// The names directly in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The regular files of a tarball: name → content.
fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name.trim_start_matches("./").to_string(), data);
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    testkit::sha256_digest(bytes)
}

#[test]
fn local_and_tar_exports_split_by_platform() {
    if !common::require_root("local_and_tar_exports_split_by_platform") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let same = context(dir.path(), "same", SAME_PATH);
    let own = context(dir.path(), "own", OWN_PATHS);
    let d = Daemon::start(dir.path());
    let platforms = format!("platform={PLATFORMS}");

    // local: a directory per platform, each with its platform's file
    let dest = dir.path().join("split");
    let t = ok(&build(
        &d,
        &same,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["linux_amd64", "linux_arm64"], "{t}");
    assert_eq!(read(&dest.join("linux_amd64/out")), "amd64 content\n");
    assert_eq!(read(&dest.join("linux_arm64/out")), "arm64 content\n");
    assert_eq!(names(&dest.join("linux_arm64")), ["out"]);

    // platform-split=false: one tree, the platforms' files side by side
    let dest = dir.path().join("merged");
    ok(&build(
        &d,
        &own,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!("type=local,dest={},platform-split=false", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["sub"]);
    assert_eq!(names(&dest.join("sub")), ["out-amd64", "out-arm64"]);
    assert_eq!(read(&dest.join("sub/out-amd64")), "amd64 content\n");
    assert_eq!(read(&dest.join("sub/out-arm64")), "arm64 content\n");

    // ... and refused, as upstream does, when two platforms have a file at one path
    let dest = dir.path().join("conflict");
    let t = failed(&build(
        &d,
        &same,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!("type=local,dest={},platform-split=false", dest.display()),
        ],
    ));
    assert!(
        t.contains(
            "cannot overwrite out from linux/amd64 with linux/arm64 when split option is disabled"
        ),
        "{t}"
    );

    // tar: the same layout in one stream
    let tarball = dir.path().join("split.tar");
    ok(&build(
        &d,
        &same,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!("type=tar,dest={}", tarball.display()),
        ],
    ));
    let files = tar_files(&std::fs::read(&tarball).unwrap());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["linux_amd64/out", "linux_arm64/out"]
    );
    assert_eq!(files["linux_amd64/out"], b"amd64 content\n");
    assert_eq!(files["linux_arm64/out"], b"arm64 content\n");
    let tarball = dir.path().join("merged.tar");
    ok(&build(
        &d,
        &own,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!("type=tar,dest={},platform-split=false", tarball.display()),
        ],
    ));
    let files = tar_files(&std::fs::read(&tarball).unwrap());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["sub/out-amd64", "sub/out-arm64"]
    );
    assert_eq!(files["sub/out-arm64"], b"arm64 content\n");

    // one platform: no split unless asked for
    let dest = dir.path().join("single");
    ok(&build(
        &d,
        &same,
        &[
            "--opt",
            "platform=linux/arm64",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["out"]);
    assert_eq!(read(&dest.join("out")), "arm64 content\n");
    let dest = dir.path().join("single-split");
    ok(&build(
        &d,
        &same,
        &[
            "--opt",
            "platform=linux/arm64",
            "--output",
            &format!("type=local,dest={},platform-split=true", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["linux_arm64"]);
    assert_eq!(read(&dest.join("linux_arm64/out")), "arm64 content\n");
    // a multi-platform result of one platform is split by default
    let dest = dir.path().join("single-multi");
    ok(&build(
        &d,
        &same,
        &[
            "--opt",
            "platform=linux/arm64",
            "--opt",
            "multi-platform=true",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["linux_arm64"]);

    // the same platform twice is built once
    let dest = dir.path().join("dedup");
    ok(&build(
        &d,
        &same,
        &[
            "--opt",
            "platform=linux/arm64,linux/aarch64,linux/amd64",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(names(&dest), ["linux_amd64", "linux_arm64"]);

    // bad values, refused before anything is built
    let t = failed(&build(
        &d,
        &same,
        &[
            "--opt",
            "platform=linux/amd64,linux//arm64",
            "--output",
            &format!("type=local,dest={}", dir.path().join("never").display()),
        ],
    ));
    assert!(t.contains("--opt platform=linux/amd64,linux//arm64"), "{t}");
    assert!(
        t.contains("InvalidArgument") || t.contains("invalid"),
        "{t}"
    );
    let t = failed(&build(
        &d,
        &same,
        &[
            "--opt",
            &platforms,
            "--output",
            &format!(
                "type=local,dest={},platform-split=maybe",
                dir.path().join("never").display()
            ),
        ],
    ));
    assert!(t.contains("platform-split"), "{t}");
}

#[test]
fn build_platform_stage_runs_once_per_target() {
    if !common::require_root("build_platform_stage_runs_once_per_target") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        dir.path(),
        "ctx",
        &format!(
            "FROM --platform=$BUILDPLATFORM {busybox} AS b\n\
             ARG TARGETPLATFORM\n\
             RUN echo \"$TARGETPLATFORM\" > /platform\n\
             FROM scratch\n\
             COPY --from=b /platform /platform\n"
        ),
    );
    let d = Daemon::start(dir.path());
    let dest = dir.path().join("out");
    let t = ok(&build(
        &d,
        &ctx,
        &[
            "--opt",
            &format!("platform={PLATFORMS}"),
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    ));
    assert_eq!(read(&dest.join("linux_amd64/platform")), "linux/amd64\n");
    assert_eq!(read(&dest.join("linux_arm64/platform")), "linux/arm64\n");
    // steps name their platform, and a cross-building stage its target, as upstream's do
    let host = llb::Platform::host().to_string();
    assert!(
        t.contains(&format!("[{host} internal] load metadata for")),
        "{t}"
    );
    let foreign = if host == "linux/amd64" {
        "arm64"
    } else {
        "amd64"
    };
    assert!(t.contains(&format!("[{host}->{foreign} b 2/2] RUN")), "{t}");
    assert!(t.contains("[linux/arm64 stage-1 1/1] COPY --from=b"), "{t}");
}

/// Checks an index (`bytes`, of `media_type`) read from `blob`: two manifests, amd64 then
/// arm64, each with its platform, each manifest's config naming its architecture, each
/// layer holding `/out` with the architecture's content (when `layers` can read them).
/// Returns the manifests' digests.
fn check_index(
    bytes: &[u8],
    index_type: &str,
    manifest_type: &str,
    blob: &dyn Fn(&str) -> Vec<u8>,
    read_layers: bool,
) -> Vec<String> {
    let index: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(index["schemaVersion"], 2, "{index:#}");
    assert_eq!(index["mediaType"], index_type, "{index:#}");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index:#}");
    let mut digests = Vec::new();
    for (m, arch) in manifests.iter().zip(["amd64", "arm64"]) {
        assert_eq!(m["mediaType"], manifest_type, "{index:#}");
        assert_eq!(m["platform"]["os"], "linux", "{index:#}");
        assert_eq!(m["platform"]["architecture"], arch, "{index:#}");
        let digest = m["digest"].as_str().unwrap();
        let mbytes = blob(digest);
        assert_eq!(sha256(&mbytes), digest);
        assert_eq!(m["size"], mbytes.len());
        let manifest: Value = serde_json::from_slice(&mbytes).unwrap();
        assert_eq!(manifest["mediaType"], manifest_type);
        let cdigest = manifest["config"]["digest"].as_str().unwrap();
        let cbytes = blob(cdigest);
        assert_eq!(sha256(&cbytes), cdigest);
        let config: Value = serde_json::from_slice(&cbytes).unwrap();
        assert_eq!(config["architecture"], arch, "{config:#}");
        assert_eq!(config["os"], "linux");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{manifest:#}");
        let ldigest = layers[0]["digest"].as_str().unwrap();
        let lbytes = blob(ldigest);
        assert_eq!(sha256(&lbytes), ldigest);
        assert_eq!(layers[0]["size"], lbytes.len());
        if read_layers {
            let files = tar_files(&lbytes);
            assert_eq!(files["out"], format!("{arch} content\n").as_bytes());
        }
        digests.push(digest.to_string());
    }
    digests
}

#[test]
fn oci_tarball_holds_an_index() {
    if !common::require_root("oci_tarball_holds_an_index") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "ctx", SAME_PATH);
    let d = Daemon::start(dir.path());
    let oci = dir.path().join("multi.tar");
    let meta = dir.path().join("meta.json");
    ok(&build(
        &d,
        &ctx,
        &[
            "--opt",
            &format!("platform={PLATFORMS}"),
            "--output",
            &format!(
                "type=oci,dest={},name=example/multi:v1,compression=uncompressed",
                oci.display()
            ),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    ));
    let files = tar_files(&std::fs::read(&oci).unwrap());
    let layout: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let top = layout["manifests"].as_array().unwrap();
    assert_eq!(top.len(), 1, "{layout:#}");
    assert_eq!(top[0]["mediaType"], OCI_INDEX, "{layout:#}");
    assert_eq!(
        top[0]["annotations"]["io.containerd.image.name"],
        "docker.io/example/multi:v1"
    );
    assert_eq!(
        top[0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let index_digest = top[0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        let name = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        files
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is not in the tarball"))
            .clone()
    };
    let index = blob(index_digest);
    assert_eq!(sha256(&index), index_digest);
    assert_eq!(top[0]["size"], index.len());
    check_index(&index, OCI_INDEX, OCI_MANIFEST, &blob, true);
    // every blob is what its name says
    for (name, bytes) in files.iter().filter(|(n, _)| n.starts_with("blobs/")) {
        assert_eq!(
            sha256(bytes).trim_start_matches("sha256:"),
            name.trim_start_matches("blobs/sha256/")
        );
    }

    // the metadata names the index
    let md: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(md["containerimage.digest"], index_digest, "{md:#}");
    assert_eq!(md["containerimage.descriptor"]["mediaType"], OCI_INDEX);
    assert!(md.get("containerimage.config.digest").is_none(), "{md:#}");
}

#[test]
fn docker_exporter_refuses_multi_platform_results() {
    if !common::require_root("docker_exporter_refuses_multi_platform_results") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "ctx", SAME_PATH);
    let d = Daemon::start(dir.path());
    let dest = dir.path().join("docker.tar");
    let t = failed(&build(
        &d,
        &ctx,
        &[
            "--opt",
            &format!("platform={PLATFORMS}"),
            "--output",
            &format!("type=docker,dest={},name=multi:latest", dest.display()),
        ],
    ));
    assert!(
        t.contains("docker exporter does not currently support exporting manifest lists"),
        "{t}"
    );
    // one platform is fine
    ok(&build(
        &d,
        &ctx,
        &[
            "--opt",
            "platform=linux/arm64",
            "--output",
            &format!("type=docker,dest={},name=single:latest", dest.display()),
        ],
    ));
    let files = tar_files(&std::fs::read(&dest).unwrap());
    assert!(files.contains_key("manifest.json"));
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

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

#[test]
fn image_exporter_pushes_an_index_or_a_manifest_list() {
    if !common::require_root("image_exporter_pushes_an_index_or_a_manifest_list") || !have_skopeo()
    {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "ctx", SAME_PATH);
    let d = Daemon::start(dir.path());
    for (oci, index_type, manifest_type) in [
        (true, OCI_INDEX, OCI_MANIFEST),
        (false, DOCKER_LIST, DOCKER_MANIFEST),
    ] {
        let name = format!(
            "{}/multi:{}",
            reg.host(),
            if oci { "oci" } else { "docker" }
        );
        let meta = dir.path().join(format!("meta-{oci}.json"));
        let t = ok(&build(
            &d,
            &ctx,
            &[
                "--opt",
                &format!("platform={PLATFORMS}"),
                "--output",
                &format!("type=image,name={name},push=true,oci-mediatypes={oci}"),
                "--metadata-file",
                meta.to_str().unwrap(),
            ],
        ));
        assert!(t.contains("exporting manifest list sha256:"), "{t}");
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{name}"),
        ]);
        assert!(raw.status.success(), "{}", text(&raw));
        let repo = name.rsplit_once(':').unwrap().0.to_string();
        let blob = |digest: &str| {
            // manifests by digest; configs and layers through skopeo's blob-aware copy
            let out = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{repo}@{digest}"),
            ]);
            if out.status.success() {
                return out.stdout;
            }
            let hex = digest.trim_start_matches("sha256:");
            let found = std::fs::read(d.root.join("content/blobs/sha256").join(hex));
            found.unwrap_or_else(|e| panic!("blob {digest}: {e}: {}", text(&out)))
        };
        let children = check_index(&raw.stdout, index_type, manifest_type, &blob, false);
        // each platform's image is there with its config, as a client pulls it
        for (child, arch) in children.iter().zip(["amd64", "arm64"]) {
            let config = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--config",
                &format!("docker://{repo}@{child}"),
            ]);
            assert!(config.status.success(), "{}", text(&config));
            let config: Value = serde_json::from_slice(&config.stdout).unwrap();
            assert_eq!(config["architecture"], arch);
            let copy = dir.path().join(format!("copy-{oci}-{arch}"));
            let out = skopeo(&[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{repo}@{child}"),
                &format!("dir:{}", copy.display()),
            ]);
            assert!(out.status.success(), "{}", text(&out));
        }
        let md: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        assert_eq!(md["containerimage.digest"], sha256(&raw.stdout), "{md:#}");
        assert_eq!(md["containerimage.descriptor"]["mediaType"], index_type);
        assert_eq!(md["image.name"], name.as_str());
    }
}

#[test]
fn single_platform_builds_make_no_index() {
    if !common::require_root("single_platform_builds_make_no_index") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "ctx", SAME_PATH);
    let d = Daemon::start(dir.path());
    let oci = |extra: &[&str], file: &str| {
        let dest = dir.path().join(file);
        let meta = dir.path().join(format!("{file}.json"));
        let mut args = extra.to_vec();
        let output = format!("type=oci,dest={}", dest.display());
        args.extend([
            "--output",
            &output,
            "--metadata-file",
            meta.to_str().unwrap(),
        ]);
        ok(&build(&d, &ctx, &args));
        let files = tar_files(&std::fs::read(&dest).unwrap());
        let layout: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let md: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        (layout["manifests"][0].clone(), md, files)
    };
    let (top, md, files) = oci(&["--opt", "platform=linux/arm64"], "single.tar");
    assert_eq!(top["mediaType"], OCI_MANIFEST, "{top:#}");
    assert_eq!(top["platform"]["architecture"], "arm64", "{top:#}");
    assert_eq!(md["containerimage.digest"], top["digest"]);
    assert!(md["containerimage.config.digest"].is_string(), "{md:#}");
    let manifest = &files[&format!(
        "blobs/sha256/{}",
        top["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    )];
    let manifest: Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);

    // multi-platform=true: an index even for one platform
    let (top, md, files) = oci(
        &[
            "--opt",
            "platform=linux/arm64",
            "--opt",
            "multi-platform=true",
        ],
        "single-index.tar",
    );
    assert_eq!(top["mediaType"], OCI_INDEX, "{top:#}");
    assert_eq!(md["containerimage.digest"], top["digest"]);
    let index = &files[&format!(
        "blobs/sha256/{}",
        top["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    )];
    let index: Value = serde_json::from_slice(index).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
}
