//! `--output` specs and `--metadata-file`, read and written as upstream's buildctl does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;

/// The fields of one CSV record (Go's `encoding/csv` rules: a field starting with `"` is
/// quoted, `""` inside it is a quote, and a bare `"` elsewhere is an error).
pub(super) fn csv_fields(s: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    if s.is_empty() {
        return Ok(fields);
    }
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => bail!("extraneous or missing \" in quoted-field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => bail!("extraneous or missing \" in quoted-field"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => bail!("bare \" in non-quoted-field"),
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// Where an exporter's result goes on this side.
#[derive(Debug, PartialEq, Eq)]
enum Dest {
    /// Nothing comes back (the `image` exporter).
    None,
    Dir(String),
    File(String),
    Stdout,
}

/// Parses `--output` flags into exporters for the daemon and where their results go
/// here. `stdout_is_terminal` refuses tarballs on a terminal, as upstream does.
pub(super) fn parse_outputs(
    specs: &[String],
    stdout_is_terminal: bool,
) -> anyhow::Result<(
    Vec<proto::control::Exporter>,
    Option<session::FileSendTarget>,
)> {
    let mut exporters = Vec::new();
    let mut target = None::<session::FileSendTarget>;
    for (i, spec) in specs.iter().enumerate() {
        let (ty, attrs, dest) =
            parse_output(spec, stdout_is_terminal).with_context(|| format!("--output {spec}"))?;
        let id = i as u64;
        let t = target.take().unwrap_or_default();
        target = Some(match dest {
            Dest::None => t,
            Dest::Dir(d) => match export_record(Path::new(&d)) {
                Some(record) => t.dir_recorded(id, d, record),
                None => t.dir(id, d),
            },
            Dest::File(f) => {
                // Created now, as upstream does, so that a bad path fails before the build.
                std::fs::File::create(&f).with_context(|| format!("--output {spec}: {f}"))?;
                t.file(id, f)
            }
            Dest::Stdout => t.stdout(id),
        });
        exporters.push(proto::control::Exporter { r#type: ty, attrs });
    }
    Ok((exporters, target))
}

/// Where the record of the exports into directory `dest` is kept, so that the next
/// export there sends only what changed: `buildkit-rs/local-exports/<sha256 of the
/// directory's canonical path>.json` under `$XDG_STATE_HOME` (or `~/.local/state`).
/// `None` (every file is sent) when there is no such place or `dest` cannot be made.
fn export_record(dest: &Path) -> Option<std::path::PathBuf> {
    use sha2::Digest;
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".local/state"))
        })?;
    std::fs::create_dir_all(dest).ok()?;
    let canonical = std::fs::canonicalize(dest).ok()?;
    let key = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let records = state.join("buildkit-rs/local-exports");
    forget_old_records(&records);
    Some(records.join(format!("{}.json", hex::encode(key))))
}

/// Removes export records unused for [`RECORD_LIFETIME`] (their directories are
/// probably gone; an export there again just sends everything).
fn forget_old_records(records: &Path) {
    let Ok(entries) = std::fs::read_dir(records) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > RECORD_LIFETIME);
        if old && e.file_name().to_string_lossy().ends_with(".json") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// How long an export record is kept without an export into its directory.
const RECORD_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

fn parse_output(
    spec: &str,
    stdout_is_terminal: bool,
) -> anyhow::Result<(String, BTreeMap<String, String>, Dest)> {
    let mut ty = String::new();
    let mut attrs = BTreeMap::new();
    for field in csv_fields(spec)? {
        let Some((k, v)) = field.split_once('=') else {
            bail!("invalid value {field}");
        };
        let k = k.to_ascii_lowercase();
        if k == "type" {
            ty = v.to_string();
        } else {
            attrs.insert(k, v.to_string());
        }
    }
    if ty.is_empty() {
        bail!("--output requires type=<type>");
    }
    if let Some(v) = attrs.get("output") {
        bail!("output={v} not supported for --output, you meant dest={v}?");
    }
    let dest = attrs.get("dest").cloned().unwrap_or_default();
    let (file, dir) = match ty.as_str() {
        "local" => (false, true),
        "tar" => (true, false),
        "oci" | "docker" => {
            let tar = attrs
                .get("tar")
                .and_then(|v| parse_go_bool(v))
                .unwrap_or(true);
            (tar, !tar)
        }
        _ => (false, false),
    };
    let out = if dir {
        if dest.is_empty() {
            bail!("output directory is required for {ty} exporter");
        }
        Dest::Dir(dest)
    } else if file {
        if !dest.is_empty() && dest != "-" {
            if Path::new(&dest).is_dir() {
                bail!("destination file is a directory");
            }
            Dest::File(dest)
        } else if stdout_is_terminal {
            bail!("output file is required for {ty} exporter. refusing to write to console");
        } else {
            Dest::Stdout
        }
    } else {
        if !dest.is_empty() {
            bail!("output {dest} is not supported by {ty} exporter");
        }
        Dest::None
    };
    if out != Dest::None {
        attrs.remove("dest");
    }
    Ok((ty, attrs, out))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// JSON text as Go's encoder escapes it: `<`, `>`, `&`, U+2028, U+2029.
fn go_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Re-indents valid JSON text as Go's `json.Indent` with two spaces, starting at
/// `depth`, keeping the order of its keys (they are not parsed into a map).
fn indent_json(raw: &str, depth: usize) -> String {
    let pad = |n: usize| "  ".repeat(n);
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = depth;
    let mut chars = raw.chars().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(c);
                    out.push(close);
                } else {
                    depth += 1;
                    out.push(c);
                    out.push('\n');
                    out.push_str(&pad(depth));
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                out.push('\n');
                out.push_str(&pad(depth));
                out.push(c);
            }
            ',' => {
                out.push(',');
                out.push('\n');
                out.push_str(&pad(depth));
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    go_escape(&out)
}

/// The `--metadata-file` text for an exporter response: a JSON object with the keys
/// sorted; values that are base64 of a non-empty JSON object are that object, the others
/// strings (upstream's rule).
pub(super) fn render_metadata(response: &BTreeMap<String, String>) -> String {
    if response.is_empty() {
        return "{}".into();
    }
    let mut out = String::from("{\n");
    for (i, (k, v)) in response.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        let key = go_escape(&serde_json::to_string(k).unwrap_or_default());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|text| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                    .is_ok_and(|m| !m.is_empty())
            });
        let value = match decoded {
            Some(text) => indent_json(&text, 1),
            None => go_escape(&serde_json::to_string(v).unwrap_or_default()),
        };
        out.push_str(&format!("  {key}: {value}"));
    }
    out.push_str("\n}");
    out
}

/// Writes `response` to `path` as [`render_metadata`] renders it, atomically (a reader
/// never sees half a file).
pub(super) fn write_metadata_file(
    path: &Path,
    response: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let text = render_metadata(response);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("--metadata-file {}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_like_go() {
        assert_eq!(
            csv_fields(r#"type=image,"name=a:1,b:2",push=true"#).unwrap(),
            ["type=image", "name=a:1,b:2", "push=true"]
        );
        assert_eq!(csv_fields(r#""a""b",c"#).unwrap(), ["a\"b", "c"]);
        assert_eq!(csv_fields("a,,b").unwrap(), ["a", "", "b"]);
        assert!(csv_fields(r#"a"b"#).is_err());
        assert!(csv_fields(r#""ab"c"#).is_err());
        assert!(csv_fields(r#""ab"#).is_err());
    }

    #[test]
    fn outputs_as_upstream_resolves_them() {
        let (ty, attrs, dest) = parse_output("type=image,name=x,push=true", true).unwrap();
        assert_eq!((ty.as_str(), dest), ("image", Dest::None));
        assert_eq!(attrs["name"], "x");
        let (_, attrs, dest) = parse_output("type=oci,dest=out.tar,Name=x", true).unwrap();
        assert_eq!(dest, Dest::File("out.tar".into()));
        assert!(!attrs.contains_key("dest"));
        assert_eq!(attrs["name"], "x");
        assert_eq!(
            parse_output("type=docker,dest=-", false).unwrap().2,
            Dest::Stdout
        );
        assert_eq!(parse_output("type=docker", false).unwrap().2, Dest::Stdout);
        let err = |s: &str| parse_output(s, true).unwrap_err().to_string();
        assert!(err("type=oci").contains("refusing to write to console"));
        assert!(err("type=tar,dest=-").contains("refusing to write to console"));
        assert!(err("type=image,dest=x").contains("not supported by image exporter"));
        assert!(err("type=local").contains("output directory is required"));
        assert!(err("name=x").contains("requires type"));
        assert!(err("type=oci,output=x").contains("you meant dest=x"));
        assert!(err("type=oci,novalue").contains("invalid value novalue"));
        let dir = std::env::temp_dir();
        assert!(err(&format!("type=oci,dest={}", dir.display())).contains("is a directory"));
        assert_eq!(
            parse_output("type=oci,tar=false,dest=d", true).unwrap().2,
            Dest::Dir("d".into())
        );
    }

    #[test]
    fn metadata_like_upstream() {
        let desc = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":3,"annotations":{"a":"<b>"},"platform":{"architecture":"amd64","os":"linux"}}"#;
        let response = BTreeMap::from([
            ("containerimage.digest".to_string(), "sha256:ab".to_string()),
            (
                "containerimage.descriptor".to_string(),
                base64::engine::general_purpose::STANDARD.encode(desc),
            ),
            (
                "image.name".to_string(),
                "127.0.0.1:5000/test:1".to_string(),
            ),
            // base64 of a JSON value that is not an object stays a string
            ("x".to_string(), "WzFd".to_string()),
        ]);
        let text = render_metadata(&response);
        assert_eq!(
            text,
            r#"{
  "containerimage.descriptor": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:ab",
    "size": 3,
    "annotations": {
      "a": "\u003cb\u003e"
    },
    "platform": {
      "architecture": "amd64",
      "os": "linux"
    }
  },
  "containerimage.digest": "sha256:ab",
  "image.name": "127.0.0.1:5000/test:1",
  "x": "WzFd"
}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["containerimage.descriptor"]["size"], 3);
        assert_eq!(render_metadata(&BTreeMap::new()), "{}");
        assert_eq!(
            indent_json("{ \"a\" : [ ] , \"b\":{}}", 0),
            "{\n  \"a\": [],\n  \"b\": {}\n}"
        );
    }
}
