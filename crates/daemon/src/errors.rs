//! The one place where errors become gRPC statuses.

use solver::SolveError;
use tonic::Status;

/// A feature this daemon does not have yet.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet in buildkit-rs"))
}

/// A failed solve: the vertex and its error, with the process's last output lines.
pub(crate) fn solve_status(e: &SolveError) -> Status {
    match e {
        SolveError::Vertex { source, .. } => {
            let mut msg = e.to_string();
            for line in &source.details {
                msg.push('\n');
                msg.push_str(line);
            }
            Status::unknown(msg)
        }
        SolveError::Cancelled => Status::cancelled(e.to_string()),
        SolveError::Graph(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}
