//! A forgiving lexer for code fragments.
//!
//! Completions are partial code: cut-off strings, unbalanced braces, a comment opened and never
//! closed. The lexer never fails: an unterminated string ends at the end of its line (or of the
//! text, for the multi-line forms), an unterminated block comment at the end of the text. It works
//! on bytes and only ever splits the text at ASCII bytes, so every token is a valid `&str`.
//!
//! It produces tokens (identifiers, numbers, strings with their interpolation flag, comments,
//! punctuation) and the *masked* text: the input with every comment byte replaced by a space
//! (newlines kept), so byte offsets and lines are unchanged and rules never fire on comments.

use crate::lang::Language;
use std::borrow::Cow;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A name or keyword (`$`-prefixed names of PHP and shell included).
    Ident,
    /// A numeric literal.
    Number,
    /// A string or character literal, quotes and prefix included.
    Str,
    /// A comment, its markers included.
    Comment,
    /// An operator or punctuation; common two-character operators are one token.
    Punct,
}

/// The string literal interpolates expressions (`f"{x}"`, `` `${x}` ``, `"#{x}"`, `$"{x}"`, `"$x"`).
pub const STR_INTERP: u8 = 1;
/// The string literal is unterminated (ended at a line break or at the end of the text).
pub const STR_UNTERMINATED: u8 = 2;
/// The string literal is a multi-line form (triple-quoted, template, raw, verbatim).
pub const STR_MULTILINE: u8 = 4;

/// One token: its kind and byte span in the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: u32,
    pub end: u32,
    /// For strings: `STR_*` flags.
    pub flags: u8,
    /// For strings: byte length of the prefix and opening delimiter.
    pub open: u8,
    /// For strings: byte length of the closing delimiter (0 when unterminated).
    pub close: u8,
}

impl Token {
    /// The token's text.
    #[must_use]
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start as usize..self.end as usize).unwrap_or("")
    }

    /// The token's bytes: its text, without the checks of `text` (for hashing and comparing).
    #[must_use]
    pub fn bytes<'a>(&self, src: &'a str) -> &'a [u8] {
        src.as_bytes().get(self.start as usize..self.end as usize).unwrap_or(b"")
    }

    /// For a string token, its contents without prefix and quotes (best effort for
    /// unterminated strings); for other tokens, the text.
    #[must_use]
    pub fn str_contents<'a>(&self, src: &'a str) -> &'a str {
        let t = self.text(src);
        if self.kind != TokenKind::Str {
            return t;
        }
        let open = usize::from(self.open).min(t.len());
        let close = t.len().saturating_sub(usize::from(self.close)).max(open);
        t.get(open..close).unwrap_or("")
    }
}

/// The result of lexing: tokens and the comment-masked text.
#[derive(Debug, Clone)]
pub struct Lexed<'a> {
    pub text: &'a str,
    pub tokens: Vec<Token>,
    /// `text` with comments replaced by spaces; borrowed when there were no comments.
    pub masked: Cow<'a, str>,
}

/// Lexes `text` as `lang` (`None`: unknown; both `#` and `//` comments are recognised).
#[must_use]
pub fn lex(text: &str, lang: Option<Language>) -> Lexed<'_> {
    let mut lx = Lexer {
        b: text.as_bytes(),
        i: 0,
        lang,
        hash: lang.is_none_or(|l| l.comments().hash),
        slash: lang.is_none_or(|l| l.comments().slash),
        tokens: Vec::with_capacity(text.len() / 4 + 4),
        comments: Vec::new(),
    };
    lx.run();
    let masked = if lx.comments.is_empty() {
        Cow::Borrowed(text)
    } else {
        let mut bytes = text.as_bytes().to_vec();
        for (s, e) in &lx.comments {
            for b in &mut bytes[*s..*e] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        // Comment spans start and end at ASCII bytes and every byte inside became a space or
        // stayed a line break, so the result is valid UTF-8; the fallback is never taken.
        Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    };
    Lexed { text, tokens: lx.tokens, masked }
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    lang: Option<Language>,
    /// `#` line comments.
    hash: bool,
    /// `//` and `/* */` comments.
    slash: bool,
    tokens: Vec<Token>,
    comments: Vec<(usize, usize)>,
}

/// Whether `[a, b]` is one of the two-character operators lexed as one token: `->` `=>` `::`
/// `==` `!=` `+=` `&&` `||` `<<` `>>` `..` `?.` `<=` `>=`.
fn is_two_char_op(a: u8, b: u8) -> bool {
    matches!(
        (a, b),
        (b'-' | b'=', b'>')
            | (b':', b':')
            | (b'=' | b'!' | b'+' | b'<' | b'>', b'=')
            | (b'&', b'&')
            | (b'|', b'|')
            | (b'<', b'<')
            | (b'>', b'>')
            | (b'.', b'.')
            | (b'?', b'.')
    )
}

const IDENT_START: u8 = 1;
const IDENT_CONTINUE: u8 = 2;

/// Byte classes of identifiers: ASCII letters, `_`, `$` and every non-ASCII byte start one;
/// those and digits continue one.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            t[i] = IDENT_START | IDENT_CONTINUE;
        } else if c.is_ascii_digit() {
            t[i] = IDENT_CONTINUE;
        }
        i += 1;
    }
    t
};

fn is_ident_start(c: u8) -> bool {
    CLASS[usize::from(c)] & IDENT_START != 0
}

fn is_ident_continue(c: u8) -> bool {
    CLASS[usize::from(c)] & IDENT_CONTINUE != 0
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        self.tokens.push(Token { kind, start: start as u32, end: end as u32, flags: 0, open: 0, close: 0 });
    }

    /// Pushes a string token; `open`/`close` are delimiter lengths (close 0 if unterminated).
    fn push_str(&mut self, start: usize, end: usize, flags: u8, open: usize, close: usize) {
        let close = if flags & STR_UNTERMINATED != 0 { 0 } else { close };
        self.tokens.push(Token {
            kind: TokenKind::Str,
            start: start as u32,
            end: end as u32,
            flags,
            open: open.min(255) as u8,
            close: close.min(255) as u8,
        });
    }

    fn run(&mut self) {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let start = self.i;
            match c {
                b' ' | b'\t' | b'\n' | 0x0c | b'\r' => {
                    self.i += 1;
                    while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                        self.i += 1;
                    }
                }
                b'/' if self.slash && self.peek(1) == b'/' => self.line_comment(start),
                b'/' if self.slash && self.peek(1) == b'*' => {
                    let end = find(self.b, b"*/", self.i + 2).map_or(self.b.len(), |p| p + 2);
                    self.comment(start, end);
                }
                b'#' if self.is_hash_comment() => self.line_comment(start),
                b'"' | b'\'' | b'`' => self.string(start, start, 0),
                b'@' if self.lang == Some(Language::Ruby) => self.ident_or_prefixed_string(start),
                b'@' if self.lang == Some(Language::CSharp) && matches!(self.peek(1), b'"' | b'$') => {
                    self.string(start, start + 1, 0);
                }
                _ if is_ident_start(c) => self.ident_or_prefixed_string(start),
                b'0'..=b'9' => {
                    while self.i < self.b.len()
                        && (self.b[self.i].is_ascii_alphanumeric() || matches!(self.b[self.i], b'_' | b'.'))
                    {
                        // `1..10` is a range, not a number with two dots.
                        if self.b[self.i] == b'.' && self.peek(1) == b'.' {
                            break;
                        }
                        self.i += 1;
                    }
                    self.push(TokenKind::Number, start, self.i);
                }
                _ => {
                    let len = if is_two_char_op(c, self.peek(1)) { 2 } else { 1 };
                    self.i += len;
                    self.push(TokenKind::Punct, start, self.i);
                }
            }
        }
    }

    fn is_hash_comment(&self) -> bool {
        if !self.hash {
            return false;
        }
        match self.lang {
            // PHP 8 attributes `#[...]` are code.
            Some(Language::Php) => self.peek(1) != b'[',
            // In shell `#` starts a comment only at the start of a word (`$#`, `${#a}` are code).
            Some(Language::Shell) => {
                self.i == 0 || matches!(self.b[self.i - 1], b' ' | b'\t' | b'\n' | b'\r' | b';' | b'(' | b'&' | b'|')
            }
            // Unknown language: C preprocessor lines are code, not comments.
            None => !starts_with_at(self.b, self.i, b"#include") && !starts_with_at(self.b, self.i, b"#define"),
            _ => true,
        }
    }

    fn line_comment(&mut self, start: usize) {
        let end = memchr(b'\n', self.b, start).unwrap_or(self.b.len());
        self.comment(start, end);
    }

    fn comment(&mut self, start: usize, end: usize) {
        self.i = end;
        self.comments.push((start, end));
        self.push(TokenKind::Comment, start, end);
    }

    fn ident_or_prefixed_string(&mut self, start: usize) {
        self.i += 1;
        self.i += self.b[self.i..].iter().position(|c| !is_ident_continue(*c)).unwrap_or(self.b.len() - self.i);
        let word = &self.b[start..self.i];
        let next = self.peek(0);
        if matches!(next, b'"' | b'\'') || (next == b'#' && self.lang == Some(Language::Rust)) {
            let prefix_ok = match self.lang {
                Some(Language::Python) | None => word.len() <= 2 && word.iter().all(|c| b"fFrRbBuU".contains(c)),
                Some(Language::Rust) => matches!(word, b"r" | b"b" | b"br" | b"c" | b"cr"),
                Some(Language::CSharp) => matches!(word, b"$" | b"$$"),
                Some(Language::Cpp) | Some(Language::C) => matches!(word, b"L" | b"u8" | b"u" | b"U" | b"R"),
                _ => false,
            };
            if prefix_ok {
                let interp = if word.iter().any(|c| *c == b'f' || *c == b'F' || *c == b'$') { STR_INTERP } else { 0 };
                self.string(start, self.i, interp);
                return;
            }
        }
        self.push(TokenKind::Ident, start, self.i);
    }

    /// Lexes a string whose prefix spans `start..q` and whose quote is at `q`.
    fn string(&mut self, start: usize, q: usize, mut flags: u8) {
        let b = self.b;
        let prefix = &b[start..q];
        let rust_raw = self.lang == Some(Language::Rust) && prefix.contains(&b'r');
        let cpp_raw = matches!(self.lang, Some(Language::Cpp)) && prefix.ends_with(b"R");
        let verbatim = self.lang == Some(Language::CSharp) && prefix.contains(&b'@');
        if self.lang == Some(Language::CSharp) && prefix.contains(&b'$') {
            flags |= STR_INTERP;
        }
        // Rust raw strings: r#"..."#, with any number of hashes.
        if rust_raw {
            let mut j = q;
            while j < b.len() && b[j] == b'#' {
                j += 1;
            }
            if j >= b.len() || b[j] != b'"' {
                self.i = j.max(q + 1).min(b.len());
                self.push(TokenKind::Punct, start, self.i);
                return;
            }
            let hashes = j - q;
            let mut close = Vec::with_capacity(hashes + 1);
            close.push(b'"');
            close.extend(std::iter::repeat_n(b'#', hashes));
            let (end, f) = match find(b, &close, j + 1) {
                Some(p) => (p + close.len(), 0),
                None => (b.len(), STR_UNTERMINATED),
            };
            self.i = end;
            self.push_str(start, end, flags | f | STR_MULTILINE, j + 1 - start, close.len());
            return;
        }
        if cpp_raw && b.get(q) == Some(&b'"') {
            // R"delim( ... )delim"
            let open_paren = memchr(b'(', b, q).filter(|p| p - q <= 17);
            if let Some(p) = open_paren {
                let mut close = vec![b')'];
                close.extend_from_slice(&b[q + 1..p]);
                close.push(b'"');
                let (end, f) = match find(b, &close, p + 1) {
                    Some(e) => (e + close.len(), 0),
                    None => (b.len(), STR_UNTERMINATED),
                };
                self.i = end;
                self.push_str(start, end, flags | f | STR_MULTILINE, p + 1 - start, close.len());
                return;
            }
        }
        let quote = b[q];
        // Rust: a quote that does not form a short char literal is a lifetime or label.
        if quote == b'\'' && self.lang == Some(Language::Rust) && prefix.is_empty() && !is_rust_char_literal(b, q) {
            self.i = q + 1;
            self.push(TokenKind::Punct, start, self.i);
            return;
        }
        let triple = b.get(q..q + 3).is_some_and(|t| t[0] == quote && t[1] == quote && t[2] == quote);
        let triple_lang =
            matches!(self.lang, Some(Language::Python | Language::Java | Language::Kotlin | Language::Swift) | None);
        if triple && triple_lang {
            let close = [quote; 3];
            let (end, f) = match find(b, &close, q + 3) {
                Some(p) => (p + 3, 0),
                None => (b.len(), STR_UNTERMINATED),
            };
            flags |= self.interp_in(quote, q + 3, end);
            self.i = end;
            self.push_str(start, end, flags | f | STR_MULTILINE, q + 3 - start, 3);
            return;
        }
        let multiline = quote == b'`' || verbatim || (quote == b'\'' && self.lang == Some(Language::Shell));
        let escapes = !(verbatim
            || (quote == b'`' && self.lang == Some(Language::Go))
            || (quote == b'\'' && self.lang == Some(Language::Shell)));
        let mut j = q + 1;
        let mut f = STR_UNTERMINATED;
        while j < b.len() {
            // Skip to the next byte that can end the literal or escape one.
            match b[j..].iter().position(|c| *c == quote || *c == b'\\' || *c == b'\n') {
                Some(p) => j += p,
                None => {
                    j = b.len();
                    break;
                }
            }
            let c = b[j];
            if c == b'\\' && escapes {
                j += 2;
                continue;
            }
            if c == quote {
                if verbatim && b.get(j + 1) == Some(&quote) {
                    j += 2;
                    continue;
                }
                j += 1;
                f = 0;
                break;
            }
            if c == b'\n' && !multiline {
                break;
            }
            j += 1;
        }
        let end = j.min(b.len());
        if multiline {
            flags |= STR_MULTILINE;
        }
        flags |= self.interp_in(quote, q + 1, end);
        self.i = end;
        self.push_str(start, end, flags | f, q + 1 - start, 1);
    }

    /// Interpolation markers inside a string body, per language.
    fn interp_in(&self, quote: u8, s: usize, e: usize) -> u8 {
        let body = &self.b[s.min(e)..e];
        let has = |pat: &[u8]| find(body, pat, 0).is_some();
        let yes = match self.lang {
            Some(Language::JavaScript | Language::TypeScript) => quote == b'`' && has(b"${"),
            Some(Language::Ruby) => quote != b'\'' && has(b"#{"),
            Some(Language::Shell) if quote == b'`' => true,
            Some(Language::Kotlin) | Some(Language::Php) | Some(Language::Shell) => {
                quote != b'\'' && body.windows(2).any(|w| w[0] == b'$' && (w[1] == b'{' || is_ident_start(w[1])))
            }
            Some(Language::Swift) => has(b"\\("),
            _ => false,
        };
        if yes { STR_INTERP } else { 0 }
    }
}

fn is_rust_char_literal(b: &[u8], q: usize) -> bool {
    match b.get(q + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // 'x' with x one char (up to 4 UTF-8 bytes).
            (2..=5).any(|k| b.get(q + k) == Some(&b'\'')) && !b[q + 1..(q + 5).min(b.len())].contains(&b'\n')
        }
        None => false,
    }
}

fn starts_with_at(b: &[u8], i: usize, pat: &[u8]) -> bool {
    b.get(i..i + pat.len()) == Some(pat)
}

fn memchr(c: u8, b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?.iter().position(|x| *x == c).map(|p| p + from)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(text: &str, lang: Language) -> Vec<(TokenKind, String)> {
        let l = lex(text, Some(lang));
        l.tokens.iter().map(|t| (t.kind, t.text(text).to_string())).collect()
    }

    #[test]
    fn masks_comments_but_keeps_strings_and_positions() {
        let src = "url = \"http://x.org\"  # os.system(cmd)\nrun()";
        let l = lex(src, Some(Language::Python));
        assert_eq!(l.masked.len(), src.len());
        assert!(l.masked.contains("\"http://x.org\""));
        assert!(!l.masked.contains("os.system"));
        assert!(l.masked.ends_with("\nrun()"));
        let c = "let s = \"//not a comment\"; /* strcpy(a, b)\n */ go();";
        let l = lex(c, Some(Language::Rust));
        assert!(l.masked.contains("//not a comment"));
        assert!(!l.masked.contains("strcpy"));
        assert_eq!(l.masked.lines().count(), 2);
    }

    #[test]
    fn masks_non_ascii_comments_without_breaking_utf8() {
        let src = "x = 1 # commentaire élevé ✓\ny = 2";
        let l = lex(src, Some(Language::Python));
        assert_eq!(l.masked.len(), src.len());
        assert!(l.masked.ends_with("\ny = 2"));
        assert!(!l.masked.contains('é'));
    }

    #[test]
    fn lexes_python_prefixes_and_triple_quotes() {
        let k = kinds("q = f\"SELECT {x}\" + '''a\nb''' + rb'\\x00'", Language::Python);
        let strs: Vec<_> = k.iter().filter(|(k, _)| *k == TokenKind::Str).map(|(_, t)| t.as_str()).collect();
        assert_eq!(strs, ["f\"SELECT {x}\"", "'''a\nb'''", "rb'\\x00'"]);
        let l = lex("q = f\"SELECT {x}\"", Some(Language::Python));
        let s = l.tokens.iter().find(|t| t.kind == TokenKind::Str).copied().unwrap_or_else(|| panic!("no string"));
        assert_ne!(s.flags & STR_INTERP, 0);
        assert_eq!(s.str_contents(l.text), "SELECT {x}");
    }

    #[test]
    fn detects_interpolation_per_language() {
        let cases = [
            ("`SELECT ${id}`", Language::JavaScript, true),
            ("'SELECT ${id}'", Language::JavaScript, false),
            ("\"id=#{params[:id]}\"", Language::Ruby, true),
            ("'id=#{x}'", Language::Ruby, false),
            ("$\"id={id}\"", Language::CSharp, true),
            ("\"id=$id\"", Language::Php, true),
            ("\"id=$id\"", Language::Kotlin, true),
            ("\"id=\\(id)\"", Language::Swift, true),
            ("\"id={}\"", Language::Rust, false),
        ];
        for (src, lang, want) in cases {
            let l = lex(src, Some(lang));
            let s = l.tokens.iter().find(|t| t.kind == TokenKind::Str);
            assert!(s.is_some(), "{src}");
            assert_eq!(s.is_some_and(|t| t.flags & STR_INTERP != 0), want, "{src} as {lang}");
        }
    }

    #[test]
    fn survives_fragments() {
        for src in
            ["x = \"unterminated\ny = 2", "/* open comment", "s = `abc ${", "r#\"raw", "'", "\\", "f'", "@\"", "$"]
        {
            for lang in Language::ALL {
                let l = lex(src, Some(lang));
                assert_eq!(l.masked.len(), src.len());
                for t in &l.tokens {
                    assert!(t.start <= t.end && t.end as usize <= src.len());
                }
            }
        }
        let k = kinds("x = \"cut\ny = 2", Language::Java);
        assert!(k.contains(&(TokenKind::Ident, "y".to_string())), "{k:?}");
    }

    #[test]
    fn rust_lifetimes_are_not_strings() {
        let k = kinds("fn f<'a>(s: &'a str) -> char { 'x' } // c", Language::Rust);
        let strs: Vec<_> = k.iter().filter(|(k, _)| *k == TokenKind::Str).map(|(_, t)| t.as_str()).collect();
        assert_eq!(strs, ["'x'"]);
        assert!(k.iter().any(|(k, t)| *k == TokenKind::Comment && t == "// c"));
    }

    #[test]
    fn shell_and_php_hash_rules() {
        let l = lex("echo $# ${#arr} # real comment", Some(Language::Shell));
        assert!(l.masked.contains("$#"));
        assert!(l.masked.contains("${#arr}"));
        assert!(!l.masked.contains("real"));
        let l = lex("#[Route('/x')]\n# c\n$a = 1; // d", Some(Language::Php));
        assert!(l.masked.contains("#[Route"));
        assert!(!l.masked.contains("# c"));
        assert!(!l.masked.contains("// d"));
    }

    #[test]
    fn byte_tables_agree_with_their_definitions() {
        const OPS: [&[u8; 2]; 14] =
            [b"->", b"=>", b"::", b"==", b"!=", b"+=", b"&&", b"||", b"<<", b">>", b"..", b"?.", b"<=", b">="];
        for a in 0..=255u8 {
            assert_eq!(is_ident_start(a), a.is_ascii_alphabetic() || a == b'_' || a == b'$' || a >= 0x80, "{a}");
            assert_eq!(is_ident_continue(a), is_ident_start(a) || a.is_ascii_digit(), "{a}");
            for b in 0..=255u8 {
                assert_eq!(is_two_char_op(a, b), OPS.contains(&&[a, b]), "{a} {b}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_lengths(s in any::<String>(), li in 0usize..15) {
            let lang = Language::ALL.get(li).copied();
            let l = lex(&s, lang);
            prop_assert_eq!(l.masked.len(), s.len());
            for t in &l.tokens {
                prop_assert!(s.is_char_boundary(t.start as usize) && s.is_char_boundary(t.end as usize));
                let _ = t.str_contents(&s);
            }
        }

        #[test]
        fn never_panics_on_code_like_text(s in "[a-z\"'`#/*\\\\$@{}()\\n r=+.;]{0,200}", li in 0usize..15) {
            let lang = Language::ALL.get(li).copied();
            let l = lex(&s, lang);
            prop_assert_eq!(l.masked.len(), s.len());
        }
    }
}
