//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use content::ContentStore;
use content::layout::LayoutImage;
use metadata::{MemStore, RedbStore};
use oci::Digest;
use oci::spec::{Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType};

/// A store on a fresh in-memory metadata DB.
pub fn mem_store(root: &Path) -> ContentStore {
    ContentStore::open(root, Arc::new(MemStore::default())).unwrap()
}

/// A store on `<root>/metadata.redb`, as the daemon opens it.
pub fn redb_store(root: &Path) -> ContentStore {
    let db = RedbStore::open(&root.join("metadata.redb"), &[]).unwrap();
    ContentStore::open(root, Arc::new(db)).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn descriptor(mt: MediaType, digest: Digest, size: u64) -> Descriptor {
    Descriptor::new(
        mt,
        size,
        oci::spec::Digest::from_str(&digest.to_string()).unwrap(),
    )
}

/// Puts `bytes` in the store and describes them.
pub fn put(store: &ContentStore, mt: MediaType, bytes: &[u8]) -> Descriptor {
    let d = store.put(bytes).unwrap();
    descriptor(mt, d, bytes.len() as u64)
}

/// A one-platform image (config + `layers` layers) in the store; its manifest descriptor.
pub fn image(store: &ContentStore, seed: u64, layers: usize) -> Descriptor {
    let config = put(
        store,
        MediaType::ImageConfig,
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").as_bytes(),
    );
    let layers: Vec<Descriptor> = (0..layers)
        .map(|i| {
            put(
                store,
                MediaType::ImageLayerGzip,
                &data(seed * 100 + i as u64, 5000 + i),
            )
        })
        .collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .unwrap();
    put(
        store,
        MediaType::ImageManifest,
        &serde_json::to_vec(&manifest).unwrap(),
    )
}

/// An index over `manifests`, in the store; its descriptor.
pub fn index(store: &ContentStore, manifests: Vec<Descriptor>) -> Descriptor {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .unwrap();
    put(
        store,
        MediaType::ImageIndex,
        &serde_json::to_vec(&index).unwrap(),
    )
}

pub fn named(descriptor: Descriptor, name: &str) -> LayoutImage {
    LayoutImage {
        descriptor,
        name: Some(name.to_string()),
    }
}

/// Digests of every blob in the store, sorted.
pub fn digests(store: &ContentStore) -> Vec<Digest> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect()
}
