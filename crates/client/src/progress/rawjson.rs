//! `--progress=rawjson`: each `StatusResponse` as one line of JSON, in the shape upstream's
//! buildctl prints (its `client.SolveStatus` through Go's `encoding/json`), so tools written
//! against upstream can read ours:
//!
//! ```text
//! {"vertexes":[{"digest":"sha256:…","name":"[1/2] RUN make","started":"2024-05-01T10:00:00.5Z"}]}
//! ```
//!
//! The details that tools may depend on follow Go: field names and order from upstream's
//! struct tags, `omitempty` where upstream has it (`id`, `current`, the log `data` and the
//! `timestamp`s are always present), timestamps in UTC as RFC 3339 with trailing zeros of
//! the fraction dropped, bytes as standard base64 (`null` when empty), and strings escaped
//! the way Go escapes them (`<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`).

use std::collections::BTreeMap;

use base64::Engine as _;
use proto::control::{StatusResponse, Vertex, VertexLog, VertexStatus, VertexWarning};
use proto::pb;

/// A timestamp Go refuses to print: its year is outside 0–9999. Go's encoder then prints
/// nothing for the whole message, and so do we.
#[derive(Debug, PartialEq)]
pub struct YearOutOfRange;

/// One message as a line of JSON, newline included.
pub fn to_json(msg: &StatusResponse) -> Result<String, YearOutOfRange> {
    let mut out = String::new();
    let mut obj = Obj::open(&mut out);
    obj.list("vertexes", &msg.vertexes, vertex)?;
    obj.list("statuses", &msg.statuses, status)?;
    obj.list("logs", &msg.logs, log)?;
    obj.list("warnings", &msg.warnings, warning)?;
    obj.close();
    out.push('\n');
    Ok(out)
}

type Written = Result<(), YearOutOfRange>;

fn vertex(v: &Vertex, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.str("digest", &v.digest);
    obj.list("inputs", &v.inputs, |s, out| {
        string(out, s);
        Ok(())
    })?;
    obj.str("name", &v.name);
    obj.opt_time("started", v.started.as_ref())?;
    obj.opt_time("completed", v.completed.as_ref())?;
    obj.bool("cached", v.cached);
    obj.str("error", &v.error);
    if let Some(g) = &v.progress_group {
        obj.key("progressGroup");
        let mut group = Obj::open(obj.out);
        group.str("id", &g.id);
        group.str("name", &g.name);
        group.bool("weak", g.weak);
        group.close();
    }
    obj.close();
    Ok(())
}

fn status(s: &VertexStatus, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.key("id");
    string(obj.out, &s.id);
    obj.str("vertex", &s.vertex);
    obj.str("name", &s.name);
    obj.int("total", s.total);
    obj.key("current");
    obj.out.push_str(&s.current.to_string());
    obj.time("timestamp", s.timestamp.as_ref())?;
    obj.opt_time("started", s.started.as_ref())?;
    obj.opt_time("completed", s.completed.as_ref())?;
    obj.close();
    Ok(())
}

fn log(l: &VertexLog, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.str("vertex", &l.vertex);
    obj.int("stream", l.stream);
    obj.key("data");
    // Go decodes an absent bytes field as nil, which it prints as null
    if l.msg.is_empty() {
        obj.out.push_str("null");
    } else {
        base64(obj.out, &l.msg);
    }
    obj.time("timestamp", l.timestamp.as_ref())?;
    obj.close();
    Ok(())
}

fn warning(w: &VertexWarning, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.str("vertex", &w.vertex);
    obj.int("level", w.level);
    obj.bytes("short", &w.short);
    obj.list("detail", &w.detail, |d, out| {
        // a present element, even an empty one, is a non-nil slice in Go: "" not null
        base64(out, d);
        Ok(())
    })?;
    obj.str("url", &w.url);
    if let Some(info) = &w.info {
        obj.key("sourceInfo");
        source_info(info, obj.out)?;
    }
    obj.list("range", &w.ranges, range)?;
    obj.close();
    Ok(())
}

fn source_info(info: &pb::SourceInfo, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.str("filename", &info.filename);
    obj.bytes("data", &info.data);
    if let Some(def) = &info.definition {
        obj.key("definition");
        definition(def, obj.out)?;
    }
    obj.str("language", &info.language);
    obj.close();
    Ok(())
}

fn definition(def: &pb::Definition, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    obj.list("def", &def.def, |d, out| {
        base64(out, d);
        Ok(())
    })?;
    obj.map("metadata", &def.metadata, |m, out| {
        out.push_str(&llb::dump::op_metadata_json(m));
        Ok(())
    })?;
    if let Some(source) = &def.source {
        obj.key("Source");
        let mut src = Obj::open(obj.out);
        src.map("locations", &source.locations, |locs, out| {
            let mut obj = Obj::open(out);
            obj.list("locations", &locs.locations, |loc, out| {
                let mut obj = Obj::open(out);
                obj.int("sourceIndex", i64::from(loc.source_index));
                obj.list("ranges", &loc.ranges, range)?;
                obj.close();
                Ok(())
            })?;
            obj.close();
            Ok(())
        })?;
        src.list("infos", &source.infos, source_info)?;
        src.close();
    }
    obj.close();
    Ok(())
}

fn range(r: &pb::Range, out: &mut String) -> Written {
    let mut obj = Obj::open(out);
    for (name, pos) in [("start", &r.start), ("end", &r.end)] {
        if let Some(pos) = pos {
            obj.key(name);
            let mut p = Obj::open(obj.out);
            p.int("line", i64::from(pos.line));
            p.int("character", i64::from(pos.character));
            p.close();
        }
    }
    obj.close();
    Ok(())
}

/// A JSON object being written; the `omitempty` fields are the methods that skip zero
/// values.
struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, empty: true }
    }

    fn key(&mut self, name: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        string(self.out, name);
        self.out.push(':');
    }

    fn str(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.key(name);
            string(self.out, value);
        }
    }

    fn int(&mut self, name: &str, value: i64) {
        if value != 0 {
            self.key(name);
            self.out.push_str(&value.to_string());
        }
    }

    fn bool(&mut self, name: &str, value: bool) {
        if value {
            self.key(name);
            self.out.push_str("true");
        }
    }

    fn bytes(&mut self, name: &str, value: &[u8]) {
        if !value.is_empty() {
            self.key(name);
            base64(self.out, value);
        }
    }

    /// A Go `time.Time` value field: always printed; an absent protobuf timestamp is
    /// the Unix epoch, as Go's `AsTime` makes it.
    fn time(&mut self, name: &str, t: Option<&prost_types::Timestamp>) -> Written {
        self.key(name);
        let (seconds, nanos) = t.map_or((0, 0), |t| (t.seconds, t.nanos));
        let text = rfc3339_nano(seconds, nanos).ok_or(YearOutOfRange)?;
        self.out.push('"');
        self.out.push_str(&text);
        self.out.push('"');
        Ok(())
    }

    /// A Go `*time.Time` field with `omitempty`: left out when absent.
    fn opt_time(&mut self, name: &str, t: Option<&prost_types::Timestamp>) -> Written {
        match t {
            Some(t) => self.time(name, Some(t)),
            None => Ok(()),
        }
    }

    fn list<T>(
        &mut self,
        name: &str,
        items: &[T],
        mut write: impl FnMut(&T, &mut String) -> Written,
    ) -> Written {
        if items.is_empty() {
            return Ok(());
        }
        self.key(name);
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            write(item, self.out)?;
        }
        self.out.push(']');
        Ok(())
    }

    /// A Go map with `omitempty`; Go sorts the keys, which a `BTreeMap` already is.
    fn map<V>(
        &mut self,
        name: &str,
        items: &BTreeMap<String, V>,
        mut write: impl FnMut(&V, &mut String) -> Written,
    ) -> Written {
        if items.is_empty() {
            return Ok(());
        }
        self.key(name);
        let mut obj = Obj::open(self.out);
        for (k, v) in items {
            obj.key(k);
            write(v, obj.out)?;
        }
        obj.close();
        Ok(())
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn base64(out: &mut String, data: &[u8]) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(data, out);
    out.push('"');
}

/// A JSON string escaped as Go's `encoding/json` does by default (HTML-safe).
fn string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if c < ' ' || c == '<' || c == '>' || c == '&' => {
                let b = c as u32;
                out.push_str("\\u00");
                out.push(char::from(HEX[((b >> 4) & 0xf) as usize]));
                out.push(char::from(HEX[(b & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `seconds`/`nanos` since the epoch in UTC as Go's `time.RFC3339Nano` prints it
/// (`2024-05-01T10:00:00.5Z`: trailing zeros of the fraction dropped, no fraction when it
/// is zero), or `None` when the year is outside 0–9999, which Go refuses to print.
pub fn rfc3339_nano(seconds: i64, nanos: i32) -> Option<String> {
    // Go's time.Unix carries nanos outside [0, 1e9) into the seconds
    let nanos = i64::from(nanos);
    let seconds = seconds.checked_add(nanos.div_euclid(1_000_000_000))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days)?;
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (the usual
/// era-based conversion: 400-year eras of 146097 days, years starting in March).
fn civil_from_days(days: i64) -> Option<(i64, i64, i64)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era
        .checked_mul(400)?
        .checked_add(yoe)?
        .checked_add(i64::from(month <= 2))?;
    Some((year, month, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::VertexLog;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn sample_message_matches_go() {
        let msg = StatusResponse {
            vertexes: vec![
                Vertex {
                    digest: "sha256:aaa".into(),
                    inputs: vec!["sha256:bbb".into()],
                    name: "[2/2] RUN echo <hi> && true".into(),
                    started: ts(1_714_557_600, 500_000_000),
                    completed: ts(1_714_557_601, 123_456_789),
                    error: "process \"sh\" did not complete successfully: exit code: 3".into(),
                    ..Vertex::default()
                },
                Vertex {
                    digest: "sha256:bbb".into(),
                    name: "[1/2] FROM busybox".into(),
                    started: ts(1_714_557_600, 0),
                    completed: ts(1_714_557_600, 0),
                    cached: true,
                    progress_group: Some(pb::ProgressGroup {
                        id: "g".into(),
                        ..pb::ProgressGroup::default()
                    }),
                    ..Vertex::default()
                },
            ],
            statuses: vec![VertexStatus {
                id: "sha256:layer".into(),
                vertex: "sha256:bbb".into(),
                current: 0,
                total: 2048,
                timestamp: ts(1_714_557_600, 10),
                started: ts(1_714_557_600, 0),
                ..VertexStatus::default()
            }],
            logs: vec![
                VertexLog {
                    vertex: "sha256:aaa".into(),
                    timestamp: ts(1_714_557_601, 0),
                    stream: 2,
                    msg: b"oops\n".to_vec(),
                },
                VertexLog {
                    vertex: "sha256:aaa".into(),
                    ..VertexLog::default()
                },
            ],
            warnings: vec![VertexWarning {
                vertex: "sha256:aaa".into(),
                level: 1,
                short: b"careful".to_vec(),
                detail: vec![b"x".to_vec(), Vec::new()],
                ranges: vec![pb::Range {
                    start: Some(pb::Position {
                        line: 3,
                        character: 0,
                    }),
                    end: None,
                }],
                info: Some(pb::SourceInfo {
                    filename: "Dockerfile".into(),
                    data: b"FROM x".to_vec(),
                    ..pb::SourceInfo::default()
                }),
                ..VertexWarning::default()
            }],
        };
        assert_eq!(
            to_json(&msg).unwrap(),
            concat!(
                r#"{"vertexes":[{"digest":"sha256:aaa","inputs":["sha256:bbb"],"#,
                r#""name":"[2/2] RUN echo \u003chi\u003e \u0026\u0026 true","#,
                r#""started":"2024-05-01T10:00:00.5Z","completed":"2024-05-01T10:00:01.123456789Z","#,
                r#""error":"process \"sh\" did not complete successfully: exit code: 3"},"#,
                r#"{"digest":"sha256:bbb","name":"[1/2] FROM busybox","#,
                r#""started":"2024-05-01T10:00:00Z","completed":"2024-05-01T10:00:00Z","#,
                r#""cached":true,"progressGroup":{"id":"g"}}],"#,
                r#""statuses":[{"id":"sha256:layer","vertex":"sha256:bbb","total":2048,"current":0,"#,
                r#""timestamp":"2024-05-01T10:00:00.00000001Z","started":"2024-05-01T10:00:00Z"}],"#,
                r#""logs":[{"vertex":"sha256:aaa","stream":2,"data":"b29wcwo=","#,
                r#""timestamp":"2024-05-01T10:00:01Z"},"#,
                r#"{"vertex":"sha256:aaa","data":null,"timestamp":"1970-01-01T00:00:00Z"}],"#,
                r#""warnings":[{"vertex":"sha256:aaa","level":1,"short":"Y2FyZWZ1bA==","#,
                r#""detail":["eA==",""],"sourceInfo":{"filename":"Dockerfile","data":"RlJPTSB4"},"#,
                r#""range":[{"start":{"line":3}}]}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn empty_message_is_an_empty_object() {
        assert_eq!(to_json(&StatusResponse::default()).unwrap(), "{}\n");
    }

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        string(
            &mut out,
            "a\"\\\u{1}\u{8}\u{c}\n\r\t\u{7f}é\u{2028}\u{2029}",
        );
        assert_eq!(
            out,
            r#""a\"\\\u0001\b\f\n\r\t"#.to_string() + "\u{7f}é\\u2028\\u2029\""
        );
    }

    #[test]
    fn times_print_like_go() {
        assert_eq!(rfc3339_nano(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(-1, 0).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_nano(951_782_400, 0).unwrap(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_nano(0, 1_500_000_000).unwrap(),
            "1970-01-01T00:00:01.5Z"
        );
        assert_eq!(
            rfc3339_nano(0, -1).unwrap(),
            "1969-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339_nano(253_402_300_799, 0).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_nano(253_402_300_800, 0), None);
        assert_eq!(
            rfc3339_nano(-62_167_219_200, 0).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(rfc3339_nano(-62_167_219_201, 0), None);
        assert_eq!(rfc3339_nano(i64::MAX, i32::MAX), None);
        assert_eq!(rfc3339_nano(i64::MIN, i32::MIN), None);
        let msg = StatusResponse {
            vertexes: vec![Vertex {
                started: ts(i64::MAX, 0),
                ..Vertex::default()
            }],
            ..StatusResponse::default()
        };
        assert_eq!(to_json(&msg), Err(YearOutOfRange));
    }
}
