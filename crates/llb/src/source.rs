//! Source ops: where files come from (an image, a client directory, git, a URL).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::caps;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::state::{OpKind, OpOptions, Output, State, Vertex};

/// A source op: identifier, attributes, and an error found while building it (reported when
/// the graph is marshaled, so that builder chains stay infallible).
#[derive(Debug)]
pub(crate) struct SourceSpec {
    pub(crate) identifier: String,
    pub(crate) attrs: BTreeMap<String, String>,
    pub(crate) error: Option<crate::Error>,
}

impl SourceSpec {
    /// Whether the op keeps its platform when marshaled (only images and OCI layouts do).
    pub(crate) fn is_platform_specific(&self) -> bool {
        self.identifier.starts_with("docker-image://")
            || self.identifier.starts_with("oci-layout://")
    }
}

fn source_state(
    identifier: String,
    attrs: BTreeMap<String, String>,
    error: Option<crate::Error>,
    options: OpOptions,
) -> State {
    let vertex = Arc::new(Vertex {
        op: OpKind::Source(SourceSpec {
            identifier,
            attrs,
            error,
        }),
        options,
    });
    State::from_output(Output { vertex, index: 0 })
}

/// How the daemon resolves an image reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveMode {
    Default,
    /// Always pull (the only mode that needs a cap).
    ForcePull,
    /// Prefer a local copy.
    PreferLocal,
}

impl ResolveMode {
    fn as_str(self) -> &'static str {
        match self {
            ResolveMode::Default => "default",
            ResolveMode::ForcePull => "pull",
            ResolveMode::PreferLocal => "local",
        }
    }
}

/// A `docker-image://` source.
#[derive(Clone, Debug)]
pub struct Image {
    reference: String,
    resolve_mode: Option<ResolveMode>,
    record_type: Option<String>,
    layer_limit: Option<i32>,
    checksum: Option<String>,
    options: OpOptions,
}

impl Image {
    pub fn new(reference: &str) -> Image {
        Image {
            reference: reference.to_string(),
            resolve_mode: None,
            record_type: None,
            layer_limit: None,
            checksum: None,
            options: OpOptions::default(),
        }
    }

    pub fn resolve_mode(mut self, mode: ResolveMode) -> Image {
        self.resolve_mode = Some(mode);
        self
    }

    /// The GC record type of the pulled layers (`internal`, `frontend`, ...).
    pub fn record_type(mut self, record_type: &str) -> Image {
        self.record_type = Some(record_type.to_string());
        self
    }

    /// Use only the first `n` layers.
    pub fn layer_limit(mut self, n: i32) -> Image {
        self.layer_limit = Some(n);
        self
    }

    /// Require the resolved manifest to have this digest.
    pub fn checksum(mut self, digest: &str) -> Image {
        self.checksum = Some(digest.to_string());
        self
    }

    pub fn platform(mut self, platform: Platform) -> Image {
        self.options.platform = Some(platform.normalized());
        self
    }

    pub fn options(mut self, options: OpOptions) -> Image {
        let platform = self.options.platform.take();
        self.options = options;
        if self.options.platform.is_none() {
            self.options.platform = platform;
        }
        self
    }

    pub fn state(self) -> State {
        let mut opts = self.options;
        let (reference, mut error) = match Reference::parse_normalized(&self.reference) {
            Ok(r) => (r.with_default_tag().to_string(), None),
            Err(e) => (self.reference.clone(), Some(e)),
        };
        opts.add_cap(caps::SOURCE_IMAGE);
        let mut attrs = BTreeMap::new();
        if let Some(mode) = self.resolve_mode.filter(|m| *m != ResolveMode::Default) {
            attrs.insert("image.resolvemode".into(), mode.as_str().into());
            if mode == ResolveMode::ForcePull {
                opts.add_cap(caps::SOURCE_IMAGE_RESOLVE_MODE);
            }
        }
        if let Some(rt) = self.record_type {
            attrs.insert("image.recordtype".into(), rt);
        }
        if let Some(n) = self.layer_limit {
            attrs.insert("image.layerlimit".into(), n.to_string());
            opts.add_cap(caps::SOURCE_IMAGE_LAYER_LIMIT);
        }
        if let Some(c) = self.checksum {
            if let Err(reason) = crate::reference::validate_digest(&c) {
                error.get_or_insert(crate::Error::InvalidReference {
                    reference: self.reference.clone(),
                    reason,
                });
            }
            attrs.insert("image.checksum".into(), c);
            opts.add_cap(caps::SOURCE_IMAGE_CHECKSUM);
        }
        source_state(format!("docker-image://{reference}"), attrs, error, opts)
    }
}

/// A `docker-image://` source for `reference` with default options.
pub fn image(reference: &str) -> State {
    Image::new(reference).state()
}

/// How the daemon compares a local directory with its previous copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Differ {
    /// By metadata (size, mtime, mode): the default.
    Metadata,
    /// Transfer everything.
    None,
}

/// A `local://` source: a directory the client shares over the session.
#[derive(Clone, Debug)]
pub struct Local {
    name: String,
    session_id: Option<String>,
    include_patterns: Vec<String>,
    exclude_patterns: Vec<String>,
    follow_paths: Vec<String>,
    shared_key_hint: Option<String>,
    differ: Option<(Differ, bool)>,
    metadata_transfer: Option<Vec<String>>,
    options: OpOptions,
}

impl Local {
    pub fn new(name: &str) -> Local {
        Local {
            name: name.to_string(),
            session_id: None,
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            follow_paths: Vec::new(),
            shared_key_hint: None,
            differ: None,
            metadata_transfer: None,
            options: OpOptions::default(),
        }
    }

    pub fn session_id(mut self, id: &str) -> Local {
        self.session_id = Some(id.to_string());
        self
    }

    pub fn include_patterns<S: Into<String>>(mut self, p: impl IntoIterator<Item = S>) -> Local {
        self.include_patterns = p.into_iter().map(Into::into).collect();
        self
    }

    pub fn exclude_patterns<S: Into<String>>(mut self, p: impl IntoIterator<Item = S>) -> Local {
        self.exclude_patterns = p.into_iter().map(Into::into).collect();
        self
    }

    pub fn follow_paths<S: Into<String>>(mut self, p: impl IntoIterator<Item = S>) -> Local {
        self.follow_paths = p.into_iter().map(Into::into).collect();
        self
    }

    /// A key that lets the daemon reuse an earlier transfer of the same directory.
    pub fn shared_key_hint(mut self, hint: &str) -> Local {
        self.shared_key_hint = Some(hint.to_string());
        self
    }

    /// `required` adds the cap so that daemons without it refuse the build.
    pub fn differ(mut self, differ: Differ, required: bool) -> Local {
        self.differ = Some((differ, required));
        self
    }

    /// Transfer only metadata, except for paths matching `exceptions`.
    pub fn metadata_only<S: Into<String>>(
        mut self,
        exceptions: impl IntoIterator<Item = S>,
    ) -> Local {
        self.metadata_transfer = Some(exceptions.into_iter().map(Into::into).collect());
        self
    }

    pub fn options(mut self, options: OpOptions) -> Local {
        self.options = options;
        self
    }

    pub fn state(self) -> State {
        let mut opts = self.options;
        let mut attrs = BTreeMap::new();
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
        if let Some(id) = self.session_id {
            attrs.insert("local.session".into(), id);
            opts.add_cap(caps::SOURCE_LOCAL_SESSION_ID);
        }
        if !self.include_patterns.is_empty() {
            attrs.insert("local.includepattern".into(), json(&self.include_patterns));
            opts.add_cap(caps::SOURCE_LOCAL_INCLUDE_PATTERNS);
        }
        if !self.follow_paths.is_empty() {
            attrs.insert("local.followpaths".into(), json(&self.follow_paths));
            opts.add_cap(caps::SOURCE_LOCAL_FOLLOW_PATHS);
        }
        if !self.exclude_patterns.is_empty() {
            attrs.insert("local.excludepatterns".into(), json(&self.exclude_patterns));
            opts.add_cap(caps::SOURCE_LOCAL_EXCLUDE_PATTERNS);
        }
        if let Some(h) = self.shared_key_hint.filter(|h| !h.is_empty()) {
            attrs.insert("local.sharedkeyhint".into(), h);
            opts.add_cap(caps::SOURCE_LOCAL_SHARED_KEY_HINT);
        }
        if let Some((differ, required)) = self.differ {
            let v = match differ {
                Differ::Metadata => "metadata",
                Differ::None => "none",
            };
            attrs.insert("local.differ".into(), v.into());
            if required {
                opts.add_cap(caps::SOURCE_LOCAL_DIFFER);
            }
        }
        if let Some(exceptions) = self.metadata_transfer {
            attrs.insert("local.metadatatransfer".into(), "true".into());
            if !exceptions.is_empty() {
                attrs.insert("local.metadatatransferexclude".into(), json(&exceptions));
            }
            opts.add_cap(caps::SOURCE_LOCAL_METADATA_TRANSFER);
        }
        opts.add_cap(caps::SOURCE_LOCAL);
        source_state(format!("local://{}", self.name), attrs, None, opts)
    }
}

/// A `local://name` source with default options.
pub fn local(name: &str) -> State {
    Local::new(name).state()
}

/// A git repository source.
#[derive(Clone, Debug)]
pub struct Git {
    url: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
    auth_token_secret: String,
    auth_header_secret: String,
    known_ssh_hosts: Option<String>,
    mount_ssh_sock: Option<String>,
    checksum: Option<String>,
    skip_submodules: bool,
    options: OpOptions,
}

/// Default secret names for git credentials.
const GIT_AUTH_TOKEN: &str = "GIT_AUTH_TOKEN";
const GIT_AUTH_HEADER: &str = "GIT_AUTH_HEADER";

impl Git {
    /// `fragment` is `ref[:subdir]`, as in a Dockerfile git URL.
    pub fn new(url: &str, fragment: &str) -> Git {
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let subdir = crate::state::clean_path(&format!("/{subdir}"))
            .trim_start_matches('/')
            .to_string();
        Git {
            url: url.to_string(),
            reference: reference.to_string(),
            subdir,
            keep_git_dir: false,
            auth_token_secret: GIT_AUTH_TOKEN.to_string(),
            auth_header_secret: GIT_AUTH_HEADER.to_string(),
            known_ssh_hosts: None,
            mount_ssh_sock: None,
            checksum: None,
            skip_submodules: false,
            options: OpOptions::default(),
        }
    }

    pub fn keep_git_dir(mut self) -> Git {
        self.keep_git_dir = true;
        self
    }

    pub fn auth_token_secret(mut self, name: &str) -> Git {
        self.auth_token_secret = name.to_string();
        self
    }

    pub fn auth_header_secret(mut self, name: &str) -> Git {
        self.auth_header_secret = name.to_string();
        self
    }

    pub fn known_ssh_hosts(mut self, hosts: &str) -> Git {
        self.known_ssh_hosts = Some(hosts.to_string());
        self
    }

    /// Forward the client's ssh agent `id` (default `default`).
    pub fn mount_ssh_sock(mut self, id: &str) -> Git {
        self.mount_ssh_sock = Some(if id.is_empty() { "default" } else { id }.to_string());
        self
    }

    /// Require the checked-out commit to start with this prefix.
    pub fn checksum(mut self, commit: &str) -> Git {
        self.checksum = Some(commit.to_string());
        self
    }

    pub fn skip_submodules(mut self) -> Git {
        self.skip_submodules = true;
        self
    }

    pub fn options(mut self, options: OpOptions) -> Git {
        self.options = options;
        self
    }

    pub fn state(self) -> State {
        let mut opts = self.options;
        let remote = GitRemote::parse(&self.url).or_else(|| {
            if has_scheme(&self.url) {
                None
            } else {
                GitRemote::parse(&format!("https://{}", self.url))
            }
        });
        let (full_url, mut id, is_ssh) = match &remote {
            Some(r) => (
                r.remote.clone(),
                format!(
                    "{}{}",
                    r.host,
                    crate::state::clean_path(&format!("/{}", r.path))
                ),
                r.ssh,
            ),
            None => (self.url.clone(), self.url.clone(), false),
        };
        if !self.reference.is_empty() || !self.subdir.is_empty() {
            id.push('#');
            id.push_str(&self.reference);
            if !self.subdir.is_empty() {
                id.push(':');
                id.push_str(&self.subdir);
            }
        }
        let mut attrs = BTreeMap::new();
        if self.keep_git_dir {
            attrs.insert("git.keepgitdir".into(), "true".into());
            opts.add_cap(caps::SOURCE_GIT_KEEP_DIR);
        }
        if !full_url.is_empty() {
            attrs.insert("git.fullurl".into(), full_url);
            opts.add_cap(caps::SOURCE_GIT_FULL_URL);
        }
        if !self.auth_token_secret.is_empty() {
            attrs.insert("git.authtokensecret".into(), self.auth_token_secret.clone());
            if self.auth_token_secret != GIT_AUTH_TOKEN {
                opts.add_cap(caps::SOURCE_GIT_HTTP_AUTH);
            }
        }
        if !self.auth_header_secret.is_empty() {
            attrs.insert(
                "git.authheadersecret".into(),
                self.auth_header_secret.clone(),
            );
            if self.auth_header_secret != GIT_AUTH_HEADER {
                opts.add_cap(caps::SOURCE_GIT_HTTP_AUTH);
            }
        }
        if is_ssh {
            // Upstream's client falls back to an ssh-keyscan here; we never touch the
            // network while building a graph, so hosts are only recorded when given.
            if let Some(h) = self.known_ssh_hosts {
                attrs.insert("git.knownsshhosts".into(), h);
            }
            opts.add_cap(caps::SOURCE_GIT_KNOWN_SSH_HOSTS);
            attrs.insert(
                "git.mountsshsock".into(),
                self.mount_ssh_sock.unwrap_or_else(|| "default".into()),
            );
            opts.add_cap(caps::SOURCE_GIT_MOUNT_SSH_SOCK);
        }
        if let Some(c) = self.checksum {
            attrs.insert("git.checksum".into(), c);
            opts.add_cap(caps::SOURCE_GIT_CHECKSUM);
        }
        if self.skip_submodules {
            attrs.insert("git.skipsubmodules".into(), "true".into());
            opts.add_cap(caps::SOURCE_GIT_SKIP_SUBMODULES);
        }
        opts.add_cap(caps::SOURCE_GIT);
        source_state(format!("git://{id}"), attrs, None, opts)
    }
}

/// A git source for `url` at `fragment` (`ref[:subdir]`).
pub fn git(url: &str, fragment: &str) -> State {
    Git::new(url, fragment).state()
}

fn has_scheme(url: &str) -> bool {
    url.split_once("://").is_some_and(|(s, _)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// The parts of a git remote URL that the source identifier is built from.
struct GitRemote {
    remote: String,
    host: String,
    path: String,
    ssh: bool,
}

impl GitRemote {
    /// Accepts `http(s)://`, `git://`, `ssh://` URLs and scp-like `user@host:path`.
    fn parse(url: &str) -> Option<GitRemote> {
        if let Some((scheme, rest)) = url.split_once("://") {
            let ssh = match scheme {
                "http" | "https" | "git" => false,
                "ssh" => true,
                _ => return None,
            };
            let rest = rest.split(['#', '?']).next().unwrap_or("");
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if host.is_empty() {
                return None;
            }
            let remote = url.split('#').next().unwrap_or(url).to_string();
            return Some(GitRemote {
                remote,
                host: host.to_string(),
                path: path.to_string(),
                ssh,
            });
        }
        // scp-like: user@host:path
        let (user_host, path) = url.split_once(':')?;
        let (user, host) = user_host.split_once('@')?;
        if user.is_empty() || host.is_empty() || host.contains('/') || path.is_empty() {
            return None;
        }
        let path = path.split('#').next().unwrap_or(path);
        Some(GitRemote {
            remote: url.split('#').next().unwrap_or(url).to_string(),
            host: host.to_string(),
            path: path.to_string(),
            ssh: true,
        })
    }
}

/// An `http(s)://` source: one file downloaded by the daemon.
#[derive(Clone, Debug)]
pub struct Http {
    url: String,
    checksum: Option<String>,
    filename: Option<String>,
    perm: u32,
    uid: u32,
    gid: u32,
    auth_header_secret: Option<String>,
    headers: BTreeMap<String, String>,
    options: OpOptions,
}

impl Http {
    pub fn new(url: &str) -> Http {
        Http {
            url: url.to_string(),
            checksum: None,
            filename: None,
            perm: 0,
            uid: 0,
            gid: 0,
            auth_header_secret: None,
            headers: BTreeMap::new(),
            options: OpOptions::default(),
        }
    }

    /// Require the content to have this digest (`sha256:...`).
    pub fn checksum(mut self, digest: &str) -> Http {
        self.checksum = Some(digest.to_string());
        self
    }

    pub fn filename(mut self, name: &str) -> Http {
        self.filename = Some(name.to_string());
        self
    }

    /// File mode bits of the downloaded file.
    pub fn perm(mut self, perm: u32) -> Http {
        self.perm = perm;
        self
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Http {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn auth_header_secret(mut self, name: &str) -> Http {
        self.auth_header_secret = Some(name.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Http {
        self.headers.insert(name.to_string(), value.to_string());
        self
    }

    pub fn options(mut self, options: OpOptions) -> Http {
        self.options = options;
        self
    }

    pub fn state(self) -> State {
        let mut opts = self.options;
        let mut attrs = BTreeMap::new();
        let mut error = None;
        if let Some(c) = self.checksum {
            if let Err(reason) = crate::reference::validate_digest(&c) {
                error = Some(crate::Error::InvalidSource {
                    identifier: self.url.clone(),
                    reason,
                });
            }
            attrs.insert("http.checksum".into(), c);
            opts.add_cap(caps::SOURCE_HTTP_CHECKSUM);
        }
        if let Some(f) = self.filename.filter(|f| !f.is_empty()) {
            attrs.insert("http.filename".into(), f);
        }
        if self.perm != 0 {
            attrs.insert("http.perm".into(), format!("0{:o}", self.perm));
            opts.add_cap(caps::SOURCE_HTTP_PERM);
        }
        if self.uid != 0 {
            attrs.insert("http.uid".into(), self.uid.to_string());
            opts.add_cap(caps::SOURCE_HTTP_UIDGID);
        }
        if self.gid != 0 {
            attrs.insert("http.gid".into(), self.gid.to_string());
            opts.add_cap(caps::SOURCE_HTTP_UIDGID);
        }
        if let Some(s) = self.auth_header_secret.filter(|s| !s.is_empty()) {
            attrs.insert("http.authheadersecret".into(), s);
            opts.add_cap(caps::SOURCE_HTTP_AUTH);
        }
        if !self.headers.is_empty() {
            for (k, v) in self.headers {
                attrs.insert(format!("http.header.{k}"), v);
            }
            opts.add_cap(caps::SOURCE_HTTP_HEADER);
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            error.get_or_insert(crate::Error::InvalidSource {
                identifier: self.url.clone(),
                reason: "an http source needs an http:// or https:// URL".into(),
            });
        }
        opts.add_cap(caps::SOURCE_HTTP);
        source_state(self.url, attrs, error, opts)
    }
}

/// An http(s) source with default options.
pub fn http(url: &str) -> State {
    Http::new(url).state()
}

/// The empty filesystem.
pub fn scratch() -> State {
    State::scratch()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &State) -> (&str, &BTreeMap<String, String>) {
        match &s.output.as_ref().unwrap().vertex.op {
            OpKind::Source(src) => (&src.identifier, &src.attrs),
            _ => panic!("not a source"),
        }
    }

    #[test]
    fn image_reference_is_normalized() {
        let s = image("busybox");
        assert_eq!(
            spec(&s).0,
            "docker-image://docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn git_identifier_like_upstream() {
        let s = git("https://github.com/moby/buildkit", "master");
        let (id, attrs) = spec(&s);
        assert_eq!(id, "git://github.com/moby/buildkit#master");
        assert_eq!(attrs["git.fullurl"], "https://github.com/moby/buildkit");
        assert_eq!(attrs["git.authtokensecret"], "GIT_AUTH_TOKEN");
        let s = git("github.com/moby/buildkit.git", "v1:docs/../x");
        assert_eq!(spec(&s).0, "git://github.com/moby/buildkit.git#v1:x");
        let s = git("git@github.com:moby/buildkit.git", "");
        let (id, attrs) = spec(&s);
        assert_eq!(id, "git://github.com/moby/buildkit.git");
        assert_eq!(attrs["git.mountsshsock"], "default");
    }

    #[test]
    fn local_patterns_are_json() {
        let s = Local::new("context")
            .follow_paths(["a", "b"])
            .exclude_patterns(["*.tmp"])
            .state();
        let (id, attrs) = spec(&s);
        assert_eq!(id, "local://context");
        assert_eq!(attrs["local.followpaths"], r#"["a","b"]"#);
        assert_eq!(attrs["local.excludepatterns"], r#"["*.tmp"]"#);
    }

    #[test]
    fn http_attrs() {
        let s = Http::new("https://example.com/f")
            .perm(0o644)
            .owner(1, 2)
            .state();
        let attrs = spec(&s).1;
        assert_eq!(attrs["http.perm"], "0644");
        assert_eq!(attrs["http.uid"], "1");
        assert_eq!(attrs["http.gid"], "2");
    }
}
