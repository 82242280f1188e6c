//! Reusable fixtures for buildkit-rs integration tests.
//!
//! This crate owns the things a test needs *around* the code under test, so each test stays a few
//! lines long:
//!
//! - [`busybox`]: a deterministic busybox OCI image built from the host's `busybox-static`
//!   binary (one gzip layer, OCI config and manifest), the base image most build tests use;
//! - [`image`] and [`layer`]: the generic pieces that image is made of (content-addressed
//!   [`Blob`]s, a reproducible tar+gzip [`LayerBuilder`], single-platform [`Image`] assembly);
//! - [`layout`]: writing and verifying an OCI image layout directory;
//! - [`registry`]: a throw-away local registry (`docker-registry`, Distribution v2) on a loopback
//!   port, optionally with htpasswd auth, killed and cleaned up on drop;
//! - [`client`]: a tiny blocking Registry V2 client (push an image, fetch manifests and blobs) used
//!   to seed and inspect that registry;
//! - [`require_tool`]: the "skip locally, fail in CI" rule for tests that need a host tool.
//!
//! It does **not** own production code paths: the real content store, OCI helpers and registry
//! client live in the `content`, `oci` and `registry` crates. Nothing here is meant to be fast or
//! general; it is meant to be obvious and reproducible. Only use it from `[dev-dependencies]`
//! (and the `mkbusybox` helper binary).

pub mod busybox;
pub mod client;
pub mod image;
pub mod layer;
pub mod layout;
pub mod registry;

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use busybox::BusyboxImage;
pub use client::{ImageRef, RegistryClient};
pub use image::{Blob, Image, Layer};
pub use layer::LayerBuilder;
pub use registry::Registry;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error a testkit fixture can return. Messages name the input (path, URL, digest) that
/// caused them, so a failing test says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host tool a fixture needs is not installed.
    #[error("{tool} not installed: {hint}")]
    ToolMissing {
        /// Path of the missing tool.
        tool: PathBuf,
        /// How to install it, e.g. `apt-get install docker-registry`.
        hint: &'static str,
    },
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or command.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialization failed.
    #[error("{context}: {source}")]
    Json {
        /// What was being (de)serialized.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Building or parsing an OCI type failed.
    #[error("{context}: {source}")]
    Oci {
        /// What was being built or parsed.
        context: String,
        /// The underlying error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// An OCI image layout on disk is malformed or its content does not match its digests.
    #[error("OCI layout {dir}: {reason}")]
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The local registry did not come up.
    #[error("docker-registry failed to start: {reason}\n--- registry log ---\n{log}")]
    RegistryStart {
        /// Why we gave up (exit status, timeout, ...).
        reason: String,
        /// The registry's own stderr/stdout, for diagnosis.
        log: String,
    },
    /// An HTTP request could not be sent or its response could not be read.
    #[error("{method} {url}: {source}")]
    Http {
        /// HTTP method.
        method: &'static str,
        /// Full request URL.
        url: String,
        /// The underlying client error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A registry answered with an unexpected status or content.
    #[error("{method} {url}: {reason}")]
    Registry {
        /// HTTP method.
        method: &'static str,
        /// Full request URL.
        url: String,
        /// What was unexpected, including the status and response body.
        reason: String,
    },
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What content was checked.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A user-supplied value (image reference, user name, ...) is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Kind of value, e.g. "image reference".
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Hashing a password for an htpasswd file failed.
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// A tool is missing and the `CI` environment variable is set, so the test must fail.
    #[error("{0} (required because CI is set)")]
    RequiredInCi(Box<Error>),
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `sha256:<hex>` of `bytes`: the OCI digest string for content.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Decides whether a test that needs an external tool may run.
///
/// Returns `Ok(true)` when `tool` exists. When it is missing, returns `Ok(false)` after printing a
/// loud message (the test should `return` early) unless the `CI` environment variable is set, in
/// which case it returns [`Error::RequiredInCi`] so the test fails instead of silently passing.
pub fn require_tool(tool: &Path, hint: &'static str) -> Result<bool> {
    require_tool_in(tool, hint, std::env::var_os("CI").is_some())
}

fn require_tool_in(tool: &Path, hint: &'static str, in_ci: bool) -> Result<bool> {
    if tool.exists() {
        return Ok(true);
    }
    let missing = Error::ToolMissing {
        tool: tool.to_path_buf(),
        hint,
    };
    if in_ci {
        return Err(Error::RequiredInCi(Box::new(missing)));
    }
    eprintln!("\n!!!!! SKIPPING TEST: {missing} (set CI=1 to make this a failure) !!!!!\n");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn require_tool_accepts_an_existing_path() {
        assert!(require_tool(Path::new("/"), "nothing to install").unwrap());
    }

    #[test]
    fn missing_tool_skips_locally_and_fails_in_ci() {
        let tool = Path::new("/nonexistent/docker-registry");
        let hint = "apt-get install docker-registry";
        assert!(!require_tool_in(tool, hint, false).unwrap());
        let err = require_tool_in(tool, hint, true).unwrap_err();
        assert!(matches!(err, Error::RequiredInCi(_)));
        assert!(
            err.to_string()
                .contains("docker-registry not installed: apt-get install docker-registry"),
            "{err}"
        );
    }

    #[test]
    fn tool_missing_message_names_the_install_command() {
        let err = Error::ToolMissing {
            tool: PathBuf::from("/usr/bin/docker-registry"),
            hint: "apt-get install docker-registry",
        };
        assert_eq!(
            err.to_string(),
            "/usr/bin/docker-registry not installed: apt-get install docker-registry"
        );
    }
}
