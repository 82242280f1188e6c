//! What a caller asks the executor to run, and what comes back on the way.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use snapshot::Mount;

use crate::error::{ExecError, Result};

/// The hostname a build container gets unless the request names another (as in BuildKit).
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// `PATH` added to the environment when the request has none (as in BuildKit).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Ids the executor keeps for itself: the runtime's state lives in `<state_dir>/runc`.
const RESERVED_IDS: &[&str] = &["runc"];

/// Longest accepted container id.
const MAX_ID_LEN: usize = 128;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const MAX_HOSTNAME_LEN: usize = 64;

/// The network a container sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// A fresh network namespace with only a loopback interface (up, 127.0.0.1).
    #[default]
    None,
    /// The host's network namespace (needs the `network.host` entitlement upstream).
    Host,
}

/// How much the container is confined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// Docker's default capability set, masked and read-only `/proc` paths, read-only
    /// `/sys`, no device access, no new privileges.
    #[default]
    Sandbox,
    /// Every capability the daemon has, all devices allowed, writable `/sys` and cgroupfs
    /// (`security.insecure` upstream).
    Insecure,
}

/// Where the contents of an [`ExtraMount`] come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSource {
    /// Mounts (usually another snapshot) that the executor mounts in a per-run directory
    /// and binds into the container. Read-only if any of them asks for `ro`.
    Mounts(Vec<Mount>),
    /// A fresh tmpfs; `size` in bytes, or the kernel default (half of RAM) if `None`.
    Tmpfs { size: Option<u64> },
    /// A directory or file of the host, bound as it is.
    Bind { path: PathBuf, readonly: bool },
}

/// A mount besides the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraMount {
    /// Absolute path inside the container.
    pub dest: PathBuf,
    /// What to mount there.
    pub source: MountSource,
}

/// Everything needed to run one process in a fresh container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// Container id: ASCII letters and digits, unique among running containers.
    pub id: String,
    /// The root filesystem, mounted in order on the bundle's `rootfs/`.
    pub rootfs: Vec<Mount>,
    /// Make `/` read-only inside the container.
    pub readonly_rootfs: bool,
    /// Further mounts, applied in order; a later mount on the same `dest` replaces an
    /// earlier one.
    pub mounts: Vec<ExtraMount>,
    /// The command and its arguments; must not be empty.
    pub args: Vec<String>,
    /// `KEY=value` entries; `PATH` is added if missing.
    pub env: Vec<String>,
    /// Absolute working directory; created (owned by the user) if missing. Empty means `/`.
    pub cwd: String,
    /// `name`, `uid`, `name:group` or `uid:gid`, resolved in the container's `/etc/passwd`
    /// and `/etc/group`. Empty means root.
    pub user: String,
    /// Hostname inside the container.
    pub hostname: String,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Confinement choice.
    pub security: SecurityMode,
    /// Added to the container's `/etc/hosts`.
    pub extra_hosts: Vec<(String, IpAddr)>,
}

impl RunRequest {
    /// A request with BuildKit's defaults: root, `/`, hostname [`DEFAULT_HOSTNAME`], no
    /// network, sandboxed, no extra mounts.
    pub fn new(id: impl Into<String>, rootfs: Vec<Mount>, args: Vec<String>) -> RunRequest {
        RunRequest {
            id: id.into(),
            rootfs,
            readonly_rootfs: false,
            mounts: Vec::new(),
            args,
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            hostname: DEFAULT_HOSTNAME.into(),
            network: NetworkMode::None,
            security: SecurityMode::Sandbox,
            extra_hosts: Vec::new(),
        }
    }

    /// The command as shown in errors and logs: `args` joined with spaces.
    pub fn command(&self) -> String {
        self.args.join(" ")
    }

    /// `env` with [`DEFAULT_PATH`] appended when no `PATH=` entry exists.
    pub fn env_with_path(&self) -> Vec<String> {
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env
    }

    /// The working directory, `/` when empty.
    pub fn cwd_or_root(&self) -> &str {
        if self.cwd.is_empty() { "/" } else { &self.cwd }
    }

    /// Checks everything that can be checked without touching the filesystem.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        let invalid = |reason: String| ExecError::InvalidRequest {
            id: self.id.clone(),
            reason,
        };
        if self.args.is_empty() {
            return Err(invalid("no command (args is empty)".into()));
        }
        if self.rootfs.is_empty() {
            return Err(invalid("no rootfs mounts".into()));
        }
        let cwd = Path::new(self.cwd_or_root());
        if !cwd.is_absolute() {
            return Err(invalid(format!(
                "working directory {:?} is not absolute",
                self.cwd
            )));
        }
        if has_parent_component(cwd) {
            return Err(invalid(format!(
                "working directory {:?} contains \"..\"",
                self.cwd
            )));
        }
        if let Some(e) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(invalid(format!("environment entry {e:?} is not KEY=value")));
        }
        validate_hostname(&self.hostname)
            .map_err(|r| invalid(format!("hostname {:?}: {r}", self.hostname)))?;
        for (host, _) in &self.extra_hosts {
            validate_hostname(host).map_err(|r| invalid(format!("extra host {host:?}: {r}")))?;
        }
        for m in &self.mounts {
            if !m.dest.is_absolute() || m.dest == Path::new("/") || has_parent_component(&m.dest) {
                return Err(invalid(format!(
                    "mount destination {} must be an absolute path below / without \"..\"",
                    m.dest.display()
                )));
            }
            match &m.source {
                MountSource::Mounts(ms) if ms.is_empty() => {
                    return Err(invalid(format!(
                        "mount on {} has no mounts",
                        m.dest.display()
                    )));
                }
                MountSource::Bind { path, .. } if !path.is_absolute() => {
                    return Err(invalid(format!(
                        "bind source {} for {} is not absolute",
                        path.display(),
                        m.dest.display()
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks that `id` is usable as a container id and as a directory name.
pub fn validate_id(id: &str) -> Result<()> {
    let invalid = |reason| ExecError::InvalidId {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid("longer than 128 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("only ASCII letters and digits are allowed"));
    }
    if RESERVED_IDS.contains(&id) {
        return Err(invalid("reserved for the executor's own state"));
    }
    Ok(())
}

fn validate_hostname(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err("longer than 64 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err("contains whitespace, control characters or '#'");
    }
    Ok(())
}

fn has_parent_component(p: &Path) -> bool {
    p.components().any(|c| c == Component::ParentDir)
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A chunk of the process's output, in the order it was read from its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Where a run sends its output. Bounded, so a slow reader slows the process down rather
/// than filling memory; if the receiver is dropped the output is read and discarded.
pub type OutputSink = tokio::sync::mpsc::Sender<Output>;

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RunRequest {
        RunRequest::new("abc1", vec![Mount::bind("/x", false)], vec!["true".into()])
    }

    #[test]
    fn defaults_follow_buildkit() {
        let r = req();
        assert_eq!(r.hostname, "buildkitsandbox");
        assert_eq!(r.network, NetworkMode::None);
        assert_eq!(r.security, SecurityMode::Sandbox);
        assert_eq!(r.env_with_path(), vec![format!("PATH={DEFAULT_PATH}")]);
        r.validate().unwrap();
    }

    #[test]
    fn existing_path_is_kept() {
        let mut r = req();
        r.env = vec!["PATH=/bin".into(), "A=b".into()];
        assert_eq!(
            r.env_with_path(),
            vec!["PATH=/bin".to_string(), "A=b".into()]
        );
    }

    #[test]
    fn ids_are_letters_and_digits() {
        validate_id("abc123XYZ").unwrap();
        for bad in ["", "a/b", "..", "a-b", "runc", &"x".repeat(129)] {
            let e = validate_id(bad).unwrap_err();
            assert!(matches!(e, ExecError::InvalidId { .. }), "{bad}: {e}");
        }
    }

    type Edit = fn(&mut RunRequest);

    #[test]
    fn bad_requests_name_the_problem() {
        let cases: Vec<(Edit, &str)> = vec![
            (|r| r.args.clear(), "args is empty"),
            (|r| r.cwd = "rel".into(), "\"rel\" is not absolute"),
            (|r| r.cwd = "/a/../..".into(), "contains \"..\""),
            (|r| r.env = vec!["NOEQUALS".into()], "\"NOEQUALS\""),
            (|r| r.hostname = "a b".into(), "hostname \"a b\""),
            (
                |r| r.extra_hosts = vec![("x\ny".into(), [1, 2, 3, 4].into())],
                "extra host",
            ),
            (
                |r| {
                    r.mounts = vec![ExtraMount {
                        dest: "rel".into(),
                        source: MountSource::Tmpfs { size: None },
                    }]
                },
                "mount destination rel",
            ),
            (
                |r| {
                    r.mounts = vec![ExtraMount {
                        dest: "/data".into(),
                        source: MountSource::Bind {
                            path: "relative".into(),
                            readonly: true,
                        },
                    }]
                },
                "bind source relative",
            ),
        ];
        for (edit, want) in cases {
            let mut r = req();
            edit(&mut r);
            let msg = r.validate().unwrap_err().to_string();
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
            assert!(msg.contains("abc1"), "{msg:?} should name the container");
        }
    }
}
