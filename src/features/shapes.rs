//! String-literal shapes: what a literal looks like and how it is being assembled.

use crate::lang::Language;

/// Flags describing one string literal in its context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub sql: bool,
    pub html: bool,
    pub shell: bool,
    pub url: bool,
    pub path: bool,
    pub secret: bool,
    pub key_material: bool,
    pub placeholder: bool,
    pub format: bool,
    /// Built dynamically: interpolated, concatenated, or format-applied.
    pub concat: bool,
    pub interp: bool,
    pub format_applied: bool,
    pub assigned_to_secret_name: bool,
    pub empty: bool,
}

/// Classifies a literal whose contents are `body`.
///
/// One pass over the bytes collects every substring test (ASCII case-insensitive ones compare
/// with `eq_ignore_ascii_case` against lowercase needles, which is the same as searching the
/// lowercased text), so no lowercased copy is made.
pub fn classify<'a>(
    body: &[u8],
    interp: bool,
    prev: Option<&[u8]>,
    next: Option<&[u8]>,
    before: impl Iterator<Item = &'a [u8]>,
    lang: Option<Language>,
) -> Shape {
    let mut s = Shape { interp, empty: body.is_empty(), ..Shape::default() };
    if body.len() > 4096 {
        return s;
    }
    let b = body;
    let c = Contains::scan(b);
    let has = |k: u64| c.0 & k != 0;
    let starts = |k: &str| b.len() >= k.len() && b[..k.len()].eq_ignore_ascii_case(k.as_bytes());
    s.sql = (has(SELECT_) && has(_FROM_))
        || has(INSERT_INTO)
        || has(DELETE_FROM)
        || (has(UPDATE_) && has(_SET_))
        || has(DROP_TABLE)
        || starts("where ")
        || starts(" where ")
        || starts(" and ")
        || starts(" order by ");
    s.html = has(HTML_TAG);
    s.shell = starts("sh -c")
        || starts("bash -c")
        || starts("cmd /c")
        || starts("cmd.exe")
        || starts("/bin/sh")
        || starts("/bin/bash")
        || has(_PIPE_)
        || has(_AND_AND_)
        || starts("rm ")
        || starts("ping ")
        || starts("tar ")
        || starts("curl ")
        || starts("convert ")
        || starts("git ");
    s.url = starts("http://") || starts("https://");
    s.path = has(DOT_DOT_SLASH) || starts("/etc/") || starts("/tmp/") || starts("/var/");
    s.key_material = has(BEGIN)
        || body.starts_with(b"AKIA")
        || body.starts_with(b"ghp_")
        || body.starts_with(b"sk_live_")
        || body.starts_with(b"xox")
        || body.starts_with(b"AIza");
    s.secret = looks_secret(b, c);
    s.placeholder = has(PCT_S | PCT_D | QUESTION | BRACES | COLON_ID | DOLLAR_1 | AT_P);
    s.format = has(PCT_S | PCT_D | BRACES | BRACE_0) || (has(OPEN_BRACE) && !interp && has(CLOSE_BRACE));
    let concat_op = |t: Option<&[u8]>| {
        t.is_some_and(|t| {
            t == b"+"
                || t == b"+="
                || (t == b"." && lang == Some(Language::Php))
                || (t == b"<<" && matches!(lang, Some(Language::Cpp | Language::Ruby)))
                || (t == b".." && lang.is_none())
        })
    };
    s.concat = concat_op(prev) || concat_op(next);
    s.format_applied = next.is_some_and(|t| t == b"%") || next.is_some_and(|t| t == b".") && has(OPEN_BRACE);
    s.assigned_to_secret_name = before.into_iter().any(is_secretish);
    s
}

// Substrings `classify` tests for, one bit each. Case-insensitive ones are spelled lowercase.
const SELECT_: u64 = 1 << 0;
const _FROM_: u64 = 1 << 1;
const INSERT_INTO: u64 = 1 << 2;
const DELETE_FROM: u64 = 1 << 3;
const UPDATE_: u64 = 1 << 4;
const _SET_: u64 = 1 << 5;
const DROP_TABLE: u64 = 1 << 6;
const HTML_TAG: u64 = 1 << 7;
const _PIPE_: u64 = 1 << 8;
const _AND_AND_: u64 = 1 << 9;
const DOT_DOT_SLASH: u64 = 1 << 10;
// Case-sensitive.
const BEGIN: u64 = 1 << 11;
const PCT_S: u64 = 1 << 12;
const PCT_D: u64 = 1 << 13;
const QUESTION: u64 = 1 << 14;
const BRACES: u64 = 1 << 15;
const COLON_ID: u64 = 1 << 16;
const DOLLAR_1: u64 = 1 << 17;
const AT_P: u64 = 1 << 18;
const BRACE_0: u64 = 1 << 19;
const OPEN_BRACE: u64 = 1 << 20;
const CLOSE_BRACE: u64 = 1 << 21;
const SPACE: u64 = 1 << 22;
const SLASH: u64 = 1 << 23;
const DOT: u64 = 1 << 24;
// Character classes, for `looks_secret`.
const LOWER: u64 = 1 << 25;
const UPPER: u64 = 1 << 26;
const DIGIT: u64 = 1 << 27;
const OTHER: u64 = 1 << 28;
const NOT_HEX: u64 = 1 << 29;

/// Which of the substrings above occur in a literal.
#[derive(Clone, Copy)]
struct Contains(u64);

impl Contains {
    fn scan(b: &[u8]) -> Contains {
        let at = |i: usize, k: &[u8]| b.len() - i >= k.len() && b[i..i + k.len()].eq_ignore_ascii_case(k);
        let exact = |i: usize, k: &[u8]| b[i..].starts_with(k);
        let mut classes = 0u8;
        let mut m = 0u64;
        for (i, &c) in b.iter().enumerate() {
            let cls = BYTE_CLASS[c as usize];
            classes |= cls;
            if cls & C_SPECIAL == 0 {
                continue;
            }
            m |= match c.to_ascii_lowercase() {
                b's' if at(i, b"select ") => SELECT_,
                b'i' if at(i, b"insert into") => INSERT_INTO,
                b'd' if at(i, b"delete from") => DELETE_FROM,
                b'd' if at(i, b"drop table") => DROP_TABLE,
                b'u' if at(i, b"update ") => UPDATE_,
                b' ' => {
                    SPACE
                        | if at(i, b" from ") { _FROM_ } else { 0 }
                        | if at(i, b" set ") { _SET_ } else { 0 }
                        | if at(i, b" | ") { _PIPE_ } else { 0 }
                        | if at(i, b" && ") { _AND_AND_ } else { 0 }
                }
                b'<' if [&b"<script"[..], b"<div", b"<a href", b"<img", b"<p>", b"<li", b"<span", b"<td", b"<h1"]
                    .iter()
                    .any(|k| at(i, k)) =>
                {
                    HTML_TAG
                }
                b'.' => DOT | if at(i, b"../") { DOT_DOT_SLASH } else { 0 },
                b'/' => SLASH,
                b'-' if exact(i, b"-----BEGIN") => BEGIN,
                b'%' => match b.get(i + 1) {
                    Some(b's') => PCT_S,
                    Some(b'd') => PCT_D,
                    _ => 0,
                },
                b'?' => QUESTION,
                b'{' => {
                    OPEN_BRACE
                        | match b.get(i + 1) {
                            Some(b'}') => BRACES,
                            Some(b'0') if b.get(i + 2) == Some(&b'}') => BRACE_0,
                            _ => 0,
                        }
                }
                b'}' => CLOSE_BRACE,
                b':' if exact(i, b":id") => COLON_ID,
                b'$' if b.get(i + 1) == Some(&b'1') => DOLLAR_1,
                b'@' if b.get(i + 1) == Some(&b'p') => AT_P,
                _ => 0,
            };
        }
        for (c, flag) in [(C_LOWER, LOWER), (C_UPPER, UPPER), (C_DIGIT, DIGIT), (C_OTHER, OTHER), (C_NOT_HEX, NOT_HEX)]
        {
            if classes & c != 0 {
                m |= flag;
            }
        }
        Contains(m)
    }
}

// Byte classes, one table lookup per byte.
const C_LOWER: u8 = 1;
const C_UPPER: u8 = 2;
const C_DIGIT: u8 = 4;
const C_OTHER: u8 = 8;
const C_NOT_HEX: u8 = 16;
/// The byte may start one of the substrings `Contains::scan` looks for.
const C_SPECIAL: u8 = 32;

const BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut v = match c {
            b'a'..=b'z' => C_LOWER,
            b'A'..=b'Z' => C_UPPER,
            b'0'..=b'9' => C_DIGIT,
            _ => C_OTHER,
        };
        if !c.is_ascii_hexdigit() {
            v |= C_NOT_HEX;
        }
        if matches!(
            c.to_ascii_lowercase(),
            b's' | b'i'
                | b'd'
                | b'u'
                | b' '
                | b'<'
                | b'.'
                | b'/'
                | b'-'
                | b'%'
                | b'?'
                | b'{'
                | b'}'
                | b':'
                | b'$'
                | b'@'
        ) {
            v |= C_SPECIAL;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// Whether a token names a credential: its ASCII-lowercased text contains one of the
/// credential words.
#[must_use]
pub fn is_secretish(b: &[u8]) -> bool {
    let at = |i: usize, k: &[u8]| b.len() - i >= k.len() && b[i..i + k.len()].eq_ignore_ascii_case(k);
    (0..b.len()).any(|i| match b[i].to_ascii_lowercase() {
        b'p' => {
            at(i, b"password") || at(i, b"passwd") || at(i, b"pwd") || at(i, b"private_key") || at(i, b"privatekey")
        }
        b's' => at(i, b"secret"),
        b't' => at(i, b"token"),
        b'a' => at(i, b"apikey") || at(i, b"api_key"),
        b'c' => at(i, b"credential"),
        _ => false,
    })
}

/// [`is_secretish`] of text already ASCII-lowercased (the extractor's identifier keys).
#[must_use]
pub fn is_secretish_lower(b: &[u8]) -> bool {
    // The shortest word, "pwd", has 3 bytes.
    (0..b.len().saturating_sub(2)).any(|i| {
        let r = &b[i..];
        match b[i] {
            b'p' => {
                r.starts_with(b"pwd")
                    || r.starts_with(b"passw") && (r[5..].starts_with(b"ord") || r[5..].starts_with(b"d"))
                    || r.starts_with(b"private") && (r[7..].starts_with(b"_key") || r[7..].starts_with(b"key"))
            }
            b's' => r.starts_with(b"secret"),
            b't' => r.starts_with(b"token"),
            b'a' => r.starts_with(b"api") && (r[3..].starts_with(b"key") || r[3..].starts_with(b"_key")),
            b'c' => r.starts_with(b"credential"),
            _ => false,
        }
    })
}

/// A literal that looks like a credential: long, no spaces, mixed character classes.
fn looks_secret(b: &[u8], c: Contains) -> bool {
    let n = b.len();
    let has = |k: u64| c.0 & k != 0;
    if !(12..=200).contains(&n) || has(SPACE) || has(SLASH) && has(DOT) {
        return false;
    }
    let classes = [LOWER, UPPER, DIGIT, OTHER].iter().filter(|k| has(**k)).count();
    let hex = n >= 32 && !has(NOT_HEX);
    (classes >= 3 && has(DIGIT)) || hex
}

/// Shape feature names; bit `i` of [`Shape::mask`] stands for `NAMES[i]`.
pub const NAMES: [&str; 21] = [
    "sql",
    "sql+concat",
    "sql+interp",
    "sql+fmt",
    "sql+param",
    "html",
    "html+dyn",
    "shell",
    "shell+dyn",
    "url",
    "url+dyn",
    "path",
    "path+dyn",
    "secret",
    "secret+named",
    "key-material",
    "format",
    "interp",
    "concat",
    "empty",
    "literal+named",
];

/// Tokens that stand for a literal; [`Shape::token_index`] picks one.
pub const TOKENS: [&str; 7] =
    ["<str:sql>", "<str:html>", "<str:shell>", "<str:url>", "<str:secret>", "<str:empty>", "<str>"];

impl Shape {
    /// The shape's feature names as a bit set over [`NAMES`].
    #[must_use]
    pub fn mask(&self) -> u32 {
        let dynamic = self.concat || self.interp || self.format_applied;
        [
            self.sql,
            self.sql && self.concat,
            self.sql && self.interp,
            self.sql && self.format_applied,
            self.sql && !dynamic && self.placeholder,
            self.html,
            self.html && dynamic,
            self.shell,
            self.shell && dynamic,
            self.url,
            self.url && dynamic,
            self.path,
            self.path && dynamic,
            self.secret,
            self.secret && self.assigned_to_secret_name,
            self.key_material,
            self.format,
            self.interp,
            self.concat,
            self.empty,
            !self.empty && self.assigned_to_secret_name && !dynamic,
        ]
        .iter()
        .enumerate()
        .fold(0, |m, (i, on)| m | (u32::from(*on) << i))
    }

    /// Index in [`TOKENS`] of the token that stands for the literal in unigrams and bigrams.
    #[must_use]
    pub fn token_index(&self) -> usize {
        if self.sql {
            0
        } else if self.html {
            1
        } else if self.shell {
            2
        } else if self.url {
            3
        } else if self.secret || self.key_material {
            4
        } else if self.empty {
            5
        } else {
            6
        }
    }
}

/// Words inside a literal (runs of ASCII alphanumerics and `_` of 2 to 24 bytes).
pub fn words(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).filter(|w| (2..=24).contains(&w.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The implementation before the one-pass scan (extractor version 2), kept to prove the
    // scan classifies every literal the same.
    fn reference<'a>(
        body: &str,
        interp: bool,
        prev: Option<&str>,
        next: Option<&str>,
        before: impl Iterator<Item = &'a str>,
        lang: Option<Language>,
    ) -> Shape {
        let mut s = Shape { interp, empty: body.is_empty(), ..Shape::default() };
        if body.len() > 4096 {
            return s;
        }
        let lower = body.to_ascii_lowercase();
        let has = |k: &str| lower.contains(k);
        s.sql = (has("select ") && has(" from "))
            || has("insert into")
            || has("delete from")
            || (has("update ") && has(" set "))
            || has("drop table")
            || lower.starts_with("where ")
            || lower.starts_with(" where ")
            || lower.starts_with(" and ")
            || lower.starts_with(" order by ");
        s.html = lower.contains("<script")
            || lower.contains("<div")
            || lower.contains("<a href")
            || lower.contains("<img")
            || lower.contains("<p>")
            || lower.contains("<li")
            || lower.contains("<span")
            || lower.contains("<td")
            || lower.contains("<h1");
        s.shell = lower.starts_with("sh -c")
            || lower.starts_with("bash -c")
            || lower.starts_with("cmd /c")
            || lower.starts_with("cmd.exe")
            || lower.starts_with("/bin/sh")
            || lower.starts_with("/bin/bash")
            || lower.contains(" | ")
            || lower.contains(" && ")
            || lower.starts_with("rm ")
            || lower.starts_with("ping ")
            || lower.starts_with("tar ")
            || lower.starts_with("curl ")
            || lower.starts_with("convert ")
            || lower.starts_with("git ");
        s.url = lower.starts_with("http://") || lower.starts_with("https://");
        s.path = lower.contains("../")
            || lower.starts_with("/etc/")
            || lower.starts_with("/tmp/")
            || lower.starts_with("/var/");
        s.key_material = body.contains("-----BEGIN")
            || body.starts_with("AKIA")
            || body.starts_with("ghp_")
            || body.starts_with("sk_live_")
            || body.starts_with("xox")
            || body.starts_with("AIza");
        s.secret = reference_looks_secret(body);
        s.placeholder = body.contains("%s")
            || body.contains("%d")
            || body.contains('?')
            || body.contains("{}")
            || body.contains(":id")
            || body.contains("$1")
            || body.contains("@p");
        s.format = body.contains("%s")
            || body.contains("%d")
            || body.contains("{}")
            || body.contains("{0}")
            || (body.contains('{') && !interp && body.contains('}'));
        let concat_op = |t: Option<&str>| {
            t.is_some_and(|t| {
                t == "+"
                    || t == "+="
                    || (t == "." && lang == Some(Language::Php))
                    || (t == "<<" && matches!(lang, Some(Language::Cpp | Language::Ruby)))
                    || (t == ".." && lang.is_none())
            })
        };
        s.concat = concat_op(prev) || concat_op(next);
        s.format_applied = next.is_some_and(|t| t == "%") || next.is_some_and(|t| t == ".") && lower.contains('{');
        s.assigned_to_secret_name = before.map(|t| t.to_ascii_lowercase()).any(|t| reference_secretish(&t));
        s
    }

    /// The shape's feature names.
    fn reference_names(s: &Shape) -> impl Iterator<Item = &'static str> {
        let dynamic = s.concat || s.interp || s.format_applied;
        [
            (s.sql, "sql"),
            (s.sql && s.concat, "sql+concat"),
            (s.sql && s.interp, "sql+interp"),
            (s.sql && s.format_applied, "sql+fmt"),
            (s.sql && !dynamic && s.placeholder, "sql+param"),
            (s.html, "html"),
            (s.html && dynamic, "html+dyn"),
            (s.shell, "shell"),
            (s.shell && dynamic, "shell+dyn"),
            (s.url, "url"),
            (s.url && dynamic, "url+dyn"),
            (s.path, "path"),
            (s.path && dynamic, "path+dyn"),
            (s.secret, "secret"),
            (s.secret && s.assigned_to_secret_name, "secret+named"),
            (s.key_material, "key-material"),
            (s.format, "format"),
            (s.interp, "interp"),
            (s.concat, "concat"),
            (s.empty, "empty"),
            (!s.empty && s.assigned_to_secret_name && !dynamic, "literal+named"),
        ]
        .into_iter()
        .filter(|(b, _)| *b)
        .map(|(_, n)| n)
    }

    /// The token that stands for the literal in unigrams and bigrams.
    fn reference_token(s: &Shape) -> &'static str {
        if s.sql {
            "<str:sql>"
        } else if s.html {
            "<str:html>"
        } else if s.shell {
            "<str:shell>"
        } else if s.url {
            "<str:url>"
        } else if s.secret || s.key_material {
            "<str:secret>"
        } else if s.empty {
            "<str:empty>"
        } else {
            "<str>"
        }
    }

    fn reference_secretish(lower: &str) -> bool {
        ["password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "private_key", "privatekey", "credential"]
            .iter()
            .any(|k| lower.contains(k))
    }

    /// A literal that looks like a credential: long, no spaces, mixed character classes.
    fn reference_looks_secret(body: &str) -> bool {
        let n = body.len();
        if !(12..=200).contains(&n) || body.contains(' ') || body.contains('/') && body.contains('.') {
            return false;
        }
        let lower = body.bytes().any(|b| b.is_ascii_lowercase());
        let upper = body.bytes().any(|b| b.is_ascii_uppercase());
        let digit = body.bytes().any(|b| b.is_ascii_digit());
        let other = body.bytes().any(|b| !b.is_ascii_alphanumeric());
        let classes = [lower, upper, digit, other].iter().filter(|x| **x).count();
        let hex = n >= 32 && body.bytes().all(|b| b.is_ascii_hexdigit());
        (classes >= 3 && digit) || hex
    }

    fn c(body: &str, prev: Option<&str>, next: Option<&str>) -> Shape {
        classify(
            body.as_bytes(),
            false,
            prev.map(str::as_bytes),
            next.map(str::as_bytes),
            std::iter::empty(),
            Some(Language::Python),
        )
    }

    #[test]
    fn sql_and_dynamic_assembly() {
        let s = c("SELECT * FROM users WHERE name = '", None, Some("+"));
        assert!(s.sql && s.concat);
        let s = c("SELECT * FROM users WHERE name = %s", None, Some(","));
        assert!(s.sql && !s.concat && s.placeholder);
        let s = c("SELECT * FROM users WHERE name = '%s'", None, Some("%"));
        assert!(s.sql && s.format_applied);
        assert!(!c("select a colour", None, None).sql);
    }

    #[test]
    fn secrets_and_key_material() {
        assert!(c("AKIAIOSFODNN7EXAMPLE", None, None).key_material);
        assert!(c("s3cr3t-Pa55w0rd-2024", None, None).secret);
        assert!(c("0123456789abcdef0123456789abcdef", None, None).secret);
        assert!(!c("hello world", None, None).secret);
        assert!(!c("application/json", None, None).secret);
    }

    proptest! {
        #[test]
        fn the_one_pass_scan_classifies_like_the_reference(
            body in "(?s)(.|SELECT |select | FROM | from |insert into|DELETE FROM|update | set |drop table|<script|<DIV|<a href|<p>|<li|\\.\\./|/etc/|http://|sh -c| \\| | && |-----BEGIN|AKIA|%s|%d|\\?|\\{\\}|\\{0\\}|:id|\\$1|@p|[0-9a-f]{8}|[A-Za-z0-9_]{4}){0,24}",
            interp in any::<bool>(),
            prev in proptest::option::of("\\+|\\+=|\\.|<<|\\.\\.|%|,"),
            next in proptest::option::of("\\+|\\+=|\\.|<<|\\.\\.|%|,"),
            before in proptest::collection::vec("[a-zA-Z_]{0,6}(PassWord|passwd|token|Api_Key|apikey|SECRET|pwd|Private_Key|privatekey|credential|x)?[a-z]{0,3}", 0..3),
            li in 0usize..15,
        ) {
            let lang = Language::ALL.get(li).copied();
            let b = || before.iter().map(String::as_str);
            let fast = classify(
                body.as_bytes(),
                interp,
                prev.as_deref().map(str::as_bytes),
                next.as_deref().map(str::as_bytes),
                b().map(str::as_bytes),
                lang,
            );
            let slow = reference(&body, interp, prev.as_deref(), next.as_deref(), b(), lang);
            prop_assert_eq!(fast, slow);
            let m = fast.mask();
            let names: Vec<&str> = NAMES.iter().enumerate().filter(|(i, _)| m & (1 << i) != 0).map(|(_, n)| *n).collect();
            prop_assert_eq!(names, reference_names(&slow).collect::<Vec<_>>());
            prop_assert_eq!(TOKENS[fast.token_index()], reference_token(&slow));
            for t in before.iter() {
                let lower = t.to_ascii_lowercase();
                prop_assert_eq!(is_secretish(t.as_bytes()), reference_secretish(&lower));
                prop_assert_eq!(is_secretish_lower(lower.as_bytes()), reference_secretish(&lower));
            }
        }
    }
}
