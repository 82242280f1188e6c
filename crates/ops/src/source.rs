//! Source ops: `docker-image://` (pulled and unpacked by the worker) and `local://`
//! (filled by the [`LocalProvider`](crate::LocalProvider), incrementally where it can:
//! see [`localsync`]); `http(s)://` and `git://` are fetched by [`remote`].

use std::sync::Arc;

use oci::Digest;
use proto::pb;
use solver::{BoxFuture, CacheMap, Op, OpContext, OpError};

use crate::{
    BuildSession, OpsContext, Ref, SessionCredentials, blocking, localsync, op_err, remote,
};

pub(crate) struct SourceOp {
    pub(crate) ctx: Arc<OpsContext>,
    pub(crate) source: pb::SourceOp,
    pub(crate) platform: llb::Platform,
    /// sha256 of the op without inputs.
    pub(crate) op_digest: Digest,
    /// The job's client session: registry credentials come from it.
    pub(crate) session: Option<Arc<dyn BuildSession>>,
    /// What `cache_map` of an http or git source found, for `exec`.
    pub(crate) resolved: remote::Resolved,
}

impl SourceOp {
    fn image_ref(&self) -> Option<&str> {
        self.source.identifier.strip_prefix("docker-image://")
    }

    fn local_name(&self) -> Option<&str> {
        self.source.identifier.strip_prefix("local://")
    }

    fn credentials(&self) -> Option<SessionCredentials<'_>> {
        self.session.as_deref().map(SessionCredentials)
    }
}

impl Op<Ref> for SourceOp {
    fn cache_map<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>> {
        Box::pin(async move {
            if let Some(r) = self.image_ref() {
                // The key follows what the tag points at now. Resolved with this job's
                // credentials: a build that may not pull the image does not get its key.
                let creds = self.credentials();
                let manifest = self
                    .ctx
                    .worker
                    .registry
                    .resolve_with(
                        r,
                        &self.platform,
                        creds.as_ref().map(|c| c as &dyn registry::CredentialSource),
                    )
                    .await
                    .map_err(op_err)?;
                let mut material = self.op_digest.as_bytes().to_vec();
                material.extend_from_slice(manifest.as_bytes());
                return Ok(CacheMap {
                    digest: Digest::of(&material),
                    deps: Vec::new(),
                    always_run: false,
                });
            }
            if self.local_name().is_some() {
                // Synced again every build; what uses it is keyed by content.
                return Ok(CacheMap {
                    digest: self.op_digest,
                    deps: Vec::new(),
                    always_run: true,
                });
            }
            if remote::handles(&self.source.identifier) {
                return remote::cache_map(self, ctx).await;
            }
            Err(OpError::new(format!(
                "source {}: this source type is not supported yet",
                self.source.identifier
            )))
        })
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        _: Vec<Ref>,
    ) -> BoxFuture<'a, Result<Vec<Ref>, OpError>> {
        Box::pin(async move {
            if let Some(r) = self.image_ref() {
                let started = std::time::SystemTime::now();
                let creds = self.credentials();
                let (image, top) = self
                    .ctx
                    .worker
                    .pull_with(
                        r,
                        &self.platform,
                        None,
                        creds.as_ref().map(|c| c as &dyn registry::CredentialSource),
                    )
                    .await
                    .map_err(op_err)?;
                let total: u64 = image.layers.iter().map(|l| l.1).sum();
                ctx.progress.status(
                    &ctx.vertex,
                    &image.manifest_digest.to_string(),
                    &format!("resolve {r}"),
                    total as i64,
                    total as i64,
                    started,
                    Some(std::time::SystemTime::now()),
                );
                let result = match top {
                    None => Ref::scratch(),
                    Some(top) => self.ctx.use_ref(
                        &top,
                        crate::RecordType::Regular,
                        &format!("pulled from {r}"),
                    )?,
                };
                return Ok(vec![result]);
            }
            if remote::handles(&self.source.identifier) {
                return remote::exec(self, ctx).await;
            }
            let Some(name) = self.local_name().map(String::from) else {
                return Err(OpError::new(format!(
                    "source {}: not supported",
                    self.source.identifier
                )));
            };
            let ops = self.ctx.clone();
            let attrs = self.source.attrs.clone();
            let started = std::time::SystemTime::now();
            let (r, stats) = {
                let name = name.clone();
                blocking(move || localsync::sync(&ops, &name, &attrs)).await?
            };
            // Upstream's id, so its clients show the bytes after it; the name carries
            // them already formatted for clients that print names.
            let id = format!("transferring {name}:");
            ctx.progress.status(
                &ctx.vertex,
                &id,
                &format!("{id} {}", localsync::human_size(stats.bytes)),
                i64::try_from(stats.bytes).unwrap_or(i64::MAX),
                0,
                started,
                Some(std::time::SystemTime::now()),
            );
            Ok(vec![r])
        })
    }
}
