//! `--progress=plain` output, as upstream prints it:
//!
//! ```text
//! #1 [2/3] RUN echo hi
//! #1 0.215 hi
//! #1 DONE 0.3s
//!
//! #2 [1/3] FROM docker.io/library/busybox
//! #2 CACHED
//! ```
//!
//! A pure state machine over `StatusResponse` messages: feed it messages, print what it
//! returns. Vertices are numbered in the order they first appear.

use std::collections::HashMap;

use proto::control::StatusResponse;

fn secs(t: &prost_types::Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

#[derive(Debug, Default)]
struct VertexState {
    index: usize,
    name: String,
    started: Option<f64>,
    header: bool,
    finished: bool,
}

/// The plain progress printer.
#[derive(Debug, Default)]
pub struct PlainPrinter {
    vertices: HashMap<String, VertexState>,
    next: usize,
    /// The vertex whose lines were printed last (a blank line separates vertices).
    last: Option<String>,
    errors: Vec<String>,
}

impl PlainPrinter {
    pub fn new() -> PlainPrinter {
        PlainPrinter::default()
    }

    fn state(&mut self, digest: &str) -> &mut VertexState {
        if !self.vertices.contains_key(digest) {
            self.next += 1;
            self.vertices.insert(
                digest.to_string(),
                VertexState {
                    index: self.next,
                    ..VertexState::default()
                },
            );
        }
        self.vertices
            .get_mut(digest)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn switch_to(&mut self, digest: &str, out: &mut String) {
        if self.last.as_deref() != Some(digest) {
            if self.last.is_some() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            self.last = Some(digest.to_string());
        }
    }

    fn header(&mut self, digest: &str, out: &mut String) {
        self.switch_to(digest, out);
        let v = self.state(digest);
        if !v.header {
            v.header = true;
            out.push_str(&format!("#{} {}\n", v.index, v.name));
        }
    }

    /// The text to print for one message.
    pub fn update(&mut self, msg: &StatusResponse) -> String {
        let mut out = String::new();
        for v in &msg.vertexes {
            let st = self.state(&v.digest);
            if !v.name.is_empty() {
                st.name = v.name.clone();
            }
            if st.finished {
                continue;
            }
            if let Some(t) = &v.started {
                st.started.get_or_insert(secs(t));
            }
            if v.cached {
                self.header(&v.digest, &mut out);
                let st = self.state(&v.digest);
                st.finished = true;
                out.push_str(&format!("#{} CACHED\n", st.index));
                continue;
            }
            if v.started.is_some() || v.completed.is_some() {
                self.header(&v.digest, &mut out);
            }
            if let Some(done) = &v.completed {
                let st = self.state(&v.digest);
                st.finished = true;
                let index = st.index;
                let took = st.started.map_or(0.0, |s| (secs(done) - s).max(0.0));
                if v.error.is_empty() {
                    out.push_str(&format!("#{index} DONE {took:.1}s\n"));
                } else {
                    out.push_str(&format!("#{index} ERROR: {}\n", v.error));
                    self.errors.push(v.error.clone());
                }
            }
        }
        for s in &msg.statuses {
            self.header(&s.vertex, &mut out);
            let index = self.state(&s.vertex).index;
            let name = if s.name.is_empty() { &s.id } else { &s.name };
            let done = if s.completed.is_some() { " done" } else { "" };
            if s.total > 0 {
                out.push_str(&format!(
                    "#{index} {name} {} / {}{done}\n",
                    s.current, s.total
                ));
            } else {
                out.push_str(&format!("#{index} {name} {}{done}\n", s.current));
            }
        }
        for l in &msg.logs {
            self.header(&l.vertex, &mut out);
            let st = self.state(&l.vertex);
            let at = match (&l.timestamp, st.started) {
                (Some(t), Some(s)) => (secs(t) - s).max(0.0),
                _ => 0.0,
            };
            let index = st.index;
            for line in String::from_utf8_lossy(&l.msg).lines() {
                out.push_str(&format!("#{index} {at:.3} {line}\n"));
            }
        }
        out
    }

    /// The errors seen, in order.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::{Vertex, VertexLog};

    fn ts(s: f64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s as i64,
            nanos: ((s.fract()) * 1e9) as i32,
        })
    }

    fn vertex(
        d: &str,
        name: &str,
        started: Option<f64>,
        done: Option<f64>,
        cached: bool,
        err: &str,
    ) -> StatusResponse {
        StatusResponse {
            vertexes: vec![Vertex {
                digest: d.into(),
                name: name.into(),
                started: started.and_then(ts),
                completed: done.and_then(ts),
                cached,
                error: err.into(),
                ..Vertex::default()
            }],
            ..StatusResponse::default()
        }
    }

    #[test]
    fn prints_like_upstream_plain() {
        let mut p = PlainPrinter::new();
        let mut out = String::new();
        out += &p.update(&vertex(
            "a",
            "[1/2] FROM busybox",
            Some(10.0),
            Some(10.0),
            true,
            "",
        ));
        out += &p.update(&vertex(
            "b",
            "[2/2] RUN echo hi",
            Some(10.0),
            None,
            false,
            "",
        ));
        out += &p.update(&StatusResponse {
            logs: vec![VertexLog {
                vertex: "b".into(),
                timestamp: ts(10.25),
                stream: 1,
                msg: b"hi\n".to_vec(),
            }],
            ..StatusResponse::default()
        });
        out += &p.update(&vertex(
            "b",
            "[2/2] RUN echo hi",
            Some(10.0),
            Some(10.3),
            false,
            "",
        ));
        out += &p.update(&vertex(
            "c",
            "broken",
            Some(11.0),
            Some(11.5),
            false,
            "exit code: 1",
        ));
        assert_eq!(
            out,
            "#1 [1/2] FROM busybox\n#1 CACHED\n\n#2 [2/2] RUN echo hi\n#2 0.250 hi\n#2 DONE 0.3s\n\n#3 broken\n#3 ERROR: exit code: 1\n"
        );
        assert_eq!(p.errors(), ["exit code: 1"]);
    }
}
