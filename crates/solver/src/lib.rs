//! The generic solver: runs a graph of vertices concurrently, computes a cache key for
//! every vertex, runs vertices with equal keys once (also across concurrent jobs), keeps
//! results in a persistent cache, and streams progress.
//!
//! It knows nothing of LLB op kinds: an op is anything implementing [`Op`], producing
//! results of a type `R` that the solver only clones, passes on, and persists through a
//! [`ResultStore`]. The LLB layer (`ops`) plugs exec, file, source, merge and diff ops in.
//!
//! Cache keys: a vertex's key is derived from its op's [`CacheMap`] digest and, for each
//! input, either the input's own key (definition-based) or a digest of the input's
//! content that the op computes ([`Dep::content_based`]), so an op that only reads some
//! paths of its input is not invalidated by changes elsewhere. See [`key`].
#![forbid(unsafe_code)]

mod cache;
mod error;
pub mod key;
mod op;
pub mod progress;
mod solver;

pub use cache::{CacheRecord, PersistentCache};
pub use error::{OpError, SolveError};
pub use op::{BoxFuture, CacheMap, Dep, Op, OpContext, ResultStore};
pub use progress::{Progress, ProgressStream};
pub use solver::{
    CacheSource, Edge, Graph, SolveOptions, Solved, SolvedVertex, Solver, SolverOptions, Vertex,
};
