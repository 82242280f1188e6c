//! Linux capabilities: Docker's default set for sandboxed steps, and "everything the
//! daemon holds" for insecure ones (BuildKit's `security.WithInsecureSpec` uses the
//! daemon's current capabilities too, so a daemon with fewer cannot hand out more).

use oci_spec::runtime::Capability;

/// Capability numbers as in `linux/capability.h`, index = number.
const BY_NUMBER: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Docker's (and containerd's, and so BuildKit's) default capabilities.
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The capabilities in the bounding set `mask` (bit n = capability n) that we can name.
pub fn from_mask(mask: u64) -> Vec<Capability> {
    BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(n, _)| mask & (1u64 << n) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// The bounding set from the text of `/proc/<pid>/status` (`CapBnd:` line, hex).
pub fn bounding_mask(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities this process may hand out: its bounding set. Falls back to every
/// capability we know if `/proc/self/status` cannot be read.
pub fn current() -> Vec<Capability> {
    match std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(bounding_mask)
    {
        Some(mask) => from_mask(mask),
        None => {
            tracing::warn!(
                "cannot read the bounding capability set; granting all known capabilities"
            );
            BY_NUMBER.to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits_map_to_names() {
        assert_eq!(from_mask(0b1), vec![Capability::Chown]);
        assert_eq!(from_mask(1 << 21), vec![Capability::SysAdmin]);
        assert_eq!(from_mask(1 << 40), vec![Capability::CheckpointRestore]);
        assert_eq!(from_mask(u64::MAX).len(), 41);
        // The serialized names are the kernel's.
        let json = serde_json::to_string(&BY_NUMBER[29]).unwrap();
        assert_eq!(json, "\"CAP_AUDIT_WRITE\"");
    }

    #[test]
    fn status_line_is_parsed() {
        let status = "Name:\tx\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(bounding_mask(status), Some(0x1ff_ffff_ffff));
        assert_eq!(bounding_mask("CapEff:\t0\n"), None);
        assert!(!current().is_empty());
    }

    #[test]
    fn defaults_are_dockers() {
        let names: Vec<String> = DEFAULT
            .iter()
            .map(|c| {
                serde_json::to_string(c)
                    .unwrap()
                    .trim_matches('"')
                    .to_string()
            })
            .collect();
        for want in [
            "CAP_CHOWN",
            "CAP_NET_RAW",
            "CAP_SETFCAP",
            "CAP_AUDIT_WRITE",
            "CAP_SYS_CHROOT",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n == "CAP_SYS_ADMIN"));
    }
}
