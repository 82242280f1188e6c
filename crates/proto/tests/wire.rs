//! Wire checks of the Control, session and fsutil protos against upstream BuildKit v0.32.
//!
//! Each test builds a message with (nearly) every field set and compares its encoding with
//! bytes written out by hand from upstream's field numbers and wire types. The expected bytes
//! are built with the tiny encoder below, never with prost, so a wrong field number, a wrong
//! scalar type (e.g. `int64` vs `uint32`) or a wrong nesting shows up as a byte mismatch.
//! Every expected encoding is also decoded back and compared with the original message.

use std::collections::BTreeMap;
use std::fmt::Debug;

use prost::Message;
use proto::prost_types::{Any, Timestamp};
use proto::{
    apicaps, containerd_content, control, filesync, fsutil_types, health, pb, secrets,
    session_exporter, sourcepolicy, sshforward, types, upload,
};

// ---- hand-rolled protobuf encoder -----------------------------------------------------------

/// Wire type 0: varint (int32, int64, uint32, bool, enum).
const VARINT: u8 = 0;
/// Wire type 2: length-delimited (string, bytes, messages, map entries).
const LEN: u8 = 2;

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn tag(field: u32, wire_type: u8) -> Vec<u8> {
    varint((u64::from(field) << 3) | u64::from(wire_type))
}

/// A varint field (negative `int64`/`int32` values are sign-extended to 10 bytes).
fn int(field: u32, v: i64) -> Vec<u8> {
    cat([tag(field, VARINT), varint(v as u64)])
}

fn boolean(field: u32) -> Vec<u8> {
    int(field, 1)
}

fn len_delim(field: u32, payload: &[u8]) -> Vec<u8> {
    cat([
        tag(field, LEN),
        varint(payload.len() as u64),
        payload.to_vec(),
    ])
}

fn s(field: u32, v: &str) -> Vec<u8> {
    len_delim(field, v.as_bytes())
}

/// An embedded message given as its already-encoded fields.
fn msg<const N: usize>(field: u32, fields: [Vec<u8>; N]) -> Vec<u8> {
    len_delim(field, &cat(fields))
}

/// One entry of a `map<string, string>` field.
fn map_ss(field: u32, k: &str, v: &str) -> Vec<u8> {
    msg(field, [s(1, k), s(2, v)])
}

fn cat<const N: usize>(parts: [Vec<u8>; N]) -> Vec<u8> {
    parts.concat()
}

fn ts(field: u32, seconds: i64, nanos: i64) -> Vec<u8> {
    msg(field, [int(1, seconds), int(2, nanos)])
}

fn timestamp(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn smap<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings<const N: usize>(v: [&str; N]) -> Vec<String> {
    v.into_iter().map(String::from).collect()
}

/// Encoding equals `expected`, and `expected` decodes back to the message.
#[track_caller]
fn check<M: Message + Default + PartialEq + Debug>(m: &M, expected: &[u8]) {
    let got = m.encode_to_vec();
    assert_eq!(
        hex::encode(&got),
        hex::encode(expected),
        "encoding of {m:?} differs from the hand-written bytes"
    );
    let back = M::decode(expected).expect("decode hand-written bytes");
    assert_eq!(
        &back, m,
        "decoding the hand-written bytes gives a different message"
    );
}

#[test]
fn helpers_match_literal_bytes() {
    // The helpers themselves, against bytes written out literally.
    assert_eq!(s(1, "abc"), vec![0x0a, 0x03, b'a', b'b', b'c']);
    assert_eq!(tag(16, VARINT), vec![0x80, 0x01]);
    assert_eq!(tag(17, VARINT), vec![0x88, 0x01]);
    assert_eq!(varint(300), vec![0xac, 0x02]);
    assert_eq!(
        int(1, -1),
        vec![
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ]
    );
    check(
        &control::StatusRequest {
            r#ref: "abc".into(),
        },
        &[0x0a, 0x03, b'a', b'b', b'c'],
    );
    check(
        &control::BytesMessage {
            data: vec![0xde, 0xad],
        },
        &[0x0a, 0x02, 0xde, 0xad],
    );
}

// ---- moby.buildkit.v1 (Control) -------------------------------------------------------------

#[test]
fn solve_request() {
    let m = control::SolveRequest {
        r#ref: "ref1".into(),
        definition: Some(pb::Definition {
            def: vec![b"op-a".to_vec(), b"op-b".to_vec()],
            ..Default::default()
        }),
        exporter_deprecated: "image".into(),
        exporter_attrs_deprecated: smap([("name", "x/y")]),
        session: "sess".into(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs: smap([("target", "t"), ("build-arg:A", "1")]),
        cache: Some(control::CacheOptions {
            export_ref_deprecated: "reg/cache".into(),
            import_refs_deprecated: strings(["reg/a", "reg/b"]),
            export_attrs_deprecated: smap([("mode", "max")]),
            exports: vec![control::CacheOptionsEntry {
                r#type: "local".into(),
                attrs: smap([("dest", "/c"), ("mode", "max")]),
            }],
            imports: vec![control::CacheOptionsEntry {
                r#type: "registry".into(),
                attrs: smap([("ref", "r/c")]),
            }],
        }),
        entitlements: strings(["network.host", "security.insecure"]),
        frontend_inputs: [(
            "context".to_string(),
            pb::Definition {
                def: vec![b"ctx".to_vec()],
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        internal: true,
        source_policy: Some(sourcepolicy::Policy {
            version: 1,
            rules: vec![sourcepolicy::Rule {
                action: sourcepolicy::PolicyAction::Convert as i32,
                selector: Some(sourcepolicy::Selector {
                    identifier: "docker-image://a*".into(),
                    match_type: sourcepolicy::MatchType::Regex as i32,
                    constraints: vec![sourcepolicy::AttrConstraint {
                        key: "k".into(),
                        value: "v".into(),
                        condition: sourcepolicy::AttrMatch::Matches as i32,
                    }],
                }),
                updates: Some(sourcepolicy::Update {
                    identifier: "docker-image://b".into(),
                    attrs: smap([("x", "y")]),
                }),
            }],
        }),
        exporters: vec![
            control::Exporter {
                r#type: "local".into(),
                attrs: smap([("dest", "out")]),
            },
            control::Exporter {
                r#type: "tar".into(),
                attrs: BTreeMap::new(),
            },
        ],
        enable_session_exporter: true,
        source_policy_session: "sps".into(),
        compatibility_version: 20,
        proxy_network: true,
    };
    let expected = cat([
        s(1, "ref1"),
        msg(2, [s(1, "op-a"), s(1, "op-b")]),
        s(3, "image"),
        map_ss(4, "name", "x/y"),
        s(5, "sess"),
        s(6, "dockerfile.v0"),
        // map keys sorted: "build-arg:A" < "target"
        map_ss(7, "build-arg:A", "1"),
        map_ss(7, "target", "t"),
        msg(
            8,
            [
                s(1, "reg/cache"),
                s(2, "reg/a"),
                s(2, "reg/b"),
                map_ss(3, "mode", "max"),
                msg(
                    4,
                    [
                        s(1, "local"),
                        map_ss(2, "dest", "/c"),
                        map_ss(2, "mode", "max"),
                    ],
                ),
                msg(5, [s(1, "registry"), map_ss(2, "ref", "r/c")]),
            ],
        ),
        s(9, "network.host"),
        s(9, "security.insecure"),
        msg(10, [s(1, "context"), msg(2, [s(1, "ctx")])]),
        boolean(11),
        msg(
            12,
            [
                int(1, 1),
                msg(
                    2,
                    [
                        int(1, 2), // CONVERT
                        msg(
                            2,
                            [
                                s(1, "docker-image://a*"),
                                int(2, 2),                                 // REGEX
                                msg(3, [s(1, "k"), s(2, "v"), int(3, 2)]), // MATCHES
                            ],
                        ),
                        msg(3, [s(1, "docker-image://b"), map_ss(2, "x", "y")]),
                    ],
                ),
            ],
        ),
        msg(13, [s(1, "local"), map_ss(2, "dest", "out")]),
        msg(13, [s(1, "tar")]),
        boolean(14),
        s(15, "sps"),
        int(16, 20),
        boolean(17),
    ]);
    check(&m, &expected);
}

#[test]
fn solve_response() {
    let m = control::SolveResponse {
        exporter_response: smap([("containerimage.digest", "sha256:ab"), ("image.name", "x")]),
    };
    let expected = cat([
        map_ss(1, "containerimage.digest", "sha256:ab"),
        map_ss(1, "image.name", "x"),
    ]);
    check(&m, &expected);
}

#[test]
fn status_response() {
    let m = control::StatusResponse {
        vertexes: vec![control::Vertex {
            digest: "sha256:v1".into(),
            inputs: strings(["sha256:i1", "sha256:i2"]),
            name: "[1/2] RUN make".into(),
            cached: true,
            started: timestamp(1_700_000_000, 5),
            completed: timestamp(1_700_000_001, 0),
            error: "boom".into(),
            progress_group: Some(pb::ProgressGroup {
                id: "g".into(),
                name: "group".into(),
                weak: true,
            }),
        }],
        statuses: vec![control::VertexStatus {
            id: "sha256:layer".into(),
            vertex: "sha256:v1".into(),
            name: "downloading".into(),
            current: 1024,
            total: 4096,
            timestamp: timestamp(10, 1),
            started: timestamp(9, 0),
            completed: timestamp(11, 999_999_999),
        }],
        logs: vec![control::VertexLog {
            vertex: "sha256:v1".into(),
            timestamp: timestamp(12, 0),
            stream: 2,
            msg: b"err\n".to_vec(),
        }],
        warnings: vec![control::VertexWarning {
            vertex: "sha256:v1".into(),
            level: 1,
            short: b"short".to_vec(),
            detail: vec![b"d1".to_vec(), b"d2".to_vec()],
            url: "https://docs".into(),
            info: Some(pb::SourceInfo {
                filename: "Dockerfile".into(),
                data: b"FROM x".to_vec(),
                definition: None,
                language: "Dockerfile".into(),
            }),
            ranges: vec![pb::Range {
                start: Some(pb::Position {
                    line: 1,
                    character: 0,
                }),
                end: Some(pb::Position {
                    line: 2,
                    character: 3,
                }),
            }],
        }],
    };
    let expected = cat([
        msg(
            1,
            [
                s(1, "sha256:v1"),
                s(2, "sha256:i1"),
                s(2, "sha256:i2"),
                s(3, "[1/2] RUN make"),
                boolean(4),
                ts(5, 1_700_000_000, 5),
                msg(6, [int(1, 1_700_000_001)]), // nanos = 0 omitted
                s(7, "boom"),
                msg(8, [s(1, "g"), s(2, "group"), boolean(3)]),
            ],
        ),
        msg(
            2,
            [
                s(1, "sha256:layer"),
                s(2, "sha256:v1"),
                s(3, "downloading"),
                int(4, 1024),
                int(5, 4096),
                ts(6, 10, 1),
                msg(7, [int(1, 9)]),
                ts(8, 11, 999_999_999),
            ],
        ),
        msg(
            3,
            [
                s(1, "sha256:v1"),
                msg(2, [int(1, 12)]),
                int(3, 2),
                s(4, "err\n"),
            ],
        ),
        msg(
            4,
            [
                s(1, "sha256:v1"),
                int(2, 1),
                s(3, "short"),
                s(4, "d1"),
                s(4, "d2"),
                s(5, "https://docs"),
                msg(6, [s(1, "Dockerfile"), s(2, "FROM x"), s(4, "Dockerfile")]),
                // Position{line: 1, character: 0}: character omitted
                msg(7, [msg(1, [int(1, 1)]), msg(2, [int(1, 2), int(2, 3)])]),
            ],
        ),
    ]);
    check(&m, &expected);
}

fn usage_record() -> (control::UsageRecord, Vec<u8>) {
    #[allow(deprecated)]
    let m = control::UsageRecord {
        id: "rec1".into(),
        mutable: true,
        in_use: true,
        size: 1 << 40,
        parent: "p0".into(),
        created_at: timestamp(100, 0),
        last_used_at: timestamp(200, 7),
        usage_count: 3,
        description: "mount / from exec".into(),
        record_type: "exec.cachemount".into(),
        shared: true,
        parents: strings(["p1", "p2"]),
    };
    let expected = cat([
        s(1, "rec1"),
        boolean(2),
        boolean(3),
        int(4, 1 << 40),
        s(5, "p0"),
        msg(6, [int(1, 100)]),
        ts(7, 200, 7),
        int(8, 3),
        s(9, "mount / from exec"),
        s(10, "exec.cachemount"),
        boolean(11),
        s(12, "p1"),
        s(12, "p2"),
    ]);
    (m, expected)
}

#[test]
fn usage_record_and_disk_usage() {
    let (rec, rec_bytes) = usage_record();
    check(&rec, &rec_bytes);
    check(
        &control::DiskUsageResponse { record: vec![rec] },
        &len_delim(1, &rec_bytes),
    );
    check(
        &control::DiskUsageRequest {
            filter: strings(["type==regular"]),
            age_limit: 3_600_000_000_000,
        },
        &cat([s(1, "type==regular"), int(2, 3_600_000_000_000)]),
    );
}

#[test]
fn prune_request() {
    let m = control::PruneRequest {
        filter: strings(["until=24h", "type==source.local"]),
        all: true,
        keep_duration: 172_800_000_000_000,
        reserved_space: 10 << 30,
        max_used_space: 100 << 30,
        min_free_space: 20 << 30,
    };
    let expected = cat([
        s(1, "until=24h"),
        s(1, "type==source.local"),
        boolean(2),
        int(3, 172_800_000_000_000),
        int(4, 10 << 30),
        int(5, 100 << 30),
        int(6, 20 << 30),
    ]);
    check(&m, &expected);
}

fn buildkit_version() -> (types::BuildkitVersion, Vec<u8>) {
    let m = types::BuildkitVersion {
        package: "github.com/moby/buildkit".into(),
        version: "v0.32.2".into(),
        revision: "abc123".into(),
        dockerfile_version: "1.20.0".into(),
    };
    let expected = cat([
        s(1, "github.com/moby/buildkit"),
        s(2, "v0.32.2"),
        s(3, "abc123"),
        s(4, "1.20.0"),
    ]);
    (m, expected)
}

#[test]
fn worker_record() {
    let (version, version_bytes) = buildkit_version();
    let m = types::WorkerRecord {
        id: "w0".into(),
        labels: smap([
            ("org.mobyproject.buildkit.worker.executor", "oci"),
            ("org.mobyproject.buildkit.worker.snapshotter", "overlayfs"),
        ]),
        platforms: vec![pb::Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: "v7".into(),
            os_version: "10.0".into(),
            os_features: strings(["f1"]),
        }],
        gc_policy: vec![
            types::GcPolicy {
                all: false,
                keep_duration: 172_800_000_000_000,
                reserved_space: 1 << 30,
                filters: strings(["type==source.local", "type==exec.cachemount"]),
                max_used_space: 2 << 30,
                min_free_space: 3 << 30,
            },
            types::GcPolicy {
                all: true,
                ..Default::default()
            },
        ],
        buildkit_version: Some(version),
        cdi_devices: vec![types::CdiDevice {
            name: "vendor.com/gpu=0".into(),
            auto_allow: true,
            annotations: smap([("a", "b")]),
            on_demand: true,
        }],
    };
    let expected = cat([
        s(1, "w0"),
        map_ss(2, "org.mobyproject.buildkit.worker.executor", "oci"),
        map_ss(
            2,
            "org.mobyproject.buildkit.worker.snapshotter",
            "overlayfs",
        ),
        msg(
            3,
            [
                s(1, "arm"),
                s(2, "linux"),
                s(3, "v7"),
                s(4, "10.0"),
                s(5, "f1"),
            ],
        ),
        // GCPolicy: reservedSpace is field 3, filters field 4.
        msg(
            4,
            [
                int(2, 172_800_000_000_000),
                int(3, 1 << 30),
                s(4, "type==source.local"),
                s(4, "type==exec.cachemount"),
                int(5, 2 << 30),
                int(6, 3 << 30),
            ],
        ),
        msg(4, [boolean(1)]),
        len_delim(5, &version_bytes),
        msg(
            6,
            [
                s(1, "vendor.com/gpu=0"),
                boolean(2),
                map_ss(3, "a", "b"),
                boolean(4),
            ],
        ),
    ]);
    check(&m, &expected);
    check(
        &control::ListWorkersResponse { record: vec![m] },
        &len_delim(1, &expected),
    );
    check(
        &control::ListWorkersRequest {
            filter: strings(["id==w0"]),
        },
        &s(1, "id==w0"),
    );
}

#[test]
fn info_response() {
    let (version, version_bytes) = buildkit_version();
    check(
        &control::InfoResponse {
            buildkit_version: Some(version),
        },
        &len_delim(1, &version_bytes),
    );
    check(&control::InfoRequest {}, &[]);
}

#[test]
fn build_history() {
    let desc = |digest: &str| control::Descriptor {
        media_type: "application/json".into(),
        digest: digest.into(),
        size: 42,
        annotations: smap([("k", "v")]),
    };
    // Descriptor skips field number 4.
    let desc_bytes = |field: u32, digest: &str| {
        msg(
            field,
            [
                s(1, "application/json"),
                s(2, digest),
                int(3, 42),
                map_ss(5, "k", "v"),
            ],
        )
    };
    let result = control::BuildResultInfo {
        result_deprecated: Some(desc("sha256:r")),
        attestations: vec![desc("sha256:att")],
        results: [(0_i64, desc("sha256:r0")), (1, desc("sha256:r1"))]
            .into_iter()
            .collect(),
    };
    // map<int64, Descriptor>: key 0 is the default and prost omits it (Go writes `08 00`).
    let result_bytes = |field: u32| {
        msg(
            field,
            [
                desc_bytes(1, "sha256:r"),
                desc_bytes(2, "sha256:att"),
                msg(3, [desc_bytes(2, "sha256:r0")]),
                msg(3, [int(1, 1), desc_bytes(2, "sha256:r1")]),
            ],
        )
    };
    let m = control::BuildHistoryEvent {
        r#type: control::BuildHistoryEventType::Complete as i32,
        record: Some(control::BuildHistoryRecord {
            r#ref: "ref1".into(),
            frontend: "dockerfile.v0".into(),
            frontend_attrs: smap([("filename", "Dockerfile")]),
            exporters: vec![control::Exporter {
                r#type: "image".into(),
                attrs: smap([("push", "true")]),
            }],
            error: Some(proto::google::rpc::Status {
                code: 2,
                message: "failed".into(),
                details: vec![Any {
                    type_url: "type.googleapis.com/x".into(),
                    value: vec![1, 2],
                }],
            }),
            created_at: timestamp(1, 0),
            completed_at: timestamp(2, 0),
            logs: Some(desc("sha256:logs")),
            exporter_response: smap([("containerimage.digest", "sha256:d")]),
            result: Some(result.clone()),
            results: [("linux/amd64".to_string(), result)].into_iter().collect(),
            generation: 3,
            trace: Some(desc("sha256:trace")),
            pinned: true,
            num_cached_steps: 4,
            num_total_steps: 5,
            num_completed_steps: 6,
            external_error: Some(desc("sha256:ext")),
            num_warnings: 7,
        }),
    };
    let expected = cat([
        int(1, 1), // COMPLETE
        msg(
            2,
            [
                s(1, "ref1"),
                s(2, "dockerfile.v0"),
                map_ss(3, "filename", "Dockerfile"),
                msg(4, [s(1, "image"), map_ss(2, "push", "true")]),
                msg(
                    5,
                    [
                        int(1, 2),
                        s(2, "failed"),
                        msg(3, [s(1, "type.googleapis.com/x"), s(2, "\x01\x02")]),
                    ],
                ),
                msg(6, [int(1, 1)]),
                msg(7, [int(1, 2)]),
                desc_bytes(8, "sha256:logs"),
                map_ss(9, "containerimage.digest", "sha256:d"),
                result_bytes(10),
                msg(11, [s(1, "linux/amd64"), result_bytes(2)]),
                int(12, 3),
                desc_bytes(13, "sha256:trace"),
                boolean(14),
                int(15, 4),
                int(16, 5),
                int(17, 6),
                desc_bytes(18, "sha256:ext"),
                int(19, 7),
            ],
        ),
    ]);
    check(&m, &expected);

    check(
        &control::BuildHistoryRequest {
            active_only: true,
            r#ref: "r".into(),
            early_exit: true,
            filter: strings(["status==completed"]),
            limit: 10,
        },
        &cat([
            boolean(1),
            s(2, "r"),
            boolean(3),
            s(4, "status==completed"),
            int(5, 10),
        ]),
    );
    check(
        &control::UpdateBuildHistoryRequest {
            r#ref: "r".into(),
            pinned: true,
            delete: true,
            finalize: true,
        },
        &cat([s(1, "r"), boolean(2), boolean(3), boolean(4)]),
    );
    assert_eq!(
        control::BuildHistoryEventType::Deleted.as_str_name(),
        "DELETED"
    );
    assert_eq!(control::BuildHistoryEventType::Started as i32, 0);
}

// ---- apicaps --------------------------------------------------------------------------------

#[test]
fn api_cap() {
    let m = apicaps::ApiCap {
        id: "exec.mount.bind".into(),
        enabled: true,
        deprecated: true,
        disabled_reason: "reason".into(),
        disabled_reason_msg: "message".into(),
        disabled_alternative: "alt".into(),
    };
    let expected = cat([
        s(1, "exec.mount.bind"),
        boolean(2),
        boolean(3),
        s(4, "reason"),
        s(5, "message"),
        s(6, "alt"),
    ]);
    check(&m, &expected);
}

// ---- fsutil.types ---------------------------------------------------------------------------

#[test]
fn fsutil_packet_with_stat() {
    let m = fsutil_types::Packet {
        r#type: fsutil_types::packet::PacketType::PacketStat as i32,
        stat: Some(fsutil_types::Stat {
            path: "dir/file".into(),
            mode: 0o100_755 | (1 << 23), // some perm bits + Go ModeSetuid
            uid: 1000,
            gid: 1001,
            size: 123_456,
            mod_time: 1_700_000_000_123_456_789,
            linkname: "target".into(),
            devmajor: 8,
            devminor: 1,
            xattrs: [
                (
                    "security.capability".to_string(),
                    vec![0x01, 0x00, 0x00, 0x02],
                ),
                ("user.note".to_string(), b"hi".to_vec()),
            ]
            .into_iter()
            .collect(),
        }),
        id: 7,
        data: b"payload".to_vec(),
    };
    let expected = cat([
        // type = PACKET_STAT (0) is the default and therefore omitted
        msg(
            2,
            [
                s(1, "dir/file"),
                int(2, 0o100_755 | (1 << 23)),
                int(3, 1000),
                int(4, 1001),
                int(5, 123_456),
                int(6, 1_700_000_000_123_456_789),
                s(7, "target"),
                int(8, 8),
                int(9, 1),
                msg(10, [s(1, "security.capability"), s(2, "\x01\x00\x00\x02")]),
                msg(10, [s(1, "user.note"), s(2, "hi")]),
            ],
        ),
        int(3, 7),
        s(4, "payload"),
    ]);
    check(&m, &expected);

    // REQ / DATA / FIN / ERR type numbers.
    for (ty, n) in [
        (fsutil_types::packet::PacketType::PacketReq, 1),
        (fsutil_types::packet::PacketType::PacketData, 2),
        (fsutil_types::packet::PacketType::PacketFin, 3),
        (fsutil_types::packet::PacketType::PacketErr, 4),
    ] {
        check(
            &fsutil_types::Packet {
                r#type: ty as i32,
                id: 1,
                ..Default::default()
            },
            &cat([int(1, n), int(3, 1)]),
        );
    }
    assert_eq!(
        fsutil_types::packet::PacketType::PacketData.as_str_name(),
        "PACKET_DATA"
    );
}

// ---- session services -----------------------------------------------------------------------

#[test]
fn auth_messages() {
    check(
        &filesync::CredentialsRequest {
            host: "docker.io".into(),
        },
        &s(1, "docker.io"),
    );
    check(
        &filesync::CredentialsResponse {
            username: "u".into(),
            secret: "p".into(),
        },
        &cat([s(1, "u"), s(2, "p")]),
    );
    check(
        &filesync::FetchTokenRequest {
            client_id: "buildkit-client".into(),
            host: "registry-1.docker.io".into(),
            realm: "https://auth.docker.io/token".into(),
            service: "registry.docker.io".into(),
            scopes: strings(["repository:library/alpine:pull", "repository:x:push"]),
        },
        &cat([
            s(1, "buildkit-client"),
            s(2, "registry-1.docker.io"),
            s(3, "https://auth.docker.io/token"),
            s(4, "registry.docker.io"),
            s(5, "repository:library/alpine:pull"),
            s(5, "repository:x:push"),
        ]),
    );
    check(
        &filesync::FetchTokenResponse {
            token: "tok".into(),
            expires_in: 300,
            issued_at: 1_700_000_000,
        },
        &cat([s(1, "tok"), int(2, 300), int(3, 1_700_000_000)]),
    );
    check(
        &filesync::GetTokenAuthorityRequest {
            host: "h".into(),
            salt: vec![9, 9],
        },
        &cat([s(1, "h"), s(2, "\x09\x09")]),
    );
    check(
        &filesync::GetTokenAuthorityResponse {
            public_key: vec![1, 2, 3],
        },
        &s(1, "\x01\x02\x03"),
    );
    check(
        &filesync::VerifyTokenAuthorityRequest {
            host: "h".into(),
            payload: b"pl".to_vec(),
            salt: b"sa".to_vec(),
        },
        &cat([s(1, "h"), s(2, "pl"), s(3, "sa")]),
    );
    check(
        &filesync::VerifyTokenAuthorityResponse {
            signed: b"sig".to_vec(),
        },
        &s(1, "sig"),
    );
}

#[test]
fn secrets_get_secret() {
    check(
        &secrets::GetSecretRequest {
            id: "npmrc".into(),
            annotations: smap([("env", "NPM_TOKEN"), ("a", "b")]),
        },
        &cat([
            s(1, "npmrc"),
            map_ss(2, "a", "b"),
            map_ss(2, "env", "NPM_TOKEN"),
        ]),
    );
    check(
        &secrets::GetSecretResponse {
            data: b"s3cr3t".to_vec(),
        },
        &s(1, "s3cr3t"),
    );
}

#[test]
fn ssh_and_bytes_messages() {
    check(
        &sshforward::CheckAgentRequest {
            id: "default".into(),
        },
        &s(1, "default"),
    );
    check(&sshforward::CheckAgentResponse {}, &[]);
    let payload = b"\x00\x00\x00\x01\x0b".to_vec();
    let expected = s(1, "\x00\x00\x00\x01\x0b");
    check(
        &control::BytesMessage {
            data: payload.clone(),
        },
        &expected,
    );
    check(
        &filesync::BytesMessage {
            data: payload.clone(),
        },
        &expected,
    );
    check(
        &sshforward::BytesMessage {
            data: payload.clone(),
        },
        &expected,
    );
    check(&upload::BytesMessage { data: payload }, &expected);
}

#[test]
fn session_exporter_messages() {
    check(
        &session_exporter::FindExportersRequest {
            metadata: [("k".to_string(), b"v".to_vec())].into_iter().collect(),
            refs: strings(["r1"]),
        },
        &cat([msg(1, [s(1, "k"), s(2, "v")]), s(2, "r1")]),
    );
    check(
        &session_exporter::FindExportersResponse {
            exporters: vec![session_exporter::ExporterRequest {
                r#type: "local".into(),
                attrs: smap([("dest", "o")]),
            }],
        },
        &msg(1, [s(1, "local"), map_ss(2, "dest", "o")]),
    );
    check(
        &session_exporter::FinalizeExportRequest {
            exporter_response: smap([("a", "b")]),
        },
        &map_ss(1, "a", "b"),
    );
}

#[test]
fn health_messages() {
    use health::health_check_response::ServingStatus;
    check(&health::HealthCheckRequest { service: "".into() }, &[]);
    check(
        &health::HealthCheckRequest {
            service: "x".into(),
        },
        &s(1, "x"),
    );
    check(
        &health::HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        },
        &[0x08, 0x01],
    );
    for (st, n) in [
        (ServingStatus::NotServing, 2),
        (ServingStatus::ServiceUnknown, 3),
    ] {
        check(
            &health::HealthCheckResponse { status: st as i32 },
            &int(1, n),
        );
    }
    assert_eq!(ServingStatus::Unknown as i32, 0);
    assert_eq!(ServingStatus::NotServing.as_str_name(), "NOT_SERVING");
}

// ---- the map-entry caveat (documented in docs/protos.md) ------------------------------------

#[test]
fn map_entries_with_default_values() {
    // prost leaves out a map entry's key or value when it is the default ("" / 0 / false).
    let m = control::SolveRequest {
        frontend_attrs: smap([("no-cache", "")]),
        ..Default::default()
    };
    let prost_form = msg(7, [s(1, "no-cache")]);
    assert_eq!(m.encode_to_vec(), prost_form);
    // Go always writes both key and value; both forms decode to the same message.
    let go_form = msg(7, [s(1, "no-cache"), s(2, "")]);
    assert_eq!(control::SolveRequest::decode(&go_form[..]).unwrap(), m);

    // The `pb` messages with maps (hand-written in src/gomap.rs) write both, as Go does,
    // because their bytes are digested.
    let op = pb::SourceOp {
        identifier: "local://context".into(),
        attrs: smap([("local.unique", "")]),
    };
    let go_form = cat([
        s(1, "local://context"),
        msg(2, [s(1, "local.unique"), s(2, "")]),
    ]);
    assert_eq!(op.encode_to_vec(), go_form);
    assert_eq!(pb::SourceOp::decode(&go_form[..]).unwrap(), op);
    let prost_form = cat([s(1, "local://context"), msg(2, [s(1, "local.unique")])]);
    assert_eq!(pb::SourceOp::decode(&prost_form[..]).unwrap(), op);
}

// ---- containerd.services.content.v1 ---------------------------------------------------------

#[test]
fn content_info_messages() {
    use containerd_content as c;
    let info = c::Info {
        digest: "sha256:ab".into(),
        size: 300,
        created_at: timestamp(7, 8),
        updated_at: timestamp(9, 10),
        labels: smap([("k", "v")]),
    };
    let info_bytes = cat([
        s(1, "sha256:ab"),
        int(2, 300),
        ts(3, 7, 8),
        ts(4, 9, 10),
        map_ss(5, "k", "v"),
    ]);
    check(&info, &info_bytes);
    check(
        &c::InfoRequest {
            digest: "sha256:ab".into(),
        },
        &s(1, "sha256:ab"),
    );
    check(
        &c::InfoResponse {
            info: Some(info.clone()),
        },
        &len_delim(1, &info_bytes),
    );
    check(
        &c::UpdateRequest {
            info: Some(info.clone()),
            update_mask: Some(proto::prost_types::FieldMask {
                paths: strings(["labels.k"]),
            }),
        },
        &cat([len_delim(1, &info_bytes), msg(2, [s(1, "labels.k")])]),
    );
    check(
        &c::ListContentResponse {
            info: vec![info.clone(), info],
        },
        &cat([len_delim(1, &info_bytes), len_delim(1, &info_bytes)]),
    );
    check(
        &c::ListContentRequest {
            filters: strings(["a", "b"]),
        },
        &cat([s(1, "a"), s(1, "b")]),
    );
    check(
        &c::DeleteContentRequest {
            digest: "sha256:cd".into(),
        },
        &s(1, "sha256:cd"),
    );
}

#[test]
fn content_read_write_messages() {
    use containerd_content as c;
    check(
        &c::ReadContentRequest {
            digest: "sha256:ab".into(),
            offset: 5,
            size: -1,
        },
        &cat([s(1, "sha256:ab"), int(2, 5), int(3, -1)]),
    );
    check(
        &c::ReadContentResponse {
            offset: 1 << 20,
            data: b"xyz".to_vec(),
        },
        &cat([int(1, 1 << 20), len_delim(2, b"xyz")]),
    );
    assert_eq!(c::WriteAction::Stat as i32, 0);
    assert_eq!(c::WriteAction::Write as i32, 1);
    assert_eq!(c::WriteAction::Commit as i32, 2);
    check(
        &c::WriteContentRequest {
            action: c::WriteAction::Commit as i32,
            r#ref: "r".into(),
            total: 10,
            expected: "sha256:ef".into(),
            offset: 4,
            data: b"abcdef".to_vec(),
            labels: smap([("l", "m")]),
        },
        &cat([
            int(1, 2),
            s(2, "r"),
            int(3, 10),
            s(4, "sha256:ef"),
            int(5, 4),
            len_delim(6, b"abcdef"),
            map_ss(7, "l", "m"),
        ]),
    );
    check(
        &c::WriteContentResponse {
            action: c::WriteAction::Write as i32,
            started_at: timestamp(1, 2),
            updated_at: timestamp(3, 4),
            offset: 6,
            total: 10,
            digest: "sha256:01".into(),
        },
        &cat([
            int(1, 1),
            ts(2, 1, 2),
            ts(3, 3, 4),
            int(4, 6),
            int(5, 10),
            s(6, "sha256:01"),
        ]),
    );
    let status = c::Status {
        started_at: timestamp(1, 0),
        updated_at: timestamp(2, 0),
        r#ref: "r".into(),
        offset: 3,
        total: 4,
        expected: "sha256:ab".into(),
    };
    let status_bytes = cat([
        msg(1, [int(1, 1)]),
        msg(2, [int(1, 2)]),
        s(3, "r"),
        int(4, 3),
        int(5, 4),
        s(6, "sha256:ab"),
    ]);
    check(&status, &status_bytes);
    check(&c::StatusRequest { r#ref: "r".into() }, &s(1, "r"));
    check(
        &c::StatusResponse {
            status: Some(status.clone()),
        },
        &len_delim(1, &status_bytes),
    );
    check(
        &c::ListStatusesRequest {
            filters: strings(["f"]),
        },
        &s(1, "f"),
    );
    check(
        &c::ListStatusesResponse {
            statuses: vec![status],
        },
        &len_delim(1, &status_bytes),
    );
    check(&c::AbortRequest { r#ref: "r".into() }, &s(1, "r"));
}

// ---- gRPC service and method names ----------------------------------------------------------

#[test]
fn service_names() {
    assert_eq!(
        control::control_server::SERVICE_NAME,
        "moby.buildkit.v1.Control"
    );
    assert_eq!(
        filesync::file_sync_server::SERVICE_NAME,
        "moby.filesync.v1.FileSync"
    );
    assert_eq!(
        filesync::file_send_server::SERVICE_NAME,
        "moby.filesync.v1.FileSend"
    );
    assert_eq!(filesync::auth_server::SERVICE_NAME, "moby.filesync.v1.Auth");
    assert_eq!(
        secrets::secrets_server::SERVICE_NAME,
        "moby.buildkit.secrets.v1.Secrets"
    );
    assert_eq!(
        sshforward::ssh_server::SERVICE_NAME,
        "moby.sshforward.v1.SSH"
    );
    assert_eq!(upload::upload_server::SERVICE_NAME, "moby.upload.v1.Upload");
    assert_eq!(
        session_exporter::exporter_server::SERVICE_NAME,
        "moby.exporter.v1.Exporter"
    );
    assert_eq!(health::health_server::SERVICE_NAME, "grpc.health.v1.Health");
    assert_eq!(
        containerd_content::content_server::SERVICE_NAME,
        "containerd.services.content.v1.Content"
    );
}

/// The generated clients and servers route by full method path; check every path upstream
/// uses appears in the generated code.
#[test]
fn method_paths() {
    let generated = |file: &str| -> String {
        let path = format!("{}/{file}", env!("OUT_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "moby.buildkit.v1.rs",
            "moby.buildkit.v1.Control",
            &[
                "DiskUsage",
                "Prune",
                "Solve",
                "Status",
                "Session",
                "ListWorkers",
                "Info",
                "ListenBuildHistory",
                "UpdateBuildHistory",
            ],
        ),
        (
            "moby.filesync.v1.rs",
            "moby.filesync.v1.FileSync",
            &["DiffCopy", "TarStream"],
        ),
        (
            "moby.filesync.v1.rs",
            "moby.filesync.v1.FileSend",
            &["DiffCopy"],
        ),
        (
            "moby.filesync.v1.rs",
            "moby.filesync.v1.Auth",
            &[
                "Credentials",
                "FetchToken",
                "GetTokenAuthority",
                "VerifyTokenAuthority",
            ],
        ),
        (
            "moby.buildkit.secrets.v1.rs",
            "moby.buildkit.secrets.v1.Secrets",
            &["GetSecret"],
        ),
        (
            "moby.sshforward.v1.rs",
            "moby.sshforward.v1.SSH",
            &["CheckAgent", "ForwardAgent"],
        ),
        ("moby.upload.v1.rs", "moby.upload.v1.Upload", &["Pull"]),
        (
            "moby.exporter.v1.rs",
            "moby.exporter.v1.Exporter",
            &["FindExporters", "FinalizeExport"],
        ),
        (
            "grpc.health.v1.rs",
            "grpc.health.v1.Health",
            &["Check", "List", "Watch"],
        ),
        (
            "containerd.services.content.v1.rs",
            "containerd.services.content.v1.Content",
            &[
                "Info",
                "Update",
                "List",
                "Delete",
                "Read",
                "Status",
                "ListStatuses",
                "Write",
                "Abort",
            ],
        ),
    ];
    for (file, service, methods) in cases {
        let src = generated(file);
        for method in *methods {
            let path = format!("\"/{service}/{method}\"");
            // once in the client, once as the server's route
            assert!(
                src.matches(&path).count() >= 2,
                "{path} missing from client or server in {file}"
            );
        }
    }
}
