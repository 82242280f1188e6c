//! Errors of solving.

use std::sync::Arc;

/// An op's failure, as the op reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub message: String,
    /// Extra lines to show with the error (for example the last log lines of a process).
    pub details: Vec<String>,
}

impl OpError {
    pub fn new(message: impl Into<String>) -> OpError {
        OpError {
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// Why a solve failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SolveError {
    /// A vertex failed; it is named by its digest and display name.
    #[error("{name}: {source}")]
    Vertex {
        digest: String,
        name: String,
        #[source]
        source: OpError,
    },
    #[error("build cancelled")]
    Cancelled,
    #[error("invalid graph: {0}")]
    Graph(String),
    #[error("cache: {0}")]
    Cache(Arc<metadata::Error>),
}

impl From<metadata::Error> for SolveError {
    fn from(e: metadata::Error) -> SolveError {
        SolveError::Cache(Arc::new(e))
    }
}
