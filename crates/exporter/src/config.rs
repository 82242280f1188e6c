//! The image config an export writes: the frontend's config (or an empty one for the host
//! platform) with `rootfs.diff_ids` set to the layers', `history` aligned with the layers
//! and `created` filled in, as upstream's image writer patches it.
//!
//! Fields this crate does not touch are kept byte for byte; the top-level keys come out
//! sorted, as Go's encoder writes a map.

use std::collections::BTreeMap;

use oci::Digest;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::time::Timestamp;
use crate::{Error, Result};

/// `history[].comment` of the entries this exporter adds for layers the config does not
/// account for.
pub const HISTORY_COMMENT: &str = "buildkit.exporter.image.v0";

/// `history[].created_by` of those entries: snapshots carry no description here.
const DEFAULT_DESCRIPTION: &str = "created by buildkit";

/// One `history` entry, in the field order Go's image-spec types write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// What the config needs to know about a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub diff_id: Digest,
    /// When its snapshot was made.
    pub created: Timestamp,
}

/// The config of an image with no frontend (an LLB build): the platform, a `PATH` and
/// `/` as working directory, as upstream's default config.
pub fn default_config(platform: &llb::Platform) -> Vec<u8> {
    let mut v = serde_json::Map::new();
    v.insert("architecture".into(), platform.architecture.clone().into());
    v.insert("os".into(), platform.os.clone().into());
    if !platform.os_version.is_empty() {
        v.insert("os.version".into(), platform.os_version.clone().into());
    }
    if !platform.variant.is_empty() {
        v.insert("variant".into(), platform.variant.clone().into());
    }
    let mut config = serde_json::Map::new();
    if platform.os != "windows" {
        config.insert(
            "Env".into(),
            vec![format!("PATH={}", llb::DEFAULT_PATH)].into(),
        );
    }
    config.insert("WorkingDir".into(), "/".into());
    v.insert("config".into(), config.into());
    let rootfs = RootFs {
        kind: "layers",
        diff_ids: None,
    };
    v.insert(
        "rootfs".into(),
        serde_json::to_value(&rootfs).unwrap_or_default(),
    );
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Makes the history agree with the layers, as upstream's `normalizeLayersAndHistory`:
/// entries claiming more layers than there are become empty ones (from the bottom), one
/// entry is added per layer the history does not account for, layer entries without a
/// time get their snapshot's, and the other entries without one the nearest time before
/// them (or the first new layer's).
pub fn normalize_history(mut history: Vec<History>, layers: &[LayerInfo]) -> Vec<History> {
    let counted = history.iter().filter(|h| !h.empty_layer).count();
    if counted > layers.len() {
        tracing::warn!(
            history = counted,
            layers = layers.len(),
            "image config history names more layers than there are"
        );
        let mut n = 0;
        for h in &mut history {
            if n >= layers.len() {
                h.empty_layer = true;
            }
            if !h.empty_layer {
                n += 1;
            }
        }
    }
    if layers.len() > counted {
        for l in &layers[counted..] {
            history.push(History {
                created: Some(l.created.to_rfc3339_nano()),
                created_by: DEFAULT_DESCRIPTION.into(),
                comment: HISTORY_COMMENT.into(),
                ..History::default()
            });
        }
    }
    let mut i = 0;
    for h in &mut history {
        if !h.empty_layer {
            if h.created.is_none() {
                h.created = layers.get(i).map(|l| l.created.to_rfc3339_nano());
            }
            i += 1;
        }
    }
    // The first time after an entry without one, so that a leading metadata-only entry
    // does not take a base layer's time; else the last time there is.
    let mut created: Option<String> = None;
    let mut missing = false;
    for h in &history {
        match &h.created {
            Some(c) => {
                created = Some(c.clone());
                if missing {
                    break;
                }
            }
            None => missing = true,
        }
    }
    missing = false;
    for h in &mut history {
        match &h.created {
            Some(c) => {
                if missing {
                    created = Some(c.clone());
                }
            }
            None => {
                missing = true;
                h.created.clone_from(&created);
            }
        }
    }
    history
}

/// The parts of a config that are checked and read here.
#[derive(Deserialize)]
struct Minimal {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    history: Option<Vec<History>>,
}

/// `rootfs`; `diff_ids` is `null` without layers, as Go writes an empty list.
#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Option<Vec<Digest>>,
}

fn invalid(reason: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("invalid image config for export: {reason}"))
}

fn raw(v: &impl Serialize) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(v).map_err(invalid)
}

/// Whether an RFC 3339 time is after `epoch`; times that do not parse are left alone.
fn after(time: &str, epoch: Timestamp) -> bool {
    Timestamp::parse_rfc3339(time).is_some_and(|t| t > epoch)
}

/// The config to write for `config` over `layers`: see the module docs. `epoch`
/// (`SOURCE_DATE_EPOCH`) clamps every time after it; `now` is the creation time when
/// nothing else gives one.
pub fn patch_config(
    config: &[u8],
    layers: &[LayerInfo],
    epoch: Option<Timestamp>,
    now: Timestamp,
) -> Result<Vec<u8>> {
    let mut top: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(config).map_err(invalid)?;
    let min: Minimal = serde_json::from_slice(config).map_err(invalid)?;
    if min.os.is_empty() {
        return Err(invalid("missing os"));
    }
    if min.architecture.is_empty() {
        return Err(invalid("missing architecture"));
    }
    let mut history = normalize_history(min.history.unwrap_or_default(), layers);

    let rootfs = RootFs {
        kind: "layers",
        diff_ids: (!layers.is_empty()).then(|| layers.iter().map(|l| l.diff_id).collect()),
    };
    top.insert("rootfs".into(), raw(&rootfs)?);

    let epoch_text = epoch.map(Timestamp::to_rfc3339_nano);
    if let (Some(epoch), Some(text)) = (epoch, &epoch_text) {
        for h in &mut history {
            if h.created.as_deref().is_none_or(|c| after(c, epoch)) {
                h.created = Some(text.clone());
            }
        }
    }
    top.insert("history".into(), raw(&history)?);

    match top.get("created") {
        Some(c) => {
            if let (Some(epoch), Some(text)) = (epoch, &epoch_text) {
                let current: Option<String> = serde_json::from_str(c.get()).map_err(|e| {
                    invalid(format!(
                        "failed to unmarshal creation time {}: {e}",
                        c.get()
                    ))
                })?;
                if current.as_deref().is_some_and(|t| after(t, epoch)) {
                    top.insert("created".into(), raw(text)?);
                }
            }
        }
        None => {
            // The last time in the history, as upstream; an image with no history at all
            // gets the epoch or the current time rather than upstream's `null`.
            let created = history
                .iter()
                .rev()
                .find_map(|h| h.created.clone())
                .or(epoch_text)
                .unwrap_or_else(|| now.to_rfc3339_nano());
            top.insert("created".into(), raw(&created)?);
        }
    }
    let bytes = serde_json::to_vec(&top).map_err(invalid)?;
    Ok(crate::go_escape(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8, secs: i64) -> LayerInfo {
        LayerInfo {
            diff_id: Digest::of(&[n]),
            created: Timestamp::from_secs(secs),
        }
    }

    fn h(created: Option<&str>, by: &str, empty: bool) -> History {
        History {
            created: created.map(String::from),
            created_by: by.into(),
            empty_layer: empty,
            ..History::default()
        }
    }

    #[test]
    fn history_gains_entries_for_unaccounted_layers() {
        let out = normalize_history(Vec::new(), &[layer(1, 100), layer(2, 200)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].created.as_deref(), Some("1970-01-01T00:01:40Z"));
        assert_eq!(out[1].comment, HISTORY_COMMENT);
        assert_eq!(out[1].created_by, "created by buildkit");
        assert!(!out[1].empty_layer);
    }

    #[test]
    fn history_with_too_many_layers_is_cut_from_the_bottom() {
        let hist = vec![
            h(Some("2020-01-01T00:00:00Z"), "a", false),
            h(None, "b", false),
            h(None, "c", false),
        ];
        let out = normalize_history(hist, &[layer(1, 100)]);
        let empties: Vec<bool> = out.iter().map(|h| h.empty_layer).collect();
        assert_eq!(empties, [false, true, true]);
    }

    #[test]
    fn dockerfile_history_gets_layer_and_neighbour_times() {
        // FROM base (one layer, timed), ENV (no time), RUN (layer, no time), CMD (no time)
        let hist = vec![
            h(Some("2020-01-01T00:00:00Z"), "base", false),
            h(None, "ENV a=b", true),
            h(None, "RUN x", false),
            h(None, "CMD y", true),
        ];
        let out = normalize_history(hist, &[layer(1, 100), layer(2, 1_700_000_000)]);
        let times: Vec<&str> = out.iter().map(|h| h.created.as_deref().unwrap()).collect();
        assert_eq!(
            times,
            [
                "2020-01-01T00:00:00Z",
                // the first new layer's time, not the base's
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
            ]
        );
    }

    #[test]
    fn patched_config_keeps_unknown_fields_and_sorts_keys() {
        let config = br#"{"os":"linux","architecture":"amd64","config":{"Cmd":["cat","/hi"],"Env":["A=<b>"]},"x-custom":{"z":1,"a":2},"history":[{"created_by":"RUN x","comment":"buildkit.dockerfile.v0"}]}"#;
        let out = patch_config(
            config,
            &[layer(1, 1_700_000_000)],
            None,
            Timestamp::from_secs(5),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let d = Digest::of(&[1]);
        assert_eq!(
            text,
            format!(
                r#"{{"architecture":"amd64","config":{{"Cmd":["cat","/hi"],"Env":["A=\u003cb\u003e"]}},"created":"2023-11-14T22:13:20Z","history":[{{"created":"2023-11-14T22:13:20Z","created_by":"RUN x","comment":"buildkit.dockerfile.v0"}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}},"x-custom":{{"z":1,"a":2}}}}"#
            )
        );
    }

    #[test]
    fn epoch_clamps_later_times_only() {
        let config = br#"{"os":"linux","architecture":"amd64","created":"2030-01-01T00:00:00Z","history":[{"created":"2001-01-01T00:00:00Z","created_by":"old"},{"created_by":"new"}]}"#;
        let epoch = Timestamp::from_secs(1_000_000_000); // 2001-09-09
        let out = patch_config(
            config,
            &[layer(1, 1), layer(2, 1_700_000_000)],
            Some(epoch),
            Timestamp::from_secs(5),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["created"], "2001-09-09T01:46:40Z");
        assert_eq!(v["history"][0]["created"], "2001-01-01T00:00:00Z");
        assert_eq!(v["history"][1]["created"], "2001-09-09T01:46:40Z");
    }

    #[test]
    fn scratch_images_and_bad_configs() {
        let cfg = default_config(&llb::Platform::new("linux", "arm", "v7"));
        let out = patch_config(&cfg, &[], None, Timestamp::from_secs(0)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"], serde_json::Value::Null);
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        assert_eq!(v["config"]["WorkingDir"], "/");
        assert_eq!(v["variant"], "v7");
        for bad in [&b"[]"[..], b"{}", br#"{"os":"linux"}"#, b"not json"] {
            let e = patch_config(bad, &[], None, Timestamp::from_secs(0)).unwrap_err();
            assert!(e.to_string().contains("invalid image config"), "{e}");
        }
    }
}
