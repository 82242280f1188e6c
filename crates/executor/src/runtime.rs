//! The OCI runtime binary (runc, or crun which takes the same command line) and the
//! sub-commands the executor uses: `run`, `kill`, `delete --force`, `list -q`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;

use crate::error::{ExecError, Result};

/// Binaries [`Runtime::detect`] looks for, in order of preference.
pub const CANDIDATES: &[&str] = &["runc", "crun"];

/// Which runtime a binary is, judged by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    Runc,
    Crun,
}

/// An OCI runtime binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    kind: RuntimeKind,
    path: PathBuf,
}

impl Runtime {
    /// The first of [`CANDIDATES`] found as an executable file on `PATH`.
    pub fn detect() -> Result<Runtime> {
        let path_env = std::env::var_os("PATH").unwrap_or_default();
        for name in CANDIDATES {
            if let Some(path) = find_in_path(name, &path_env) {
                tracing::debug!(runtime = %path.display(), "found OCI runtime");
                return Runtime::from_path(path);
            }
        }
        Err(ExecError::RuntimeNotFound {
            candidates: CANDIDATES.join(", "),
            path: path_env.to_string_lossy().into_owned(),
        })
    }

    /// A runtime at an explicit path; the kind is `crun` if the file name contains it,
    /// `runc` otherwise (for example `buildkit-runc`).
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Runtime> {
        let path = path.into();
        if !is_executable(&path) {
            return Err(ExecError::RuntimeNotFound {
                candidates: path.display().to_string(),
                path: "explicit path, not an executable file".into(),
            });
        }
        let name = path
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        let kind = if name.contains("crun") {
            RuntimeKind::Crun
        } else {
            RuntimeKind::Runc
        };
        Ok(Runtime { kind, path })
    }

    /// Which runtime this is.
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary's file name, for messages.
    pub(crate) fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// `<runtime> --root <root>`, in its own process group (so a terminal's signals to
    /// the daemon do not reach it) and killed if the handle is dropped.
    pub(crate) fn command(&self, root: &Path) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root").arg(root);
        cmd.process_group(0).kill_on_drop(true);
        cmd
    }

    async fn output(
        &self,
        root: &Path,
        verb: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<Output> {
        let mut cmd = self.command(root);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().await.map_err(|e| ExecError::RuntimeCommand {
            runtime: self.name(),
            verb,
            id: id.to_string(),
            message: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(ExecError::RuntimeCommand {
                runtime: self.name(),
                verb,
                id: id.to_string(),
                message: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out)
    }

    /// Sends `signal` (a name such as `KILL`) to the container's init process.
    pub(crate) async fn kill(&self, root: &Path, id: &str, signal: &str) -> Result<()> {
        self.output(root, "kill", id, &["kill", id, signal])
            .await
            .map(drop)
    }

    /// Removes the container, killing it first if it still runs. A container that does
    /// not exist is not an error.
    pub(crate) async fn delete(&self, root: &Path, id: &str) -> Result<()> {
        match self
            .output(root, "delete", id, &["delete", "--force", id])
            .await
        {
            Err(ExecError::RuntimeCommand { message, .. })
                if message.contains("does not exist") || message.contains("not found") =>
            {
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// The ids of all containers under `root`.
    pub(crate) async fn list(&self, root: &Path) -> Result<Vec<String>> {
        if !root.exists() {
            return Ok(Vec::new());
        }
        let out = self.output(root, "list", "", &["list", "-q"]).await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &str, path_env: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_env)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The `level: error` messages of a runtime's JSON log (`--log-format json`), joined.
pub(crate) fn log_errors(log: &str) -> Option<String> {
    let msgs: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .collect();
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_on_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("crun");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let path_env = std::env::join_paths([Path::new("relative"), dir.path()]).unwrap();
        assert_eq!(find_in_path("crun", &path_env), None, "not executable yet");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in_path("crun", &path_env), Some(bin.clone()));
        assert_eq!(find_in_path("runc", &path_env), None);
        let rt = Runtime::from_path(&bin).unwrap();
        assert_eq!(rt.kind(), RuntimeKind::Crun);
        assert_eq!(rt.name(), "crun");
    }

    #[test]
    fn missing_runtime_is_a_clear_error() {
        let e = Runtime::from_path("/nonexistent/runc").unwrap_err();
        assert!(matches!(e, ExecError::RuntimeNotFound { .. }));
        assert!(e.to_string().contains("/nonexistent/runc"), "{e}");
    }

    #[test]
    fn log_errors_are_extracted() {
        let log = "{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n\
                   {\"level\":\"error\",\"msg\":\"runc run failed: exec: \\\"/x\\\": not found\"}\n";
        assert_eq!(
            log_errors(log).as_deref(),
            Some("runc run failed: exec: \"/x\": not found")
        );
        assert_eq!(log_errors("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }
}
