//! The exec-form check: is an argument string a JSON array of strings?
//!
//! This follows Go's `encoding/json` decoding into `[]any`, which is what
//! upstream does, rather than a general JSON library, because the edge cases
//! decide between shell form and an error: invalid JSON of any kind (including
//! text after the array) means shell form; valid JSON with a non-string
//! element is an error; a number too large for a float64 is a decode error in
//! Go, which also means shell form. Nesting is limited to 10000 levels as in
//! Go, and checked without recursion.

/// What an argument string turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonArray {
    /// Not a JSON array (or not valid JSON): use the shell form.
    NotJson,
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// A valid JSON array with a non-string element.
    NotStrings,
}

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// Classifies `rest` (leading whitespace is ignored).
pub(super) fn parse_array(rest: &str) -> JsonArray {
    let s = rest.trim_start();
    if !s.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut reader = Reader { s, pos: 0 };
    match reader.document() {
        Ok(doc) if doc.overflow => JsonArray::NotJson,
        Ok(doc) => match doc.elements.into_iter().collect::<Option<Vec<String>>>() {
            Some(strings) => JsonArray::Strings(strings),
            None => JsonArray::NotStrings,
        },
        Err(Invalid) => JsonArray::NotJson,
    }
}

/// Invalid JSON.
struct Invalid;

/// A decoded top-level array: its elements (`None` for non-strings) and
/// whether any number anywhere overflowed a float64.
struct Document {
    elements: Vec<Option<String>>,
    overflow: bool,
}

/// What the reader expects next.
#[derive(Clone, Copy)]
enum Expect {
    Value,
    Key,
    CommaOrClose,
}

struct Reader<'a> {
    s: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), Invalid> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// The whole input: one value (an array) and nothing but whitespace after.
    fn document(&mut self) -> Result<Document, Invalid> {
        let mut doc = Document {
            elements: Vec::new(),
            overflow: false,
        };
        // Open containers, innermost last: b'[' or b'{'.
        let mut stack: Vec<u8> = Vec::new();
        let mut expect = Expect::Value;
        loop {
            self.skip_ws();
            match expect {
                Expect::Value => {
                    let top_level_element = stack.len() == 1 && stack[0] == b'[';
                    match self.peek().ok_or(Invalid)? {
                        open @ (b'[' | b'{') => {
                            if top_level_element {
                                doc.elements.push(None);
                            }
                            if stack.len() >= MAX_DEPTH {
                                return Err(Invalid);
                            }
                            stack.push(open);
                            self.pos += 1;
                            self.skip_ws();
                            let close = if open == b'[' { b']' } else { b'}' };
                            if self.peek() == Some(close) {
                                self.pos += 1;
                                stack.pop();
                                expect = Expect::CommaOrClose;
                            } else if open == b'{' {
                                expect = Expect::Key;
                            }
                            if stack.is_empty() {
                                break;
                            }
                            continue;
                        }
                        b'"' => {
                            let s = self.string()?;
                            if top_level_element {
                                doc.elements.push(Some(s));
                            }
                        }
                        b'-' | b'0'..=b'9' => {
                            doc.overflow |= self.number()?;
                            if top_level_element {
                                doc.elements.push(None);
                            }
                        }
                        _ => {
                            self.literal()?;
                            if top_level_element {
                                doc.elements.push(None);
                            }
                        }
                    }
                    expect = Expect::CommaOrClose;
                }
                Expect::Key => {
                    self.string()?;
                    self.skip_ws();
                    self.eat(b':')?;
                    expect = Expect::Value;
                }
                Expect::CommaOrClose => {
                    let Some(&open) = stack.last() else { break };
                    let close = if open == b'[' { b']' } else { b'}' };
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            expect = if open == b'{' {
                                Expect::Key
                            } else {
                                Expect::Value
                            };
                        }
                        Some(c) if c == close => {
                            self.pos += 1;
                            stack.pop();
                            if stack.is_empty() {
                                break;
                            }
                        }
                        _ => return Err(Invalid),
                    }
                }
            }
        }
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(Invalid);
        }
        Ok(doc)
    }

    fn literal(&mut self) -> Result<(), Invalid> {
        let rest = &self.s[self.pos..];
        for word in ["true", "false", "null"] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(());
            }
        }
        Err(Invalid)
    }

    /// Reads a number; returns whether it overflows a float64.
    fn number(&mut self) -> Result<bool, Invalid> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while matches!(r.peek(), Some(b'0'..=b'9')) {
                r.pos += 1;
            }
            r.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        let text = &self.s[start..self.pos];
        Ok(text.parse::<f64>().map_or(true, f64::is_infinite))
    }

    /// Reads a string and decodes its escapes as Go does (a lone surrogate
    /// becomes U+FFFD).
    fn string(&mut self) -> Result<String, Invalid> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.pos..];
            let stop = rest
                .find(|c: char| c == '"' || c == '\\' || c < ' ')
                .ok_or(Invalid)?;
            out.push_str(&rest[..stop]);
            self.pos += stop;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(Invalid),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), Invalid> {
        let c = self.peek().ok_or(Invalid)?;
        self.pos += 1;
        let decoded = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4().ok_or(Invalid)?;
                if (0xd800..0xe000).contains(&first) {
                    // A valid pair is a high surrogate, then `\u` and a low
                    // one; anything else decodes to U+FFFD.
                    let mut decoded = '\u{fffd}';
                    if first < 0xdc00 && self.s[self.pos..].starts_with("\\u") {
                        let save = self.pos;
                        self.pos += 2;
                        match self.hex4() {
                            Some(second) if (0xdc00..0xe000).contains(&second) => {
                                let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                                decoded = char::from_u32(c).unwrap_or('\u{fffd}');
                            }
                            _ => self.pos = save,
                        }
                    }
                    decoded
                } else {
                    char::from_u32(first).unwrap_or('\u{fffd}')
                }
            }
            _ => return Err(Invalid),
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(parse_array("[]"), strings(&[]));
        assert_eq!(parse_array(" [ \"a\" , \"b\" ] \n"), strings(&["a", "b"]));
        assert_eq!(
            parse_array(r#"["\" \\ \/ \b \f \n \r \t \u0000 \u00e9"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \u{0} é"])
        );
        assert_eq!(
            parse_array(r#"["\ud83d\ude00", "\ud800", "\udc00x", "\ud800\u0041"]"#),
            strings(&["😀", "\u{fffd}", "\u{fffd}x", "\u{fffd}A"])
        );
    }

    #[test]
    fn not_json_falls_back() {
        for s in [
            "",
            "a",
            "[",
            "[\"a\"",
            "[\"a\",]",
            "['a']",
            "[\"a\"] x",
            "[\"a\" \"b\"]",
            "[\"\t\"]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "[01]",
            "[1.]",
            "[1e]",
            "[-]",
            "[tru]",
            "[{\"a\"}]",
            "[1e400]",
            "[\"a\", [1e999]]",
            "[\"a\"]\u{b}",
        ] {
            assert_eq!(parse_array(s), JsonArray::NotJson, "{s:?}");
        }
    }

    #[test]
    fn non_strings_are_errors() {
        for s in [
            "[1]",
            "[\"a\", 2]",
            "[null]",
            "[true]",
            "[[\"a\"]]",
            "[ \"echo\", [ \"nested json\" ] ]",
            "[{}]",
            "[{\"a\": [1, {\"b\": null}]}]",
            "[-0.5e-3]",
            "[1e-400]",
        ] {
            assert_eq!(parse_array(s), JsonArray::NotStrings, "{s:?}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded_without_recursion() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(parse_array(&ok), JsonArray::NotStrings);
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_array(&deep), JsonArray::NotJson);
    }
}
