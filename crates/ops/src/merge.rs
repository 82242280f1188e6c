//! Merge and diff ops.
//!
//! A merge stacks its inputs: the first input's snapshot is the parent, and each later
//! input is laid on top (later wins). With overlayfs the later inputs' layers are stacked
//! into the new snapshot's upper directory with hard links, so no file data is copied;
//! with the native snapshotter their trees are copied. A diff is the set of changes from `lower`
//! to `upper` as a tree of its own; deletions have no place in a tree and are dropped
//! (they matter only when a diff is merged, which upstream does lazily; not yet here).

use std::sync::Arc;

use oci::Digest;
use proto::pb;
use solver::{BoxFuture, CacheMap, Dep, Op, OpContext, OpError};

use crate::mounted::{Active, view};
use crate::{OpsContext, Ref, blocking, op_err};

pub(crate) struct MergeOp {
    pub(crate) ctx: Arc<OpsContext>,
    pub(crate) merge: pb::MergeOp,
    pub(crate) op_digest: Digest,
    pub(crate) inputs: usize,
}

pub(crate) struct DiffOp {
    pub(crate) ctx: Arc<OpsContext>,
    pub(crate) diff: pb::DiffOp,
    pub(crate) op_digest: Digest,
    pub(crate) inputs: usize,
}

fn copy_all() -> pb::FileActionCopy {
    pb::FileActionCopy {
        src: "/".into(),
        dest: "/".into(),
        mode: -1,
        timestamp: -1,
        dir_copy_contents: true,
        always_replace_existing_dest_paths: true,
        ..pb::FileActionCopy::default()
    }
}

/// The cache map of an op whose inputs all count by their own keys.
fn by_definition(digest: Digest, inputs: usize) -> CacheMap {
    CacheMap {
        digest,
        deps: vec![Dep::default(); inputs],
        always_run: false,
    }
}

fn pick(inputs: &[Ref], i: i64) -> Result<Ref, OpError> {
    match usize::try_from(i) {
        Err(_) => Ok(Ref::scratch()),
        Ok(i) => inputs
            .get(i)
            .cloned()
            .ok_or_else(|| OpError::new(format!("input {i} missing"))),
    }
}

impl Op<Ref> for MergeOp {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(std::future::ready(Ok(by_definition(
            self.op_digest,
            self.inputs,
        ))))
    }

    fn exec<'a>(
        &'a self,
        _: &'a OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'a, Result<Vec<Ref>, OpError>> {
        let ctx = self.ctx.clone();
        let order: Vec<i64> = self.merge.inputs.iter().map(|m| m.input).collect();
        Box::pin(async move {
            blocking(move || {
                let layers = order
                    .iter()
                    .map(|i| pick(&inputs, *i))
                    .collect::<Result<Vec<_>, _>>()?;
                let Some((first, rest)) = layers.split_first() else {
                    return Ok(vec![Ref::scratch()]);
                };
                let active = Active::prepare(&ctx, first)?;
                let snap = ctx.worker.snapshotter.clone();
                if snap.name() == "overlayfs" {
                    let upper = snap.layer_dir(&active.key).map_err(op_err)?;
                    for key in rest.iter().filter_map(Ref::key) {
                        for layer in
                            snapshot::merge::layer_chain(snap.as_ref(), key).map_err(op_err)?
                        {
                            snapshot::merge::stack_layer(&layer, &upper).map_err(op_err)?;
                        }
                    }
                } else {
                    let target = active.mount(&ctx)?;
                    for r in rest {
                        let v = view(&ctx, r)?;
                        fileop::copy(v.path(), target.path(), &copy_all(), None).map_err(op_err)?;
                    }
                }
                Ok(vec![active.commit("merged")?])
            })
            .await
        })
    }
}

impl Op<Ref> for DiffOp {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(std::future::ready(Ok(by_definition(
            self.op_digest,
            self.inputs,
        ))))
    }

    fn exec<'a>(
        &'a self,
        _: &'a OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'a, Result<Vec<Ref>, OpError>> {
        let ctx = self.ctx.clone();
        let lower = self.diff.lower.as_ref().map_or(-1, |l| l.input);
        let upper = self.diff.upper.as_ref().map_or(-1, |u| u.input);
        Box::pin(async move {
            blocking(move || {
                let lower = pick(&inputs, lower)?;
                let upper = pick(&inputs, upper)?;
                if lower.key().is_none() {
                    return Ok(vec![upper]);
                }
                let (lv, uv) = (view(&ctx, &lower)?, view(&ctx, &upper)?);
                let mut tar = Vec::new();
                archive::diff_dirs(
                    lv.path(),
                    uv.path(),
                    &mut tar,
                    &archive::DiffOptions::default(),
                )
                .map_err(op_err)?;
                drop((lv, uv));
                let active = Active::prepare(&ctx, &Ref::scratch())?;
                {
                    let target = active.mount(&ctx)?;
                    archive::apply_layer(
                        &tar[..],
                        target.path(),
                        &archive::ApplyOptions::new(archive::WhiteoutMode::Delete),
                    )
                    .map_err(op_err)?;
                }
                Ok(vec![active.commit("diff")?])
            })
            .await
        })
    }
}
