//! `moby.sshforward.v1.SSH`: the client lends its SSH agents to a build, for
//! `RUN --mount=type=ssh`.
//!
//! Client end: [`SshAgentProvider`] serves agents by id, each one an agent's unix socket
//! ([`AgentConfig`], from `--ssh ID[=SOCKET][,raw=true]`). `CheckAgent` says whether an
//! id is configured; `ForwardAgent` connects to the socket and carries one connection's
//! agent protocol over the stream. As upstream, the build may only list keys and have
//! data signed: requests to add, remove or lock keys, and extensions, are answered with
//! a failure without reaching the agent, so that a build cannot change the user's
//! agent. A `raw` agent's bytes go through untouched instead.
//!
//! Daemon end: [`check_agent`] asks whether the client has an agent, and
//! [`forward_agent`] connects one connection made to a mount's socket to it.
//!
//! Upstream also takes private key files, which it serves from an in-process agent;
//! that is not supported yet, and configuring one is an error.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use proto::sshforward::ssh_client::SshClient;
use proto::sshforward::ssh_server::{Ssh, SshServer};
use proto::sshforward::{BytesMessage, CheckAgentRequest, CheckAgentResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::client::{Attachable, MAX_MESSAGE_SIZE, Services};
use crate::manager::Caller;

/// The agent id a mount without one uses.
pub const DEFAULT_ID: &str = "default";
/// The request metadata key naming the agent of a `ForwardAgent` call.
pub const KEY_SSH_ID: &str = "buildkit.ssh.id";
/// The method the daemon checks an id with.
pub const CHECK_AGENT_METHOD: &str = "/moby.sshforward.v1.SSH/CheckAgent";
/// The method the daemon forwards a connection with.
pub const FORWARD_AGENT_METHOD: &str = "/moby.sshforward.v1.SSH/ForwardAgent";

/// How long connecting to an agent's socket may take (upstream's dial timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from a socket at a time, as upstream's copy loop.
const CHUNK: usize = 32 * 1024;
/// Largest agent message in either direction, the limit of upstream's agent code.
const MAX_AGENT_MESSAGE: usize = 16 << 20;

// Agent protocol message numbers (draft-miller-ssh-agent).
const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;

/// A failure to set up or forward an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// A malformed `--ssh` value, or an agent that cannot be served.
    #[error("{0}")]
    Config(String),
    /// A private key file where an agent socket was expected.
    #[error(
        "ssh agent {id}: {path} is not a socket; key files are not supported yet: load the key \
         into an ssh-agent (ssh-add) and forward its socket ({id}=$SSH_AUTH_SOCK)"
    )]
    KeyFile { id: String, path: PathBuf },
    /// Reading or writing a socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The call over the session failed.
    #[error(transparent)]
    Session(#[from] crate::Error),
}

impl From<Status> for SshError {
    fn from(status: Status) -> Self {
        SshError::Session(crate::Error::from(status))
    }
}

/// One agent as the client configures it (upstream's `AgentConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// The id mounts name it by; empty means [`DEFAULT_ID`].
    pub id: String,
    /// Where the agent is: one socket. Empty means `$SSH_AUTH_SOCK`.
    pub paths: Vec<PathBuf>,
    /// Forward the socket's bytes untouched rather than only the read-only requests.
    pub raw: bool,
}

impl AgentConfig {
    /// Parses a `--ssh` value: `ID`, or `ID=PATH[,PATH...]`, where one element may be
    /// `raw=BOOL` instead of a path. `ID` alone, or an empty path, means `$SSH_AUTH_SOCK`.
    pub fn parse(spec: &str) -> Result<AgentConfig, SshError> {
        let bad = |why: &str| SshError::Config(format!("invalid ssh agent {spec:?}: {why}"));
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id, Some(paths)),
            None => (spec, None),
        };
        let mut config = AgentConfig {
            id: id.to_string(),
            ..AgentConfig::default()
        };
        let Some(paths) = paths else {
            return Ok(config);
        };
        let mut written = 0;
        for element in paths.split(',') {
            match element.split_once('=') {
                Some(("raw", value)) => {
                    config.raw = parse_bool(value)
                        .ok_or_else(|| bad(&format!("raw={value} is not a boolean")))?;
                }
                _ => {
                    written += 1;
                    if !element.is_empty() {
                        config.paths.push(PathBuf::from(element));
                    }
                }
            }
        }
        if config.raw && written != 1 {
            return Err(bad("raw mode takes exactly one socket path"));
        }
        if config.paths.len() != written && written != 1 {
            return Err(bad("empty path"));
        }
        Ok(config)
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, which upstream uses for `raw=`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// An agent being served: where its socket is and how to forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Agent {
    socket: PathBuf,
    raw: bool,
}

/// Serves the client's SSH agents to the daemon, by id.
#[derive(Clone, Debug, Default)]
pub struct SshAgentProvider {
    agents: Arc<HashMap<String, Agent>>,
}

impl SshAgentProvider {
    /// Serves each configured agent; an empty path list means `$SSH_AUTH_SOCK`. Fails on
    /// duplicate ids, missing paths, and paths that are not sockets.
    pub fn new(configs: impl IntoIterator<Item = AgentConfig>) -> Result<Self, SshError> {
        let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        SshAgentProvider::with_auth_sock(configs, auth_sock.as_deref())
    }

    /// [`AgentConfig::parse`] of each `--ssh` value, then [`SshAgentProvider::new`].
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self, SshError> {
        let configs = specs
            .iter()
            .map(|s| AgentConfig::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        SshAgentProvider::new(configs)
    }

    fn with_auth_sock(
        configs: impl IntoIterator<Item = AgentConfig>,
        auth_sock: Option<&Path>,
    ) -> Result<Self, SshError> {
        let mut agents = HashMap::new();
        for config in configs {
            let id = if config.id.is_empty() {
                DEFAULT_ID.to_string()
            } else {
                config.id
            };
            if agents.contains_key(&id) {
                return Err(SshError::Config(format!("duplicate ssh agent id {id:?}")));
            }
            let mut paths = config.paths;
            if paths.is_empty() {
                match auth_sock.filter(|p| !p.as_os_str().is_empty()) {
                    Some(p) => paths.push(p.to_path_buf()),
                    None => {
                        return Err(SshError::Config(format!(
                            "ssh agent {id}: no socket given and SSH_AUTH_SOCK is not set"
                        )));
                    }
                }
            }
            let socket = socket_of(&id, &paths, config.raw)?;
            agents.insert(
                id,
                Agent {
                    socket,
                    raw: config.raw,
                },
            );
        }
        Ok(SshAgentProvider {
            agents: Arc::new(agents),
        })
    }

    /// The configured ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.agents.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

/// The one socket among `paths`, checked now so that a typo fails before the build.
fn socket_of(id: &str, paths: &[PathBuf], raw: bool) -> Result<PathBuf, SshError> {
    use std::os::unix::fs::FileTypeExt;
    let mut sockets = Vec::new();
    for p in paths {
        // Followed: agent paths are often symlinks to the real socket.
        let md = std::fs::metadata(p)
            .map_err(|e| SshError::Config(format!("ssh agent {id}: {}: {e}", p.display())))?;
        if md.file_type().is_socket() {
            sockets.push(p.clone());
        } else if raw {
            return Err(SshError::Config(format!(
                "ssh agent {id}: raw mode needs a socket, {} is not one",
                p.display()
            )));
        } else {
            return Err(SshError::KeyFile {
                id: id.to_string(),
                path: p.clone(),
            });
        }
    }
    match <[PathBuf; 1]>::try_from(sockets) {
        Ok([socket]) => Ok(socket),
        Err(_) => Err(SshError::Config(format!(
            "ssh agent {id}: only one socket per id is allowed"
        ))),
    }
}

impl Attachable for SshAgentProvider {
    fn register(self: Box<Self>, services: &mut Services) {
        let server = SshServer::new(*self).max_decoding_message_size(MAX_MESSAGE_SIZE);
        services.add(server, &["CheckAgent", "ForwardAgent"]);
    }
}

/// What the response stream of a `ForwardAgent` call carries.
type Replies = mpsc::Sender<Result<BytesMessage, Status>>;

#[tonic::async_trait]
impl Ssh for SshAgentProvider {
    async fn check_agent(
        &self,
        request: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        let id = or_default(&request.get_ref().id);
        if self.agents.contains_key(id) {
            Ok(Response::new(CheckAgentResponse {}))
        } else {
            Err(Status::not_found(format!("unset ssh forward key {id}")))
        }
    }

    type ForwardAgentStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn forward_agent(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::ForwardAgentStream>, Status> {
        let id = or_default(
            request
                .metadata()
                .get(KEY_SSH_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default(),
        )
        .to_string();
        let agent = self
            .agents
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unset ssh forward key {id}")))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&agent.socket))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
            .and_then(|r| r)
            .map_err(|e| {
                Status::unavailable(format!(
                    "failed to connect to ssh agent {id} at {}: {e}",
                    agent.socket.display()
                ))
            })?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let result = if agent.raw {
                serve_raw(conn, inbound, tx.clone()).await
            } else {
                serve_read_only(conn, inbound, tx.clone()).await
            };
            if let Err(e) = result {
                tracing::debug!(id, error = %e, "ssh agent forwarding ended");
                // The daemon may be gone already; then nobody needs to know.
                let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn or_default(id: &str) -> &str {
    if id.is_empty() { DEFAULT_ID } else { id }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the daemon closed the stream")
}

/// Copies a raw agent's bytes both ways. The daemon closing its side half-closes the
/// socket, so that the agent still answers; the agent closing ends the call.
async fn serve_raw(
    conn: UnixStream,
    mut inbound: Streaming<BytesMessage>,
    tx: Replies,
) -> Result<(), SshError> {
    let (mut rd, mut wr) = conn.into_split();
    let watch = tx.clone();
    let to_agent = async move {
        while let Some(m) = inbound.message().await? {
            wr.write_all(&m.data).await?;
        }
        // Only a courtesy to the agent: if it is gone, reading its side says so.
        let _ = wr.shutdown().await;
        Ok::<_, SshError>(())
    };
    let from_agent = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, SshError>(());
            }
            let data = buf[..n].to_vec();
            tx.send(Ok(BytesMessage { data }))
                .await
                .map_err(|_| closed())?;
        }
    };
    tokio::pin!(to_agent, from_agent);
    tokio::select! {
        r = &mut from_agent => r,
        r = &mut to_agent => match r {
            Ok(()) => tokio::select! {
                r = from_agent => r,
                // Nobody reads the answers any more.
                () = watch.closed() => Ok(()),
            },
            Err(e) => Err(e),
        },
    }
}

/// Answers the daemon's agent requests one at a time: listing keys and signing go to
/// the agent, everything else fails here (upstream's read-only agent).
async fn serve_read_only(
    mut conn: UnixStream,
    mut inbound: Streaming<BytesMessage>,
    tx: Replies,
) -> Result<(), SshError> {
    let mut pending = Vec::new();
    loop {
        let request = loop {
            if let Some(frame) = take_frame(&mut pending)? {
                break frame;
            }
            match inbound.message().await? {
                Some(m) => pending.extend_from_slice(&m.data),
                // The connection in the container was closed.
                None => return Ok(()),
            }
        };
        let reply = if is_read_only(&request) {
            conn.write_all(&request).await?;
            read_frame(&mut conn).await?
        } else {
            tracing::debug!(
                request = request.get(4).copied().unwrap_or_default(),
                "refused an ssh agent request that would change the agent"
            );
            failure_frame()
        };
        tx.send(Ok(BytesMessage { data: reply }))
            .await
            .map_err(|_| closed())?;
    }
}

/// Whether a request frame (length prefix included) only reads the agent.
fn is_read_only(frame: &[u8]) -> bool {
    matches!(
        frame.get(4).copied(),
        Some(SSH_AGENTC_REQUEST_IDENTITIES | SSH_AGENTC_SIGN_REQUEST)
    )
}

fn failure_frame() -> Vec<u8> {
    vec![0, 0, 0, 1, SSH_AGENT_FAILURE]
}

/// The length of the message announced by a frame header.
fn frame_len(header: [u8; 4]) -> Result<usize, io::Error> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_AGENT_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid ssh agent message length {len}"),
        ));
    }
    Ok(len)
}

/// Takes one whole frame (length prefix included) off the front of `pending`.
fn take_frame(pending: &mut Vec<u8>) -> Result<Option<Vec<u8>>, io::Error> {
    let Some(header) = pending.first_chunk::<4>() else {
        return Ok(None);
    };
    let total = 4 + frame_len(*header)?;
    if pending.len() < total {
        return Ok(None);
    }
    let rest = pending.split_off(total);
    Ok(Some(std::mem::replace(pending, rest)))
}

/// Reads one whole frame (length prefix included).
async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, io::Error> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = frame_len(header)?;
    let mut frame = header.to_vec();
    // Grows with what arrives rather than trusting the announced length up front.
    let got = r.take(len as u64).read_to_end(&mut frame).await?;
    if got != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(frame)
}

/// Whether the client forwards agent `id` (empty: [`DEFAULT_ID`]). `Ok(false)` when it
/// does not, or forwards no agents at all.
pub async fn check_agent(caller: &Caller, id: &str) -> Result<bool, crate::Error> {
    if !caller.supports(CHECK_AGENT_METHOD) {
        return Ok(false);
    }
    check(caller.channel(), id).await
}

async fn check(channel: Channel, id: &str) -> Result<bool, crate::Error> {
    let mut client = SshClient::new(channel);
    let request = CheckAgentRequest { id: id.to_string() };
    match client.check_agent(request).await {
        Ok(_) => Ok(true),
        Err(status) if is_missing(&status) => Ok(false),
        Err(status) => Err(status.into()),
    }
}

/// How clients say that they have no such agent: ours with `NotFound`, upstream's with
/// an untyped error naming the key.
fn is_missing(status: &Status) -> bool {
    match status.code() {
        Code::NotFound | Code::Unimplemented => true,
        Code::Unknown => status.message().contains("unset ssh forward key"),
        _ => false,
    }
}

/// Connects `conn` (a connection made to a mount's socket) to the client's agent `id`
/// and copies bytes both ways until the client's side ends or `conn` fails. When the
/// container closes its side, the client is told so and its last answers still arrive.
pub async fn forward_agent(caller: &Caller, id: &str, conn: UnixStream) -> Result<(), SshError> {
    caller.require(FORWARD_AGENT_METHOD)?;
    forward(caller.channel(), id, conn).await
}

async fn forward(channel: Channel, id: &str, conn: UnixStream) -> Result<(), SshError> {
    let id = or_default(id);
    let value = id
        .parse()
        .map_err(|_| crate::Error::Metadata(format!("ssh id {id:?} cannot be sent")))?;
    let (tx, rx) = mpsc::channel::<BytesMessage>(16);
    let mut request = Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(KEY_SSH_ID, value);
    let (rd, wr) = conn.into_split();
    let upload = copy_to_sender(rd, tx);
    let download = async move {
        let mut client = SshClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE);
        // Runs next to the upload: a client may send its headers only with its first
        // answer, which needs the first request.
        let mut replies = client.forward_agent(request).await?.into_inner();
        let mut wr = wr;
        while let Some(m) = replies.message().await? {
            wr.write_all(&m.data).await?;
        }
        // The container may have closed its end already; the answers are all written.
        let _ = wr.shutdown().await;
        Ok::<_, SshError>(())
    };
    tokio::pin!(upload, download);
    tokio::select! {
        r = &mut download => r,
        r = &mut upload => match r {
            Ok(()) => download.await,
            Err(e) => Err(e),
        },
    }
}

/// Sends what `rd` reads as messages until it ends (then dropping `tx` ends the
/// request stream) or nobody receives any more.
async fn copy_to_sender(
    mut rd: impl AsyncRead + Unpin,
    tx: mpsc::Sender<BytesMessage>,
) -> Result<(), SshError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let data = buf[..n].to_vec();
        if tx.send(BytesMessage { data }).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::transport::Endpoint;

    use super::*;

    fn cfg(id: &str, paths: &[&str], raw: bool) -> AgentConfig {
        AgentConfig {
            id: id.to_string(),
            paths: paths.iter().map(PathBuf::from).collect(),
            raw,
        }
    }

    #[test]
    fn parses_ids_paths_and_raw() {
        let parse = |s: &str| AgentConfig::parse(s).unwrap();
        assert_eq!(parse("default"), cfg("default", &[], false));
        assert_eq!(
            parse("mykey=/run/agent.sock"),
            cfg("mykey", &["/run/agent.sock"], false)
        );
        // An empty path, like no path, means $SSH_AUTH_SOCK; an empty id means default.
        assert_eq!(parse("default="), cfg("default", &[], false));
        assert_eq!(parse("=/a"), cfg("", &["/a"], false));
        assert_eq!(parse("gh=/a,/b"), cfg("gh", &["/a", "/b"], false));
        assert_eq!(parse("gh=/a,raw=true"), cfg("gh", &["/a"], true));
        assert_eq!(parse("gh=raw=0,/a"), cfg("gh", &["/a"], false));
        assert_eq!(parse("gh=,raw=T"), cfg("gh", &[], true));
    }

    #[test]
    fn rejects_malformed_values() {
        for (spec, why) in [
            ("gh=/a,raw=maybe", "not a boolean"),
            ("gh=raw=true", "exactly one socket path"),
            ("gh=/a,/b,raw=1", "exactly one socket path"),
            ("gh=/a,,/b", "empty path"),
        ] {
            let e = AgentConfig::parse(spec).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(spec), "{spec}: {e}");
        }
    }

    /// A listening socket at `dir/name`, kept open by the returned listener.
    fn socket(dir: &Path, name: &str) -> (PathBuf, std::os::unix::net::UnixListener) {
        let p = dir.join(name);
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        (p, l)
    }

    #[test]
    fn resolves_sockets_and_ssh_auth_sock() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _l) = socket(dir.path(), "agent.sock");
        let sock_str = sock.to_str().unwrap();
        let provider = SshAgentProvider::with_auth_sock(
            [cfg("default", &[], false), cfg("mykey", &[sock_str], true)],
            Some(&sock),
        )
        .unwrap();
        assert_eq!(provider.ids(), ["default", "mykey"]);
        assert_eq!(provider.agents["default"].socket, sock);
        assert!(!provider.agents["default"].raw);
        assert!(provider.agents["mykey"].raw);
        // An empty id is the default agent.
        let provider =
            SshAgentProvider::with_auth_sock([cfg("", &[sock_str], false)], None).unwrap();
        assert_eq!(provider.ids(), ["default"]);
        // A symlink to a socket is a socket.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        SshAgentProvider::with_auth_sock([cfg("a", &[link.to_str().unwrap()], false)], None)
            .unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _l) = socket(dir.path(), "agent.sock");
        let (other, _m) = socket(dir.path(), "other.sock");
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let err = |configs: Vec<AgentConfig>, auth: Option<&Path>| {
            SshAgentProvider::with_auth_sock(configs, auth)
                .unwrap_err()
                .to_string()
        };
        let e = err(vec![cfg("default", &[], false)], None);
        assert!(e.contains("SSH_AUTH_SOCK is not set"), "{e}");
        let e = err(vec![cfg("default", &[], false)], Some(Path::new("")));
        assert!(e.contains("SSH_AUTH_SOCK is not set"), "{e}");
        let e = err(vec![cfg("k", &[&s(&key)], false)], None);
        assert!(
            e.contains("not supported yet") && e.contains("id_ed25519"),
            "{e}"
        );
        let e = err(vec![cfg("k", &[&s(&key)], true)], None);
        assert!(e.contains("raw mode needs a socket"), "{e}");
        let e = err(vec![cfg("k", &[&s(&dir.path().join("nope"))], false)], None);
        assert!(e.contains("nope") && e.contains("No such file"), "{e}");
        let e = err(vec![cfg("k", &[&s(&sock), &s(&other)], false)], None);
        assert!(e.contains("only one socket"), "{e}");
        let e = err(
            vec![
                cfg("k", &[&s(&sock)], false),
                cfg("k", &[&s(&other)], false),
            ],
            None,
        );
        assert!(e.contains("duplicate ssh agent id \"k\""), "{e}");
    }

    #[test]
    fn frames_are_taken_whole() {
        let mut pending = vec![0, 0, 0, 1, 11, 0, 0];
        assert_eq!(
            take_frame(&mut pending).unwrap(),
            Some(vec![0, 0, 0, 1, 11])
        );
        assert_eq!(pending, [0, 0]);
        assert_eq!(take_frame(&mut pending).unwrap(), None);
        pending.extend_from_slice(&[0, 2, 13]);
        assert_eq!(take_frame(&mut pending).unwrap(), None);
        pending.push(7);
        assert_eq!(
            take_frame(&mut pending).unwrap(),
            Some(vec![0, 0, 0, 2, 13, 7])
        );
        assert!(pending.is_empty());
        assert!(take_frame(&mut vec![0, 0, 0, 0]).is_err(), "empty message");
        assert!(take_frame(&mut vec![0xff, 0, 0, 0]).is_err(), "too large");
    }

    /// A fake agent on `path`: answers a key listing with a fixed answer, anything else
    /// with success (so that a failure can only come from the filter), and counts what
    /// reached it.
    fn fake_agent(path: &Path) -> Arc<std::sync::Mutex<Vec<u8>>> {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = UnixListener::bind(path).unwrap();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    while let Ok(frame) = read_frame(&mut conn).await {
                        log.lock().unwrap().push(frame[4]);
                        let reply: &[u8] = if frame[4] == SSH_AGENTC_REQUEST_IDENTITIES {
                            b"\0\0\0\x0a\x0cfake-keys"
                        } else {
                            b"\0\0\0\x01\x06"
                        };
                        conn.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        seen
    }

    /// An echo "agent" speaking no agent protocol: raw mode must carry anything.
    fn echo_agent(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = conn.into_split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
    }

    /// Serves `provider` on a socket in `dir`; returns a channel to it, as a session's.
    async fn serve(dir: &Path, provider: SshAgentProvider) -> Channel {
        let sock = dir.join("session.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SshServer::new(provider))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let sock = sock.clone();
                async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(sock).await?)) }
            }))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn forwards_read_only_requests_and_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.sock");
        let echo = dir.path().join("echo.sock");
        let seen = fake_agent(&agent);
        echo_agent(&echo);
        let provider = SshAgentProvider::with_auth_sock(
            [
                cfg("default", &[], false),
                cfg("raw", &[echo.to_str().unwrap()], true),
            ],
            Some(&agent),
        )
        .unwrap();
        let channel = serve(dir.path(), provider).await;

        assert!(check(channel.clone(), "").await.unwrap());
        assert!(check(channel.clone(), "raw").await.unwrap());
        assert!(!check(channel.clone(), "nope").await.unwrap());

        // The container's end of a connection, and the end the daemon forwards.
        let (mut container, conn) = UnixStream::pair().unwrap();
        let task = tokio::spawn(forward(channel.clone(), "", conn));
        // A listing split over two writes, then a request to remove every key.
        container.write_all(&[0, 0]).await.unwrap();
        container.write_all(&[0, 1, 11]).await.unwrap();
        let reply = read_frame(&mut container).await.unwrap();
        assert_eq!(reply, b"\0\0\0\x0a\x0cfake-keys");
        container.write_all(&[0, 0, 0, 1, 19]).await.unwrap();
        assert_eq!(read_frame(&mut container).await.unwrap(), failure_frame());
        // Signing reaches the agent.
        container.write_all(&[0, 0, 0, 2, 13, 0]).await.unwrap();
        assert_eq!(read_frame(&mut container).await.unwrap(), [0, 0, 0, 1, 6]);
        drop(container);
        task.await.unwrap().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [11, 13],
            "removal never reached the agent"
        );

        // A malformed frame ends the connection instead of reaching the agent.
        let (mut container, conn) = UnixStream::pair().unwrap();
        let task = tokio::spawn(forward(channel.clone(), "default", conn));
        container.write_all(&[0, 0, 0, 0]).await.unwrap();
        let mut rest = Vec::new();
        container.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        let _ = task.await.unwrap();

        // Raw: bytes go through as they are, and a half-close still gets the answer.
        let (mut container, conn) = UnixStream::pair().unwrap();
        let task = tokio::spawn(forward(channel.clone(), "raw", conn));
        container.write_all(b"hello agent\n").await.unwrap();
        container.shutdown().await.unwrap();
        let mut answer = Vec::new();
        container.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"hello agent\n");
        task.await.unwrap().unwrap();

        // An id the client does not have.
        let (_container, conn) = UnixStream::pair().unwrap();
        let e = forward(channel, "nope", conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("unset ssh forward key nope"), "{e}");
    }
}
