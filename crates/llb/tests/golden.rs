//! Conformance against upstream BuildKit: the Definitions under
//! `../shared/conformance/llb/NN-name/definition.pb` were marshaled by upstream's Go client,
//! and `dump.jsonl` next to each is upstream's `buildctl debug dump-llb` of it.
//!
//! For every case: the vertex digests we compute equal upstream's, every op decodes and
//! re-encodes to the very same bytes (Go's field order and map entries), the loader accepts
//! the graph, and our dump equals upstream's byte for byte.
//!
//! The data lives outside the repository; when it is missing these tests fail loudly rather
//! than pass with nothing checked.

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;
use proto::pb;
use sha2::{Digest, Sha256};

/// `<workspace>/../shared/conformance/llb`.
fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/llb")
}

struct Case {
    name: String,
    /// The marshaled `pb.Definition` as upstream wrote it.
    bytes: Vec<u8>,
    def: pb::Definition,
    /// upstream's dump-llb output.
    dump: String,
}

/// Every case directory, sorted by name. Panics (fails the test) when the data is missing.
fn cases() -> Vec<Case> {
    let dir = conformance_dir();
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "conformance data missing: cannot read {}: {e}; these tests need upstream's LLB \
             golden files (see ../shared/conformance/README.md)",
            dir.display()
        )
    });
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.expect("read conformance dir entry").path())
        .filter(|p| p.join("definition.pb").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "conformance data missing: no */definition.pb under {}",
        dir.display()
    );
    dirs.iter()
        .map(|d| {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            let read = |f: &str| {
                let path = d.join(f);
                fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            };
            let bytes = read("definition.pb");
            let def = pb::Definition::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{name}: definition.pb does not decode: {e}"));
            let dump = String::from_utf8(read("dump.jsonl"))
                .unwrap_or_else(|e| panic!("{name}: dump.jsonl is not UTF-8: {e}"));
            Case {
                name,
                bytes,
                def,
                dump,
            }
        })
        .collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
fn there_are_cases() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    // The README lists 01..08 (Dockerfiles) plus 90-buildkit0 and 91-nested.
    assert!(
        names.len() >= 10,
        "expected at least 10 cases, found {names:?}"
    );
    assert!(names.iter().any(|n| n == "91-nested"), "{names:?}");
}

#[test]
fn digests_match_upstream() {
    for case in cases() {
        let upstream: Vec<String> = case
            .dump
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: dump.jsonl line is not JSON: {e}", case.name));
                v["Digest"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: line without Digest: {line}", case.name))
                    .to_string()
            })
            .collect();
        let ours: Vec<String> = case.def.def.iter().map(|op| digest(op)).collect();
        assert_eq!(ours, upstream, "{}: vertex digests", case.name);
    }
}

/// Decoding an op and encoding it again gives upstream's bytes: Go's field order (`op` oneof
/// last) and Go's map entries (key and value always written, e.g. 91-nested's
/// `inputs: {"buildkit.llb.definition": {}}`).
///
/// Only ops: upstream marshals the Definition itself without sorting its maps (Go map order
/// is random), so a whole Definition cannot round-trip byte for byte, and need not: only op
/// bytes are digested.
#[test]
fn ops_reencode_to_the_same_bytes() {
    for case in cases() {
        for (i, bytes) in case.def.def.iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{}: op {i} does not decode: {e}", case.name));
            assert_eq!(
                hex::encode(op.encode_to_vec()),
                hex::encode(bytes),
                "{}: op {i} ({}) re-encodes differently",
                case.name,
                digest(bytes)
            );
        }
    }
}

#[test]
fn loader_accepts_every_case() {
    for case in cases() {
        let loaded = llb::LoadedDefinition::from_bytes(&case.bytes)
            .unwrap_or_else(|e| panic!("{}: loader rejects upstream's definition: {e}", case.name));
        let last = case.def.def.last().expect("non-empty");
        assert_eq!(loaded.terminal.digest, digest(last), "{}", case.name);
    }
}

#[test]
fn dump_matches_upstream() {
    for case in cases() {
        let ours = llb::dump::json_lines(&case.def)
            .unwrap_or_else(|e| panic!("{}: dump failed: {e}", case.name));
        let ours_lines: Vec<&str> = ours.lines().collect();
        let upstream_lines: Vec<&str> = case.dump.lines().collect();
        assert_eq!(
            ours_lines.len(),
            upstream_lines.len(),
            "{}: number of dumped ops",
            case.name
        );
        for (i, (a, b)) in ours_lines.iter().zip(&upstream_lines).enumerate() {
            // Parsed first, for a readable diff when a value differs...
            let va: serde_json::Value = serde_json::from_str(a)
                .unwrap_or_else(|e| panic!("{}: our line {i} is not JSON: {e}\n{a}", case.name));
            let vb: serde_json::Value = serde_json::from_str(b).expect("upstream JSON");
            assert_eq!(va, vb, "{}: line {i} differs as JSON", case.name);
            // ...then exactly: field order, escaping and number formatting included.
            assert_eq!(a, b, "{}: line {i} differs as text", case.name);
        }
        assert_eq!(ours, case.dump, "{}: whole output (newlines)", case.name);
    }
}

#[test]
fn dot_has_a_node_per_op_and_an_edge_per_input() {
    for case in cases() {
        let out = llb::dump::dot(&case.def).expect("dot");
        assert!(
            out.starts_with("digraph {\n") && out.ends_with("}\n"),
            "{}",
            case.name
        );
        let nodes = out
            .lines()
            .filter(|l| l.contains(" [label=") && l.contains("shape="))
            .count();
        let edges = out.lines().filter(|l| l.contains(" -> ")).count();
        let ops: Vec<pb::Op> = case
            .def
            .def
            .iter()
            .map(|b| pb::Op::decode(b.as_slice()).unwrap())
            .collect();
        assert_eq!(nodes, ops.len(), "{}", case.name);
        assert_eq!(
            edges,
            ops.iter().map(|o| o.inputs.len()).sum::<usize>(),
            "{}",
            case.name
        );
    }
}
