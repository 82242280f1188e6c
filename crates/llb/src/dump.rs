//! Human-readable dumps of a Definition, as upstream's `buildctl debug dump-llb` prints them.
//!
//! Two formats:
//!
//! - [`json_lines`]: one JSON object per op, in `def` order, each followed by a newline:
//!   `{"Op":…,"Digest":"sha256:…","OpMetadata":…}`. The objects are byte for byte what Go's
//!   `encoding/json` prints for upstream's structs: upstream's field names (from the Go json
//!   tags, e.g. `Architecture`, `secondaryInput`, `TmpfsOpt`, `ignore_cache`), `omitempty`
//!   (zero numbers, empty strings, empty lists and maps and absent messages are left out, a
//!   present empty message prints `{}`), upstream's custom shapes for `Op` (the oneof under
//!   `"Op"`), `FileAction` (`input`/`secondaryInput`/`output` always printed, the oneof under
//!   `"Action"`) and `UserOpt` (`{"User":{"byName":…}}` / `{"User":{"byId":N}}`), enums as
//!   numbers, bytes as standard base64, map keys sorted, and Go's escaping (`<`, `>`, `&`,
//!   U+2028 and U+2029 as `\uXXXX`).
//!
//!   One deliberate difference: upstream's `FileAction` JSON forgets the `symlink` action (it
//!   prints `"Action":{}`); we print `"Action":{"symlink":{…}}`.
//!
//!   Like upstream, an op without metadata prints `"OpMetadata":{}` (upstream converts a
//!   missing entry into an empty `OpMetadata`), never `null`.
//!
//! - [`dot`]: a Graphviz digraph with one node per op (labelled with the source identifier,
//!   the command line, the file actions, ...) and one edge per input, labelled with the mount
//!   point when an exec op mounts that input somewhere other than `/`.
//!
//! Both take a decoded `pb.Definition` and decode its ops themselves; validating the graph is
//! the job of [`crate::LoadedDefinition`], which callers should run first.

mod dot;
mod gojson;
mod json;

use prost::Message;
use proto::pb;
use sha2::{Digest, Sha256};

pub use json::{op_json, op_metadata_json};

/// Why a Definition could not be dumped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// An entry of `Definition.def` is not a valid `pb.Op`.
    #[error("op {index} is not valid protobuf: {source}")]
    Op {
        /// Position of the entry in `def`.
        index: usize,
        /// What prost said.
        source: prost::DecodeError,
    },
}

/// One op of a Definition, as dump-llb shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Vertex {
    /// The decoded op.
    pub op: pb::Op,
    /// `sha256:<hex>` of the op bytes as received.
    pub digest: String,
    /// The metadata the Definition holds for `digest`, if any.
    pub metadata: Option<pb::OpMetadata>,
}

impl Vertex {
    /// The JSON object for this op, without a trailing newline (see the module docs).
    pub fn to_json(&self) -> String {
        json::vertex(self)
    }
}

/// Decodes every op of `def`, in `def` order (duplicates kept, as upstream does).
pub fn vertices(def: &pb::Definition) -> Result<Vec<Vertex>, DumpError> {
    def.def
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            let op = pb::Op::decode(bytes.as_slice())
                .map_err(|source| DumpError::Op { index, source })?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
            let metadata = def.metadata.get(&digest).cloned();
            Ok(Vertex {
                op,
                digest,
                metadata,
            })
        })
        .collect()
}

/// Upstream's `dump-llb` output: one JSON object per op, each followed by `\n`.
pub fn json_lines(def: &pb::Definition) -> Result<String, DumpError> {
    let mut out = String::new();
    for vertex in vertices(def)? {
        out.push_str(&vertex.to_json());
        out.push('\n');
    }
    Ok(out)
}

/// Upstream's `dump-llb --dot` output: a Graphviz digraph of the ops.
pub fn dot(def: &pb::Definition) -> Result<String, DumpError> {
    Ok(dot::render(&vertices(def)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn source(identifier: &str) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: identifier.into(),
                attrs: BTreeMap::new(),
            })),
            ..Default::default()
        }
    }

    fn two_op_def() -> (pb::Definition, String) {
        let src = source("docker-image://docker.io/library/busybox:latest").encode_to_vec();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&src)));
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: digest.clone(),
                index: 0,
            }],
            ..Default::default()
        };
        let def = pb::Definition {
            def: vec![src, terminal.encode_to_vec()],
            metadata: BTreeMap::from([(
                digest.clone(),
                pb::OpMetadata {
                    caps: BTreeMap::from([("source.image".into(), true)]),
                    ..Default::default()
                },
            )]),
            source: None,
        };
        (def, digest)
    }

    #[test]
    fn json_lines_one_object_per_op() {
        let (def, digest) = two_op_def();
        let out = json_lines(&def).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(out.ends_with('\n'));
        assert_eq!(
            lines[0],
            format!(
                r#"{{"Op":{{"Op":{{"source":{{"identifier":"docker-image://docker.io/library/busybox:latest"}}}}}},"Digest":"{digest}","OpMetadata":{{"caps":{{"source.image":true}}}}}}"#
            )
        );
        // No metadata for the terminal op: upstream prints an empty object, not null.
        assert!(lines[1].starts_with(&format!(
            r#"{{"Op":{{"inputs":[{{"digest":"{digest}"}}],"Op":{{}}}},"#
        )));
        assert!(lines[1].ends_with(r#""OpMetadata":{}}"#));
    }

    #[test]
    fn bad_op_names_its_index() {
        let def = pb::Definition {
            def: vec![source("local://x").encode_to_vec(), vec![0xff, 0xff]],
            ..Default::default()
        };
        let err = json_lines(&def).unwrap_err();
        assert!(
            err.to_string().starts_with("op 1 is not valid protobuf"),
            "{err}"
        );
    }

    #[test]
    fn dot_has_nodes_and_edges() {
        let (def, digest) = two_op_def();
        let out = dot(&def).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let terminal = &vertices(&def).unwrap()[1].digest;
        assert_eq!(lines[0], "digraph {");
        assert_eq!(
            lines[1],
            format!(
                r#"  "{digest}" [label="docker-image://docker.io/library/busybox:latest" shape="ellipse"];"#
            )
        );
        assert_eq!(
            lines[2],
            format!(r#"  "{terminal}" [label="{terminal}" shape="plaintext"];"#)
        );
        assert_eq!(
            lines[3],
            format!(r#"  "{digest}" -> "{terminal}" [label=""];"#)
        );
        assert_eq!(lines[4], "}");
        assert_eq!(lines.len(), 5);
    }
}
