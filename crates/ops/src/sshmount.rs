//! The socket behind an ssh mount: a listener in a private directory under the worker's
//! tmp dir, bound into the container for one run, each connection to it carried to the
//! client's SSH agent over the build's session.
//!
//! Under the worker's tmp dir, so that a daemon that crashes mid-run leaves it where the
//! next start removes it. The socket gets the mount's owner and mode, since the
//! container's user connects to it; its directory stays 0700: the container sees only
//! the bound socket, and nobody else on the host needs to reach it. Which agent is
//! behind the socket never enters a cache key (upstream's rule).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::pb;
use solver::OpError;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::{BuildSession, blocking};

/// The agent a mount without an id uses (upstream's `sshforward.DefaultID`).
const DEFAULT_ID: &str = "default";
/// The socket's name in its directory.
const SOCKET_NAME: &str = "agent.sock";
/// Longest path `bind(2)` takes for a unix socket (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A listening socket forwarding to the client's agent; closed, with every connection
/// it forwards, and removed when dropped.
#[derive(Debug)]
pub(crate) struct SshSocket {
    /// Stops the accept loop and every forwarded connection.
    stop: CancellationToken,
    /// Removed (with the socket) when it drops, after `stop` is cancelled.
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl SshSocket {
    /// The socket to bind into the container.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SshSocket {
    fn drop(&mut self) {
        self.stop.cancel();
        tracing::trace!(dir = %self.dir.path().display(), "ssh mount socket closed");
    }
}

/// The socket for an ssh mount with options `opt`, or `None` for an optional agent the
/// client does not forward. Fails, as upstream, when a required one is missing.
pub(crate) async fn prepare(
    tmp: PathBuf,
    session: Option<&Arc<dyn BuildSession>>,
    opt: Option<&pb::SshOpt>,
) -> Result<Option<SshSocket>, OpError> {
    let opt = opt.ok_or_else(|| OpError::new("invalid ssh mount options"))?;
    let id = if opt.id.is_empty() {
        DEFAULT_ID
    } else {
        opt.id.as_str()
    };
    let Some(session) = session else {
        return missing(id, opt.optional);
    };
    match session.ssh_agent(id).await {
        Ok(true) => {}
        Ok(false) => return missing(id, opt.optional),
        // As upstream: an optional agent is skipped whatever went wrong asking for it.
        Err(e) if opt.optional => {
            tracing::debug!(id, error = %e, "optional ssh agent skipped");
            return Ok(None);
        }
        Err(e) => return Err(OpError::new(format!("ssh agent {id:?}: {e}"))),
    }
    let (uid, gid, mode) = (opt.uid, opt.gid, opt.mode & 0o777);
    let (dir, path, listener) = blocking(move || {
        bind(&tmp, uid, gid, mode).map_err(|e| OpError::new(format!("ssh agent socket: {e}")))
    })
    .await?;
    listener
        .set_nonblocking(true)
        .map_err(|e| OpError::new(format!("ssh agent socket: {e}")))?;
    let listener = UnixListener::from_std(listener)
        .map_err(|e| OpError::new(format!("ssh agent socket: {e}")))?;
    let stop = CancellationToken::new();
    tokio::spawn(accept_loop(
        listener,
        session.clone(),
        id.to_string(),
        stop.clone(),
    ));
    Ok(Some(SshSocket { stop, dir, path }))
}

fn missing(id: &str, optional: bool) -> Result<Option<SshSocket>, OpError> {
    if optional {
        Ok(None)
    } else {
        Err(OpError::new(format!(
            "no SSH key {id:?} forwarded from the client"
        )))
    }
}

/// Creates the private directory and the listening socket in it, owned by `uid`:`gid`
/// with permission bits `mode`. Blocking.
fn bind(
    tmp: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener), String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // Private: only the container (through the bound socket) is meant to connect.
    let dir = tempfile::Builder::new()
        .prefix("ssh-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(tmp)
        .map_err(|e| format!("temporary directory in {}: {e}", tmp.display()))?;
    let path = dir.path().join(SOCKET_NAME);
    let listener = if path.as_os_str().len() <= MAX_SOCKET_PATH {
        std::os::unix::net::UnixListener::bind(&path)
    } else {
        // A deep daemon root makes the path too long for bind(2); the directory's
        // descriptor names the same place in a few bytes.
        use std::os::fd::AsRawFd;
        let handle = std::fs::File::open(dir.path())
            .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        let short = Path::new("/proc/self/fd")
            .join(handle.as_raw_fd().to_string())
            .join(SOCKET_NAME);
        std::os::unix::net::UnixListener::bind(short)
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
        .map_err(|e| format!("changing the owner of {}: {e}", path.display()))?;
    // After chown, which may clear special bits.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("changing the mode of {}: {e}", path.display()))?;
    Ok((dir, path, listener))
}

/// Accepts connections until `stop`, carrying each to the client's agent `id`.
async fn accept_loop(
    listener: UnixListener,
    session: Arc<dyn BuildSession>,
    id: String,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => conn,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Upstream stops serving too; the run goes on without the agent.
                    tracing::warn!(id, error = %e, "ssh agent socket stopped accepting");
                    return;
                }
            },
        };
        tokio::spawn(forward(conn, session.clone(), id.clone(), stop.clone()));
    }
}

async fn forward(
    conn: UnixStream,
    session: Arc<dyn BuildSession>,
    id: String,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        forwarded = session.forward_ssh(&id, conn) => {
            if let Err(e) = forwarded {
                tracing::debug!(id, error = %e, "ssh agent connection ended");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A session with agent `key`, which answers each read with `agent:` and the bytes.
    struct FakeSession {
        fail: bool,
    }

    impl BuildSession for FakeSession {
        fn credentials<'a>(
            &'a self,
            _: &'a str,
        ) -> solver::BoxFuture<'a, Result<Option<registry::Credentials>, String>> {
            Box::pin(async { Ok(None) })
        }

        fn secret<'a>(
            &'a self,
            _: &'a str,
        ) -> solver::BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
            Box::pin(async { Ok(None) })
        }

        fn ssh_agent<'a>(&'a self, id: &'a str) -> solver::BoxFuture<'a, Result<bool, String>> {
            Box::pin(async move {
                if self.fail {
                    return Err("the session broke".into());
                }
                Ok(id == "key")
            })
        }

        fn forward_ssh<'a>(
            &'a self,
            _: &'a str,
            mut conn: UnixStream,
        ) -> solver::BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                let mut buf = [0u8; 64];
                loop {
                    let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Ok(());
                    }
                    let mut reply = b"agent:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    conn.write_all(&reply).await.map_err(|e| e.to_string())?;
                }
            })
        }
    }

    fn session(fail: bool) -> Arc<dyn BuildSession> {
        Arc::new(FakeSession { fail })
    }

    fn opt(id: &str, optional: bool) -> pb::SshOpt {
        pb::SshOpt {
            id: id.to_string(),
            uid: 0,
            gid: 0,
            mode: 0o600,
            optional,
        }
    }

    fn is_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[tokio::test]
    async fn missing_agents_fail_unless_optional() {
        let tmp = tempfile::tempdir().unwrap();
        let t = || tmp.path().to_path_buf();
        let s = session(false);
        let e = prepare(t(), Some(&s), Some(&opt("nope", false)))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no SSH key \"nope\" forwarded from the client"
        );
        let e = prepare(t(), None, Some(&opt("", false))).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "no SSH key \"default\" forwarded from the client"
        );
        assert!(
            prepare(t(), Some(&s), Some(&opt("nope", true)))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            prepare(t(), None, Some(&opt("key", true)))
                .await
                .unwrap()
                .is_none()
        );
        let broken = session(true);
        let e = prepare(t(), Some(&broken), Some(&opt("key", false)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("the session broke"), "{e}");
        assert!(
            prepare(t(), Some(&broken), Some(&opt("key", true)))
                .await
                .unwrap()
                .is_none()
        );
        assert!(prepare(t(), Some(&s), None).await.is_err());
        // Nothing was created for any of them.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    async fn round_trip(path: &Path, msg: &[u8]) -> Vec<u8> {
        let mut c = UnixStream::connect(path).await.unwrap();
        c.write_all(msg).await.unwrap();
        c.shutdown().await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn connections_reach_the_agent_until_the_socket_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let s = session(false);
        let (uid, gid) = if is_root() {
            (1000, 1001)
        } else {
            let md = std::fs::metadata(tmp.path()).unwrap();
            (md.uid(), md.gid())
        };
        let mut o = opt("key", false);
        o.uid = uid;
        o.gid = gid;
        o.mode = 0o4640;
        let socket = prepare(tmp.path().to_path_buf(), Some(&s), Some(&o))
            .await
            .unwrap()
            .unwrap();
        let path = socket.path().to_path_buf();
        assert!(path.starts_with(tmp.path()));
        let md = std::fs::metadata(&path).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (uid, gid, 0o640));
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        assert_eq!(round_trip(&path, b"hello").await, b"agent:hello");
        // Several at once, each its own conversation.
        let (a, b) = tokio::join!(round_trip(&path, b"a"), round_trip(&path, b"b"));
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"agent:a"[..], &b"agent:b"[..])
        );

        // A connection still open when the run ends is closed with the socket.
        let mut open = UnixStream::connect(&path).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 7];
        open.read_exact(&mut buf).await.unwrap();
        drop(socket);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            open.read_to_end(&mut rest),
        )
        .await
        .expect("closed")
        .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_deep_tmp_dir_still_gets_a_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        let s = session(false);
        let socket = prepare(deep.clone(), Some(&s), Some(&opt("key", false)))
            .await
            .unwrap()
            .unwrap();
        assert!(socket.path().as_os_str().len() > MAX_SOCKET_PATH);
        assert!(socket.path().starts_with(&deep));
        // Connecting needs a short name too; a test has no container to bind it in.
        let short = tmp.path().join("s");
        std::os::unix::fs::symlink(socket.path(), &short).unwrap();
        assert_eq!(round_trip(&short, b"deep").await, b"agent:deep");
        drop(socket);
        assert_eq!(std::fs::read_dir(&deep).unwrap().count(), 0);
    }
}
