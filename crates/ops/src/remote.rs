//! Sources fetched by the daemon from the network: `http(s)://` files ([`crate::http`])
//! and `git://` repositories ([`crate::git`]).
//!
//! Their cache keys depend on what the remote serves now, so `cache_map` contacts it (a
//! download, an `ls-remote`), and `exec` must then build exactly what the key was made
//! from: the op keeps what `cache_map` found in its [`Resolved`] for its `exec` (the
//! solver runs both on the same op). When the cache hits, `exec` never runs, and what was
//! kept (a downloaded file) goes with the op when the solve's graph is dropped.

use std::sync::Mutex;

use oci::Digest;
use solver::{CacheMap, OpContext, OpError};

use crate::git::{self, GitSource, Pinned};
use crate::http::{self, Download, HttpSource, Validator};
use crate::source::SourceOp;
use crate::{Ref, blocking, op_err};

/// What `cache_map` of a network source found, for its `exec`.
#[derive(Debug, Default)]
pub(crate) struct Resolved(Mutex<Option<Resolution>>);

#[derive(Debug)]
enum Resolution {
    /// The file the key was made from.
    Http(Download),
    /// The server said the content is still the one with this digest (`304 Not
    /// Modified`): `exec` downloads it and checks that it is.
    HttpUnchanged(Digest),
    Git(Pinned),
}

impl Resolved {
    fn put(&self, r: Resolution) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    fn take(&self) -> Option<Resolution> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Whether `identifier` is a source this module fetches.
pub(crate) fn handles(identifier: &str) -> bool {
    identifier.starts_with("http://")
        || identifier.starts_with("https://")
        || identifier.starts_with("git://")
}

/// The key of a network source: a digest of the op's own digest and what the remote
/// serves (`material`).
fn key(kind: &str, op: &SourceOp, material: serde_json::Value) -> CacheMap {
    let material = serde_json::json!([kind, op.op_digest.to_string(), material]);
    CacheMap {
        digest: Digest::of(material.to_string().as_bytes()),
        deps: Vec::new(),
        always_run: false,
    }
}

pub(crate) async fn cache_map(op: &SourceOp, ctx: &OpContext) -> Result<CacheMap, OpError> {
    let session = op.session.as_deref();
    let (id, attrs) = (&op.source.identifier, &op.source.attrs);
    if id.starts_with("git://") {
        let src = GitSource::parse(id, attrs).map_err(op_err)?;
        let pinned = git::resolve(&op.ctx, &src, session, ctx)
            .await
            .map_err(op_err)?;
        let map = key("git/v1", op, pinned.key_material());
        op.resolved.put(Resolution::Git(pinned));
        return Ok(map);
    }
    let src = HttpSource::parse(id, attrs).map_err(op_err)?;
    if let Some(checksum) = src.checksum() {
        // The checksum is the content: no need to download unless the cache misses.
        let material = serde_json::json!([checksum.to_string(), src.static_filename()]);
        return Ok(key("http/v1", op, material));
    }
    // Ask whether the version seen last time is still current: if so, no download.
    let known = {
        let (md, op_digest) = (op.ctx.worker.metadata.clone(), op.op_digest);
        blocking(move || Ok(Validator::load(md.as_ref(), &op_digest))).await?
    };
    let tmp = op.ctx.worker.tmp_dir();
    let fetched = src
        .download(session, &tmp, ctx, known.as_ref().map(Validator::etag))
        .await
        .map_err(op_err)?;
    match (fetched, known) {
        (Some(dl), _) => {
            if let Some(v) = dl.validator() {
                let (md, op_digest) = (op.ctx.worker.metadata.clone(), op.op_digest);
                blocking(move || {
                    v.save(md.as_ref(), &op_digest);
                    Ok(())
                })
                .await?;
            }
            let map = key("http/v1", op, dl.key_material());
            op.resolved.put(Resolution::Http(dl));
            Ok(map)
        }
        (None, Some(v)) => {
            op.resolved.put(Resolution::HttpUnchanged(v.digest()));
            Ok(key("http/v1", op, v.key_material()))
        }
        // `download` only answers "unchanged" when asked with a validator.
        (None, None) => Err(OpError::new(format!(
            "http GET {}: not modified, but nothing was asked",
            src.shown()
        ))),
    }
}

pub(crate) async fn exec(op: &SourceOp, ctx: &OpContext) -> Result<Vec<Ref>, OpError> {
    let session = op.session.as_deref();
    let (id, attrs) = (&op.source.identifier, &op.source.attrs);
    let kept = op.resolved.take();
    if id.starts_with("git://") {
        let src = GitSource::parse(id, attrs).map_err(op_err)?;
        let pinned = match kept {
            Some(Resolution::Git(p)) => p,
            _ => git::resolve(&op.ctx, &src, session, ctx)
                .await
                .map_err(op_err)?,
        };
        let r = git::checkout(&op.ctx, &src, &pinned, session, ctx).await?;
        tracing::debug!(
            remote = src.target(),
            commit = pinned.commit(),
            "git source checked out"
        );
        return Ok(vec![r]);
    }
    let src = HttpSource::parse(id, attrs).map_err(op_err)?;
    let (dl, expected, revalidated) = match kept {
        Some(Resolution::Http(dl)) => (dl, src.checksum(), false),
        other => {
            // Pinned by a checksum, or by what the server said was unchanged.
            let (expected, revalidated) = match other {
                Some(Resolution::HttpUnchanged(d)) => (Some(d), true),
                _ => (src.checksum(), false),
            };
            let dl = src
                .download(session, &op.ctx.worker.tmp_dir(), ctx, None)
                .await
                .map_err(op_err)?
                .ok_or_else(|| OpError::new(format!("http GET {}: no content", src.shown())))?;
            (dl, expected, revalidated)
        }
    };
    if let Err(e) = http::verify(&src, expected, &dl) {
        if revalidated {
            // The server kept the ETag for new content: stop trusting it, so that the
            // next build keys by what it downloads.
            let (md, op_digest) = (op.ctx.worker.metadata.clone(), op.op_digest);
            blocking(move || {
                Validator::forget(md.as_ref(), &op_digest);
                Ok(())
            })
            .await?;
        }
        return Err(op_err(e));
    }
    tracing::debug!(url = src.shown(), digest = %dl.digest(), size = dl.size(), "http source");
    let ops = op.ctx.clone();
    let r = blocking(move || http::write_snapshot(&ops, &src, &dl)).await?;
    Ok(vec![r])
}
