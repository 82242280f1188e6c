//! Go's `encoding/json` rules, for the few value kinds the `pb` messages need: objects
//! whose fields are added in struct order with or without `omitempty`, lists, maps with
//! sorted keys, numbers, `[]byte` as base64, and strings escaped as Go escapes them.
//!
//! Written by hand rather than with serde: the output must match Go byte for byte, and
//! spelling out each message's fields (in `json.rs`) is clearer than bending serde
//! attributes around prost's generated types.

use std::collections::BTreeMap;

/// A value Go would print for this field type.
pub(super) trait GoJson {
    fn write_json(&self, out: &mut String);
}

/// An object being written; fields appear in the order they are added.
pub(super) struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(super) fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_string(self.out, name);
        self.out.push(':');
    }

    /// Starts an object-valued field without `omitempty`; close it before adding more.
    pub(super) fn nested(&mut self, name: &str) -> Obj<'_> {
        self.key(name);
        Obj::open(self.out)
    }

    /// A field without `omitempty`.
    pub(super) fn always<T: GoJson + ?Sized>(&mut self, name: &str, value: &T) {
        self.key(name);
        value.write_json(self.out);
    }

    /// A `string` field with `omitempty`.
    pub(super) fn str(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.key(name);
            write_string(self.out, value);
        }
    }

    /// An integer (or enum) field with `omitempty`.
    pub(super) fn num<T: Copy + Default + PartialEq + ToString>(&mut self, name: &str, value: T) {
        if value != T::default() {
            self.key(name);
            self.out.push_str(&value.to_string());
        }
    }

    /// A `bool` field with `omitempty`.
    pub(super) fn bool(&mut self, name: &str, value: bool) {
        if value {
            self.key(name);
            self.out.push_str("true");
        }
    }

    /// A `[]byte` field with `omitempty`: standard base64.
    pub(super) fn bytes(&mut self, name: &str, value: &[u8]) {
        if !value.is_empty() {
            self.key(name);
            Base64(value).write_json(self.out);
        }
    }

    /// A pointer-to-message field with `omitempty`: absent is left out, present (even empty)
    /// is printed.
    pub(super) fn opt<T: GoJson>(&mut self, name: &str, value: Option<&T>) {
        if let Some(v) = value {
            self.always(name, v);
        }
    }

    /// A slice field with `omitempty`.
    pub(super) fn list<T: GoJson>(&mut self, name: &str, values: &[T]) {
        if !values.is_empty() {
            self.always(name, values);
        }
    }

    /// A map field with `omitempty`; keys are printed sorted, as Go does.
    pub(super) fn map<V: GoJson>(&mut self, name: &str, values: &BTreeMap<String, V>) {
        if !values.is_empty() {
            self.always(name, values);
        }
    }

    pub(super) fn close(self) {
        self.out.push('}');
    }
}

impl GoJson for str {
    fn write_json(&self, out: &mut String) {
        write_string(out, self);
    }
}

impl GoJson for String {
    fn write_json(&self, out: &mut String) {
        write_string(out, self);
    }
}

impl GoJson for bool {
    fn write_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl GoJson for i32 {
    fn write_json(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl GoJson for i64 {
    fn write_json(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl<T: GoJson> GoJson for [T] {
    fn write_json(&self, out: &mut String) {
        out.push('[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_json(out);
        }
        out.push(']');
    }
}

impl<T: GoJson> GoJson for Vec<T> {
    fn write_json(&self, out: &mut String) {
        self.as_slice().write_json(out);
    }
}

impl<V: GoJson> GoJson for BTreeMap<String, V> {
    fn write_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        for (k, v) in self {
            obj.always(k, v);
        }
        obj.close();
    }
}

/// A `[]byte`, which Go prints as a standard base64 string.
pub(super) struct Base64<'a>(pub(super) &'a [u8]);

impl GoJson for Base64<'_> {
    fn write_json(&self, out: &mut String) {
        out.push('"');
        base64(self.0, out);
        out.push('"');
    }
}

/// Standard base64 with padding (RFC 4648 §4); no characters that need JSON escaping.
fn base64(data: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// A JSON string as Go's `encoding/json` writes it with HTML escaping on (the default of
/// both `json.Marshal` and `json.Encoder`): `"` and `\` escaped, `\b \f \n \r \t` short
/// forms, other control characters and `<`, `>`, `&` as `\u00xx` (lower-case hex), U+2028
/// and U+2029 as `\u2028`/`\u2029`, everything else literal.
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, s);
        out
    }

    fn b64(data: &[u8]) -> String {
        let mut out = String::new();
        base64(data, &mut out);
        out
    }

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string("echo hi > /x"), r#""echo hi \u003e /x""#);
        assert_eq!(string("a&b<c"), r#""a\u0026b\u003cc""#);
        assert_eq!(string("q\"b\\"), r#""q\"b\\""#);
        assert_eq!(string("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(string("\u{0}\u{1b}\u{1f}"), r#""\u0000\u001b\u001f""#);
        assert_eq!(
            string("\u{7f}é한\u{2028}\u{2029}"),
            "\"\u{7f}é한\\u2028\\u2029\""
        );
        assert_eq!(string("/'+="), r#""/'+=""#);
    }

    #[test]
    fn base64_std_padded() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }
}
