use std::path::Path;

use serde_json::Value;

use super::*;
use crate::request::{ExtraMount, MountSource};

fn facts() -> HostFacts {
    HostFacts {
        nofile: (1024, 4096),
        all_caps: caps::from_mask(u64::MAX),
        cgroup_ns: false,
    }
}

fn request() -> RunRequest {
    let mut r = RunRequest::new(
        "c1",
        vec![snapshot::Mount::bind("/src", false)],
        vec!["sh".into(), "-c".into(), "echo hi".into()],
    );
    r.env = vec!["FOO=bar".into()];
    r.cwd = "/work".into();
    r
}

fn user() -> ResolvedUser {
    crate::user::resolve("1000:1000", None, None).unwrap()
}

fn json(req: &RunRequest, extra: Vec<SpecMount>, facts: &HostFacts) -> Value {
    let user = user();
    let input = SpecInput {
        req,
        rootfs: Path::new("/state/c1/rootfs"),
        user: &user,
        hosts_file: Path::new("/state/c1/hosts"),
        resolv_conf: Path::new("/state/c1/resolv.conf"),
        extra_mounts: extra,
        host: facts,
        no_new_privileges: true,
    };
    serde_json::to_value(generate(&input).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
}

fn namespaces(spec: &Value) -> Vec<String> {
    spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sandbox_spec_has_buildkits_defaults() {
    let spec = json(&request(), Vec::new(), &facts());
    assert_eq!(spec["ociVersion"], "1.0.2-dev");
    assert_eq!(spec["hostname"], "buildkitsandbox");
    assert_eq!(spec["root"]["path"], "/state/c1/rootfs");
    assert_eq!(spec["root"]["readonly"], false);

    let p = &spec["process"];
    assert_eq!(p["terminal"], false);
    assert_eq!(p["args"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert_eq!(
        p["env"],
        serde_json::json!([
            "FOO=bar",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ])
    );
    assert_eq!(p["cwd"], "/work");
    assert_eq!(
        p["user"],
        serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]})
    );
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(
        p["rlimits"],
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}])
    );
    let bounding = strings(&p["capabilities"]["bounding"]);
    assert_eq!(bounding.len(), 14, "{bounding:?}");
    assert!(bounding.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!bounding.contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(strings(&p["capabilities"]["effective"]), bounding);
    assert_eq!(strings(&p["capabilities"]["permitted"]), bounding);
    assert!(strings(&p["capabilities"]["ambient"]).is_empty());
    assert!(strings(&p["capabilities"]["inheritable"]).is_empty());
    // Nothing from the builder's defaults leaks in.
    assert!(p.get("apparmorProfile").is_none());
    assert!(
        spec.get("annotations")
            .is_none_or(|a| a.as_object().is_some_and(|o| o.is_empty()))
    );

    assert_eq!(namespaces(&spec), ["pid", "ipc", "uts", "mount", "network"]);
    let linux = &spec["linux"];
    assert_eq!(linux["cgroupsPath"], "/buildkit/c1");
    assert!(strings(&linux["maskedPaths"]).contains(&"/proc/kcore".to_string()));
    assert!(strings(&linux["readonlyPaths"]).contains(&"/proc/sys".to_string()));
    assert_eq!(
        linux["resources"]["devices"],
        serde_json::json!([{"allow": false, "access": "rwm"}])
    );

    let dests: Vec<&str> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/etc/resolv.conf",
            "/etc/hosts",
            "/sys/fs/cgroup"
        ]
    );
    assert!(strings(&mount(&spec, "/sys").unwrap()["options"]).contains(&"ro".to_string()));
    assert!(
        strings(&mount(&spec, "/sys/fs/cgroup").unwrap()["options"]).contains(&"ro".to_string())
    );
    let hosts = mount(&spec, "/etc/hosts").unwrap();
    assert_eq!(hosts["source"], "/state/c1/hosts");
    assert_eq!(hosts["type"], "bind");
    assert!(strings(&hosts["options"]).contains(&"ro".to_string()));
    assert_eq!(
        mount(&spec, "/etc/resolv.conf").unwrap()["source"],
        "/state/c1/resolv.conf"
    );
}

#[test]
fn host_network_keeps_the_host_namespace_and_cgroupns_follows_the_host() {
    let mut req = request();
    req.network = NetworkMode::Host;
    let spec = json(&req, Vec::new(), &facts());
    assert_eq!(namespaces(&spec), ["pid", "ipc", "uts", "mount"]);
    let mut f = facts();
    f.cgroup_ns = true;
    let spec = json(&request(), Vec::new(), &f);
    assert_eq!(
        namespaces(&spec),
        ["pid", "ipc", "uts", "mount", "network", "cgroup"]
    );
}

#[test]
fn insecure_gets_every_capability_and_writable_sysfs() {
    let mut req = request();
    req.security = SecurityMode::Insecure;
    req.readonly_rootfs = true;
    req.hostname = "box".into();
    let spec = json(&req, Vec::new(), &facts());
    let c = &spec["process"]["capabilities"];
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        let caps = strings(&c[set]);
        assert_eq!(caps.len(), 41, "{set}: {caps:?}");
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }
    assert_eq!(spec["process"]["noNewPrivileges"], false);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["hostname"], "box");
    assert!(strings(&spec["linux"]["maskedPaths"]).is_empty());
    assert!(strings(&spec["linux"]["readonlyPaths"]).is_empty());
    assert!(!strings(&mount(&spec, "/sys").unwrap()["options"]).contains(&"ro".to_string()));
    assert!(
        !strings(&mount(&spec, "/sys/fs/cgroup").unwrap()["options"]).contains(&"ro".to_string())
    );
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        serde_json::json!([
            {"allow": true, "type": "c", "access": "rwm"},
            {"allow": true, "type": "b", "access": "rwm"}
        ])
    );
}

#[test]
fn extra_mounts_follow_in_order_and_replace_same_destination() {
    let mut req = request();
    req.mounts = vec![ExtraMount {
        dest: "/scratch".into(),
        source: MountSource::Tmpfs {
            size: Some(1 << 20),
        },
    }];
    let extra = vec![
        SpecMount::tmpfs(Path::new("/scratch"), Some(1 << 20)),
        SpecMount::bind(Path::new("/data"), Path::new("/host/data"), true),
        SpecMount::bind(Path::new("/etc/hosts"), Path::new("/my/hosts"), true),
    ];
    let spec = json(&req, extra, &facts());
    let all = spec["mounts"].as_array().unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[7]["source"], "/my/hosts", "replaced in place");
    assert_eq!(all[9]["destination"], "/scratch");
    assert_eq!(all[9]["type"], "tmpfs");
    assert_eq!(
        all[9]["options"],
        serde_json::json!(["nosuid", "size=1048576"])
    );
    assert_eq!(all[10]["destination"], "/data");
    assert_eq!(all[10]["options"], serde_json::json!(["rbind", "ro"]));
    assert_eq!(all[10]["source"], "/host/data");
}

#[test]
fn no_new_privileges_can_be_turned_off() {
    let req = request();
    let user = user();
    let f = facts();
    let input = SpecInput {
        req: &req,
        rootfs: Path::new("/r"),
        user: &user,
        hosts_file: Path::new("/h"),
        resolv_conf: Path::new("/rc"),
        extra_mounts: Vec::new(),
        host: &f,
        no_new_privileges: false,
    };
    let spec = serde_json::to_value(generate(&input).unwrap()).unwrap();
    assert_eq!(spec["process"]["noNewPrivileges"], false);
}
