//! Per-ref caching: memoized results, reuse of directory digests, persistence in the
//! metadata store, forgetting.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use contenthash::{ChecksumOptions, ContentHasher, Digest, Error, Stats, checksum};
use metadata::{MemStore, MetadataStore, RedbStore};

const SAMPLE: &[&str] = &[
    "dir a",
    "dir a/b",
    "file a/b/f1 one",
    "file a/b/f2 two",
    "dir a/b/c",
    "file a/b/c/f3 three",
    "file a/f4 four",
    "link a/lb b",
    "dir z",
    "file z/f5 five",
];

fn mem() -> Arc<dyn MetadataStore> {
    Arc::new(MemStore::default())
}

fn sum(h: &ContentHasher, ref_id: &str, root: &Path, path: &str, opts: &ChecksumOptions) -> Digest {
    h.checksum_ref(ref_id, root, path, opts)
        .unwrap_or_else(|e| panic!("checksum_ref({ref_id}, {path:?}): {e}"))
}

/// The filesystem work between two snapshots of the counters.
fn work(before: Stats, after: Stats) -> (u64, u64, u64) {
    (
        after.files_hashed - before.files_hashed,
        after.dirs_listed - before.dirs_listed,
        after.entries_stat - before.entries_stat,
    )
}

#[test]
fn a_repeated_checksum_reads_nothing() {
    let d = tree(SAMPLE);
    let h = ContentHasher::new(mem());
    let first = sum(&h, "ref1", d.path(), "a", &plain());
    assert_eq!(first, checksum(d.path(), "a", &plain()).unwrap());
    let before = h.stats();
    assert!(before.files_hashed >= 4);
    assert_eq!(sum(&h, "ref1", d.path(), "a", &plain()), first);
    let after = h.stats();
    assert_eq!(work(before, after), (0, 0, 0));
    assert_eq!(after.results_reused, before.results_reused + 1);
    // Not even the root is opened: it may be gone.
    let root = d.path().to_path_buf();
    drop(d);
    assert!(!root.exists());
    assert_eq!(sum(&h, "ref1", &root, "a", &plain()), first);
}

#[test]
fn paths_below_a_hashed_directory_cost_no_hashing() {
    let d = tree(SAMPLE);
    let r = d.path();
    let h = ContentHasher::new(mem());
    sum(&h, "ref1", r, "/", &plain());
    let before = h.stats();
    let cases: &[(&str, ChecksumOptions)] = &[
        ("a/b", plain()),
        ("/a/b/c", plain()),
        ("a/b/f1", plain()),
        ("a/lb/c/f3", plain()),
        ("a/lb", follow()),
        ("a/b/*", wildcard()),
        ("a", exclude(&["*.md"])),
        (
            "missing",
            ChecksumOptions {
                allow_missing: true,
                ..plain()
            },
        ),
    ];
    for (p, opts) in cases {
        let got = sum(&h, "ref1", r, p, opts);
        assert_eq!(got, checksum(r, p, opts).unwrap(), "{p}");
    }
    assert_eq!(work(before, h.stats()), (0, 0, 0));
    let err = h
        .checksum_ref("ref1", r, "a/missing", &plain())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(
        work(before, h.stats()),
        (0, 0, 0),
        "listed directories answer"
    );
}

#[test]
fn a_hashed_subdirectory_is_reused_by_its_parent() {
    let d = tree(SAMPLE);
    let r = d.path();
    let h = ContentHasher::new(mem());
    sum(&h, "ref1", r, "a/b", &plain());
    let before = h.stats();
    assert_eq!(before.files_hashed, 3);
    // Hashing the whole tree reads only what is outside a/b.
    let all = sum(&h, "ref1", r, "/", &plain());
    assert_eq!(all, checksum(r, "/", &plain()).unwrap());
    assert_eq!(
        h.stats().files_hashed - before.files_hashed,
        2,
        "a/f4 and z/f5"
    );
    // Another ref is another snapshot: nothing is shared.
    sum(&h, "ref2", r, "a/b", &plain());
    assert_eq!(h.stats().files_hashed, 5 + 3);
}

#[test]
fn records_survive_a_restart() {
    let d = tree(SAMPLE);
    let r = d.path();
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("metadata.redb");
    let (all, sub) = {
        let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&path, &[]).unwrap());
        let h = ContentHasher::new(md);
        (
            sum(&h, "ref1", r, "/", &plain()),
            checksum(r, "a/lb/c", &follow()).unwrap(),
        )
    };
    // The files are gone: everything must come from the store.
    let root = r.to_path_buf();
    drop(d);
    let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&path, &[]).unwrap());
    let h = ContentHasher::new(md);
    assert_eq!(sum(&h, "ref1", &root, "/", &plain()), all);
    assert_eq!(
        sum(&h, "ref1", &root, "a/lb/c", &follow()),
        sub,
        "from records"
    );
    let s = h.stats();
    assert_eq!((s.files_hashed, s.dirs_listed, s.entries_stat), (0, 0, 0));
    assert_eq!(s.results_reused, 1);
    // A ref never hashed needs its files.
    let err = h.checksum_ref("ref2", &root, "/", &plain()).unwrap_err();
    assert!(matches!(err, Error::Root { .. }), "{err}");
}

#[test]
fn forget_drops_a_refs_records() {
    let d = tree(SAMPLE);
    let r = d.path();
    let md = mem();
    let h = ContentHasher::new(md.clone());
    let a1 = sum(&h, "ref1", r, "a", &plain());
    sum(&h, "ref10", r, "a", &plain());
    let rows = |ref_id: &str| {
        let mut k = ref_id.as_bytes().to_vec();
        k.push(0);
        md.scan("contenthash.records", &k).unwrap().len()
            + md.scan("contenthash.results", &k).unwrap().len()
    };
    assert!(rows("ref1") > 0);
    h.forget("ref1").unwrap();
    assert_eq!(rows("ref1"), 0);
    assert!(rows("ref10") > 0, "another ref sharing a prefix is kept");
    // The next checksum of ref1 reads the files again.
    std::fs::write(r.join("a/f4"), "changed").unwrap();
    let before = h.stats();
    let a2 = sum(&h, "ref1", r, "a", &plain());
    assert_ne!(a1, a2);
    assert!(h.stats().files_hashed > before.files_hashed);
    h.forget("never-seen").unwrap();
}

#[test]
fn options_are_part_of_the_key() {
    let d = tree(SAMPLE);
    let r = d.path();
    let h = ContentHasher::new(mem());
    let link = sum(&h, "ref1", r, "a/lb", &plain());
    let target = sum(&h, "ref1", r, "a/lb", &follow());
    assert_ne!(link, target);
    assert_eq!(target, sum(&h, "ref1", r, "a/b", &plain()));
    assert_ne!(
        sum(&h, "ref1", r, "a", &exclude(&["b"])),
        sum(&h, "ref1", r, "a", &exclude(&["f4"]))
    );
}

#[test]
fn concurrent_checksums_agree() {
    let d = tree(SAMPLE);
    let r = d.path().to_path_buf();
    let h = Arc::new(ContentHasher::new(mem()));
    let paths = ["/", "a", "a/b", "a/lb/c", "z", "a/b/f1"];
    let want: Vec<Digest> = paths
        .iter()
        .map(|p| checksum(&r, p, &plain()).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (h, r, want) = (h.clone(), r.clone(), want.clone());
            s.spawn(move || {
                for i in 0..paths.len() {
                    let i = (i + t) % paths.len();
                    let ref_id = format!("ref{}", t % 2);
                    assert_eq!(sum(&h, &ref_id, &r, paths[i], &plain()), want[i]);
                }
            });
        }
    });
    // Each file of each of the two refs was read at most once.
    assert!(h.stats().files_hashed <= 2 * 5, "{:?}", h.stats());
}

/// Builds a random tree from `entries` (path components from a small pool; kind 0 a
/// file, 1 a directory, 2 a symlink), skipping entries whose parent is not a directory.
fn random_tree(entries: &[(Vec<usize>, u8, usize)]) -> tempfile::TempDir {
    const NAMES: [&str; 3] = ["a", "b", "c.txt"];
    const TARGETS: [&str; 5] = ["a", "../b", "/a/b", "c.txt/x", "/"];
    let d = tempfile::tempdir().unwrap();
    for (path, kind, x) in entries {
        let rel: Vec<&str> = path.iter().map(|&i| NAMES[i]).collect();
        let p = d.path().join(rel.join("/"));
        if std::fs::symlink_metadata(&p).is_ok() || !p.parent().is_some_and(|q| q.is_dir()) {
            continue;
        }
        match kind {
            0 => std::fs::write(&p, format!("{x}")).unwrap(),
            1 => std::fs::create_dir(&p).unwrap(),
            _ => std::os::unix::fs::symlink(TARGETS[x % TARGETS.len()], &p).unwrap(),
        }
    }
    d
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the order of requests, reusing a ref's records gives the digests (and
    /// errors) of hashing from scratch.
    #[test]
    fn cached_equals_uncached(
        entries in proptest::collection::vec(
            (proptest::collection::vec(0..3usize, 1..4), 0..3u8, 0..10usize), 0..24),
        queries in proptest::collection::vec((0..10usize, 0..5usize), 1..12),
    ) {
        const PATHS: [&str; 10] =
            ["/", "a", "a/b", "b/a/c.txt", "c.txt", "a/*", "*/b", "b/", "a/a/a", "missing"];
        let d = random_tree(&entries);
        let r = d.path();
        let h = ContentHasher::new(mem());
        for (p, o) in queries {
            let opts = match o {
                0 => plain(),
                1 => follow(),
                2 => ChecksumOptions { wildcard: true, follow_links: true, ..plain() },
                3 => exclude(&["**/*.txt"]),
                _ => include(&["a", "**/b"]),
            };
            let path = PATHS[p];
            let cached = h.checksum_ref("r", r, path, &opts).map_err(|e| e.to_string());
            let fresh = checksum(r, path, &opts).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(cached, fresh, "{} {:?}", path, opts);
        }
    }
}

/// Runs `f`, printing how long it took.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    let took = start.elapsed();
    println!("{what:<48} {:>10.3} ms", took.as_secs_f64() * 1e3);
    (v, took)
}

/// A micro-benchmark: 20,000 small files, hashed cold and then from the caches. Run with
/// `cargo test --release -p contenthash --test cache -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn twenty_thousand_files() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for i in 0..100 {
        let dir = r.join(format!("dir{i:03}"));
        std::fs::create_dir(&dir).unwrap();
        for j in 0..200 {
            std::fs::write(
                dir.join(format!("file{j:03}.txt")),
                format!("content {i} {j}\n"),
            )
            .unwrap();
        }
    }
    let db = tempfile::tempdir().unwrap();
    let db_path = db.path().join("metadata.redb");
    let opts = ChecksumOptions::default();

    let (plain, _) = timed("checksum(/), no cache", || checksum(r, "/", &opts).unwrap());
    let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&db_path, &[]).unwrap());
    let h = ContentHasher::new(md);
    let (cold, cold_t) = timed("checksum_ref(/), cold (incl. writing records)", || {
        h.checksum_ref("bench", r, "/", &opts).unwrap()
    });
    assert_eq!(cold, plain);
    assert_eq!(h.stats().files_hashed, 20_000);
    let (again, hot_t) = timed("checksum_ref(/), same request again", || {
        h.checksum_ref("bench", r, "/", &opts).unwrap()
    });
    assert_eq!(again, cold);
    let (sub, sub_t) = timed("checksum_ref(/dir042), reusing the tree", || {
        h.checksum_ref("bench", r, "/dir042", &opts).unwrap()
    });
    assert_eq!(sub, checksum(r, "/dir042", &opts).unwrap());
    let wild = ChecksumOptions {
        wildcard: true,
        ..Default::default()
    };
    let (w, _) = timed("checksum_ref(/dir0*/file1*.txt), reusing the tree", || {
        h.checksum_ref("bench", r, "/dir0*/file1*.txt", &wild)
            .unwrap()
    });
    assert_eq!(w, checksum(r, "/dir0*/file1*.txt", &wild).unwrap());
    assert_eq!(h.stats().files_hashed, 20_000, "nothing read twice");
    drop(h);

    let md: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(&db_path, &[]).unwrap());
    let h = ContentHasher::new(md);
    let (stored, _) = timed("after restart: checksum_ref(/) (stored result)", || {
        h.checksum_ref("bench", r, "/", &opts).unwrap()
    });
    assert_eq!(stored, cold);
    let (sub2, restart_sub_t) = timed("after restart: checksum_ref(/dir007) (records)", || {
        h.checksum_ref("bench", r, "/dir007", &opts).unwrap()
    });
    assert_eq!(sub2, checksum(r, "/dir007", &opts).unwrap());
    assert_eq!(h.stats().files_hashed, 0);
    assert!(hot_t < cold_t && sub_t < cold_t && restart_sub_t < cold_t);
}
