//! Messages of `package pb` whose bytes must equal what Go's protobuf runtime writes, because
//! a vertex digest is sha256 over the bytes of a `pb.Op`. prost's generated code differs from
//! Go in two ways that matter here, so these types are written by hand (`build.rs` points
//! prost at them with `extern_path`) and re-exported from [`crate::pb`] under the same names,
//! with the same fields and the same oneof enum (`pb::op::Op`), so code builds them with the
//! same struct literals.
//!
//! - **Field order of `Op`.** Go writes the regular fields in number order and the `op`
//!   oneof last: `inputs (1), platform (10), constraints (11), exec|source|… (2–8)`. prost
//!   writes everything in number order, oneof included.
//! - **Map entries.** A map entry is a small message `{key = 1, value = 2}`. prost leaves the
//!   key or the value out when it is the default (`""`, `0`, `false`, an empty message); Go
//!   always writes both. Upstream's nested build op carries
//!   `inputs: {"buildkit.llb.definition": {}}`, whose entry Go writes with an empty value
//!   (`12 00`). Covered: `SourceOp.attrs`, `BuildOp.inputs`/`attrs` (inside `Op`, so
//!   digested), `OpMetadata.description`/`caps`, `Definition.metadata`, `Source.locations`.
//!
//! Everything else is encoded as prost would (proto3 defaults left out, the other fields in
//! number order, map keys sorted). Decoding accepts any field order and both map entry
//! forms; unknown fields are skipped (and so lost on re-encoding, as with prost).

use std::collections::BTreeMap;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    self, DecodeContext, WireType, bool as pbool, btree_map, bytes, encode_key, encode_varint,
    encoded_len_varint, int64, key_len, message, skip_field, string,
};
use prost::{DecodeError, Message};

use crate::pb::{
    BuildInput, ExportCache, Input, LinuxResources, Locations, Platform, ProgressGroup, SourceInfo,
    WorkerConstraints,
};

/// One vertex of the build graph (`pb.Op`). The final element of `Definition.def` is a
/// terminal vertex with no `op` and exactly one input (the result).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Op {
    /// Edges: the outputs of other ops this one consumes.
    pub inputs: Vec<Input>,
    /// Platform the op runs for.
    pub platform: Option<Platform>,
    /// Worker filters.
    pub constraints: Option<WorkerConstraints>,
    /// What the op does; `None` for the terminal op.
    pub op: Option<op::Op>,
}

/// Nested types of [`Op`].
pub mod op {
    use crate::pb::{DiffOp, ExecOp, FileOp, MergeOp, PassthroughOp};

    use super::{BuildOp, SourceOp};

    /// The `op` oneof of `pb.Op`.
    // Unboxed variants, as prost generates them, so that code builds them the same way.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        /// Run a process in a container.
        #[prost(message, tag = "2")]
        Exec(ExecOp),
        /// Files from an image, a client directory, git, a URL...
        #[prost(message, tag = "3")]
        Source(SourceOp),
        /// A chain of file actions.
        #[prost(message, tag = "4")]
        File(FileOp),
        /// A nested build.
        #[prost(message, tag = "5")]
        Build(BuildOp),
        /// Layers merged on top of each other.
        #[prost(message, tag = "6")]
        Merge(MergeOp),
        /// The difference between two states.
        #[prost(message, tag = "7")]
        Diff(DiffOp),
        /// Passes results through (gateway internal).
        #[prost(message, tag = "8")]
        Passthrough(PassthroughOp),
    }
}

/// A source of files: an image, a client directory, a git repository, a URL...
/// (`pb.SourceOp`).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct SourceOp {
    /// `scheme://...`: `docker-image`, `local`, `git`, `http(s)`, `oci-layout`.
    pub identifier: String,
    /// Source-specific options, e.g. `local.sharedkeyhint` (field 2).
    pub attrs: BTreeMap<String, String>,
}

/// A nested build (`pb.BuildOp`, experimental upstream).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct BuildOp {
    /// Index of the op input holding the builder, or -1.
    pub builder: i64,
    /// Named inputs of the nested build, e.g. `buildkit.llb.definition`.
    pub inputs: BTreeMap<String, BuildInput>,
    /// An inline definition to build.
    pub def: Option<Definition>,
    /// Options of the nested build (field 4).
    pub attrs: BTreeMap<String, String>,
}

/// Per-vertex metadata; not part of the vertex digest (`pb.OpMetadata`).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct OpMetadata {
    /// Never use a cached result for this vertex.
    pub ignore_cache: bool,
    /// Free-form description, e.g. `llb.customname`.
    pub description: BTreeMap<String, String>,
    /// Force (or prevent) exporting this vertex's result with the cache.
    pub export_cache: Option<ExportCache>,
    /// LLB capabilities the vertex needs (field 5).
    pub caps: BTreeMap<String, bool>,
    /// Groups vertices in progress output.
    pub progress_group: Option<ProgressGroup>,
    /// cgroup limits for this step; deliberately outside the cache key.
    pub linux_resources: Option<LinuxResources>,
}

/// A whole graph: marshaled ops, metadata keyed by op digest, and source maps
/// (`pb.Definition`).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Definition {
    /// Marshaled `pb.Op`s; the last one is the terminal op.
    pub def: Vec<Vec<u8>>,
    /// Metadata keyed by op digest (`sha256:<hex>`).
    pub metadata: BTreeMap<String, OpMetadata>,
    /// Source maps (field 3, named `Source` upstream).
    pub source: Option<Source>,
}

/// Source maps: where in a source file (a Dockerfile) each vertex came from (`pb.Source`).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Source {
    /// Locations keyed by op digest.
    pub locations: BTreeMap<String, Locations>,
    /// The source files the locations index into.
    pub infos: Vec<SourceInfo>,
}

// ---- map entries --------------------------------------------------------------------------

/// A map value type: how it is written as field 2 of a map entry. Unlike prost's own map
/// code these functions never skip a default value.
trait MapValue: Default {
    fn encode_value(&self, tag: u32, buf: &mut impl BufMut);
    fn value_len(&self, tag: u32) -> usize;
    fn merge_value(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError>;
}

impl MapValue for String {
    fn encode_value(&self, tag: u32, buf: &mut impl BufMut) {
        string::encode(tag, self, buf);
    }
    fn value_len(&self, tag: u32) -> usize {
        string::encoded_len(tag, self)
    }
    fn merge_value(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        string::merge(wire_type, self, buf, ctx)
    }
}

impl MapValue for bool {
    fn encode_value(&self, tag: u32, buf: &mut impl BufMut) {
        pbool::encode(tag, self, buf);
    }
    fn value_len(&self, tag: u32) -> usize {
        pbool::encoded_len(tag, self)
    }
    fn merge_value(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        pbool::merge(wire_type, self, buf, ctx)
    }
}

/// Message-valued maps: written as a (possibly empty) embedded message.
macro_rules! message_map_value {
    ($($ty:ty),*) => {$(
        impl MapValue for $ty {
            fn encode_value(&self, tag: u32, buf: &mut impl BufMut) {
                message::encode(tag, self, buf);
            }
            fn value_len(&self, tag: u32) -> usize {
                message::encoded_len(tag, self)
            }
            fn merge_value(
                &mut self,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                message::merge(wire_type, self, buf, ctx)
            }
        }
    )*};
}

message_map_value!(BuildInput, OpMetadata, Locations);

/// Length of one entry's payload: key (field 1) and value (field 2), both always present.
fn entry_len<V: MapValue>(key: &String, value: &V) -> usize {
    string::encoded_len(1, key) + value.value_len(2)
}

/// Writes every entry of a `map<string, V>` field as Go does: key and value always present.
fn encode_map<V: MapValue>(tag: u32, map: &BTreeMap<String, V>, buf: &mut impl BufMut) {
    for (key, value) in map {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(entry_len(key, value) as u64, buf);
        string::encode(1, key, buf);
        value.encode_value(2, buf);
    }
}

fn map_len<V: MapValue>(tag: u32, map: &BTreeMap<String, V>) -> usize {
    map.iter()
        .map(|(key, value)| {
            let len = entry_len(key, value);
            key_len(tag) + encoded_len_varint(len as u64) + len
        })
        .sum()
}

/// Reads one map entry; a missing key or value decodes as the default, as in Go.
fn merge_map<V: MapValue>(
    wire_type: WireType,
    map: &mut BTreeMap<String, V>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    btree_map::merge(
        |wt, key: &mut String, buf, ctx| string::merge(wt, key, buf, ctx),
        |wt, value: &mut V, buf, ctx| value.merge_value(wt, buf, ctx),
        map,
        buf,
        ctx,
    )
}

/// Writes an optional embedded message when it is present (even if empty).
fn encode_opt<M: Message>(tag: u32, value: &Option<M>, buf: &mut impl BufMut) {
    if let Some(v) = value {
        message::encode(tag, v, buf);
    }
}

fn opt_len<M: Message>(tag: u32, value: &Option<M>) -> usize {
    value.as_ref().map_or(0, |v| message::encoded_len(tag, v))
}

/// Merges into an optional embedded message, creating it on first sight.
fn merge_opt<M: Message + Default>(
    wire_type: WireType,
    value: &mut Option<M>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    message::merge(wire_type, value.get_or_insert_with(M::default), buf, ctx)
}

/// Names the message and field a decode error happened in, as prost's derive does.
fn at(message: &'static str, field: &'static str) -> impl FnOnce(DecodeError) -> DecodeError {
    move |mut err| {
        err.push(message, field);
        err
    }
}

// ---- Message implementations ----------------------------------------------------------------

impl Message for Op {
    /// Regular fields in number order, then the oneof, as Go writes them.
    fn encode_raw(&self, buf: &mut impl BufMut) {
        message::encode_repeated(1, &self.inputs, buf);
        encode_opt(10, &self.platform, buf);
        encode_opt(11, &self.constraints, buf);
        if let Some(op) = &self.op {
            op.encode(buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "Op";
        match tag {
            1 => message::merge_repeated(wire_type, &mut self.inputs, buf, ctx)
                .map_err(at(NAME, "inputs")),
            2..=8 => op::Op::merge(&mut self.op, tag, wire_type, buf, ctx).map_err(at(NAME, "op")),
            10 => merge_opt(wire_type, &mut self.platform, buf, ctx).map_err(at(NAME, "platform")),
            11 => merge_opt(wire_type, &mut self.constraints, buf, ctx)
                .map_err(at(NAME, "constraints")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        message::encoded_len_repeated(1, &self.inputs)
            + opt_len(10, &self.platform)
            + opt_len(11, &self.constraints)
            + self.op.as_ref().map_or(0, op::Op::encoded_len)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for SourceOp {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.identifier.is_empty() {
            string::encode(1, &self.identifier, buf);
        }
        encode_map(2, &self.attrs, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "SourceOp";
        match tag {
            1 => string::merge(wire_type, &mut self.identifier, buf, ctx)
                .map_err(at(NAME, "identifier")),
            2 => merge_map(wire_type, &mut self.attrs, buf, ctx).map_err(at(NAME, "attrs")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let identifier = if self.identifier.is_empty() {
            0
        } else {
            string::encoded_len(1, &self.identifier)
        };
        identifier + map_len(2, &self.attrs)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for BuildOp {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.builder != 0 {
            int64::encode(1, &self.builder, buf);
        }
        encode_map(2, &self.inputs, buf);
        encode_opt(3, &self.def, buf);
        encode_map(4, &self.attrs, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "BuildOp";
        match tag {
            1 => int64::merge(wire_type, &mut self.builder, buf, ctx).map_err(at(NAME, "builder")),
            2 => merge_map(wire_type, &mut self.inputs, buf, ctx).map_err(at(NAME, "inputs")),
            3 => merge_opt(wire_type, &mut self.def, buf, ctx).map_err(at(NAME, "def")),
            4 => merge_map(wire_type, &mut self.attrs, buf, ctx).map_err(at(NAME, "attrs")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let builder = if self.builder == 0 {
            0
        } else {
            int64::encoded_len(1, &self.builder)
        };
        builder + map_len(2, &self.inputs) + opt_len(3, &self.def) + map_len(4, &self.attrs)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for OpMetadata {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.ignore_cache {
            pbool::encode(1, &self.ignore_cache, buf);
        }
        encode_map(2, &self.description, buf);
        encode_opt(4, &self.export_cache, buf);
        encode_map(5, &self.caps, buf);
        encode_opt(6, &self.progress_group, buf);
        encode_opt(7, &self.linux_resources, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "OpMetadata";
        match tag {
            1 => pbool::merge(wire_type, &mut self.ignore_cache, buf, ctx)
                .map_err(at(NAME, "ignore_cache")),
            2 => merge_map(wire_type, &mut self.description, buf, ctx)
                .map_err(at(NAME, "description")),
            4 => merge_opt(wire_type, &mut self.export_cache, buf, ctx)
                .map_err(at(NAME, "export_cache")),
            5 => merge_map(wire_type, &mut self.caps, buf, ctx).map_err(at(NAME, "caps")),
            6 => merge_opt(wire_type, &mut self.progress_group, buf, ctx)
                .map_err(at(NAME, "progress_group")),
            7 => merge_opt(wire_type, &mut self.linux_resources, buf, ctx)
                .map_err(at(NAME, "linux_resources")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let ignore_cache = if self.ignore_cache {
            pbool::encoded_len(1, &self.ignore_cache)
        } else {
            0
        };
        ignore_cache
            + map_len(2, &self.description)
            + opt_len(4, &self.export_cache)
            + map_len(5, &self.caps)
            + opt_len(6, &self.progress_group)
            + opt_len(7, &self.linux_resources)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for Definition {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        bytes::encode_repeated(1, &self.def, buf);
        encode_map(2, &self.metadata, buf);
        encode_opt(3, &self.source, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "Definition";
        match tag {
            1 => bytes::merge_repeated(wire_type, &mut self.def, buf, ctx).map_err(at(NAME, "def")),
            2 => merge_map(wire_type, &mut self.metadata, buf, ctx).map_err(at(NAME, "metadata")),
            3 => merge_opt(wire_type, &mut self.source, buf, ctx).map_err(at(NAME, "source")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        bytes::encoded_len_repeated(1, &self.def)
            + map_len(2, &self.metadata)
            + opt_len(3, &self.source)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for Source {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_map(1, &self.locations, buf);
        message::encode_repeated(2, &self.infos, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "Source";
        match tag {
            1 => merge_map(wire_type, &mut self.locations, buf, ctx).map_err(at(NAME, "locations")),
            2 => message::merge_repeated(wire_type, &mut self.infos, buf, ctx)
                .map_err(at(NAME, "infos")),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        map_len(1, &self.locations) + message::encoded_len_repeated(2, &self.infos)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn decode<M: Message + Default>(bytes: &[u8]) -> M {
        M::decode(bytes).expect("decodes")
    }

    #[test]
    fn source_op_writes_empty_attr_values() {
        let op = SourceOp {
            identifier: "local://c".into(),
            attrs: BTreeMap::from([("a".into(), String::new()), ("b".into(), "x".into())]),
        };
        #[rustfmt::skip]
        let want = [
            0x0a, 9, b'l', b'o', b'c', b'a', b'l', b':', b'/', b'/', b'c',
            0x12, 5, 0x0a, 1, b'a', 0x12, 0,          // "a": "" keeps `12 00`
            0x12, 6, 0x0a, 1, b'b', 0x12, 1, b'x',
        ];
        assert_eq!(op.encode_to_vec(), want);
        assert_eq!(op.encoded_len(), want.len());
        assert_eq!(decode::<SourceOp>(&want), op);
    }

    #[test]
    fn empty_key_is_written() {
        let op = SourceOp {
            identifier: String::new(),
            attrs: BTreeMap::from([(String::new(), String::new())]),
        };
        let want = [0x12, 4, 0x0a, 0, 0x12, 0];
        assert_eq!(op.encode_to_vec(), want);
        assert_eq!(decode::<SourceOp>(&want), op);
    }

    #[test]
    fn prost_form_still_decodes() {
        // Entries without key and/or value, as prost (and some other encoders) write them.
        let bytes = [0x12, 3, 0x0a, 1, b'a', 0x12, 3, 0x12, 1, b'v', 0x12, 0];
        let op = decode::<SourceOp>(&bytes);
        assert_eq!(
            op.attrs,
            BTreeMap::from([
                ("a".into(), String::new()),
                (String::new(), String::new()), // last one wins for the "" key
            ])
        );
    }

    #[test]
    fn build_op_matches_upstream_nested_build() {
        // The build op of upstream's examples/nested-llb:
        // builder -1, inputs {"buildkit.llb.definition": {}}.
        let op = BuildOp {
            builder: -1,
            inputs: BTreeMap::from([("buildkit.llb.definition".into(), BuildInput { input: 0 })]),
            def: None,
            attrs: BTreeMap::new(),
        };
        let key = b"buildkit.llb.definition";
        let mut want = vec![0x08];
        want.extend([0xff; 9]);
        want.push(0x01);
        want.extend([0x12, 2 + key.len() as u8 + 2, 0x0a, key.len() as u8]);
        want.extend(key);
        want.extend([0x12, 0x00]);
        assert_eq!(op.encode_to_vec(), want);
        assert_eq!(op.encoded_len(), want.len());
        assert_eq!(decode::<BuildOp>(&want), op);

        // Inside an Op the same bytes appear verbatim.
        let wrapped = pb::Op {
            op: Some(pb::op::Op::Build(op.clone())),
            ..Default::default()
        };
        let mut want_op = vec![0x2a, want.len() as u8];
        want_op.extend(&want);
        assert_eq!(wrapped.encode_to_vec(), want_op);
    }

    #[test]
    fn op_writes_the_oneof_last() {
        let op = pb::Op {
            inputs: vec![pb::Input {
                digest: "d".into(),
                index: 1,
            }],
            platform: Some(pb::Platform {
                os: "linux".into(),
                ..Default::default()
            }),
            constraints: Some(pb::WorkerConstraints::default()),
            op: Some(pb::op::Op::Source(SourceOp {
                identifier: "x".into(),
                attrs: BTreeMap::new(),
            })),
        };
        #[rustfmt::skip]
        let want = [
            0x0a, 5, 0x0a, 1, b'd', 0x10, 1,          // inputs (1)
            0x52, 7, 0x12, 5, b'l', b'i', b'n', b'u', b'x', // platform (10)
            0x5a, 0,                                  // constraints (11), present but empty
            0x1a, 3, 0x0a, 1, b'x',                   // source (3), after them
        ];
        assert_eq!(op.encode_to_vec(), want);
        assert_eq!(op.encoded_len(), want.len());
        assert_eq!(decode::<pb::Op>(&want), op);

        // prost's (number) order decodes to the same op.
        #[rustfmt::skip]
        let number_order = [
            0x0a, 5, 0x0a, 1, b'd', 0x10, 1,
            0x1a, 3, 0x0a, 1, b'x',
            0x52, 7, 0x12, 5, b'l', b'i', b'n', b'u', b'x',
            0x5a, 0,
        ];
        assert_eq!(decode::<pb::Op>(&number_order), op);

        // The terminal op: inputs only.
        let terminal = pb::Op {
            inputs: op.inputs.clone(),
            ..Default::default()
        };
        assert_eq!(terminal.encode_to_vec(), want[..7]);
    }

    #[test]
    fn build_op_all_fields() {
        let op = BuildOp {
            builder: 1,
            inputs: BTreeMap::from([("i".into(), BuildInput { input: 2 })]),
            def: Some(Definition {
                def: vec![vec![0xaa]],
                ..Default::default()
            }),
            attrs: BTreeMap::from([("k".into(), "v".into())]),
        };
        #[rustfmt::skip]
        let want = [
            0x08, 1,
            0x12, 7, 0x0a, 1, b'i', 0x12, 2, 0x08, 2,
            0x1a, 3, 0x0a, 1, 0xaa,
            0x22, 6, 0x0a, 1, b'k', 0x12, 1, b'v',
        ];
        assert_eq!(op.encode_to_vec(), want);
        assert_eq!(decode::<BuildOp>(&want), op);
    }

    #[test]
    fn op_metadata_writes_false_caps() {
        let md = OpMetadata {
            ignore_cache: true,
            description: BTreeMap::from([("d".into(), String::new())]),
            export_cache: Some(ExportCache { value: false }),
            caps: BTreeMap::from([("c".into(), false), ("t".into(), true)]),
            progress_group: Some(ProgressGroup {
                id: "p".into(),
                ..Default::default()
            }),
            linux_resources: Some(LinuxResources {
                memory: 5,
                ..Default::default()
            }),
        };
        #[rustfmt::skip]
        let want = [
            0x08, 1,
            0x12, 5, 0x0a, 1, b'd', 0x12, 0,
            0x22, 0,                              // ExportCache{Value: false}
            0x2a, 5, 0x0a, 1, b'c', 0x10, 0,      // "c": false keeps `10 00`
            0x2a, 5, 0x0a, 1, b't', 0x10, 1,
            0x32, 3, 0x0a, 1, b'p',
            0x3a, 2, 0x08, 5,
        ];
        assert_eq!(md.encode_to_vec(), want);
        assert_eq!(md.encoded_len(), want.len());
        assert_eq!(decode::<OpMetadata>(&want), md);
    }

    #[test]
    fn definition_with_empty_metadata_and_source() {
        let def = Definition {
            def: vec![vec![1, 2], vec![]],
            metadata: BTreeMap::from([("sha256:x".into(), OpMetadata::default())]),
            source: Some(Source {
                locations: BTreeMap::from([("l".into(), Locations::default())]),
                infos: vec![SourceInfo {
                    filename: "f".into(),
                    ..Default::default()
                }],
            }),
        };
        #[rustfmt::skip]
        let want = [
            0x0a, 2, 1, 2,
            0x0a, 0,
            0x12, 12, 0x0a, 8, b's', b'h', b'a', b'2', b'5', b'6', b':', b'x', 0x12, 0,
            0x1a, 12,
                0x0a, 5, 0x0a, 1, b'l', 0x12, 0,
                0x12, 3, 0x0a, 1, b'f',
        ];
        assert_eq!(def.encode_to_vec(), want);
        assert_eq!(def.encoded_len(), want.len());
        assert_eq!(decode::<Definition>(&want), def);
    }

    #[test]
    fn unknown_fields_are_skipped_and_errors_name_the_field() {
        // Field 9 (unknown varint) then identifier.
        let bytes = [0x48, 1, 0x0a, 1, b'x'];
        assert_eq!(decode::<SourceOp>(&bytes).identifier, "x");

        // A map entry whose value is not valid UTF-8.
        let bad = [0x12, 5, 0x0a, 1, b'a', 0x12, 1, 0xff];
        let err = SourceOp::decode(&bad[..]).unwrap_err().to_string();
        assert!(err.contains("SourceOp.attrs"), "{err}");

        // A map field with the wrong wire type.
        let bad = [0x10, 1];
        assert!(SourceOp::decode(&bad[..]).is_err());
    }

    #[test]
    fn clear_resets() {
        let mut op = SourceOp {
            identifier: "x".into(),
            attrs: BTreeMap::from([("a".into(), "b".into())]),
        };
        op.clear();
        assert_eq!(op, SourceOp::default());
    }

    mod prop {
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;

        use super::*;

        fn smap() -> impl Strategy<Value = BTreeMap<String, String>> {
            btree_map(".{0,6}", ".{0,6}", 0..4)
        }

        fn metadata() -> impl Strategy<Value = OpMetadata> {
            (
                any::<bool>(),
                smap(),
                proptest::option::of(any::<bool>()),
                btree_map(".{0,6}", any::<bool>(), 0..4),
            )
                .prop_map(|(ignore_cache, description, export, caps)| OpMetadata {
                    ignore_cache,
                    description,
                    export_cache: export.map(|value| ExportCache { value }),
                    caps,
                    ..Default::default()
                })
        }

        fn definition() -> impl Strategy<Value = Definition> {
            (
                vec(vec(any::<u8>(), 0..8), 0..3),
                btree_map(".{0,6}", metadata(), 0..3),
                proptest::option::of(btree_map(".{0,6}", Just(Locations::default()), 0..3)),
            )
                .prop_map(|(def, metadata, locations)| Definition {
                    def,
                    metadata,
                    source: locations.map(|locations| Source {
                        locations,
                        infos: Vec::new(),
                    }),
                })
        }

        fn op() -> impl Strategy<Value = pb::Op> {
            let kind = prop_oneof![
                Just(None),
                (".{0,10}", smap()).prop_map(|(identifier, attrs)| Some(pb::op::Op::Source(
                    SourceOp { identifier, attrs }
                ))),
                (
                    any::<i64>(),
                    btree_map(".{0,6}", any::<i64>(), 0..3),
                    proptest::option::of(definition()),
                    smap()
                )
                    .prop_map(|(builder, inputs, def, attrs)| Some(
                        pb::op::Op::Build(BuildOp {
                            builder,
                            inputs: inputs
                                .into_iter()
                                .map(|(k, input)| (k, BuildInput { input }))
                                .collect(),
                            def,
                            attrs,
                        })
                    )),
            ];
            (
                vec((".{0,8}", any::<i64>()), 0..3),
                proptest::option::of(".{0,6}"),
                any::<bool>(),
                kind,
            )
                .prop_map(|(inputs, os, constraints, op)| pb::Op {
                    inputs: inputs
                        .into_iter()
                        .map(|(digest, index)| pb::Input { digest, index })
                        .collect(),
                    platform: os.map(|os| pb::Platform {
                        os,
                        ..Default::default()
                    }),
                    constraints: constraints.then(pb::WorkerConstraints::default),
                    op,
                })
        }

        proptest! {
            #[test]
            fn op_roundtrips_with_consistent_length(op in op()) {
                let bytes = op.encode_to_vec();
                prop_assert_eq!(op.encoded_len(), bytes.len());
                prop_assert_eq!(pb::Op::decode(bytes.as_slice()).unwrap(), op);
            }

            #[test]
            fn definition_roundtrips_with_consistent_length(def in definition()) {
                let bytes = def.encode_to_vec();
                prop_assert_eq!(def.encoded_len(), bytes.len());
                prop_assert_eq!(Definition::decode(bytes.as_slice()).unwrap(), def);
            }

            #[test]
            fn every_map_entry_has_key_and_value(attrs in smap()) {
                // Each entry of `attrs` is `12 <len> 0a <klen> key 12 <vlen> value`.
                let op = SourceOp { identifier: String::new(), attrs: attrs.clone() };
                let mut rest = op.encode_to_vec();
                for (k, v) in &attrs {
                    let entry = [
                        vec![0x0a, k.len() as u8], k.as_bytes().to_vec(),
                        vec![0x12, v.len() as u8], v.as_bytes().to_vec(),
                    ].concat();
                    prop_assert_eq!(&rest[..2], &[0x12, entry.len() as u8]);
                    prop_assert_eq!(&rest[2..2 + entry.len()], entry.as_slice());
                    rest.drain(..2 + entry.len());
                }
                prop_assert!(rest.is_empty());
            }
        }
    }
}
