//! OCI image layout write/read round trips.

mod common;

use std::path::Path;

use common::{digests, image, index, mem_store, named};
use content::Error;
use content::layout::{self, LayoutError, LayoutImage};

/// A store with a single-platform image and a two-platform index (sharing a layer image).
fn source(root: &Path) -> (content::ContentStore, Vec<LayoutImage>) {
    let store = mem_store(root);
    let single = image(&store, 1, 2);
    let amd = image(&store, 2, 3);
    let idx = index(&store, vec![amd, single.clone()]);
    store.put(b"unrelated blob").unwrap();
    let images = vec![
        named(single, "example.com/app:single"),
        LayoutImage {
            descriptor: idx,
            name: None,
        },
    ];
    (store, images)
}

#[test]
fn write_then_read_into_a_second_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(&tmp.path().join("a"));
    let out = tmp.path().join("layout");
    layout::write_layout(&src, &out, &images).unwrap();

    let marker = std::fs::read_to_string(out.join("oci-layout")).unwrap();
    assert!(
        marker.contains("\"imageLayoutVersion\":\"1.0.0\""),
        "{marker}"
    );
    let index_json = std::fs::read_to_string(out.join("index.json")).unwrap();
    assert!(
        index_json.contains("org.opencontainers.image.ref.name"),
        "{index_json}"
    );
    assert!(index_json.contains("example.com/app:single"));
    let written = std::fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    // 2 manifests + 2 configs + 5 layers + 1 index; the unrelated blob is not exported
    assert_eq!(written, 10);

    let dst = mem_store(&tmp.path().join("b"));
    dst.create_lease("import", None).unwrap();
    let read = layout::read_layout(&dst, &out, Some("import")).unwrap();
    assert_eq!(read, images);
    let mut want = digests(&src);
    want.retain(|d| *d != oci::Digest::of(b"unrelated blob"));
    assert_eq!(digests(&dst), want);
    for d in &want {
        assert_eq!(dst.read_all(d).unwrap(), src.read_all(d).unwrap());
    }
    assert_eq!(dst.lease_blobs("import").unwrap(), want);

    // writing again over the same directory is fine and idempotent
    layout::write_layout(&src, &out, &images).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("index.json")).unwrap(),
        index_json
    );
}

#[test]
fn corrupted_blob_in_layout_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(&tmp.path().join("a"));
    let out = tmp.path().join("layout");
    layout::write_layout(&src, &out, &images[..1]).unwrap();
    // flip one byte of the first layer, keeping its size
    let blobs = layout::image_blobs(&src, &[images[0].descriptor.clone()]).unwrap();
    let layer = blobs
        .iter()
        .find(|d| oci::media::is_layer(d.media_type().as_ref()))
        .unwrap();
    let path = out.join("blobs/sha256").join(layer.digest().digest());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let dst = mem_store(&tmp.path().join("b"));
    let err = layout::read_layout(&dst, &out, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Layout(LayoutError::Import { .. })),
        "{msg}"
    );
    assert!(msg.contains(&out.display().to_string()), "{msg}");
    assert!(msg.contains(&layer.digest().to_string()), "{msg}");
    let bad = layer.digest().to_string().parse::<oci::Digest>().unwrap();
    assert!(!dst.exists(&bad).unwrap());
    assert!(!dst.blob_path(&oci::Digest::of(&bytes)).exists());
}

#[test]
fn missing_blob_and_bad_marker_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(&tmp.path().join("a"));
    let out = tmp.path().join("layout");
    layout::write_layout(&src, &out, &images[..1]).unwrap();
    let manifest = images[0].descriptor.digest().digest().to_string();
    std::fs::remove_file(out.join("blobs/sha256").join(&manifest)).unwrap();
    let dst = mem_store(&tmp.path().join("b"));
    let msg = layout::read_layout(&dst, &out, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&manifest) && msg.contains("layout"), "{msg}");

    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
    let msg = layout::read_layout(&dst, &out, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2.0.0") && msg.contains(&out.display().to_string()),
        "{msg}"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let msg = layout::read_layout(&dst, &empty, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("oci-layout"), "{msg}");
}

#[test]
fn writing_an_image_with_a_missing_layer_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(&tmp.path().join("a"));
    let blobs = layout::image_blobs(&src, &[images[0].descriptor.clone()]).unwrap();
    let layer: oci::Digest = blobs.last().unwrap().digest().to_string().parse().unwrap();
    src.delete(&layer).unwrap();
    let err = layout::write_layout(&src, &tmp.path().join("out"), &images).unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains(&layer.to_string()),
        "{err}"
    );
}

#[test]
fn tar_stream_unpacks_to_a_readable_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, images) = source(&tmp.path().join("a"));
    let bytes = layout::write_layout_tar(&src, &images, Vec::new()).unwrap();
    // deterministic
    assert_eq!(
        layout::write_layout_tar(&src, &images, Vec::new()).unwrap(),
        bytes
    );
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&bytes[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.header().mtime().unwrap(), 0);
        names.push(entry.path().unwrap().display().to_string());
    }
    assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(&names[names.len() - 2..], ["oci-layout", "index.json"]);
    assert_eq!(names.len(), 2 + 10 + 2);

    let out = tmp.path().join("unpacked");
    tar::Archive::new(&bytes[..]).unpack(&out).unwrap();
    let dst = mem_store(&tmp.path().join("b"));
    assert_eq!(layout::read_layout(&dst, &out, None).unwrap(), images);
    assert_eq!(digests(&dst).len(), 10);
}
