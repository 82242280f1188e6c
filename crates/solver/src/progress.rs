//! Progress: one stream of upstream-shaped `StatusResponse` messages per job, so the daemon
//! can forward them unchanged to `Control.Status`. A vertex is re-sent whole each time it
//! changes (started, cached, completed, errored), as upstream does.

use std::time::SystemTime;

use proto::control::{StatusResponse, Vertex, VertexLog, VertexStatus};
use tokio::sync::mpsc;

/// Where a job's progress goes. Cheap to clone; sending never blocks and never fails
/// (a dropped receiver just means nobody is watching).
#[derive(Clone, Debug, Default)]
pub struct Progress {
    tx: Option<mpsc::UnboundedSender<StatusResponse>>,
}

/// The receiving end of a job's progress.
pub type ProgressStream = mpsc::UnboundedReceiver<StatusResponse>;

pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// Identity of a vertex in progress messages.
#[derive(Clone, Debug)]
pub(crate) struct VertexInfo {
    pub digest: String,
    pub name: String,
    pub inputs: Vec<String>,
}

impl Progress {
    /// A connected pair.
    pub fn channel() -> (Progress, ProgressStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress { tx: Some(tx) }, rx)
    }

    /// Progress that goes nowhere.
    pub fn discard() -> Progress {
        Progress { tx: None }
    }

    fn send(&self, msg: StatusResponse) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    fn vertex(&self, v: Vertex) {
        self.send(StatusResponse {
            vertexes: vec![v],
            ..StatusResponse::default()
        });
    }

    pub(crate) fn started(&self, v: &VertexInfo, at: SystemTime) {
        self.vertex(Vertex {
            digest: v.digest.clone(),
            inputs: v.inputs.clone(),
            name: v.name.clone(),
            started: Some(timestamp(at)),
            ..Vertex::default()
        });
    }

    pub(crate) fn cached(&self, v: &VertexInfo, at: SystemTime) {
        self.vertex(Vertex {
            digest: v.digest.clone(),
            inputs: v.inputs.clone(),
            name: v.name.clone(),
            cached: true,
            started: Some(timestamp(at)),
            completed: Some(timestamp(at)),
            ..Vertex::default()
        });
    }

    pub(crate) fn completed(
        &self,
        v: &VertexInfo,
        started: SystemTime,
        completed: SystemTime,
        error: Option<String>,
    ) {
        self.vertex(Vertex {
            digest: v.digest.clone(),
            inputs: v.inputs.clone(),
            name: v.name.clone(),
            started: Some(timestamp(started)),
            completed: Some(timestamp(completed)),
            error: error.unwrap_or_default(),
            ..Vertex::default()
        });
    }

    /// A vertex that is not an op of the graph, such as a frontend's own step (`[internal]
    /// load metadata for ...`): sent as started, then again when `completed` is given.
    pub fn step(
        &self,
        digest: &str,
        name: &str,
        started: SystemTime,
        completed: Option<SystemTime>,
        error: Option<String>,
    ) {
        self.vertex(Vertex {
            digest: digest.to_string(),
            name: name.to_string(),
            started: Some(timestamp(started)),
            completed: completed.map(timestamp),
            error: error.unwrap_or_default(),
            ..Vertex::default()
        });
    }

    /// A chunk of output of vertex `vertex` on `stream` (1 stdout, 2 stderr).
    pub fn log(&self, vertex: &str, stream: i64, data: &[u8]) {
        self.send(StatusResponse {
            logs: vec![VertexLog {
                vertex: vertex.to_string(),
                timestamp: Some(timestamp(SystemTime::now())),
                stream,
                msg: data.to_vec(),
            }],
            ..StatusResponse::default()
        });
    }

    /// A counter of vertex `vertex`: bytes pulled, files copied. `id` names the sub-task.
    #[allow(clippy::too_many_arguments)]
    pub fn status(
        &self,
        vertex: &str,
        id: &str,
        name: &str,
        current: i64,
        total: i64,
        started: SystemTime,
        completed: Option<SystemTime>,
    ) {
        self.send(StatusResponse {
            statuses: vec![VertexStatus {
                id: id.to_string(),
                vertex: vertex.to_string(),
                name: name.to_string(),
                current,
                total,
                timestamp: Some(timestamp(SystemTime::now())),
                started: Some(timestamp(started)),
                completed: completed.map(timestamp),
            }],
            ..StatusResponse::default()
        });
    }
}
