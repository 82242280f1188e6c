//! The Graphviz form of dump-llb (`--dot`), following upstream's node labels and shapes.

use proto::pb;
use proto::pb::file_action::Action;
use proto::pb::op::Op;

use super::Vertex;

/// `digraph { nodes…; edges…; }`: nodes first, in op order, then every input edge.
pub(super) fn render(vertices: &[Vertex]) -> String {
    let mut out = String::from("digraph {\n");
    for v in vertices {
        let (label, shape) = node(v);
        out.push_str(&format!(
            "  {} [label={} shape={}];\n",
            quote(&v.digest),
            quote(&label),
            quote(shape)
        ));
    }
    for v in vertices {
        for (i, input) in v.op.inputs.iter().enumerate() {
            out.push_str(&format!(
                "  {} -> {} [label={}];\n",
                quote(&input.digest),
                quote(&v.digest),
                quote(edge_label(&v.op, i))
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// A node's label and shape, by op kind.
fn node(v: &Vertex) -> (String, &'static str) {
    match &v.op.op {
        Some(Op::Source(s)) => (s.identifier.clone(), "ellipse"),
        Some(Op::Exec(e)) => {
            let args = e.meta.as_ref().map(|m| m.args.join(" "));
            (args.unwrap_or_default(), "box")
        }
        Some(Op::Build(_)) => ("build".into(), "box3d"),
        Some(Op::Merge(_)) => ("merge".into(), "invtriangle"),
        Some(Op::Diff(_)) => ("diff".into(), "doublecircle"),
        Some(Op::File(f)) => {
            let names: Vec<String> = f.actions.iter().map(file_action_label).collect();
            (names.join(","), "note")
        }
        Some(Op::Passthrough(_)) | None => (v.digest.clone(), "plaintext"),
    }
}

fn file_action_label(action: &pb::FileAction) -> String {
    match &action.action {
        Some(Action::Copy(c)) => format!("copy{{src={}, dest={}}}", c.src, c.dest),
        Some(Action::Mkfile(m)) => format!("mkfile{{path={}}}", m.path),
        Some(Action::Mkdir(m)) => format!("mkdir{{path={}}}", m.path),
        Some(Action::Rm(r)) => format!("rm{{path={}}}", r.path),
        Some(Action::Symlink(s)) => {
            format!("symlink{{oldpath={}, newpath={}}}", s.oldpath, s.newpath)
        }
        None => String::new(),
    }
}

/// The label of the edge for input `index`: where an exec op mounts it, unless at `/`
/// (the last such mount wins, as upstream).
fn edge_label(op: &pb::Op, index: usize) -> &str {
    let Some(Op::Exec(exec)) = &op.op else {
        return "";
    };
    exec.mounts
        .iter()
        .filter(|m| usize::try_from(m.input).is_ok_and(|i| i == index) && m.dest != "/")
        .map(|m| m.dest.as_str())
        .next_back()
        .unwrap_or("")
}

/// A double-quoted string with Go `%q` escapes (`strconv.Quote`). Printable characters stay
/// literal; what counts as printable is approximated by Rust's control and whitespace
/// classes plus the common invisible format characters and the private use areas (Go uses
/// the full Unicode category tables, so exotic code points may differ).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if !printable(c) && (c as u32) < 0x10000 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if !printable(c) => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn printable(c: char) -> bool {
    let format_char = matches!(
        c,
        '\u{ad}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    );
    let private_use = matches!(c, '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..);
    c == ' ' || !(c.is_control() || c.is_whitespace() || format_char || private_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(digest: &str, op: Op, inputs: &[&str]) -> Vertex {
        Vertex {
            op: pb::Op {
                inputs: inputs
                    .iter()
                    .map(|d| pb::Input {
                        digest: d.to_string(),
                        index: 0,
                    })
                    .collect(),
                op: Some(op),
                ..Default::default()
            },
            digest: digest.into(),
            metadata: None,
        }
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(quote("\u{1}\u{7f}"), r#""\x01\x7f""#);
        assert_eq!(quote("é<>&한"), "\"é<>&한\"");
        assert_eq!(quote("\u{a0}\u{2028}\u{feff}"), r#""\u00a0\u2028\ufeff""#);
        assert_eq!(quote("\u{e0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn shapes_labels_and_mount_edges() {
        let exec = pb::ExecOp {
            meta: Some(pb::Meta {
                args: vec!["sh".into(), "-c".into(), "echo \"hi\"".into()],
                ..Default::default()
            }),
            mounts: vec![
                pb::Mount {
                    input: 0,
                    dest: "/".into(),
                    ..Default::default()
                },
                pb::Mount {
                    input: 1,
                    dest: "/src".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let file = pb::FileOp {
            actions: ["copy", "mkfile", "mkdir", "rm", "symlink"]
                .iter()
                .map(|kind| pb::FileAction {
                    action: Some(match *kind {
                        "copy" => Action::Copy(pb::FileActionCopy {
                            src: "/a".into(),
                            dest: "/b".into(),
                            ..Default::default()
                        }),
                        "mkfile" => Action::Mkfile(pb::FileActionMkFile {
                            path: "/f".into(),
                            ..Default::default()
                        }),
                        "mkdir" => Action::Mkdir(pb::FileActionMkDir {
                            path: "/d".into(),
                            ..Default::default()
                        }),
                        "rm" => Action::Rm(pb::FileActionRm {
                            path: "/r".into(),
                            ..Default::default()
                        }),
                        _ => Action::Symlink(pb::FileActionSymlink {
                            oldpath: "/o".into(),
                            newpath: "/n".into(),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                })
                .collect(),
        };
        let vertices = vec![
            vertex("s1", Op::Source(pb::SourceOp::default()), &[]),
            vertex("e", Op::Exec(exec), &["s1", "s2"]),
            vertex("f", Op::File(file), &["e"]),
            vertex("m", Op::Merge(pb::MergeOp::default()), &["f", "e"]),
            vertex("d", Op::Diff(pb::DiffOp::default()), &[]),
            vertex("b", Op::Build(pb::BuildOp::default()), &[]),
            vertex("p", Op::Passthrough(pb::PassthroughOp::default()), &[]),
        ];
        let want = concat!(
            "digraph {\n",
            "  \"s1\" [label=\"\" shape=\"ellipse\"];\n",
            "  \"e\" [label=\"sh -c echo \\\"hi\\\"\" shape=\"box\"];\n",
            "  \"f\" [label=\"copy{src=/a, dest=/b},mkfile{path=/f},mkdir{path=/d},rm{path=/r},symlink{oldpath=/o, newpath=/n}\" shape=\"note\"];\n",
            "  \"m\" [label=\"merge\" shape=\"invtriangle\"];\n",
            "  \"d\" [label=\"diff\" shape=\"doublecircle\"];\n",
            "  \"b\" [label=\"build\" shape=\"box3d\"];\n",
            "  \"p\" [label=\"p\" shape=\"plaintext\"];\n",
            "  \"s1\" -> \"e\" [label=\"\"];\n",
            "  \"s2\" -> \"e\" [label=\"/src\"];\n",
            "  \"e\" -> \"f\" [label=\"\"];\n",
            "  \"f\" -> \"m\" [label=\"\"];\n",
            "  \"e\" -> \"m\" [label=\"\"];\n",
            "}\n",
        );
        assert_eq!(render(&vertices), want);
    }

    #[test]
    fn exec_without_meta_does_not_panic() {
        let v = vertex("e", Op::Exec(pb::ExecOp::default()), &[]);
        assert_eq!(node(&v), (String::new(), "box"));
    }
}
