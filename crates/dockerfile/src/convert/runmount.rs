//! `RUN --mount=...`: the comma-separated options of each mount type, their defaults and
//! checks, as upstream's Dockerfile frontend reads them.

/// The kinds of `--mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache sharing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunMount {
    pub(crate) kind: MountType,
    pub(crate) from: Option<String>,
    pub(crate) source: String,
    pub(crate) target: String,
    pub(crate) readonly: bool,
    pub(crate) size: i64,
    pub(crate) id: String,
    pub(crate) sharing: Option<Sharing>,
    pub(crate) required: bool,
    pub(crate) env: Option<String>,
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

/// Splits a CSV record: commas separate fields, double quotes group (with `""` for a
/// quote), as Go's `encoding/csv` reads one line.
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated quote in {s:?}")),
                    }
                }
                at_start = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err(format!("extraneous text after a quoted field in {s:?}"));
                }
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// `64m`, `1g`, `1024` → bytes (Docker's RAMInBytes: binary units, optional `b`).
fn ram_in_bytes(v: &str) -> Result<i64, String> {
    let bad = || format!("invalid value for size: {v}");
    let lower = v.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some('p') => (&lower[..lower.len() - 1], 1 << 50),
        _ => (lower, 1),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if n < 0.0 {
        return Err(bad());
    }
    Ok((n * mult as f64) as i64)
}

/// Parses one `--mount` value. `expand` substitutes variables in option values (`from`
/// is never expanded).
pub(crate) fn parse(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, String> {
    let mut m = RunMount {
        kind: MountType::Bind,
        from: None,
        source: String::new(),
        target: String::new(),
        readonly: false,
        size: 0,
        id: String::new(),
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    for field in csv_fields(value)? {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.name()
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let val = if key == "from" {
            if val.find('$').is_some_and(|i| i != val.len() - 1) {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
            val
        } else {
            expand(&val)?
        };
        match key.as_str() {
            "type" => {
                m.kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(format!(
                            "unsupported mount type {val:?} (expected bind, cache, tmpfs, secret or ssh)"
                        ));
                    }
                }
            }
            "from" => m.from = Some(val),
            "source" | "src" => m.source = val,
            "target" | "dst" | "destination" => m.target = val,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &val)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &val)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.name()
                    ));
                }
                m.required = parse_bool(&key, &val)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key 'size' for mount type '{}'",
                        m.kind.name()
                    ));
                }
                m.size = ram_in_bytes(&val)?;
            }
            "id" => m.id = val,
            "sharing" => {
                m.sharing = Some(match val.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {val:?} (expected shared, private or locked)"
                        ));
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&val, 8)
                        .map_err(|_| format!("invalid value {val} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    val.parse()
                        .map_err(|_| format!("invalid value {val} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    val.parse()
                        .map_err(|_| format!("invalid value {val} for gid"))?,
                )
            }
            "env" => m.env = Some(val),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (set, what) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                return Err(format!(
                    "{what} not allowed for \"{}\" type mounts",
                    m.kind.name()
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.name()
        ));
    }
    Ok(m)
}

/// The `from=` of a mount value, read before variables are known (stages it names are
/// dependencies of the stage).
pub(crate) fn from_of(value: &str) -> Option<String> {
    csv_fields(value).ok()?.into_iter().find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.eq_ignore_ascii_case("from").then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<RunMount, String> {
        parse(s, &|v: &str| Ok(v.to_string()))
    }

    #[test]
    fn defaults_per_type() {
        let b = p("target=/x").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.readonly, "binds are read-only unless rw");
        assert!(!p("type=bind,target=/x,rw").unwrap().readonly);
        assert!(!p("type=cache,target=/x").unwrap().readonly);
        assert!(!p("type=tmpfs,target=/x").unwrap().readonly);
        assert!(p("type=secret,id=a").unwrap().readonly);
        assert_eq!(p("type=tmpfs,target=/t,size=64m").unwrap().size, 64 << 20);
        let c = p("type=cache,target=/c,id=x,sharing=locked,mode=0700,uid=1,gid=2").unwrap();
        assert_eq!(c.sharing, Some(Sharing::Locked));
        assert_eq!((c.mode, c.uid, c.gid), (Some(0o700), Some(1), Some(2)));
    }

    #[test]
    fn errors() {
        assert!(
            p("type=nope")
                .unwrap_err()
                .contains("unsupported mount type")
        );
        assert!(
            p("type=bind,mode=0700,target=/x")
                .unwrap_err()
                .contains("mode not allowed")
        );
        assert!(
            p("type=bind,sharing=shared")
                .unwrap_err()
                .contains("invalid cache sharing")
        );
        assert!(
            p("type=secret")
                .unwrap_err()
                .contains("one of source, target")
        );
        assert!(
            p("type=secret,from=x,id=a")
                .unwrap_err()
                .contains("should not have a from")
        );
        assert!(p("bogus").unwrap_err().contains("key=value"));
        assert!(
            p("type=bind,foo=bar")
                .unwrap_err()
                .contains("unexpected key 'foo'")
        );
        assert!(
            p("type=bind,required")
                .unwrap_err()
                .contains("unexpected key 'required'")
        );
        assert!(p("from=$X").is_err());
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(
            csv_fields(r#"type=bind,"source=a,b",target=/x"#).unwrap(),
            ["type=bind", "source=a,b", "target=/x"]
        );
        assert!(csv_fields(r#""unterminated"#).is_err());
        assert_eq!(
            from_of("type=bind,from=build,target=/x"),
            Some("build".into())
        );
    }
}
