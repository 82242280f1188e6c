//! Errors of graph building, marshaling and Definition loading.

/// An LLB error. Every variant names the input it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid platform {spec:?}: {reason}")]
    InvalidPlatform { spec: String, reason: String },
    #[error("invalid source {identifier:?}: {reason}")]
    InvalidSource { identifier: String, reason: String },
    #[error("invalid {op} op: {reason}")]
    InvalidOp { op: &'static str, reason: String },
    #[error("invalid image config: {reason}")]
    InvalidImageConfig { reason: String },
    #[error("marshal: {0}")]
    Marshal(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Why a received Definition was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("definition is not valid protobuf: {0}")]
    Decode(String),
    #[error("definition has no ops")]
    Empty,
    #[error("op {index} is not valid protobuf: {reason}")]
    BadOp { index: usize, reason: String },
    #[error(
        "the last op must be a terminal op (no operation, exactly one input); op {digest} is not"
    )]
    MissingTerminal { digest: String },
    #[error("op {digest} is a terminal op but is not the last op")]
    MisplacedTerminal { digest: String },
    #[error("op {digest} has input {input} that is not in the definition")]
    DanglingInput { digest: String, input: String },
    #[error("op {digest} input {input} uses output {index}, which it does not have")]
    BadOutputIndex {
        digest: String,
        input: String,
        index: i64,
    },
    #[error("cycle in the build graph through op {digest}")]
    Cycle { digest: String },
    #[error("op {digest} needs capability {cap:?}, which this builder does not support")]
    UnknownCap { digest: String, cap: String },
    #[error("metadata is keyed by {key:?}, which is not an op of the definition")]
    StrayMetadata { key: String },
    #[error("op {digest}: {reason}")]
    InvalidOp { digest: String, reason: String },
}
