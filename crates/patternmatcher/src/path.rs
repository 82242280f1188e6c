//! Go's lexical path functions (`filepath.Clean`, `filepath.Dir`) for `/`-separated
//! paths, which the pattern semantics are defined with.

/// Go's `filepath.Clean`: the shortest equivalent path, by purely lexical processing.
/// Repeated `/` become one, `.` components go, `..` removes the component before it
/// (and is dropped at the root of an absolute path), no trailing `/`; `""` becomes `.`.
pub fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`: everything before the last `/`, cleaned (`.` when there is no
/// `/`).
pub(crate) fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => go_clean(&path[..=i]),
        None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("./a/./b/.", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("../../a/..", "../.."),
            ("/../a", "/a"),
            ("/a/b/../../..", "/"),
            ("a/b/c/../../d", "a/d"),
            ("!foo/../bar", "bar"),
        ];
        for (input, want) in cases {
            assert_eq!(go_clean(input), want, "Clean({input:?})");
        }
    }

    #[test]
    fn dir_matches_go() {
        let cases = [
            ("a", "."),
            ("a/b", "a"),
            ("a/b/", "a/b"),
            ("/a", "/"),
            ("/", "/"),
            ("a//b", "a"),
            ("a/./b", "a"),
        ];
        for (input, want) in cases {
            assert_eq!(go_dir(input), want, "Dir({input:?})");
        }
    }
}
