//! Showing a build's progress stream, in upstream's `--progress` modes:
//!
//! - `plain` ([`PlainPrinter`]): `#N` lines, one per event, for logs and CI;
//! - `tty` ([`TtyDisplay`]): a frame redrawn in place on a terminal;
//! - `rawjson` ([`rawjson::to_json`]): each message as a line of upstream's JSON;
//! - `quiet`: nothing;
//! - `auto`: `tty` when standard error is a terminal, else `plain`.
//!
//! Everything here is pure: the printers take messages and clock readings and return the
//! text to write; [`Display`] wraps them behind one interface. Writing is the caller's.
//! `plain` and `tty` end with a summary of the failed steps and their last output lines.

mod plain;
pub mod rawjson;
mod trace;
mod tty;
pub mod units;

use std::time::SystemTime;

use proto::control::StatusResponse;

pub use plain::PlainPrinter;
pub use tty::{TtyDisplay, TtyOptions, terminal_size};

/// A progress mode, with `auto` already decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    RawJson,
    Quiet,
}

/// Why a `--progress` value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    #[error("expected auto, tty, plain, rawjson or quiet")]
    Unknown,
    /// Upstream refuses `tty` without a terminal too: redrawing escapes would only
    /// garble a file or a pipe.
    #[error("standard error is not a terminal")]
    NotATerminal,
}

impl Mode {
    /// The mode named `name` (as `--progress` takes it), given whether standard error,
    /// where progress goes, is a terminal.
    pub fn select(name: &str, stderr_is_terminal: bool) -> Result<Mode, ModeError> {
        match name {
            "auto" if stderr_is_terminal => Ok(Mode::Tty),
            "auto" | "plain" => Ok(Mode::Plain),
            "tty" if stderr_is_terminal => Ok(Mode::Tty),
            "tty" => Err(ModeError::NotATerminal),
            "rawjson" => Ok(Mode::RawJson),
            "quiet" => Ok(Mode::Quiet),
            _ => Err(ModeError::Unknown),
        }
    }
}

/// Any of the modes behind one interface: [`Display::update`] for each message,
/// [`Display::tick`] periodically when [`Display::wants_ticks`], [`Display::finish`] once
/// the stream ends. Each returns the text to write to standard error.
#[derive(Debug)]
pub enum Display {
    Tty(TtyDisplay),
    Plain(PlainPrinter),
    RawJson,
    Quiet,
}

impl Display {
    /// A display for `mode`; a tty display takes its size and colours from the
    /// environment ([`TtyOptions::from_env`]).
    pub fn new(mode: Mode) -> Display {
        match mode {
            Mode::Tty => Display::Tty(TtyDisplay::new(TtyOptions::from_env())),
            Mode::Plain => Display::Plain(PlainPrinter::new()),
            Mode::RawJson => Display::RawJson,
            Mode::Quiet => Display::Quiet,
        }
    }

    /// Only the tty display changes without messages (its clocks run).
    pub fn wants_ticks(&self) -> bool {
        matches!(self, Display::Tty(_))
    }

    /// The terminal changed size (only the tty display cares).
    pub fn resize(&mut self, width: usize, height: usize) {
        if let Display::Tty(d) = self {
            d.resize(width, height);
        }
    }

    pub fn update(&mut self, msg: &StatusResponse, now: SystemTime) -> String {
        match self {
            Display::Tty(d) => d.update(msg, now),
            Display::Plain(p) => p.update(msg),
            // a message Go could not encode is skipped, as upstream's encoder does
            Display::RawJson => rawjson::to_json(msg).unwrap_or_default(),
            Display::Quiet => String::new(),
        }
    }

    pub fn tick(&mut self, now: SystemTime) -> String {
        match self {
            Display::Tty(d) => d.tick(now),
            _ => String::new(),
        }
    }

    /// The last text: the final frame (tty) and the summary of failed steps (tty, plain).
    pub fn finish(&mut self, now: SystemTime) -> String {
        match self {
            Display::Tty(d) => d.finish(now),
            Display::Plain(p) => p.finish(),
            Display::RawJson | Display::Quiet => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::tests::{log, vertex};

    #[test]
    fn modes_are_chosen_like_upstream() {
        assert_eq!(Mode::select("auto", true), Ok(Mode::Tty));
        assert_eq!(Mode::select("auto", false), Ok(Mode::Plain));
        assert_eq!(Mode::select("tty", true), Ok(Mode::Tty));
        assert_eq!(Mode::select("tty", false), Err(ModeError::NotATerminal));
        assert_eq!(Mode::select("plain", true), Ok(Mode::Plain));
        assert_eq!(Mode::select("rawjson", true), Ok(Mode::RawJson));
        assert_eq!(Mode::select("quiet", false), Ok(Mode::Quiet));
        assert_eq!(Mode::select("fancy", true), Err(ModeError::Unknown));
    }

    fn failing_build() -> Vec<StatusResponse> {
        vec![
            vertex(
                "a",
                "/bin/sh -c echo oops; exit 3",
                Some(1.0),
                None,
                false,
                "",
            ),
            log("a", 1.5, "oops\n"),
            vertex(
                "a",
                "/bin/sh -c echo oops; exit 3",
                Some(1.0),
                Some(2.0),
                false,
                "process \"/bin/sh -c echo oops; exit 3\" did not complete successfully: exit code: 3",
            ),
        ]
    }

    fn play(mut d: Display) -> String {
        let now = SystemTime::UNIX_EPOCH;
        let mut out: String = failing_build().iter().map(|m| d.update(m, now)).collect();
        out += &d.tick(now);
        out += &d.finish(now);
        out
    }

    #[test]
    fn human_modes_end_with_the_failed_step_and_its_output() {
        let summary = "------\n > /bin/sh -c echo oops; exit 3:\n0.500 oops\n------\n";
        let plain = play(Display::new(Mode::Plain));
        assert!(
            plain.ends_with(&format!("exit code: 3\n{summary}")),
            "{plain}"
        );
        let tty = play(Display::Tty(TtyDisplay::new(TtyOptions::default())));
        assert!(tty.ends_with(summary), "{tty}");
    }

    #[test]
    fn machine_and_quiet_modes_print_no_summary() {
        let json = play(Display::new(Mode::RawJson));
        assert_eq!(json.lines().count(), 3);
        assert!(json.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
        assert!(!json.contains("------"));
        assert_eq!(play(Display::new(Mode::Quiet)), "");
    }
}
