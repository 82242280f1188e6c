//! File ops: chains of mkdir, mkfile, rm, symlink and copy actions, run on snapshots by
//! the `fileop` crate. Copy sources are consumed by content.

use std::path::Path;
use std::sync::Arc;

use oci::Digest;
use proto::pb;
use solver::{BoxFuture, CacheMap, Dep, Op, OpContext, OpError};

use crate::mounted::{Active, view};
use crate::{OpsContext, Ref, blocking, op_err};

pub(crate) struct FileOp {
    pub(crate) ctx: Arc<OpsContext>,
    pub(crate) file: pb::FileOp,
    pub(crate) op_digest: Digest,
    pub(crate) inputs: usize,
}

/// The content digest of `path` in `r`, cached per snapshot by the content hasher.
pub(crate) async fn checksum(
    ctx: &Arc<OpsContext>,
    r: &Ref,
    path: &str,
    follow_links: bool,
    include: &[String],
    exclude: &[String],
    wildcard: bool,
) -> Result<Digest, OpError> {
    let ctx = ctx.clone();
    let r = r.clone();
    let opts = contenthash::ChecksumOptions {
        follow_links,
        wildcard,
        include_patterns: include.to_vec(),
        exclude_patterns: exclude.to_vec(),
        allow_missing: wildcard,
    };
    let path = path.to_string();
    blocking(move || {
        let v = view(&ctx, &r)?;
        let id = r.key().unwrap_or("scratch");
        ctx.hasher
            .checksum_ref(id, v.path(), &path, &opts)
            .map_err(op_err)
    })
    .await
}

fn copies_of(file: &pb::FileOp, input: usize) -> Vec<&pb::FileActionCopy> {
    file.actions
        .iter()
        .filter(|a| a.secondary_input == input as i64)
        .filter_map(|a| match &a.action {
            Some(pb::file_action::Action::Copy(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether any action uses input `i` other than as a copy source (as the base, or for
/// user names).
fn used_otherwise(file: &pb::FileOp, i: i64) -> bool {
    let named = |c: &Option<pb::ChownOpt>| {
        c.iter()
            .flat_map(|c| [&c.user, &c.group])
            .flatten()
            .any(|u| matches!(&u.user, Some(pb::user_opt::User::ByName(n)) if n.input == i))
    };
    file.actions.iter().any(|a| {
        a.input == i
            || match &a.action {
                Some(pb::file_action::Action::Copy(c)) => named(&c.owner),
                Some(pb::file_action::Action::Mkdir(m)) => named(&m.owner),
                Some(pb::file_action::Action::Mkfile(m)) => named(&m.owner),
                Some(pb::file_action::Action::Symlink(s)) => named(&s.owner),
                _ => false,
            }
            || (a.secondary_input == i
                && !matches!(a.action, Some(pb::file_action::Action::Copy(_))))
    })
}

impl Op<Ref> for FileOp {
    fn cache_map<'a>(&'a self, _: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(async move {
            let deps = (0..self.inputs)
                .map(|i| {
                    let copies = copies_of(&self.file, i);
                    if copies.is_empty() || used_otherwise(&self.file, i as i64) {
                        return Dep::default();
                    }
                    let selector: Vec<String> = copies.iter().map(|c| c.src.clone()).collect();
                    Dep {
                        selector: Some(selector.join("\0")),
                        content_based: true,
                    }
                })
                .collect();
            Ok(CacheMap {
                digest: self.op_digest,
                deps,
                always_run: false,
            })
        })
    }

    fn content_digest<'a>(
        &'a self,
        _: &'a OpContext,
        index: usize,
        input: &'a Ref,
    ) -> BoxFuture<'a, Result<Digest, OpError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for c in copies_of(&self.file, index) {
                let d = checksum(
                    &self.ctx,
                    input,
                    &c.src,
                    c.follow_symlink,
                    &c.include_patterns,
                    &c.exclude_patterns,
                    c.allow_wildcard,
                )
                .await
                .map_err(|e| OpError::new(format!("checksum of {}: {}", c.src, e.message)))?;
                all.extend_from_slice(d.as_bytes());
            }
            Ok(Digest::of(&all))
        })
    }

    fn exec<'a>(
        &'a self,
        op: &'a OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'a, Result<Vec<Ref>, OpError>> {
        let ctx = self.ctx.clone();
        let file = self.file.clone();
        Box::pin(async move {
            let started = std::time::SystemTime::now();
            let (out, copied) = blocking(move || run_actions(&ctx, &file, &inputs)).await?;
            if copied.files > 0 {
                // files copied, as a counter the progress UI shows
                op.progress.status(
                    &op.vertex,
                    "copy",
                    &format!("copying {} files, {} bytes", copied.files, copied.bytes),
                    copied.files as i64,
                    copied.files as i64,
                    started,
                    Some(std::time::SystemTime::now()),
                );
            }
            Ok(out)
        })
    }
}

fn resolve(inputs: &[Ref], results: &[Ref], i: i64) -> Result<Ref, OpError> {
    let Ok(i) = usize::try_from(i) else {
        return Ok(Ref::scratch());
    };
    if i < inputs.len() {
        return Ok(inputs[i].clone());
    }
    results
        .get(i - inputs.len())
        .cloned()
        .ok_or_else(|| OpError::new(format!("file action refers to input {i}, not yet made")))
}

/// The owner for an action, resolving user names in the named input's /etc files.
fn owner(
    ctx: &OpsContext,
    chown: &Option<pb::ChownOpt>,
    inputs: &[Ref],
    results: &[Ref],
) -> Result<Option<fileop::Owner>, OpError> {
    let Some(c) = chown else { return Ok(None) };
    let named = [&c.user, &c.group]
        .into_iter()
        .flatten()
        .find_map(|u| match &u.user {
            Some(pb::user_opt::User::ByName(n)) => Some(n.input),
            _ => None,
        });
    match named {
        None => fileop::resolve_owner(c, None).map_err(op_err),
        Some(i) => {
            let r = resolve(inputs, results, i)?;
            let v = view(ctx, &r)?;
            fileop::resolve_owner(c, Some(v.path())).map_err(op_err)
        }
    }
}

/// Totals of what the copies of a file op moved.
#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
}

fn run_actions(
    ctx: &OpsContext,
    file: &pb::FileOp,
    inputs: &[Ref],
) -> Result<(Vec<Ref>, Copied), OpError> {
    let mut results: Vec<Ref> = Vec::with_capacity(file.actions.len());
    let mut output = None;
    let mut copied = Copied::default();
    for (n, a) in file.actions.iter().enumerate() {
        let base = resolve(inputs, &results, a.input)?;
        let active = Active::prepare(ctx, &base)?;
        {
            let m = active.mount(ctx)?;
            let root: &Path = m.path();
            let fail = |what: &str, e: fileop::Error| OpError::new(format!("{what}: {e}"));
            match &a.action {
                Some(pb::file_action::Action::Mkdir(x)) => {
                    let o = owner(ctx, &x.owner, inputs, &results)?;
                    fileop::mkdir(root, x, o).map_err(|e| fail("mkdir", e))?;
                }
                Some(pb::file_action::Action::Mkfile(x)) => {
                    let o = owner(ctx, &x.owner, inputs, &results)?;
                    fileop::mkfile(root, x, o).map_err(|e| fail("mkfile", e))?;
                }
                Some(pb::file_action::Action::Rm(x)) => {
                    fileop::rm(root, x).map_err(|e| fail("rm", e))?;
                }
                Some(pb::file_action::Action::Symlink(x)) => {
                    let o = owner(ctx, &x.owner, inputs, &results)?;
                    fileop::symlink(root, x, o).map_err(|e| fail("symlink", e))?;
                }
                Some(pb::file_action::Action::Copy(x)) => {
                    let o = owner(ctx, &x.owner, inputs, &results)?;
                    let src = resolve(inputs, &results, a.secondary_input)?;
                    let v = view(ctx, &src)?;
                    let stats = fileop::copy(v.path(), root, x, o).map_err(|e| fail("copy", e))?;
                    copied.files += stats.files;
                    copied.bytes += stats.bytes;
                }
                None => return Err(OpError::new(format!("file action {n} has no action"))),
            }
        }
        let r = active.commit(&format!("file action {n}"))?;
        if a.output == 0 {
            output = Some(r.clone());
        }
        results.push(r);
    }
    let output = output.ok_or_else(|| OpError::new("file op has no output action"))?;
    Ok((vec![output], copied))
}
