//! Matching behaviour, as a table: Docker's documented `.dockerignore` rules and the
//! corner cases upstream's patternmatcher pins down. Every case is checked three ways:
//! `matches`, a walker using `matches_with_parents` from the top, and
//! `matches_with_parents` with no parent information.

use patternmatcher::{MatchInfo, PatternMatcher, parse_dockerignore};

/// Asserts one case every way the API can answer it.
fn check(patterns: &[&str], path: &str, want: bool) {
    let pm = PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"));
    assert_eq!(pm.matches(path), want, "matches: {patterns:?} vs {path:?}");

    // A walker: each parent directory first, carrying the info down.
    let mut info = MatchInfo::default();
    let comps: Vec<&str> = path.split('/').collect();
    let mut walked = false;
    for i in 1..=comps.len() {
        let prefix = comps[..i].join("/");
        let (m, next) = pm.matches_with_parents(&prefix, &info);
        walked = m;
        info = next;
    }
    assert_eq!(walked, want, "walker: {patterns:?} vs {path:?}");

    let (cold, _) = pm.matches_with_parents(path, &MatchInfo::default());
    assert_eq!(cold, want, "no parent info: {patterns:?} vs {path:?}");
}

macro_rules! cases {
    ($($name:ident: [$($p:expr),* $(,)?] => { $($path:expr => $want:expr),* $(,)? })*) => {
        $(
            #[test]
            fn $name() {
                let patterns: &[&str] = &[$($p),*];
                $( check(patterns, $path, $want); )*
            }
        )*
    };
}

cases! {
    double_star_matches_everything: ["**"] => {
        "file" => true, "dir/file" => true, "dir/file/" => true,
    }
    trailing_slash_is_cleaned_away: ["**/"] => { "file" => true, "dir/file" => true }
    double_star_pairs: ["**/**"] => { "dir/file" => true }
    dir_double_star: ["dir/**"] => {
        "dir/file" => true, "dir/dir2/file" => true, "dir" => false, "dirx/file" => false,
    }
    leading_double_star_may_match_nothing: ["**/dir"] => {
        "dir" => true, "dir/file" => true, "a/b/dir" => true, "a/b/dirx" => false,
    }
    double_star_then_star: ["**/dir2/*"] => {
        "dir/dir2/file" => true, "dir2/file" => true, "dir/dir2/file/" => true,
        "dir/dir2" => false,
    }
    double_star_in_the_middle: ["**/dir2/**"] => { "dir/dir2/dir3/file" => true }
    double_star_glued_to_a_name_is_a_suffix: ["**file"] => {
        "file" => true, "dir/file" => true, "dir/dir/file" => true, "dir/myfile" => true,
        "file/x" => true, "filex" => false,
    }
    double_star_file_star: ["**/file*"] => {
        "dir/dir/file" => true, "dir/dir/file.txt" => true, "dir/nofile" => false,
    }
    double_star_file_star_txt: ["**/file*.txt"] => {
        "dir/dir/file.txt" => true, "file.txt" => true, "dir/file.txt2" => false,
    }
    double_double_star_ext: ["**/**/*.txt"] => {
        "dir/dir/file.txt" => true, "file.txt" => true, "dir/file.txt2" => false,
    }
    star_after_letter_double_star: ["a**/*.txt"] => {
        "a/file.txt" => true, "a/dir/file.txt" => true, "a/dir/dir/file.txt" => true,
        "b/file.txt" => false,
    }
    star_does_not_cross_slash: ["a/*.txt"] => {
        "a/file.txt" => true, "a/dir/file.txt" => false, "a/.txt" => true,
    }
    star_then_double_star: ["a/*.txt**"] => { "a/file.txt" => true, "a/file.txtx" => true }
    classes: ["a[b-d]e"] => { "ae" => false, "ace" => true, "aae" => false, "ade/x" => true }
    negated_class_uses_caret: ["a[^b-d]e"] => { "aze" => true, "ace" => false }
    bang_in_a_class_is_a_character: ["a[!b]e"] => { "a!e" => true, "abe" => true, "aze" => false }
    dot_is_literal: ["abc.def"] => { "abcdef" => false, "abc.def" => true, "abcZdef" => false }
    dot_star: [".*"] => { ".foo" => true, "foo" => false, ".git/config" => true }
    question_mark: ["abc?def"] => { "abcZdef" => true, "abcdef" => false, "abc/def" => false }
    suffix_with_dirs: ["**/foo/bar"] => {
        "foo/bar" => true, "dir/foo/bar" => true, "dir/dir2/foo/bar" => true, "xfoo/bar" => false,
    }
    suffix_with_dot: ["**/.foo"] => { ".foo" => true, "bar.foo" => false, "a/.foo" => true }
    regex_metacharacters_are_literal: ["a(b)c/def"] => { "a(b)c/def" => true, "a(b)c/xyz" => false }
    more_metacharacters: ["a.|)$(}+{bc"] => { "a.|)$(}+{bc" => true, "a" => false }
    caret_and_dollar: ["x^y$", "[$]"] => { "x^y$" => true, "xy" => false, "$" => true }
    plus_in_wheel_names: ["dist/*.whl"] => {
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl" => true,
    }
    escapes: ["a\\*b", "c\\\\"] => { "a*b" => true, "axb" => false, "c\\" => true }
    escaped_letter_is_a_letter: ["\\d"] => { "d" => true, "1" => false }
    unanchored_is_not_any_depth: ["foo"] => {
        "foo" => true, "foo/bar" => true, "a/foo" => false, "foox" => false,
    }
    leading_slash_is_dropped: ["/foo/bar"] => { "foo/bar" => true, "foo/bar/baz" => true }
    dotdot_is_cleaned: ["a/../b"] => { "b" => true, "a/b" => false }
    star_matches_top_level_only: ["*"] => { "fileutils.go" => true, "a/b" => true }
    star_dot_go: ["*.go"] => { "fileutils.go" => true, "pkg/x.go" => false }
    docs_example_temp: ["*/temp*"] => {
        "somedir/temporary.txt" => true, "somedir/temp" => true, "temp" => false,
        "a/b/temp" => false,
    }
    docs_example_two_levels: ["*/*/temp*"] => { "somedir/subdir/temporary.txt" => true }
    docs_example_question: ["temp?"] => { "tempa" => true, "tempab" => false }
    no_patterns: [] => { "anything" => false }

    exclusion_before_inclusion_loses: ["!fileutils.go", "*.go"] => { "fileutils.go" => true }
    exclusion_after_inclusion_wins: ["*.go", "!fileutils.go"] => {
        "fileutils.go" => false, "other.go" => true,
    }
    folder_then_exception: ["docs", "!docs/README.md"] => {
        "docs/README.md" => false, "docs/other.md" => true, "docs" => true,
    }
    folder_slash_then_exception: ["docs/", "!docs/README.md"] => { "docs/README.md" => false }
    folder_star_then_exception: ["docs/*", "!docs/README.md"] => {
        "docs/README.md" => false, "docs/x" => true,
    }
    everything_but_one_dir: ["**", "!util/docker/web"] => {
        "util/docker/web/foo" => false, "util/docker/web" => false, "util/docker" => true,
    }
    re_excluded_below_an_exception: ["**", "!util/docker/web", "util/docker/web/foo"] => {
        "util/docker/web/foo" => true, "util/docker/web/bar" => false,
    }
    exception_with_plus: ["**", "!dist/*.whl"] => {
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl" => false,
        "dist/other.tar" => true,
    }
    docs_markdown_example: ["*.md", "!README*.md", "README-secret.md"] => {
        "a.md" => true, "README.md" => false, "README-secret.md" => true,
    }
    docs_markdown_example_reordered: ["*.md", "README-secret.md", "!README*.md"] => {
        "README-secret.md" => false,
    }
    dockerignore_integration_example: ["ba*", "Dockerfile", "!bay", ".dockerignore"] => {
        "foo" => false, "bar" => true, "baz" => true, "bay" => false,
        "Dockerfile" => true, ".dockerignore" => true,
    }
}

#[test]
fn exclusions_reports_bang_patterns() {
    assert!(
        PatternMatcher::new(&["docs", "  !docs/README.md"])
            .unwrap()
            .exclusions()
    );
    assert!(
        PatternMatcher::new(&["docs", "!docs/README.md  "])
            .unwrap()
            .exclusions()
    );
    assert!(
        !PatternMatcher::new(&["docs", "config"])
            .unwrap()
            .exclusions()
    );
    assert_eq!(
        PatternMatcher::new(&["docs", "config", ""])
            .unwrap()
            .patterns()
            .len(),
        2
    );
}

#[test]
fn malformed_patterns_are_refused_up_front() {
    for bad in ["[", "!", "a[", "[^", "[x-]", "[-x]", "[a-b-c]", "\\"] {
        let err = PatternMatcher::new(&[bad]).unwrap_err();
        if bad != "!" {
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}

#[test]
fn dockerignore_lines_feed_the_matcher() {
    let file = "\u{feff}# build output\n/target/\n!target/keep\n*.log\n";
    let pm = PatternMatcher::new(&parse_dockerignore(file)).unwrap();
    assert!(pm.matches("target/debug/x"));
    assert!(!pm.matches("target/keep"));
    assert!(pm.matches("a.log"));
    assert!(!pm.matches("logs/a.log"));
    assert!(!pm.matches("src/main.rs"));
}

#[test]
fn exact_matching_ignores_parents() {
    let pm = PatternMatcher::new(&["docs", "**/dir2/*"]).unwrap();
    assert!(pm.matches_exact("docs"));
    assert!(!pm.matches_exact("docs/x"));
    assert!(pm.matches("docs/x"));
    assert!(pm.matches_exact("a/dir2/f"));
    assert!(!pm.matches_exact("a/dir2/f/g"));
}

#[test]
fn a_walker_sees_exclusions_that_only_apply_below_a_directory() {
    // "!d" cannot change anything at "d" (nothing matched yet), but it un-matches
    // "d/f" once "d/f" has matched.
    check(&["d/f", "!d"], "d/f", false);
    check(&["d/f", "!d"], "d", false);
}
