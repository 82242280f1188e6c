//! Marshal → load round trips over every op kind, determinism, and the loader's errors.

use std::net::{IpAddr, Ipv4Addr};

use llb::pb;
use llb::{
    CacheSharing, Chmod, CopyOptions, FileAction, LoadError, LoadedDefinition, MarshalOptions,
    MkdirOptions, MkfileOptions, Mount, NetMode, OpOptions, Owner, Platform, ProxyEnv, RmOptions,
    Secret, SecurityMode, Ssh, State, SymlinkOptions, diff, digest_of, merge,
};
use proptest::prelude::*;
use prost::Message;

fn opts() -> MarshalOptions {
    MarshalOptions {
        platform: Some(Platform::new("linux", "amd64", "")),
        local_unique_id: Some("fixeduniqueid0000000000000".into()),
        ..MarshalOptions::default()
    }
}

/// A graph with every source kind, every exec feature, every file action, merge and diff.
fn everything() -> State {
    let base = llb::Image::new("busybox:1.36")
        .resolve_mode(llb::ResolveMode::ForcePull)
        .options(OpOptions::new().custom_name("base image"))
        .state()
        .env("PATH", "/bin")
        .dir("/work");
    let ctx = llb::Local::new("context")
        .exclude_patterns(["*.tmp"])
        .include_patterns(["src/"])
        .state();
    let repo = llb::Git::new("https://github.com/moby/buildkit.git", "v0.32.2:docs")
        .keep_git_dir()
        .state();
    let file = llb::Http::new("https://example.com/a.tar")
        .checksum("sha256:0000000000000000000000000000000000000000000000000000000000000000")
        .filename("a.tar")
        .perm(0o600)
        .state();

    let exec = base
        .run()
        .shell("make")
        .env("CC", "cc")
        .user("1000:1000")
        .hostname("builder")
        .network(NetMode::Host)
        .security(SecurityMode::Insecure)
        .add_extra_host("db", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
        .valid_exit_codes(&[0, 1])
        .proxy_env(ProxyEnv {
            http_proxy: "http://proxy:3128".into(),
            ..ProxyEnv::default()
        })
        .mount(Mount::bind("/src", &ctx).readonly().selector("/src"))
        .mount(Mount::bind("/repo", &repo))
        .mount(Mount::cache("/root/.cache", "go", CacheSharing::Private).source(&file))
        .mount(Mount::tmpfs("/tmp").size(64 << 20))
        .mount(Mount::scratch("/out"))
        .secret(Secret::file("token", "/run/secrets/token").owner(1000, 1000))
        .secret(Secret::env("api", "API_KEY").optional())
        .ssh(Ssh::new("default"))
        .options(OpOptions::new().ignore_cache().custom_name("compile"))
        .build();
    let out = exec.mount("/out").expect("scratch mount is an output");
    let root = exec.root();

    let chain = FileAction::mkdir(
        "/etc/app",
        0o755,
        MkdirOptions {
            parents: true,
            owner: Some(Owner::parse("app:app")),
            created: Some(0),
        },
    )
    .and_mkfile(
        "/etc/app/conf",
        0o644,
        b"k=v\n".to_vec(),
        MkfileOptions::default(),
    )
    .and_symlink("/etc/app/conf", "/etc/app/link", SymlinkOptions::default())
    .and_rm(
        "/tmp/*",
        RmOptions {
            allow_not_found: true,
            allow_wildcard: true,
        },
    )
    .and_copy(
        &out,
        "bin/",
        "/usr/local/bin/",
        CopyOptions {
            mode: Some(Chmod::Symbolic("u+x".into())),
            include_patterns: vec!["*".into()],
            exclude_patterns: vec!["*.o".into()],
            always_replace_existing_dest_paths: true,
            owner: Some(Owner::ids(0, 0)),
            ..CopyOptions::default()
        },
    );
    // a nested chain as a copy source, bound to another state
    let nested = FileAction::mkfile("/generated", 0o600, b"x".to_vec(), MkfileOptions::default())
        .with_state(&llb::scratch());
    let chain = chain.and_copy(
        llb::CopySource::Actions(nested),
        "/generated",
        "/etc/generated",
        CopyOptions::default(),
    );
    let configured = root.file(&chain, OpOptions::new().custom_name("configure"));
    let layer = diff(&base, &configured, OpOptions::new());
    merge(
        &[base.clone(), layer, llb::scratch()],
        OpOptions::new().worker_constraint("labels.x==y"),
    )
}

fn kinds(def: &LoadedDefinition) -> Vec<&'static str> {
    def.topological()
        .iter()
        .map(|o| match o.op.op.as_ref().unwrap() {
            pb::op::Op::Exec(_) => "exec",
            pb::op::Op::Source(_) => "source",
            pb::op::Op::File(_) => "file",
            pb::op::Op::Build(_) => "build",
            pb::op::Op::Merge(_) => "merge",
            pb::op::Op::Diff(_) => "diff",
            pb::op::Op::Passthrough(_) => "passthrough",
        })
        .collect()
}

#[test]
fn every_op_kind_round_trips() {
    let def = everything().marshal(&opts()).unwrap();
    let bytes = def.encode_to_vec();
    let loaded = LoadedDefinition::from_bytes(&bytes).unwrap();
    let k = kinds(&loaded);
    for kind in ["source", "exec", "file", "merge", "diff"] {
        assert!(k.contains(&kind), "{kind} missing from {k:?}");
    }
    assert_eq!(k.iter().filter(|k| **k == "source").count(), 4);
    assert_eq!(loaded.ops.len() + 1, def.def.len());
    for op in loaded.ops.values() {
        assert_eq!(op.digest, digest_of(&op.bytes));
        // re-encoding the decoded op gives back the received bytes
        assert_eq!(op.op.encode_to_vec(), op.bytes);
    }
    // the head is the merge, and ops come inputs-first
    assert_eq!(loaded.head.digest, *loaded.order.last().unwrap());
    for (i, d) in loaded.order.iter().enumerate() {
        for inp in &loaded.ops[d].op.inputs {
            let pos = loaded.order.iter().position(|x| *x == inp.digest).unwrap();
            assert!(pos < i, "input after its user");
        }
    }
    let exec = loaded
        .ops
        .values()
        .find(|o| matches!(o.op.op, Some(pb::op::Op::Exec(_))))
        .unwrap();
    assert!(exec.metadata.ignore_cache);
    assert_eq!(exec.metadata.description["llb.customname"], "compile");
    for cap in [
        "exec.meta.base",
        "exec.meta.network",
        "exec.meta.security",
        "exec.meta.proxyenv",
        "exec.mount.cache",
        "exec.mount.tmpfs.size",
        "exec.mount.secret",
        "exec.secretenv",
        "exec.mount.ssh",
        "exec.mount.selector",
        "exec.validexitcode",
    ] {
        assert_eq!(exec.metadata.caps.get(cap), Some(&true), "{cap}");
    }
    let Some(pb::op::Op::Exec(e)) = &exec.op.op else {
        unreachable!()
    };
    let dests: Vec<&str> = e.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(
        dests,
        [
            "/",
            "/out",
            "/repo",
            "/root/.cache",
            "/src",
            "/tmp",
            "/run/secrets/token",
            "/run/buildkit/ssh_agent.0"
        ]
    );
    let outputs: Vec<i64> = e.mounts.iter().map(|m| m.output).collect();
    // secret and ssh mounts keep output 0, as upstream's encoder leaves them
    assert_eq!(outputs, [0, 1, 2, -1, -1, -1, 0, 0]);
    let meta = e.meta.as_ref().unwrap();
    assert!(
        meta.env
            .contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string())
    );
    assert_eq!(meta.cwd, "/work");
    let term = &loaded.terminal.metadata.caps;
    for cap in [
        "constraints",
        "platform",
        "meta.ignorecache",
        "meta.description",
    ] {
        assert_eq!(term.get(cap), Some(&true), "{cap}");
    }
}

#[test]
fn file_chain_indexes_follow_upstream_rules() {
    let def = everything().marshal(&opts()).unwrap();
    let loaded = LoadedDefinition::from_bytes(&def.encode_to_vec()).unwrap();
    let file = loaded
        .ops
        .values()
        .find_map(|o| match &o.op.op {
            Some(pb::op::Op::File(f)) if f.actions.len() > 2 => Some((o, f)),
            _ => None,
        })
        .unwrap();
    let (op, f) = file;
    let n = op.op.inputs.len() as i64;
    // mkdir on the input; each later action on the previous action's result
    assert_eq!(f.actions[0].input, 0);
    for (i, a) in f.actions.iter().enumerate().skip(1) {
        if matches!(a.action, Some(pb::file_action::Action::Mkfile(ref m)) if m.path == "/generated")
        {
            assert_eq!(a.input, -1, "nested chain starts on scratch");
            continue;
        }
        let prev = if i == f.actions.len() - 1 {
            i - 2
        } else {
            i - 1
        };
        assert_eq!(a.input, n + prev as i64, "action {i}");
    }
    let outputs: Vec<i64> = f.actions.iter().map(|a| a.output).collect();
    assert_eq!(*outputs.last().unwrap(), 0);
    assert!(outputs[..outputs.len() - 1].iter().all(|o| *o == -1));
    let last = f.actions.last().unwrap();
    assert_eq!(last.secondary_input, n + (f.actions.len() as i64 - 2));
}

#[test]
fn marshal_is_byte_identical_across_runs() {
    let a = everything().marshal(&opts()).unwrap().encode_to_vec();
    let b = everything().marshal(&opts()).unwrap().encode_to_vec();
    assert_eq!(a, b);
}

/// A small random graph description, built twice from scratch.
#[derive(Debug, Clone)]
enum Step {
    Run(Vec<String>, Vec<(String, String)>),
    Mkdir(String),
    Mkfile(String, Vec<u8>),
    CopyFromContext(String, String),
    Workdir(String),
    Merge,
}

fn step() -> impl Strategy<Value = Step> {
    let word = "[a-zA-Z0-9_./-]{1,12}";
    prop_oneof![
        (
            prop::collection::vec(word, 1..4),
            prop::collection::vec((("[A-Z]{1,4}"), word), 0..3)
        )
            .prop_map(|(a, e)| Step::Run(a, e)),
        word.prop_map(Step::Mkdir),
        (word, prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(p, d)| Step::Mkfile(p, d)),
        (word, word).prop_map(|(s, d)| Step::CopyFromContext(s, d)),
        word.prop_map(Step::Workdir),
        Just(Step::Merge),
    ]
}

fn build(steps: &[Step]) -> State {
    let ctx = llb::local("context");
    let mut st = llb::image("busybox");
    for s in steps {
        st = match s {
            Step::Run(args, env) => {
                let mut e = st.run().args(args.clone());
                for (k, v) in env {
                    e = e.env(k, v);
                }
                e.build().root()
            }
            Step::Mkdir(p) => st.file(
                &FileAction::mkdir(p, 0o755, MkdirOptions::default()),
                OpOptions::new(),
            ),
            Step::Mkfile(p, d) => st.file(
                &FileAction::mkfile(p, 0o644, d.clone(), MkfileOptions::default()),
                OpOptions::new(),
            ),
            Step::CopyFromContext(src, dst) => st.file(
                &FileAction::copy(&ctx, src, dst, CopyOptions::default()),
                OpOptions::new(),
            ),
            Step::Workdir(d) => st.dir(d),
            Step::Merge => merge(&[st.clone(), ctx.clone()], OpOptions::new()),
        };
    }
    st
}

proptest! {
    #[test]
    fn same_builder_input_gives_identical_definitions(steps in prop::collection::vec(step(), 1..12)) {
        let a = build(&steps).marshal(&opts()).unwrap().encode_to_vec();
        let b = build(&steps).marshal(&opts()).unwrap().encode_to_vec();
        prop_assert_eq!(&a, &b);
        let loaded = LoadedDefinition::from_bytes(&a).unwrap();
        for op in loaded.ops.values() {
            prop_assert_eq!(&op.digest, &digest_of(&op.bytes));
        }
    }

    #[test]
    fn loader_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = LoadedDefinition::from_bytes(&bytes);
    }

    #[test]
    fn loader_never_panics_on_mutated_definitions(
        steps in prop::collection::vec(step(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = build(&steps).marshal(&opts()).unwrap().encode_to_vec();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        let _ = LoadedDefinition::from_bytes(&bytes);
    }
}

fn valid_def() -> pb::Definition {
    llb::image("busybox")
        .run()
        .shell("true")
        .build()
        .root()
        .marshal(&opts())
        .unwrap()
}

fn terminal_to(digest: &str) -> Vec<u8> {
    pb::Op {
        inputs: vec![pb::Input {
            digest: digest.into(),
            index: 0,
        }],
        ..pb::Op::default()
    }
    .encode_to_vec()
}

#[test]
fn malformed_definitions_give_distinct_errors() {
    // not protobuf at all
    let e = LoadedDefinition::from_bytes(&[0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(e, LoadError::Decode(_)), "{e}");

    // empty
    let e = LoadedDefinition::load(pb::Definition::default()).unwrap_err();
    assert_eq!(e, LoadError::Empty);

    // an op that is not an Op
    let mut d = valid_def();
    d.def[0] = vec![0x0a, 0x05, 0x01];
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(matches!(e, LoadError::BadOp { index: 0, .. }), "{e}");

    // no terminal: drop it
    let mut d = valid_def();
    d.def.pop();
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(matches!(e, LoadError::MissingTerminal { .. }), "{e}");

    // dangling input: the terminal points at an op that is not there
    let mut d = valid_def();
    *d.def.last_mut().unwrap() =
        terminal_to("sha256:1111111111111111111111111111111111111111111111111111111111111111");
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(matches!(e, LoadError::DanglingInput { .. }), "{e}");

    // an output index the op does not have
    let mut d = valid_def();
    let exec_digest = digest_of(&d.def[1]);
    let mut t = pb::Op::decode(d.def.last().unwrap().as_slice()).unwrap();
    t.inputs[0] = pb::Input {
        digest: exec_digest,
        index: 5,
    };
    *d.def.last_mut().unwrap() = t.encode_to_vec();
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(
        matches!(e, LoadError::BadOutputIndex { index: 5, .. }),
        "{e}"
    );

    // a capability we do not know
    let mut d = valid_def();
    let first = digest_of(&d.def[0]);
    d.metadata
        .get_mut(&first)
        .unwrap()
        .caps
        .insert("exec.teleport".into(), true);
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(
        matches!(&e, LoadError::UnknownCap { cap, .. } if cap == "exec.teleport"),
        "{e}"
    );
    assert!(e.to_string().contains("exec.teleport"));

    // an exec without a root mount
    let mut d = valid_def();
    let mut exec = pb::Op::decode(d.def[1].as_slice()).unwrap();
    if let Some(pb::op::Op::Exec(e)) = &mut exec.op {
        e.mounts[0].dest = "/x".into();
    }
    d.def[1] = exec.encode_to_vec();
    let new_digest = digest_of(&d.def[1]);
    *d.def.last_mut().unwrap() = terminal_to(&new_digest);
    let e = LoadedDefinition::load(d).unwrap_err();
    assert!(matches!(e, LoadError::InvalidOp { .. }), "{e}");
    assert!(e.to_string().contains("root mount"));
}

#[test]
fn builder_errors_surface_at_marshal() {
    let e = llb::image("Not A Ref").marshal(&opts()).unwrap_err();
    assert!(e.to_string().contains("Not A Ref"), "{e}");
    let e = llb::image("busybox")
        .run()
        .build()
        .root()
        .marshal(&opts())
        .unwrap_err();
    assert!(e.to_string().contains("no command"), "{e}");
    let e = llb::image("busybox")
        .run()
        .shell("x")
        .mount(Mount::tmpfs("/t").source(&llb::image("busybox")))
        .build()
        .root()
        .marshal(&opts())
        .unwrap_err();
    assert!(e.to_string().contains("tmpfs"), "{e}");
}
