//! Exec ops: run a process over a root filesystem plus extra mounts.

use std::sync::Arc;

use proto::pb;

use crate::caps;
use crate::marshal::Encoder;
use crate::state::{
    Meta, Metadata, NetMode, OpKind, OpOptions, Output, SecurityMode, State, Vertex,
};

/// The `PATH` an exec gets when neither the image nor the daemon provides one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sharing mode of a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheSharing {
    /// Concurrent users share one directory.
    #[default]
    Shared,
    /// A busy cache gives the next user a fresh directory.
    Private,
    /// The next user waits.
    Locked,
}

/// Whether the daemon may checksum a bind mount's content for the cache key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentCache {
    #[default]
    Default,
    On,
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MountKind {
    Bind,
    Cache { id: String, sharing: CacheSharing },
    Tmpfs { size: i64 },
}

/// A filesystem mounted into an exec.
#[derive(Clone, Debug)]
pub struct Mount {
    target: String,
    source: Option<State>,
    readonly: bool,
    selector: String,
    kind: MountKind,
    no_output: bool,
    content_cache: ContentCache,
}

impl Mount {
    fn new(target: &str, source: Option<State>, kind: MountKind) -> Mount {
        Mount {
            target: target.to_string(),
            source: source.filter(|s| !s.is_scratch()),
            readonly: false,
            selector: String::new(),
            kind,
            no_output: false,
            content_cache: ContentCache::Default,
        }
    }

    /// Bind `source` at `target`; writable by default, and then an output of the exec.
    pub fn bind(target: &str, source: &State) -> Mount {
        Mount::new(target, Some(source.clone()), MountKind::Bind)
    }

    /// An empty writable directory at `target` whose result is an output of the exec.
    pub fn scratch(target: &str) -> Mount {
        Mount::new(target, None, MountKind::Bind)
    }

    /// A persistent cache directory shared across builds by `id`.
    pub fn cache(target: &str, id: &str, sharing: CacheSharing) -> Mount {
        Mount::new(
            target,
            None,
            MountKind::Cache {
                id: id.to_string(),
                sharing,
            },
        )
    }

    /// A tmpfs at `target`.
    pub fn tmpfs(target: &str) -> Mount {
        Mount::new(target, None, MountKind::Tmpfs { size: 0 })
    }

    /// Limits a tmpfs mount to `bytes`.
    pub fn size(mut self, bytes: i64) -> Mount {
        if let MountKind::Tmpfs { size } = &mut self.kind {
            *size = bytes;
        }
        self
    }

    /// Seeds a cache mount from `state` (or replaces a bind source).
    pub fn source(mut self, state: &State) -> Mount {
        self.source = Some(state.clone()).filter(|s| !s.is_scratch());
        self
    }

    pub fn readonly(mut self) -> Mount {
        self.readonly = true;
        self
    }

    /// Mount only this sub-path of the source.
    pub fn selector(mut self, path: &str) -> Mount {
        self.selector = path.to_string();
        self
    }

    /// Writable, but the changes are discarded rather than exported as an output.
    pub fn no_output(mut self) -> Mount {
        self.no_output = true;
        self
    }

    pub fn content_cache(mut self, mode: ContentCache) -> Mount {
        self.content_cache = mode;
        self
    }

    fn has_output(&self) -> bool {
        !self.no_output && !self.readonly && self.kind == MountKind::Bind
    }
}

/// A secret exposed to an exec as a file, an environment variable, or both.
#[derive(Clone, Debug)]
pub struct Secret {
    id: String,
    target: Option<String>,
    env: Option<String>,
    uid: u32,
    gid: u32,
    mode: u32,
    optional: bool,
}

impl Secret {
    /// Secret `id` as a file at `target` (mode 0400, owned by root).
    pub fn file(id: &str, target: &str) -> Secret {
        Secret {
            id: id.to_string(),
            target: Some(target.to_string()),
            env: None,
            uid: 0,
            gid: 0,
            mode: 0o400,
            optional: false,
        }
    }

    /// Secret `id` as the environment variable `name`.
    pub fn env(id: &str, name: &str) -> Secret {
        Secret {
            id: id.to_string(),
            target: None,
            env: Some(name.to_string()),
            uid: 0,
            gid: 0,
            mode: 0o400,
            optional: false,
        }
    }

    /// Also expose it as the environment variable `name`.
    pub fn also_env(mut self, name: &str) -> Secret {
        self.env = Some(name.to_string());
        self
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Secret {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mode(mut self, mode: u32) -> Secret {
        self.mode = mode;
        self
    }

    /// Do not fail when the client does not have the secret.
    pub fn optional(mut self) -> Secret {
        self.optional = true;
        self
    }
}

/// The client's ssh agent forwarded as a socket.
#[derive(Clone, Debug, Default)]
pub struct Ssh {
    id: String,
    target: Option<String>,
    uid: u32,
    gid: u32,
    mode: u32,
    optional: bool,
}

impl Ssh {
    /// Agent `id` (empty means the client's default agent); socket mode 0600.
    pub fn new(id: &str) -> Ssh {
        Ssh {
            id: id.to_string(),
            mode: 0o600,
            ..Ssh::default()
        }
    }

    pub fn target(mut self, path: &str) -> Ssh {
        self.target = Some(path.to_string());
        self
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Ssh {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mode(mut self, mode: u32) -> Ssh {
        self.mode = mode;
        self
    }

    pub fn optional(mut self) -> Ssh {
        self.optional = true;
        self
    }
}

/// Proxy settings passed to an exec without being part of its cache key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http_proxy: String,
    pub https_proxy: String,
    pub ftp_proxy: String,
    pub no_proxy: String,
    pub all_proxy: String,
}

#[derive(Debug)]
pub(crate) struct MountSpec {
    target: String,
    pub(crate) source: Option<Output>,
    readonly: bool,
    selector: String,
    kind: MountKind,
    no_output: bool,
    content_cache: ContentCache,
}

/// A built exec op as stored in its vertex.
#[derive(Debug)]
pub(crate) struct ExecSpec {
    meta: Meta,
    /// Sorted by target, as upstream sorts them before marshaling.
    mounts: Vec<MountSpec>,
    secrets: Vec<Secret>,
    ssh: Vec<Ssh>,
    proxy_env: Option<ProxyEnv>,
    cdi_devices: Vec<(String, bool)>,
    error: Option<crate::Error>,
}

impl ExecSpec {
    pub(crate) fn sorted_mounts(&self) -> &[MountSpec] {
        &self.mounts
    }

    pub(crate) fn encode(
        &self,
        options: &OpOptions,
        enc: &Encoder<'_>,
    ) -> Result<(pb::Op, Metadata), crate::Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut md = Metadata::default();
        let mut meta = self.meta.clone();
        let mut ssh_targets = Vec::new();
        for (i, s) in self.ssh.iter().enumerate() {
            ssh_targets.push(
                s.target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}")),
            );
        }
        if let Some(first) = ssh_targets.first()
            && meta.get_env("SSH_AUTH_SOCK").is_none()
        {
            meta.set_env("SSH_AUTH_SOCK", first);
        }
        match enc.options().server_sets_default_path {
            Some(true) => {
                md.caps.insert(caps::EXEC_META_SETS_DEFAULT_PATH);
            }
            Some(false) => {
                let os = self
                    .meta
                    .platform
                    .as_ref()
                    .map_or("linux", |p| p.os.as_str());
                if os != "windows" && meta.get_env("PATH").is_none() {
                    meta.set_env("PATH", DEFAULT_PATH);
                }
            }
            None => {}
        }
        if meta.valid_exit_codes.is_some() {
            md.caps.insert(caps::EXEC_VALID_EXIT_CODE);
        }
        if !meta.ulimits.is_empty() {
            md.caps.insert(caps::EXEC_META_ULIMIT);
        }
        if options.metadata.linux_resources.is_some() {
            md.caps.insert(caps::EXEC_META_LINUX_RESOURCES);
        }
        if meta.network != NetMode::Sandbox {
            md.caps.insert(caps::EXEC_META_NETWORK);
        }
        if meta.security == SecurityMode::Insecure {
            md.caps.insert(caps::EXEC_META_SECURITY);
        }
        if self.proxy_env.is_some() {
            md.caps.insert(caps::EXEC_META_PROXY);
        }
        md.caps.insert(caps::EXEC_META_BASE);
        for m in &self.mounts {
            if !m.selector.is_empty() {
                md.caps.insert(caps::EXEC_MOUNT_SELECTOR);
            }
            match &m.kind {
                MountKind::Cache { .. } => {
                    md.caps.insert(caps::EXEC_MOUNT_CACHE);
                    md.caps.insert(caps::EXEC_MOUNT_CACHE_SHARING);
                }
                MountKind::Tmpfs { size } => {
                    md.caps.insert(caps::EXEC_MOUNT_TMPFS);
                    if *size > 0 {
                        md.caps.insert(caps::EXEC_MOUNT_TMPFS_SIZE);
                    }
                }
                MountKind::Bind if m.source.is_some() => {
                    md.caps.insert(caps::EXEC_MOUNT_BIND);
                }
                MountKind::Bind => {}
            }
            if m.content_cache != ContentCache::Default {
                md.caps.insert(caps::EXEC_MOUNT_CONTENT_CACHE);
            }
        }
        if !self.secrets.is_empty() {
            md.caps.insert(caps::EXEC_MOUNT_SECRET);
            if self.secrets.iter().any(|s| s.env.is_some()) {
                md.caps.insert(caps::EXEC_SECRET_ENV);
            }
        }
        if !self.ssh.is_empty() {
            md.caps.insert(caps::EXEC_MOUNT_SSH);
        }
        if !self.cdi_devices.is_empty() {
            md.caps.insert(caps::EXEC_META_CDI);
        }

        let pb_meta = pb::Meta {
            args: meta.args.clone(),
            env: meta.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: meta.dir.clone(),
            user: meta.user.clone(),
            proxy_env: self.proxy_env.as_ref().map(|p| pb::ProxyEnv {
                http_proxy: p.http_proxy.clone(),
                https_proxy: p.https_proxy.clone(),
                ftp_proxy: p.ftp_proxy.clone(),
                no_proxy: p.no_proxy.clone(),
                all_proxy: p.all_proxy.clone(),
            }),
            extra_hosts: meta
                .extra_hosts
                .iter()
                .map(|(host, ip)| pb::HostIp {
                    host: host.clone(),
                    ip: ip.clone(),
                })
                .collect(),
            hostname: meta.hostname.clone(),
            ulimit: meta
                .ulimits
                .iter()
                .map(|u| pb::Ulimit {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            cgroup_parent: meta.cgroup_parent.clone(),
            remove_mount_stubs_recursive: true,
            valid_exit_codes: meta.valid_exit_codes.clone().unwrap_or_default(),
        };

        let mut inputs: Vec<pb::Input> = Vec::new();
        let mut mounts = Vec::new();
        let mut next_output = 0i64;
        for m in &self.mounts {
            let input = match &m.source {
                Some(src) => {
                    let inp = enc.input(src)?;
                    match inputs.iter().position(|i| *i == inp) {
                        Some(i) => i as i64,
                        None => {
                            inputs.push(inp);
                            (inputs.len() - 1) as i64
                        }
                    }
                }
                None => -1,
            };
            let output = if !m.no_output && !m.readonly && m.kind == MountKind::Bind {
                next_output += 1;
                next_output - 1
            } else {
                -1
            };
            let mut pm = pb::Mount {
                input,
                selector: m.selector.clone(),
                dest: m.target.clone(),
                output,
                readonly: m.readonly,
                content_cache: match m.content_cache {
                    ContentCache::Default => pb::MountContentCache::Default,
                    ContentCache::On => pb::MountContentCache::On,
                    ContentCache::Off => pb::MountContentCache::Off,
                } as i32,
                ..pb::Mount::default()
            };
            match &m.kind {
                MountKind::Bind => {}
                MountKind::Cache { id, sharing } => {
                    pm.mount_type = pb::MountType::Cache as i32;
                    pm.cache_opt = Some(pb::CacheOpt {
                        id: id.clone(),
                        sharing: match sharing {
                            CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                            CacheSharing::Private => pb::CacheSharingOpt::Private,
                            CacheSharing::Locked => pb::CacheSharingOpt::Locked,
                        } as i32,
                    });
                }
                MountKind::Tmpfs { size } => {
                    pm.mount_type = pb::MountType::Tmpfs as i32;
                    pm.tmpfs_opt = Some(pb::TmpfsOpt { size: *size });
                }
            }
            mounts.push(pm);
        }
        let mut secretenv = Vec::new();
        for s in &self.secrets {
            if let Some(name) = &s.env {
                secretenv.push(pb::SecretEnv {
                    id: s.id.clone(),
                    name: name.clone(),
                    optional: s.optional,
                });
            }
            if let Some(target) = &s.target {
                mounts.push(pb::Mount {
                    input: -1,
                    dest: target.clone(),
                    mount_type: pb::MountType::Secret as i32,
                    secret_opt: Some(pb::SecretOpt {
                        id: s.id.clone(),
                        uid: s.uid,
                        gid: s.gid,
                        mode: s.mode,
                        optional: s.optional,
                    }),
                    ..pb::Mount::default()
                });
            }
        }
        for (s, target) in self.ssh.iter().zip(ssh_targets) {
            mounts.push(pb::Mount {
                input: -1,
                dest: target,
                mount_type: pb::MountType::Ssh as i32,
                ssh_opt: Some(pb::SshOpt {
                    id: s.id.clone(),
                    uid: s.uid,
                    gid: s.gid,
                    mode: s.mode,
                    optional: s.optional,
                }),
                ..pb::Mount::default()
            });
        }
        let exec = pb::ExecOp {
            meta: Some(pb_meta),
            mounts,
            network: meta.network.to_pb(),
            security: meta.security.to_pb(),
            secretenv,
            cdi_devices: self
                .cdi_devices
                .iter()
                .map(|(name, optional)| pb::CdiDevice {
                    name: name.clone(),
                    optional: *optional,
                })
                .collect(),
        };
        let op = pb::Op {
            inputs,
            op: Some(pb::op::Op::Exec(exec)),
            ..pb::Op::default()
        };
        Ok((op, md))
    }
}

/// Builder for an exec over a state. Settings start as the state's and may be changed
/// here without affecting the state itself.
#[derive(Clone, Debug)]
pub struct Exec {
    base: State,
    meta: Meta,
    mounts: Vec<Mount>,
    secrets: Vec<Secret>,
    ssh: Vec<Ssh>,
    proxy_env: Option<ProxyEnv>,
    readonly_root: bool,
    cdi_devices: Vec<(String, bool)>,
    options: OpOptions,
}

impl State {
    /// Starts an exec with this state as the root filesystem.
    pub fn run(&self) -> Exec {
        Exec {
            base: self.clone(),
            meta: (*self.meta).clone(),
            mounts: Vec::new(),
            secrets: Vec::new(),
            ssh: Vec::new(),
            proxy_env: None,
            readonly_root: false,
            cdi_devices: Vec::new(),
            options: OpOptions::default(),
        }
    }
}

impl Exec {
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Exec {
        self.meta.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// `/bin/sh -c <command>`.
    pub fn shell(self, command: &str) -> Exec {
        self.args(["/bin/sh", "-c", command])
    }

    pub fn env(mut self, key: &str, value: &str) -> Exec {
        self.meta.set_env(key, value);
        self
    }

    pub fn dir(mut self, dir: &str) -> Exec {
        self.meta.set_dir(dir);
        self
    }

    pub fn user(mut self, user: &str) -> Exec {
        self.meta.user = user.to_string();
        self
    }

    pub fn hostname(mut self, hostname: &str) -> Exec {
        self.meta.hostname = hostname.to_string();
        self
    }

    pub fn network(mut self, mode: NetMode) -> Exec {
        self.meta.network = mode;
        self
    }

    pub fn security(mut self, mode: SecurityMode) -> Exec {
        self.meta.security = mode;
        self
    }

    pub fn add_extra_host(mut self, host: &str, ip: std::net::IpAddr) -> Exec {
        self.meta
            .extra_hosts
            .push((host.to_string(), ip.to_string()));
        self
    }

    pub fn valid_exit_codes(mut self, codes: &[i32]) -> Exec {
        self.meta.valid_exit_codes = Some(codes.to_vec());
        self
    }

    pub fn mount(mut self, mount: Mount) -> Exec {
        self.mounts.push(mount);
        self
    }

    pub fn secret(mut self, secret: Secret) -> Exec {
        self.secrets.push(secret);
        self
    }

    pub fn ssh(mut self, ssh: Ssh) -> Exec {
        self.ssh.push(ssh);
        self
    }

    pub fn proxy_env(mut self, proxy: ProxyEnv) -> Exec {
        self.proxy_env = Some(proxy);
        self
    }

    /// Mount the root filesystem read-only; the exec then has no root output.
    pub fn readonly_rootfs(mut self) -> Exec {
        self.readonly_root = true;
        self
    }

    /// Request a CDI device (`vendor.com/class=name`).
    pub fn cdi_device(mut self, name: &str, optional: bool) -> Exec {
        self.cdi_devices.push((name.to_string(), optional));
        self
    }

    pub fn options(mut self, options: OpOptions) -> Exec {
        self.options = options;
        self
    }

    /// Finishes the exec: the vertex is fixed from here on.
    pub fn build(self) -> ExecState {
        let mut all = Vec::with_capacity(self.mounts.len() + 1);
        all.push(Mount {
            target: "/".to_string(),
            source: Some(self.base.clone()).filter(|s| !s.is_scratch()),
            readonly: self.readonly_root,
            selector: String::new(),
            kind: MountKind::Bind,
            no_output: false,
            content_cache: ContentCache::Default,
        });
        all.extend(self.mounts);
        all.sort_by(|a, b| a.target.cmp(&b.target));

        let mut error = None;
        if self.meta.args.is_empty() {
            error = Some(crate::Error::InvalidOp {
                op: "exec",
                reason: "no command given (arguments are required)".into(),
            });
        } else if self.meta.dir.is_empty() {
            error = Some(crate::Error::InvalidOp {
                op: "exec",
                reason: "working directory is required".into(),
            });
        }
        for m in &all {
            if matches!(m.kind, MountKind::Tmpfs { .. }) && m.source.is_some() {
                error.get_or_insert(crate::Error::InvalidOp {
                    op: "exec",
                    reason: format!("tmpfs mount {} can't have a source", m.target),
                });
            }
            if !m.target.starts_with('/') {
                error.get_or_insert(crate::Error::InvalidOp {
                    op: "exec",
                    reason: format!("mount target {:?} must be an absolute path", m.target),
                });
            }
        }
        for pair in all.windows(2) {
            if pair[0].target == pair[1].target {
                error.get_or_insert(crate::Error::InvalidOp {
                    op: "exec",
                    reason: format!("two mounts at {}", pair[0].target),
                });
            }
        }

        let mut options = self.options;
        if options.platform.is_none() {
            options.platform = self.meta.platform.clone();
        }
        let mut out_index = 0i64;
        let mut output_of = Vec::with_capacity(all.len());
        for m in &all {
            if m.has_output() {
                output_of.push(Some(out_index));
                out_index += 1;
            } else {
                output_of.push(None);
            }
        }
        let spec = ExecSpec {
            meta: self.meta,
            mounts: all
                .iter()
                .map(|m| MountSpec {
                    target: m.target.clone(),
                    source: m.source.as_ref().and_then(|s| s.output.clone()),
                    readonly: m.readonly,
                    selector: m.selector.clone(),
                    kind: m.kind.clone(),
                    no_output: m.no_output,
                    content_cache: m.content_cache,
                })
                .collect(),
            secrets: self.secrets,
            ssh: self.ssh,
            proxy_env: self.proxy_env,
            cdi_devices: self.cdi_devices,
            error,
        };
        let vertex = Arc::new(Vertex {
            op: OpKind::Exec(Box::new(spec)),
            options,
        });
        let mounts =
            all.into_iter()
                .zip(output_of)
                .map(|(m, out)| {
                    let state = match out {
                        Some(index) => {
                            Some(m.source.clone().unwrap_or_else(State::scratch).with_output(
                                Output {
                                    vertex: vertex.clone(),
                                    index,
                                },
                            ))
                        }
                        None if m.readonly => Some(m.source.clone().unwrap_or_else(State::scratch)),
                        None => None,
                    };
                    (m.target, state)
                })
                .collect::<Vec<_>>();
        let root = mounts
            .iter()
            .find(|(t, _)| t == "/")
            .and_then(|(_, s)| s.as_ref())
            .map(|s| {
                let mut r = self.base.clone();
                r.output = s.output.clone();
                if let Some(o) = &r.output
                    && let Some(p) = &o.vertex.options.platform
                {
                    std::sync::Arc::make_mut(&mut r.meta).platform = Some(p.clone());
                }
                r
            })
            .unwrap_or_else(|| self.base.clone());
        ExecState { root, mounts }
    }
}

/// The result of an exec: its root filesystem and the results of its writable mounts.
#[derive(Clone, Debug)]
pub struct ExecState {
    root: State,
    mounts: Vec<(String, Option<State>)>,
}

impl ExecState {
    /// The root filesystem after the exec, with the original state's settings.
    pub fn root(&self) -> State {
        self.root.clone()
    }

    /// The result of the mount at `target`: the exec's output for a writable bind mount,
    /// the unchanged source for a read-only one, `None` for cache, tmpfs and no-output mounts.
    pub fn mount(&self, target: &str) -> Option<State> {
        self.mounts
            .iter()
            .find(|(t, _)| t == target)
            .and_then(|(_, s)| s.clone())
    }
}
