//! Exec ops: a process over a root filesystem and extra mounts, run by the worker's
//! executor. Every writable bind mount with an output index becomes an output.
//!
//! Secrets (secret mounts, secret environment variables) come from the job's client
//! session when the op runs. They are not part of the cache key (upstream's rule: the
//! op names a secret by id, its value does not change the key).

use std::collections::VecDeque;
use std::sync::Arc;

use executor::{ExtraMount, MountSource, NetworkMode, Output, RunRequest, SecurityMode, Stream};
use oci::Digest;
use proto::pb;
use solver::{BoxFuture, CacheMap, Dep, Op, OpContext, OpError};

use crate::cachemount::{CacheMountGuard, Sharing};
use crate::mounted::{Active, Mounted, join_inside, view};
use crate::secretmount::SecretFile;
use crate::sshmount::SshSocket;
use crate::{BuildSession, OpsContext, Ref, blocking, op_err};

/// How many lines of output an error shows.
const ERROR_LINES: usize = 10;

pub(crate) struct ExecOp {
    pub(crate) ctx: Arc<OpsContext>,
    pub(crate) exec: pb::ExecOp,
    pub(crate) op_digest: Digest,
    pub(crate) inputs: usize,
    /// The job's client session: secrets come from it.
    pub(crate) session: Option<Arc<dyn BuildSession>>,
}

fn is_bind(m: &pb::Mount) -> bool {
    m.mount_type == pb::MountType::Bind as i32
}

impl ExecOp {
    /// The mount that reads input `i` by content: the only mount of that input, a read-only
    /// bind with no output that is not the root.
    fn content_mount(&self, i: usize) -> Option<&pb::Mount> {
        let users: Vec<&pb::Mount> = self
            .exec
            .mounts
            .iter()
            .filter(|m| m.input == i as i64)
            .collect();
        match users.as_slice() {
            [m] if is_bind(m) && m.readonly && m.output < 0 && m.dest != "/" => Some(m),
            _ => None,
        }
    }

    /// Secret `id` from the job's session; `None` when the client does not have it (or
    /// the build has no session).
    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, OpError> {
        match &self.session {
            Some(s) => s
                .secret(id)
                .await
                .map_err(|e| OpError::new(format!("secret {id}: {e}"))),
            None => Ok(None),
        }
    }

    /// `NAME=value` for each secret environment variable. A missing optional secret sets
    /// the variable empty, as upstream does.
    async fn secret_env(&self) -> Result<Vec<(String, String)>, OpError> {
        let mut out = Vec::new();
        for se in &self.exec.secretenv {
            if se.id.is_empty() {
                return Err(OpError::new(format!(
                    "secret ID missing for {:?} environment variable",
                    se.name
                )));
            }
            let value = match self.secret(&se.id).await? {
                Some(v) => v,
                None if se.optional => Vec::new(),
                None => return Err(secret_not_found(&se.id)),
            };
            // Environment values are strings; upstream converts the bytes the same way.
            out.push((
                se.name.clone(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        Ok(out)
    }

    fn command(&self) -> String {
        self.exec
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default()
    }
}

/// Everything an exec holds while its process runs.
#[derive(Default)]
struct Prepared {
    rootfs: Option<Vec<snapshot::Mount>>,
    readonly_root: bool,
    extra: Vec<ExtraMount>,
    /// (output index, mount destination, snapshot).
    outputs: Vec<(i64, String, Active)>,
    discarded: Vec<Active>,
    views: Vec<Mounted>,
    caches: Vec<CacheMountGuard>,
    secrets: Vec<SecretFile>,
    ssh: Vec<SshSocket>,
}

fn secret_not_found(id: &str) -> OpError {
    OpError::new(format!("secret {id} not found"))
}

impl Op<Ref> for ExecOp {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(async move {
            let deps = (0..self.inputs)
                .map(|i| match self.content_mount(i) {
                    Some(m) => Dep {
                        selector: Some(m.selector.clone()),
                        content_based: true,
                    },
                    None => Dep::default(),
                })
                .collect();
            Ok(CacheMap {
                digest: self.op_digest,
                deps,
                always_run: false,
            })
        })
    }

    fn content_digest<'a>(
        &'a self,
        _: &'a OpContext,
        index: usize,
        input: &'a Ref,
    ) -> BoxFuture<'a, Result<Digest, OpError>> {
        Box::pin(async move {
            let selector = self
                .content_mount(index)
                .map(|m| m.selector.clone())
                .unwrap_or_default();
            crate::file::checksum(&self.ctx, input, &selector, true, &[], &[], false).await
        })
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'a, Result<Vec<Ref>, OpError>> {
        Box::pin(async move {
            let meta = self
                .exec
                .meta
                .clone()
                .ok_or_else(|| OpError::new("exec has no process settings"))?;
            let mut p = Prepared::default();
            for m in &self.exec.mounts {
                let input = match usize::try_from(m.input) {
                    Ok(i) => inputs.get(i).cloned().ok_or_else(|| {
                        OpError::new(format!("mount {}: input {i} missing", m.dest))
                    })?,
                    Err(_) => Ref::scratch(),
                };
                self.prepare_mount(m, input, &mut p).await?;
            }
            let rootfs = p
                .rootfs
                .take()
                .ok_or_else(|| OpError::new("exec has no root mount"))?;
            let mut req = RunRequest::new(llb::random_id(), rootfs, meta.args.clone());
            req.readonly_rootfs = p.readonly_root;
            req.mounts = std::mem::take(&mut p.extra);
            req.env = meta.env.clone();
            for (name, value) in self.secret_env().await? {
                let prefix = format!("{name}=");
                req.env.retain(|e| !e.starts_with(&prefix));
                req.env.push(format!("{name}={value}"));
            }
            req.cwd = if meta.cwd.is_empty() {
                "/".into()
            } else {
                meta.cwd.clone()
            };
            req.user = meta.user.clone();
            if !meta.hostname.is_empty() {
                req.hostname = meta.hostname.clone();
            }
            // Without CNI, the sandbox network is the host's, as upstream falls back to.
            req.network = if self.exec.network == pb::NetMode::None as i32 {
                NetworkMode::None
            } else {
                NetworkMode::Host
            };
            req.security = if self.exec.security == pb::SecurityMode::Insecure as i32 {
                SecurityMode::Insecure
            } else {
                SecurityMode::Sandbox
            };
            for h in &meta.extra_hosts {
                let ip = h.ip.parse().map_err(|_| {
                    OpError::new(format!("extra host {}: bad address {:?}", h.host, h.ip))
                })?;
                req.extra_hosts.push((h.host.clone(), ip));
            }

            let (tx, mut rx) = tokio::sync::mpsc::channel::<Output>(256);
            let run = self.ctx.worker.executor.run(req, tx, ctx.cancel.clone());
            let progress = ctx.progress.clone();
            let vertex = ctx.vertex.clone();
            let forward = async move {
                let mut tail: VecDeque<String> = VecDeque::new();
                while let Some(o) = rx.recv().await {
                    let stream = match o.stream {
                        Stream::Stdout => 1,
                        Stream::Stderr => 2,
                    };
                    progress.log(&vertex, stream, &o.data);
                    for line in String::from_utf8_lossy(&o.data).lines() {
                        if tail.len() == ERROR_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_string());
                    }
                }
                tail
            };
            let (result, tail) = tokio::join!(run, forward);
            if let Err(e) = result {
                let mut err = OpError::new(e.to_string());
                err.details = tail.into_iter().collect();
                return Err(err);
            }
            let Prepared {
                mut outputs,
                discarded,
                views,
                caches,
                secrets,
                ssh,
                ..
            } = p;
            drop((views, caches, secrets, ssh));
            let command = self.command();
            blocking(move || {
                drop(discarded);
                outputs.sort_by_key(|(i, _, _)| *i);
                outputs
                    .into_iter()
                    .map(|(_, dest, a)| a.commit(&format!("mount {dest} from exec {command}")))
                    .collect()
            })
            .await
        })
    }
}

impl ExecOp {
    async fn prepare_mount(
        &self,
        m: &pb::Mount,
        input: Ref,
        p: &mut Prepared,
    ) -> Result<(), OpError> {
        let ops = self.ctx.clone();
        let dest = m.dest.clone();
        match pb::MountType::try_from(m.mount_type) {
            Ok(pb::MountType::Bind) => {
                if m.readonly {
                    let v = blocking(move || view(&ops, &input)).await?;
                    if dest == "/" {
                        p.rootfs = Some(vec![snapshot::Mount::bind(
                            v.path().to_string_lossy().into_owned(),
                            true,
                        )]);
                        p.readonly_root = true;
                    } else {
                        p.extra.push(ExtraMount {
                            dest: dest.into(),
                            source: MountSource::Bind {
                                path: join_inside(v.path(), &m.selector),
                                readonly: true,
                            },
                        });
                    }
                    p.views.push(v);
                    return Ok(());
                }
                if !m.selector.is_empty() {
                    return Err(OpError::new(format!(
                        "mount {dest}: a selector on a writable mount is not supported"
                    )));
                }
                let a = blocking(move || Active::prepare(&ops, &input)).await?;
                let mounts = a.mounts()?;
                if dest == "/" {
                    p.rootfs = Some(mounts);
                } else {
                    p.extra.push(ExtraMount {
                        dest: dest.into(),
                        source: MountSource::Mounts(mounts),
                    });
                }
                if m.output >= 0 {
                    p.outputs.push((m.output, m.dest.clone(), a));
                } else {
                    p.discarded.push(a);
                }
            }
            Ok(pb::MountType::Cache) => {
                let opt = m.cache_opt.clone().unwrap_or_default();
                let id = if opt.id.is_empty() {
                    dest.clone()
                } else {
                    opt.id
                };
                let sharing = match pb::CacheSharingOpt::try_from(opt.sharing) {
                    Ok(pb::CacheSharingOpt::Private) => Sharing::Private,
                    Ok(pb::CacheSharingOpt::Locked) => Sharing::Locked,
                    _ => Sharing::Shared,
                };
                let guard = self
                    .ctx
                    .cache_mounts
                    .acquire(&id, sharing)
                    .await
                    .map_err(OpError::new)?;
                if guard.fresh && input.key().is_some() {
                    // Seed a new cache directory from the mount's source (its selected
                    // sub-directory), and give the cache root that directory's owner and
                    // mode: `--mount=type=cache,uid=..,mode=..` works that way.
                    let target = guard.path.clone();
                    let selector = if m.selector.is_empty() {
                        "/".to_string()
                    } else {
                        m.selector.clone()
                    };
                    blocking(move || {
                        let v = view(&ops, &input)?;
                        let copy = pb::FileActionCopy {
                            src: selector.clone(),
                            dest: "/".into(),
                            mode: -1,
                            timestamp: -1,
                            dir_copy_contents: true,
                            allow_empty_wildcard: true,
                            ..pb::FileActionCopy::default()
                        };
                        fileop::copy(v.path(), &target, &copy, None).map_err(op_err)?;
                        let src = v.path().join(selector.trim_start_matches('/'));
                        if let Ok(md) = std::fs::symlink_metadata(&src)
                            && md.is_dir()
                        {
                            use std::os::unix::fs::{MetadataExt, PermissionsExt};
                            std::os::unix::fs::chown(&target, Some(md.uid()), Some(md.gid()))
                                .map_err(op_err)?;
                            std::fs::set_permissions(
                                &target,
                                std::fs::Permissions::from_mode(md.mode() & 0o7777),
                            )
                            .map_err(op_err)?;
                        }
                        Ok(())
                    })
                    .await?;
                }
                p.extra.push(ExtraMount {
                    dest: dest.into(),
                    source: MountSource::Bind {
                        path: guard.path.clone(),
                        readonly: m.readonly,
                    },
                });
                p.caches.push(guard);
            }
            Ok(pb::MountType::Tmpfs) => {
                let size = m
                    .tmpfs_opt
                    .as_ref()
                    .and_then(|t| u64::try_from(t.size).ok())
                    .filter(|s| *s > 0);
                p.extra.push(ExtraMount {
                    dest: dest.into(),
                    source: MountSource::Tmpfs { size },
                });
            }
            Ok(pb::MountType::Secret) => {
                let opt = m.secret_opt.clone().ok_or_else(|| {
                    OpError::new(format!("mount {dest}: invalid secret mount options"))
                })?;
                if opt.id.is_empty() {
                    return Err(OpError::new(format!(
                        "mount {dest}: secret ID missing from mount options"
                    )));
                }
                let Some(data) = self.secret(&opt.id).await? else {
                    if opt.optional {
                        // Upstream mounts nothing for a missing optional secret.
                        return Ok(());
                    }
                    return Err(secret_not_found(&opt.id));
                };
                let tmp = self.ctx.worker.tmp_dir();
                let file = blocking(move || {
                    SecretFile::create(&tmp, &data, opt.uid, opt.gid, opt.mode)
                        .map_err(|e| OpError::new(format!("mount {dest}: secret {}: {e}", opt.id)))
                })
                .await?;
                p.extra.push(ExtraMount {
                    dest: m.dest.clone().into(),
                    source: MountSource::Bind {
                        path: file.path().to_path_buf(),
                        readonly: true,
                    },
                });
                p.secrets.push(file);
            }
            Ok(pb::MountType::Ssh) => {
                let tmp = self.ctx.worker.tmp_dir();
                let session = self.session.as_ref();
                // None: an optional agent the client does not forward, mounted nowhere.
                if let Some(socket) =
                    crate::sshmount::prepare(tmp, session, m.ssh_opt.as_ref()).await?
                {
                    p.extra.push(ExtraMount {
                        dest: dest.into(),
                        source: MountSource::Bind {
                            path: socket.path().to_path_buf(),
                            readonly: false,
                        },
                    });
                    p.ssh.push(socket);
                }
            }
            Err(_) => {
                return Err(OpError::new(format!(
                    "mount {dest}: unknown mount type {}",
                    m.mount_type
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ExecOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOp")
            .field("command", &self.command())
            .finish()
    }
}
