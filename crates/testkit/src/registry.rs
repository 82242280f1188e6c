//! A throw-away local registry for tests: Debian's `docker-registry` (Distribution v2).
//!
//! [`Registry::start`] writes a config into a fresh temp dir (filesystem storage inside it,
//! `http.addr` on a free loopback port), starts `docker-registry serve`, and waits until
//! `GET /v2/` answers. Dropping the value kills and reaps the process and removes the temp dir, so
//! every test gets an empty registry of its own. The registry's output goes to a log file in the
//! temp dir; [`Registry::log`] returns it and start-up errors include it.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::client::RegistryClient;
use crate::{Error, Result};

/// Where Debian's `docker-registry` package installs the binary.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// Install hint used when the binary is missing.
pub const INSTALL_HINT: &str = "apt-get install docker-registry";
/// How long [`Registry::start`] waits for `GET /v2/` to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How many ports are tried when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// Cheapest bcrypt cost: the registry checks the hash on every request, and this is a test.
const BCRYPT_COST: u32 = 4;

/// A running `docker-registry` on `127.0.0.1`, stopped on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: TempDir,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Result<Self> {
        Self::launch(None)
    }

    /// Starts a registry that requires HTTP basic auth as `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Result<Self> {
        if user.is_empty() || user.contains([':', '\n', '\r']) {
            return Err(Error::Invalid {
                what: "htpasswd user",
                value: user.to_owned(),
                reason: "must be non-empty without ':' or newlines".into(),
            });
        }
        Self::launch(Some((user.to_owned(), password.to_owned())))
    }

    /// For tests: starts a registry if `docker-registry` is installed.
    ///
    /// Returns `Ok(None)` after a loud message when it is missing and `CI` is unset (the test
    /// should return early), and an error when it is missing and `CI` is set.
    pub fn start_or_skip() -> Result<Option<Self>> {
        if !crate::require_tool(Path::new(DOCKER_REGISTRY), INSTALL_HINT)? {
            return Ok(None);
        }
        Self::start().map(Some)
    }

    fn launch(credentials: Option<(String, String)>) -> Result<Self> {
        let binary = Path::new(DOCKER_REGISTRY);
        if !binary.exists() {
            return Err(Error::ToolMissing {
                tool: binary.to_path_buf(),
                hint: INSTALL_HINT,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("testkit-registry-")
            .tempdir()
            .map_err(Error::io("create registry temp dir"))?;
        let htpasswd = match &credentials {
            Some((user, password)) => {
                let hash = bcrypt::hash_with_result(password, BCRYPT_COST)?
                    .format_for_version(bcrypt::Version::TwoY);
                let path = dir.path().join("htpasswd");
                fs::write(&path, format!("{user}:{hash}\n"))
                    .map_err(Error::io(format!("write {}", path.display())))?;
                Some(path)
            }
            None => None,
        };

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let config = dir.path().join("config.yml");
            fs::write(&config, config_yaml(dir.path(), port, htpasswd.as_deref()))
                .map_err(Error::io(format!("write {}", config.display())))?;
            let mut child = spawn(binary, &config, &log_path(dir.path()))?;
            match wait_ready(&mut child, port, credentials.is_some(), dir.path()) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        dir,
                        port,
                        credentials,
                    });
                }
                Err(err) => {
                    kill(&mut child);
                    let port_taken = matches!(&err, Error::RegistryStart { log, .. }
                        if log.contains("address already in use"));
                    if !port_taken {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::RegistryStart {
            reason: "no free port found".into(),
            log: String::new(),
        }))
    }

    /// `127.0.0.1:PORT`, the registry host as it appears in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The `(user, password)` pair when started with [`Registry::start_with_htpasswd`].
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// A client for this registry, already carrying its credentials if it has any.
    pub fn client(&self) -> RegistryClient {
        let client = RegistryClient::new(&self.host());
        match self.credentials() {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        }
    }

    /// The registry's storage root (filesystem driver), inside the temp dir.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry has printed so far (its log goes to stderr).
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn kill(child: &mut Child) {
    // An error means the process already exited; either way `wait` reaps it.
    let _ = child.kill();
    let _ = child.wait();
}

fn read_log(dir: &Path) -> String {
    fs::read(log_path(dir))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(no registry log: {e})"))
}

/// Polls `GET /v2/` until it answers 200 (401 when auth is on), the process exits, or
/// [`START_TIMEOUT`] passes.
fn wait_ready(child: &mut Child, port: u16, auth: bool, dir: &Path) -> Result<()> {
    let url = format!("http://127.0.0.1:{port}/v2/");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let expected = if auth { 401 } else { 200 };
    let fail = |reason: String| Error::RegistryStart {
        reason,
        log: read_log(dir),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("exited early with {status}")));
        }
        let last = match agent.get(&url).call() {
            Ok(resp) if resp.status().as_u16() == expected => return Ok(()),
            Ok(resp) => format!("GET {url} answered {}", resp.status()),
            Err(err) => format!("GET {url}: {err}"),
        };
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not ready after {}s ({last})",
                START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("registry.log")
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> Result<Child> {
    let out = File::create(log).map_err(Error::io(format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(Error::io(format!("dup {}", log.display())))?;
    Command::new(binary)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(Error::io(format!(
            "spawn {} serve {}",
            binary.display(),
            config.display()
        )))
}

/// Asks the kernel for a free loopback port. Another process may take it before the registry
/// binds it; [`Registry::start`] retries on "address already in use".
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0 to find a port"))?;
    let addr = listener
        .local_addr()
        .map_err(Error::io("read the bound test port"))?;
    Ok(addr.port())
}

/// The registry config: filesystem storage under `dir`, deletes allowed, loopback only.
fn config_yaml(dir: &Path, port: u16, htpasswd: Option<&Path>) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  fields:\n    service: testkit-registry\n\
         storage:\n  filesystem:\n    rootdirectory: {storage:?}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: testkit-not-a-secret\n\
         \x20 headers:\n    X-Content-Type-Options: [nosniff]\n",
        storage = dir.join("storage").display().to_string(),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: testkit\n    path: {:?}\n",
            path.display().to_string()
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_storage_and_addr_at_the_temp_dir() {
        let yaml = config_yaml(Path::new("/tmp/x"), 5123, None);
        assert!(yaml.contains("rootdirectory: \"/tmp/x/storage\""), "{yaml}");
        assert!(yaml.contains("  addr: 127.0.0.1:5123\n"), "{yaml}");
        assert!(yaml.contains("\n  headers:\n"), "{yaml}");
        assert!(!yaml.contains("auth:"));
        let yaml = config_yaml(Path::new("/tmp/x"), 1, Some(Path::new("/tmp/x/htpasswd")));
        assert!(yaml.contains("auth:\n  htpasswd:\n"), "{yaml}");
    }

    #[test]
    fn bad_htpasswd_user_is_rejected_before_starting() {
        let err = Registry::start_with_htpasswd("a:b", "pw").unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
