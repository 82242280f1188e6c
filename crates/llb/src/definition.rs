//! Loading a Definition received from a client: decode it, digest every op as received
//! (never a re-encoding), and check that it is a well-formed graph before anything runs.

use std::collections::BTreeMap;

use prost::Message;
use proto::pb;

use crate::error::LoadError;
use crate::marshal::digest_of;

/// One op of a loaded Definition.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedOp {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The op bytes exactly as received.
    pub bytes: Vec<u8>,
    pub op: pb::Op,
    pub metadata: pb::OpMetadata,
}

/// A validated build graph.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedDefinition {
    /// Every op except the terminal one, by digest.
    pub ops: BTreeMap<String, LoadedOp>,
    /// Op digests in the order they were received (duplicates removed, terminal excluded).
    pub order: Vec<String>,
    /// The result: the terminal op's single input.
    pub head: pb::Input,
    /// The terminal op itself.
    pub terminal: LoadedOp,
    pub source: Option<pb::Source>,
}

impl LoadedDefinition {
    /// Decodes and validates a marshaled `pb.Definition`.
    pub fn from_bytes(bytes: &[u8]) -> Result<LoadedDefinition, LoadError> {
        let def = pb::Definition::decode(bytes).map_err(|e| LoadError::Decode(e.to_string()))?;
        LoadedDefinition::load(def)
    }

    /// Validates a decoded Definition.
    pub fn load(def: pb::Definition) -> Result<LoadedDefinition, LoadError> {
        let mut decoded = Vec::with_capacity(def.def.len());
        for (index, bytes) in def.def.into_iter().enumerate() {
            let op = pb::Op::decode(bytes.as_slice()).map_err(|e| LoadError::BadOp {
                index,
                reason: e.to_string(),
            })?;
            decoded.push((digest_of(&bytes), bytes, op));
        }
        load_ops(decoded, def.metadata, def.source)
    }

    /// The ops the head depends on, inputs before users.
    pub fn topological(&self) -> Vec<&LoadedOp> {
        self.order.iter().filter_map(|d| self.ops.get(d)).collect()
    }
}

/// How many outputs an op has, when that is knowable from the op alone.
fn output_count(op: &pb::Op) -> Option<i64> {
    match op.op.as_ref()? {
        pb::op::Op::Source(_) | pb::op::Op::Merge(_) | pb::op::Op::Diff(_) => Some(1),
        pb::op::Op::File(f) => Some(f.actions.iter().filter(|a| a.output >= 0).count() as i64),
        pb::op::Op::Exec(e) => Some(e.mounts.iter().filter(|m| is_output(m)).count() as i64),
        pb::op::Op::Build(_) | pb::op::Op::Passthrough(_) => None,
    }
}

/// Only bind mounts produce outputs; upstream leaves `output` at 0 on secret and ssh
/// mounts, where it means nothing.
fn is_output(m: &pb::Mount) -> bool {
    m.mount_type == pb::MountType::Bind as i32 && m.output >= 0
}

/// Checks the index fields inside one op against its inputs.
fn check_op(digest: &str, op: &pb::Op) -> Result<(), LoadError> {
    let n = op.inputs.len() as i64;
    let bad = |reason: String| LoadError::InvalidOp {
        digest: digest.to_string(),
        reason,
    };
    let in_range = |i: i64, max: i64| i == -1 || (0..max).contains(&i);
    match op.op.as_ref() {
        None => {
            return Err(LoadError::MisplacedTerminal {
                digest: digest.to_string(),
            });
        }
        Some(pb::op::Op::Source(s)) => {
            if s.identifier.is_empty() {
                return Err(bad("source identifier is empty".into()));
            }
            if n != 0 {
                return Err(bad("a source op takes no inputs".into()));
            }
        }
        Some(pb::op::Op::Exec(e)) => {
            let meta = e
                .meta
                .as_ref()
                .ok_or_else(|| bad("exec has no meta".into()))?;
            if meta.args.is_empty() {
                return Err(bad("exec has no command".into()));
            }
            if !e.mounts.iter().any(|m| m.dest == "/") {
                return Err(bad("exec has no root mount".into()));
            }
            let mut outputs: Vec<i64> = Vec::new();
            for m in &e.mounts {
                if !in_range(m.input, n) {
                    return Err(bad(format!(
                        "mount {} uses input {} of {n}",
                        m.dest, m.input
                    )));
                }
                if is_output(m) {
                    outputs.push(m.output);
                }
            }
            outputs.sort_unstable();
            if outputs.iter().enumerate().any(|(i, o)| *o != i as i64) {
                return Err(bad("exec outputs are not numbered 0..n".into()));
            }
        }
        Some(pb::op::Op::File(f)) => {
            if f.actions.is_empty() {
                return Err(bad("file op has no actions".into()));
            }
            for (i, a) in f.actions.iter().enumerate() {
                // Inputs first, then the results of earlier actions.
                let max = n + i as i64;
                if !in_range(a.input, max) || !in_range(a.secondary_input, max) {
                    return Err(bad(format!(
                        "file action {i} refers to a later or missing input"
                    )));
                }
                if a.action.is_none() {
                    return Err(bad(format!("file action {i} has no action")));
                }
            }
        }
        Some(pb::op::Op::Merge(m)) => {
            if m.inputs.iter().any(|i| !(0..n).contains(&i.input)) {
                return Err(bad("merge input out of range".into()));
            }
        }
        Some(pb::op::Op::Diff(d)) => {
            let l = d.lower.as_ref().map_or(-1, |x| x.input);
            let u = d.upper.as_ref().map_or(-1, |x| x.input);
            if !in_range(l, n) || !in_range(u, n) {
                return Err(bad("diff input out of range".into()));
            }
        }
        Some(pb::op::Op::Build(b)) => {
            if b.builder != -1 && !(0..n).contains(&b.builder) {
                return Err(bad("build op builder out of range".into()));
            }
            if b.inputs.values().any(|i| !(0..n).contains(&i.input)) {
                return Err(bad("build op input out of range".into()));
            }
        }
        Some(pb::op::Op::Passthrough(p)) => {
            if p.outputs.iter().any(|o| !(0..n).contains(o)) {
                return Err(bad("passthrough output out of range".into()));
            }
        }
    }
    Ok(())
}

/// The checks proper, over ops whose digests are already known. Separate from the decode
/// step so that the graph checks can be exercised with forged digests too.
pub(crate) fn load_ops(
    decoded: Vec<(String, Vec<u8>, pb::Op)>,
    mut metadata: BTreeMap<String, pb::OpMetadata>,
    source: Option<pb::Source>,
) -> Result<LoadedDefinition, LoadError> {
    let mut decoded = decoded;
    let (tdigest, tbytes, terminal) = decoded.pop().ok_or(LoadError::Empty)?;
    if terminal.op.is_some() || terminal.inputs.len() != 1 || decoded.is_empty() {
        return Err(LoadError::MissingTerminal { digest: tdigest });
    }
    let mut ops = BTreeMap::new();
    let mut order = Vec::new();
    for (digest, bytes, op) in decoded {
        if ops.contains_key(&digest) {
            continue;
        }
        check_op(&digest, &op)?;
        let md = metadata.remove(&digest).unwrap_or_default();
        order.push(digest.clone());
        ops.insert(
            digest.clone(),
            LoadedOp {
                digest,
                bytes,
                op,
                metadata: md,
            },
        );
    }
    let tmd = metadata.remove(&tdigest).unwrap_or_default();
    let all_md = ops
        .values()
        .map(|o| (&o.digest, &o.metadata))
        .chain([(&tdigest, &tmd)]);
    for (digest, md) in all_md {
        if let Some((cap, _)) = md
            .caps
            .iter()
            .find(|(c, on)| **on && !crate::caps::is_known(c))
        {
            return Err(LoadError::UnknownCap {
                digest: digest.clone(),
                cap: cap.clone(),
            });
        }
    }
    let check_input = |from: &str, inp: &pb::Input| -> Result<(), LoadError> {
        let target = ops
            .get(&inp.digest)
            .ok_or_else(|| LoadError::DanglingInput {
                digest: from.to_string(),
                input: inp.digest.clone(),
            })?;
        let count = output_count(&target.op);
        if inp.index < 0 || count.is_some_and(|c| inp.index >= c) {
            return Err(LoadError::BadOutputIndex {
                digest: from.to_string(),
                input: inp.digest.clone(),
                index: inp.index,
            });
        }
        Ok(())
    };
    for op in ops.values() {
        for inp in &op.op.inputs {
            check_input(&op.digest, inp)?;
        }
    }
    check_input(&tdigest, &terminal.inputs[0])?;
    check_acyclic(&ops)?;
    let head = terminal.inputs[0].clone();
    Ok(LoadedDefinition {
        ops,
        order,
        head,
        terminal: LoadedOp {
            digest: tdigest,
            bytes: tbytes,
            op: terminal,
            metadata: tmd,
        },
        source,
    })
}

/// Content addressing makes a cycle impossible without a hash collision; the check still
/// guards every later graph walk against one.
fn check_acyclic(ops: &BTreeMap<String, LoadedOp>) -> Result<(), LoadError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for start in ops.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // (digest, next input to look at)
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::Visiting);
        while let Some((digest, next)) = stack.pop() {
            let inputs = &ops[digest].op.inputs;
            if next < inputs.len() {
                stack.push((digest, next + 1));
                let child = inputs[next].digest.as_str();
                match marks.get(child) {
                    Some(Mark::Visiting) => {
                        return Err(LoadError::Cycle {
                            digest: child.to_string(),
                        });
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::Visiting);
                        stack.push((child, 0));
                    }
                }
            } else {
                marks.insert(digest, Mark::Done);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Source(pb::SourceOp {
                identifier: id.into(),
                attrs: Default::default(),
            })),
            ..pb::Op::default()
        }
    }

    fn merge_of(inputs: &[&str]) -> pb::Op {
        pb::Op {
            inputs: inputs
                .iter()
                .map(|d| pb::Input {
                    digest: d.to_string(),
                    index: 0,
                })
                .collect(),
            op: Some(pb::op::Op::Merge(pb::MergeOp {
                inputs: (0..inputs.len() as i64)
                    .map(|input| pb::MergeInput { input })
                    .collect(),
            })),
            ..pb::Op::default()
        }
    }

    fn terminal(d: &str) -> pb::Op {
        pb::Op {
            inputs: vec![pb::Input {
                digest: d.into(),
                index: 0,
            }],
            ..pb::Op::default()
        }
    }

    #[test]
    fn forged_cycle_is_rejected() {
        // Digests are claimed, not computed, so two ops can point at each other.
        let ops = vec![
            (
                "sha256:a".into(),
                vec![],
                merge_of(&["sha256:b", "sha256:c"]),
            ),
            (
                "sha256:b".into(),
                vec![],
                merge_of(&["sha256:a", "sha256:c"]),
            ),
            ("sha256:c".into(), vec![], source("docker-image://x")),
            ("sha256:t".into(), vec![], terminal("sha256:a")),
        ];
        let err = load_ops(ops, BTreeMap::new(), None).unwrap_err();
        assert!(matches!(err, LoadError::Cycle { .. }), "{err}");
    }

    #[test]
    fn diamond_is_not_a_cycle() {
        let ops = vec![
            ("sha256:s".into(), vec![], source("docker-image://x")),
            (
                "sha256:l".into(),
                vec![],
                merge_of(&["sha256:s", "sha256:s"]),
            ),
            (
                "sha256:r".into(),
                vec![],
                merge_of(&["sha256:s", "sha256:s"]),
            ),
            (
                "sha256:m".into(),
                vec![],
                merge_of(&["sha256:l", "sha256:r"]),
            ),
            ("sha256:t".into(), vec![], terminal("sha256:m")),
        ];
        let loaded = load_ops(ops, BTreeMap::new(), None).unwrap();
        assert_eq!(loaded.order.len(), 4);
        assert_eq!(loaded.head.digest, "sha256:m");
    }
}
