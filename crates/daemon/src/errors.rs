//! The one place where errors become gRPC statuses.

use solver::SolveError;
use tonic::Status;

/// A feature this daemon does not have yet.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet in buildkit-rs"))
}

/// A failed solve: the vertex and its error. The step's output is not repeated here: the
/// client already has it from the progress stream and shows its last lines (as upstream).
pub(crate) fn solve_status(e: &SolveError) -> Status {
    match e {
        SolveError::Vertex { .. } => Status::unknown(e.to_string()),
        SolveError::Cancelled => Status::cancelled(e.to_string()),
        SolveError::Graph(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}
