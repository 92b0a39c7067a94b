//! Argument shapes: what the arguments of a call look like.

use super::key::Key;
use super::{Extractor, NS_ARGSHAPE};
use crate::lang::Language;
use crate::lexer::{STR_INTERP, Token, TokenKind};

/// Identifiers that name untrusted input in common frameworks (lowercased).
const SOURCES: [&str; 24] = [
    "request",
    "req",
    "params",
    "args",
    "argv",
    "query",
    "body",
    "form",
    "getparameter",
    "formvalue",
    "$_get",
    "$_post",
    "$_request",
    "$_cookie",
    "$_server",
    "input",
    "getenv",
    "stdin",
    "headers",
    "cookies",
    "querystring",
    "payload",
    "user_input",
    "userinput",
];

const SHAPES: [&str; 4] = [":dyn", ":var", ":lit", ":src"];
/// The shapes' own coordinates before masking, hashed at compile time.
const H_SHAPES: [u32; 4] = super::hash_all(&SHAPES, NS_ARGSHAPE);

impl Extractor {
    /// What the arguments of a call look like: built dynamically (interpolated or
    /// concatenated strings, format calls), variables, literals only, or untrusted sources,
    /// crossed with the callee (`callee`, the chain's last link). "A sink called with a dynamic
    /// argument" generalises across languages and codebases better than any single token.
    pub(super) fn argument_features(
        &self,
        callee: &[u8],
        args: &[Token],
        src: &str,
        lang: Option<Language>,
        out: &mut Vec<u32>,
    ) {
        let (mut depth, mut dynamic, mut var, mut source, mut any) = (0i32, false, false, false, false);
        for (k, t) in args.iter().take(96).enumerate() {
            match t.kind {
                TokenKind::Punct => match t.bytes(src) {
                    b"(" | b"[" | b"{" => depth += 1,
                    b")" | b"]" | b"}" => {
                        depth -= 1;
                        if depth < 0 {
                            break;
                        }
                    }
                    b"+" | b"%" => {
                        dynamic |= args.get(k.wrapping_sub(1)).is_some_and(|p| p.kind == TokenKind::Str)
                            || args.get(k + 1).is_some_and(|n| n.kind == TokenKind::Str)
                    }
                    b"." if lang == Some(Language::Php) => dynamic = true,
                    _ => {}
                },
                TokenKind::Str => {
                    any = true;
                    dynamic |= t.flags & STR_INTERP != 0;
                }
                TokenKind::Ident => {
                    any = true;
                    let w = ident_word(t.bytes(src));
                    dynamic |= w == Word::Dynamic;
                    var |= w != Word::Constant;
                    source |= w == Word::Source;
                }
                TokenKind::Number => any = true,
                TokenKind::Comment => {}
            }
        }
        if !any {
            return;
        }
        let mut key = Key::new();
        key.push_lower_cut(callee, 40);
        let callee_len = key.len();
        for (k, on) in [dynamic, var, !var && !dynamic, source].into_iter().enumerate() {
            if on {
                key.truncate(callee_len);
                key.push(SHAPES[k].as_bytes());
                out.push(self.h(NS_ARGSHAPE, key.bytes()));
                out.push(H_SHAPES[k] & self.mask);
            }
        }
    }
}

/// What an identifier among a call's arguments says about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// Builds a value dynamically (`format`, `sprintf`, `concat`, `join`, `f`).
    Dynamic,
    /// A constant, not a variable (`true`, `null`, `self`, ...).
    Constant,
    /// Names untrusted input ([`SOURCES`]).
    Source,
    Other,
}

/// Classifies an identifier, ASCII case-insensitively (the three word lists are disjoint).
fn ident_word(b: &[u8]) -> Word {
    const LONGEST: usize = 12;
    if b.len() > LONGEST {
        return Word::Other;
    }
    let mut buf = [0u8; LONGEST];
    for (d, c) in buf.iter_mut().zip(b) {
        *d = c.to_ascii_lowercase();
    }
    let lower = &buf[..b.len()];
    match lower {
        b"format" | b"sprintf" | b"concat" | b"join" | b"f" => Word::Dynamic,
        b"true" | b"false" | b"none" | b"null" | b"nil" | b"self" | b"this" => Word::Constant,
        _ if SOURCES.iter().any(|s| s.as_bytes() == lower) => Word::Source,
        _ => Word::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn classifies_like_case_insensitive_list_lookups(s in "(?i)(format|f|join|true|none|this|self|request|\\$_get|getparameter|user_input|x|[a-z_$]{0,14})") {
            // The lookups the extractor made before, one list at a time.
            let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(&s));
            let w = ident_word(s.as_bytes());
            prop_assert_eq!(w == Word::Dynamic, is(&["format", "sprintf", "concat", "join", "f"]));
            prop_assert_eq!(w == Word::Constant, is(&["true", "false", "none", "null", "nil", "self", "this"]));
            prop_assert_eq!(w == Word::Source, is(&SOURCES));
        }
    }
}
