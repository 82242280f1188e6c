//! Record filters in containerd's syntax, as `buildctl du --filter` and `prune --filter`
//! take them: `field`, `field==value`, `field!=value` or `field~=regex`, joined by `,`
//! (all must match); several filters match when any does.
//!
//! Fields: `id`, `parents` (the parent ids joined by `;`), `description`, `type`, and
//! the flags `inuse`, `mutable`, `immutable`, `shared`, `private`, which are present
//! (match a bare `field`) when true, with an empty value.

use regex::Regex;

use crate::{Error, UsageRecord};

#[derive(Clone, Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Clone, Debug)]
struct Selector {
    field: String,
    op: Op,
}

/// One filter: selectors that must all match.
#[derive(Clone, Debug)]
pub struct Filter {
    selectors: Vec<Selector>,
}

const FIELDS: &[&str] = &[
    "id",
    "parents",
    "description",
    "type",
    "inuse",
    "mutable",
    "immutable",
    "shared",
    "private",
];

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        v[1..v.len() - 1].replace("\\\"", "\"")
    } else {
        v.to_string()
    }
}

impl Filter {
    /// Parses one filter.
    pub fn parse(s: &str) -> Result<Filter, Error> {
        let bad = |why: String| Error::Filter {
            filter: s.to_string(),
            reason: why,
        };
        let mut selectors = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("empty selector".into()));
            }
            let (field, op) = if let Some((f, v)) = part.split_once("~=") {
                let re = Regex::new(&unquote(v))
                    .map_err(|e| bad(format!("bad regular expression: {e}")))?;
                (f, Op::Matches(re))
            } else if let Some((f, v)) = part.split_once("!=") {
                (f, Op::NotEqual(unquote(v)))
            } else if let Some((f, v)) = part.split_once("==") {
                (f, Op::Equal(unquote(v)))
            } else if part.contains('=') {
                return Err(bad(format!("{part:?}: the operators are ==, != and ~=")));
            } else {
                (part, Op::Present)
            };
            let field = field.trim().to_ascii_lowercase();
            if !FIELDS.contains(&field.as_str()) {
                return Err(bad(format!(
                    "unknown field {field:?} (known: {})",
                    FIELDS.join(", ")
                )));
            }
            selectors.push(Selector { field, op });
        }
        Ok(Filter { selectors })
    }

    /// Parses a list of filters (any may match); an empty list matches everything.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Vec<Filter>, Error> {
        filters.iter().map(|f| Filter::parse(f.as_ref())).collect()
    }

    /// Whether `r` matches every selector.
    pub fn matches(&self, r: &UsageRecord) -> bool {
        self.selectors.iter().all(|s| {
            let (value, present) = field(r, &s.field);
            match &s.op {
                Op::Present => present,
                Op::Equal(v) => present && value == *v,
                Op::NotEqual(v) => !present || value != *v,
                Op::Matches(re) => present && re.is_match(&value),
            }
        })
    }
}

/// Whether any of `filters` matches `r` (all do when there are none).
pub fn any_matches(filters: &[Filter], r: &UsageRecord) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(r))
}

fn flag(b: bool) -> (String, bool) {
    (String::new(), b)
}

fn field(r: &UsageRecord, name: &str) -> (String, bool) {
    match name {
        "id" => (r.id.clone(), !r.id.is_empty()),
        "parents" => (r.parents.join(";"), !r.parents.is_empty()),
        "description" => (r.description.clone(), !r.description.is_empty()),
        "type" => (r.record_type.as_str().to_string(), true),
        "inuse" => flag(r.in_use),
        "mutable" => flag(r.mutable),
        "immutable" => flag(!r.mutable),
        "shared" => flag(r.shared),
        "private" => flag(!r.shared),
        _ => (String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordType;

    fn rec(id: &str, t: RecordType, in_use: bool) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            record_type: t,
            in_use,
            description: format!("made by {id}"),
            ..UsageRecord::default()
        }
    }

    #[test]
    fn selectors_and_alternatives() {
        let a = rec("ref/abc", RecordType::Regular, false);
        let b = rec("ref/xyz", RecordType::SourceLocal, true);
        let m = |f: &[&str], r: &UsageRecord| any_matches(&Filter::parse_all(f).unwrap(), r);
        assert!(m(&[], &a));
        assert!(m(&["type==regular"], &a) && !m(&["type==regular"], &b));
        assert!(m(&["type!=regular"], &b) && !m(&["type!=regular"], &a));
        assert!(m(&["id~=^ref/a"], &a) && !m(&["id~=^ref/a"], &b));
        assert!(m(&["inuse"], &b) && !m(&["inuse"], &a));
        assert!(m(&["immutable,private"], &a));
        assert!(
            !m(&["type==regular,inuse"], &a),
            "all selectors of one filter"
        );
        assert!(
            m(&["type==regular,inuse", "type==source.local"], &b),
            "any filter"
        );
        assert!(m(&["description==\"made by ref/abc\""], &a));
    }

    #[test]
    fn bad_filters_are_errors_naming_them() {
        for (f, want) in [
            ("colour==red", "unknown field"),
            ("type=regular", "operators"),
            ("id~=(", "regular expression"),
            ("type==regular,", "empty selector"),
        ] {
            let e = Filter::parse(f).unwrap_err().to_string();
            assert!(e.contains(f) && e.contains(want), "{f}: {e}");
        }
    }
}
