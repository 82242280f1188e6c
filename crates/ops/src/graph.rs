//! From a loaded LLB Definition to a solver graph.

use std::collections::HashMap;
use std::sync::Arc;

use llb::LoadedDefinition;
use oci::Digest;
use prost::Message;
use proto::pb;
use solver::{Edge, Graph, Op, Vertex};

use crate::exec::ExecOp;
use crate::file::FileOp;
use crate::merge::{DiffOp, MergeOp};
use crate::source::SourceOp;
use crate::{BuildSession, OpsContext, Ref};

/// The digest that identifies what an op does, apart from its inputs: sha256 of the op
/// encoded with its inputs left out. Inputs enter cache keys through the solver, by key or
/// by content.
fn op_digest(op: &pb::Op) -> Digest {
    let mut bare = op.clone();
    bare.inputs.clear();
    let mut material = b"buildkit-rs.op.v1\0".to_vec();
    material.extend(bare.encode_to_vec());
    Digest::of(&material)
}

/// The name progress shows for an op: its custom name, or a description of the op.
pub fn vertex_name(op: &pb::Op, md: &pb::OpMetadata) -> String {
    if let Some(n) = md.description.get("llb.customname") {
        return n.clone();
    }
    match &op.op {
        Some(pb::op::Op::Source(s)) => s.identifier.clone(),
        Some(pb::op::Op::Exec(e)) => e
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default(),
        Some(pb::op::Op::File(f)) => {
            let names: Vec<&str> = f
                .actions
                .iter()
                .map(|a| match &a.action {
                    Some(pb::file_action::Action::Copy(_)) => "copy",
                    Some(pb::file_action::Action::Mkdir(_)) => "mkdir",
                    Some(pb::file_action::Action::Mkfile(_)) => "mkfile",
                    Some(pb::file_action::Action::Rm(_)) => "rm",
                    Some(pb::file_action::Action::Symlink(_)) => "symlink",
                    None => "?",
                })
                .collect();
            names.join(", ")
        }
        Some(pb::op::Op::Merge(_)) => "merge".into(),
        Some(pb::op::Op::Diff(_)) => "diff".into(),
        Some(pb::op::Op::Build(_)) => "build".into(),
        Some(pb::op::Op::Passthrough(_)) => "passthrough".into(),
        None => String::new(),
    }
}

/// Builds the solver graph for `def`, with ops running on `ctx`, for a build without a
/// client session (anonymous pulls, no secrets).
pub fn build_graph(def: &LoadedDefinition, ctx: &Arc<OpsContext>) -> Result<Graph<Ref>, String> {
    build_graph_for(def, ctx, None)
}

/// Builds the solver graph of one job: its image sources and exec ops use `session` (the
/// job's client session) for registry credentials and secrets.
pub fn build_graph_for(
    def: &LoadedDefinition,
    ctx: &Arc<OpsContext>,
    session: Option<Arc<dyn BuildSession>>,
) -> Result<Graph<Ref>, String> {
    let index: HashMap<&str, usize> = def
        .order
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let edge = |inp: &pb::Input| -> Result<Edge, String> {
        let vertex = *index
            .get(inp.digest.as_str())
            .ok_or_else(|| format!("input {} is not in the definition", inp.digest))?;
        let output =
            usize::try_from(inp.index).map_err(|_| format!("bad output index {}", inp.index))?;
        Ok(Edge { vertex, output })
    };
    let mut vertices = Vec::with_capacity(def.order.len());
    for d in &def.order {
        let lop = &def.ops[d];
        let op = &lop.op;
        let n = op.inputs.len();
        let digest = op_digest(op);
        let imp: Arc<dyn Op<Ref>> = match &op.op {
            Some(pb::op::Op::Source(s)) => {
                let p = op.platform.clone().unwrap_or_default();
                let platform = if p.os.is_empty() {
                    llb::Platform::host()
                } else {
                    llb::Platform::new(&p.os, &p.architecture, &p.variant)
                };
                Arc::new(SourceOp {
                    ctx: ctx.clone(),
                    source: s.clone(),
                    platform,
                    op_digest: digest,
                    session: session.clone(),
                    resolved: Default::default(),
                })
            }
            Some(pb::op::Op::Exec(e)) => Arc::new(ExecOp {
                ctx: ctx.clone(),
                exec: e.clone(),
                op_digest: digest,
                inputs: n,
                session: session.clone(),
            }),
            Some(pb::op::Op::File(f)) => Arc::new(FileOp {
                ctx: ctx.clone(),
                file: f.clone(),
                op_digest: digest,
                inputs: n,
            }),
            Some(pb::op::Op::Merge(m)) => Arc::new(MergeOp {
                ctx: ctx.clone(),
                merge: m.clone(),
                op_digest: digest,
                inputs: n,
            }),
            Some(pb::op::Op::Diff(x)) => Arc::new(DiffOp {
                ctx: ctx.clone(),
                diff: *x,
                op_digest: digest,
                inputs: n,
            }),
            Some(pb::op::Op::Build(_)) | Some(pb::op::Op::Passthrough(_)) | None => {
                return Err(format!("op {d}: this op kind is not supported yet"));
            }
        };
        vertices.push(Vertex {
            digest: d.clone(),
            name: vertex_name(op, &lop.metadata),
            inputs: op.inputs.iter().map(&edge).collect::<Result<_, _>>()?,
            op: imp,
            ignore_cache: lop.metadata.ignore_cache,
        });
    }
    Ok(Graph {
        vertices,
        target: edge(&def.head)?,
    })
}
