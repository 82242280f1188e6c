//! Turning a graph of states into a `pb.Definition`, byte-compatible with upstream's
//! marshaling: ops in depth-first order (inputs before users), identical ops once, a
//! terminal op last, and every op encoded deterministically (fields in tag order, map keys
//! sorted), so the same graph gives the same bytes and digests on every run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use prost::Message;
use proto::pb;
use sha2::{Digest as _, Sha256};

use crate::caps;
use crate::platform::Platform;
use crate::state::{Metadata, OpKind, Output, State, Vertex};

/// Settings that apply to the whole graph when it is marshaled.
#[derive(Clone, Debug, Default)]
pub struct MarshalOptions {
    /// Platform of ops that set none (default: the host's).
    pub platform: Option<Platform>,
    /// Makes `local://` sources unique to this client (upstream: a random id per marshal).
    /// `None` draws a random id.
    pub local_unique_id: Option<String>,
    /// Mark every op `ignore_cache` (`--no-cache`).
    pub ignore_cache: bool,
    /// Worker filters added to every op.
    pub worker_constraints: Vec<String>,
    /// What the daemon is known to support: `Some(true)` if it sets a default `PATH` for
    /// execs (the op then records the cap), `Some(false)` if it does not (the client sets
    /// `PATH`), `None` when unknown (neither).
    pub server_sets_default_path: Option<bool>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A 25-character base-36 id from 128 random bits, like upstream's `identity.NewID`.
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bits: u128 = 0;
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        bits = (bits << 64) | u128::from(h.finish());
    }
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 25];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(bits % 36) as usize];
        bits /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What op encoders see: the digests of vertices already marshaled, and the options.
pub(crate) struct Encoder<'a> {
    digests: &'a HashMap<*const Vertex, String>,
    options: &'a MarshalOptions,
}

impl Encoder<'_> {
    pub(crate) fn input(&self, o: &Output) -> Result<pb::Input, crate::Error> {
        let digest = self
            .digests
            .get(&Arc::as_ptr(&o.vertex))
            .ok_or_else(|| crate::Error::Marshal("input marshaled out of order".into()))?;
        Ok(pb::Input {
            digest: digest.clone(),
            index: o.index,
        })
    }

    pub(crate) fn options(&self) -> &MarshalOptions {
        self.options
    }
}

struct Marshaler<'a> {
    options: &'a MarshalOptions,
    default_platform: Platform,
    local_unique_id: String,
    digests: HashMap<*const Vertex, String>,
    emitted: HashSet<String>,
    def: Vec<Vec<u8>>,
    metadata: BTreeMap<String, Metadata>,
    /// Keeps every visited vertex alive so that pointer keys stay unique.
    keep: Vec<Arc<Vertex>>,
}

impl Marshaler<'_> {
    fn visit(&mut self, v: &Arc<Vertex>) -> Result<String, crate::Error> {
        if let Some(d) = self.digests.get(&Arc::as_ptr(v)) {
            return Ok(d.clone());
        }
        // Depth-first with an explicit stack, so a deep chain cannot overflow ours.
        let mut stack: Vec<(Arc<Vertex>, bool)> = vec![(v.clone(), false)];
        while let Some((vertex, expanded)) = stack.pop() {
            let key = Arc::as_ptr(&vertex);
            if self.digests.contains_key(&key) {
                continue;
            }
            if !expanded {
                stack.push((vertex.clone(), true));
                for dep in vertex.dependencies().iter().rev() {
                    if !self.digests.contains_key(&Arc::as_ptr(&dep.vertex)) {
                        stack.push((dep.vertex.clone(), false));
                    }
                }
                continue;
            }
            self.emit(&vertex)?;
        }
        Ok(self.digests[&Arc::as_ptr(v)].clone())
    }

    fn emit(&mut self, vertex: &Arc<Vertex>) -> Result<(), crate::Error> {
        let enc = Encoder {
            digests: &self.digests,
            options: self.options,
        };
        let opts = &vertex.options;
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.default_platform.clone());
        let (mut op, op_md, keeps_platform) = match &vertex.op {
            OpKind::Source(s) => {
                if let Some(e) = &s.error {
                    return Err(e.clone());
                }
                let mut attrs = s.attrs.clone();
                let mut md = Metadata::default();
                if s.identifier.starts_with("local://") && !attrs.contains_key("local.session") {
                    attrs.insert("local.unique".into(), self.local_unique_id.clone());
                    md.caps.insert(caps::SOURCE_LOCAL_UNIQUE);
                }
                let op = pb::Op {
                    op: Some(pb::op::Op::Source(pb::SourceOp {
                        identifier: s.identifier.clone(),
                        attrs,
                    })),
                    ..pb::Op::default()
                };
                (op, md, s.is_platform_specific())
            }
            OpKind::Exec(e) => {
                let (op, md) = e.encode(opts, &enc)?;
                (op, md, true)
            }
            OpKind::File(f) => {
                let (op, md) = f.encode(&enc)?;
                (op, md, false)
            }
            OpKind::Merge(inputs) => {
                let (op, md) = crate::ops::encode_merge(inputs, &enc)?;
                (op, md, false)
            }
            OpKind::Diff { lower, upper } => {
                let (op, md) = crate::ops::encode_diff(lower.as_ref(), upper.as_ref(), &enc)?;
                (op, md, false)
            }
        };
        if keeps_platform {
            op.platform = Some(platform.to_pb());
        }
        let mut filter = self.options.worker_constraints.clone();
        filter.extend(opts.worker_constraints.iter().cloned());
        op.constraints = Some(pb::WorkerConstraints { filter });

        let bytes = op.encode_to_vec();
        let digest = digest_of(&bytes);
        let mut md = Metadata {
            ignore_cache: self.options.ignore_cache,
            ..Metadata::default()
        };
        md.merge(&opts.metadata);
        md.merge(&op_md);
        self.metadata.entry(digest.clone()).or_default().merge(&md);
        if self.emitted.insert(digest.clone()) {
            self.def.push(bytes);
        }
        self.digests.insert(Arc::as_ptr(vertex), digest);
        self.keep.push(vertex.clone());
        Ok(())
    }
}

impl State {
    /// Marshals this state and everything it depends on into a Definition. Scratch gives
    /// an empty Definition.
    pub fn marshal(&self, options: &MarshalOptions) -> Result<pb::Definition, crate::Error> {
        let Some(out) = &self.output else {
            return Ok(pb::Definition::default());
        };
        let mut m = Marshaler {
            options,
            default_platform: options
                .platform
                .clone()
                .map(Platform::normalized)
                .unwrap_or_else(Platform::host),
            local_unique_id: options.local_unique_id.clone().unwrap_or_else(random_id),
            digests: HashMap::new(),
            emitted: HashSet::new(),
            def: Vec::new(),
            metadata: BTreeMap::new(),
            keep: Vec::new(),
        };
        let digest = m.visit(&out.vertex)?;
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest,
                index: out.index,
            }],
            ..pb::Op::default()
        };
        let bytes = terminal.encode_to_vec();
        let tdigest = digest_of(&bytes);
        let mut tmd = m.metadata.remove(&tdigest).unwrap_or_default();
        tmd.caps.insert(caps::CONSTRAINTS);
        tmd.caps.insert(caps::PLATFORM);
        for md in m.metadata.values() {
            if md.ignore_cache {
                tmd.caps.insert(caps::META_IGNORE_CACHE);
            }
            if !md.description.is_empty() {
                tmd.caps.insert(caps::META_DESCRIPTION);
            }
            if md.export_cache.is_some() {
                tmd.caps.insert(caps::META_EXPORT_CACHE);
            }
        }
        m.def.push(bytes);
        m.metadata.insert(tdigest, tmd);
        Ok(pb::Definition {
            def: m.def,
            metadata: m
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.to_pb()))
                .collect(),
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_look_like_upstreams() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 25);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn scratch_marshals_to_nothing() {
        let def = State::scratch()
            .marshal(&MarshalOptions::default())
            .unwrap();
        assert!(def.def.is_empty());
    }
}
