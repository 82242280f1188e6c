//! `State`: an immutable handle on one output of the graph plus the process settings
//! (env, working dir, user, ...) that later `run` calls inherit. Every method returns a new
//! state; states are cheap to clone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::exec::ExecSpec;
use crate::file::FileSpec;
use crate::platform::Platform;
use crate::source::SourceSpec;

/// Network mode of an exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// The sandboxed default network.
    #[default]
    Sandbox,
    Host,
    None,
}

impl NetMode {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            NetMode::Sandbox => proto::pb::NetMode::Unset as i32,
            NetMode::Host => proto::pb::NetMode::Host as i32,
            NetMode::None => proto::pb::NetMode::None as i32,
        }
    }
}

/// Security mode of an exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityMode {
    #[default]
    Sandbox,
    /// Privileged; needs the `security.insecure` entitlement.
    Insecure,
}

impl SecurityMode {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            SecurityMode::Sandbox => proto::pb::SecurityMode::Sandbox as i32,
            SecurityMode::Insecure => proto::pb::SecurityMode::Insecure as i32,
        }
    }
}

/// A resource limit for an exec (`RLIMIT_*` name without the prefix, e.g. `nofile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Process settings carried by a state and inherited by `run`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Ordered by the position of each key's latest assignment.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: String,
    pub(crate) args: Vec<String>,
    pub(crate) user: String,
    pub(crate) hostname: String,
    pub(crate) network: NetMode,
    pub(crate) security: SecurityMode,
    pub(crate) platform: Option<Platform>,
    pub(crate) extra_hosts: Vec<(String, String)>,
    pub(crate) ulimits: Vec<Ulimit>,
    pub(crate) cgroup_parent: String,
    pub(crate) valid_exit_codes: Option<Vec<i32>>,
}

impl Meta {
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub(crate) fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set_dir(&mut self, dir: &str) {
        self.dir = join_dir(&self.dir, dir);
    }
}

/// Resolves `dir` against `prev` as a working directory change does.
pub(crate) fn join_dir(prev: &str, dir: &str) -> String {
    if dir.starts_with('/') {
        return dir.to_string();
    }
    let prev = if prev.is_empty() { "/" } else { prev };
    clean_path(&format!("{prev}/{dir}"))
}

/// Lexical path cleaning with Go's `path.Clean` rules.
pub(crate) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A progress group shared by several vertices in the progress UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressGroup {
    pub id: String,
    pub name: String,
    pub weak: bool,
}

/// Per-step cgroup limits, recorded in metadata (outside the cache key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinuxResources {
    pub memory: i64,
    pub memory_swap: i64,
    pub cpu_shares: u64,
    pub cpu_period: u64,
    pub cpu_quota: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
}

/// Vertex metadata: never part of the vertex digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub(crate) ignore_cache: bool,
    pub(crate) description: BTreeMap<String, String>,
    pub(crate) export_cache: Option<bool>,
    pub(crate) caps: BTreeSet<&'static str>,
    pub(crate) progress_group: Option<ProgressGroup>,
    pub(crate) linux_resources: Option<LinuxResources>,
}

impl Metadata {
    /// Combines two metadata records the way upstream merges them: flags are or-ed,
    /// descriptions and caps united, and `other` wins where both set a value.
    pub(crate) fn merge(&mut self, other: &Metadata) {
        self.ignore_cache |= other.ignore_cache;
        for (k, v) in &other.description {
            self.description.insert(k.clone(), v.clone());
        }
        if other.export_cache.is_some() {
            self.export_cache = other.export_cache;
        }
        self.caps.extend(other.caps.iter().copied());
        if other.progress_group.is_some() {
            self.progress_group = other.progress_group.clone();
        }
        if other.linux_resources.is_some() {
            self.linux_resources = other.linux_resources.clone();
        }
    }

    pub(crate) fn to_pb(&self) -> proto::pb::OpMetadata {
        proto::pb::OpMetadata {
            ignore_cache: self.ignore_cache,
            description: self.description.clone(),
            export_cache: self
                .export_cache
                .map(|value| proto::pb::ExportCache { value }),
            caps: self.caps.iter().map(|c| (c.to_string(), true)).collect(),
            progress_group: self
                .progress_group
                .as_ref()
                .map(|g| proto::pb::ProgressGroup {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    weak: g.weak,
                }),
            linux_resources: self
                .linux_resources
                .as_ref()
                .map(|r| proto::pb::LinuxResources {
                    memory: r.memory,
                    memory_swap: r.memory_swap,
                    cpu_shares: r.cpu_shares,
                    cpu_period: r.cpu_period,
                    cpu_quota: r.cpu_quota,
                    cpuset_cpus: r.cpuset_cpus.clone(),
                    cpuset_mems: r.cpuset_mems.clone(),
                }),
        }
    }
}

/// Options every op accepts: display name, cache and scheduling hints, platform.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpOptions {
    pub(crate) platform: Option<Platform>,
    pub(crate) worker_constraints: Vec<String>,
    pub(crate) metadata: Metadata,
}

impl OpOptions {
    pub fn new() -> OpOptions {
        OpOptions::default()
    }

    /// The name shown for this vertex in progress output (`llb.customname`).
    pub fn custom_name(self, name: impl Into<String>) -> OpOptions {
        self.description("llb.customname", name)
    }

    /// Free-form description entry kept in the vertex metadata.
    pub fn description(mut self, key: impl Into<String>, value: impl Into<String>) -> OpOptions {
        self.metadata.description.insert(key.into(), value.into());
        self
    }

    /// Never use a cached result for this vertex.
    pub fn ignore_cache(mut self) -> OpOptions {
        self.metadata.ignore_cache = true;
        self
    }

    /// Whether the result of this vertex may be exported to a remote cache.
    pub fn export_cache(mut self, export: bool) -> OpOptions {
        self.metadata.export_cache = Some(export);
        self
    }

    pub fn progress_group(mut self, group: ProgressGroup) -> OpOptions {
        self.metadata.progress_group = Some(group);
        self
    }

    pub fn linux_resources(mut self, resources: LinuxResources) -> OpOptions {
        self.metadata.linux_resources = Some(resources);
        self
    }

    /// The platform the op runs for; overrides the state's platform.
    pub fn platform(mut self, platform: Platform) -> OpOptions {
        self.platform = Some(platform);
        self
    }

    /// A containerd-style worker filter.
    pub fn worker_constraint(mut self, filter: impl Into<String>) -> OpOptions {
        self.worker_constraints.push(filter.into());
        self
    }

    pub(crate) fn add_cap(&mut self, cap: &'static str) {
        self.metadata.caps.insert(cap);
    }
}

/// What kind of operation a vertex is.
#[derive(Debug)]
pub(crate) enum OpKind {
    Source(SourceSpec),
    Exec(Box<ExecSpec>),
    File(FileSpec),
    Merge(Vec<Output>),
    Diff {
        lower: Option<Output>,
        upper: Option<Output>,
    },
}

/// A node of the graph: the op and its constraints. Immutable once built.
#[derive(Debug)]
pub(crate) struct Vertex {
    pub(crate) op: OpKind,
    pub(crate) options: OpOptions,
}

impl Vertex {
    /// The vertices this one depends on, in the order upstream walks them when it lays out
    /// the Definition (so our op order matches).
    pub(crate) fn dependencies(&self) -> Vec<Output> {
        let mut seen: Vec<Output> = Vec::new();
        let mut push = |o: &Output| {
            if !seen.iter().any(|s| s.same(o)) {
                seen.push(o.clone());
            }
        };
        match &self.op {
            OpKind::Source(_) => {}
            OpKind::Exec(e) => {
                for m in e.sorted_mounts() {
                    if let Some(o) = &m.source {
                        push(o);
                    }
                }
            }
            OpKind::File(f) => {
                for o in f.dependencies() {
                    push(&o);
                }
            }
            OpKind::Merge(inputs) => inputs.iter().for_each(&mut push),
            OpKind::Diff { lower, upper } => {
                lower.iter().chain(upper.iter()).for_each(&mut push);
            }
        }
        seen
    }
}

/// One output of a vertex.
#[derive(Clone, Debug)]
pub struct Output {
    pub(crate) vertex: Arc<Vertex>,
    pub(crate) index: i64,
}

impl Output {
    /// Whether both name the same output of the same vertex object.
    pub(crate) fn same(&self, other: &Output) -> bool {
        Arc::ptr_eq(&self.vertex, &other.vertex) && self.index == other.index
    }
}

/// An immutable handle on a filesystem result (or scratch) plus process settings.
#[derive(Clone, Debug)]
pub struct State {
    pub(crate) output: Option<Output>,
    pub(crate) meta: Arc<Meta>,
}

impl Default for State {
    fn default() -> State {
        State::scratch()
    }
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State {
            output: None,
            meta: Arc::new(Meta {
                dir: "/".to_string(),
                ..Meta::default()
            }),
        }
    }

    /// A fresh state over `output`, with default settings and the output's platform.
    pub(crate) fn from_output(output: Output) -> State {
        let platform = output.vertex.options.platform.clone();
        let mut s = State::scratch();
        s.output = Some(output);
        Arc::make_mut(&mut s.meta).platform = platform;
        s
    }

    /// This state's settings over another output.
    pub(crate) fn with_output(&self, output: Output) -> State {
        let mut s = self.clone();
        if let Some(p) = &output.vertex.options.platform {
            Arc::make_mut(&mut s.meta).platform = Some(p.clone());
        }
        s.output = Some(output);
        s
    }

    fn edit(&self, f: impl FnOnce(&mut Meta)) -> State {
        let mut s = self.clone();
        f(Arc::make_mut(&mut s.meta));
        s
    }

    /// Whether this is scratch (no filesystem yet).
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// Sets (or replaces) an environment variable for later `run` calls.
    pub fn env(&self, key: &str, value: &str) -> State {
        self.edit(|m| m.set_env(key, value))
    }

    /// Removes an environment variable.
    pub fn unset_env(&self, key: &str) -> State {
        self.edit(|m| m.env.retain(|(k, _)| k != key))
    }

    /// The value of an environment variable.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.meta.get_env(key)
    }

    /// The environment as `KEY=value` strings.
    pub fn env_list(&self) -> Vec<String> {
        self.meta
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// Changes the working directory; a relative path is resolved against the current one.
    pub fn dir(&self, dir: &str) -> State {
        self.edit(|m| m.set_dir(dir))
    }

    /// The working directory.
    pub fn get_dir(&self) -> &str {
        &self.meta.dir
    }

    /// The default command arguments for `run`.
    pub fn args<S: Into<String>>(&self, args: impl IntoIterator<Item = S>) -> State {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        self.edit(|m| m.args = args)
    }

    pub fn user(&self, user: &str) -> State {
        self.edit(|m| m.user = user.to_string())
    }

    pub fn get_user(&self) -> &str {
        &self.meta.user
    }

    pub fn hostname(&self, hostname: &str) -> State {
        self.edit(|m| m.hostname = hostname.to_string())
    }

    pub fn network(&self, mode: NetMode) -> State {
        self.edit(|m| m.network = mode)
    }

    pub fn security(&self, mode: SecurityMode) -> State {
        self.edit(|m| m.security = mode)
    }

    pub fn platform(&self, platform: Platform) -> State {
        self.edit(|m| m.platform = Some(platform.normalized()))
    }

    pub fn get_platform(&self) -> Option<&Platform> {
        self.meta.platform.as_ref()
    }

    /// Adds an `/etc/hosts` entry for later execs.
    pub fn add_extra_host(&self, host: &str, ip: std::net::IpAddr) -> State {
        self.edit(|m| m.extra_hosts.push((host.to_string(), ip.to_string())))
    }

    pub fn add_ulimit(&self, name: &str, soft: i64, hard: i64) -> State {
        self.edit(|m| {
            m.ulimits.push(Ulimit {
                name: name.to_string(),
                soft,
                hard,
            })
        })
    }

    pub fn cgroup_parent(&self, parent: &str) -> State {
        self.edit(|m| m.cgroup_parent = parent.to_string())
    }

    /// Exit codes that count as success for later execs (default: only 0).
    pub fn valid_exit_codes(&self, codes: &[i32]) -> State {
        self.edit(|m| m.valid_exit_codes = Some(codes.to_vec()))
    }

    /// Applies an image config (JSON) as upstream does: its `Env`, `WorkingDir` and platform.
    pub fn with_image_config(&self, config: &[u8]) -> Result<State, crate::Error> {
        let v: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| crate::Error::InvalidImageConfig {
                reason: e.to_string(),
            })?;
        let mut s = self.clone();
        let cfg = &v["config"];
        if let Some(env) = cfg["Env"].as_array() {
            for e in env.iter().filter_map(|e| e.as_str()) {
                let (k, val) = e.split_once('=').unwrap_or((e, ""));
                if !k.is_empty() {
                    s = s.env(k, val);
                }
            }
        }
        s = s.dir(cfg["WorkingDir"].as_str().unwrap_or(""));
        let os = v["os"].as_str().unwrap_or("");
        let arch = v["architecture"].as_str().unwrap_or("");
        if !os.is_empty() && !arch.is_empty() {
            let mut p = Platform::new(os, arch, v["variant"].as_str().unwrap_or(""));
            p.os_version = v["os.version"].as_str().unwrap_or("").to_string();
            if let Some(f) = v["os.features"].as_array() {
                p.os_features = f
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
            }
            s = s.platform(p);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("//a//b/", "/a/b"),
            ("./", "."),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn env_replacement_moves_key_to_end() {
        let s = State::scratch().env("A", "1").env("B", "2").env("A", "3");
        assert_eq!(s.env_list(), vec!["B=2", "A=3"]);
        assert_eq!(s.unset_env("B").env_list(), vec!["A=3"]);
    }

    #[test]
    fn dir_is_relative_to_previous() {
        let s = State::scratch().dir("src").dir("../lib");
        assert_eq!(s.get_dir(), "/lib");
        assert_eq!(s.dir("/abs").get_dir(), "/abs");
    }

    #[test]
    fn image_config_sets_env_dir_platform() {
        let cfg = br#"{"architecture":"arm64","os":"linux","config":{"Env":["PATH=/bin","X=a=b"],"WorkingDir":"/w"}}"#;
        let s = State::scratch().with_image_config(cfg).unwrap();
        assert_eq!(s.env_list(), vec!["PATH=/bin", "X=a=b"]);
        assert_eq!(s.get_dir(), "/w");
        assert_eq!(s.get_platform().unwrap().to_string(), "linux/arm64");
        assert!(State::scratch().with_image_config(b"{").is_err());
    }
}
