//! Merge and diff ops: combine filesystem results without running anything.

use std::sync::Arc;

use proto::pb;

use crate::caps;
use crate::marshal::Encoder;
use crate::state::{Metadata, OpKind, OpOptions, Output, State, Vertex};

/// Stacks `inputs` in order (later ones win). Scratch inputs are dropped; a merge of one
/// input is that input, and a merge of nothing is scratch.
pub fn merge(inputs: &[State], options: OpOptions) -> State {
    let real: Vec<&State> = inputs.iter().filter(|s| !s.is_scratch()).collect();
    match real.as_slice() {
        [] => State::scratch(),
        [one] => (*one).clone(),
        [first, ..] => {
            let mut options = options;
            options.add_cap(caps::MERGE_OP);
            let outputs = real.iter().filter_map(|s| s.output.clone()).collect();
            let vertex = Arc::new(Vertex {
                op: OpKind::Merge(outputs),
                options,
            });
            first.with_output(Output { vertex, index: 0 })
        }
    }
}

/// The changes that turn `lower` into `upper`. A diff from scratch is `upper` itself.
pub fn diff(lower: &State, upper: &State, options: OpOptions) -> State {
    if lower.is_scratch() {
        return if upper.is_scratch() {
            State::scratch()
        } else {
            upper.clone()
        };
    }
    let mut options = options;
    options.add_cap(caps::DIFF_OP);
    let vertex = Arc::new(Vertex {
        op: OpKind::Diff {
            lower: lower.output.clone(),
            upper: upper.output.clone(),
        },
        options,
    });
    lower.with_output(Output { vertex, index: 0 })
}

pub(crate) fn encode_merge(
    inputs: &[Output],
    enc: &Encoder<'_>,
) -> Result<(pb::Op, Metadata), crate::Error> {
    let mut op = pb::Op::default();
    let mut merge = pb::MergeOp::default();
    for o in inputs {
        merge.inputs.push(pb::MergeInput {
            input: op.inputs.len() as i64,
        });
        op.inputs.push(enc.input(o)?);
    }
    op.op = Some(pb::op::Op::Merge(merge));
    Ok((op, Metadata::default()))
}

pub(crate) fn encode_diff(
    lower: Option<&Output>,
    upper: Option<&Output>,
    enc: &Encoder<'_>,
) -> Result<(pb::Op, Metadata), crate::Error> {
    let mut op = pb::Op::default();
    let mut side = |o: Option<&Output>| -> Result<i64, crate::Error> {
        match o {
            Some(o) => {
                op.inputs.push(enc.input(o)?);
                Ok(op.inputs.len() as i64 - 1)
            }
            None => Ok(-1),
        }
    };
    let lower = side(lower)?;
    let upper = side(upper)?;
    op.op = Some(pb::op::Op::Diff(pb::DiffOp {
        lower: Some(pb::LowerDiffInput { input: lower }),
        upper: Some(pb::UpperDiffInput { input: upper }),
    }));
    Ok((op, Metadata::default()))
}
