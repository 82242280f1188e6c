//! File ops: a chain of file actions (mkdir, mkfile, rm, symlink, copy) run by the daemon
//! without a container. Actions chain: each works on the result of the one before it.

use std::sync::Arc;

use proto::pb;

use crate::caps;
use crate::marshal::Encoder;
use crate::state::{Metadata, OpKind, OpOptions, Output, State, Vertex, clean_path};

/// A user or group: by numeric id, or by name looked up in the target's `/etc/passwd` or
/// `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Id(u32),
    Name(String),
}

/// Ownership for created or copied files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub user: Option<UserRef>,
    pub group: Option<UserRef>,
}

impl Owner {
    pub fn ids(uid: u32, gid: u32) -> Owner {
        Owner {
            user: Some(UserRef::Id(uid)),
            group: Some(UserRef::Id(gid)),
        }
    }

    /// Parses `user[:group]` where each part is a name or a number.
    pub fn parse(spec: &str) -> Owner {
        let part = |s: &str| match s.parse::<u32>() {
            Ok(id) => UserRef::Id(id),
            Err(_) => UserRef::Name(s.to_string()),
        };
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        Owner {
            user: Some(part(u)),
            group: g.map(part),
        }
    }

    fn to_pb(&self, base: i64) -> pb::ChownOpt {
        let one = |r: &Option<UserRef>| {
            r.as_ref().map(|r| pb::UserOpt {
                user: Some(match r {
                    UserRef::Id(id) => pb::user_opt::User::ById(*id),
                    UserRef::Name(name) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                        name: name.clone(),
                        input: base,
                    }),
                }),
            })
        };
        pb::ChownOpt {
            user: one(&self.user),
            group: one(&self.group),
        }
    }
}

/// A mode for copied files: octal bits or a symbolic `chmod` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

/// Options of a mkdir action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MkdirOptions {
    pub parents: bool,
    pub owner: Option<Owner>,
    /// Unix nanoseconds.
    pub created: Option<i64>,
}

/// Options of a mkfile action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MkfileOptions {
    pub owner: Option<Owner>,
    pub created: Option<i64>,
}

/// Options of an rm action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RmOptions {
    pub allow_not_found: bool,
    pub allow_wildcard: bool,
}

/// Options of a symlink action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymlinkOptions {
    pub owner: Option<Owner>,
    pub created: Option<i64>,
}

/// Options of a copy action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub mode: Option<Chmod>,
    pub follow_symlinks: bool,
    pub dir_copy_contents: bool,
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub required_paths: Vec<String>,
    pub attempt_unpack: bool,
    pub create_dest_path: bool,
    pub allow_wildcard: bool,
    pub allow_empty_wildcard: bool,
    pub owner: Option<Owner>,
    pub created: Option<i64>,
    pub always_replace_existing_dest_paths: bool,
}

/// What a copy reads from: a state, or the result of a file-action chain on a state.
#[derive(Clone, Debug)]
pub enum CopySource {
    State(State),
    Actions(BoundActions),
}

impl From<&State> for CopySource {
    fn from(s: &State) -> CopySource {
        CopySource::State(s.clone())
    }
}

impl From<State> for CopySource {
    fn from(s: State) -> CopySource {
        CopySource::State(s)
    }
}

#[derive(Clone, Debug)]
enum Action {
    Mkdir {
        path: String,
        mode: u32,
        opts: MkdirOptions,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        opts: MkfileOptions,
    },
    Rm {
        path: String,
        opts: RmOptions,
    },
    Symlink {
        oldpath: String,
        newpath: String,
        opts: SymlinkOptions,
    },
    Copy {
        source: CopySource,
        src: String,
        dest: String,
        opts: CopyOptions,
    },
}

#[derive(Debug)]
struct Node {
    prev: Option<Arc<Node>>,
    action: Action,
}

/// A chain of file actions not yet applied to a state.
#[derive(Clone, Debug)]
pub struct FileAction(Arc<Node>);

/// A chain of file actions bound to the state it works on.
#[derive(Clone, Debug)]
pub struct BoundActions(Arc<BoundNode>);

#[derive(Debug)]
struct BoundNode {
    prev: Option<Arc<BoundNode>>,
    action: Action,
    state: State,
}

impl FileAction {
    fn first(action: Action) -> FileAction {
        FileAction(Arc::new(Node { prev: None, action }))
    }

    fn then(&self, action: Action) -> FileAction {
        FileAction(Arc::new(Node {
            prev: Some(self.0.clone()),
            action,
        }))
    }

    pub fn mkdir(path: &str, mode: u32, opts: MkdirOptions) -> FileAction {
        FileAction::first(Action::Mkdir {
            path: path.into(),
            mode,
            opts,
        })
    }

    pub fn mkfile(
        path: &str,
        mode: u32,
        data: impl Into<Vec<u8>>,
        opts: MkfileOptions,
    ) -> FileAction {
        FileAction::first(Action::Mkfile {
            path: path.into(),
            mode,
            data: data.into(),
            opts,
        })
    }

    pub fn rm(path: &str, opts: RmOptions) -> FileAction {
        FileAction::first(Action::Rm {
            path: path.into(),
            opts,
        })
    }

    /// A symlink at `newpath` pointing to `oldpath`.
    pub fn symlink(oldpath: &str, newpath: &str, opts: SymlinkOptions) -> FileAction {
        FileAction::first(Action::Symlink {
            oldpath: oldpath.into(),
            newpath: newpath.into(),
            opts,
        })
    }

    /// Copies `src` (relative paths resolve against the source's working dir) to `dest`.
    pub fn copy(
        source: impl Into<CopySource>,
        src: &str,
        dest: &str,
        opts: CopyOptions,
    ) -> FileAction {
        FileAction::first(Action::Copy {
            source: source.into(),
            src: src.into(),
            dest: dest.into(),
            opts,
        })
    }

    pub fn and_mkdir(&self, path: &str, mode: u32, opts: MkdirOptions) -> FileAction {
        self.then(Action::Mkdir {
            path: path.into(),
            mode,
            opts,
        })
    }

    pub fn and_mkfile(
        &self,
        path: &str,
        mode: u32,
        data: impl Into<Vec<u8>>,
        opts: MkfileOptions,
    ) -> FileAction {
        self.then(Action::Mkfile {
            path: path.into(),
            mode,
            data: data.into(),
            opts,
        })
    }

    pub fn and_rm(&self, path: &str, opts: RmOptions) -> FileAction {
        self.then(Action::Rm {
            path: path.into(),
            opts,
        })
    }

    pub fn and_symlink(&self, oldpath: &str, newpath: &str, opts: SymlinkOptions) -> FileAction {
        self.then(Action::Symlink {
            oldpath: oldpath.into(),
            newpath: newpath.into(),
            opts,
        })
    }

    pub fn and_copy(
        &self,
        source: impl Into<CopySource>,
        src: &str,
        dest: &str,
        opts: CopyOptions,
    ) -> FileAction {
        self.then(Action::Copy {
            source: source.into(),
            src: src.into(),
            dest: dest.into(),
            opts,
        })
    }

    /// Binds the chain to `state`; the result can be the source of a copy.
    pub fn with_state(&self, state: &State) -> BoundActions {
        BoundActions(bind(&self.0, state))
    }
}

fn bind(node: &Arc<Node>, state: &State) -> Arc<BoundNode> {
    Arc::new(BoundNode {
        prev: node.prev.as_ref().map(|p| bind(p, state)),
        action: node.action.clone(),
        state: state.clone(),
    })
}

/// A built file op as stored in its vertex.
#[derive(Debug)]
pub(crate) struct FileSpec {
    last: Arc<BoundNode>,
}

impl State {
    /// Applies a chain of file actions to this state.
    pub fn file(&self, action: &FileAction, options: OpOptions) -> State {
        let spec = FileSpec {
            last: bind(&action.0, self),
        };
        let vertex = Arc::new(Vertex {
            op: OpKind::File(spec),
            options,
        });
        let mut s = self.clone();
        s.output = Some(Output { vertex, index: 0 });
        s
    }
}

/// Go's `path.Join("/", parent, p)` after cleaning, keeping a trailing `/` or `/.` of the
/// original when `keep_slash` (it means "into this directory" for copies).
fn normalize_path(parent: &str, p: &str, keep_slash: bool) -> String {
    let mut out = clean_path(p);
    if !out.starts_with('/') {
        out = clean_path(&format!("/{parent}/{out}"));
    }
    if keep_slash {
        if p.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if p.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

struct Walk<'a> {
    enc: &'a Encoder<'a>,
    inputs: Vec<pb::Input>,
    /// (node identity, its position in `actions`)
    visited: Vec<(*const BoundNode, usize)>,
    actions: Vec<ActionState<'a>>,
}

enum Index {
    Absolute(i64),
    Relative(usize),
}

struct ActionState<'a> {
    node: &'a BoundNode,
    base: i64,
    input: Index,
    input2: Index,
}

impl<'a> Walk<'a> {
    fn add_input(&mut self, o: &Output) -> Result<i64, crate::Error> {
        let inp = self.enc.input(o)?;
        if let Some(i) = self.inputs.iter().position(|x| *x == inp) {
            return Ok(i as i64);
        }
        self.inputs.push(inp);
        Ok(self.inputs.len() as i64 - 1)
    }

    fn add(&mut self, node: &'a BoundNode) -> Result<usize, crate::Error> {
        let id = node as *const BoundNode;
        if let Some((_, pos)) = self.visited.iter().find(|(p, _)| *p == id) {
            return Ok(*pos);
        }
        let prev = match &node.prev {
            Some(p) => Some(self.add(p)?),
            None => None,
        };
        let base = match &node.state.output {
            Some(o) => self.add_input(o)?,
            None => -1,
        };
        let input = match prev {
            Some(p) => Index::Relative(p),
            None => Index::Absolute(base),
        };
        let input2 = match &node.action {
            Action::Copy { source, .. } => match source {
                CopySource::State(s) => match &s.output {
                    Some(o) => Index::Absolute(self.add_input(o)?),
                    None => Index::Absolute(-1),
                },
                CopySource::Actions(b) => Index::Relative(self.add(&b.0)?),
            },
            _ => Index::Absolute(-1),
        };
        let pos = self.actions.len();
        self.visited.push((id, pos));
        self.actions.push(ActionState {
            node,
            base,
            input,
            input2,
        });
        Ok(pos)
    }
}

fn time(t: Option<i64>) -> i64 {
    t.unwrap_or(-1)
}

impl FileSpec {
    /// Outputs this op reads, in the order upstream walks them (last action first).
    pub(crate) fn dependencies(&self) -> Vec<Output> {
        fn walk(node: &BoundNode, out: &mut Vec<Output>) {
            if let Some(o) = &node.state.output {
                out.push(o.clone());
            }
            if let Action::Copy { source, .. } = &node.action {
                match source {
                    CopySource::State(s) => out.extend(s.output.clone()),
                    CopySource::Actions(b) => walk(&b.0, out),
                }
            }
            if let Some(p) = &node.prev {
                walk(p, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.last, &mut out);
        out
    }

    pub(crate) fn encode(&self, enc: &Encoder<'_>) -> Result<(pb::Op, Metadata), crate::Error> {
        let mut md = Metadata::default();
        md.caps.insert(caps::FILE_BASE);
        let mut walk = Walk {
            enc,
            inputs: Vec::new(),
            visited: Vec::new(),
            actions: Vec::new(),
        };
        walk.add(&self.last)?;
        let n_inputs = walk.inputs.len() as i64;
        let count = walk.actions.len();
        let resolve = |i: &Index| match i {
            Index::Absolute(v) => *v,
            Index::Relative(r) => n_inputs + *r as i64,
        };
        let mut actions = Vec::with_capacity(count);
        for (i, st) in walk.actions.iter().enumerate() {
            let parent = st.node.state.get_dir();
            let action = match &st.node.action {
                Action::Mkdir { path, mode, opts } => {
                    pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                        path: normalize_path(parent, path, false),
                        mode: (*mode & 0o777) as i32,
                        make_parents: opts.parents,
                        owner: opts.owner.as_ref().map(|o| o.to_pb(st.base)),
                        timestamp: time(opts.created),
                    })
                }
                Action::Mkfile {
                    path,
                    mode,
                    data,
                    opts,
                } => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path: normalize_path(parent, path, false),
                    mode: (*mode & 0o777) as i32,
                    data: data.clone(),
                    owner: opts.owner.as_ref().map(|o| o.to_pb(st.base)),
                    timestamp: time(opts.created),
                }),
                Action::Rm { path, opts } => {
                    if opts.allow_wildcard {
                        md.caps.insert(caps::FILE_RM_WILDCARD);
                    }
                    pb::file_action::Action::Rm(pb::FileActionRm {
                        path: normalize_path(parent, path, false),
                        allow_not_found: opts.allow_not_found,
                        allow_wildcard: opts.allow_wildcard,
                    })
                }
                Action::Symlink {
                    oldpath,
                    newpath,
                    opts,
                } => {
                    md.caps.insert(caps::FILE_SYMLINK_CREATE);
                    pb::file_action::Action::Symlink(pb::FileActionSymlink {
                        oldpath: oldpath.clone(),
                        newpath: newpath.clone(),
                        owner: opts.owner.as_ref().map(|o| o.to_pb(st.base)),
                        timestamp: time(opts.created),
                    })
                }
                Action::Copy {
                    source,
                    src,
                    dest,
                    opts,
                } => {
                    if !opts.include_patterns.is_empty() || !opts.exclude_patterns.is_empty() {
                        md.caps.insert(caps::FILE_COPY_INCLUDE_EXCLUDE_PATTERNS);
                    }
                    if !opts.required_paths.is_empty() {
                        md.caps.insert(caps::FILE_COPY_REQUIRED_PATHS);
                    }
                    if opts.always_replace_existing_dest_paths {
                        md.caps
                            .insert(caps::FILE_COPY_ALWAYS_REPLACE_EXISTING_DEST_PATHS);
                    }
                    let src_dir = match source {
                        CopySource::State(s) => s.get_dir().to_string(),
                        CopySource::Actions(b) => b.0.state.get_dir().to_string(),
                    };
                    let cleaned = clean_path(src);
                    let src_path = if cleaned.starts_with('/') {
                        cleaned
                    } else {
                        clean_path(&format!("{src_dir}/{cleaned}"))
                    };
                    let (mode, mode_str) = match &opts.mode {
                        None => (-1, String::new()),
                        Some(Chmod::Octal(m)) => (*m as i32, String::new()),
                        Some(Chmod::Symbolic(s)) => {
                            md.caps.insert(caps::FILE_COPY_MODE_STRING);
                            (0, s.clone())
                        }
                    };
                    pb::file_action::Action::Copy(pb::FileActionCopy {
                        src: src_path,
                        dest: normalize_path(parent, dest, true),
                        owner: opts.owner.as_ref().map(|o| o.to_pb(st.base)),
                        mode,
                        follow_symlink: opts.follow_symlinks,
                        dir_copy_contents: opts.dir_copy_contents,
                        attempt_unpack_docker_compatibility: opts.attempt_unpack,
                        create_dest_path: opts.create_dest_path,
                        allow_wildcard: opts.allow_wildcard,
                        allow_empty_wildcard: opts.allow_empty_wildcard,
                        timestamp: time(opts.created),
                        include_patterns: opts.include_patterns.clone(),
                        exclude_patterns: opts.exclude_patterns.clone(),
                        always_replace_existing_dest_paths: opts.always_replace_existing_dest_paths,
                        mode_str,
                        required_paths: opts.required_paths.clone(),
                    })
                }
            };
            actions.push(pb::FileAction {
                input: resolve(&st.input),
                secondary_input: resolve(&st.input2),
                output: if i + 1 == count { 0 } else { -1 },
                action: Some(action),
            });
        }
        let op = pb::Op {
            inputs: walk.inputs,
            op: Some(pb::op::Op::File(pb::FileOp { actions })),
            ..pb::Op::default()
        };
        Ok((op, md))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_like_upstream() {
        assert_eq!(normalize_path("/", "a", false), "/a");
        assert_eq!(normalize_path("/w", "a/../b", false), "/w/b");
        assert_eq!(normalize_path("/w", "d/", true), "/w/d/");
        assert_eq!(normalize_path("/w", "d/.", true), "/w/d/.");
        assert_eq!(normalize_path("/", "/.", true), "/.");
        assert_eq!(normalize_path("/", "/", true), "/");
        assert_eq!(normalize_path("", "x", false), "/x");
    }

    #[test]
    fn owner_parsing() {
        assert_eq!(Owner::parse("1000:1000"), Owner::ids(1000, 1000));
        assert_eq!(
            Owner::parse("app"),
            Owner {
                user: Some(UserRef::Name("app".into())),
                group: None
            }
        );
    }
}
