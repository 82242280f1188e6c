//! The `index.json` of an OCI image layout, as the client keeps it for its stores
//! (upstream's `client/ociindex`): after a cache export the client tags the cache's
//! manifest in the index (default tag [`DEFAULT_TAG`]), and before an import it looks
//! the tag up to learn which manifest to ask the daemon to import.
//!
//! A tag is the `org.opencontainers.image.ref.name` annotation; a lookup also matches
//! containerd's `io.containerd.image.name` first, as upstream does. Updates hold an
//! exclusive lock on `index.json.lock` and replace `index.json` with a rename, so a
//! reader never sees a partial file and concurrent writers do not lose each other's
//! entries. Fields this module does not know are kept as they are.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The index file of a layout.
pub const INDEX_FILE: &str = "index.json";
/// The layout marker file.
pub const LAYOUT_FILE: &str = "oci-layout";
/// The layout version written into [`LAYOUT_FILE`].
pub const LAYOUT_VERSION: &str = "1.0.0";
/// The annotation holding a manifest's tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation holding a manifest's full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The tag used when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// How long [`StoreIndex::put`] waits for another writer's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An OCI content descriptor (other fields, such as `platform` or `urls`, are kept in
/// `other`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// `mediaType`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: String,
    /// `digest`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub digest: String,
    /// `size`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub size: i64,
    /// `annotations`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Every other field, as read.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An OCI image index (other fields are kept in `other`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// `schemaVersion` (2).
    #[serde(default, deserialize_with = "null_as_default")]
    pub schema_version: i64,
    /// `mediaType`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// `manifests`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub manifests: Vec<Descriptor>,
    /// Every other field, as read.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Index {
    /// The manifest tagged `tag`: the first whose image name is `tag`, else the first
    /// whose ref name is `tag`.
    pub fn get(&self, tag: &str) -> Option<&Descriptor> {
        let by = |key: &str| {
            self.manifests
                .iter()
                .find(|m| m.annotations.get(key).is_some_and(|v| v == tag))
        };
        by(IMAGE_NAME_ANNOTATION).or_else(|| by(REF_NAME_ANNOTATION))
    }

    /// Adds `desc` tagged `tag` (its ref name), dropping the manifests that carry the
    /// same tag and no image name; fills in the schema version and media type.
    pub fn put(&mut self, desc: &Descriptor, tag: &str) {
        if self.schema_version == 0 {
            self.schema_version = 2;
        }
        if self.media_type.is_empty() {
            self.media_type = INDEX_MEDIA_TYPE.to_string();
        }
        let mut desc = desc.clone();
        desc.annotations
            .insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        self.manifests.retain(|m| {
            let tagged = m.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(tag);
            let named = m
                .annotations
                .get(IMAGE_NAME_ANNOTATION)
                .is_some_and(|n| !n.is_empty());
            !tagged || named
        });
        self.manifests.push(desc);
    }
}

/// A failure reading or updating a layout's index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The file cannot be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid index.
    #[error("could not parse {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file cannot be written.
    #[error("could not write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another writer held the lock for too long.
    #[error("could not lock {}: held by another writer", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl IndexError {
    /// Whether the index file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, IndexError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The index of the layout in one directory.
#[derive(Clone, Debug)]
pub struct StoreIndex {
    dir: PathBuf,
}

impl StoreIndex {
    /// The index of the layout in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StoreIndex {
        StoreIndex { dir: dir.into() }
    }

    /// `<dir>/index.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{INDEX_FILE}.lock"))
    }

    /// Reads `index.json` ([`IndexError::is_not_found`] when there is none).
    pub fn read(&self) -> Result<Index, IndexError> {
        let path = self.path();
        let data = fs::read(&path).map_err(|source| IndexError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| IndexError::Parse { path, source })
    }

    /// The manifest tagged `tag` ([`Index::get`]); `Ok(None)` when no manifest has it.
    pub fn get(&self, tag: &str) -> Result<Option<Descriptor>, IndexError> {
        Ok(self.read()?.get(tag).cloned())
    }

    /// Tags `desc` as `tag` in `index.json` ([`Index::put`]), creating the directory,
    /// the `oci-layout` marker and the index as needed.
    pub fn put(&self, desc: &Descriptor, tag: &str) -> Result<(), IndexError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IndexError::Write { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(write_err(&self.dir))?;
        let lock = self.lock()?;
        let result = self.put_locked(desc, tag);
        let lock_path = self.lock_path();
        // Removed while still held, as upstream leaves no lock file behind; a writer
        // that opened it meanwhile sees it was unlinked and takes a new one.
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        result
    }

    fn put_locked(&self, desc: &Descriptor, tag: &str) -> Result<(), IndexError> {
        let layout = self.dir.join(LAYOUT_FILE);
        if !layout.exists() {
            let marker = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION });
            write_atomic(&layout, marker.to_string().as_bytes()).map_err(|source| {
                IndexError::Write {
                    path: layout.clone(),
                    source,
                }
            })?;
        }
        let mut index = match self.read() {
            Ok(index) => index,
            Err(e) if e.is_not_found() => Index::default(),
            Err(IndexError::Parse { .. })
                if fs::metadata(self.path()).is_ok_and(|m| m.len() == 0) =>
            {
                Index::default()
            }
            Err(e) => return Err(e),
        };
        index.put(desc, tag);
        let path = self.path();
        let data = serde_json::to_vec(&index).map_err(|e| IndexError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        write_atomic(&path, &data).map_err(|source| IndexError::Write { path, source })
    }

    /// An exclusive lock on `index.json.lock`, waiting up to [`LOCK_WAIT`].
    fn lock(&self) -> Result<File, IndexError> {
        use rustix::fs::{FlockOperation, flock};
        let path = self.lock_path();
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| IndexError::Write {
                    path: path.clone(),
                    source,
                })?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    // Still the file at that path (not one a previous holder unlinked)?
                    let held = file.metadata().ok();
                    let current = fs::metadata(&path).ok();
                    if let (Some(h), Some(c)) = (held, current) {
                        if h.dev() == c.dev() && h.ino() == c.ino() {
                            return Ok(file);
                        }
                    }
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => {
                    return Err(IndexError::Write {
                        path,
                        source: e.into(),
                    });
                }
            }
            drop(file);
            if Instant::now() >= deadline {
                return Err(IndexError::Locked { path });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes `data` to a temporary file next to `path` and renames it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&temp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 7,
            ..Descriptor::default()
        }
    }

    #[test]
    fn put_replaces_only_the_same_tag() {
        let mut index = Index::default();
        index.put(&desc("sha256:a"), "latest");
        index.put(&desc("sha256:b"), "v1");
        index.put(&desc("sha256:c"), "latest");
        assert_eq!(index.schema_version, 2);
        assert_eq!(index.media_type, INDEX_MEDIA_TYPE);
        let digests: Vec<_> = index.manifests.iter().map(|m| m.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:b", "sha256:c"]);
        assert_eq!(index.get("latest").unwrap().digest, "sha256:c");
        assert_eq!(index.get("v1").unwrap().digest, "sha256:b");
        assert!(index.get("v2").is_none());

        // An image named `latest` wins over a ref name, and is not replaced by a tag.
        let mut named = desc("sha256:n");
        named
            .annotations
            .insert(IMAGE_NAME_ANNOTATION.into(), "latest".into());
        named
            .annotations
            .insert(REF_NAME_ANNOTATION.into(), "latest".into());
        index.manifests.insert(0, named);
        index.put(&desc("sha256:d"), "latest");
        assert_eq!(index.get("latest").unwrap().digest, "sha256:n");
        assert_eq!(index.manifests.len(), 3);
    }

    #[test]
    fn unknown_fields_and_nulls() {
        let json = r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:x","size":1,
            "platform":{"architecture":"amd64","os":"linux"},"annotations":null}],"annotations":{"k":"v"}}"#;
        let index: Index = serde_json::from_str(json).unwrap();
        assert!(index.manifests[0].annotations.is_empty());
        let back = serde_json::to_value(&index).unwrap();
        assert_eq!(back["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(back["annotations"]["k"], "v");
        assert!(back.get("mediaType").is_none());
        let empty: Index = serde_json::from_str(r#"{"schemaVersion":2,"manifests":null}"#).unwrap();
        assert!(empty.manifests.is_empty());
    }
}
