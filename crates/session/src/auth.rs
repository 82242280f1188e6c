//! `moby.filesync.v1.Auth`: registry credentials from the client's Docker config.
//!
//! Only `Credentials` is served, from `auths.<host>` of `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`): `auth` (base64 `user:pass`), `username` and
//! `password`, or `identitytoken`. Credential helpers (`credsStore`, `credHelpers`) are
//! not run. The token methods answer `Unimplemented`, which makes the daemon fetch
//! tokens itself with these credentials, as upstream falls back to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use proto::filesync::auth_client::AuthClient;
use proto::filesync::auth_server::{Auth, AuthServer};
use proto::filesync::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use serde::Deserialize;
use tonic::{Code, Request, Response, Status};

use crate::Error;
use crate::client::{Attachable, Services};
use crate::manager::Caller;

/// The method the daemon calls for credentials.
pub const CREDENTIALS_METHOD: &str = "/moby.filesync.v1.Auth/Credentials";
/// The config key Docker Hub's credentials are stored under.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
/// Docker Hub's registry host.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

impl std::fmt::Debug for AuthEntry {
    // Never print credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Serves registry credentials from a Docker config.
#[derive(Clone, Debug, Default)]
pub struct AuthProvider {
    auths: Arc<BTreeMap<String, AuthEntry>>,
}

/// The Docker config directory: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker"))
}

impl AuthProvider {
    /// Reads `config.json` from [`docker_config_dir`]; no file means no credentials.
    pub fn from_env() -> Result<AuthProvider, Error> {
        match docker_config_dir() {
            Some(dir) => AuthProvider::from_file(&dir.join("config.json")),
            None => Ok(AuthProvider::default()),
        }
    }

    /// Reads a Docker `config.json`; a missing file means no credentials.
    pub fn from_file(path: &Path) -> Result<AuthProvider, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => AuthProvider::from_json(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthProvider::default()),
            Err(e) => Err(Error::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// Parses the text of a Docker `config.json`.
    pub fn from_json(text: &str) -> Result<AuthProvider, Error> {
        let config: ConfigFile =
            serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Ok(AuthProvider {
            auths: Arc::new(config.auths),
        })
    }

    /// The credentials for `host` (username, secret), if the config has any.
    pub fn credentials(&self, host: &str) -> Result<Option<(String, String)>, Error> {
        let key = if host == DOCKER_HUB_HOST {
            DOCKER_HUB_CONFIG_KEY
        } else {
            host
        };
        let entry = self.auths.get(key).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| hostname_of(k) == hostname_of(key))
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        if !entry.identitytoken.is_empty() {
            return Ok(Some((String::new(), entry.identitytoken.clone())));
        }
        let (mut user, mut pass) = (entry.username.clone(), entry.password.clone());
        if !entry.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.trim())
                .map_err(|e| Error::Config(format!("auth for {key}: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| Error::Config(format!("auth for {key} is not UTF-8")))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| Error::Config(format!("auth for {key} is not user:password")))?;
            (user, pass) = (u.to_string(), p.to_string());
        }
        if user.is_empty() && pass.is_empty() {
            return Ok(None);
        }
        Ok(Some((user, pass)))
    }
}

/// Docker's `ConvertToHostname`: a config key without scheme and path.
fn hostname_of(key: &str) -> &str {
    let k = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl Attachable for AuthProvider {
    fn register(self: Box<Self>, services: &mut Services) {
        services.add(
            AuthServer::new(*self),
            &[
                "Credentials",
                "FetchToken",
                "GetTokenAuthority",
                "VerifyTokenAuthority",
            ],
        );
    }
}

#[tonic::async_trait]
impl Auth for AuthProvider {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let (username, secret) = AuthProvider::credentials(self, &request.get_ref().host)
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        Ok(Response::new(CredentialsResponse { username, secret }))
    }

    async fn fetch_token(
        &self,
        _request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented(
            "token fetching is left to the daemon",
        ))
    }

    async fn get_token_authority(
        &self,
        _request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }

    async fn verify_token_authority(
        &self,
        _request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }
}

/// Asks the client for credentials for `host`: `(username, secret)`, or `None` when it
/// has none or serves no Auth.
pub async fn credentials(caller: &Caller, host: &str) -> Result<Option<(String, String)>, Error> {
    if !caller.supports(CREDENTIALS_METHOD) {
        return Ok(None);
    }
    let mut client = AuthClient::new(caller.channel());
    let request = CredentialsRequest {
        host: host.to_string(),
    };
    match client.credentials(request).await {
        Ok(r) => {
            let r = r.into_inner();
            Ok((!r.username.is_empty() || !r.secret.is_empty()).then_some((r.username, r.secret)))
        }
        Err(s) if s.code() == Code::Unimplemented => Ok(None),
        Err(s) => Err(Error::from(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "https://registry.example.com/v2/": {"username": "u", "password": "p"},
            "tokens.example.com": {"identitytoken": "tok"},
            "broken.example.com": {"auth": "bm9jb2xvbg=="}
        },
        "credsStore": "desktop"
    }"#;

    #[test]
    fn credentials_from_config() {
        let p = AuthProvider::from_json(CONFIG).unwrap();
        assert_eq!(
            p.credentials(DOCKER_HUB_HOST).unwrap(),
            Some(("hub".into(), "secret".into()))
        );
        assert_eq!(
            p.credentials("registry.example.com").unwrap(),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(
            p.credentials("tokens.example.com").unwrap(),
            Some((String::new(), "tok".into()))
        );
        assert_eq!(p.credentials("other.example.com").unwrap(), None);
        assert!(matches!(
            p.credentials("broken.example.com"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn missing_file_is_empty_and_bad_json_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = AuthProvider::from_file(&dir.path().join("config.json")).unwrap();
        assert_eq!(p.credentials(DOCKER_HUB_HOST).unwrap(), None);
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert!(AuthProvider::from_file(&dir.path().join("config.json")).is_err());
    }
}
