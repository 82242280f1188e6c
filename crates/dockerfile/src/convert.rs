//! Dockerfile to LLB: stages, build arguments, base images and instructions become an LLB
//! graph and the image config of the target stage, the way upstream's `dockerfile2llb`
//! builds them (same ops, names and history, so the same Dockerfile gives the same
//! digests).
//!
//! Conversion is pure and happens in two steps, because base images must be resolved (a
//! registry round trip) between them:
//!
//! ```text
//! let conv = Converter::new(&dockerfile, options)?;
//! for req in conv.images() { /* resolve req.reference for req.platform */ }
//! let out = conv.convert(&resolved)?;   // out.state: the target's LLB, out.image: its config
//! ```
//!
//! Supported: FROM (`--platform`, `AS`, `scratch`, earlier stages), RUN (shell and exec
//! form, heredocs), COPY/ADD from the context, a stage or an image (`--from`, `--chown`,
//! `--chmod`, `--link`, `--parents`, `--exclude`, heredoc sources), WORKDIR, ENV, ARG
//! (global and per stage), USER, CMD, ENTRYPOINT, LABEL, EXPOSE, VOLUME, STOPSIGNAL,
//! SHELL, MAINTAINER, HEALTHCHECK, ONBUILD (recorded in the config). Not yet: RUN
//! `--mount`, `--network`, `--security`; ADD from URLs and git; running a base image's
//! ONBUILD triggers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use llb::duration::{format as go_duration, parse as parse_duration};
use llb::{
    Chmod, CopyOptions, FileAction, MkdirOptions, MkfileOptions, Mount, OpOptions, Owner, Platform,
    State,
};

use crate::image::{HealthConfig, ImageConfig};

mod runmount;
use crate::instructions::{self, ArgDef, Command, CommandLine, Copy, Located, Run, Stage};
use crate::parser::Dockerfile;
use crate::shell::{EnvList, Lexer};
use runmount::{MountType, Sharing};

/// The description key upstream puts the instruction's source text under.
pub const COMMAND_DESCRIPTION: &str = "com.docker.dockerfile.v1.command";

/// A Dockerfile could not be turned into LLB. Displays as `Dockerfile:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConvertError {
    /// The Dockerfile's name.
    pub file: String,
    /// The line the error refers to, if it is about one instruction.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What the conversion needs besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The Dockerfile's name, for errors.
    pub file_name: String,
    /// The stage to build; the last one when `None`.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// The local source name of the build context.
    pub context_name: String,
    /// `.dockerignore` patterns, excluded from the context by the client.
    pub context_excludes: Vec<String>,
    /// Run steps again instead of using the cache (`--no-cache`).
    pub no_cache: NoCache,
    /// `label:NAME` options: labels added to the target's image config.
    pub labels: BTreeMap<String, String>,
    /// `add-hosts`: extra `/etc/hosts` entries for every RUN.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `shm-size`: size of a tmpfs on `/dev/shm` for every RUN (0: none).
    pub shm_size: i64,
    /// `force-network-mode`: the network of every RUN without `--network`.
    pub network: Option<llb::NetMode>,
    /// `context:NAME=...`: stages and images replaced by other sources.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// The hostname of every RUN (`--build-arg BUILDKIT_SANDBOX_HOSTNAME=...`).
    pub hostname: Option<String>,
    /// Step names start with the stage's platform (`[linux/arm64 build 2/3] RUN ...`),
    /// as upstream names them in a multi-platform build. Names only: the ops are the
    /// same.
    pub prefix_platform: bool,
}

/// Which stages ignore the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NoCache {
    #[default]
    None,
    All,
    /// These stages (by name).
    Stages(Vec<String>),
}

/// What a named context (`--opt context:NAME=VALUE`) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: an image instead of the one named.
    Image(String),
    /// `local:NAME`: a directory the client sends as local `NAME`.
    Local(String),
}

impl NamedContext {
    /// Parses the value of a `context:NAME` option.
    pub fn parse(v: &str) -> Result<NamedContext, String> {
        if let Some(r) = v.strip_prefix("docker-image://") {
            return Ok(NamedContext::Image(r.to_string()));
        }
        if let Some(n) = v.strip_prefix("local:") {
            if n.is_empty() {
                return Err(format!("named context {v:?}: no local name"));
            }
            return Ok(NamedContext::Local(n.to_string()));
        }
        Err(format!(
            "named context {v:?}: unsupported (use docker-image://REF or local:NAME)"
        ))
    }
}

impl Default for ConvertOptions {
    fn default() -> ConvertOptions {
        ConvertOptions {
            file_name: crate::DEFAULT_FILE_NAME.into(),
            target: None,
            build_args: BTreeMap::new(),
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            context_name: "context".into(),
            context_excludes: Vec::new(),
            no_cache: NoCache::None,
            labels: BTreeMap::new(),
            extra_hosts: Vec::new(),
            shm_size: 0,
            network: None,
            named_contexts: BTreeMap::new(),
            hostname: None,
            prefix_platform: false,
        }
    }
}

/// A base image the conversion needs the config of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRequest {
    /// Normalized, with a tag unless it has a digest (`docker.io/library/busybox:latest`).
    pub reference: String,
    pub platform: Platform,
}

/// A resolved base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The platform manifest's digest (`sha256:...`).
    pub digest: String,
    /// The image config blob.
    pub config: Vec<u8>,
}

/// The result: the target stage's filesystem as LLB and its image config.
#[derive(Debug, Clone)]
pub struct Converted {
    pub state: State,
    pub image: ImageConfig,
    /// The platform the target was built for.
    pub platform: Platform,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image, by normalized reference.
    Image(String),
    /// A local directory of the client (a named context).
    Local(String),
}

/// A stage as planned: its base resolved to a kind, names and step count fixed.
#[derive(Debug, Clone)]
struct Planned {
    stage: Stage,
    /// The name shown in step prefixes (`build`, `stage-1`; empty with a single stage).
    display: String,
    base: Base,
    platform: Platform,
    /// Steps counted for the `[N/TOTAL]` prefix.
    total: usize,
    /// Stages this one reads (base and `COPY --from`).
    deps: Vec<usize>,
    /// `COPY --from` of an image: instruction line → reference.
    from_images: HashMap<usize, String>,
    /// `COPY --from` of a named context: instruction line → what it stands for.
    from_named: HashMap<usize, Base>,
    /// `RUN --mount=from=` of an image: (instruction line, mount index) → reference.
    mount_images: HashMap<(usize, usize), String>,
}

/// Dockerfile to LLB; see the module documentation.
#[derive(Debug, Clone)]
pub struct Converter {
    opts: ConvertOptions,
    lexer: Lexer,
    global_args: EnvList,
    stages: Vec<Planned>,
    target: usize,
    reachable: BTreeSet<usize>,
}

/// The state of one stage while its commands are dispatched.
#[derive(Debug, Clone)]
struct Dispatch {
    state: State,
    image: ImageConfig,
    platform: Platform,
    /// ARGs in scope with their values, in declaration order.
    build_args: Vec<(String, Option<String>)>,
    index: usize,
    /// Steps counted for the `[N/TOTAL]` prefix (the plan's, plus ONBUILD triggers).
    total: usize,
    /// Dispatching a base's ONBUILD triggers: step names say so.
    onbuild: bool,
}

/// A whole pass over the reachable stages.
struct Pass<'a> {
    conv: &'a Converter,
    resolved: &'a HashMap<String, ResolvedImage>,
    context: State,
    done: HashMap<usize, Dispatch>,
    /// Paths COPY reads from the context (absolute, cleaned).
    ctx_paths: BTreeSet<String>,
}

fn is_scratch(name: &str) -> bool {
    name.eq_ignore_ascii_case("scratch")
}

/// `path.Clean` of a slash path.
fn clean(p: &str) -> String {
    patternmatcher::go_clean(p)
}

/// Joins `p` to `dir` unless absolute, cleans it, and keeps a trailing slash (which
/// means "into this directory" for COPY).
fn resolve_dest(dir: &str, p: &str) -> String {
    let p = if p.is_empty() || p == "." { "./" } else { p };
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", if dir.is_empty() { "/" } else { dir })
    };
    let mut out = clean(&joined);
    if (p.ends_with('/') || p.ends_with("/.")) && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Whether a context-relative source path climbs above the context root.
fn escapes_root(p: &str) -> bool {
    let mut depth: i64 = 0;
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// `docker.io/library/x:latest` from `x`; digests kept, tags added when missing.
fn normalize_reference(name: &str) -> Result<String, String> {
    let r = llb::reference::Reference::parse_normalized(name).map_err(|e| e.to_string())?;
    Ok(if r.digest.is_some() {
        r.to_string()
    } else {
        r.with_default_tag().to_string()
    })
}

fn contains_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return true,
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    false
}

fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim().replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        first + "..."
    } else {
        first
    }
}

/// The `->arm64` of a multi-platform step name: the platform the stage's `TARGET*`
/// variables name when it is not the stage's own (a cross-compiling stage), as upstream
/// shows it. Empty when the stage declares none of them, or they name its platform.
fn target_arrow(stage: &Platform, state: &State) -> String {
    let target = match state.get_env("TARGETPLATFORM").map(Platform::parse) {
        Some(Ok(p)) => p,
        _ => {
            let get = |k: &str| state.get_env(k).map(str::to_string);
            let (os, arch, variant) = (get("TARGETOS"), get("TARGETARCH"), get("TARGETVARIANT"));
            if os.is_none() && arch.is_none() && variant.is_none() {
                return String::new();
            }
            let or = |v: Option<String>, d: &str| v.filter(|v| !v.is_empty()).unwrap_or(d.into());
            Platform::new(
                &or(os, &stage.os),
                &or(arch, &stage.architecture),
                &variant.unwrap_or_default(),
            )
        }
    };
    if target.os == stage.os && target.architecture != stage.architecture {
        match target.variant.as_str() {
            "" => format!("->{}", target.architecture),
            v => format!("->{}/{v}", target.architecture),
        }
    } else if target.os != stage.os {
        format!("->{target}")
    } else {
        String::new()
    }
}

/// `echo hi` → `ECHO hi`: the keyword of a step name is upper case.
fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((kw, rest)) => format!("{} {rest}", kw.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `%q` of an integer: a quoted character literal.
fn go_quote_rune(v: i64) -> String {
    let named = match v {
        7 => Some("\\a"),
        8 => Some("\\b"),
        9 => Some("\\t"),
        10 => Some("\\n"),
        11 => Some("\\v"),
        12 => Some("\\f"),
        13 => Some("\\r"),
        39 => Some("\\'"),
        92 => Some("\\\\"),
        _ => None,
    };
    if let Some(n) = named {
        return format!("'{n}'");
    }
    match u32::try_from(v).ok().and_then(char::from_u32) {
        Some(c) if !c.is_control() => format!("'{c}'"),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        Some(c) => format!("'\\u{:04x}'", c as u32),
        None => format!("%!q(int={v})"),
    }
}

impl Converter {
    /// Plans the build: stages, global build arguments, the target and what it needs.
    pub fn new(df: &Dockerfile, opts: ConvertOptions) -> Result<Converter, ConvertError> {
        let at = |line: usize, message: String| ConvertError {
            file: opts.file_name.clone(),
            line: Some(line),
            message,
        };
        let parsed = instructions::parse(df).map_err(|e| at(e.line, e.message))?;
        if parsed.stages.is_empty() {
            return Err(ConvertError {
                file: opts.file_name.clone(),
                line: None,
                message: "the Dockerfile has no stages to build (no FROM)".into(),
            });
        }
        let lexer = Lexer::new(df.escape_token);

        // Global build arguments: the platform ones, then ARGs before the first FROM.
        let target_name = opts
            .target
            .clone()
            .or_else(|| parsed.stages.last().and_then(|s| s.name.clone()))
            .unwrap_or_else(|| "default".into());
        let bp = &opts.build_platform;
        let tp = &opts.target_platform;
        let mut global_args = EnvList::new();
        for (k, v) in [
            ("BUILDPLATFORM", bp.to_string()),
            ("BUILDOS", bp.os.clone()),
            ("BUILDOSVERSION", bp.os_version.clone()),
            ("BUILDARCH", bp.architecture.clone()),
            ("BUILDVARIANT", bp.variant.clone()),
            ("TARGETPLATFORM", tp.to_string()),
            ("TARGETOS", tp.os.clone()),
            ("TARGETOSVERSION", tp.os_version.clone()),
            ("TARGETARCH", tp.architecture.clone()),
            ("TARGETVARIANT", tp.variant.clone()),
            ("TARGETSTAGE", target_name),
        ] {
            let v = opts.build_args.get(k).cloned().unwrap_or(v);
            global_args.set(k, v);
        }
        for (args, source) in &parsed.meta_args {
            for a in args {
                let value = match opts.build_args.get(&a.key) {
                    Some(v) => Some(v.clone()),
                    None => match &a.value {
                        Some(d) => Some(
                            lexer
                                .process_word(d, &global_args)
                                .map_err(|e| at(source.line, e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    global_args.set(a.key.clone(), v);
                }
            }
        }

        // Stages: expand base names and platforms, find bases and dependencies.
        // Upstream drops the stage name from step names when the build has one stage, but
        // counts as stages the sources it makes for every RUN --mount and for COPY --from
        // of an image.
        let single = parsed.stages.len() == 1
            && !parsed
                .stages
                .iter()
                .flat_map(|s| &s.commands)
                .any(|c| match &c.command {
                    Command::Run(r) => !r.mounts.is_empty(),
                    Command::Copy(Copy { from: Some(f), .. }) => {
                        f.parse::<usize>().is_err()
                            && !parsed
                                .stages
                                .iter()
                                .any(|s| s.name.as_deref() == Some(f.to_lowercase().as_str()))
                    }
                    _ => false,
                });
        let mut stages: Vec<Planned> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, st) in parsed.stages.iter().enumerate() {
            let line = st.source.line;
            let base_name = lexer
                .process_word(&st.base, &global_args)
                .map_err(|e| at(line, e.to_string()))?;
            if base_name.is_empty() {
                return Err(at(
                    line,
                    format!("base name ({}) should not be blank", st.base),
                ));
            }
            let platform = match &st.platform {
                None => opts.target_platform.clone(),
                Some(p) => {
                    let v = lexer
                        .process_word(p, &global_args)
                        .map_err(|e| at(line, e.to_string()))?;
                    if v.is_empty() {
                        return Err(at(
                            line,
                            format!("empty platform value from expression {p}"),
                        ));
                    }
                    Platform::parse(&v)
                        .map_err(|e| at(line, format!("failed to parse platform {p}: {e}")))?
                        .normalized()
                }
            };
            let named = |n: &str| named_context(&opts.named_contexts, n);
            let replaced = st.name.as_deref().and_then(named);
            let base = if let Some(nc) = replaced.clone() {
                // A named context replaces the whole stage.
                nc
            } else if let Some(&b) = by_name.get(&base_name) {
                Base::Stage(b)
            } else if is_scratch(&base_name) {
                Base::Scratch
            } else if let Some(nc) = named(&base_name) {
                nc
            } else {
                Base::Image(normalize_reference(&base_name).map_err(|e| {
                    at(
                        line,
                        format!("failed to parse stage name {base_name:?}: {e}"),
                    )
                })?)
            };
            let st = &if replaced.is_some() {
                Stage {
                    commands: Vec::new(),
                    ..st.clone()
                }
            } else {
                st.clone()
            };
            let mut total = usize::from(matches!(base, Base::Image(_) | Base::Local(_)));
            let mut deps = Vec::new();
            if let Base::Stage(b) = base {
                deps.push(b);
            }
            let mut from_images = HashMap::new();
            let mut from_named = HashMap::new();
            let mut mount_images = HashMap::new();
            for c in &st.commands {
                match &c.command {
                    Command::Run(_) | Command::Copy(_) | Command::Workdir(_) => total += 1,
                    _ => {}
                }
                if let Command::Run(run) = &c.command {
                    for (mi, raw) in run.mounts.iter().enumerate() {
                        let Some(f) = runmount::from_of(raw) else {
                            continue;
                        };
                        if let Some(&n) = by_name.get(&f.to_lowercase()) {
                            deps.push(n);
                        } else if parsed
                            .stages
                            .iter()
                            .any(|s| s.name.as_deref() == Some(f.to_lowercase().as_str()))
                        {
                            return Err(at(
                                c.source.line,
                                format!(
                                    "cannot mount from stage {f:?}, it needs to be defined before the current stage"
                                ),
                            ));
                        } else if !is_scratch(&f) {
                            let r = normalize_reference(&f).map_err(|e| {
                                at(c.source.line, format!("--mount from={f}: not a stage name and not an image reference: {e}"))
                            })?;
                            mount_images.insert((c.source.line, mi), r);
                        }
                    }
                }
                if let Command::Copy(Copy { from: Some(f), .. }) = &c.command {
                    let expanded = lexer
                        .process_word(f, &EnvList::new())
                        .map_err(|e| at(c.source.line, e.to_string()))?;
                    if &expanded != f {
                        return Err(at(
                            c.source.line,
                            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".into(),
                        ));
                    }
                    if let Ok(n) = f.parse::<usize>() {
                        if n >= i {
                            return Err(at(
                                c.source.line,
                                format!(
                                    "invalid stage index {n}: COPY --from can only use earlier stages"
                                ),
                            ));
                        }
                        deps.push(n);
                    } else if let Some(&n) = by_name.get(&f.to_lowercase()) {
                        deps.push(n);
                    } else if parsed
                        .stages
                        .iter()
                        .any(|s| s.name.as_deref() == Some(f.to_lowercase().as_str()))
                    {
                        return Err(at(
                            c.source.line,
                            format!(
                                "cannot copy from stage {f:?}, it needs to be defined before the current stage"
                            ),
                        ));
                    } else if let Some(nc) = named_context(&opts.named_contexts, f) {
                        from_named.insert(c.source.line, nc);
                    } else {
                        let r = normalize_reference(f).map_err(|e| {
                            at(c.source.line, format!("COPY --from={f}: not a stage name and not an image reference: {e}"))
                        })?;
                        from_images.insert(c.source.line, r);
                    }
                }
            }
            let display = match &st.name {
                _ if single => String::new(),
                Some(n) => n.clone(),
                None => format!("stage-{i}"),
            };
            if let Some(n) = &st.name {
                by_name.insert(n.clone(), i);
            }
            stages.push(Planned {
                stage: st.clone(),
                display,
                base,
                platform,
                total,
                deps,
                from_images,
                from_named,
                mount_images,
            });
        }

        let target = match &opts.target {
            None => stages.len() - 1,
            Some(t) => *by_name.get(&t.to_lowercase()).ok_or_else(|| ConvertError {
                file: opts.file_name.clone(),
                line: None,
                message: format!(
                    "target stage {t:?} could not be found (stages: {})",
                    by_name
                        .keys()
                        .cloned()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?,
        };
        let mut reachable = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(s) = todo.pop() {
            if reachable.insert(s) {
                todo.extend(stages[s].deps.iter().copied());
            }
        }
        // Platforms of stages built on other stages follow their base.
        for i in 0..stages.len() {
            if let Base::Stage(b) = stages[i].base
                && stages[i].stage.platform.is_none()
            {
                stages[i].platform = stages[b].platform.clone();
            }
        }
        Ok(Converter {
            lexer,
            global_args,
            stages,
            target,
            reachable,
            opts,
        })
    }

    /// The base images (and `COPY --from` images) whose configs [`Converter::convert`]
    /// needs, each once.
    pub fn images(&self) -> Vec<ImageRequest> {
        let mut out = BTreeSet::new();
        for &i in &self.reachable {
            let s = &self.stages[i];
            for b in std::iter::once(&s.base).chain(s.from_named.values()) {
                if let Base::Image(r) = b {
                    out.insert(ImageRequest {
                        reference: r.clone(),
                        platform: s.platform.clone(),
                    });
                }
            }
            for r in s.from_images.values().chain(s.mount_images.values()) {
                out.insert(ImageRequest {
                    reference: r.clone(),
                    platform: s.platform.clone(),
                });
            }
        }
        out.into_iter().collect()
    }

    /// Builds the LLB of the target stage. `resolved` maps each reference from
    /// [`Converter::images`] to its manifest digest and config.
    pub fn convert(
        &self,
        resolved: &HashMap<String, ResolvedImage>,
    ) -> Result<Converted, ConvertError> {
        // The context's follow paths depend on every COPY, and COPY needs the context: a
        // first pass collects the paths, a second builds with the final context.
        let mut first = Pass {
            conv: self,
            resolved,
            context: llb::local(&self.opts.context_name),
            done: HashMap::new(),
            ctx_paths: BTreeSet::new(),
        };
        first.run()?;
        let mut local = llb::Local::new(&self.opts.context_name)
            .shared_key_hint(&self.opts.context_name)
            .options(OpOptions::new().custom_name("[internal] load build context"));
        if !self.opts.context_excludes.is_empty() {
            local = local.exclude_patterns(self.opts.context_excludes.iter().cloned());
        }
        if !first.ctx_paths.contains("/") && !first.ctx_paths.is_empty() {
            let follow: Vec<String> = first
                .ctx_paths
                .iter()
                .map(|p| p.trim_start_matches('/').to_string())
                .collect();
            local = local.follow_paths(follow);
        }
        let mut second = Pass {
            conv: self,
            resolved,
            context: local.state(),
            done: HashMap::new(),
            ctx_paths: BTreeSet::new(),
        };
        second.run()?;
        let d = second
            .done
            .remove(&self.target)
            .unwrap_or_else(|| unreachable!("the target is reachable and dispatched"));
        let mut image = d.image;
        if !self.opts.labels.is_empty() {
            image
                .config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(self.opts.labels.clone());
        }
        image.architecture = d.platform.architecture.clone();
        image.os = d.platform.os.clone();
        image.variant = d.platform.variant.clone();
        Ok(Converted {
            state: d.state,
            image,
            platform: d.platform,
        })
    }

    fn err(&self, line: usize, message: impl Into<String>) -> ConvertError {
        ConvertError {
            file: self.opts.file_name.clone(),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl Pass<'_> {
    fn run(&mut self) -> Result<(), ConvertError> {
        let reachable: Vec<usize> = self.conv.reachable.iter().copied().collect();
        for i in reachable {
            let d = self.dispatch_stage(i)?;
            self.done.insert(i, d);
        }
        Ok(())
    }

    /// The state and config of image `reference` as a stage base.
    fn image_base(
        &self,
        reference: &str,
        platform: &Platform,
        line: usize,
        description: &str,
        name: &str,
    ) -> Result<(State, ImageConfig), ConvertError> {
        let conv = self.conv;
        let r = self
            .resolved
            .get(reference)
            .ok_or_else(|| conv.err(line, format!("base image {reference} was not resolved")))?;
        let img = ImageConfig::from_json(&r.config)
            .map_err(|e| conv.err(line, format!("{reference}: invalid image config: {e}")))?;
        let pinned = if reference.contains('@') {
            reference.to_string()
        } else {
            format!("{reference}@{}", r.digest)
        };
        // An image without layers is scratch with a config.
        if img.rootfs.diff_ids.as_ref().is_none_or(Vec::is_empty)
            && img.history.iter().all(|h| h.empty_layer)
        {
            return Ok((State::scratch(), img));
        }
        let name = name.replace("{}", &pinned);
        let st = llb::Image::new(&pinned)
            .platform(platform.clone())
            .options(
                OpOptions::new()
                    .custom_name(name)
                    .description(COMMAND_DESCRIPTION, description),
            )
            .state();
        Ok((st, img))
    }

    fn dispatch_stage(&mut self, i: usize) -> Result<Dispatch, ConvertError> {
        let conv = self.conv;
        let planned = &conv.stages[i];
        let line = planned.stage.source.line;
        let mut d = match &planned.base {
            Base::Stage(b) => {
                let base = self
                    .done
                    .get(b)
                    .unwrap_or_else(|| unreachable!("bases come earlier"))
                    .clone();
                let mut image = base.image.clone();
                image.config.on_build.clear();
                Dispatch {
                    state: base.state,
                    image,
                    platform: base.platform,
                    build_args: base.build_args,
                    index: 0,
                    total: planned.total,
                    onbuild: false,
                }
            }
            Base::Scratch => Dispatch {
                state: State::scratch().platform(planned.platform.clone()),
                image: ImageConfig::empty(&planned.platform),
                platform: planned.platform.clone(),
                build_args: Vec::new(),
                index: 0,
                total: planned.total,
                onbuild: false,
            },
            Base::Local(name) => {
                let mut d = Dispatch {
                    state: State::scratch(),
                    image: ImageConfig::empty(&planned.platform),
                    platform: planned.platform.clone(),
                    build_args: Vec::new(),
                    index: 0,
                    total: planned.total,
                    onbuild: false,
                };
                let label = self.prefix(i, &mut d, &format!("[context {name}] load from client"));
                d.state = local_context(name, label);
                d
            }
            Base::Image(r) => {
                let mut d = Dispatch {
                    state: State::scratch(),
                    image: ImageConfig::default(),
                    platform: planned.platform.clone(),
                    build_args: Vec::new(),
                    index: 0,
                    total: planned.total,
                    onbuild: false,
                };
                let name = self.prefix(i, &mut d, "FROM {}");
                let (st, img) = self.image_base(
                    r,
                    &planned.platform,
                    line,
                    &planned.stage.source.original,
                    &name,
                )?;
                d.state = st;
                d.image = img;
                d.image.created = None;
                d
            }
        };
        if !matches!(planned.base, Base::Stage(_)) {
            self.apply_image_defaults(&mut d);
        }
        // ONBUILD triggers of the base run first: from the base image's config, or the
        // ONBUILD instructions of the base stage.
        let triggers: Vec<String> = match planned.base {
            Base::Stage(b) => conv.stages[b]
                .stage
                .commands
                .iter()
                .filter_map(|c| match &c.command {
                    Command::Onbuild(expr) => Some(expr.clone()),
                    _ => None,
                })
                .collect(),
            _ => std::mem::take(&mut d.image.config.on_build),
        };
        let mut trigger_cmds = Vec::new();
        for t in &triggers {
            trigger_cmds.push(self.parse_trigger(t, &planned.stage.source)?);
        }
        d.total += trigger_cmds.len();
        d.onbuild = true;
        for c in &trigger_cmds {
            self.dispatch(i, &mut d, c)?;
        }
        d.onbuild = false;
        for c in &planned.stage.commands {
            self.dispatch(i, &mut d, c)?;
        }
        Ok(d)
    }

    /// One ONBUILD trigger as a command; errors point at the stage's FROM line.
    fn parse_trigger(
        &self,
        trigger: &str,
        from: &instructions::Source,
    ) -> Result<Located, ConvertError> {
        let conv = self.conv;
        let err = |m: String| conv.err(from.line, format!("ONBUILD {trigger}: {m}"));
        let df = crate::parse(trigger).map_err(|e| err(e.kind.to_string()))?;
        let [inst] = df.instructions.as_slice() else {
            return Err(err("an ONBUILD trigger must be a single instruction".into()));
        };
        let command = instructions::parse_command(inst).map_err(|e| err(e.message))?;
        Ok(Located {
            command,
            source: instructions::Source {
                original: inst.original.trim().to_string(),
                line: from.line,
                end_line: from.end_line,
            },
        })
    }

    /// What a container of the base image would get: its environment (with a default
    /// `PATH`), working directory and user.
    fn apply_image_defaults(&self, d: &mut Dispatch) {
        if d.image.env("PATH").is_none() {
            d.image
                .config
                .env
                .push(format!("PATH={}", llb::DEFAULT_PATH));
        }
        for e in d.image.config.env.clone() {
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            d.state = d.state.env(k, v);
        }
        if !d.image.config.working_dir.is_empty() {
            let wd = resolve_dest("/", &d.image.config.working_dir);
            let wd = wd.trim_end_matches('/');
            let wd = if wd.is_empty() { "/" } else { wd };
            d.image.config.working_dir = wd.to_string();
            d.state = d.state.dir(wd);
        }
        if !d.image.config.user.is_empty() {
            d.state = d.state.user(&d.image.config.user.clone());
        }
        if let Some(h) = &self.conv.opts.hostname {
            d.state = d.state.hostname(h);
        }
    }

    /// `[stage N/TOTAL] ` + `what`, counting the step.
    fn prefix(&self, stage: usize, d: &mut Dispatch, what: &str) -> String {
        let p = &self.conv.stages[stage];
        if d.total == 0 {
            return what.to_string();
        }
        d.index += 1;
        let width = d.total.to_string().len();
        let mut out = String::from("[");
        if self.conv.opts.prefix_platform {
            out.push_str(&d.platform.to_string());
            out.push_str(&target_arrow(&d.platform, &d.state));
            out.push(' ');
        }
        if !p.display.is_empty() {
            out.push_str(&p.display);
            out.push(' ');
        }
        out.push_str(&format!("{:>width$}/{}] ", d.index, d.total));
        if d.onbuild {
            out.push_str("ONBUILD ");
        }
        out.push_str(what);
        out
    }

    fn env_of(d: &Dispatch) -> EnvList {
        EnvList::from_entries(d.state.env_list())
    }

    /// Expands `word` with the stage's environment.
    fn expand(&self, d: &Dispatch, word: &str, line: usize) -> Result<String, ConvertError> {
        self.conv
            .lexer
            .process_word(word, &Self::env_of(d))
            .map_err(|e| self.conv.err(line, e.to_string()))
    }

    /// A step's display name: its source with variables expanded where known.
    fn step_name(&self, d: &Dispatch, original: &str, raw: bool) -> String {
        let mut lexer = self.conv.lexer;
        if raw {
            lexer.raw_quotes = true;
            lexer.skip_unset_env = true;
        }
        let expanded = lexer
            .process_word(original, &Self::env_of(d))
            .unwrap_or_else(|_| original.to_string());
        uppercase_cmd(&expanded)
    }

    fn op_options(&self, stage: usize, name: String) -> OpOptions {
        let o = OpOptions::new().custom_name(name);
        let ignore = match &self.conv.opts.no_cache {
            NoCache::None => false,
            NoCache::All => true,
            NoCache::Stages(names) => self.conv.stages[stage]
                .stage
                .name
                .as_ref()
                .is_some_and(|n| names.iter().any(|x| x.eq_ignore_ascii_case(n))),
        };
        if ignore { o.ignore_cache() } else { o }
    }

    fn with_shell(d: &Dispatch, args: &[String]) -> Vec<String> {
        let mut shell = if d.image.config.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            d.image.config.shell.clone()
        };
        shell.push(args.join(" "));
        shell
    }

    fn dispatch(
        &mut self,
        stage: usize,
        d: &mut Dispatch,
        c: &Located,
    ) -> Result<(), ConvertError> {
        let conv = self.conv;
        let line = c.source.line;
        let original = &c.source.original;
        match &c.command {
            Command::Env(kvs) => {
                let mut msg = String::from("ENV");
                for kv in kvs {
                    let k = self.expand(d, &kv.key, line)?;
                    let v = self.expand(d, &kv.value, line)?;
                    msg.push_str(&format!(" {k}={v}"));
                    d.state = d.state.env(&k, &v);
                    d.image.set_env(&k, &v);
                }
                d.image.commit(msg, false);
            }
            Command::Arg(args) => self.dispatch_arg(d, args, line)?,
            Command::Label(kvs) => {
                let mut msg = String::from("LABEL");
                for kv in kvs {
                    let k = self.expand(d, &kv.key, line)?;
                    let v = self.expand(d, &kv.value, line)?;
                    msg.push_str(&format!(" {k}={v}"));
                    d.image
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                d.image.commit(msg, false);
            }
            Command::User(u) => {
                let u = self.expand(d, u, line)?;
                d.state = d.state.user(&u);
                d.image.commit(format!("USER {u}"), false);
                d.image.config.user = u;
            }
            Command::Workdir(p) => {
                let p = self.expand(d, p, line)?;
                let wd = resolve_dest(&d.image.config.working_dir, &p);
                let wd = match wd.trim_end_matches('/') {
                    "" => "/".to_string(),
                    w => w.to_string(),
                };
                d.image.config.working_dir = wd.clone();
                d.state = d.state.dir(&wd);
                let with_layer = wd != "/";
                if with_layer {
                    let name = self.step_name(d, original, false);
                    let name = self.prefix(stage, d, &name);
                    let owner = (!d.image.config.user.is_empty())
                        .then(|| Owner::parse(&d.image.config.user));
                    d.state = d.state.file(
                        &FileAction::mkdir(
                            &wd,
                            0o755,
                            MkdirOptions {
                                parents: true,
                                owner,
                                ..MkdirOptions::default()
                            },
                        ),
                        self.op_options(stage, name).platform(d.platform.clone()),
                    );
                }
                d.image.commit(format!("WORKDIR {wd}"), with_layer);
            }
            Command::Cmd(cl) | Command::Entrypoint(cl) => {
                let args = if cl.prepend_shell {
                    Self::with_shell(d, &cl.args)
                } else {
                    cl.args.clone()
                };
                if let Command::Cmd(_) = c.command {
                    d.image
                        .commit(format!("CMD {}", go_quote_list(&args)), false);
                    d.image.config.cmd = Some(args);
                    d.image.config.args_escaped = true;
                } else {
                    d.image
                        .commit(format!("ENTRYPOINT {}", go_quote_list(&args)), false);
                    d.image.config.entrypoint = Some(args);
                    if !stage_sets_cmd_before(&conv.stages[stage].stage, line) {
                        d.image.config.cmd = None;
                    }
                }
            }
            Command::Expose(ports) => {
                let mut expanded = Vec::new();
                for p in ports {
                    for w in conv
                        .lexer
                        .process_words(p, &Self::env_of(d))
                        .map_err(|e| conv.err(line, e.to_string()))?
                    {
                        expanded.push(parse_port(&w).map_err(|e| conv.err(line, e))?);
                    }
                }
                let map = d
                    .image
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for p in &expanded {
                    map.insert(p.clone(), Default::default());
                }
                d.image
                    .commit(format!("EXPOSE {}", expanded.join(" ")), false);
            }
            Command::Volume(vols) => {
                let mut expanded = Vec::new();
                for v in vols {
                    let v = self.expand(d, v, line)?;
                    if v.is_empty() {
                        return Err(conv.err(line, "VOLUME specified can not be an empty string"));
                    }
                    expanded.push(v);
                }
                let map = d.image.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &expanded {
                    map.insert(v.clone(), Default::default());
                }
                d.image
                    .commit(format!("VOLUME [{}]", expanded.join(" ")), false);
            }
            Command::StopSignal(s) => {
                let s = self.expand(d, s, line)?;
                if !valid_signal(&s) {
                    return Err(conv.err(line, format!("invalid signal: {s}")));
                }
                d.image.commit(format!("STOPSIGNAL {s}"), false);
                d.image.config.stop_signal = s;
            }
            Command::Shell(sh) => {
                d.image.config.shell = sh.clone();
                d.image.commit(format!("SHELL [{}]", sh.join(" ")), false);
            }
            Command::Maintainer(m) => {
                d.image.author = m.clone();
                d.image.commit(format!("MAINTAINER {m}"), false);
            }
            Command::Onbuild(expr) => d.image.config.on_build.push(expr.clone()),
            Command::Healthcheck(h) => {
                let dur = |v: &Option<String>, what: &str| -> Result<i64, ConvertError> {
                    match v {
                        None => Ok(0),
                        Some(s) => parse_duration(s)
                            .map_err(|e| conv.err(line, format!("HEALTHCHECK --{what}: {e}"))),
                    }
                };
                let retries = match &h.retries {
                    None => 0,
                    Some(r) => r.parse::<i64>().map_err(|_| {
                        conv.err(line, format!("HEALTHCHECK --retries: invalid number {r:?}"))
                    })?,
                };
                let hc = HealthConfig {
                    test: h.test.clone(),
                    interval: dur(&h.interval, "interval")?,
                    timeout: dur(&h.timeout, "timeout")?,
                    start_period: dur(&h.start_period, "start-period")?,
                    start_interval: dur(&h.start_interval, "start-interval")?,
                    retries,
                };
                // Upstream records the config with Go's `%q` verb: durations as strings,
                // retries as a character literal.
                d.image.commit(
                    format!(
                        "HEALTHCHECK &{{{} {:?} {:?} {:?} {:?} {}}}",
                        go_quote_list(&hc.test),
                        go_duration(hc.interval),
                        go_duration(hc.timeout),
                        go_duration(hc.start_period),
                        go_duration(hc.start_interval),
                        go_quote_rune(hc.retries),
                    ),
                    false,
                );
                d.image.config.healthcheck = Some(hc);
            }
            Command::Run(run) => self.dispatch_run(stage, d, run, c)?,
            Command::Copy(copy) => self.dispatch_copy(stage, d, copy, c)?,
        }
        Ok(())
    }

    fn dispatch_arg(
        &mut self,
        d: &mut Dispatch,
        args: &[ArgDef],
        line: usize,
    ) -> Result<(), ConvertError> {
        let conv = self.conv;
        let mut parts = Vec::new();
        for a in args {
            let value = if let Some(v) = conv.opts.build_args.get(&a.key) {
                Some(v.clone())
            } else if let Some(def) = &a.value {
                Some(self.expand(d, def, line)?)
            } else {
                conv.global_args
                    .iter()
                    .find(|(k, _)| *k == a.key)
                    .map(|(_, v)| v.to_string())
            };
            if let Some(v) = &value {
                d.state = d.state.env(&a.key, v);
                parts.push(format!("{}={v}", a.key));
            } else {
                parts.push(a.key.clone());
            }
            match d.build_args.iter_mut().find(|(k, _)| *k == a.key) {
                Some(e) => e.1 = value,
                None => d.build_args.push((a.key.clone(), value)),
            }
        }
        d.image.commit(format!("ARG {}", parts.join(" ")), false);
        Ok(())
    }

    fn dispatch_run(
        &mut self,
        stage: usize,
        d: &mut Dispatch,
        run: &Run,
        c: &Located,
    ) -> Result<(), ConvertError> {
        let conv = self.conv;
        let line = c.source.line;
        let network = match run.network.as_deref() {
            None | Some("default") => None,
            Some("none") => Some(llb::NetMode::None),
            Some("host") => Some(llb::NetMode::Host),
            Some(other) => {
                return Err(conv.err(line, format!("unsupported network mode {other:?}")));
            }
        };
        let security = match run.security.as_deref() {
            None => None,
            Some("sandbox") => Some(llb::SecurityMode::Sandbox),
            Some("insecure") => Some(llb::SecurityMode::Insecure),
            Some(other) => {
                return Err(conv.err(line, format!("unsupported security mode {other:?}")));
            }
        };
        let run_mounts = self.run_mounts(stage, d, run, line)?;
        let mut name_src = c.source.original.clone();
        let mut args = run.cmd.args.clone();
        let mut mounts = Vec::new();
        if !run.heredocs.is_empty() {
            let CommandLine {
                args: cmd_args,
                prepend_shell: true,
            } = &run.cmd
            else {
                return Err(conv.err(line, "heredocs need the shell form of RUN"));
            };
            let [first] = cmd_args.as_slice() else {
                return Err(conv.err(line, "parsing produced an invalid run command"));
            };
            let single = crate::parser::parse_heredoc(first)
                .ok()
                .flatten()
                .filter(|_| run.heredocs.len() == 1);
            if single.is_some() {
                let doc = &run.heredocs[0];
                let data = if doc.chomp {
                    crate::parser::chomp_heredoc_content(&doc.content)
                } else {
                    doc.content.clone()
                };
                if data.starts_with("#!") {
                    // A script with an interpreter line: write it to a file and run it.
                    let script = State::scratch().dir("/").file(
                        &FileAction::mkfile(
                            &doc.name,
                            0o755,
                            data.as_bytes(),
                            MkfileOptions::default(),
                        ),
                        OpOptions::new()
                            .custom_name("[internal] preparing inline document")
                            .platform(d.platform.clone()),
                    );
                    mounts.push(Mount::bind("/dev/pipes/", &script).selector("/").readonly());
                    args = vec![format!("/dev/pipes/{}", doc.name)];
                } else {
                    args = vec![data];
                }
                name_src.push_str(&format!(" ({})", summarize_heredoc(&doc.content)));
            } else {
                let mut b = first.clone();
                for doc in &run.heredocs {
                    b.push('\n');
                    b.push_str(&doc.content);
                    b.push_str(&doc.name);
                }
                args = vec![b];
            }
        }
        let prepend = run.cmd.prepend_shell && mounts.is_empty();
        if prepend {
            args = Self::with_shell(d, &args);
        }
        let name = self.step_name(d, &name_src, true);
        let name = self.prefix(stage, d, &name);
        let mut exec = d.state.run().args(args.clone()).options(
            self.op_options(stage, name)
                .description(COMMAND_DESCRIPTION, &c.source.original),
        );
        for m in mounts {
            exec = exec.mount(m);
        }
        for m in run_mounts {
            exec = match m {
                RunMountOpt::Mount(m) => exec.mount(m),
                RunMountOpt::Secret(s) => exec.secret(s),
                RunMountOpt::Ssh(s) => exec.ssh(s),
            };
        }
        for (host, ip) in &conv.opts.extra_hosts {
            exec = exec.add_extra_host(host, *ip);
        }
        if conv.opts.shm_size > 0 {
            exec = exec.mount(Mount::tmpfs("/dev/shm").size(conv.opts.shm_size));
        }
        if let Some(n) = network.or(conv.opts.network) {
            exec = exec.network(n);
        }
        if let Some(sec) = security {
            exec = exec.security(sec);
        }
        d.state = exec.build().root();
        let env = Self::env_of(d);
        d.image.commit(
            format!(
                "RUN {} # buildkit",
                run_command_string(&args, &d.build_args, &env)
            ),
            true,
        );
        Ok(())
    }

    /// The `--mount`s of a RUN as exec mounts, secrets and ssh sockets.
    fn run_mounts(
        &mut self,
        stage: usize,
        d: &Dispatch,
        run: &Run,
        line: usize,
    ) -> Result<Vec<RunMountOpt>, ConvertError> {
        let conv = self.conv;
        let mut out = Vec::new();
        for (mi, raw) in run.mounts.iter().enumerate() {
            let env = Self::env_of(d);
            let expand = |v: &str| conv.lexer.process_word(v, &env).map_err(|e| e.to_string());
            let m = runmount::parse(raw, &expand)
                .map_err(|e| conv.err(line, format!("--mount={raw}: {e}")))?;
            match m.kind {
                MountType::Secret => {
                    let id = if !m.source.is_empty() {
                        m.source.clone()
                    } else if !m.id.is_empty() {
                        m.id.clone()
                    } else {
                        base_name(&m.target)
                    };
                    let mut s = if m.env.is_some() && m.target.is_empty() {
                        llb::Secret::env(&id, m.env.as_deref().unwrap_or_default())
                    } else {
                        let dest = if m.target.is_empty() {
                            format!("/run/secrets/{}", base_name(&id))
                        } else {
                            m.target.clone()
                        };
                        let mut s = llb::Secret::file(&id, &dest);
                        if let Some(e) = &m.env {
                            s = s.also_env(e);
                        }
                        s
                    };
                    if !m.required {
                        s = s.optional();
                    }
                    if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                        s = s
                            .owner(m.uid.unwrap_or(0), m.gid.unwrap_or(0))
                            .mode(m.mode.unwrap_or(0o400));
                    }
                    out.push(RunMountOpt::Secret(s));
                    continue;
                }
                MountType::Ssh => {
                    if !m.source.is_empty() {
                        return Err(conv.err(line, "ssh does not support source"));
                    }
                    let mut s = llb::Ssh::new(if m.id.is_empty() { "default" } else { &m.id });
                    if !m.target.is_empty() {
                        s = s.target(&m.target);
                    }
                    if !m.required {
                        s = s.optional();
                    }
                    if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                        s = s
                            .owner(m.uid.unwrap_or(0), m.gid.unwrap_or(0))
                            .mode(m.mode.unwrap_or(0o600));
                    }
                    out.push(RunMountOpt::Ssh(s));
                    continue;
                }
                _ => {}
            }
            // What the mount shows: a stage, an image, scratch or the build context.
            let from = m
                .from
                .clone()
                .or_else(|| (m.kind == MountType::Cache).then(|| "scratch".to_string()));
            let mut st = match &from {
                None => {
                    self.ctx_paths.insert(clean(&format!("/{}", m.source)));
                    self.context.clone()
                }
                Some(f) if is_scratch(f) => State::scratch(),
                Some(f) => {
                    if let Some(r) = conv.stages[stage].mount_images.get(&(line, mi)) {
                        self.image_base(r, &d.platform, line, &format!("FROM {r}"), "FROM {}")?
                            .0
                    } else {
                        let idx = conv
                            .stages
                            .iter()
                            .position(|s| {
                                s.stage.name.as_deref() == Some(f.to_lowercase().as_str())
                            })
                            .ok_or_else(|| {
                                conv.err(
                                    line,
                                    format!(
                                        "--mount from={f}: only earlier stages can be used here"
                                    ),
                                )
                            })?;
                        self.done
                            .get(&idx)
                            .ok_or_else(|| {
                                conv.err(line, format!("cannot mount from stage {f:?}, it needs to be defined before the current stage"))
                            })?
                            .state
                            .clone()
                    }
                }
            };
            if m.kind == MountType::Tmpfs {
                st = State::scratch();
            }
            let target = if m.target.starts_with('/') {
                clean(&m.target)
            } else {
                clean(&format!("/{}/{}", d.state.get_dir(), m.target))
            };
            if target == "/" {
                return Err(conv.err(line, format!("invalid mount target {:?}", m.target)));
            }
            let src = clean(&format!("/{}", m.source));
            let mut selector = None;
            if src != "/" {
                selector = Some(src);
            } else if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                st = st.file(
                    &FileAction::mkdir(
                        "/cache",
                        m.mode.unwrap_or(0o755),
                        MkdirOptions {
                            owner: Some(Owner::ids(m.uid.unwrap_or(0), m.gid.unwrap_or(0))),
                            ..MkdirOptions::default()
                        },
                    ),
                    OpOptions::new().custom_name("[internal] setting cache mount permissions"),
                );
                selector = Some("/cache".to_string());
            }
            let mut mount = match m.kind {
                MountType::Cache => {
                    let id = if m.id.is_empty() {
                        clean(&m.target)
                    } else {
                        m.id.clone()
                    };
                    let sharing = match m.sharing {
                        None | Some(Sharing::Shared) => llb::CacheSharing::Shared,
                        Some(Sharing::Private) => llb::CacheSharing::Private,
                        Some(Sharing::Locked) => llb::CacheSharing::Locked,
                    };
                    Mount::cache(&target, &format!("/{id}"), sharing).source(&st)
                }
                MountType::Tmpfs => Mount::tmpfs(&target).size(m.size),
                _ => Mount::bind(&target, &st),
            };
            if m.readonly {
                mount = mount.readonly();
            } else if m.kind == MountType::Bind {
                mount = mount.no_output();
            }
            if let Some(sel) = selector {
                mount = mount.selector(&sel);
            }
            out.push(RunMountOpt::Mount(mount));
        }
        Ok(out)
    }

    fn dispatch_copy(
        &mut self,
        stage: usize,
        d: &mut Dispatch,
        copy: &Copy,
        c: &Located,
    ) -> Result<(), ConvertError> {
        let conv = self.conv;
        let line = c.source.line;
        let what = if copy.is_add { "ADD" } else { "COPY" };
        let dest_raw = self.expand(d, &copy.dest, line)?;
        let dest = resolve_dest(d.state.get_dir(), &dest_raw);
        let owner = match &copy.chown {
            Some(o) => Some(Owner::parse(&self.expand(d, o, line)?)),
            None => None,
        };
        let mode = match &copy.chmod {
            None => None,
            Some(m) => {
                let m = self.expand(d, m, line)?;
                Some(parse_chmod(&m).map_err(|e| conv.err(line, e))?)
            }
        };
        let (source, from_context) = match &copy.from {
            None => (self.context.clone(), true),
            Some(f) => {
                if let Some(b) = conv.stages[stage].from_named.get(&line) {
                    let st = match b {
                        Base::Image(r) => {
                            self.image_base(r, &d.platform, line, &format!("FROM {r}"), "FROM {}")?
                                .0
                        }
                        Base::Local(n) => {
                            local_context(n, format!("[context {n}] load from client"))
                        }
                        _ => State::scratch(),
                    };
                    (st, false)
                } else if let Some(r) = conv.stages[stage].from_images.get(&line) {
                    let (st, _) =
                        self.image_base(r, &d.platform, line, &format!("FROM {r}"), "FROM {}")?;
                    (st, false)
                } else {
                    let idx = match f.parse::<usize>() {
                        Ok(n) => n,
                        Err(_) => conv
                            .stages
                            .iter()
                            .position(|s| {
                                s.stage.name.as_deref() == Some(f.to_lowercase().as_str())
                            })
                            .ok_or_else(|| {
                                conv.err(
                                    line,
                                    format!(
                                        "COPY --from={f}: only earlier stages can be used here"
                                    ),
                                )
                            })?,
                    };
                    let src = self.done.get(&idx).ok_or_else(|| {
                        conv.err(line, format!("cannot copy from stage {f:?}, it needs to be defined before the current stage"))
                    })?;
                    (src.state.clone(), false)
                }
            }
        };
        let name = self.step_name(d, &c.source.original, false);
        let name = self.prefix(stage, d, &name);
        let mut msg = String::from(what);
        if copy.parents {
            msg.push_str(" --parents");
        }
        if let Some(o) = &copy.chown {
            msg.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &copy.chmod {
            msg.push_str(&format!(" --chmod={m}"));
        }
        let excludes: Vec<String> = copy.excludes.clone();
        let mut action: Option<FileAction> = None;
        let push = |a: Option<FileAction>, s: &State, path: &str, opts: CopyOptions| {
            Some(match a {
                None => FileAction::copy(s, path, &dest, opts),
                Some(a) => a.and_copy(s, path, &dest, opts),
            })
        };
        for src in &copy.sources {
            let src = self.expand(d, src, line)?;
            msg.push_str(&format!(" {src}"));
            if let Some(git) =
                git_source(&src).map_err(|e| conv.err(line, format!("{what} {src}: {e}")))?
            {
                if !copy.is_add {
                    return Err(conv.err(
                        line,
                        format!("{what} {src}: source can't be a git ref for COPY"),
                    ));
                }
                let mut g =
                    llb::Git::new(&git.remote, &format!("{}:{}", git.reference, git.subdir))
                        .options(OpOptions::new().custom_name(name.clone()));
                if copy.keep_git_dir == Some(true) {
                    g = g.keep_git_dir();
                }
                if let Some(c) = &copy.checksum {
                    g = g.checksum(c);
                }
                let st = g.state();
                let opts = CopyOptions {
                    mode: mode.clone(),
                    create_dest_path: true,
                    exclude_patterns: excludes.clone(),
                    owner: owner.clone(),
                    ..CopyOptions::default()
                };
                action = push(action, &st, "/", opts);
                continue;
            }
            if src.starts_with("http://") || src.starts_with("https://") {
                if !copy.is_add {
                    return Err(conv.err(
                        line,
                        format!("{what} {src}: source can't be a URL for COPY"),
                    ));
                }
                let file = url_file_name(&src);
                let mut h = llb::Http::new(&src)
                    .filename(&file)
                    .options(OpOptions::new().custom_name(name.clone()));
                if let Some(c) = &copy.checksum {
                    if !c.starts_with("sha256:") || c.len() != 71 {
                        return Err(conv.err(
                            line,
                            format!("{what} --checksum={c}: expected sha256:<64 hex digits>"),
                        ));
                    }
                    h = h.checksum(c);
                }
                let st = h.state();
                let opts = CopyOptions {
                    mode: mode.clone(),
                    create_dest_path: true,
                    attempt_unpack: copy.unpack.unwrap_or(false),
                    exclude_patterns: excludes.clone(),
                    owner: owner.clone(),
                    ..CopyOptions::default()
                };
                action = push(action, &st, &file, opts);
                continue;
            }
            if copy.checksum.is_some() {
                return Err(conv.err(
                    line,
                    format!("{what} --checksum: only for URL and git sources, not {src}"),
                ));
            }
            if from_context && escapes_root(&src) {
                return Err(conv.err(
                    line,
                    format!("{what} {src}: the path is outside the build context"),
                ));
            }
            let (mut src_path, mut include, mut required) = (src.clone(), Vec::new(), Vec::new());
            if copy.parents {
                let (parent, pattern) = match src.split_once("/./") {
                    Some((p, pat)) => (p.to_string(), pat.to_string()),
                    None => ("/".to_string(), src.clone()),
                };
                let pattern = clean(&format!("/{pattern}"));
                if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
                    required.push(clean(&format!("/{parent}/{pattern}")));
                }
                include.push(pattern.trim_start_matches('/').to_string());
                src_path = parent;
            }
            let src_path = clean(&format!("/{src_path}"));
            if from_context {
                self.ctx_paths.insert(src_path.clone());
            }
            let opts = CopyOptions {
                mode: mode.clone(),
                follow_symlinks: true,
                dir_copy_contents: true,
                include_patterns: include,
                exclude_patterns: excludes.clone(),
                required_paths: required,
                attempt_unpack: copy.is_add && copy.unpack != Some(false),
                create_dest_path: true,
                allow_wildcard: true,
                allow_empty_wildcard: true,
                owner: owner.clone(),
                ..CopyOptions::default()
            };
            action = push(action, &source, &src_path, opts);
        }
        for doc in &copy.heredocs {
            msg.push_str(&format!(" <<{}", doc.name));
            let data = if doc.expand {
                let mut lx = Lexer::new('\\');
                lx.skip_process_quotes = true;
                lx.process_word(&doc.content, &Self::env_of(d))
                    .map_err(|e| conv.err(line, e.to_string()))?
            } else {
                doc.content.clone()
            };
            let path = clean(&format!("/{}", doc.name));
            let st = State::scratch().file(
                &FileAction::mkfile(&path, 0o644, data.as_bytes(), MkfileOptions::default()),
                OpOptions::new()
                    .custom_name("[internal] preparing inline document")
                    .platform(d.platform.clone()),
            );
            let opts = CopyOptions {
                mode: mode.clone(),
                create_dest_path: true,
                exclude_patterns: excludes.clone(),
                owner: owner.clone(),
                ..CopyOptions::default()
            };
            action = push(action, &st, &path, opts);
        }
        msg.push_str(&format!(" {dest_raw}"));
        let Some(action) = action else {
            return Err(conv.err(line, format!("{what} has no source")));
        };
        if copy.link && copy.chmod.is_none() {
            let copied = State::scratch().file(
                &action,
                self.op_options(stage, name.clone())
                    .platform(d.platform.clone()),
            );
            d.index -= 1;
            let link_name = self.prefix(stage, d, &format!("LINK {}", name_without_prefix(&name)));
            d.state = llb::merge(
                &[d.state.clone(), copied],
                self.op_options(stage, link_name),
            );
        } else {
            d.state = d.state.file(&action, self.op_options(stage, name));
        }
        d.image.commit(format!("{msg} # buildkit"), true);
        Ok(())
    }
}

/// The named context for `name`: by the name as written, or by the image name in
/// Docker's short form without `:latest` (`FROM alpine:latest` finds `context:alpine`).
fn named_context(contexts: &BTreeMap<String, NamedContext>, name: &str) -> Option<Base> {
    if contexts.is_empty() {
        return None;
    }
    let found = contexts.get(name).or_else(|| {
        let r = llb::reference::Reference::parse_normalized(name).ok()?;
        let mut short = r.to_string();
        for prefix in ["docker.io/library/", "docker.io/"] {
            if let Some(rest) = short.strip_prefix(prefix) {
                short = rest.to_string();
                break;
            }
        }
        let short = short.strip_suffix(":latest").unwrap_or(&short).to_string();
        contexts.get(&short)
    })?;
    Some(match found {
        NamedContext::Image(r) => Base::Image(normalize_reference(r).ok()?),
        NamedContext::Local(n) => Base::Local(n.clone()),
    })
}

/// A client directory sent as local `name`, as a named context.
fn local_context(name: &str, label: String) -> State {
    llb::Local::new(name)
        .shared_key_hint(name)
        .options(OpOptions::new().custom_name(label))
        .state()
}

/// A git source of ADD, split up.
#[derive(Debug, PartialEq, Eq)]
struct GitSource {
    remote: String,
    reference: String,
    subdir: String,
}

/// Recognizes the git URLs ADD accepts: `git://`, `ssh://`, `git@host:path`, and
/// `http(s)://` URLs whose path ends in `.git`, each with an optional `#ref[:subdir]`.
/// Anything else is `None` (an ordinary URL or path).
fn git_source(src: &str) -> Result<Option<GitSource>, String> {
    let (url, fragment) = match src.split_once('#') {
        Some((u, f)) => (u, f),
        None => (src, ""),
    };
    let is_http = url.starts_with("http://") || url.starts_with("https://");
    let git = url.starts_with("git://")
        || url.starts_with("ssh://")
        || url.starts_with("git@")
        || (is_http && url.split('?').next().unwrap_or_default().ends_with(".git"));
    if !git {
        return Ok(None);
    }
    if url.contains('?') {
        return Err("git URL query parameters are not supported yet (use #ref:subdir)".into());
    }
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    Ok(Some(GitSource {
        remote: url.to_string(),
        reference: reference.to_string(),
        subdir: subdir.to_string(),
    }))
}

/// The file name ADD gives a downloaded URL: the last path segment, as upstream.
fn url_file_name(src: &str) -> String {
    let no_query = src.split(['?', '#']).next().unwrap_or_default();
    let path = no_query
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p))
        .unwrap_or_default();
    match path.rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." => b.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// What a `--mount` becomes on the exec.
enum RunMountOpt {
    Mount(Mount),
    Secret(llb::Secret),
    Ssh(llb::Ssh),
}

/// `path.Base`.
fn base_name(p: &str) -> String {
    let c = clean(p);
    match c.rsplit_once('/') {
        Some((_, b)) if !b.is_empty() => b.to_string(),
        _ => c,
    }
}

/// `[2/5] COPY a b` → `COPY a b`.
fn name_without_prefix(name: &str) -> &str {
    if name.starts_with('[')
        && let Some((_, rest)) = name.split_once("] ")
    {
        return rest;
    }
    name
}

/// Whether a CMD comes before line `line` in the stage (ENTRYPOINT then keeps it).
fn stage_sets_cmd_before(stage: &Stage, line: usize) -> bool {
    stage
        .commands
        .iter()
        .any(|c| matches!(c.command, Command::Cmd(_)) && c.source.line < line)
}

/// `RUN` history text: `|N K=V ... args` when build args are in scope.
fn run_command_string(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &EnvList,
) -> String {
    use crate::shell::Env;
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in build_args {
        let v = env
            .get(k)
            .map(String::from)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        parts.push(format!("{k}={v}"));
    }
    if !parts.is_empty() {
        parts.insert(0, format!("|{}", parts.len()));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

fn parse_chmod(m: &str) -> Result<Chmod, String> {
    if !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(m, 8) {
            Ok(v) if v <= 0o7777 => Ok(Chmod::Octal(v)),
            _ => Err(format!(
                "invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"
            )),
        };
    }
    let valid = m.split(',').all(|clause| {
        let clause = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        !clause.is_empty()
            && clause.starts_with(['+', '-', '='])
            && clause.chars().all(|c| "+-=rwxXstugo".contains(c))
    });
    if valid {
        Ok(Chmod::Symbolic(m.to_string()))
    } else {
        Err(format!("invalid chmod parameter: '{m}'"))
    }
}

/// `80`, `80/tcp`, `53/udp`, `8000-8010/tcp` → `80/tcp` form.
fn parse_port(p: &str) -> Result<String, String> {
    let (ports, proto) = match p.split_once('/') {
        Some((a, b)) => (a, b.to_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let ok = |s: &str| s.parse::<u16>().is_ok();
    let valid = match ports.split_once('-') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(ports),
    };
    if !valid {
        return Err(format!("invalid containerPort: {ports}"));
    }
    Ok(format!("{ports}/{proto}"))
}

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0 && n < 65;
    }
    let name = s.strip_prefix("SIG").unwrap_or(s).to_uppercase();
    matches!(
        name.as_str(),
        "ABRT"
            | "ALRM"
            | "BUS"
            | "CHLD"
            | "CLD"
            | "CONT"
            | "FPE"
            | "HUP"
            | "ILL"
            | "INT"
            | "IO"
            | "IOT"
            | "KILL"
            | "PIPE"
            | "POLL"
            | "PROF"
            | "PWR"
            | "QUIT"
            | "SEGV"
            | "STKFLT"
            | "STOP"
            | "SYS"
            | "TERM"
            | "TRAP"
            | "TSTP"
            | "TTIN"
            | "TTOU"
            | "URG"
            | "USR1"
            | "USR2"
            | "VTALRM"
            | "WINCH"
            | "XCPU"
            | "XFSZ"
    ) || name.starts_with("RTMIN")
        || name.starts_with("RTMAX")
}

#[cfg(test)]
mod tests;
