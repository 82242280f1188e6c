//! The JSON shapes of the `pb` messages: upstream's Go structs (field names from their json
//! tags, field order, `omitempty`) and its custom `MarshalJSON`s for `Op`, `FileAction` and
//! `UserOpt`, written with the `encoding/json` rules of [`super::gojson`].

use std::collections::BTreeMap;

use proto::pb;

use super::Vertex;
use super::gojson::{Base64, GoJson, Obj};

/// The JSON of one `pb.Op` with upstream's custom shape (the oneof under `"Op"`).
pub fn op_json(op: &pb::Op) -> String {
    let mut out = String::new();
    op.write_json(&mut out);
    out
}

/// The JSON of one `pb.OpMetadata`.
pub fn op_metadata_json(metadata: &pb::OpMetadata) -> String {
    let mut out = String::new();
    metadata.write_json(&mut out);
    out
}

/// `{"Op":…,"Digest":…,"OpMetadata":…}` for one vertex (upstream's `llbOp` struct).
pub(super) fn vertex(v: &Vertex) -> String {
    let mut out = String::new();
    let mut obj = Obj::open(&mut out);
    obj.always("Op", &v.op);
    obj.always("Digest", &v.digest);
    // Upstream looks the digest up in a map of plain structs and converts the (possibly
    // zero) value, so a missing entry prints `{}`.
    obj.always("OpMetadata", v.metadata.as_ref().unwrap_or(&EMPTY_METADATA));
    obj.close();
    out
}

static EMPTY_METADATA: pb::OpMetadata = pb::OpMetadata {
    ignore_cache: false,
    description: BTreeMap::new(),
    export_cache: None,
    caps: BTreeMap::new(),
    progress_group: None,
    linux_resources: None,
};

// ---- messages -------------------------------------------------------------------------------
//
// Field names and order follow the Go structs generated from upstream's ops.proto (their
// `json:"…,omitempty"` tags), not the proto3 JSON mapping.

impl GoJson for pb::Op {
    fn write_json(&self, out: &mut String) {
        use pb::op::Op;
        let mut obj = Obj::open(out);
        obj.list("inputs", &self.inputs);
        // Upstream's MarshalJSON puts the oneof in an untagged struct field `Op`, so the key
        // is always there, `{}` for the terminal op.
        let mut inner = obj.nested("Op");
        match &self.op {
            Some(Op::Exec(v)) => inner.always("exec", v),
            Some(Op::Source(v)) => inner.always("source", v),
            Some(Op::File(v)) => inner.always("file", v),
            Some(Op::Build(v)) => inner.always("build", v),
            Some(Op::Merge(v)) => inner.always("merge", v),
            Some(Op::Diff(v)) => inner.always("diff", v),
            Some(Op::Passthrough(v)) => inner.always("passthrough", v),
            None => {}
        }
        inner.close();
        obj.opt("platform", self.platform.as_ref());
        obj.opt("constraints", self.constraints.as_ref());
        obj.close();
    }
}

impl GoJson for pb::Platform {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("Architecture", &self.architecture);
        obj.str("OS", &self.os);
        obj.str("Variant", &self.variant);
        obj.str("OSVersion", &self.os_version);
        obj.list("OSFeatures", &self.os_features);
        obj.close();
    }
}

impl GoJson for pb::Input {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("digest", &self.digest);
        obj.num("index", self.index);
        obj.close();
    }
}

impl GoJson for pb::ExecOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.opt("meta", self.meta.as_ref());
        obj.list("mounts", &self.mounts);
        obj.num("network", self.network);
        obj.num("security", self.security);
        obj.list("secretenv", &self.secretenv);
        obj.list("cdiDevices", &self.cdi_devices);
        obj.close();
    }
}

impl GoJson for pb::Meta {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.list("args", &self.args);
        obj.list("env", &self.env);
        obj.str("cwd", &self.cwd);
        obj.str("user", &self.user);
        obj.opt("proxy_env", self.proxy_env.as_ref());
        obj.list("extraHosts", &self.extra_hosts);
        obj.str("hostname", &self.hostname);
        obj.list("ulimit", &self.ulimit);
        obj.str("cgroupParent", &self.cgroup_parent);
        obj.bool(
            "removeMountStubsRecursive",
            self.remove_mount_stubs_recursive,
        );
        obj.list("validExitCodes", &self.valid_exit_codes);
        obj.close();
    }
}

impl GoJson for pb::HostIp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("Host", &self.host);
        obj.str("IP", &self.ip);
        obj.close();
    }
}

impl GoJson for pb::Ulimit {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("Name", &self.name);
        obj.num("Soft", self.soft);
        obj.num("Hard", self.hard);
        obj.close();
    }
}

impl GoJson for pb::SecretEnv {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("ID", &self.id);
        obj.str("name", &self.name);
        obj.bool("optional", self.optional);
        obj.close();
    }
}

impl GoJson for pb::CdiDevice {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("name", &self.name);
        obj.bool("optional", self.optional);
        obj.close();
    }
}

impl GoJson for pb::Mount {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("input", self.input);
        obj.str("selector", &self.selector);
        obj.str("dest", &self.dest);
        obj.num("output", self.output);
        obj.bool("readonly", self.readonly);
        obj.num("mountType", self.mount_type);
        obj.opt("TmpfsOpt", self.tmpfs_opt.as_ref());
        obj.opt("cacheOpt", self.cache_opt.as_ref());
        obj.opt("secretOpt", self.secret_opt.as_ref());
        obj.opt("SSHOpt", self.ssh_opt.as_ref());
        obj.str("resultID", &self.result_id);
        obj.num("contentCache", self.content_cache);
        obj.close();
    }
}

impl GoJson for pb::TmpfsOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("size", self.size);
        obj.close();
    }
}

impl GoJson for pb::CacheOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("ID", &self.id);
        obj.num("sharing", self.sharing);
        obj.close();
    }
}

impl GoJson for pb::SecretOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("ID", &self.id);
        obj.num("uid", self.uid);
        obj.num("gid", self.gid);
        obj.num("mode", self.mode);
        obj.bool("optional", self.optional);
        obj.close();
    }
}

impl GoJson for pb::SshOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("ID", &self.id);
        obj.num("uid", self.uid);
        obj.num("gid", self.gid);
        obj.num("mode", self.mode);
        obj.bool("optional", self.optional);
        obj.close();
    }
}

impl GoJson for pb::SourceOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("identifier", &self.identifier);
        obj.map("attrs", &self.attrs);
        obj.close();
    }
}

impl GoJson for pb::BuildOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("builder", self.builder);
        obj.map("inputs", &self.inputs);
        obj.opt("def", self.def.as_ref());
        obj.map("attrs", &self.attrs);
        obj.close();
    }
}

impl GoJson for pb::BuildInput {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("input", self.input);
        obj.close();
    }
}

impl GoJson for pb::OpMetadata {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.bool("ignore_cache", self.ignore_cache);
        obj.map("description", &self.description);
        obj.opt("export_cache", self.export_cache.as_ref());
        obj.map("caps", &self.caps);
        obj.opt("progress_group", self.progress_group.as_ref());
        obj.opt("linux_resources", self.linux_resources.as_ref());
        obj.close();
    }
}

impl GoJson for pb::Source {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.map("locations", &self.locations);
        obj.list("infos", &self.infos);
        obj.close();
    }
}

impl GoJson for pb::Locations {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.list("locations", &self.locations);
        obj.close();
    }
}

impl GoJson for pb::SourceInfo {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("filename", &self.filename);
        obj.bytes("data", &self.data);
        obj.opt("definition", self.definition.as_ref());
        obj.str("language", &self.language);
        obj.close();
    }
}

impl GoJson for pb::Location {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("sourceIndex", self.source_index);
        obj.list("ranges", &self.ranges);
        obj.close();
    }
}

impl GoJson for pb::Range {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.opt("start", self.start.as_ref());
        obj.opt("end", self.end.as_ref());
        obj.close();
    }
}

impl GoJson for pb::Position {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("line", self.line);
        obj.num("character", self.character);
        obj.close();
    }
}

impl GoJson for pb::ExportCache {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.bool("Value", self.value);
        obj.close();
    }
}

impl GoJson for pb::ProgressGroup {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("id", &self.id);
        obj.str("name", &self.name);
        obj.bool("weak", self.weak);
        obj.close();
    }
}

impl GoJson for pb::LinuxResources {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("memory", self.memory);
        obj.num("memorySwap", self.memory_swap);
        obj.num("cpuShares", self.cpu_shares);
        obj.num("cpuPeriod", self.cpu_period);
        obj.num("cpuQuota", self.cpu_quota);
        obj.str("cpusetCpus", &self.cpuset_cpus);
        obj.str("cpusetMems", &self.cpuset_mems);
        obj.close();
    }
}

impl GoJson for pb::ProxyEnv {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("http_proxy", &self.http_proxy);
        obj.str("https_proxy", &self.https_proxy);
        obj.str("ftp_proxy", &self.ftp_proxy);
        obj.str("no_proxy", &self.no_proxy);
        obj.str("all_proxy", &self.all_proxy);
        obj.close();
    }
}

impl GoJson for pb::WorkerConstraints {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.list("filter", &self.filter);
        obj.close();
    }
}

impl GoJson for pb::Definition {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        if !self.def.is_empty() {
            let def: Vec<Base64<'_>> = self.def.iter().map(|d| Base64(d)).collect();
            obj.always("def", &def);
        }
        obj.map("metadata", &self.metadata);
        obj.opt("Source", self.source.as_ref());
        obj.close();
    }
}

impl GoJson for pb::FileOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.list("actions", &self.actions);
        obj.close();
    }
}

impl GoJson for pb::FileAction {
    fn write_json(&self, out: &mut String) {
        use pb::file_action::Action;
        let mut obj = Obj::open(out);
        // Upstream's MarshalJSON prints the three indexes without omitempty.
        obj.always("input", &self.input);
        obj.always("secondaryInput", &self.secondary_input);
        obj.always("output", &self.output);
        let mut inner = obj.nested("Action");
        match &self.action {
            Some(Action::Copy(v)) => inner.always("copy", v),
            Some(Action::Mkfile(v)) => inner.always("mkfile", v),
            Some(Action::Mkdir(v)) => inner.always("mkdir", v),
            Some(Action::Rm(v)) => inner.always("rm", v),
            // Not in upstream's MarshalJSON (it prints `"Action":{}`); see the module docs.
            Some(Action::Symlink(v)) => inner.always("symlink", v),
            None => {}
        }
        inner.close();
        obj.close();
    }
}

impl GoJson for pb::FileActionCopy {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("src", &self.src);
        obj.str("dest", &self.dest);
        obj.opt("owner", self.owner.as_ref());
        obj.num("mode", self.mode);
        obj.bool("followSymlink", self.follow_symlink);
        obj.bool("dirCopyContents", self.dir_copy_contents);
        obj.bool(
            "attemptUnpackDockerCompatibility",
            self.attempt_unpack_docker_compatibility,
        );
        obj.bool("createDestPath", self.create_dest_path);
        obj.bool("allowWildcard", self.allow_wildcard);
        obj.bool("allowEmptyWildcard", self.allow_empty_wildcard);
        obj.num("timestamp", self.timestamp);
        obj.list("include_patterns", &self.include_patterns);
        obj.list("exclude_patterns", &self.exclude_patterns);
        obj.bool(
            "alwaysReplaceExistingDestPaths",
            self.always_replace_existing_dest_paths,
        );
        obj.str("modeStr", &self.mode_str);
        obj.list("required_paths", &self.required_paths);
        obj.close();
    }
}

impl GoJson for pb::FileActionMkFile {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("path", &self.path);
        obj.num("mode", self.mode);
        obj.bytes("data", &self.data);
        obj.opt("owner", self.owner.as_ref());
        obj.num("timestamp", self.timestamp);
        obj.close();
    }
}

impl GoJson for pb::FileActionSymlink {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("oldpath", &self.oldpath);
        obj.str("newpath", &self.newpath);
        obj.opt("owner", self.owner.as_ref());
        obj.num("timestamp", self.timestamp);
        obj.close();
    }
}

impl GoJson for pb::FileActionMkDir {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("path", &self.path);
        obj.num("mode", self.mode);
        obj.bool("makeParents", self.make_parents);
        obj.opt("owner", self.owner.as_ref());
        obj.num("timestamp", self.timestamp);
        obj.close();
    }
}

impl GoJson for pb::FileActionRm {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("path", &self.path);
        obj.bool("allowNotFound", self.allow_not_found);
        obj.bool("allowWildcard", self.allow_wildcard);
        obj.close();
    }
}

impl GoJson for pb::ChownOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.opt("user", self.user.as_ref());
        obj.opt("group", self.group.as_ref());
        obj.close();
    }
}

impl GoJson for pb::UserOpt {
    fn write_json(&self, out: &mut String) {
        use pb::user_opt::User;
        // Upstream's MarshalJSON: `{"User":{"byName":…}}` or `{"User":{"byId":N}}`, both
        // omitempty, so uid 0 prints `{"User":{}}`.
        let mut obj = Obj::open(out);
        let mut inner = obj.nested("User");
        match &self.user {
            Some(User::ByName(v)) => inner.always("byName", v),
            Some(User::ById(id)) => inner.num("byId", *id),
            None => {}
        }
        inner.close();
        obj.close();
    }
}

impl GoJson for pb::NamedUserOpt {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("name", &self.name);
        obj.num("input", self.input);
        obj.close();
    }
}

impl GoJson for pb::MergeOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.list("inputs", &self.inputs);
        obj.close();
    }
}

impl GoJson for pb::MergeInput {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("input", self.input);
        obj.close();
    }
}

impl GoJson for pb::DiffOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.opt("lower", self.lower.as_ref());
        obj.opt("upper", self.upper.as_ref());
        obj.close();
    }
}

impl GoJson for pb::LowerDiffInput {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("input", self.input);
        obj.close();
    }
}

impl GoJson for pb::UpperDiffInput {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.num("input", self.input);
        obj.close();
    }
}

impl GoJson for pb::PassthroughOp {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.str("id", &self.id);
        obj.list("outputs", &self.outputs);
        obj.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitempty_and_present_empty_messages() {
        let op = pb::Op {
            platform: Some(pb::Platform::default()),
            constraints: Some(pb::WorkerConstraints::default()),
            ..Default::default()
        };
        assert_eq!(op_json(&op), r#"{"Op":{},"platform":{},"constraints":{}}"#);
        assert_eq!(op_json(&pb::Op::default()), r#"{"Op":{}}"#);
    }

    #[test]
    fn file_actions_print_indexes_and_symlink() {
        use pb::file_action::Action;
        let op = pb::Op {
            op: Some(pb::op::Op::File(pb::FileOp {
                actions: vec![
                    pb::FileAction {
                        input: 0,
                        secondary_input: -1,
                        output: 0,
                        action: Some(Action::Mkfile(pb::FileActionMkFile {
                            path: "/f".into(),
                            mode: 0o644,
                            data: b"hi\n".to_vec(),
                            owner: Some(pb::ChownOpt {
                                user: Some(pb::UserOpt {
                                    user: Some(pb::user_opt::User::ById(0)),
                                }),
                                group: Some(pb::UserOpt {
                                    user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
                                        name: "g".into(),
                                        input: 1,
                                    })),
                                }),
                            }),
                            timestamp: 0,
                        })),
                    },
                    pb::FileAction {
                        input: 2,
                        secondary_input: -1,
                        output: -1,
                        action: Some(Action::Symlink(pb::FileActionSymlink {
                            oldpath: "/a".into(),
                            newpath: "/b".into(),
                            ..Default::default()
                        })),
                    },
                ],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&op),
            concat!(
                r#"{"Op":{"file":{"actions":["#,
                r#"{"input":0,"secondaryInput":-1,"output":0,"Action":{"mkfile":{"path":"/f","mode":420,"data":"aGkK","owner":{"user":{"User":{}},"group":{"User":{"byName":{"name":"g","input":1}}}}}}},"#,
                r#"{"input":2,"secondaryInput":-1,"output":-1,"Action":{"symlink":{"oldpath":"/a","newpath":"/b"}}}"#,
                r#"]}}}"#
            )
        );
    }

    #[test]
    fn exec_op_fields() {
        let op = pb::Op {
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["sh".into()],
                    proxy_env: Some(pb::ProxyEnv {
                        http_proxy: "p".into(),
                        ..Default::default()
                    }),
                    extra_hosts: vec![pb::HostIp {
                        host: "h".into(),
                        ip: "1.2.3.4".into(),
                    }],
                    ulimit: vec![pb::Ulimit {
                        name: "nofile".into(),
                        soft: 1,
                        hard: 2,
                    }],
                    valid_exit_codes: vec![0, 1],
                    ..Default::default()
                }),
                mounts: vec![pb::Mount {
                    input: -1,
                    dest: "/s".into(),
                    output: -1,
                    mount_type: 2,
                    ssh_opt: Some(pb::SshOpt {
                        id: "default".into(),
                        mode: 0o600,
                        ..Default::default()
                    }),
                    content_cache: 1,
                    ..Default::default()
                }],
                network: 1,
                security: 1,
                secretenv: vec![pb::SecretEnv {
                    id: "s".into(),
                    name: "S".into(),
                    optional: true,
                }],
                cdi_devices: vec![pb::CdiDevice {
                    name: "v/g=0".into(),
                    optional: false,
                }],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&op),
            concat!(
                r#"{"Op":{"exec":{"meta":{"args":["sh"],"proxy_env":{"http_proxy":"p"},"#,
                r#""extraHosts":[{"Host":"h","IP":"1.2.3.4"}],"ulimit":[{"Name":"nofile","Soft":1,"Hard":2}],"#,
                r#""validExitCodes":[0,1]},"#,
                r#""mounts":[{"input":-1,"dest":"/s","output":-1,"mountType":2,"SSHOpt":{"ID":"default","mode":384},"contentCache":1}],"#,
                r#""network":1,"security":1,"secretenv":[{"ID":"s","name":"S","optional":true}],"#,
                r#""cdiDevices":[{"name":"v/g=0"}]}}}"#
            )
        );
    }

    #[test]
    fn metadata_and_nested_definition() {
        let md = pb::OpMetadata {
            ignore_cache: true,
            description: BTreeMap::from([("llb.customname".into(), "<x>".into())]),
            export_cache: Some(pb::ExportCache { value: false }),
            caps: BTreeMap::from([("b".into(), false), ("a".into(), true)]),
            progress_group: Some(pb::ProgressGroup {
                id: "i".into(),
                name: "n".into(),
                weak: true,
            }),
            linux_resources: Some(pb::LinuxResources {
                memory: 1,
                cpu_shares: 2,
                cpuset_cpus: "0-1".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            op_metadata_json(&md),
            concat!(
                r#"{"ignore_cache":true,"description":{"llb.customname":"\u003cx\u003e"},"#,
                r#""export_cache":{},"caps":{"a":true,"b":false},"#,
                r#""progress_group":{"id":"i","name":"n","weak":true},"#,
                r#""linux_resources":{"memory":1,"cpuShares":2,"cpusetCpus":"0-1"}}"#
            )
        );

        let op = pb::Op {
            op: Some(pb::op::Op::Build(pb::BuildOp {
                builder: -1,
                inputs: BTreeMap::from([("k".into(), pb::BuildInput { input: 0 })]),
                def: Some(pb::Definition {
                    def: vec![vec![1, 2, 3], vec![]],
                    metadata: BTreeMap::from([("d".into(), pb::OpMetadata::default())]),
                    source: Some(pb::Source {
                        locations: BTreeMap::from([(
                            "d".into(),
                            pb::Locations {
                                locations: vec![pb::Location {
                                    source_index: 0,
                                    ranges: vec![pb::Range {
                                        start: Some(pb::Position {
                                            line: 1,
                                            character: 0,
                                        }),
                                        end: None,
                                    }],
                                }],
                            },
                        )]),
                        infos: vec![pb::SourceInfo {
                            filename: "Dockerfile".into(),
                            data: b"FROM x".to_vec(),
                            definition: None,
                            language: "Dockerfile".into(),
                        }],
                    }),
                }),
                attrs: BTreeMap::from([("a".into(), String::new())]),
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&op),
            concat!(
                r#"{"Op":{"build":{"builder":-1,"inputs":{"k":{}},"#,
                r#""def":{"def":["AQID",""],"metadata":{"d":{}},"Source":{"#,
                r#""locations":{"d":{"locations":[{"ranges":[{"start":{"line":1}}]}]}},"#,
                r#""infos":[{"filename":"Dockerfile","data":"RlJPTSB4","language":"Dockerfile"}]}},"#,
                r#""attrs":{"a":""}}}}"#
            )
        );
    }

    #[test]
    fn merge_diff_passthrough() {
        let merge = pb::Op {
            op: Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: vec![pb::MergeInput { input: 0 }, pb::MergeInput { input: 1 }],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&merge),
            r#"{"Op":{"merge":{"inputs":[{},{"input":1}]}}}"#
        );
        let diff = pb::Op {
            op: Some(pb::op::Op::Diff(pb::DiffOp {
                lower: Some(pb::LowerDiffInput { input: 0 }),
                upper: Some(pb::UpperDiffInput { input: 1 }),
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&diff),
            r#"{"Op":{"diff":{"lower":{},"upper":{"input":1}}}}"#
        );
        let pass = pb::Op {
            op: Some(pb::op::Op::Passthrough(pb::PassthroughOp {
                id: "x".into(),
                outputs: vec![0, -1],
            })),
            ..Default::default()
        };
        assert_eq!(
            op_json(&pass),
            r#"{"Op":{"passthrough":{"id":"x","outputs":[0,-1]}}}"#
        );
    }
}
