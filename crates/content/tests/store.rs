//! Ingest and read behaviour of the content store.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};

use common::{data, mem_store};
use content::{ContentStore, Error};
use oci::Digest;

fn ingest_dir_entries(store: &ContentStore) -> usize {
    std::fs::read_dir(store.dir().join("ingest"))
        .unwrap()
        .count()
}

#[test]
fn put_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let bytes = data(1, 100_000);
    let d = store.put(&bytes).unwrap();
    assert_eq!(d, Digest::of(&bytes));
    assert!(store.exists(&d).unwrap());
    assert_eq!(store.read_all(&d).unwrap(), bytes);
    assert_eq!(store.size(&d).unwrap(), 100_000);
    let info = store.info(&d).unwrap();
    assert_eq!((info.digest, info.size), (d, 100_000));
    let mut f = store.open_blob(&d).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut back).unwrap();
    assert_eq!(back, bytes);
    assert_eq!(common::digests(&store), vec![d]);
    // the same content again is the same blob
    assert_eq!(store.ingest(&bytes[..], Some((d, 100_000))).unwrap(), d);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(ingest_dir_entries(&store), 0);
}

#[test]
fn wrong_digest_is_rejected_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let bytes = data(2, 4096);
    let claimed = Digest::of(b"other content");
    let err = store.ingest(&bytes[..], Some((claimed, 4096))).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&claimed.to_string()), "{msg}");
    assert!(msg.contains(&Digest::of(&bytes).to_string()), "{msg}");
    assert!(!store.blob_path(&claimed).exists());
    assert!(!store.blob_path(&Digest::of(&bytes)).exists());
    assert!(store.list().unwrap().is_empty());
    assert_eq!(ingest_dir_entries(&store), 0);
}

#[test]
fn wrong_size_is_rejected_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let bytes = data(3, 4096);
    let d = Digest::of(&bytes);
    // right digest, wrong size
    let err = store.ingest(&bytes[..], Some((d, 4095))).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                actual_size: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    // truncated content: both size and digest are off
    let err = store.ingest(&bytes[..100], Some((d, 4096))).unwrap_err();
    assert!(err.is_mismatch(), "{err}");
    assert!(
        err.to_string()
            .contains(&Digest::of(&bytes[..100]).to_string())
    );
    assert!(!store.blob_path(&d).exists());
    assert!(store.list().unwrap().is_empty());
    assert_eq!(ingest_dir_entries(&store), 0);
}

#[test]
fn concurrent_ingests_of_one_digest_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let bytes = Arc::new(data(4, 3 * 1024 * 1024 + 17));
    let want = Digest::of(&bytes);
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (store, bytes, start) = (store.clone(), bytes.clone(), start.clone());
            std::thread::spawn(move || {
                let mut w = store.writer().unwrap();
                start.wait();
                for chunk in bytes.chunks(64 * 1024 + i) {
                    w.write_all(chunk).unwrap();
                }
                let expected = (i % 2 == 0).then_some((want, bytes.len() as u64));
                w.commit(expected)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), want);
    }
    assert_eq!(common::digests(&store), vec![want]);
    assert_eq!(store.read_all(&want).unwrap(), *bytes);
    store.verify(&want).unwrap();
    assert_eq!(ingest_dir_entries(&store), 0);
}

#[test]
fn range_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let bytes = data(5, 1 << 20);
    let d = store.put(&bytes).unwrap();
    for (offset, len) in [
        (0u64, 1u64),
        (1, 4095),
        (4096, 4096),
        (12345, 100_000),
        ((1 << 20) - 1, 1),
    ] {
        let got = store.read_range(&d, offset, len).unwrap();
        assert_eq!(
            got,
            &bytes[offset as usize..(offset + len) as usize],
            "{offset}+{len}"
        );
    }
    assert!(store.read_range(&d, 1 << 20, 0).unwrap().is_empty());
    let err = store.read_range(&d, (1 << 20) - 1, 2).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    let missing = Digest::of(b"missing");
    assert!(store.read_range(&missing, 0, 1).unwrap_err().is_not_found());
}
