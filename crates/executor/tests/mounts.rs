//! What a container sees of filesystems and networks: tmpfs, binds, snapshot mounts, a
//! read-only rootfs, the two network modes. Root and runc required (see `common`).

mod common;

use common::sh;
use executor::{ExtraMount, MountSource, NetworkMode};

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn network_none_has_only_loopback_and_it_is_up() {
    let env = env_or_skip!();
    let out = env
        .run(env.request("net1", sh("cat /proc/net/dev; cat /sys/class/net/lo/flags")))
        .await
        .ok();
    let (dev, flags) = out.rsplit_once("0x").expect("flags line");
    assert_eq!(interfaces(dev), ["lo"]);
    let flags = u32::from_str_radix(flags.trim(), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo should be up (IFF_UP), flags {flags:#x}");
    env.assert_clean();
}

#[tokio::test]
async fn network_host_sees_the_hosts_interfaces() {
    let env = env_or_skip!();
    let mut req = env.request("net2", sh("cat /proc/net/dev"));
    req.network = NetworkMode::Host;
    let out = env.run(req).await.ok();
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(interfaces(&out), interfaces(&host));
    assert!(
        interfaces(&host).len() > 1,
        "host has only lo; the test proves little"
    );
    env.assert_clean();
}

#[tokio::test]
async fn tmpfs_mount_is_writable_sized_and_leaves_no_stub() {
    let env = env_or_skip!();
    let mut req = env.request(
        "tmpfs1",
        sh("echo x > /scratch/f && cat /scratch/f && grep ' /scratch ' /proc/mounts"),
    );
    req.mounts = vec![ExtraMount {
        dest: "/scratch".into(),
        source: MountSource::Tmpfs {
            size: Some(1 << 20),
        },
    }];
    let out = env.run(req).await.ok();
    assert!(out.starts_with("x\ntmpfs /scratch tmpfs "), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert!(
        !env.rootfs.path().join("scratch").exists(),
        "mount stub left in the rootfs"
    );
    env.assert_clean();
}

#[tokio::test]
async fn readonly_rootfs_rejects_writes() {
    let env = env_or_skip!();
    let mut req = env.request("ro1", sh("touch /x"));
    req.readonly_rootfs = true;
    let ran = env.run(req).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.exit_code(), Some(1), "{e}");
    assert!(
        ran.stderr.contains("Read-only file system"),
        "{}",
        ran.stderr
    );
    assert!(!env.rootfs.path().join("x").exists());
    // Writable by default.
    env.run(env.request("ro2", sh("touch /x"))).await.ok();
    assert!(env.rootfs.path().join("x").exists());
    env.assert_clean();
}

#[tokio::test]
async fn readonly_bind_rejects_writes() {
    let env = env_or_skip!();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "data\n").unwrap();
    let mut req = env.request("bind1", sh("cat /data/in; touch /data/x"));
    req.mounts = vec![ExtraMount {
        dest: "/data".into(),
        source: MountSource::Bind {
            path: host.path().into(),
            readonly: true,
        },
    }];
    let ran = env.run(req).await;
    assert_eq!(ran.stdout, "data\n");
    assert!(ran.result.is_err(), "write to a read-only bind succeeded");
    assert!(
        ran.stderr.contains("Read-only file system"),
        "{}",
        ran.stderr
    );
    assert!(!host.path().join("x").exists());
    env.assert_clean();
}

#[tokio::test]
async fn writable_bind_writes_land_on_the_host() {
    let env = env_or_skip!();
    let host = tempfile::tempdir().unwrap();
    let mut req = env.request("bind2", sh("echo hello > /data/out"));
    req.mounts = vec![ExtraMount {
        dest: "/data".into(),
        source: MountSource::Bind {
            path: host.path().into(),
            readonly: false,
        },
    }];
    env.run(req).await.ok();
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "hello\n"
    );
    env.assert_clean();
}

#[tokio::test]
async fn snapshot_mounts_are_mounted_by_the_executor() {
    let env = env_or_skip!();
    let dirs = tempfile::tempdir().unwrap();
    let (lower, upper, work) = (
        dirs.path().join("l"),
        dirs.path().join("u"),
        dirs.path().join("w"),
    );
    for d in [&lower, &upper, &work] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(lower.join("from-lower"), "lower\n").unwrap();
    let overlay = snapshot::Mount {
        fstype: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    };
    let ro_dir = tempfile::tempdir().unwrap();
    let mut req = env.request(
        "snap1",
        sh("cat /ov/from-lower && echo new > /ov/new && (touch /view/x 2>/dev/null || echo view-ro)"),
    );
    req.mounts = vec![
        ExtraMount {
            dest: "/ov".into(),
            source: MountSource::Mounts(vec![overlay]),
        },
        ExtraMount {
            dest: "/view".into(),
            source: MountSource::Mounts(vec![snapshot::Mount::bind(
                ro_dir.path().to_string_lossy(),
                true,
            )]),
        },
    ];
    assert_eq!(env.run(req).await.ok(), "lower\nview-ro\n");
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "new\n");
    assert!(!lower.join("new").exists());
    assert!(
        !env.rootfs.path().join("ov").exists(),
        "mount stub left in the rootfs"
    );
    env.assert_clean();
}
