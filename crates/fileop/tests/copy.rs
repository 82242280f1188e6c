//! The copy action against real directories: destination rules, wildcards, symlinks,
//! include/exclude patterns, replacement of existing paths, errors.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use fileop::{CopyStats, copy};
use proto::pb;

fn run(sb: &Sandbox, a: &pb::FileActionCopy) -> CopyStats {
    copy(&sb.src(), &sb.dst(), a, None).unwrap_or_else(|e| panic!("{a:?}: {e}"))
}

fn fails(sb: &Sandbox, a: &pb::FileActionCopy) -> String {
    match copy(&sb.src(), &sb.dst(), a, None) {
        Ok(_) => panic!("{a:?} succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_file_lands_at_dest_or_inside_an_existing_directory() {
    let sb = Sandbox::new();
    write(&sb.src().join("a.txt"), "A");
    fs::create_dir(sb.dst().join("dir")).unwrap();
    let stats = run(&sb, &copy_action("a.txt", "/b"));
    assert_eq!((stats.files, stats.bytes), (1, 1));
    assert_eq!(read(&sb.dst().join("b")), "A");
    run(&sb, &copy_action("/a.txt", "dir"));
    assert_eq!(read(&sb.dst().join("dir/a.txt")), "A");
    // Copying again overwrites the file.
    write(&sb.src().join("a.txt"), "AA");
    run(&sb, &copy_action("a.txt", "b"));
    assert_eq!(read(&sb.dst().join("b")), "AA");
    assert_eq!(paths(&sb.dst()), ["b", "dir/", "dir/a.txt"]);
    sb.assert_untouched();
}

#[test]
fn a_trailing_slash_makes_dest_a_directory() {
    let sb = Sandbox::new();
    write(&sb.src().join("a.txt"), "A");
    run(&sb, &copy_action("a.txt", "/top/"));
    assert_eq!(read(&sb.dst().join("top/a.txt")), "A");
    // Deeper, the parent of dest must exist unless createDestPath.
    let err = fails(&sb, &copy_action("a.txt", "/new/dir/"));
    assert!(err.contains("/new/dir"), "{err}");
    run(
        &sb,
        &pb::FileActionCopy {
            create_dest_path: true,
            ..copy_action("a.txt", "/new/dir/")
        },
    );
    assert_eq!(read(&sb.dst().join("new/dir/a.txt")), "A");
    assert_eq!(mode(&sb.dst().join("new")), 0o755);
    assert_eq!(mode(&sb.dst().join("new/dir")), 0o755);
    // Without the slash the last component is the file's name.
    run(
        &sb,
        &pb::FileActionCopy {
            create_dest_path: true,
            ..copy_action("a.txt", "/other/name")
        },
    );
    assert!(sb.dst().join("other/name").is_file());
    run(&sb, &copy_action("a.txt", "/dot/."));
    assert!(sb.dst().join("dot/a.txt").is_file());
}

#[test]
fn directories_copy_themselves_or_their_contents() {
    let sb = Sandbox::new();
    write(&sb.src().join("dir/f"), "f");
    write(&sb.src().join("dir/sub/g"), "g");
    fs::create_dir(sb.dst().join("existing")).unwrap();

    let contents = pb::FileActionCopy {
        dir_copy_contents: true,
        ..copy_action("dir", "/contents")
    };
    run(&sb, &contents);
    assert_eq!(paths(&sb.dst().join("contents")), ["f", "sub/", "sub/g"]);

    let merged = pb::FileActionCopy {
        dir_copy_contents: true,
        ..copy_action("dir", "/existing")
    };
    run(&sb, &merged);
    assert_eq!(paths(&sb.dst().join("existing")), ["f", "sub/", "sub/g"]);

    // Without dirCopyContents the directory itself goes into an existing directory...
    fs::create_dir(sb.dst().join("into")).unwrap();
    run(&sb, &copy_action("dir", "/into"));
    assert_eq!(
        paths(&sb.dst().join("into")),
        ["dir/", "dir/f", "dir/sub/", "dir/sub/g"]
    );
    // ...or becomes dest when it does not exist.
    run(&sb, &copy_action("dir", "/renamed"));
    assert_eq!(paths(&sb.dst().join("renamed")), ["f", "sub/", "sub/g"]);
    // `dir/.` is the contents, whatever dirCopyContents says.
    fs::create_dir(sb.dst().join("dot")).unwrap();
    run(&sb, &copy_action("dir/.", "/dot"));
    assert_eq!(paths(&sb.dst().join("dot")), ["f", "sub/", "sub/g"]);
    // The whole source root into the destination root.
    run(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            ..copy_action("/", "/")
        },
    );
    assert!(sb.dst().join("dir/sub/g").is_file());
    sb.assert_untouched();
}

#[test]
fn create_dest_path_controls_missing_parents() {
    let sb = Sandbox::new();
    write(&sb.src().join("a"), "A");
    let err = fails(&sb, &copy_action("a", "/x/y/z"));
    assert!(err.contains("/x/y/z"), "{err}");
    assert!(!sb.dst().join("x").exists());
    run(
        &sb,
        &pb::FileActionCopy {
            create_dest_path: true,
            ..copy_action("a", "/x/y/z")
        },
    );
    assert_eq!(read(&sb.dst().join("x/y/z")), "A");
    assert_eq!(mode(&sb.dst().join("x/y")), 0o755);
}

#[test]
fn wildcards_match_per_component() {
    let sb = Sandbox::new();
    for f in [
        "a.txt",
        "b.txt",
        "c.md",
        "dir/d.txt",
        "dir/e.md",
        "dir/sub/f.txt",
    ] {
        write(&sb.src().join(f), f);
    }
    let wild = |src: &str, dest: &str| pb::FileActionCopy {
        allow_wildcard: true,
        create_dest_path: true,
        ..copy_action(src, dest)
    };
    let stats = run(&sb, &wild("*.txt", "/txt/"));
    assert_eq!(paths(&sb.dst().join("txt")), ["a.txt", "b.txt"]);
    assert_eq!(stats.files, 2);
    run(&sb, &wild("dir/*", "/all/"));
    assert_eq!(
        paths(&sb.dst().join("all")),
        ["d.txt", "e.md", "sub/", "sub/f.txt"]
    );
    run(&sb, &wild("d?r/*.md", "/md/"));
    assert_eq!(paths(&sb.dst().join("md")), ["e.md"]);
    run(&sb, &wild("[ab].txt", "/class/"));
    assert_eq!(paths(&sb.dst().join("class")), ["a.txt", "b.txt"]);

    let err = fails(&sb, &wild("*.rs", "/none/"));
    assert!(err.contains("/*.rs"), "{err}");
    assert!(!sb.dst().join("none").exists());
    let stats = run(
        &sb,
        &pb::FileActionCopy {
            allow_empty_wildcard: true,
            ..wild("*.rs", "/none/")
        },
    );
    assert_eq!(stats, CopyStats::default());
    // Without allowWildcard the name is literal.
    let err = fails(&sb, &copy_action("*.txt", "/lit"));
    assert!(
        err.contains("/*.txt") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn symlinks_are_copied_verbatim_or_followed() {
    let sb = Sandbox::new();
    write(&sb.src().join("real/file"), "content");
    symlink("real/file", sb.src().join("link")).unwrap();
    symlink("/absolute/target", sb.src().join("real/abs")).unwrap();
    symlink("../nowhere", sb.src().join("real/dangling")).unwrap();

    run(&sb, &copy_action("link", "/as-link"));
    assert_eq!(
        fs::read_link(sb.dst().join("as-link")).unwrap().to_str(),
        Some("real/file")
    );
    run(
        &sb,
        &pb::FileActionCopy {
            follow_symlink: true,
            ..copy_action("link", "/followed")
        },
    );
    assert!(
        fs::symlink_metadata(sb.dst().join("followed"))
            .unwrap()
            .is_file()
    );
    assert_eq!(read(&sb.dst().join("followed")), "content");
    // Into a directory, a followed link keeps its own name.
    fs::create_dir(sb.dst().join("d")).unwrap();
    run(
        &sb,
        &pb::FileActionCopy {
            follow_symlink: true,
            ..copy_action("link", "/d")
        },
    );
    assert_eq!(read(&sb.dst().join("d/link")), "content");

    run(&sb, &copy_action("real", "/tree"));
    assert_eq!(
        fs::read_link(sb.dst().join("tree/abs")).unwrap().to_str(),
        Some("/absolute/target")
    );
    assert_eq!(
        fs::read_link(sb.dst().join("tree/dangling"))
            .unwrap()
            .to_str(),
        Some("../nowhere")
    );
    sb.assert_untouched();
}

fn pattern_tree(sb: &Sandbox) {
    for f in [
        "a.txt",
        "b.md",
        "docs/x.md",
        "docs/y.txt",
        "node_modules/p/q.js",
        "keep/z",
        "a/b/c",
        "a/d/e",
    ] {
        write(&sb.src().join("ctx").join(f), f);
    }
}

#[test]
fn exclude_patterns_skip_entries_relative_to_the_source() {
    let sb = Sandbox::new();
    pattern_tree(&sb);
    run(
        &sb,
        &pb::FileActionCopy {
            exclude_patterns: vec!["*.md".into(), "node_modules".into(), "a/b".into()],
            ..copy_action("ctx", "/out")
        },
    );
    assert_eq!(
        paths(&sb.dst().join("out")),
        [
            "a.txt",
            "a/",
            "a/d/",
            "a/d/e",
            "docs/",
            "docs/x.md",
            "docs/y.txt",
            "keep/",
            "keep/z"
        ]
    );
    // An exception brings one file back out of an excluded directory.
    run(
        &sb,
        &pb::FileActionCopy {
            exclude_patterns: vec!["docs".into(), "!docs/y.txt".into()],
            ..copy_action("ctx/docs", "/none")
        },
    );
    run(
        &sb,
        &pb::FileActionCopy {
            exclude_patterns: vec!["docs".into(), "!docs/y.txt".into()],
            ..copy_action("ctx", "/exc")
        },
    );
    let got = paths(&sb.dst().join("exc"));
    assert!(got.contains(&"docs/y.txt".to_string()), "{got:?}");
    assert!(!got.contains(&"docs/x.md".to_string()), "{got:?}");
    let err = fails(
        &sb,
        &pb::FileActionCopy {
            exclude_patterns: vec!["[".into()],
            ..copy_action("ctx", "/bad")
        },
    );
    assert!(err.contains("exclude") && err.contains("\"[\""), "{err}");
}

#[test]
fn include_patterns_select_entries_and_create_their_parents() {
    let sb = Sandbox::new();
    pattern_tree(&sb);
    set_mtime(&sb.src().join("ctx/a/b"), 1_234_567_890);
    run(
        &sb,
        &pb::FileActionCopy {
            include_patterns: vec!["docs".into(), "*.txt".into(), "a/*/c".into()],
            ..copy_action("ctx", "/out")
        },
    );
    assert_eq!(
        paths(&sb.dst().join("out")),
        [
            "a.txt",
            "a/",
            "a/b/",
            "a/b/c",
            "docs/",
            "docs/x.md",
            "docs/y.txt"
        ]
    );
    // A directory created only for what is below it still gets the source's metadata.
    assert_eq!(mtime(&sb.dst().join("out/a/b")).0, 1_234_567_890);
    // Include and exclude together: excluded wins.
    run(
        &sb,
        &pb::FileActionCopy {
            include_patterns: vec!["docs".into()],
            exclude_patterns: vec!["**/*.md".into()],
            ..copy_action("ctx", "/both")
        },
    );
    assert_eq!(paths(&sb.dst().join("both")), ["docs/", "docs/y.txt"]);
}

#[test]
fn existing_destinations_of_another_type_are_replaced_only_when_asked() {
    let sb = Sandbox::new();
    write(&sb.src().join("f"), "file");
    write(&sb.src().join("d/inner"), "inner");
    fs::create_dir_all(sb.dst().join("out/f/below")).unwrap();
    write(&sb.dst().join("out/d"), "a file where a dir goes");

    // A file onto a directory lands inside it (dest is a directory)...
    run(&sb, &copy_action("f", "/out/f"));
    assert_eq!(read(&sb.dst().join("out/f/f")), "file");
    // ...but inside a copied tree it cannot replace one.
    write(&sb.src().join("tree/f"), "file");
    fs::create_dir_all(sb.dst().join("t/f")).unwrap();
    let err = fails(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            ..copy_action("tree", "/t")
        },
    );
    assert!(err.contains("/t/f") && err.contains("directory"), "{err}");
    run(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            always_replace_existing_dest_paths: true,
            ..copy_action("tree", "/t")
        },
    );
    assert_eq!(read(&sb.dst().join("t/f")), "file");

    // A directory onto a file.
    let err = fails(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            ..copy_action("d", "/out/d")
        },
    );
    assert!(err.contains("/out/d"), "{err}");
    run(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            always_replace_existing_dest_paths: true,
            ..copy_action("d", "/out/d")
        },
    );
    assert_eq!(read(&sb.dst().join("out/d/inner")), "inner");
    // dest itself is resolved inside the root, as upstream resolves it...
    symlink("/inside-target", sb.dst().join("out/link")).unwrap();
    run(&sb, &copy_action("f", "/out/link"));
    assert_eq!(read(&sb.dst().join("inside-target")), "file");
    assert!(
        fs::symlink_metadata(sb.dst().join("out/link"))
            .unwrap()
            .is_symlink()
    );
    // ...but a symlink in the way inside a copied tree is replaced, never followed.
    symlink("/inside-target2", sb.dst().join("t/g")).unwrap();
    write(&sb.src().join("tree/g"), "g");
    run(
        &sb,
        &pb::FileActionCopy {
            dir_copy_contents: true,
            ..copy_action("tree", "/t")
        },
    );
    assert!(
        fs::symlink_metadata(sb.dst().join("t/g"))
            .unwrap()
            .is_file()
    );
    assert!(!sb.dst().join("inside-target2").exists());
}

#[test]
fn errors_name_the_source() {
    let sb = Sandbox::new();
    let err = fails(&sb, &copy_action("nope", "/x"));
    assert!(err.starts_with("copy /nope:"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    write(&sb.src().join("present"), "p");
    let err = fails(
        &sb,
        &pb::FileActionCopy {
            required_paths: vec!["/present".into(), "/absent/file".into()],
            ..copy_action("present", "/x")
        },
    );
    assert!(err.contains("/absent/file"), "{err}");
    run(
        &sb,
        &pb::FileActionCopy {
            required_paths: vec!["/present".into()],
            ..copy_action("present", "/x")
        },
    );
    assert_eq!(read(&sb.dst().join("x")), "p");
}

#[test]
fn dockerfile_style_copy() {
    let sb = Sandbox::new();
    write(&sb.src().join("app/main.go"), "package main");
    write(&sb.src().join("app/go.mod"), "module x");
    write(&sb.src().join("README"), "readme");
    // COPY app /src/ then COPY README /src/: contents of app, and README, in /src.
    run(&sb, &dockerfile_copy("app", "/src/"));
    run(&sb, &dockerfile_copy("README", "/src/"));
    assert_eq!(
        paths(&sb.dst().join("src")),
        ["README", "go.mod", "main.go"]
    );
    assert_eq!(mode(&sb.dst().join("src")), 0o755);
}
