//! What the solver needs from an op and from the result store.

use std::future::Future;
use std::pin::Pin;

use oci::Digest;
use tokio_util::sync::CancellationToken;

use crate::error::OpError;
use crate::progress::Progress;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an op consumes one of its inputs, for its cache key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dep {
    /// A sub-path (or set of paths) of the input the op reads; part of the key.
    pub selector: Option<String>,
    /// The op reads the input's content (a COPY source, a local context): its key then
    /// uses [`Op::content_digest`] of the input instead of the input's own cache key.
    pub content_based: bool,
}

/// The cache-relevant description of an op: a digest of everything about the op itself
/// that affects its result, and how it uses each input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheMap {
    pub digest: Digest,
    pub deps: Vec<Dep>,
    /// The op must run every time (a local source re-syncs each build); its dependents
    /// should then use content-based keys to stay cached.
    pub always_run: bool,
}

/// What an op sees while it runs.
#[derive(Clone, Debug)]
pub struct OpContext {
    /// The vertex digest (for progress).
    pub vertex: String,
    pub progress: Progress,
    /// Cancelled when no job needs the result any more.
    pub cancel: CancellationToken,
}

/// An operation of the graph, producing results of type `R`.
pub trait Op<R>: Send + Sync + 'static {
    /// The op's cache map; may do I/O (resolving an image tag to a digest, say).
    fn cache_map<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<CacheMap, OpError>>;

    /// A digest of the content of input `index` as this op reads it (only called for
    /// content-based deps). Equal content from different sources gives equal digests.
    fn content_digest<'a>(
        &'a self,
        ctx: &'a OpContext,
        index: usize,
        input: &'a R,
    ) -> BoxFuture<'a, Result<Digest, OpError>> {
        let _ = (ctx, input);
        Box::pin(async move {
            Err(OpError::new(format!(
                "input {index} is declared content-based but the op computes no content digest"
            )))
        })
    }

    /// Runs the op over its inputs' results and returns its outputs.
    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<R>,
    ) -> BoxFuture<'a, Result<Vec<R>, OpError>>;
}

/// Persists results: the solver stores result ids in its cache and asks for them back
/// (after a restart too).
pub trait ResultStore<R>: Send + Sync + 'static {
    /// A stable id for `result`.
    fn id(&self, result: &R) -> String;
    /// The result with `id`, if it still exists.
    fn load(&self, id: &str) -> Option<R>;
}
