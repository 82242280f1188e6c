//! The OCI runtime spec (`config.json`) of a build container, shaped like the one
//! BuildKit generates through containerd's `oci.GenerateSpec`: containerd's default mounts
//! without `/run`, the resolver and hosts files bound read-only, a read-only cgroupfs,
//! containerd's masked and read-only paths, Docker's default capabilities, a device cgroup
//! that allows nothing beyond runc's defaults, and cgroups under `/buildkit/<id>`.
//!
//! Differences from BuildKit: no seccomp or AppArmor profile (not generated here), and
//! `noNewPrivileges` is off by default, as in BuildKit, so setuid binaries work; see
//! [`crate::RuncExecutor::with_no_new_privileges`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount as OciMount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::caps;
use crate::error::{ExecError, Result};
use crate::request::{NetworkMode, RunRequest, SecurityMode};
use crate::user::ResolvedUser;

/// The runtime spec version we write (what runc 1.1 speaks).
const OCI_VERSION: &str = "1.0.2-dev";

/// containerd's default masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A mount as it goes into the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpecMount {
    pub dest: PathBuf,
    pub typ: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

impl SpecMount {
    fn new(dest: &str, typ: &str, source: &str, options: &[&str]) -> SpecMount {
        SpecMount {
            dest: dest.into(),
            typ: typ.into(),
            source: source.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    /// A recursive bind of `source`, read-only if asked.
    pub(crate) fn bind(dest: &Path, source: &Path, readonly: bool) -> SpecMount {
        SpecMount {
            dest: dest.to_path_buf(),
            typ: "bind".into(),
            source: source.to_path_buf(),
            options: vec!["rbind".into(), if readonly { "ro" } else { "rw" }.into()],
        }
    }

    /// A tmpfs as BuildKit mounts one (`nosuid`, optional size in bytes).
    pub(crate) fn tmpfs(dest: &Path, size: Option<u64>) -> SpecMount {
        let mut options = vec!["nosuid".to_string()];
        if let Some(size) = size {
            options.push(format!("size={size}"));
        }
        SpecMount {
            dest: dest.to_path_buf(),
            typ: "tmpfs".into(),
            source: "tmpfs".into(),
            options,
        }
    }
}

/// Facts about the host that shape the spec, probed once per executor.
#[derive(Clone, Debug)]
pub(crate) struct HostFacts {
    /// `RLIMIT_NOFILE` (soft, hard) of the daemon, which containers inherit (BuildKit
    /// clears the spec's rlimits, so runc leaves its own in place; we write them out).
    pub nofile: (u64, u64),
    /// What insecure containers get.
    pub all_caps: Vec<Capability>,
    /// Whether to unshare the cgroup namespace (cgroup v2 only, as BuildKit).
    pub cgroup_ns: bool,
}

impl HostFacts {
    pub(crate) fn probe() -> HostFacts {
        let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let hard = lim.maximum.unwrap_or(u64::MAX);
        let soft = lim.current.unwrap_or(hard);
        HostFacts {
            nofile: (soft, hard),
            all_caps: caps::current(),
            cgroup_ns: Path::new("/proc/self/ns/cgroup").exists()
                && Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists(),
        }
    }
}

/// Everything the spec is made of.
#[derive(Debug)]
pub(crate) struct SpecInput<'a> {
    pub req: &'a RunRequest,
    pub rootfs: &'a Path,
    pub user: &'a ResolvedUser,
    pub hosts_file: &'a Path,
    pub resolv_conf: &'a Path,
    /// The request's extra mounts, resolved to spec mounts, in request order.
    pub extra_mounts: Vec<SpecMount>,
    pub host: &'a HostFacts,
    pub no_new_privileges: bool,
}

/// The default mounts plus ours plus the request's, a later mount on a destination
/// replacing an earlier one in place (BuildKit's `dedupMounts`).
pub(crate) fn mounts(input: &SpecInput<'_>) -> Vec<SpecMount> {
    let insecure = input.req.security == SecurityMode::Insecure;
    let ro = |opts: &[&'static str]| -> Vec<&'static str> {
        let mut v = opts.to_vec();
        if !insecure {
            v.push("ro");
        }
        v
    };
    let etc_opts = ["nosuid", "noexec", "nodev", "rbind", "ro"];
    let mut all = vec![
        SpecMount::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        SpecMount::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        SpecMount::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        SpecMount::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        SpecMount::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        SpecMount::new(
            "/sys",
            "sysfs",
            "sysfs",
            &ro(&["nosuid", "noexec", "nodev"]),
        ),
        SpecMount {
            dest: "/etc/resolv.conf".into(),
            typ: "bind".into(),
            source: input.resolv_conf.to_path_buf(),
            options: etc_opts.iter().map(|o| o.to_string()).collect(),
        },
        SpecMount {
            dest: "/etc/hosts".into(),
            typ: "bind".into(),
            source: input.hosts_file.to_path_buf(),
            options: etc_opts.iter().map(|o| o.to_string()).collect(),
        },
        SpecMount::new(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &ro(&["nosuid", "noexec", "nodev"]),
        ),
    ];
    for m in &input.extra_mounts {
        match all.iter_mut().find(|e| e.dest == m.dest) {
            Some(existing) => *existing = m.clone(),
            None => all.push(m.clone()),
        }
    }
    all
}

/// Builds the spec.
pub(crate) fn generate(input: &SpecInput<'_>) -> Result<Spec> {
    let req = input.req;
    let err = |source| ExecError::Spec {
        id: req.id.clone(),
        source,
    };
    let insecure = req.security == SecurityMode::Insecure;

    let mut caps = LinuxCapabilitiesBuilder::default();
    if insecure {
        let all: HashSet<Capability> = input.host.all_caps.iter().copied().collect();
        caps = caps
            .bounding(all.clone())
            .effective(all.clone())
            .permitted(all.clone())
            .inheritable(all.clone())
            .ambient(all);
    } else {
        let default: HashSet<Capability> = caps::DEFAULT.into_iter().collect();
        // Set every field: the builder fills unset ones from `LinuxCapabilities::default()`,
        // which has ambient capabilities.
        caps = caps
            .bounding(default.clone())
            .effective(default.clone())
            .permitted(default)
            .inheritable(HashSet::new())
            .ambient(HashSet::new());
    }

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()
        .map_err(err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(req.args.clone())
        .env(req.env_with_path())
        .cwd(PathBuf::from(req.cwd_or_root()))
        .capabilities(caps.build().map_err(err)?)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(input.host.nofile.0)
                .hard(input.host.nofile.1)
                .build()
                .map_err(err)?,
        ])
        .no_new_privileges(input.no_new_privileges && !insecure)
        .build()
        .map_err(err)?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if req.network == NetworkMode::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if input.host.cgroup_ns {
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;

    let devices = if insecure {
        vec![
            device_rule(true, Some(LinuxDeviceType::C)).map_err(err)?,
            device_rule(true, Some(LinuxDeviceType::B)).map_err(err)?,
        ]
    } else {
        vec![device_rule(false, None).map_err(err)?]
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (masked, readonly) = if insecure {
        (Vec::new(), Vec::new())
    } else {
        (strings(MASKED_PATHS), strings(READONLY_PATHS))
    };
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .resources(
            LinuxResourcesBuilder::default()
                .devices(devices)
                .build()
                .map_err(err)?,
        )
        .cgroups_path(PathBuf::from(format!("/buildkit/{}", req.id)))
        .build()
        .map_err(err)?;

    let mounts = mounts(input)
        .into_iter()
        .map(|m| {
            MountBuilder::default()
                .destination(m.dest)
                .typ(m.typ)
                .source(m.source)
                .options(m.options)
                .build()
        })
        .collect::<Result<Vec<OciMount>, _>>()
        .map_err(err)?;

    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(input.rootfs.to_path_buf())
                .readonly(req.readonly_rootfs)
                .build()
                .map_err(err)?,
        )
        .mounts(mounts)
        .process(process)
        .hostname(req.hostname.clone())
        .linux(linux)
        .build()
        .map_err(err)
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
) -> Result<oci_spec::runtime::LinuxDeviceCgroup, oci_spec::OciSpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access("rwm");
    if let Some(typ) = typ {
        b = b.typ(typ);
    }
    b.build()
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
