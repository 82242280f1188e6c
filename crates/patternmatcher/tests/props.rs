//! Property tests: matching never panics, whatever the patterns and paths; a walker gets
//! the same answers as one-shot matching; literal patterns mean "this path or below".

use patternmatcher::{MatchInfo, PatternMatcher, filepath_match};
use proptest::prelude::*;

/// Strings made mostly of the characters patterns care about.
fn patternish() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c*?\\[\\]\\^\\\\/!.\\- ]{0,12}").unwrap()
}

fn pathish() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c./]{0,12}").unwrap()
}

proptest! {
    #[test]
    fn never_panics(
        patterns in proptest::collection::vec(patternish(), 0..4),
        any_patterns in proptest::collection::vec(any::<String>(), 0..3),
        path in pathish(),
        any_path in any::<String>(),
    ) {
        for ps in [&patterns, &any_patterns] {
            if let Ok(pm) = PatternMatcher::new(ps) {
                let _ = pm.matches(&path);
                let _ = pm.matches(&any_path);
                let _ = pm.matches_exact(&any_path);
                let _ = pm.matches_with_parents(&any_path, &MatchInfo::default());
            }
            for p in ps {
                let _ = filepath_match(p, &path);
                let _ = filepath_match(p, &any_path);
            }
        }
    }

    #[test]
    fn walking_agrees_with_one_shot_matching(
        patterns in proptest::collection::vec(patternish(), 1..4),
        comps in proptest::collection::vec("[a-c]{1,2}", 1..5),
    ) {
        let Ok(pm) = PatternMatcher::new(&patterns) else { return Ok(()) };
        let mut info = MatchInfo::default();
        for i in 1..=comps.len() {
            let path = comps[..i].join("/");
            let (walked, next) = pm.matches_with_parents(&path, &info);
            prop_assert_eq!(walked, pm.matches(&path), "{:?} vs {}", patterns, path);
            info = next;
        }
    }

    #[test]
    fn literal_patterns_match_the_path_and_below(
        pattern in "[a-c]{1,2}(/[a-c]{1,2}){0,2}",
        path in "[a-c]{1,2}(/[a-c]{1,2}){0,3}",
    ) {
        let pm = PatternMatcher::new(&[&pattern]).unwrap();
        let want = path == pattern || path.starts_with(&format!("{pattern}/"));
        prop_assert_eq!(pm.matches(&path), want);
    }

    #[test]
    fn star_never_crosses_a_slash(name in "[a-c]{0,3}", rest in "[a-c/]{0,6}") {
        let path = format!("{name}/{rest}");
        prop_assert!(!filepath_match("*", &path).unwrap());
        prop_assert!(filepath_match("*", &name).unwrap());
    }
}
