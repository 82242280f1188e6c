//! A build's client session as the build's work uses it: registry credentials for image
//! pulls and base-image resolution, secrets and SSH agents for exec ops.
//!
//! Each Solve makes its own [`JobSession`] from the session id of its request and hands
//! it down: to the frontend, and through [`ops::build_graph_for`] to the ops of its
//! graph. Nothing about it is global, so concurrent builds with different sessions each
//! ask their own client. Credentials are looked up once per registry host for the job
//! (concurrent pulls wait for the one lookup); secrets are asked for on every use and
//! kept nowhere; each connection to an ssh mount's socket is a call of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use registry::{CredentialSource, Credentials};
use session::SessionManager;
use tokio::sync::OnceCell;

/// How long one question to the client may take (upstream's timeout for credentials).
const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// The client session of one build; without one, pulls are anonymous and there are no
/// secrets.
#[derive(Clone, Default)]
pub(crate) struct JobSession(Option<Arc<Inner>>);

struct Inner {
    sessions: SessionManager,
    id: String,
    /// How long to wait for the session to be there.
    wait: Duration,
    /// Per host, the answer of the client: asked once for the job.
    credentials: Mutex<HashMap<String, Arc<OnceCell<Option<Credentials>>>>>,
}

impl std::fmt::Debug for JobSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JobSession")
            .field(&self.0.as_ref().map(|i| i.id.as_str()))
            .finish()
    }
}

impl JobSession {
    /// The job's session `id` (as the Solve request names it; empty: none).
    pub(crate) fn new(sessions: &SessionManager, id: &str) -> JobSession {
        JobSession::with_wait(sessions, id, crate::SESSION_WAIT)
    }

    fn with_wait(sessions: &SessionManager, id: &str, wait: Duration) -> JobSession {
        if id.is_empty() {
            return JobSession(None);
        }
        JobSession(Some(Arc::new(Inner {
            sessions: sessions.clone(),
            id: id.to_string(),
            wait,
            credentials: Mutex::new(HashMap::new()),
        })))
    }

    /// For the ops of the job's graph.
    pub(crate) fn for_ops(&self) -> Option<Arc<dyn ops::BuildSession>> {
        self.0.clone().map(|i| i as Arc<dyn ops::BuildSession>)
    }

    /// For registry calls made for the job outside its graph (the frontend's).
    pub(crate) fn credential_source(&self) -> Option<&dyn CredentialSource> {
        self.0.as_deref().map(|i| i as &dyn CredentialSource)
    }
}

impl Inner {
    async fn caller(&self) -> Result<session::Caller, String> {
        self.sessions
            .get(&self.id, self.wait)
            .await
            .map_err(|e| e.to_string())
    }

    async fn lookup(&self, host: &str) -> Result<Option<Credentials>, String> {
        let caller = self.caller().await?;
        let answer = tokio::time::timeout(ASK_TIMEOUT, session::auth::credentials(&caller, host))
            .await
            .map_err(|_| format!("the client session did not answer within {ASK_TIMEOUT:?}"))?
            .map_err(|e| format!("asking the client session: {e}"))?;
        tracing::debug!(
            session = %self.id,
            host,
            found = answer.is_some(),
            "registry credentials from the client session"
        );
        Ok(answer.map(|(username, secret)| Credentials { username, secret }))
    }

    async fn credentials(&self, host: &str) -> Result<Option<Credentials>, String> {
        let cell = {
            let mut map = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(host.to_string()).or_default().clone()
        };
        // A failed lookup is not kept: the next pull asks again.
        cell.get_or_try_init(|| self.lookup(host)).await.cloned()
    }

    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        let caller = self.caller().await?;
        tokio::time::timeout(ASK_TIMEOUT, session::secrets::get_secret(&caller, id))
            .await
            .map_err(|_| format!("the client session did not answer within {ASK_TIMEOUT:?}"))?
            .map_err(|e| format!("asking the client session: {e}"))
    }

    async fn ssh_agent(&self, id: &str) -> Result<bool, String> {
        let caller = self.caller().await?;
        tokio::time::timeout(ASK_TIMEOUT, session::sshforward::check_agent(&caller, id))
            .await
            .map_err(|_| format!("the client session did not answer within {ASK_TIMEOUT:?}"))?
            .map_err(|e| format!("asking the client session: {e}"))
    }

    async fn forward_ssh(&self, id: &str, conn: tokio::net::UnixStream) -> Result<(), String> {
        // No time limit: the connection lasts as long as the container keeps it open.
        let caller = self.caller().await?;
        session::sshforward::forward_agent(&caller, id, conn)
            .await
            .map_err(|e| e.to_string())
    }
}

impl CredentialSource for Inner {
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>, String>> {
        Box::pin(Inner::credentials(self, host))
    }
}

impl ops::BuildSession for Inner {
    fn credentials<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credentials>, String>> {
        Box::pin(Inner::credentials(self, host))
    }

    fn secret<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(Inner::secret(self, id))
    }

    fn ssh_agent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(Inner::ssh_agent(self, id))
    }

    fn forward_ssh<'a>(
        &'a self,
        id: &'a str,
        conn: tokio::net::UnixStream,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(Inner::forward_ssh(self, id, conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_session_there_is_nothing_to_ask() {
        let s = JobSession::new(&SessionManager::new(), "");
        assert!(s.for_ops().is_none());
        assert!(s.credential_source().is_none());
    }

    #[tokio::test]
    async fn a_missing_session_is_an_error_not_anonymous_access() {
        let s = JobSession::with_wait(&SessionManager::new(), "gone", Duration::from_millis(10));
        let err = s
            .credential_source()
            .unwrap()
            .credentials("127.0.0.1:5000")
            .await
            .unwrap_err();
        assert!(err.contains("gone"), "{err}");
        let err = s.for_ops().unwrap().secret("tok").await.unwrap_err();
        assert!(err.contains("gone"), "{err}");
        let err = s.for_ops().unwrap().ssh_agent("default").await.unwrap_err();
        assert!(err.contains("gone"), "{err}");
    }
}
