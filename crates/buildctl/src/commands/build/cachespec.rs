//! `--export-cache` and `--import-cache` specs, read as upstream's buildctl reads them:
//! CSV `type=TYPE,KEY=VALUE...`, or a bare reference meaning `type=registry,ref=REF`.

use anyhow::bail;
use proto::control::CacheOptionsEntry;

use super::output::csv_fields;

/// One spec as a cache entry of the Solve request.
pub(super) fn parse(spec: &str, flag: &str) -> anyhow::Result<CacheOptionsEntry> {
    if !spec.contains('=') {
        // Legacy form: a registry reference.
        return Ok(CacheOptionsEntry {
            r#type: "registry".into(),
            attrs: [("ref".to_string(), spec.to_string())]
                .into_iter()
                .collect(),
        });
    }
    let mut entry = CacheOptionsEntry::default();
    for field in csv_fields(spec)? {
        let Some((k, v)) = field.split_once('=') else {
            bail!("{flag} {spec}: invalid value {field}");
        };
        let k = k.trim().to_ascii_lowercase();
        if k == "type" {
            entry.r#type = v.to_string();
        } else {
            entry.attrs.insert(k, v.to_string());
        }
    }
    if entry.r#type.is_empty() {
        bail!("{flag} {spec}: type must be specified (type=registry, type=inline, ...)");
    }
    Ok(entry)
}

/// The local caches of a build: the content stores this side serves, the entries as
/// sent (imports with their digest resolved from `index.json`), and the tags to set in
/// each export's `index.json` afterwards.
#[derive(Debug, Default)]
pub(super) struct LocalCaches {
    pub(super) stores: session::ContentStores,
    pub(super) exports: Vec<CacheOptionsEntry>,
    pub(super) imports: Vec<CacheOptionsEntry>,
    /// (directory, tag) of each local export.
    pub(super) tags: Vec<(String, String)>,
}

/// Serves the directories of `type=local` entries, as upstream's buildctl does: an
/// export's `dest` gets the blobs (and later a tag in its `index.json`); an import's
/// `src` is read, its digest taken from `index.json` by `tag` (default `latest`) unless
/// given. An import whose directory or tag is missing is left out with a warning.
pub(super) fn local_stores(
    exports: Vec<CacheOptionsEntry>,
    imports: Vec<CacheOptionsEntry>,
) -> anyhow::Result<LocalCaches> {
    let mut out = LocalCaches::default();
    for e in exports {
        if e.r#type == "local" {
            let Some(dest) = e.attrs.get("dest").filter(|d| !d.is_empty()).cloned() else {
                bail!("--export-cache type=local: local cache exporter requires dest");
            };
            let tag = e
                .attrs
                .get("tag")
                .cloned()
                .unwrap_or_else(|| session::content::index::DEFAULT_TAG.to_string());
            out.stores = out.stores.local(&dest);
            out.tags.push((dest, tag));
        }
        out.exports.push(e);
    }
    for mut i in imports {
        if i.r#type == "local" {
            let Some(src) = i.attrs.get("src").filter(|d| !d.is_empty()).cloned() else {
                bail!("--import-cache type=local: local cache importer requires src");
            };
            if !std::path::Path::new(&src).is_dir() {
                eprintln!("WARNING: local cache import at {src} not found");
                continue;
            }
            if i.attrs.get("digest").is_none_or(|d| d.is_empty()) {
                let tag = i
                    .attrs
                    .get("tag")
                    .cloned()
                    .unwrap_or_else(|| session::content::index::DEFAULT_TAG.to_string());
                match session::content::index::StoreIndex::new(&src).get(&tag) {
                    Ok(Some(desc)) => {
                        i.attrs.insert("digest".into(), desc.digest);
                    }
                    Ok(None) => {
                        eprintln!(
                            "WARNING: local cache import at {src} skipped: no tag {tag:?} in its index.json"
                        );
                        continue;
                    }
                    Err(e) => {
                        eprintln!("WARNING: local cache import at {src} skipped: {e}");
                        continue;
                    }
                }
            }
            out.stores = out.stores.local(&src);
        }
        out.imports.push(i);
    }
    Ok(out)
}

/// Tags the exported cache manifest (`cache.manifest` in the response) in each local
/// export's `index.json`.
pub(super) fn tag_exported(
    tags: &[(String, String)],
    response: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let Some(desc) = response.get("cache.manifest") else {
        return Ok(());
    };
    let desc: session::content::index::Descriptor = serde_json::from_str(desc)
        .map_err(|e| anyhow::anyhow!("the daemon's cache.manifest: {e}"))?;
    for (dir, tag) in tags {
        session::content::index::StoreIndex::new(dir)
            .put(&desc, tag)
            .map_err(|e| anyhow::anyhow!("--export-cache type=local,dest={dir}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_as_upstream() {
        let e = parse("type=registry,ref=reg/app:cache,mode=max", "--export-cache").unwrap();
        assert_eq!(e.r#type, "registry");
        assert_eq!(e.attrs["ref"], "reg/app:cache");
        assert_eq!(e.attrs["mode"], "max");
        let legacy = parse("reg/app:cache", "--import-cache").unwrap();
        assert_eq!(legacy.r#type, "registry");
        assert_eq!(legacy.attrs["ref"], "reg/app:cache");
        let err = parse("ref=x", "--export-cache").unwrap_err().to_string();
        assert!(err.contains("type must be specified"), "{err}");
        assert!(parse("type=inline,junk", "--export-cache").is_err());
    }
}
