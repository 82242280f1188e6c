//! `ADD`'s archive unpacking (attemptUnpackDockerCompatibility).

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;
use fileop::{Owner, copy};
use proto::pb;

/// A tar with a directory, two files (one owned by 1234:5678) and a symlink.
fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_size(0);
    dir.set_mtime(1_400_000_000);
    b.append_data(&mut dir, "pkg/", &[][..]).unwrap();
    for (name, data, uid) in [("pkg/a.txt", "alpha", 0), ("pkg/bin/tool", "tool", 1234)] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_uid(uid);
        h.set_gid(if uid == 0 { 0 } else { 5678 });
        h.set_mtime(1_400_000_000);
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "pkg/link", "a.txt").unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn add(src: &str, dest: &str) -> pb::FileActionCopy {
    pb::FileActionCopy {
        attempt_unpack_docker_compatibility: true,
        ..dockerfile_copy(src, dest)
    }
}

fn assert_unpacked(dir: &Path) {
    assert_eq!(read(&dir.join("pkg/a.txt")), "alpha");
    assert_eq!(read(&dir.join("pkg/bin/tool")), "tool");
    assert_eq!(
        fs::read_link(dir.join("pkg/link")).unwrap().to_str(),
        Some("a.txt")
    );
    assert_eq!(mode(&dir.join("pkg")), 0o750);
}

#[test]
fn archives_are_unpacked_into_dest() {
    if !need_root("archives_are_unpacked_into_dest") {
        return;
    }
    let sb = Sandbox::new();
    let tar = tar_bytes();
    fs::write(sb.src().join("app.tar.gz"), gzip(&tar)).unwrap();
    fs::write(sb.src().join("app.tar"), &tar).unwrap();
    fs::write(
        sb.src().join("app.tzst"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();

    let stats = copy(&sb.src(), &sb.dst(), &add("app.tar.gz", "/opt/gz"), None).unwrap();
    assert_unpacked(&sb.dst().join("opt/gz"));
    assert_eq!(stats.bytes, 9);
    assert_eq!(owner(&sb.dst().join("opt/gz/pkg/bin/tool")), (1234, 5678));
    assert_eq!(mode(&sb.dst().join("opt/gz")), 0o755);

    copy(&sb.src(), &sb.dst(), &add("app.tar", "/opt/plain/"), None).unwrap();
    assert_unpacked(&sb.dst().join("opt/plain"));
    // The name does not matter, only the content.
    copy(&sb.src(), &sb.dst(), &add("app.tzst", "/opt/zst"), None).unwrap();
    assert_unpacked(&sb.dst().join("opt/zst"));
    // Wildcards: every matching archive.
    copy(&sb.src(), &sb.dst(), &add("app.t*", "/opt/all/"), None).unwrap();
    assert_unpacked(&sb.dst().join("opt/all"));
    sb.assert_untouched();
}

#[test]
fn an_owner_goes_to_every_extracted_entry() {
    if !need_root("an_owner_goes_to_every_extracted_entry") {
        return;
    }
    let sb = Sandbox::new();
    fs::write(sb.src().join("app.tar.gz"), gzip(&tar_bytes())).unwrap();
    let a = pb::FileActionCopy {
        timestamp: 1_000_000_000_000_000_000,
        ..add("app.tar.gz", "/srv/app")
    };
    copy(&sb.src(), &sb.dst(), &a, Some(Owner { uid: 42, gid: 43 })).unwrap();
    for p in [
        "srv",
        "srv/app",
        "srv/app/pkg",
        "srv/app/pkg/a.txt",
        "srv/app/pkg/bin/tool",
        "srv/app/pkg/link",
    ] {
        assert_eq!(owner(&sb.dst().join(p)), (42, 43), "{p}");
    }
    // The timestamp goes to the directories made for dest, not to the entries.
    assert_eq!(mtime(&sb.dst().join("srv/app")).0, 1_000_000_000);
    assert_eq!(mtime(&sb.dst().join("srv/app/pkg/a.txt")).0, 1_400_000_000);
}

#[test]
fn other_files_are_copied_as_they_are() {
    let sb = Sandbox::new();
    // Looks like gzip but is not; and plain text named .tar.
    fs::write(sb.src().join("fake.tar.gz"), b"\x1f\x8bnot really gzip").unwrap();
    write(&sb.src().join("notes.tar"), "just text");
    fs::write(sb.src().join("empty.tar"), [0u8; 1024]).unwrap();
    copy(&sb.src(), &sb.dst(), &add("fake.tar.gz", "/d/"), None).unwrap();
    copy(&sb.src(), &sb.dst(), &add("notes.tar", "/d/"), None).unwrap();
    copy(&sb.src(), &sb.dst(), &add("empty.tar", "/d/"), None).unwrap();
    assert_eq!(
        paths(&sb.dst().join("d")),
        ["empty.tar", "fake.tar.gz", "notes.tar"]
    );
    assert_eq!(read(&sb.dst().join("d/notes.tar")), "just text");
    // Without the flag an archive is copied too.
    fs::write(sb.src().join("real.tar"), tar_bytes()).unwrap();
    copy(
        &sb.src(),
        &sb.dst(),
        &dockerfile_copy("real.tar", "/d/"),
        None,
    )
    .unwrap();
    assert!(sb.dst().join("d/real.tar").is_file());
}

#[test]
fn a_hostile_archive_stays_inside_dest() {
    if !need_root("a_hostile_archive_stays_inside_dest") {
        return;
    }
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "escape", sb.outside()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "escape/canary", &b"evil"[..])
        .unwrap();
    fs::write(sb.src().join("evil.tar"), b.into_inner().unwrap()).unwrap();
    let _ = copy(&sb.src(), &sb.dst(), &add("evil.tar", "/x/"), None);
    sb.assert_untouched();
}
