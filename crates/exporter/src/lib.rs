//! The image exporters: `image` (an image in the content store, pushed to a registry when
//! asked), `oci` (an OCI image layout tarball) and `docker` (a tarball `docker load` reads),
//! what upstream's `exporter/containerimage` and `exporter/oci` do.
//!
//! This crate owns:
//! - **layers** ([`export_layers`]): a result's snapshot chain as compressed layer blobs in
//!   the content store, reusing a pulled image's own blobs and the blobs of earlier exports
//!   (remembered in the metadata DB), so exporting the same result twice compresses nothing
//!   twice; with `rewrite-timestamp`, file times clamped to `SOURCE_DATE_EPOCH` so that
//!   builds are reproducible;
//! - **the image config** ([`config`]): the frontend's config with `rootfs.diff_ids`, the
//!   history aligned with the layers, and the creation time (clamped by
//!   `SOURCE_DATE_EPOCH`);
//! - **manifests** ([`commit`]): Docker schema 2 or OCI, with annotations, written to the
//!   content store, and the exporter response the client gets ([`response`]);
//! - **indexes** ([`commit_index`]): for a multi-platform build, an image per platform
//!   and an OCI index (or Docker manifest list) listing them with their platforms;
//! - **exporter attributes** ([`ExportOptions`]), **pushing** ([`push`]) and **tarballs**
//!   ([`write_tarball`]).
//!
//! It does not own sending tarballs to the client (the daemon streams what
//! [`write_tarball`] writes over the session), registry access (`registry`), diffing
//! (`archive`, through [`worker::Worker::diff`]) or attestations, which are not supported
//! yet.
#![forbid(unsafe_code)]

pub mod config;
mod image;
mod layers;
mod options;
pub mod remotecache;
mod tarball;
pub mod time;

pub use image::{
    ANNOTATION_CREATED, Descriptor, Exported, Image, ImageIndex, ImageSource, Platform,
    RESPONSE_CONFIG_DIGEST, RESPONSE_DESCRIPTOR, RESPONSE_DIGEST, RESPONSE_NAME, commit,
    commit_index, image_names, normalize_name, response,
};
pub use layers::{
    LAYER_BLOBS_TABLE, Layer, LayerOptions, Origin, chain, convert_media_type, export_layers,
};
pub use options::{AnnotationTarget, Annotations, CompressionConfig, ExportOptions, Kind};
pub use tarball::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, DOCKER_NO_INDEX, Format, normalized_names,
    write_tarball,
};

use oci::Digest;
use registry::CredentialSource;
use worker::Worker;

/// Errors of exporting. Each names the option, snapshot, blob or image concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad exporter attribute.
    #[error("{0}")]
    Option(String),
    /// An attribute asking for something buildkit-rs does not have.
    #[error("{0}")]
    Unsupported(String),
    /// Bad input: an image config, a snapshot chain, a blob that is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// Writing a tarball failed.
    #[error("writing {entry}: {source}")]
    Write {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    /// Pushing failed.
    #[error("failed to push {name}: {source}")]
    Push {
        name: String,
        #[source]
        source: registry::Error,
    },
    #[error(transparent)]
    Worker(#[from] worker::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// JSON as Go's encoder writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped. They can
/// only occur inside strings, so replacing them everywhere is safe; doing it keeps our
/// digests equal to upstream's for the same documents.
pub(crate) fn go_escape(bytes: Vec<u8>) -> Vec<u8> {
    let needs = bytes.iter().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xe2));
    if !needs {
        return bytes;
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return e.into_bytes(),
    };
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// Pushes what an export made (an image, or an index and its images) as `name`
/// (`push-by-digest`: as `name@DIGEST`, without a tag) with the credentials of `creds`
/// (the build's session), over plain HTTP when `insecure`.
pub async fn push(
    worker: &Worker,
    exported: &Exported,
    name: &str,
    by_digest: bool,
    insecure: bool,
    creds: Option<&dyn CredentialSource>,
) -> Result<()> {
    let fail = |source| Error::Push {
        name: name.to_string(),
        source,
    };
    let parsed = llb::reference::Reference::parse_normalized(name).map_err(|e| {
        fail(registry::Error::Reference {
            reference: name.to_string(),
            reason: e.to_string(),
        })
    })?;
    let target = if by_digest {
        if parsed.tag.is_some() || parsed.digest.is_some() {
            return Err(Error::Option(format!(
                "can't push tagged ref {parsed} by digest"
            )));
        }
        format!("{}@{}", parsed.name(), exported.root().digest)
    } else {
        parsed.with_default_tag().to_string()
    };
    let pushed: Digest = worker
        .registry
        .push_with(
            &target,
            &exported.root().digest,
            &exported.root().media_type,
            &worker.content,
            creds,
            insecure,
        )
        .await
        .map_err(fail)?;
    tracing::info!(name = target, digest = %pushed, "image pushed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escapes_html_characters() {
        assert_eq!(go_escape(b"{\"a\":1}".to_vec()), b"{\"a\":1}");
        assert_eq!(
            String::from_utf8(go_escape("\"<a&b>\u{2028}é\"".as_bytes().to_vec())).unwrap(),
            "\"\\u003ca\\u0026b\\u003e\\u2028é\""
        );
    }
}
