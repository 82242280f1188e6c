//! `--progress=tty`: a display redrawn in place on a terminal, like upstream's:
//!
//! ```text
//! [+] Building 3.4s (3/4)
//!  => CACHED [1/3] FROM docker.io/library/busybox                  0.0s
//!  => [2/3] RUN make                                                2.9s
//!  => => # cc -o app main.c
//!  => => # main.c:3: warning: unused variable
//!  => [3/3] RUN make test                                           0.0s
//! ```
//!
//! The frame is a pure function of the accumulated state ([`render`]: state, clock and
//! terminal size in, lines out), so it is tested without a terminal. [`TtyDisplay`] adds
//! what a redrawing display needs on top (a rate limit, the cursor movements that
//! replace the previous frame) and still only returns text: the caller writes it.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::control::StatusResponse;

use super::trace::{self, Step, Trace, is_canceled};
use super::units;

/// Frames are drawn at most this often (seconds): more is flicker nobody can read.
const MIN_REDRAW_INTERVAL: f64 = 0.1;

/// A name column narrower than this is useless; such job lines are left out (upstream
/// does the same on tiny terminals).
const MIN_NAME_WIDTH: usize = 12;

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// How the display looks.
#[derive(Clone, Debug, PartialEq)]
pub struct TtyOptions {
    /// Terminal columns; lines are cut to one less, so the cursor never wraps.
    pub width: usize,
    /// Terminal rows; running frames fit in them so the redraw can reach the top.
    pub height: usize,
    /// Output lines shown under a running step.
    pub log_lines: usize,
    /// Colour finished steps (blue, red on error, yellow when cancelled).
    pub color: bool,
}

impl Default for TtyOptions {
    fn default() -> TtyOptions {
        TtyOptions {
            width: 80,
            height: 24,
            log_lines: 6,
            color: true,
        }
    }
}

impl TtyOptions {
    /// Options for standard error: its size, `NO_COLOR` (any non-empty value turns colour
    /// off) and `BUILDKIT_TTY_LOG_LINES` (output lines per running step), as upstream
    /// reads them.
    pub fn from_env() -> TtyOptions {
        let mut opts = TtyOptions::default();
        if let Some((width, height)) = terminal_size() {
            opts.width = width;
            opts.height = height;
        }
        opts.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        if let Some(n) = std::env::var("BUILDKIT_TTY_LOG_LINES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            opts.log_lines = n;
        }
        opts
    }
}

/// The size of the terminal on standard error (columns, rows), else from `COLUMNS` and
/// `LINES`, else `None`.
pub fn terminal_size() -> Option<(usize, usize)> {
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stderr()) {
        if size.ws_col > 0 && size.ws_row > 0 {
            return Some((usize::from(size.ws_col), usize::from(size.ws_row)));
        }
    }
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    Some((env("COLUMNS")?, env("LINES").unwrap_or(24)))
}

/// Seconds since the epoch; a clock before 1970 reads as 0 rather than failing.
pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One line of the job list: a step, or a counter or warning of one.
struct Job<'a> {
    name: String,
    /// Shown after the name when there is room: transfer sizes.
    status: Option<String>,
    seconds: f64,
    completed: bool,
    color: &'static str,
    /// The step whose output may be shown under this line.
    step: Option<&'a Step>,
    show_logs: bool,
}

/// The frame for `trace` at `now` (on the daemon's clock). `all` is the final frame:
/// every step, however many rows that takes, and no output lines.
pub(crate) fn render(trace: &Trace, now: f64, opts: &TtyOptions, all: bool) -> Vec<String> {
    let max = opts.width.saturating_sub(1);
    let (done, total) = trace.counts();
    let elapsed = trace.start.map_or(0.0, |s| (now - s).max(0.0));
    let mut header = format!("[+] Building {elapsed:.1}s ({done}/{total})");
    if all && done > 0 && done == total {
        header.push_str(" FINISHED");
    }
    let mut lines = vec![truncate(&header, max)];

    let mut jobs = jobs(trace, now);
    let mut log_rows = 0;
    if !all {
        // Output is shown under the busiest running steps while the running steps and
        // their output still fit on the screen (upstream's budget: the lines plus three).
        let running = jobs.iter().filter(|j| !j.completed).count();
        let mut free = opts.height.saturating_sub(2).saturating_sub(running);
        let mut candidates: Vec<usize> = (0..jobs.len())
            .filter(|&i| !jobs[i].completed && jobs[i].step.is_some_and(|s| !s.logs.is_empty()))
            .collect();
        candidates.sort_by_key(|&i| std::cmp::Reverse(jobs[i].step.map_or(0, |s| s.log_bytes)));
        let cost = opts.log_lines + 3;
        for i in candidates {
            if free <= cost {
                break;
            }
            jobs[i].show_logs = true;
            log_rows += jobs[i].step.map_or(0, |s| s.logs.len().min(opts.log_lines));
            free -= cost;
        }
        let limit = opts.height.saturating_sub(2).saturating_sub(log_rows);
        jobs = wrap(jobs, limit);
    }

    for job in &jobs {
        let Some(line) = job_line(job, max) else {
            continue;
        };
        lines.push(if job.completed && opts.color {
            format!("{}{line}{RESET}", job.color)
        } else {
            line
        });
        if !job.show_logs {
            continue;
        }
        if let Some(step) = job.step {
            let skip = step.logs.len().saturating_sub(opts.log_lines);
            for log in step.logs.iter().skip(skip) {
                let text = visible_text(&String::from_utf8_lossy(&log.bytes));
                let line = truncate(&format!(" => => # {text}"), max);
                lines.push(if opts.color {
                    format!("{DIM}{line}{RESET}")
                } else {
                    line
                });
            }
        }
    }
    lines
}

/// The jobs of the started steps, in the order they started.
fn jobs(trace: &Trace, now: f64) -> Vec<Job<'_>> {
    let mut jobs = Vec::new();
    for &i in &trace.order {
        let Some(step) = trace.steps.get(i) else {
            continue;
        };
        let mut name = clean_name(step.title());
        let mut color = BLUE;
        if !step.error.is_empty() {
            if is_canceled(&step.error) {
                name = format!("CANCELED {name}");
                color = YELLOW;
            } else {
                name = format!("ERROR {name}");
                color = RED;
            }
        }
        if step.cached {
            name = format!("CACHED {name}");
        }
        let completed = step.intervals.iter().all(|i| i.stop.is_some());
        jobs.push(Job {
            name,
            status: None,
            seconds: trace::duration(&step.intervals, now),
            completed,
            color,
            step: Some(step),
            show_logs: false,
        });
        for c in &step.counters {
            let Some(started) = c.started else {
                continue;
            };
            jobs.push(Job {
                name: format!("=> {}", clean_name(&c.id)),
                status: units::progress(c.current, c.total),
                seconds: (c.completed.unwrap_or(now) - started).max(0.0),
                completed: c.completed.is_some(),
                color: BLUE,
                step: None,
                show_logs: false,
            });
        }
        for w in &step.warnings {
            jobs.push(Job {
                name: format!("WARN: {}", clean_name(w)),
                status: None,
                seconds: 0.0,
                completed,
                color: YELLOW,
                step: None,
                show_logs: false,
            });
        }
    }
    jobs
}

/// ` => name [status]      1.2s`, exactly `max` cells wide, or `None` when the name
/// would not fit.
fn job_line(job: &Job<'_>, max: usize) -> Option<String> {
    // sub-second noise of instant steps reads as 0.0s, as upstream shows it
    let seconds = if job.seconds < 0.05 { 0.0 } else { job.seconds };
    let timer = format!(" {seconds:.1}s");
    let prefix = " => ";
    let mut room = max.checked_sub(prefix.len() + timer.len() + 1)?;
    let mut status = None;
    if let Some(s) = &job.status {
        let w = width(s);
        if room + w > 20 && room >= w + 1 + MIN_NAME_WIDTH {
            room -= w + 1;
            status = Some(s);
        }
    }
    if room < MIN_NAME_WIDTH {
        return None;
    }
    let mut line = format!("{prefix}{}", truncate(&job.name, room));
    if let Some(s) = status {
        line.push(' ');
        line.push_str(s);
    }
    let pad = max.saturating_sub(width(&line) + timer.len());
    line.push_str(&" ".repeat(pad));
    line.push_str(&timer);
    Some(line)
}

/// Keeps the last `limit` jobs, but a running job that would scroll off the top takes
/// the place of a finished one: what is running matters more than what is done.
fn wrap(jobs: Vec<Job<'_>>, limit: usize) -> Vec<Job<'_>> {
    if jobs.len() <= limit {
        return jobs;
    }
    let mut jobs = jobs;
    let kept = jobs.split_off(jobs.len() - limit);
    let mut hidden_running: Vec<Job<'_>> = jobs.into_iter().filter(|j| !j.completed).collect();
    let mut to_drop = hidden_running.len();
    let mut rest = Vec::with_capacity(kept.len());
    for job in kept {
        if to_drop > 0 && job.completed {
            to_drop -= 1;
        } else {
            rest.push(job);
        }
    }
    let room = limit - rest.len();
    let mut out = hidden_running.split_off(hidden_running.len() - room);
    out.extend(rest);
    out
}

/// A name on one line: tabs, newlines and other control characters become spaces (a
/// multi-line `RUN` would otherwise break the redraw).
fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What a terminal would show of one output line: the text after the last carriage
/// return (progress bars redraw with `\r`), without escape sequences or other control
/// characters, tabs expanded.
fn visible_text(line: &str) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (titles, hyperlinks): up to BEL or ESC \
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => {
                let col = width(&out);
                out.push_str(&" ".repeat(8 - col % 8));
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Terminal cells `c` takes. Without a table of the Unicode widths this errs wide: East
/// Asian and emoji blocks count two, so a line is cut early rather than wrapped (a
/// wrapped line would throw the redraw off by a row).
fn cell_width(c: char) -> usize {
    let wide = matches!(
        u32::from(c),
        0x1100..=0x115F
            | 0x231A..=0x231B
            | 0x2329..=0x232A
            | 0x23E9..=0x23FF
            | 0x2600..=0x27BF
            | 0x2B00..=0x2BFF
            | 0x2E80..=0xA4CF
            | 0xA960..=0xA97F
            | 0xAC00..=0xD7FF
            | 0xF900..=0xFAFF
            | 0xFE10..=0xFE6F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F000..=0x1FAFF
            | 0x20000..=0x3FFFD
    );
    if wide { 2 } else { 1 }
}

fn width(s: &str) -> usize {
    s.chars().map(cell_width).sum()
}

/// The longest prefix of `s` that fits in `max` cells.
fn truncate(s: &str, max: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += cell_width(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The escape sequences that replace the `previous` lines drawn last with `lines`: up to
/// the first of them, each line rewritten and cleared to its end, then everything below
/// cleared (the new frame may be shorter). The cursor is hidden meanwhile so it does not
/// flicker across the screen.
pub(crate) fn repaint(previous: usize, lines: &[String]) -> String {
    let mut out = String::from("\x1b[?25l");
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}A"));
    }
    out.push('\r');
    for line in lines {
        out.push_str(line);
        out.push_str("\x1b[K\n");
    }
    out.push_str("\x1b[J\x1b[?25h");
    out
}

/// The redrawing display: feed it messages and clock ticks, write what it returns to the
/// terminal, and what [`TtyDisplay::finish`] returns at the end.
#[derive(Debug)]
pub struct TtyDisplay {
    trace: Trace,
    opts: TtyOptions,
    /// The frame on screen now.
    shown: Vec<String>,
    last_draw: Option<f64>,
}

impl TtyDisplay {
    pub fn new(opts: TtyOptions) -> TtyDisplay {
        TtyDisplay {
            trace: Trace::new(),
            opts,
            shown: Vec::new(),
            last_draw: None,
        }
    }

    /// The terminal changed size; later frames fit the new one.
    pub fn resize(&mut self, width: usize, height: usize) {
        self.opts.width = width;
        self.opts.height = height;
    }

    /// The frame for the local time `now`; `all` as for the final frame.
    pub fn lines(&self, now: SystemTime, all: bool) -> Vec<String> {
        let now = self.trace.daemon_now(epoch_secs(now));
        render(&self.trace, now, &self.opts, all)
    }

    /// Folds in one message; returns a redraw unless one was drawn less than 100 ms ago
    /// (the next [`TtyDisplay::tick`] shows the change).
    pub fn update(&mut self, msg: &StatusResponse, now: SystemTime) -> String {
        self.trace.update(msg, epoch_secs(now));
        let t = epoch_secs(now);
        match self.last_draw {
            Some(last) if (0.0..MIN_REDRAW_INTERVAL).contains(&(t - last)) => String::new(),
            _ => self.draw(now, false),
        }
    }

    /// The periodic redraw (call it every ~100 ms): running times advance even when no
    /// message comes. Returns nothing when the frame did not change.
    pub fn tick(&mut self, now: SystemTime) -> String {
        self.draw(now, false)
    }

    /// The final frame with every step, then the failed steps with their last output.
    pub fn finish(&mut self, now: SystemTime) -> String {
        let mut out = self.draw(now, true);
        out.push_str(&self.trace.error_summary());
        out
    }

    fn draw(&mut self, now: SystemTime, all: bool) -> String {
        self.last_draw = Some(epoch_secs(now));
        let lines = self.lines(now, all);
        if lines == self.shown && !all {
            return String::new();
        }
        let out = repaint(self.shown.len(), &lines);
        self.shown = lines;
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::progress::trace::tests::{counter, log, vertex};

    fn plain_opts(width: usize, height: usize) -> TtyOptions {
        TtyOptions {
            width,
            height,
            log_lines: 2,
            color: false,
        }
    }

    fn trace_of(msgs: &[StatusResponse]) -> Trace {
        let mut t = Trace::new();
        for m in msgs {
            // the local clock agrees with the daemon's
            t.update(m, 100.0);
        }
        t
    }

    fn sample() -> Trace {
        trace_of(&[
            vertex(
                "a",
                "[1/3] FROM busybox",
                Some(100.0),
                Some(100.01),
                true,
                "",
            ),
            vertex("b", "[2/3] RUN make\tall", Some(100.0), None, false, ""),
            log("b", 100.5, "cc -c a.c\ncc -c b.c\ncc -o app\n"),
            vertex(
                "c",
                "[3/3] RUN false",
                Some(100.2),
                Some(101.0),
                false,
                "exit code: 1",
            ),
            vertex("d", "pending", None, None, false, ""),
        ])
    }

    #[test]
    fn renders_header_steps_and_running_output() {
        let lines = render(&sample(), 101.3, &plain_opts(60, 20), false);
        assert_eq!(
            lines,
            [
                "[+] Building 1.3s (2/4)",
                " => CACHED [1/3] FROM busybox                          0.0s",
                " => [2/3] RUN make all                                 1.3s",
                " => => # cc -c b.c",
                " => => # cc -o app",
                " => ERROR [3/3] RUN false                              0.8s",
            ]
        );
        assert!(lines.iter().all(|l| width(l) <= 59));
    }

    #[test]
    fn final_frame_has_every_step_and_no_output() {
        let mut t = sample();
        t.update(
            &vertex(
                "b",
                "[2/3] RUN make\tall",
                Some(100.0),
                Some(102.0),
                false,
                "",
            ),
            100.0,
        );
        t.update(
            &vertex("d", "pending", Some(102.0), Some(102.0), true, ""),
            100.0,
        );
        let lines = render(&t, 103.0, &plain_opts(50, 3), true);
        assert_eq!(
            lines,
            [
                "[+] Building 3.0s (4/4) FINISHED",
                " => CACHED [1/3] FROM busybox                0.0s",
                " => [2/3] RUN make all                       2.0s",
                " => ERROR [3/3] RUN false                    0.8s",
                " => CACHED pending                           0.0s",
            ]
        );
    }

    #[test]
    fn colours_finished_steps_and_dims_output() {
        let opts = TtyOptions {
            color: true,
            ..plain_opts(60, 20)
        };
        let lines = render(&sample(), 101.3, &opts, false);
        assert!(lines[1].starts_with(BLUE) && lines[1].ends_with(RESET));
        assert!(lines[2].starts_with(" => [2/3]"), "running is not coloured");
        assert!(lines[3].starts_with(DIM));
        assert!(lines[5].starts_with(RED));
    }

    #[test]
    fn counters_show_sizes_when_there_is_room() {
        let t = trace_of(&[
            vertex("a", "pull busybox", Some(100.0), None, false, ""),
            counter("a", "sha256:abc", 1_500_000, 3_000_000, 100.0, 100.5, None),
        ]);
        let lines = render(&t, 101.0, &plain_opts(70, 20), false);
        assert_eq!(
            lines[2],
            " => => sha256:abc 1.50MB / 3.00MB                                1.0s"
        );
        // too narrow for the sizes: the name keeps its room
        let lines = render(&t, 101.0, &plain_opts(38, 20), false);
        assert_eq!(lines[2], " => => sha256:abc                1.0s");
    }

    #[test]
    fn narrow_and_short_terminals_cut_lines_and_keep_running_steps() {
        let mut msgs = vec![];
        for n in 0..10 {
            let d = format!("done{n}");
            msgs.push(vertex(&d, &d, Some(100.0), Some(100.0), false, ""));
        }
        msgs.push(vertex("run", "running one", Some(100.0), None, false, ""));
        for n in 10..15 {
            let d = format!("done{n}");
            msgs.push(vertex(&d, &d, Some(100.0), Some(100.0), false, ""));
        }
        let t = trace_of(&msgs);
        let lines = render(&t, 101.0, &plain_opts(40, 6), false);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[1].contains("running one"), "{lines:#?}");
        assert!(lines[4].contains("done14"), "{lines:#?}");
        // a very narrow terminal keeps the header only
        let lines = render(&t, 101.0, &plain_opts(10, 6), false);
        assert_eq!(lines, ["[+] Build"]);
        assert_eq!(render(&t, 101.0, &plain_opts(0, 0), false), [""]);
    }

    #[test]
    fn output_is_made_safe_for_the_screen() {
        assert_eq!(visible_text("10%\r50%\r"), "50%");
        assert_eq!(
            visible_text("\x1b[1;31mred\x1b[0m \x1b]0;title\x07x"),
            "red x"
        );
        assert_eq!(visible_text("a\tb\x08"), "a       b");
        assert_eq!(clean_name("RUN a\nb"), "RUN a b");
        assert_eq!(truncate("日本語テキスト", 5), "日本");
        assert_eq!(width("ab日"), 4);
    }

    #[test]
    fn repaint_moves_up_over_the_previous_frame() {
        let frame = repaint(3, &["a".to_string(), "b".to_string()]);
        assert_eq!(frame, "\x1b[?25l\x1b[3A\ra\x1b[K\nb\x1b[K\n\x1b[J\x1b[?25h");
        assert_eq!(repaint(0, &[]), "\x1b[?25l\r\x1b[J\x1b[?25h");
    }

    #[test]
    fn display_rate_limits_and_finishes_with_the_summary() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_000_000 + ms);
        let mut d = TtyDisplay::new(plain_opts(60, 20));
        let first = d.update(
            &vertex("a", "RUN false", Some(1000.0), None, false, ""),
            at(0),
        );
        assert!(first.contains("[+] Building 0.0s (0/1)"), "{first:?}");
        assert!(!first.contains("\x1b[1A"), "nothing to move over yet");
        // within 100 ms of the last frame: folded in, not drawn
        assert_eq!(d.update(&log("a", 1000.02, "oops\n"), at(20)), "");
        let tick = d.tick(at(120));
        assert!(tick.starts_with("\x1b[?25l\x1b[2A"), "{tick:?}");
        assert!(tick.contains(" => => # oops"), "{tick:?}");
        // an unchanged frame is not drawn again
        assert_eq!(d.tick(at(140)), "");
        d.update(
            &vertex(
                "a",
                "RUN false",
                Some(1000.0),
                Some(1000.5),
                false,
                "exit code: 1",
            ),
            at(500),
        );
        let end = d.finish(at(600));
        assert!(end.contains(" => ERROR RUN false"), "{end:?}");
        assert!(!end.contains("# oops"), "{end:?}");
        assert!(
            end.ends_with("\x1b[J\x1b[?25h------\n > RUN false:\n0.020 oops\n------\n"),
            "{end:?}"
        );
    }
}
