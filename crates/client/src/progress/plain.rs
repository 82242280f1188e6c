//! `--progress=plain` output, as upstream prints it:
//!
//! ```text
//! #1 [1/3] FROM docker.io/library/busybox
//! #1 CACHED
//!
//! #2 [2/3] RUN echo hi
//! #2 0.215 hi
//! #2 DONE 0.3s
//!
//! #3 [3/3] RUN false
//! #3 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1
//! ------
//!  > [3/3] RUN false:
//! ------
//! ```
//!
//! A pure state machine over `StatusResponse` messages: feed it messages, print what it
//! returns, and print what [`PlainPrinter::finish`] returns at the end (the summary of
//! failed steps). Vertices are numbered in the order they first appear.

use std::collections::HashMap;

use proto::control::StatusResponse;

use super::trace::{self, Trace, is_canceled, log_offset, secs};
use super::units;

/// A counter line is printed again only when it moved this much of its total...
const MIN_PROGRESS_DELTA: f64 = 0.05;
/// ...or this many seconds passed, so a download does not print a line per chunk.
const MIN_TIME_DELTA: f64 = 5.0;

#[derive(Debug, Default)]
struct VertexState {
    index: usize,
    header: bool,
    finished: bool,
}

/// The plain progress printer.
#[derive(Debug, Default)]
pub struct PlainPrinter {
    trace: Trace,
    vertices: HashMap<String, VertexState>,
    next: usize,
    /// The vertex whose lines were printed last (a blank line separates vertices).
    last: Option<String>,
    /// The last printed line is output without its newline yet; only the vertex in
    /// `last` can continue it.
    open_line: bool,
    /// What each counter showed when it was last printed: (current, timestamp).
    counters: HashMap<String, (i64, f64)>,
    errors: Vec<String>,
}

impl PlainPrinter {
    pub fn new() -> PlainPrinter {
        PlainPrinter::default()
    }

    fn state(&mut self, digest: &str) -> &mut VertexState {
        let next = &mut self.next;
        self.vertices.entry(digest.to_string()).or_insert_with(|| {
            *next += 1;
            VertexState {
                index: *next,
                ..VertexState::default()
            }
        })
    }

    fn finished(&self, digest: &str) -> bool {
        self.vertices.get(digest).is_some_and(|v| v.finished)
    }

    /// Ends a log line left open by output without a trailing newline.
    fn close_line(&mut self, out: &mut String) {
        if self.open_line {
            out.push('\n');
            self.open_line = false;
        }
    }

    fn switch_to(&mut self, digest: &str, out: &mut String) {
        if self.last.as_deref() != Some(digest) {
            self.close_line(out);
            if self.last.is_some() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            self.last = Some(digest.to_string());
        }
    }

    /// Makes `digest` the current vertex, printing its `#N name` line the first time;
    /// returns its number.
    fn header(&mut self, digest: &str, out: &mut String) -> usize {
        self.switch_to(digest, out);
        let name = self
            .trace
            .step(digest)
            .map(|s| s.title().to_string())
            .unwrap_or_default();
        let v = self.state(digest);
        let index = v.index;
        if !v.header {
            v.header = true;
            out.push_str(&format!("#{index} {name}\n"));
        }
        index
    }

    /// A whole line for vertex `digest`.
    fn line(&mut self, digest: &str, text: &str, out: &mut String) {
        let index = self.header(digest, out);
        self.close_line(out);
        out.push_str(&format!("#{index} {text}\n"));
    }

    /// The text to print for one message.
    pub fn update(&mut self, msg: &StatusResponse) -> String {
        // the plain printer never shows running times, so the local clock does not matter
        self.trace.update(msg, 0.0);
        let mut out = String::new();
        for v in &msg.vertexes {
            // numbers are given when a vertex is first printed, not when it is announced
            if self.finished(&v.digest) {
                continue;
            }
            if v.cached {
                self.line(&v.digest, "CACHED", &mut out);
                self.state(&v.digest).finished = true;
            } else if v.started.is_some() || v.completed.is_some() {
                self.header(&v.digest, &mut out);
            }
        }
        for s in &msg.statuses {
            if self.trace.step(&s.vertex).is_none() {
                continue;
            }
            let Some(started) = s.started.as_ref().map(secs) else {
                continue;
            };
            let at = s.timestamp.as_ref().map_or(0.0, secs);
            let completed = s.completed.as_ref().map(secs);
            let last = self.counters.get(&s.id).copied();
            if let (Some((current, when)), None) = (last, completed) {
                let moved = if s.total > 0 {
                    s.current.saturating_sub(current) as f64 / s.total as f64
                } else {
                    0.0
                };
                if moved < MIN_PROGRESS_DELTA && at - when < MIN_TIME_DELTA {
                    continue;
                }
            }
            self.counters.insert(s.id.clone(), (s.current, at));
            let mut text = s.id.clone();
            if let Some(p) = units::progress(s.current, s.total) {
                text.push(' ');
                text.push_str(&p);
            }
            let took = completed.unwrap_or(at) - started;
            if took > 0.01 {
                text.push_str(&format!(" {took:.1}s"));
            }
            if completed.is_some() {
                text.push_str(" done");
            }
            self.line(&s.vertex, &text, &mut out);
        }
        for w in &msg.warnings {
            if self.trace.step(&w.vertex).is_some() {
                let text = format!("WARN: {}", String::from_utf8_lossy(&w.short));
                self.line(&w.vertex, &text, &mut out);
            }
        }
        for l in &msg.logs {
            let Some(step) = self.trace.step(&l.vertex) else {
                continue;
            };
            if l.msg.is_empty() {
                continue;
            }
            let at = match (&l.timestamp, step.last_start()) {
                (Some(t), Some(start)) => secs(t) - start,
                _ => 0.0,
            };
            let continues = self.open_line && self.last.as_deref() == Some(l.vertex.as_str());
            let index = self.header(&l.vertex, &mut out);
            let data = l.msg.strip_suffix(b"\n").unwrap_or(&l.msg);
            for (n, segment) in data.split(|&b| b == b'\n').enumerate() {
                if n > 0 {
                    out.push('\n');
                }
                if n > 0 || !continues {
                    out.push_str(&format!("#{index} {} ", log_offset(at)));
                }
                out.push_str(&String::from_utf8_lossy(segment));
            }
            self.open_line = !l.msg.ends_with(b"\n");
            if !self.open_line {
                out.push('\n');
            }
        }
        for v in &msg.vertexes {
            let Some(done) = &v.completed else {
                continue;
            };
            if self.finished(&v.digest) {
                continue;
            }
            let text = if v.error.is_empty() {
                let took = self
                    .trace
                    .step(&v.digest)
                    .map_or(0.0, |s| trace::duration(&s.intervals, secs(done)));
                format!("DONE {took:.1}s")
            } else if is_canceled(&v.error) {
                "CANCELED".to_string()
            } else {
                self.errors.push(v.error.clone());
                format!("ERROR: {}", v.error)
            };
            self.line(&v.digest, &text, &mut out);
            self.state(&v.digest).finished = true;
        }
        out
    }

    /// The text to print after the last message: the failed steps with their last
    /// output lines.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.close_line(&mut out);
        out.push_str(&self.trace.error_summary());
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
    use crate::progress::trace::tests::{counter, log, vertex};

    fn run(p: &mut PlainPrinter, msgs: &[StatusResponse]) -> String {
        msgs.iter().map(|m| p.update(m)).collect()
    }

    #[test]
    fn prints_like_upstream_plain() {
        let mut p = PlainPrinter::new();
        let out = run(
            &mut p,
            &[
                vertex("a", "[1/2] FROM busybox", Some(10.0), Some(10.0), true, ""),
                vertex("b", "[2/2] RUN echo hi", Some(10.0), None, false, ""),
                log("b", 10.25, "hi\n"),
                vertex("b", "[2/2] RUN echo hi", Some(10.0), Some(10.3), false, ""),
                vertex("c", "broken", Some(11.0), None, false, ""),
                log("c", 11.125, "oops\n"),
                vertex("c", "broken", Some(11.0), Some(11.5), false, "exit code: 1"),
                vertex(
                    "d",
                    "sibling",
                    Some(11.0),
                    Some(11.5),
                    false,
                    "context canceled",
                ),
            ],
        );
        assert_eq!(
            out,
            "#1 [1/2] FROM busybox\n#1 CACHED\n\n\
             #2 [2/2] RUN echo hi\n#2 0.250 hi\n#2 DONE 0.3s\n\n\
             #3 broken\n#3 0.125 oops\n#3 ERROR: exit code: 1\n\n\
             #4 sibling\n#4 CANCELED\n"
        );
        assert_eq!(p.errors(), ["exit code: 1"]);
        assert_eq!(p.finish(), "------\n > broken:\n0.125 oops\n------\n");
    }

    #[test]
    fn partial_lines_continue_and_are_closed_on_switch() {
        let mut p = PlainPrinter::new();
        let out = run(
            &mut p,
            &[
                vertex("a", "a", Some(1.0), None, false, ""),
                vertex("b", "b", Some(1.0), None, false, ""),
                log("a", 1.5, "one\ntw"),
                log("a", 1.6, "o\nthr"),
                log("b", 1.7, "other\n"),
                log("a", 12.0, "ee"),
            ],
        );
        assert_eq!(
            out,
            "#1 a\n\n#2 b\n\n#1 0.500 one\n#1 0.500 two\n#1 0.600 thr\n\n#2 0.700 other\n\n#1 11.00 ee"
        );
        assert_eq!(p.finish(), "\n");
    }

    #[test]
    fn counters_print_like_upstream_and_are_throttled() {
        let mut p = PlainPrinter::new();
        let out = run(
            &mut p,
            &[
                vertex("a", "pull", Some(1.0), None, false, ""),
                counter("a", "sha256:layer", 0, 100_000, 1.0, 1.0, None),
                // 1% more and 1s later: not worth a line
                counter("a", "sha256:layer", 1_000, 100_000, 1.0, 2.0, None),
                counter("a", "sha256:layer", 50_000, 100_000, 1.0, 2.5, None),
                counter("a", "sha256:layer", 100_000, 100_000, 1.0, 3.0, Some(3.0)),
                counter("a", "extracting", 0, 0, 3.0, 3.0, Some(3.005)),
            ],
        );
        assert_eq!(
            out,
            "#1 pull\n#1 sha256:layer 0B / 100.00kB\n#1 sha256:layer 50.00kB / 100.00kB 1.5s\n\
             #1 sha256:layer 100.00kB / 100.00kB 2.0s done\n#1 extracting done\n"
        );
    }

    #[test]
    fn unknown_vertices_and_odd_input_do_not_panic() {
        let mut p = PlainPrinter::new();
        let out = run(
            &mut p,
            &[
                log("ghost", 1.0, "boo\n"),
                counter("ghost", "x", 1, 2, 1.0, 1.0, None),
                vertex("pending", "not started", None, None, false, ""),
                vertex("", "", None, Some(-5.0), false, ""),
                StatusResponse::default(),
            ],
        );
        assert_eq!(out, "#1 \n#1 DONE 0.0s\n");
    }
}
