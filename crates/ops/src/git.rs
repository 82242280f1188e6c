//! `git://` sources: a commit of a remote repository checked out into a new snapshot, by
//! the system `git` binary.
//!
//! - Identifier `git://HOST/PATH[#REF[:SUBDIR]]`; the remote is `git.fullurl` when set
//!   (http, https, ssh, git or scp-like `user@host:path`, as upstream accepts), otherwise
//!   `https://HOST/PATH`.
//! - Cache key: the op digest plus the commit the ref resolves to now (`git ls-remote` in
//!   `cache_map`), so a moved branch builds again and an unmoved one hits the cache. A
//!   ref that is a full commit sha needs no network to key.
//! - `exec` checks out exactly the commit the key was made from: it fetches the ref with
//!   `--depth=1` (by commit if the ref moved in between), into a scratch repository under
//!   the worker's tmp dir, and checks the tree out straight into the mounted snapshot.
//!   With `git.keepgitdir` (and no sub directory) the repository itself lives in the
//!   snapshot's `.git`, with `origin` set to the remote (password masked). Submodules are
//!   updated unless `git.skipsubmodules`. A `SUBDIR` selects one directory (no symlinks
//!   on the way) whose entries become the snapshot's root.
//! - git runs with a clean environment (no system or user config, no terminal prompts,
//!   `HOME` in a scratch directory, `file://` transports only when asked by the user, no
//!   automatic gc), a time limit per command, and is killed when the build is cancelled.
//!   Credentials for http(s) remotes come from session secrets (`git.authheadersecret`,
//!   `git.authtokensecret`, per host first, as upstream) and reach git through its
//!   environment, never its command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use solver::{OpContext, OpError};
use tokio_util::sync::CancellationToken;

use crate::mounted::Active;
use crate::{BuildSession, OpsContext, RecordType, Ref, blocking, op_err};

/// Listing the refs of a remote is small: a remote that takes longer is not answering.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(120);
/// Fetching can be large; this only bounds a transfer that hangs.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Local work: init, checkout, config.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How much of git's error output a message keeps (its end: where git says why).
const MAX_DETAIL: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("git source {identifier}: {reason}")]
    Invalid { identifier: String, reason: String },
    #[error("git source {target}: {attr} is not supported yet")]
    Unsupported { target: String, attr: String },
    #[error("git source {target}: {what}: {detail}")]
    Failed {
        target: String,
        what: String,
        detail: String,
    },
    #[error("git source {target}: repository does not contain ref {reference}")]
    NoRef { target: String, reference: String },
    #[error("git source {target}: expected checksum to match {expected}, got {actual}")]
    Checksum {
        target: String,
        expected: String,
        actual: String,
    },
    #[error("git source {target}: {what}: {source}")]
    Io {
        target: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A parsed git source: the identifier and its `git.*` attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GitSource {
    /// What git fetches from.
    remote: String,
    /// The remote as messages (and a kept `.git`) show it: a password in it is masked.
    shown: String,
    /// Branch, tag, full ref or commit sha; empty for the remote's default branch.
    reference: String,
    /// Relative, cleaned; empty for the whole tree.
    subdir: String,
    keep_git_dir: bool,
    /// A hex prefix the resolved commit (or annotated tag) must have.
    checksum: Option<String>,
    skip_submodules: bool,
    auth_token_secret: Option<String>,
    auth_header_secret: Option<String>,
    known_ssh_hosts: Option<String>,
    /// A password in the remote URL (as written and decoded), masked in git's output.
    password: Option<[String; 2]>,
}

/// What a ref resolved to: the commit `exec` checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// The full ref to fetch (`refs/heads/main`, `refs/tags/v1`); `None` when the ref is
    /// a commit sha.
    fetch_ref: Option<String>,
    /// What the ref points at: an annotated tag's own object for such a tag.
    object: String,
    /// The commit to check out.
    commit: String,
}

impl Pinned {
    /// What of the remote, besides the op, decides the result.
    pub(crate) fn key_material(&self) -> serde_json::Value {
        serde_json::json!([self.object, self.commit])
    }

    pub(crate) fn commit(&self) -> &str {
        &self.commit
    }
}

/// Whether `s` is a full commit sha (sha1 or sha256 object format).
fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `path.Join("/", p)` without the leading slash: `..` cannot climb out.
fn clean_subdir(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The scheme of `s` if it starts like `scheme://`.
fn scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(scheme)
}

/// `user@host:path`, which git reads as ssh.
fn is_scp_like(s: &str) -> bool {
    let Some((user_host, path)) = s.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !user.starts_with('-')
        && !host.is_empty()
        && !host.starts_with('-')
        && !path.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
}

impl GitSource {
    /// Parses a `git://` identifier and its attributes.
    pub(crate) fn parse(
        identifier: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<GitSource, GitError> {
        let invalid = |reason: String| GitError::Invalid {
            identifier: identifier.to_string(),
            reason,
        };
        let rest = identifier
            .strip_prefix("git://")
            .ok_or_else(|| invalid("not a git:// identifier".into()))?;
        let (location, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        if location.is_empty() {
            return Err(invalid("no repository".into()));
        }
        // A ref starting with a dash would be read as an option by git.
        if reference.starts_with('-') {
            return Err(invalid(format!("invalid git ref {reference:?}")));
        }
        let mut remote = remote_url(location).map_err(&invalid)?;
        let mut src = GitSource {
            remote: String::new(),
            shown: String::new(),
            reference: reference.to_string(),
            subdir: clean_subdir(subdir),
            keep_git_dir: false,
            checksum: None,
            skip_submodules: false,
            auth_token_secret: None,
            auth_header_secret: None,
            known_ssh_hosts: None,
            password: None,
        };
        let nonempty = |v: &String| Some(v.clone()).filter(|v| !v.is_empty());
        let mut unsupported = None;
        for (k, v) in attrs {
            match k.as_str() {
                "git.fullurl" => remote = remote_url(v).map_err(&invalid)?,
                "git.keepgitdir" => src.keep_git_dir = v == "true",
                "git.skipsubmodules" => src.skip_submodules = v == "true",
                "git.authtokensecret" => src.auth_token_secret = nonempty(v),
                "git.authheadersecret" => src.auth_header_secret = nonempty(v),
                "git.knownsshhosts" => src.known_ssh_hosts = nonempty(v),
                // The agent socket needs ssh forwarding from the session, which does not
                // exist yet: ssh remotes run without an agent.
                "git.mountsshsock" => {}
                "git.checksum" => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(invalid(format!(
                            "invalid checksum {v} for a git source, expected a hex commit hash"
                        )));
                    }
                    src.checksum = Some(v.to_ascii_lowercase());
                }
                "git.mtime" if v.is_empty() || v == "checkout" => {}
                // These change what is built or checked: refusing beats ignoring them.
                "git.mtime"
                | "git.bundle"
                | "git.fetchbycommit"
                | "git.checkoutbundle"
                | "git.sig.pubkey"
                | "git.sig.rejectexpired"
                | "git.sig.requiresignedtag"
                | "git.sig.ignoresignedtag"
                    if !v.is_empty() && v != "false" =>
                {
                    unsupported.get_or_insert_with(|| k.clone());
                }
                _ => {}
            }
        }
        let (shown, password) = mask_password(&remote);
        src.remote = remote;
        src.shown = shown;
        src.password = password;
        if let Some(attr) = unsupported {
            return Err(GitError::Unsupported {
                target: src.target(),
                attr,
            });
        }
        if let Some(c) = &src.checksum
            && is_commit_sha(&src.reference)
            && !src.reference.starts_with(c.as_str())
        {
            return Err(GitError::Checksum {
                target: src.target(),
                expected: c.clone(),
                actual: src.reference.clone(),
            });
        }
        Ok(src)
    }

    /// `remote#ref` for messages.
    pub(crate) fn target(&self) -> String {
        if self.reference.is_empty() {
            self.shown.clone()
        } else {
            format!("{}#{}", self.shown, self.reference)
        }
    }

    fn is_http(&self) -> bool {
        matches!(scheme(&self.remote), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
    }

    fn failed(&self, what: &str, detail: impl Into<String>) -> GitError {
        GitError::Failed {
            target: self.target(),
            what: what.to_string(),
            detail: detail.into(),
        }
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> GitError + use<> {
        let target = self.target();
        let what = what.to_string();
        move |source| GitError::Io {
            target,
            what,
            source,
        }
    }

    /// The `Authorization` header for an http(s) remote, from the session's secrets:
    /// per-host names first, a header before a token (upstream's order).
    async fn auth_header(&self, session: Option<&dyn BuildSession>) -> Option<String> {
        let session = session?;
        if !self.is_http() {
            return None;
        }
        let host = reqwest::Url::parse(&self.remote).ok().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })?;
        let mut names = Vec::new();
        if let Some(h) = &self.auth_header_secret {
            names.push((format!("{h}.{host}"), false));
        }
        if let Some(t) = &self.auth_token_secret {
            names.push((format!("{t}.{host}"), true));
        }
        if let Some(h) = &self.auth_header_secret {
            names.push((h.clone(), false));
        }
        if let Some(t) = &self.auth_token_secret {
            names.push((t.clone(), true));
        }
        for (name, token) in names {
            match session.secret(&name).await {
                Ok(Some(v)) => {
                    let v = String::from_utf8_lossy(&v).into_owned();
                    return Some(if token {
                        let raw = format!("x-access-token:{v}");
                        format!(
                            "basic {}",
                            base64::engine::general_purpose::STANDARD.encode(raw)
                        )
                    } else {
                        v
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(secret = name, error = e, "no git auth secret"),
            }
        }
        None
    }
}

/// The URL git is given for `s` (upstream's rules): a supported scheme as is, scp-like as
/// is (ssh), anything else as `https://s`.
fn remote_url(s: &str) -> Result<String, String> {
    if let Some(scheme) = scheme(s) {
        return match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" | "ssh" | "git" => Ok(s.to_string()),
            other => Err(format!("unsupported git protocol {other:?}")),
        };
    }
    if is_scp_like(s) {
        return Ok(s.to_string());
    }
    Ok(format!("https://{s}"))
}

/// The URL with its password masked, and the password as written and decoded.
fn mask_password(remote: &str) -> (String, Option<[String; 2]>) {
    if scheme(remote).is_some()
        && let Ok(mut u) = reqwest::Url::parse(remote)
        && let Some(p) = u.password()
    {
        let raw = p.to_string();
        let decoded = percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned();
        if u.set_password(Some("xxxxx")).is_ok() {
            return (u.to_string(), Some([raw, decoded]));
        }
    }
    (remote.to_string(), None)
}

/// Picks what `reference` names in `ls-remote` output, as git checkout would: a full or
/// partial ref, then a branch, then a tag. `None` when nothing matches.
fn pick_ref(reference: &str, listing: &str) -> Option<Pinned> {
    let trimmed = |p: &str| reference.strip_prefix(p).unwrap_or(reference).to_string();
    let partial = format!("refs/{}", trimmed("refs/"));
    let head = format!("refs/heads/{}", trimmed("refs/heads/"));
    let tag = format!("refs/tags/{}", trimmed("refs/tags/"));
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    for line in listing.lines() {
        if let Some((sha, name)) = line.split_once('\t') {
            found.insert(name.trim(), sha.trim());
        }
    }
    let used = [&partial, &head, &tag]
        .into_iter()
        .find(|r| found.contains_key(r.as_str()))?;
    let object = found[used.as_str()].to_string();
    // An annotated tag lists the commit it points at as `<tag>^{}`.
    let commit = found
        .get(format!("{used}^{{}}").as_str())
        .map_or_else(|| object.clone(), |c| c.to_string());
    Some(Pinned {
        fetch_ref: Some(used.clone()),
        object,
        commit,
    })
}

/// Single-quotes `s` for the shell that runs `GIT_SSH_COMMAND`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs git for one source, in a clean environment rooted at a scratch directory under
/// the worker's tmp dir (removed when this is dropped).
pub(crate) struct GitRunner {
    scratch: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Strings masked in git's output (credentials).
    masked: Vec<String>,
    cancel: CancellationToken,
    /// Where git's messages go: the progress of the op's vertex.
    log: (solver::Progress, String),
}

impl GitRunner {
    async fn new(
        src: &GitSource,
        session: Option<&dyn BuildSession>,
        tmp_dir: &Path,
        ctx: &OpContext,
    ) -> Result<GitRunner, GitError> {
        std::fs::create_dir_all(tmp_dir).map_err(src.io("creating the tmp dir"))?;
        let scratch = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(tmp_dir)
            .map_err(src.io("creating a scratch directory"))?;
        let home = scratch.path().join("home");
        std::fs::create_dir(&home).map_err(src.io("creating a scratch directory"))?;
        let mut masked: Vec<String> = src.password.iter().flatten().cloned().collect();
        let mut config: Vec<(String, String)> = [
            // Submodules and remotes may not read the daemon's files (git sets
            // GIT_PROTOCOL_FROM_USER=0 for submodules, which this denies).
            ("protocol.file.allow", "user"),
            // A background gc could outlive the scratch directory.
            ("gc.auto", "0"),
            ("maintenance.auto", "false"),
            ("advice.detachedHead", "false"),
            ("init.defaultBranch", "master"),
            // A stalled http transfer fails after a minute.
            ("http.lowSpeedLimit", "1"),
            ("http.lowSpeedTime", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(auth) = src.auth_header(session).await {
            // github.com tokens work for every repository there (as upstream assumes).
            let scope = ["https://github.com/", "https://www.github.com/"]
                .into_iter()
                .find(|p| src.remote.starts_with(p))
                .unwrap_or(&src.remote);
            config.push((
                format!("http.{scope}.extraheader"),
                format!("Authorization: {auth}"),
            ));
            masked.push(auth);
        }
        let mut ssh = "ssh -F /dev/null -o BatchMode=yes".to_string();
        if let Some(hosts) = &src.known_ssh_hosts {
            let file = scratch.path().join("known_hosts");
            std::fs::write(&file, hosts).map_err(src.io("writing known hosts"))?;
            ssh.push_str(" -o UserKnownHostsFile=");
            ssh.push_str(&shell_quote(&file.to_string_lossy()));
        } else {
            ssh.push_str(" -o StrictHostKeyChecking=no");
        }
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                }),
            ),
            ("HOME".into(), home.to_string_lossy().into_owned()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_SSH_COMMAND".into(), ssh),
            // No repository above the scratch directory is ever found.
            (
                "GIT_CEILING_DIRECTORIES".into(),
                tmp_dir.to_string_lossy().into_owned(),
            ),
            ("LC_ALL".into(), "C".into()),
            ("GIT_CONFIG_COUNT".into(), config.len().to_string()),
        ];
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
        for p in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "all_proxy",
        ] {
            if let Ok(v) = std::env::var(p) {
                env.push((p.into(), v));
            }
        }
        Ok(GitRunner {
            scratch,
            env,
            masked,
            cancel: ctx.cancel.clone(),
            log: (ctx.progress.clone(), ctx.vertex.clone()),
        })
    }

    fn home(&self) -> PathBuf {
        self.scratch.path().join("home")
    }

    fn mask(&self, s: &str) -> String {
        let mut s = s.to_string();
        for m in self.masked.iter().filter(|m| !m.is_empty()) {
            s = s.replace(m.as_str(), "xxxxx");
        }
        s
    }

    /// Runs `git args` in `cwd`; stdout on success. Failures carry git's error output.
    async fn run(
        &self,
        src: &GitSource,
        what: &str,
        cwd: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, GitError> {
        // Masked: the remote URL may carry a password.
        tracing::debug!(args = self.mask(&args.join(" ")), "git");
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timeout or a cancelled build drops the future: git must not go on.
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| src.failed(what, format!("running git: {e}")))?;
        let out = tokio::select! {
            r = tokio::time::timeout(timeout, child.wait_with_output()) => match r {
                Ok(r) => r.map_err(|e| src.failed(what, format!("running git: {e}")))?,
                Err(_) => {
                    return Err(src.failed(what, format!("timed out after {}s", timeout.as_secs())))
                }
            },
            _ = self.cancel.cancelled() => return Err(src.failed(what, "cancelled")),
        };
        let stderr = self.mask(&String::from_utf8_lossy(&out.stderr));
        if !stderr.trim().is_empty() {
            self.log.0.log(&self.log.1, 2, stderr.as_bytes());
        }
        if !out.status.success() {
            let detail = stderr.trim();
            let detail = match detail.char_indices().rev().nth(MAX_DETAIL) {
                Some((i, _)) => &detail[i..],
                None => detail,
            };
            let detail = if detail.is_empty() {
                out.status.to_string()
            } else {
                detail.to_string()
            };
            return Err(src.failed(what, detail));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The remote's default branch (what its HEAD points at).
    async fn default_branch(&self, src: &GitSource) -> Result<String, GitError> {
        let out = self
            .run(
                src,
                "ls-remote",
                &self.home(),
                &["ls-remote", "--symref", "--", &src.remote, "HEAD"],
                LS_REMOTE_TIMEOUT,
            )
            .await?;
        out.lines()
            .filter_map(|l| l.strip_prefix("ref:"))
            .filter_map(|l| l.split_whitespace().next())
            .find_map(|r| r.strip_prefix("refs/heads/"))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
            .map(str::to_string)
            .ok_or_else(|| src.failed("ls-remote", "could not find the default branch"))
    }
}

/// Resolves the source's ref to a commit, asking the remote unless the ref is a commit.
pub(crate) async fn resolve(
    ops: &OpsContext,
    src: &GitSource,
    session: Option<&dyn BuildSession>,
    ctx: &OpContext,
) -> Result<Pinned, GitError> {
    if is_commit_sha(&src.reference) {
        // The checksum was compared when parsing.
        return Ok(Pinned {
            fetch_ref: None,
            object: src.reference.clone(),
            commit: src.reference.clone(),
        });
    }
    let git = GitRunner::new(src, session, &ops.worker.tmp_dir(), ctx).await?;
    let reference = if src.reference.is_empty() {
        git.default_branch(src).await?
    } else {
        src.reference.clone()
    };
    let peeled = format!("{reference}^{{}}");
    let listing = git
        .run(
            src,
            "ls-remote",
            &git.home(),
            &["ls-remote", "--", &src.remote, &reference, &peeled],
            LS_REMOTE_TIMEOUT,
        )
        .await?;
    let pinned = pick_ref(&reference, &listing).ok_or_else(|| GitError::NoRef {
        target: src.shown.clone(),
        reference: reference.clone(),
    })?;
    if !is_commit_sha(&pinned.object) || !is_commit_sha(&pinned.commit) {
        return Err(src.failed(
            "ls-remote",
            format!("invalid commit sha {:?}", pinned.object),
        ));
    }
    if let Some(c) = &src.checksum
        && !pinned.object.starts_with(c.as_str())
        && !pinned.commit.starts_with(c.as_str())
    {
        return Err(GitError::Checksum {
            target: src.target(),
            expected: c.clone(),
            actual: pinned.commit.clone(),
        });
    }
    tracing::debug!(
        remote = src.shown,
        reference,
        commit = pinned.commit,
        "resolved git ref"
    );
    Ok(pinned)
}

/// Fetches the pinned commit into `git_dir` (whose `origin` is the remote).
async fn fetch(
    git: &GitRunner,
    src: &GitSource,
    pinned: &Pinned,
    git_dir: &str,
) -> Result<(), GitError> {
    let home = git.home();
    let home = home.as_path();
    // Shallow first; servers that cannot (dumb http) get a full fetch.
    let fetch = |spec: String| async move {
        let mut args = vec![
            "--git-dir",
            git_dir,
            "fetch",
            "--quiet",
            "--no-tags",
            "--update-head-ok",
            "--depth=1",
            "--",
            "origin",
            &spec,
        ];
        match git.run(src, "fetch", home, &args, FETCH_TIMEOUT).await {
            Err(GitError::Failed { detail, .. })
                if detail.contains("shallow") || detail.contains("--depth") =>
            {
                args.retain(|a| *a != "--depth=1");
                git.run(src, "fetch", home, &args, FETCH_TIMEOUT).await
            }
            r => r,
        }
    };
    match &pinned.fetch_ref {
        Some(r) => {
            fetch(format!("+{r}:{r}")).await?;
            let got = git
                .run(
                    src,
                    "rev-parse",
                    home,
                    &["--git-dir", git_dir, "rev-parse", "--verify", "--quiet", r],
                    LOCAL_TIMEOUT,
                )
                .await?;
            if got.trim() != pinned.object {
                // The ref moved since the key was made: get the commit it had then.
                tracing::info!(
                    remote = src.shown,
                    reference = r,
                    now = got.trim(),
                    pinned = pinned.commit,
                    "git ref moved; fetching the pinned commit"
                );
                fetch(pinned.commit.clone()).await.map_err(|e| {
                    src.failed(
                        "fetch",
                        format!(
                            "{r} moved to {} and commit {} cannot be fetched: {e}",
                            got.trim(),
                            pinned.commit
                        ),
                    )
                })?;
            }
        }
        None => {
            fetch(pinned.commit.clone()).await?;
        }
    }
    let want = format!("{}^{{commit}}", pinned.commit);
    git.run(
        src,
        "fetch",
        home,
        &["--git-dir", git_dir, "cat-file", "-e", &want],
        LOCAL_TIMEOUT,
    )
    .await
    .map_err(|_| src.failed("fetch", format!("commit {} was not fetched", pinned.commit)))?;
    Ok(())
}

/// Fills the mounted snapshot at `root`. Returns the scratch work tree holding the whole
/// checkout when a sub directory is selected (inside `root`, for a cheap rename).
async fn fill(
    git: &GitRunner,
    src: &GitSource,
    pinned: &Pinned,
    root: &Path,
) -> Result<Option<tempfile::TempDir>, GitError> {
    let keep = src.keep_git_dir && src.subdir.is_empty();
    let home = git.home();
    let git_dir = if keep {
        root.join(".git")
    } else {
        git.scratch.path().join("repo.git")
    };
    let git_dir_s = git_dir.to_string_lossy().into_owned();
    let gd = git_dir_s.as_str();
    // Without keeping it, the repository is bare and outside the snapshot; each command
    // names the work tree.
    let root_s = root.to_string_lossy().into_owned();
    let init: [&str; 4] = if keep {
        ["init", "--quiet", "--", &root_s]
    } else {
        ["init", "--quiet", "--bare", gd]
    };
    git.run(src, "init", &home, &init, LOCAL_TIMEOUT).await?;
    git.run(
        src,
        "remote add",
        &home,
        &[
            "--git-dir",
            gd,
            "remote",
            "add",
            "origin",
            "--",
            &src.remote,
        ],
        LOCAL_TIMEOUT,
    )
    .await?;
    fetch(git, src, pinned, gd).await?;

    let scratch_tree = if src.subdir.is_empty() {
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix(".checkout-")
                .tempdir_in(root)
                .map_err(src.io("creating the checkout directory"))?,
        )
    };
    let work_tree = scratch_tree
        .as_ref()
        .map_or_else(|| root.to_path_buf(), |t| t.path().to_path_buf());
    let wt = work_tree.to_string_lossy().into_owned();
    let checkout: Vec<&str> = if keep {
        vec![
            "--git-dir",
            gd,
            "--work-tree",
            &wt,
            "checkout",
            "--quiet",
            "--detach",
            &pinned.commit,
        ]
    } else {
        vec![
            "--git-dir",
            gd,
            "--work-tree",
            &wt,
            "checkout",
            "--quiet",
            &pinned.commit,
            "--",
            ".",
        ]
    };
    git.run(src, "checkout", &work_tree, &checkout, LOCAL_TIMEOUT)
        .await?;
    if !src.skip_submodules && work_tree.join(".gitmodules").exists() {
        let mut args = vec![
            "--git-dir",
            gd,
            "--work-tree",
            &wt,
            "submodule",
            "update",
            "--init",
            "--recursive",
            "--depth=1",
        ];
        let r = git
            .run(src, "submodule update", &work_tree, &args, FETCH_TIMEOUT)
            .await;
        match r {
            Err(GitError::Failed { detail, .. })
                if detail.contains("shallow")
                    || detail.contains("--depth")
                    || detail.contains("not our ref")
                    || detail.contains("unadvertised object") =>
            {
                args.retain(|a| *a != "--depth=1");
                git.run(src, "submodule update", &work_tree, &args, FETCH_TIMEOUT)
                    .await?;
            }
            r => {
                r?;
            }
        }
    }
    if keep {
        // What stays in the snapshot: no credentials, no traces of the fetch.
        for (what, args) in [
            (
                "remote set-url",
                vec![
                    "--git-dir",
                    gd,
                    "remote",
                    "set-url",
                    "origin",
                    "--",
                    &src.shown,
                ],
            ),
            (
                "reflog expire",
                vec!["--git-dir", gd, "reflog", "expire", "--all", "--expire=now"],
            ),
        ] {
            git.run(src, what, &home, &args, LOCAL_TIMEOUT).await?;
        }
        match std::fs::remove_file(git_dir.join("FETCH_HEAD")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(src.io("removing FETCH_HEAD")(e));
            }
            _ => {}
        }
    }
    Ok(scratch_tree)
}

/// Moves the entries of `tree/subdir` to `root`. Every component of `subdir` must be a
/// directory, not a symlink: a symlink could point out of the checkout. Blocking.
fn select_subdir(src: &GitSource, tree: &Path, root: &Path) -> Result<(), GitError> {
    let mut dir = tree.to_path_buf();
    for part in src.subdir.split('/') {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(src.failed(
                    "checkout",
                    format!("invalid subdir {}: {part} is not a directory", src.subdir),
                ));
            }
            Err(e) => {
                return Err(src.failed("checkout", format!("invalid subdir {}: {e}", src.subdir)));
            }
        }
    }
    let entries = std::fs::read_dir(&dir).map_err(src.io("reading the subdir"))?;
    for e in entries {
        let e = e.map_err(src.io("reading the subdir"))?;
        std::fs::rename(e.path(), root.join(e.file_name())).map_err(src.io("moving the subdir"))?;
    }
    Ok(())
}

/// Checks the pinned commit out into a new snapshot.
pub(crate) async fn checkout(
    ops: &Arc<OpsContext>,
    src: &GitSource,
    pinned: &Pinned,
    session: Option<&dyn BuildSession>,
    ctx: &OpContext,
) -> Result<Ref, OpError> {
    let git = GitRunner::new(src, session, &ops.worker.tmp_dir(), ctx)
        .await
        .map_err(op_err)?;
    let (active, mounted) = {
        let ops = ops.clone();
        blocking(move || {
            let active = Active::prepare(&ops, &Ref::scratch())?;
            let mounted = active.mount(&ops)?;
            Ok((active, mounted))
        })
        .await?
    };
    let root = mounted.path().to_path_buf();
    let description = format!("git snapshot for {}#{}", src.shown, pinned.commit());
    let filled = fill(&git, src, pinned, &root).await;
    let src = src.clone();
    // Unmounting, moving and removing trees block.
    blocking(move || {
        let r = match filled {
            Ok(Some(tree)) => {
                let moved = select_subdir(&src, tree.path(), &root);
                let removed = tree.close().map_err(src.io("removing the checkout"));
                moved.and(removed)
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        drop(mounted);
        drop(git);
        r.map_err(op_err)?;
        active.commit_as(RecordType::GitCheckout, &description)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn identifier_and_attributes() {
        let src = GitSource::parse(
            "git://github.com/moby/buildkit#v0.1:docs/../api",
            &attrs(&[
                ("git.fullurl", "https://tok:secret@github.com/moby/buildkit"),
                ("git.keepgitdir", "true"),
                ("git.authtokensecret", "GIT_AUTH_TOKEN"),
                ("git.checksum", "ABC123"),
            ]),
        )
        .unwrap();
        assert_eq!(src.remote, "https://tok:secret@github.com/moby/buildkit");
        assert_eq!(src.shown, "https://tok:xxxxx@github.com/moby/buildkit");
        assert_eq!(
            src.password,
            Some(["secret".to_string(), "secret".to_string()])
        );
        assert_eq!(src.reference, "v0.1");
        assert_eq!(src.subdir, "api");
        assert!(src.keep_git_dir && !src.skip_submodules);
        assert_eq!(src.checksum.as_deref(), Some("abc123"));
        assert_eq!(
            src.target(),
            "https://tok:xxxxx@github.com/moby/buildkit#v0.1"
        );

        // Without a full URL, upstream assumes https.
        let src = GitSource::parse("git://example.com/r.git", &attrs(&[])).unwrap();
        assert_eq!(src.remote, "https://example.com/r.git");
        assert_eq!((src.reference.as_str(), src.subdir.as_str()), ("", ""));

        let src = GitSource::parse(
            "git://github.com/a/b#:sub",
            &attrs(&[
                ("git.fullurl", "git@github.com:a/b.git"),
                ("git.skipsubmodules", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(src.remote, "git@github.com:a/b.git");
        assert_eq!(src.subdir, "sub");
        assert!(src.skip_submodules);
        assert!(!src.is_http());

        let src = GitSource::parse(
            "git://127.0.0.1:9418/repo#main",
            &attrs(&[("git.fullurl", "git://127.0.0.1:9418/repo")]),
        )
        .unwrap();
        assert_eq!(src.remote, "git://127.0.0.1:9418/repo");
    }

    #[test]
    fn rejects_bad_sources() {
        for (id, kv) in [
            ("docker-image://x", vec![]),
            ("git://", vec![]),
            ("git://h/r#--upload-pack=x", vec![]),
            ("git://h/r", vec![("git.fullurl", "file:///etc")]),
            ("git://h/r", vec![("git.checksum", "xyz")]),
            ("git://h/r", vec![("git.sig.pubkey", "KEY")]),
            ("git://h/r", vec![("git.mtime", "commit")]),
            ("git://h/r", vec![("git.bundle", "docker-image+blob://x")]),
            (
                "git://h/r#0123456789012345678901234567890123456789",
                vec![("git.checksum", "abc")],
            ),
        ] {
            assert!(GitSource::parse(id, &attrs(&kv)).is_err(), "{id} {kv:?}");
        }
        // Git's `ext::` transport would run a command: without `://` and not scp-like,
        // it is taken as an https host instead.
        let src = GitSource::parse(
            "git://h/r",
            &attrs(&[("git.fullurl", "ext::sh -c x"), ("git.mtime", "checkout")]),
        )
        .unwrap();
        assert_eq!(src.remote, "https://ext::sh -c x");
    }

    #[test]
    fn picks_refs_like_git_checkout() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let d = "d".repeat(40);
        let listing = format!(
            "{a}\trefs/heads/v1\n{b}\trefs/tags/v1\n{c}\trefs/tags/v1^{{}}\n{d}\trefs/tags/v2\n"
        );
        // A branch wins over a tag of the same name.
        let p = pick_ref("v1", &listing).unwrap();
        assert_eq!(p.fetch_ref.as_deref(), Some("refs/heads/v1"));
        assert_eq!(
            (p.object.as_str(), p.commit.as_str()),
            (a.as_str(), a.as_str())
        );
        // An annotated tag checks out the commit it points at.
        let p = pick_ref("refs/tags/v1", &listing).unwrap();
        assert_eq!(p.fetch_ref.as_deref(), Some("refs/tags/v1"));
        assert_eq!(
            (p.object.as_str(), p.commit.as_str()),
            (b.as_str(), c.as_str())
        );
        let p = pick_ref("tags/v1", &listing).unwrap();
        assert_eq!(p.commit, c);
        // A lightweight tag.
        let p = pick_ref("v2", &listing).unwrap();
        assert_eq!(
            (p.object.as_str(), p.commit.as_str()),
            (d.as_str(), d.as_str())
        );
        assert!(pick_ref("v3", &listing).is_none());
        assert!(pick_ref("1", &listing).is_none());
    }

    #[test]
    fn helpers() {
        assert!(is_commit_sha(&"0".repeat(40)));
        assert!(is_commit_sha(&"f".repeat(64)));
        assert!(!is_commit_sha(&"F".repeat(40)));
        assert!(!is_commit_sha("abc"));
        assert_eq!(clean_subdir("/a/./b/../c/"), "a/c");
        assert_eq!(clean_subdir("../../x"), "x");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert!(is_scp_like("git@github.com:moby/buildkit.git"));
        assert!(!is_scp_like("github.com/moby/buildkit"));
        assert!(!is_scp_like("https://github.com/x"));
    }
}
