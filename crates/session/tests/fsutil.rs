//! The fsutil protocol end to end over in-memory packet streams: walk order and
//! filters, incremental transfers, and a receiver facing a malicious sender.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use proto::fsutil_types::packet::PacketType;
use proto::fsutil_types::{Packet, Stat};
use session::fsutil::mode::{MODE_DIR, MODE_SYMLINK};
use session::fsutil::{self, Error, FilterOptions, PacketConn, ReceiveOptions, Stats};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn conn(
    rx: mpsc::Receiver<Result<Packet, tonic::Status>>,
    tx: mpsc::Sender<Result<Packet, tonic::Status>>,
) -> PacketConn {
    PacketConn::new(ReceiverStream::new(rx).map(|p| p.map_err(Error::from)), tx)
}

/// Runs a sender on `src` against a receiver into `dest`; returns the receiver's stats
/// and the DATA payload bytes seen on the wire.
async fn transfer(src: &Path, dest: &Path, filter: FilterOptions) -> (Stats, u64) {
    let (to_recv_tx, to_recv_rx) = mpsc::channel(16);
    let (to_send_tx, to_send_rx) = mpsc::channel(16);
    let wire_bytes = Arc::new(AtomicU64::new(0));
    let counted = wire_bytes.clone();
    let inbound = ReceiverStream::new(to_recv_rx).map(move |p: Result<Packet, tonic::Status>| {
        if let Ok(p) = &p {
            if p.r#type == PacketType::PacketData as i32 {
                counted.fetch_add(p.data.len() as u64, Ordering::Relaxed);
            }
        }
        p.map_err(Error::from)
    });
    let receiver = PacketConn::new(inbound, to_send_tx);
    let mut sender = conn(to_send_rx, to_recv_tx);
    let src = src.to_path_buf();
    let send = tokio::spawn(async move { fsutil::send(&mut sender, &src, &filter).await });
    let stats = fsutil::receive(receiver, dest, ReceiveOptions::default())
        .await
        .expect("receive");
    send.await.unwrap().expect("send");
    (stats, wire_bytes.load(Ordering::Relaxed))
}

/// The paths a sender sends for `src` with `filter`, in order.
async fn sent_paths(src: &Path, filter: FilterOptions) -> Vec<String> {
    let (to_recv_tx, mut to_recv_rx) = mpsc::channel(16);
    let (to_send_tx, to_send_rx) = mpsc::channel(16);
    let mut sender = conn(to_send_rx, to_recv_tx);
    let src = src.to_path_buf();
    let send = tokio::spawn(async move { fsutil::send(&mut sender, &src, &filter).await });
    let mut paths = Vec::new();
    while let Some(Ok(p)) = to_recv_rx.recv().await {
        match p.stat {
            Some(stat) => paths.push(stat.path),
            None => break,
        }
    }
    to_send_tx
        .send(Ok(Packet {
            r#type: PacketType::PacketFin as i32,
            ..Packet::default()
        }))
        .await
        .unwrap();
    send.await.unwrap().expect("send");
    paths
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "a/b.txt", "ab");
    write(r, "a.txt", "a");
    write(r, "b/c/d.go", "package d");
    write(r, "b/e.md", "# e");
    write(r, ".git/config", "[core]");
    symlink("a.txt", r.join("link")).unwrap();
    dir
}

fn filter(include: &[&str], exclude: &[&str]) -> FilterOptions {
    FilterOptions {
        include_patterns: include.iter().map(|s| s.to_string()).collect(),
        exclude_patterns: exclude.iter().map(|s| s.to_string()).collect(),
        follow_paths: Vec::new(),
    }
}

#[tokio::test]
async fn walk_order_is_fsutil_order() {
    let src = tree();
    let paths = sent_paths(src.path(), FilterOptions::default()).await;
    assert_eq!(
        paths,
        [
            ".git",
            ".git/config",
            "a",
            "a/b.txt",
            "a.txt",
            "b",
            "b/c",
            "b/c/d.go",
            "b/e.md",
            "link"
        ]
    );
}

#[tokio::test]
async fn include_and_exclude_patterns() {
    let src = tree();
    let p = src.path();
    assert_eq!(
        sent_paths(p, filter(&[], &[".git", "*.md", "**/*.md"])).await,
        ["a", "a/b.txt", "a.txt", "b", "b/c", "b/c/d.go", "link"]
    );
    // Parents of an included path are sent, just before it.
    assert_eq!(
        sent_paths(p, filter(&["b/c"], &[])).await,
        ["b", "b/c", "b/c/d.go"]
    );
    assert_eq!(
        sent_paths(p, filter(&["**/*.go"], &[])).await,
        ["b", "b/c", "b/c/d.go"]
    );
    // An exception re-includes one file of an excluded directory.
    assert_eq!(
        sent_paths(p, filter(&[], &["b", "!b/e.md", ".git", "a*"])).await,
        ["b", "b/e.md", "link"]
    );
}

#[tokio::test]
async fn follow_paths_add_symlink_targets() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "sub/target.txt", "t");
    write(r, "other.txt", "o");
    symlink("sub/target.txt", r.join("link")).unwrap();
    let f = FilterOptions {
        include_patterns: vec!["link".into()],
        exclude_patterns: Vec::new(),
        follow_paths: vec!["link".into()],
    };
    assert_eq!(sent_paths(r, f).await, ["link", "sub", "sub/target.txt"]);
}

#[tokio::test]
async fn second_sync_transfers_only_changes() {
    let src = tree();
    let s = src.path();
    std::fs::set_permissions(s.join("a.txt"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::hard_link(s.join("a/b.txt"), s.join("hard")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        s.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o640),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(s.join("sock")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().join("copy");

    let (stats, wire) = transfer(s, &d, FilterOptions::default()).await;
    let total = "ab".len() + "a".len() + "package d".len() + "# e".len() + "[core]".len();
    assert_eq!(wire, total as u64);
    assert_eq!(stats.bytes_received, total as u64);
    // The socket travels as an empty regular file, as upstream sends it.
    assert_eq!(stats.files_requested, 6);
    assert_eq!(
        std::fs::read_to_string(d.join("b/c/d.go")).unwrap(),
        "package d"
    );
    assert_eq!(
        std::fs::read_link(d.join("link")).unwrap(),
        Path::new("a.txt")
    );
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    assert_eq!(meta(&d.join("a.txt")).mode() & 0o7777, 0o4750);
    assert_eq!(meta(&d.join("hard")).ino(), meta(&d.join("a/b.txt")).ino());
    assert!(meta(&d.join("fifo")).file_type().is_fifo());
    assert_eq!(meta(&d.join("fifo")).mode() & 0o777, 0o640);
    assert!(meta(&d.join("sock")).is_file());
    assert_eq!(meta(&d.join("sock")).len(), 0);
    for rel in ["a", "a.txt", "b/c", "b/c/d.go", "link"] {
        assert_eq!(
            meta(&s.join(rel)).mtime_nsec(),
            meta(&d.join(rel)).mtime_nsec(),
            "{rel}"
        );
        assert_eq!(
            meta(&s.join(rel)).mtime(),
            meta(&d.join(rel)).mtime(),
            "{rel}"
        );
    }

    // Nothing changed: no file is requested, no byte moves.
    let (stats, wire) = transfer(s, &d, FilterOptions::default()).await;
    assert_eq!(
        (wire, stats.bytes_received, stats.files_requested),
        (0, 0, 0)
    );
    assert_eq!(stats.entries, 13);

    // One file changes, one goes away, one appears.
    write(s, "b/c/d.go", "package dd");
    std::fs::remove_file(s.join("b/e.md")).unwrap();
    write(s, "new.txt", "new!");
    let (stats, wire) = transfer(s, &d, FilterOptions::default()).await;
    assert_eq!(wire, ("package dd".len() + "new!".len()) as u64);
    assert_eq!((stats.files_requested, stats.deleted), (2, 1));
    assert_eq!(
        std::fs::read_to_string(d.join("b/c/d.go")).unwrap(),
        "package dd"
    );
    assert!(!d.join("b/e.md").exists());
    assert_eq!(std::fs::read_to_string(d.join("new.txt")).unwrap(), "new!");

    // A directory replaced by a file, and a filter that drops a subtree.
    std::fs::remove_dir_all(s.join("a")).unwrap();
    std::fs::remove_file(s.join("hard")).unwrap();
    write(s, "a", "now a file");
    let (stats, _) = transfer(s, &d, filter(&[], &["b"])).await;
    assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "now a file");
    assert!(!d.join("b").exists());
    assert!(!d.join("hard").exists());
    assert_eq!(stats.files_requested, 1);
}

/// Runs a receiver into `dest` against a scripted sender; returns its result and the
/// packets it sent.
async fn receive_script(dest: &Path, script: Vec<Packet>) -> (Result<Stats, Error>, Vec<Packet>) {
    let (tx, mut rx) = mpsc::channel(64);
    let inbound =
        futures::stream::iter(script.into_iter().map(Ok)).chain(futures::stream::pending());
    let conn = PacketConn::new(inbound, tx);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        fsutil::receive(conn, dest, ReceiveOptions::default()),
    )
    .await
    .expect("receiver must not hang on a bad sender");
    let mut sent = Vec::new();
    while let Ok(Some(Ok(p))) =
        tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
    {
        sent.push(p);
    }
    (result, sent)
}

fn stat(path: &str, mode: u32, linkname: &str) -> Packet {
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: path.into(),
            mode,
            linkname: linkname.into(),
            mod_time: 1_600_000_000_000_000_000,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            ..Stat::default()
        }),
        ..Packet::default()
    }
}

fn data(id: u32, bytes: &[u8]) -> Packet {
    Packet {
        r#type: PacketType::PacketData as i32,
        id,
        data: bytes.to_vec(),
        ..Packet::default()
    }
}

/// A base with `dest/` and `outside/`; after the test `outside` must still be empty
/// and nothing else may appear next to them.
struct Jail {
    base: tempfile::TempDir,
}

impl Jail {
    fn new() -> Jail {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("dest")).unwrap();
        std::fs::create_dir(base.path().join("outside")).unwrap();
        Jail { base }
    }
    fn dest(&self) -> std::path::PathBuf {
        self.base.path().join("dest")
    }
    fn outside(&self) -> String {
        self.base
            .path()
            .join("outside")
            .to_str()
            .unwrap()
            .to_string()
    }
    fn assert_untouched(&self) {
        let outside: Vec<_> = std::fs::read_dir(self.base.path().join("outside"))
            .unwrap()
            .collect();
        assert!(outside.is_empty(), "wrote outside: {outside:?}");
        let mut names: Vec<_> = std::fs::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "outside"]);
    }
}

#[tokio::test]
async fn rejects_parent_and_absolute_paths() {
    for path in ["../x", "a/../../x", "/x", "./x", "a//x"] {
        let jail = Jail::new();
        let (result, sent) =
            receive_script(&jail.dest(), vec![stat(path, 0o644, ""), data(0, b"pwned")]).await;
        assert!(
            matches!(result, Err(Error::InvalidPath { .. })),
            "{path}: {result:?}"
        );
        assert!(
            sent.iter()
                .all(|p| p.r#type != PacketType::PacketReq as i32)
        );
        assert!(
            sent.iter()
                .any(|p| p.r#type == PacketType::PacketErr as i32),
            "{path}: ERR sent"
        );
        jail.assert_untouched();
    }
    let jail = Jail::new();
    let abs = format!("{}/x", jail.outside());
    let (result, _) = receive_script(&jail.dest(), vec![stat(&abs, 0o644, "")]).await;
    assert!(matches!(result, Err(Error::InvalidPath { .. })));
    jail.assert_untouched();
}

#[tokio::test]
async fn rejects_writing_through_a_symlink() {
    let jail = Jail::new();
    let script = vec![
        stat("l", MODE_SYMLINK | 0o777, &jail.outside()),
        stat("l/f", 0o644, ""),
        data(1, b"pwned"),
    ];
    let (result, _) = receive_script(&jail.dest(), script).await;
    assert!(
        matches!(result, Err(Error::OutOfOrder { .. })),
        "{result:?}"
    );
    jail.assert_untouched();

    // A symlink left in the destination by an earlier copy is replaced, not followed.
    let jail = Jail::new();
    symlink(jail.outside(), jail.dest().join("d")).unwrap();
    let script = vec![
        stat("d", MODE_DIR | 0o755, ""),
        stat("d/f", 0o644, ""),
        Packet {
            r#type: PacketType::PacketStat as i32,
            ..Packet::default()
        },
        data(1, b"inside"),
        data(1, b""),
        Packet {
            r#type: PacketType::PacketFin as i32,
            ..Packet::default()
        },
    ];
    let (tx, _rx) = mpsc::channel(64);
    let inbound = futures::stream::iter(script.into_iter().map(Ok));
    let stats = fsutil::receive(
        PacketConn::new(inbound, tx),
        &jail.dest(),
        ReceiveOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(stats.bytes_received, 6);
    assert!(
        std::fs::symlink_metadata(jail.dest().join("d"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(std::fs::read(jail.dest().join("d/f")).unwrap(), b"inside");
    jail.assert_untouched();
}

#[tokio::test]
async fn rejects_bad_links_and_ids() {
    let jail = Jail::new();
    let (result, _) = receive_script(
        &jail.dest(),
        vec![stat("h", 0o644, &format!("{}/x", jail.outside()))],
    )
    .await;
    assert!(
        matches!(result, Err(Error::InvalidLink { .. })),
        "{result:?}"
    );

    let script = vec![
        stat("l", MODE_SYMLINK | 0o777, "/etc/passwd"),
        stat("m", 0o644, "l"),
    ];
    let (result, _) = receive_script(&jail.dest(), script).await;
    assert!(
        matches!(result, Err(Error::InvalidLink { .. })),
        "{result:?}"
    );

    // DATA for a directory's id, and for an id never sent.
    for id in [0, 7] {
        let jail = Jail::new();
        let (result, _) = receive_script(
            &jail.dest(),
            vec![stat("d", MODE_DIR | 0o755, ""), data(id, b"x")],
        )
        .await;
        assert!(
            matches!(result, Err(Error::UnknownId(i)) if i == id),
            "{result:?}"
        );
        jail.assert_untouched();
    }

    // An error from the sender ends the transfer with its message.
    let jail = Jail::new();
    let err = Packet {
        r#type: PacketType::PacketErr as i32,
        data: b"disk on fire".to_vec(),
        ..Packet::default()
    };
    let (result, _) = receive_script(&jail.dest(), vec![err]).await;
    assert!(
        matches!(&result, Err(Error::Peer(m)) if m == "disk on fire"),
        "{result:?}"
    );
}
