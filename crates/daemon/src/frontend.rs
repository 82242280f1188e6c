//! The built-in `dockerfile.v0` frontend: reads the Dockerfile and `.dockerignore` from the
//! client's session, resolves base images, and turns the Dockerfile into the LLB the
//! solver then builds.
//!
//! Frontend options (`--opt`), as upstream names them: `filename` (default `Dockerfile`),
//! `target`, `build-arg:NAME`, `platform` (comma-separated: one build per platform),
//! `multi-platform` (or `build-arg:BUILDKIT_MULTI_PLATFORM`: a multi-platform result even
//! for one platform), `no-cache`, `contextkey` and `dockerfilekey` (the local names of the
//! context and the Dockerfile's directory, default `context` and `dockerfile`). Other
//! options are ignored, as upstream ignores options it does not know.
//!
//! A multi-platform build converts the Dockerfile once per target platform (each with its
//! own `TARGETPLATFORM`, `TARGETARCH`, ... and base images resolved for it) into one LLB
//! definition per platform; the daemon solves them side by side and the exporters make
//! an image index, or one directory per platform, of the results.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use dockerfile::convert::{
    ConvertOptions, Converter, ImageRequest, NamedContext, NoCache, ResolvedImage,
};
use llb::{LoadedDefinition, MarshalOptions, OpOptions, Platform};
use ops::Ref;
use solver::Progress;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::control::Controller;
use crate::errors::solve_status;
use crate::jobsession::JobSession;

pub(crate) const DOCKERFILE_FRONTEND: &str = "dockerfile.v0";

/// The build of one target platform: its LLB and the image config of the target stage.
pub(crate) struct PlatformBuild {
    /// The target platform, normalized.
    pub(crate) platform: Platform,
    pub(crate) definition: LoadedDefinition,
    /// The image config of the target; the image exporters write it.
    pub(crate) image_config: Vec<u8>,
}

/// The frontend's result: a build per target platform, in the order asked for.
pub(crate) struct Frontend {
    pub(crate) builds: Vec<PlatformBuild>,
    /// Whether the result is multi-platform (several platforms, or `multi-platform=true`):
    /// the image exporters then make an index, the local and tar exporters a directory
    /// per platform.
    pub(crate) multi_platform: bool,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The target platforms of `--opt platform=a,b` (normalized, duplicates dropped, the host's
/// when not given), and whether the result is multi-platform (`--opt multi-platform`, or
/// `build-arg:BUILDKIT_MULTI_PLATFORM`, may ask for one with a single platform).
fn target_platforms(attrs: &BTreeMap<String, String>) -> Result<(Vec<Platform>, bool), Status> {
    let mut platforms: Vec<Platform> = Vec::new();
    match attrs.get("platform").map(String::as_str) {
        None | Some("") => platforms.push(Platform::host()),
        Some(list) => {
            for spec in list.split(',').map(str::trim) {
                let p = Platform::parse(spec)
                    .map_err(|e| {
                        invalid(format!(
                            "--opt platform={list}: failed to parse target platform {spec:?}: {e}"
                        ))
                    })?
                    .normalized();
                if !platforms.contains(&p) {
                    platforms.push(p);
                }
            }
        }
    }
    let mut multi = platforms.len() > 1;
    let flag = attrs
        .get("build-arg:BUILDKIT_MULTI_PLATFORM")
        .filter(|v| !v.is_empty())
        .or_else(|| attrs.get("multi-platform").filter(|v| !v.is_empty()));
    if let Some(v) = flag {
        let b = parse_bool(v)
            .ok_or_else(|| invalid(format!("invalid boolean value for multi-platform: {v}")))?;
        if !b && multi {
            return Err(invalid(
                "conflicting config: returning multiple target platforms is not allowed",
            ));
        }
        multi = b;
    }
    Ok((platforms, multi))
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// Gives every `local://` source of `def` the client session `session` unless it names
/// one itself.
pub(crate) fn attach_session(def: &mut LoadedDefinition, session: &str) {
    if session.is_empty() {
        return;
    }
    for op in def.ops.values_mut() {
        if let Some(proto::pb::op::Op::Source(s)) = &mut op.op.op
            && s.identifier.starts_with("local://")
        {
            s.attrs
                .entry("local.session".into())
                .or_insert_with(|| session.to_string());
        }
    }
}

impl Controller {
    /// Solves a small LLB graph on the way to the real build (loading the Dockerfile) and
    /// returns its result.
    async fn solve_state(
        &self,
        st: &llb::State,
        session: &str,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Ref, Status> {
        let def = st
            .marshal(&MarshalOptions::default())
            .map_err(|e| Status::internal(format!("frontend LLB: {e}")))?;
        let mut loaded = LoadedDefinition::load(def)
            .map_err(|e| Status::internal(format!("frontend LLB: {e}")))?;
        attach_session(&mut loaded, session);
        let graph = ops::build_graph(&loaded, &self.ops)
            .map_err(|e| Status::internal(format!("frontend LLB: {e}")))?;
        self.solver
            .solve(graph, false, progress.clone(), cancel.clone())
            .await
            .map_err(|e| solve_status(&e))
    }

    /// Reads `names` from the root of `r`; a missing file is `None`.
    async fn read_files(&self, r: Ref, names: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, Status> {
        let ops = self.ops.clone();
        tokio::task::spawn_blocking(move || {
            let view = ops::mount_view(&ops, &r).map_err(|e| Status::internal(e.to_string()))?;
            let mut out = Vec::new();
            for n in names {
                let p = view.path().join(n.trim_start_matches('/'));
                match std::fs::read(&p) {
                    Ok(b) => out.push(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(None),
                    Err(e) => return Err(invalid(format!("reading {n}: {e}"))),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// Runs the Dockerfile frontend for a Solve request; base images are resolved with the
    /// registry credentials of `job` (the build's client session).
    pub(crate) async fn dockerfile_frontend(
        &self,
        attrs: &BTreeMap<String, String>,
        session: &str,
        job: &JobSession,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Frontend, Status> {
        if session.is_empty() {
            return Err(invalid(
                "dockerfile.v0: the Dockerfile and context come from a client session, and none was given",
            ));
        }
        let filename = attrs
            .get("filename")
            .map(String::as_str)
            .filter(|f| !f.is_empty())
            .unwrap_or(dockerfile::DEFAULT_FILE_NAME)
            .to_string();
        let dockerfile_local = attrs
            .get("dockerfilekey")
            .cloned()
            .unwrap_or_else(|| "dockerfile".into());
        let context_local = attrs
            .get("contextkey")
            .cloned()
            .unwrap_or_else(|| "context".into());
        let (platforms, multi_platform) = target_platforms(attrs)?;

        // The Dockerfile, and a Dockerfile-specific ignore file next to it.
        let own_ignore = format!("{filename}.dockerignore");
        let load = llb::Local::new(&dockerfile_local)
            .include_patterns([filename.clone(), own_ignore.clone()])
            .shared_key_hint(&dockerfile_local)
            .options(
                OpOptions::new()
                    .custom_name(format!("[internal] load build definition from {filename}")),
            )
            .state();
        let r = self.solve_state(&load, session, progress, cancel).await?;
        let mut files = self
            .read_files(r, vec![filename.clone(), own_ignore])
            .await?
            .into_iter();
        let text = files.next().flatten().ok_or_else(|| {
            invalid(format!(
                "failed to read dockerfile: {filename}: not found in the local directory {dockerfile_local:?}"
            ))
        })?;
        let text = String::from_utf8(text)
            .map_err(|_| invalid(format!("{filename}: the Dockerfile is not UTF-8 text")))?;
        let ignore = match files.next().flatten() {
            Some(b) => Some(b),
            None => {
                let load = llb::Local::new(&context_local)
                    .include_patterns([".dockerignore"])
                    .shared_key_hint(&context_local)
                    .options(OpOptions::new().custom_name("[internal] load .dockerignore"))
                    .state();
                let r = self.solve_state(&load, session, progress, cancel).await?;
                self.read_files(r, vec![".dockerignore".into()])
                    .await?
                    .pop()
                    .flatten()
            }
        };
        let excludes = match ignore {
            Some(b) => dockerfile::dockerignore::parse(&String::from_utf8_lossy(&b)),
            None => Vec::new(),
        };

        let df = dockerfile::parse_named(&text, &filename).map_err(|e| invalid(e.to_string()))?;
        let build_args = attrs
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("build-arg:")
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect();
        let options = ConvertOptions {
            file_name: filename.clone(),
            target: attrs.get("target").filter(|t| !t.is_empty()).cloned(),
            build_args,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            context_name: context_local,
            context_excludes: excludes,
            no_cache: match attrs.get("no-cache").map(String::as_str) {
                None => NoCache::None,
                Some("") => NoCache::All,
                Some(list) => {
                    NoCache::Stages(list.split(',').map(|s| s.trim().to_string()).collect())
                }
            },
            labels: attrs
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("label:").map(|k| (k.to_string(), v.clone())))
                .collect(),
            extra_hosts: parse_extra_hosts(attrs.get("add-hosts").map_or("", String::as_str))?,
            shm_size: match attrs.get("shm-size").map(String::as_str) {
                None | Some("") => 0,
                Some(v) => v.parse().map_err(|_| {
                    invalid(format!("--opt shm-size={v}: expected a size in bytes"))
                })?,
            },
            network: match attrs.get("force-network-mode").map(String::as_str) {
                None | Some("") | Some("sandbox") | Some("default") => None,
                Some("none") => Some(llb::NetMode::None),
                Some("host") => Some(llb::NetMode::Host),
                Some(v) => {
                    return Err(invalid(format!(
                        "--opt force-network-mode={v}: expected none, host or sandbox"
                    )));
                }
            },
            hostname: attrs
                .get("build-arg:BUILDKIT_SANDBOX_HOSTNAME")
                .or_else(|| attrs.get("hostname"))
                .filter(|h| !h.is_empty())
                .cloned(),
            named_contexts: attrs
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("context:").map(|k| (k, v)))
                .map(|(k, v)| {
                    NamedContext::parse(v)
                        .map(|c| (k.to_string(), c))
                        .map_err(|e| invalid(format!("--opt context:{k}: {e}")))
                })
                .collect::<Result<_, _>>()?,
            prefix_platform: multi_platform,
        };
        let convs = platforms
            .iter()
            .map(|p| {
                Converter::new(
                    &df,
                    ConvertOptions {
                        target_platform: p.clone(),
                        ..options.clone()
                    },
                )
                .map_err(|e| invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Base images: those of every platform resolved together, each once and shown as
        // a step.
        let mut requests = Vec::new();
        for conv in &convs {
            for req in conv.images() {
                if !requests.contains(&req) {
                    requests.push(req);
                }
            }
        }
        let file = filename.as_str();
        let lookups = requests.into_iter().map(|req| async move {
            let internal = if multi_platform {
                format!("[{} internal]", req.platform)
            } else {
                "[internal]".to_string()
            };
            let name = format!("{internal} load metadata for {}", req.reference);
            let id = llb::digest_of(format!("{name} {}", req.platform).as_bytes());
            let started = SystemTime::now();
            progress.step(&id, &name, started, None, None);
            let res = self
                .ops
                .worker
                .registry
                .resolve_config_with(&req.reference, &req.platform, job.credential_source())
                .await;
            let error = res.as_ref().err().map(|e| e.to_string());
            progress.step(&id, &name, started, Some(SystemTime::now()), error);
            res.map(|(digest, config)| {
                (
                    req.clone(),
                    ResolvedImage {
                        digest: digest.to_string(),
                        config,
                    },
                )
            })
            .map_err(|e| invalid(format!("{file}: base image {}: {e}", req.reference)))
        });
        let resolved: HashMap<ImageRequest, ResolvedImage> = futures::future::try_join_all(lookups)
            .await?
            .into_iter()
            .collect();

        // The platforms share one client context: one transfer, and steps that do not
        // depend on the platform run once.
        let local_unique_id = llb::random_id();
        let mut builds = Vec::with_capacity(convs.len());
        for (conv, platform) in convs.iter().zip(platforms) {
            let mine: HashMap<String, ResolvedImage> = conv
                .images()
                .into_iter()
                .filter_map(|req| {
                    let r = resolved.get(&req)?.clone();
                    Some((req.reference, r))
                })
                .collect();
            let out = conv.convert(&mine).map_err(|e| invalid(e.to_string()))?;
            let def = out
                .state
                .marshal(&MarshalOptions {
                    platform: Some(platform.clone()),
                    server_sets_default_path: Some(true),
                    local_unique_id: Some(local_unique_id.clone()),
                    ..MarshalOptions::default()
                })
                .map_err(|e| Status::internal(format!("{filename}: LLB: {e}")))?;
            let definition = LoadedDefinition::load(def)
                .map_err(|e| Status::internal(format!("{filename}: LLB: {e}")))?;
            builds.push(PlatformBuild {
                platform,
                definition,
                image_config: out.image.to_json(),
            });
        }
        Ok(Frontend {
            builds,
            multi_platform,
        })
    }
}

/// `add-hosts`: `host=ip` or `host:ip` entries separated by commas.
fn parse_extra_hosts(v: &str) -> Result<Vec<(String, std::net::IpAddr)>, Status> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, ip) = entry
            .split_once('=')
            .or_else(|| entry.split_once(':'))
            .ok_or_else(|| invalid(format!("--opt add-hosts: {entry:?} is not HOST=IP")))?;
        let ip = ip
            .parse()
            .map_err(|_| invalid(format!("--opt add-hosts: {ip:?} is not an IP address")))?;
        out.push((host.to_string(), ip));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{parse_extra_hosts, target_platforms};
    use std::collections::BTreeMap;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_platforms_are_normalized_and_deduplicated() {
        let shown = |kv: &[(&str, &str)]| {
            let (p, multi) = target_platforms(&attrs(kv)).unwrap();
            let p: Vec<String> = p.iter().map(ToString::to_string).collect();
            (p, multi)
        };
        let host = llb::Platform::host().to_string();
        assert_eq!(shown(&[]), (vec![host.clone()], false));
        assert_eq!(shown(&[("platform", "")]), (vec![host], false));
        assert_eq!(
            shown(&[("platform", "linux/arm64")]),
            (vec!["linux/arm64".to_string()], false)
        );
        assert_eq!(
            shown(&[(
                "platform",
                "linux/amd64,linux/aarch64, linux/arm64/v8,linux/arm,Linux/x86_64"
            )]),
            (
                vec![
                    "linux/amd64".to_string(),
                    "linux/arm64".into(),
                    "linux/arm/v7".into()
                ],
                true
            )
        );
        // one platform, a multi-platform result all the same
        assert_eq!(
            shown(&[("platform", "linux/amd64"), ("multi-platform", "true")]),
            (vec!["linux/amd64".to_string()], true)
        );
        assert_eq!(
            shown(&[
                ("platform", "linux/amd64"),
                ("build-arg:BUILDKIT_MULTI_PLATFORM", "1")
            ]),
            (vec!["linux/amd64".to_string()], true)
        );
    }

    #[test]
    fn bad_target_platforms_are_invalid_arguments() {
        let err = |kv: &[(&str, &str)]| target_platforms(&attrs(kv)).unwrap_err();
        for bad in [
            "linux/amd64,",
            "linux//arm64",
            "linux/amd64,a/b/c/d",
            "linux/am d64",
        ] {
            let e = err(&[("platform", bad)]);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(
                e.message().contains(&format!("--opt platform={bad}")),
                "{}",
                e.message()
            );
        }
        let e = err(&[
            ("platform", "linux/amd64,linux/arm64"),
            ("multi-platform", "false"),
        ]);
        assert!(
            e.message().contains("conflicting config"),
            "{}",
            e.message()
        );
        let e = err(&[("multi-platform", "maybe")]);
        assert!(e.message().contains("multi-platform"), "{}", e.message());
    }

    #[test]
    fn extra_hosts() {
        let h = parse_extra_hosts("db=10.0.0.1, cache:::1").unwrap();
        assert_eq!(h[0].0, "db");
        assert_eq!(h[1].1.to_string(), "::1");
        assert!(parse_extra_hosts("nohost").is_err());
        assert!(parse_extra_hosts("a=notanip").is_err());
        assert!(parse_extra_hosts("").unwrap().is_empty());
    }
}
