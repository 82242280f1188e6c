//! The part of Go's `text/template` that `--format` needs for cache records: literal
//! text, `{{json .}}` (also the alias `json`), `{{.Field}}` on a record, and
//! `{{range .}}...{{end}}` over a list. Anything else is refused with a clear error,
//! rather than printed wrongly.

use anyhow::{anyhow, bail};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Json,
    Field(String),
    Range(Vec<Node>),
}

/// A parsed `--format` template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub(crate) fn parse(format: &str) -> anyhow::Result<Template> {
        let format = if format == "json" {
            "{{json .}}"
        } else {
            format
        };
        let mut rest = format;
        let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
        while !rest.is_empty() {
            let Some(start) = rest.find("{{") else {
                push(&mut stack, Node::Text(rest.to_string()));
                break;
            };
            if start > 0 {
                push(&mut stack, Node::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow!("template {format:?}: unclosed action"))?;
            let action = after[..end].trim();
            rest = &after[end + 2..];
            match action.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["json", "."] => push(&mut stack, Node::Json),
                ["range", "."] => stack.push(Vec::new()),
                ["end"] => {
                    if stack.len() < 2 {
                        bail!("template {format:?}: unexpected {{{{end}}}}");
                    }
                    let body = stack.pop().unwrap_or_default();
                    push(&mut stack, Node::Range(body));
                }
                [field] if field.starts_with('.') && field.len() > 1 => {
                    push(&mut stack, Node::Field(field[1..].to_string()))
                }
                _ => bail!(
                    "template {format:?}: unsupported action {{{{{action}}}}} (supported: {{{{json .}}}}, {{{{.Field}}}}, {{{{range .}}}}...{{{{end}}}})"
                ),
            }
        }
        if stack.len() != 1 {
            bail!("template {format:?}: {{{{range}}}} without {{{{end}}}}");
        }
        Ok(Template {
            nodes: stack.pop().unwrap_or_default(),
        })
    }

    /// Applies the template to `data` (records as upstream's client JSON-encodes them;
    /// fields are also found by their Go names, `ID`, `InUse`, ...).
    pub(crate) fn execute(&self, data: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        run(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

fn push(stack: &mut [Vec<Node>], node: Node) {
    if let Some(top) = stack.last_mut() {
        top.push(node);
    }
}

fn run(nodes: &[Node], data: &Value, out: &mut String) -> anyhow::Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Json => out.push_str(&serde_json::to_string(data)?),
            Node::Field(name) => {
                let Value::Object(map) = data else {
                    bail!("can't evaluate field {name} in a list of records (use {{{{range .}}}})");
                };
                let key = map
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(name))
                    .ok_or_else(|| anyhow!("can't evaluate field {name} in a record"))?;
                match &map[key] {
                    Value::String(s) => out.push_str(s),
                    Value::Null => out.push_str("<nil>"),
                    Value::Array(items) => {
                        let items: Vec<String> = items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), String::from))
                            .collect();
                        out.push_str(&format!("[{}]", items.join(" ")));
                    }
                    v => out.push_str(&v.to_string()),
                }
            }
            Node::Range(body) => {
                let Value::Array(items) = data else {
                    bail!("range can't iterate over a record");
                };
                for item in items {
                    run(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_and_ranges() {
        let rec = serde_json::json!({"id": "a", "inUse": false, "size": 5, "parents": null});
        let list = Value::Array(vec![rec.clone(), serde_json::json!({"id": "b"})]);
        assert_eq!(
            Template::parse("json").unwrap().execute(&rec).unwrap(),
            r#"{"id":"a","inUse":false,"parents":null,"size":5}"#
        );
        assert_eq!(
            Template::parse("{{.ID}} {{.Size}} {{.InUse}}")
                .unwrap()
                .execute(&rec)
                .unwrap(),
            "a 5 false"
        );
        assert_eq!(
            Template::parse("{{range .}}{{.ID}};{{end}}")
                .unwrap()
                .execute(&list)
                .unwrap(),
            "a;b;"
        );
        assert!(Template::parse("{{.ID}}").unwrap().execute(&list).is_err());
        for bad in ["{{if .}}", "{{range .}}", "{{end}}", "{{json ."] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
