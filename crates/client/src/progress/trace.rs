//! What the human-readable displays know about a build: every vertex seen, when it ran,
//! how it ended, its counters and its last output lines. The tty display renders frames
//! from it; every display but quiet and rawjson prints its error summary at the end.

use std::collections::{HashMap, VecDeque};

use proto::control::StatusResponse;

/// Output lines kept per vertex: enough for the error summary and the tty log view.
pub(crate) const LOG_LINES_KEPT: usize = 10;

/// A line longer than this keeps only its end: a progress bar redrawn with `\r` and no
/// newline would otherwise grow without bound, and its end is what a terminal shows.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// Seconds since the Unix epoch. Out-of-range nanos only skew the value, never panic.
pub(crate) fn secs(t: &prost_types::Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

/// Upstream's own marker for a step stopped because the build was cancelled (often
/// because a sibling failed): such steps are not failures of their own.
pub(crate) fn is_canceled(error: &str) -> bool {
    error.ends_with("context canceled")
}

/// A log line's offset from its step's start as upstream prints it: three decimals below
/// 10s, two below 100s, one above, so the columns stay narrow.
pub(crate) fn log_offset(at: f64) -> String {
    let at = at.max(0.0);
    let precision = if at < 10.0 {
        3
    } else if at < 100.0 {
        2
    } else {
        1
    };
    format!("{at:.precision$}")
}

/// A span of time a vertex ran; `stop` is `None` while it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Interval {
    pub start: f64,
    pub stop: Option<f64>,
}

/// Merges overlapping intervals, so a vertex reported as running twice at once is not
/// counted twice. An open interval swallows everything after its start.
pub(crate) fn merge(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted = intervals.to_vec();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut merged: Vec<Interval> = Vec::new();
    for next in sorted {
        match merged.last_mut() {
            Some(cur) => match cur.stop {
                None => break,
                Some(stop) if stop < next.start => merged.push(next),
                Some(stop) => {
                    // an open `next` keeps the merged interval open
                    cur.stop = next.stop.map(|next_stop| stop.max(next_stop));
                }
            },
            None => merged.push(next),
        }
    }
    merged
}

/// Total running time of the merged intervals, open ones counted up to `now`.
pub(crate) fn duration(intervals: &[Interval], now: f64) -> f64 {
    merge(intervals)
        .iter()
        .map(|i| (i.stop.unwrap_or(now) - i.start).max(0.0))
        // folded from +0.0: a float sum of nothing is -0.0, which prints as "-0.0s"
        .fold(0.0, |total, d| total + d)
}

/// One line of a vertex's output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LogLine {
    /// Seconds since the vertex's most recent start.
    pub at: f64,
    /// The raw bytes, without the newline.
    pub bytes: Vec<u8>,
}

/// A counter of a vertex (a layer download, a transfer).
#[derive(Clone, Debug, Default)]
pub(crate) struct Counter {
    pub id: String,
    pub current: i64,
    pub total: i64,
    pub started: Option<f64>,
    pub completed: Option<f64>,
}

/// One vertex of the build.
#[derive(Clone, Debug, Default)]
pub(crate) struct Step {
    pub digest: String,
    pub name: String,
    pub cached: bool,
    pub error: String,
    pub intervals: Vec<Interval>,
    /// Counters that have started, in the order they started.
    pub counters: Vec<Counter>,
    pub warnings: Vec<String>,
    /// The last [`LOG_LINES_KEPT`] lines of output.
    pub logs: VecDeque<LogLine>,
    /// The last line has no newline yet: the next chunk continues it.
    pub partial: bool,
    /// All output bytes seen, to tell which running step is the busiest.
    pub log_bytes: usize,
}

impl Step {
    /// The name to show: the digest when the daemon gave none.
    pub fn title(&self) -> &str {
        if self.name.is_empty() {
            &self.digest
        } else {
            &self.name
        }
    }

    pub fn started(&self) -> bool {
        !self.intervals.is_empty()
    }

    /// Started, and its most recent run has stopped.
    pub fn completed(&self) -> bool {
        merge(&self.intervals)
            .last()
            .is_some_and(|i| i.stop.is_some())
    }

    /// Start of the most recent run: log offsets count from it.
    pub fn last_start(&self) -> Option<f64> {
        merge(&self.intervals).last().map(|i| i.start)
    }

    pub fn failed(&self) -> bool {
        !self.error.is_empty() && !is_canceled(&self.error)
    }
}

/// The accumulated state of a build's progress stream.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub steps: Vec<Step>,
    by_digest: HashMap<String, usize>,
    /// Indexes into `steps`, in the order the steps first started: the display order.
    pub order: Vec<usize>,
    /// When the first vertex started, on the daemon's clock.
    pub start: Option<f64>,
    /// Local clock minus the daemon's, fixed when the first vertex started, so running
    /// times tick with the local clock even if the two disagree.
    skew: Option<f64>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    fn index(&mut self, digest: &str) -> usize {
        if let Some(&i) = self.by_digest.get(digest) {
            return i;
        }
        let i = self.steps.len();
        self.steps.push(Step {
            digest: digest.to_string(),
            ..Step::default()
        });
        self.by_digest.insert(digest.to_string(), i);
        i
    }

    pub fn step(&self, digest: &str) -> Option<&Step> {
        self.by_digest.get(digest).map(|&i| &self.steps[i])
    }

    /// `local_now` (seconds since the epoch on this machine) as the daemon's clock reads.
    pub fn daemon_now(&self, local_now: f64) -> f64 {
        local_now - self.skew.unwrap_or(0.0)
    }

    /// Steps seen, and how many of them have completed.
    pub fn counts(&self) -> (usize, usize) {
        let done = self.steps.iter().filter(|s| s.completed()).count();
        (done, self.steps.len())
    }

    /// Folds in one message. `local_now` is this machine's clock when it arrived.
    pub fn update(&mut self, msg: &StatusResponse, local_now: f64) {
        for v in &msg.vertexes {
            let i = self.index(&v.digest);
            let started = v.started.as_ref().map(secs);
            if let Some(start) = started {
                self.start.get_or_insert(start);
                self.skew.get_or_insert(local_now - start);
            }
            let step = &mut self.steps[i];
            let was_started = step.started();
            // A vertex re-sent without a start (the daemon announcing it again) must not
            // wipe what its earlier messages said.
            if !was_started || started.is_some() {
                if !v.name.is_empty() {
                    step.name = v.name.clone();
                }
                step.cached = v.cached;
                step.error = v.error.clone();
            }
            if let Some(start) = started {
                let interval = Interval {
                    start,
                    stop: v.completed.as_ref().map(secs),
                };
                // keyed by start: a later message about the same run replaces the earlier
                match step.intervals.iter_mut().find(|x| x.start == start) {
                    Some(existing) => *existing = interval,
                    None => step.intervals.push(interval),
                }
                if !was_started {
                    self.order.push(i);
                }
            }
        }
        for s in &msg.statuses {
            // Counters and logs for a vertex never announced have nowhere to go.
            let Some(&i) = self.by_digest.get(&s.vertex) else {
                continue;
            };
            let step = &mut self.steps[i];
            let counter = Counter {
                id: s.id.clone(),
                current: s.current,
                total: s.total,
                started: s.started.as_ref().map(secs),
                completed: s.completed.as_ref().map(secs),
            };
            match step.counters.iter_mut().find(|c| c.id == s.id) {
                Some(existing) => *existing = counter,
                None if counter.started.is_some() => step.counters.push(counter),
                None => {}
            }
        }
        for w in &msg.warnings {
            if let Some(&i) = self.by_digest.get(&w.vertex) {
                self.steps[i]
                    .warnings
                    .push(String::from_utf8_lossy(&w.short).into_owned());
            }
        }
        for l in &msg.logs {
            let Some(&i) = self.by_digest.get(&l.vertex) else {
                continue;
            };
            if l.msg.is_empty() {
                continue;
            }
            let step = &mut self.steps[i];
            let at = match (&l.timestamp, step.last_start()) {
                (Some(t), Some(start)) => secs(t) - start,
                _ => 0.0,
            };
            step.log_bytes = step.log_bytes.saturating_add(l.msg.len());
            let ends_line = l.msg.ends_with(b"\n");
            let data = l.msg.strip_suffix(b"\n").unwrap_or(&l.msg);
            for (n, segment) in data.split(|&b| b == b'\n').enumerate() {
                match step.logs.back_mut() {
                    Some(last) if n == 0 && step.partial => last.bytes.extend_from_slice(segment),
                    _ => step.logs.push_back(LogLine {
                        at,
                        bytes: segment.to_vec(),
                    }),
                }
                if let Some(last) = step.logs.back_mut() {
                    let excess = last.bytes.len().saturating_sub(MAX_LINE_BYTES);
                    last.bytes.drain(..excess);
                }
                while step.logs.len() > LOG_LINES_KEPT {
                    step.logs.pop_front();
                }
            }
            step.partial = !ends_line;
        }
    }

    /// The failed steps with their last output lines, between `------` rules, as upstream
    /// prints them after the progress:
    ///
    /// ```text
    /// ------
    ///  > [2/2] RUN false:
    /// 0.153 some output
    /// ------
    /// ```
    pub fn error_summary(&self) -> String {
        let never_started = (0..self.steps.len()).filter(|i| !self.order.contains(i));
        let mut out = String::new();
        for i in self.order.iter().copied().chain(never_started) {
            let step = &self.steps[i];
            if !step.failed() {
                continue;
            }
            out.push_str("------\n");
            out.push_str(&format!(" > {}:\n", step.title()));
            for line in &step.logs {
                out.push_str(&log_offset(line.at));
                out.push(' ');
                out.push_str(&String::from_utf8_lossy(&line.bytes));
                out.push('\n');
            }
            out.push_str("------\n");
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::control::{Vertex, VertexLog, VertexStatus};

    pub(crate) fn ts(s: f64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s.floor() as i64,
            nanos: ((s - s.floor()) * 1e9).round() as i32,
        })
    }

    pub(crate) fn vertex(
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

    pub(crate) fn log(d: &str, at: f64, msg: &str) -> StatusResponse {
        StatusResponse {
            logs: vec![VertexLog {
                vertex: d.into(),
                timestamp: ts(at),
                stream: 1,
                msg: msg.as_bytes().to_vec(),
            }],
            ..StatusResponse::default()
        }
    }

    pub(crate) fn counter(
        d: &str,
        id: &str,
        current: i64,
        total: i64,
        started: f64,
        at: f64,
        done: Option<f64>,
    ) -> StatusResponse {
        StatusResponse {
            statuses: vec![VertexStatus {
                id: id.into(),
                vertex: d.into(),
                current,
                total,
                timestamp: ts(at),
                started: ts(started),
                completed: done.and_then(ts),
                ..VertexStatus::default()
            }],
            ..StatusResponse::default()
        }
    }

    fn i(start: f64, stop: Option<f64>) -> Interval {
        Interval { start, stop }
    }

    #[test]
    fn intervals_merge() {
        assert_eq!(merge(&[]), vec![]);
        assert_eq!(
            merge(&[i(5.0, Some(6.0)), i(1.0, Some(2.0)), i(1.5, Some(3.0))]),
            vec![i(1.0, Some(3.0)), i(5.0, Some(6.0))]
        );
        assert_eq!(
            merge(&[i(1.0, Some(4.0)), i(2.0, Some(3.0))]),
            vec![i(1.0, Some(4.0))]
        );
        assert_eq!(
            merge(&[i(1.0, None), i(2.0, Some(3.0))]),
            vec![i(1.0, None)]
        );
        assert_eq!(
            merge(&[i(1.0, Some(2.5)), i(2.0, None), i(9.0, Some(10.0))]),
            vec![i(1.0, None)]
        );
        assert!((duration(&[i(1.0, Some(2.0)), i(3.0, None)], 3.5) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn logs_join_partial_lines_and_keep_the_last_ten() {
        let mut t = Trace::new();
        t.update(&vertex("a", "step", Some(10.0), None, false, ""), 100.0);
        t.update(&log("a", 10.5, "one\ntw"), 100.0);
        t.update(&log("a", 10.6, "o\n"), 100.0);
        let lines: Vec<_> = t.step("a").unwrap().logs.iter().cloned().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].bytes, b"two");
        assert!((lines[1].at - 0.5).abs() < 1e-6);
        for n in 0..20 {
            t.update(&log("a", 11.0, &format!("line {n}\n")), 100.0);
        }
        let step = t.step("a").unwrap();
        assert_eq!(step.logs.len(), LOG_LINES_KEPT);
        assert_eq!(step.logs[0].bytes, b"line 10");
        // logs of unknown vertices are dropped, not invented
        t.update(&log("nope", 11.0, "x\n"), 100.0);
        assert!(t.step("nope").is_none());
    }

    #[test]
    fn a_resent_vertex_without_start_keeps_its_state() {
        let mut t = Trace::new();
        t.update(
            &vertex("a", "step", Some(1.0), Some(2.0), false, "boom"),
            0.0,
        );
        t.update(&vertex("a", "", None, None, false, ""), 0.0);
        let s = t.step("a").unwrap();
        assert_eq!(s.error, "boom");
        assert_eq!(s.name, "step");
        assert!(s.completed());
        assert_eq!(t.counts(), (1, 1));
    }

    #[test]
    fn summary_names_failed_steps_with_their_last_lines() {
        let mut t = Trace::new();
        t.update(
            &vertex("a", "[1/2] FROM x", Some(1.0), Some(1.0), true, ""),
            0.0,
        );
        t.update(
            &vertex("b", "[2/2] RUN false", Some(1.0), None, false, ""),
            0.0,
        );
        t.update(&log("b", 1.25, "oops\n"), 0.0);
        t.update(
            &vertex(
                "c",
                "sibling",
                Some(1.0),
                Some(2.0),
                false,
                "context canceled",
            ),
            0.0,
        );
        t.update(
            &vertex(
                "b",
                "[2/2] RUN false",
                Some(1.0),
                Some(2.0),
                false,
                "exit code: 1",
            ),
            0.0,
        );
        assert_eq!(
            t.error_summary(),
            "------\n > [2/2] RUN false:\n0.250 oops\n------\n"
        );
    }

    #[test]
    fn offsets_narrow_as_they_grow() {
        assert_eq!(log_offset(0.25), "0.250");
        assert_eq!(log_offset(12.345), "12.35");
        assert_eq!(log_offset(123.45), "123.5");
        assert_eq!(log_offset(-1.0), "0.000");
    }
}
