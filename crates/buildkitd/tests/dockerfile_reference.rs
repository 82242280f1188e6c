//! The Dockerfile reference, instruction by instruction and flag by flag, through the real
//! binaries: each case builds a small Dockerfile with `buildctl build --frontend
//! dockerfile.v0` and checks the files it produced (content, modes, owners from a tar
//! output, which keeps them as built).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Daemon, text};

/// A daemon, a registry with busybox, and a scratch dir.
struct Env {
    _reg: testkit::Registry,
    busybox: String,
    dir: tempfile::TempDir,
    d: Daemon,
    n: std::cell::Cell<usize>,
}

/// One entry of a tar output.
#[derive(Debug, Clone)]
struct Entry {
    mode: u32,
    uid: u64,
    gid: u64,
    kind: tar::EntryType,
    data: Vec<u8>,
}

impl Env {
    fn start(test: &str) -> Option<Env> {
        if !common::require_root(test) {
            return None;
        }
        let reg = testkit::Registry::start_or_skip().unwrap()?;
        let busybox = common::push_busybox(&reg);
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path());
        Some(Env {
            _reg: reg,
            busybox,
            dir,
            d,
            n: std::cell::Cell::new(0),
        })
    }

    /// A fresh context directory with a Dockerfile (`{busybox}` replaced) and files.
    fn context(&self, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        self.n.set(self.n.get() + 1);
        let ctx = self.dir.path().join(format!("ctx{}", self.n.get()));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            dockerfile.replace("{busybox}", &self.busybox),
        )
        .unwrap();
        for (name, content) in files {
            let p = ctx.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        ctx
    }

    fn run(&self, ctx: &Path, extra: &[&str]) -> Output {
        let c = ctx.display().to_string();
        let (lc, ld) = (format!("context={c}"), format!("dockerfile={c}"));
        let mut args = vec![
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &lc,
            "--local",
            &ld,
        ];
        if !extra.contains(&"--progress") {
            args.extend(["--progress", "plain"]);
        }
        args.extend_from_slice(extra);
        self.d.buildctl(&args, None)
    }

    /// Builds to a tar and returns its entries by path (no leading `./`).
    fn build(&self, ctx: &Path, extra: &[&str]) -> BTreeMap<String, Entry> {
        let tar_path = ctx.with_extension("tar");
        let dest = format!("type=tar,dest={}", tar_path.display());
        let mut args = vec!["--output", dest.as_str()];
        args.extend_from_slice(extra);
        let out = self.run(ctx, &args);
        assert!(out.status.success(), "build failed:\n{}", text(&out));
        let mut entries = BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            entries.insert(
                path,
                Entry {
                    mode: h.mode().unwrap() & 0o7777,
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    kind: h.entry_type(),
                    data,
                },
            );
        }
        entries
    }

    fn fails(&self, ctx: &Path, extra: &[&str]) -> String {
        let out = self.run(ctx, extra);
        let t = text(&out);
        assert!(!out.status.success(), "expected a failure:\n{t}");
        t
    }
}

fn content(entries: &BTreeMap<String, Entry>, path: &str) -> String {
    let e = entries
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing; have {:?}", entries.keys()));
    String::from_utf8_lossy(&e.data).into_owned()
}

#[test]
fn copy_and_add_flags() {
    let Some(env) = Env::start("copy_and_add_flags") else {
        return;
    };
    let ctx = env.context(
        "FROM scratch\n\
         COPY --chown=1234:5678 a.txt /owned-ids\n\
         COPY --chown=user:nogroup a.txt /owned-names\n\
         COPY --chmod=0640 a.txt /octal\n\
         COPY --chmod=u=rwx,go=r a.txt /symbolic\n\
         COPY a.txt b.txt /dir/\n\
         COPY *.txt /glob/\n\
         COPY src /srcdir\n\
         COPY --exclude=*.log src /excluded\n\
         COPY --parents src/./deep/x.txt /parents/\n\
         COPY --link a.txt /linked\n\
         ADD archive.tar /unpacked/\n\
         COPY archive.tar /notunpacked/\n",
        &[
            ("a.txt", "A\n"),
            ("b.txt", "B\n"),
            ("src/keep.txt", "keep\n"),
            ("src/drop.log", "drop\n"),
            ("src/deep/x.txt", "deep\n"),
        ],
    );
    // a tar archive in the context, for ADD
    let inner = env.dir.path().join("inner");
    std::fs::create_dir_all(inner.join("pkg")).unwrap();
    std::fs::write(inner.join("pkg/file"), "from the archive\n").unwrap();
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(ctx.join("archive.tar"))
        .arg("-C")
        .arg(&inner)
        .arg("pkg")
        .status()
        .unwrap();
    assert!(st.success());
    // chown by name looks the names up in the destination: give it an /etc/passwd
    let ctx_df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        ctx_df.replace("FROM scratch\n", &format!("FROM {}\n", env.busybox)),
    )
    .unwrap();

    let e = env.build(&ctx, &[]);
    let ids = &e["owned-ids"];
    assert_eq!((ids.uid, ids.gid), (1234, 5678));
    let names = &e["owned-names"];
    assert_eq!((names.uid, names.gid), (1000, 65534));
    assert_eq!(e["octal"].mode, 0o640);
    assert_eq!(e["symbolic"].mode, 0o744);
    assert_eq!(content(&e, "dir/a.txt"), "A\n");
    assert_eq!(content(&e, "dir/b.txt"), "B\n");
    assert_eq!(content(&e, "glob/a.txt"), "A\n");
    assert_eq!(content(&e, "glob/b.txt"), "B\n");
    assert_eq!(content(&e, "srcdir/keep.txt"), "keep\n");
    assert_eq!(content(&e, "srcdir/drop.log"), "drop\n");
    assert_eq!(content(&e, "excluded/keep.txt"), "keep\n");
    assert!(!e.contains_key("excluded/drop.log"), "{:?}", e.keys());
    assert_eq!(content(&e, "parents/deep/x.txt"), "deep\n");
    assert_eq!(content(&e, "linked"), "A\n");
    assert_eq!(content(&e, "unpacked/pkg/file"), "from the archive\n");
    assert!(e.contains_key("notunpacked/archive.tar"));
    assert!(!e.contains_key("notunpacked/pkg/file"));
}

#[test]
fn run_forms_heredocs_workdir_user_env_and_args() {
    let Some(env) = Env::start("run_forms_heredocs_workdir_user_env_and_args") else {
        return;
    };
    let ctx = env.context(
        "ARG BASE={busybox}\n\
         ARG GLOBAL=global-default\n\
         FROM $BASE\n\
         ARG GLOBAL\n\
         ARG LOCAL=local-default\n\
         ARG TARGETARCH\n\
         ENV GREETING=\"hello world\" OTHER=x\n\
         WORKDIR /work\n\
         WORKDIR sub\n\
         RUN pwd > /pwd && echo \"$GREETING|$GLOBAL|$LOCAL|$TARGETARCH\" > /vars\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec-form > /exec\"]\n\
         RUN <<EOF\n\
         echo one > /heredoc\n\
         echo two >> /heredoc\n\
         EOF\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo \"script via $0\" > /script\n\
         EOF\n\
         COPY <<EOF /expanded\n\
         greeting=$GREETING\n\
         EOF\n\
         COPY <<\"EOF\" /literal\n\
         greeting=$GREETING\n\
         EOF\n\
         COPY <<A <<B /docs/\n\
         first\n\
         A\n\
         second\n\
         B\n\
         RUN mkdir -m 1777 /shared\n\
         USER nobody\n\
         RUN id -u > /shared/uid && id -un >> /shared/uid\n\
         USER root\n\
         SHELL [\"/bin/sh\", \"-c\", \"echo \\\"$0\\\" > /shell\"]\n\
         RUN shell-form-command\n",
        &[],
    );
    let e = env.build(&ctx, &["--opt", "build-arg:LOCAL=given"]);
    assert_eq!(content(&e, "pwd"), "/work/sub\n");
    let arch = llb::Platform::host().architecture;
    assert_eq!(
        content(&e, "vars"),
        format!("hello world|global-default|given|{arch}\n")
    );
    assert_eq!(content(&e, "exec"), "exec-form\n");
    assert_eq!(content(&e, "heredoc"), "one\ntwo\n");
    assert!(
        content(&e, "script").starts_with("script via /dev/pipes/"),
        "{}",
        content(&e, "script")
    );
    assert_eq!(content(&e, "expanded"), "greeting=hello world\n");
    assert_eq!(content(&e, "literal"), "greeting=$GREETING\n");
    assert_eq!(content(&e, "docs/A"), "first\n");
    assert_eq!(content(&e, "docs/B"), "second\n");
    assert_eq!(content(&e, "shared/uid"), "65534\nnobody\n");
    assert_eq!(content(&e, "shell"), "shell-form-command\n");
    // the WORKDIR was created (with the USER at that time: root)
    assert_eq!(e["work/sub"].kind, tar::EntryType::Directory);
}

#[test]
fn run_mounts() {
    let Some(env) = Env::start("run_mounts") else {
        return;
    };
    let df = "FROM {busybox} AS src\n\
              RUN mkdir -p /data && echo from-stage > /data/f\n\
              FROM {busybox}\n\
              RUN --mount=type=bind,from=src,source=/data,target=/mnt cat /mnt/f > /bound\n\
              RUN --mount=target=/ctx cat /ctx/c.txt > /from-context\n\
              RUN --mount=type=bind,target=/ctx,rw echo scribble > /ctx/new && ls /ctx > /rw-listing\n\
              RUN --mount=type=cache,target=/cache,id=counter sh -c 'echo x >> /cache/log; wc -l < /cache/log > /count'\n\
              RUN --mount=type=cache,target=/owned,uid=1000,gid=1000,mode=0700 stat -c '%u:%g:%a' /owned > /cache-owner\n\
              RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs > /tmpfs-seen\n\
              RUN --network=none sh -c 'ls /sys/class/net > /netdevs'\n";
    let ctx = env.context(df, &[("c.txt", "context file\n")]);
    let e = env.build(&ctx, &[]);
    assert_eq!(content(&e, "bound"), "from-stage\n");
    assert_eq!(content(&e, "from-context"), "context file\n");
    assert!(content(&e, "rw-listing").contains("new"));
    assert!(
        !e.contains_key("ctx/new"),
        "a rw bind's writes are not kept"
    );
    assert_eq!(content(&e, "count"), "1\n");
    assert_eq!(content(&e, "cache-owner"), "1000:1000:700\n");
    assert_eq!(content(&e, "tmpfs-seen"), "tmpfs\n");
    assert!(!e.contains_key("scratch/t"), "tmpfs contents are not kept");
    assert_eq!(content(&e, "netdevs").trim(), "lo");
    // the cache mount keeps its contents across builds
    let e = env.build(&ctx, &["--no-cache"]);
    assert_eq!(content(&e, "count"), "2\n");
}

#[test]
fn onbuild_named_contexts_and_parallel_stages() {
    let Some(env) = Env::start("onbuild_named_contexts_and_parallel_stages") else {
        return;
    };
    let ctx = env.context(
        "FROM {busybox} AS base\n\
         ONBUILD RUN echo triggered > /onbuild\n\
         FROM base AS child\n\
         RUN cat /onbuild > /seen\n\
         FROM {busybox} AS slow1\n\
         RUN sleep 1 && echo 1 > /one\n\
         FROM {busybox} AS slow2\n\
         RUN sleep 1 && echo 2 > /two\n\
         FROM scratch\n\
         COPY --from=child /seen /seen\n\
         COPY --from=slow1 /one /one\n\
         COPY --from=slow2 /two /two\n\
         COPY --from=extra /e.txt /e.txt\n",
        &[],
    );
    let extra = env.dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("e.txt"), "from a named context\n").unwrap();
    let local = format!("extra={}", extra.display());
    let e = env.build(
        &ctx,
        &["--local", &local, "--opt", "context:extra=local:extra"],
    );
    assert_eq!(content(&e, "seen"), "triggered\n");
    assert_eq!(content(&e, "one"), "1\n");
    assert_eq!(content(&e, "two"), "2\n");
    assert_eq!(content(&e, "e.txt"), "from a named context\n");

    // the two independent stages ran at the same time: their RUN steps overlap
    let out = env.run(
        &ctx,
        &[
            "--local",
            &local,
            "--opt",
            "context:extra=local:extra",
            "--no-cache",
            "--progress",
            "rawjson",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut spans: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            let name = vx["name"].as_str().unwrap_or_default();
            if name.contains("RUN sleep 1")
                && let (Some(s), Some(c)) = (vx["started"].as_str(), vx["completed"].as_str())
            {
                spans.insert(name.to_string(), (s.to_string(), c.to_string()));
            }
        }
    }
    assert_eq!(spans.len(), 2, "{spans:?}");
    let secs = |t: &str| -> f64 {
        // `2026-11-27T03:55:01.123Z` → seconds of the day (both steps run the same day)
        let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
        let p: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    let v: Vec<(f64, f64)> = spans.values().map(|(s, c)| (secs(s), secs(c))).collect();
    assert!(
        v[0].0 < v[1].1 && v[1].0 < v[0].1,
        "the stages ran one after the other: {spans:?}"
    );
}

#[test]
fn bad_dockerfiles_name_file_and_line() {
    let Some(env) = Env::start("bad_dockerfiles_name_file_and_line") else {
        return;
    };
    for (df, want) in [
        (
            "FROM scratch\nFROB x\n",
            "Dockerfile:2: unknown instruction: FROB",
        ),
        (
            "FROM scratch\nCOPY --chmd=0755 a /a\n",
            "Dockerfile:2: unknown flag: --chmd",
        ),
        ("FROM scratch\nRUN <<EOF\necho\n", "Dockerfile:2"),
        (
            "FROM scratch\n\nRUN --mount=type=nope,target=/x true\n",
            "Dockerfile:3: --mount=",
        ),
        (
            "FROM $UNDEFINED\n",
            "Dockerfile:1: base name ($UNDEFINED) should not be blank",
        ),
        (
            "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n",
            "Dockerfile:2:",
        ),
        (
            "FROM scratch\nCOPY ../outside /x\n",
            "Dockerfile:2: COPY ../outside: the path is outside the build context",
        ),
        (
            "FROM scratch\nHEALTHCHECK --interval=5x CMD true\n",
            "Dockerfile:2: HEALTHCHECK --interval",
        ),
        (
            "FROM scratch\nEXPOSE 80/bogus\n",
            "Dockerfile:2: invalid proto",
        ),
    ] {
        let ctx = env.context(df, &[]);
        let t = env.fails(&ctx, &["--opt", "target="]);
        assert!(t.contains(want), "for {df:?} expected {want:?} in:\n{t}");
    }
    // invalid JSON falls back to the shell form, as upstream
    let ctx = env.context(
        "FROM {busybox}\nRUN [\"echo\", bad-json] > /out 2>&1 || true\n",
        &[],
    );
    let e = env.build(&ctx, &[]);
    assert!(e.contains_key("out"));
}

#[test]
fn secret_mounts_and_named_dockerfile_ignore() {
    let Some(env) = Env::start("secret_mounts_and_named_dockerfile_ignore") else {
        return;
    };
    const VALUE: &str = "s3cr3t-value-4a1f0e-for-the-step-only";
    let secret_file = env.dir.path().join("token");
    std::fs::write(&secret_file, VALUE).unwrap();
    let ctx = env.context("FROM scratch\n", &[]);
    std::fs::write(
        ctx.join("Build.Dockerfile"),
        format!(
            "FROM {}\n\
             RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -d' ' -f1 > /secret-sum\n\
             RUN --mount=type=secret,id=token,env=TOKEN sh -c 'echo ${{#TOKEN}} > /secret-len'\n\
             RUN --mount=type=secret,id=absent true\n\
             COPY . /ctx/\n",
            env.busybox
        ),
    )
    .unwrap();
    std::fs::write(
        ctx.join("Build.Dockerfile.dockerignore"),
        "ignored-by-named\n",
    )
    .unwrap();
    std::fs::write(ctx.join("ignored-by-named"), "x").unwrap();
    std::fs::write(ctx.join("kept"), "y").unwrap();
    let secret = format!("id=token,src={}", secret_file.display());
    let e = env.build(
        &ctx,
        &["--opt", "filename=Build.Dockerfile", "--secret", &secret],
    );
    use std::io::Write as _;
    let mut h = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    h.stdin.take().unwrap().write_all(VALUE.as_bytes()).unwrap();
    let want = String::from_utf8(h.wait_with_output().unwrap().stdout).unwrap();
    let want = want.split_whitespace().next().unwrap();
    assert_eq!(content(&e, "secret-sum").trim(), want);
    assert_eq!(content(&e, "secret-len").trim(), VALUE.len().to_string());
    // not in the result, and nowhere in the daemon's state
    for (path, entry) in &e {
        assert!(
            !String::from_utf8_lossy(&entry.data).contains(VALUE),
            "secret in the output at {path}"
        );
    }
    let found = std::process::Command::new("grep")
        .args(["-rl", VALUE])
        .arg(&env.d.root)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "secret stored by the daemon: {}",
        String::from_utf8_lossy(&found.stdout)
    );
    // Build.Dockerfile.dockerignore applies to the context
    assert!(e.contains_key("ctx/kept"));
    assert!(!e.contains_key("ctx/ignored-by-named"));
    // a required secret that is missing fails, naming it
    std::fs::write(
        ctx.join("Build.Dockerfile"),
        format!(
            "FROM {}\nRUN --mount=type=secret,id=absent,required true\n",
            env.busybox
        ),
    )
    .unwrap();
    let t = env.fails(&ctx, &["--opt", "filename=Build.Dockerfile"]);
    assert!(t.contains("secret absent not found"), "{t}");
}

/// Reads the image config out of an OCI layout tarball: index → manifest → config.
fn oci_config(tar_path: &Path) -> serde_json::Value {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(path.trim_start_matches("./").to_string(), data);
    }
    let blob = |digest: &str| -> serde_json::Value {
        let path = format!("blobs/{}", digest.replacen(':', "/", 1));
        serde_json::from_slice(
            blobs
                .get(&path)
                .unwrap_or_else(|| panic!("{path} not in the layout: {:?}", blobs.keys())),
        )
        .unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&blobs["index.json"]).unwrap();
    let mut m = blob(index["manifests"][0]["digest"].as_str().unwrap());
    if m["manifests"].is_array() {
        m = blob(m["manifests"][0]["digest"].as_str().unwrap());
    }
    blob(m["config"]["digest"].as_str().unwrap())
}

#[test]
fn image_config_instructions() {
    let Some(env) = Env::start("image_config_instructions") else {
        return;
    };
    let ctx = env.context(
        "FROM {busybox} AS base\n\
         ENV FROM_BASE=1\n\
         CMD [\"base-cmd\"]\n\
         FROM base\n\
         MAINTAINER someone@example.com\n\
         LABEL a=b \"c d\"=\"e f\"\n\
         EXPOSE 80 53/udp\n\
         VOLUME /data [\"/more\"]\n\
         VOLUME [\"/json\"]\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD wget -q localhost || exit 1\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         ENV A=1 B=\"two words\"\n\
         WORKDIR /app\n\
         USER nobody\n\
         ONBUILD RUN echo later\n\
         ENTRYPOINT [\"/bin/echo\"]\n",
        &[],
    );
    let tar_path = ctx.with_extension("oci.tar");
    let dest = format!("type=oci,dest={}", tar_path.display());
    let out = env.run(&ctx, &["--output", &dest, "--opt", "label:from.opt=yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg = oci_config(&tar_path);
    let c = &cfg["config"];
    let env_list: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env_list.contains(&"FROM_BASE=1"), "{env_list:?}");
    assert!(env_list.contains(&"B=two words"), "{env_list:?}");
    assert!(
        env_list.iter().any(|e| e.starts_with("PATH=")),
        "{env_list:?}"
    );
    // ENTRYPOINT after an inherited CMD resets it
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert!(c["Cmd"].is_null(), "{c}");
    assert_eq!(c["Labels"]["a"], "b");
    assert_eq!(c["Labels"]["c d"], "e f");
    assert_eq!(c["Labels"]["from.opt"], "yes");
    assert!(c["ExposedPorts"]["80/tcp"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert!(c["Volumes"]["/json"].is_object(), "{c}");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q localhost || exit 1"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo later"]));
    assert_eq!(cfg["author"], "someone@example.com");
    // history: one entry per instruction after the base's, layers marked
    let history = cfg["history"].as_array().unwrap();
    let by: Vec<&str> = history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    assert!(by.contains(&"WORKDIR /app"), "{by:?}");
    assert!(by.contains(&"USER nobody"), "{by:?}");
    assert!(by.contains(&"ENV A=1 B=two words"), "{by:?}");
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(
        non_empty,
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        "one non-empty history entry per layer: {history:#?}"
    );
}

#[test]
fn insecure_steps_need_both_entitlements() {
    let Some(env) = Env::start("insecure_steps_need_both_entitlements") else {
        return;
    };
    let ctx = env.context(
        "FROM {busybox}\nRUN --security=insecure cat /proc/self/status | grep CapEff > /caps\n",
        &[],
    );
    let t = env.fails(&ctx, &[]);
    assert!(t.contains("pass --allow security.insecure"), "{t}");
    let t = env.fails(&ctx, &["--allow", "security.insecure"]);
    assert!(
        t.contains("--allow-insecure-entitlement security.insecure"),
        "{t}"
    );
    // a daemon that allows it runs the step with all capabilities
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        &["--allow-insecure-entitlement", "security.insecure"],
    );
    let tar_path = dir.path().join("out.tar");
    let c = ctx.display().to_string();
    let out = d.buildctl(
        &[
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={c}"),
            "--local",
            &format!("dockerfile={c}"),
            "--allow",
            "security.insecure",
            "--output",
            &format!("type=tar,dest={}", tar_path.display()),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    let mut caps = String::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "caps" {
            e.read_to_string(&mut caps).unwrap();
        }
    }
    assert!(
        caps.contains("CapEff:\t000001ff") || caps.contains("CapEff:\t0000003f"),
        "{caps}"
    );
}
