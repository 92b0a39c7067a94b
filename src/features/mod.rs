//! Feature extraction: lexed code and rule hits in, a sparse hashed vector out.
//!
//! Namespaces (each hashed with its own murmur3 seed, so equal strings in different namespaces
//! land on different coordinates): a bias; rule hits (rule id, CWE, severity, count); token
//! unigrams and bigrams; words inside string literals; API chains and calls (`os.system`,
//! `pickle.loads`, `innerHTML`), also crossed with the language; string-literal shapes (SQL
//! keywords under concatenation or interpolation, HTML, shell, URLs, secret-like literals);
//! secret-like names; the language; size buckets. Token namespaces are L2-normalised together
//! so long and short snippets are on one scale; the rest are binary.
//!
//! Enforced rule hits also contribute an *offset*, the prior log-odds of their severity, which
//! the model adds to its margin: a high-severity hit is risky before any training, and a new
//! rule needs no retraining to count.

mod args;
pub mod hash;
mod key;
mod shapes;
mod sparse;
pub(crate) mod wire;

use crate::lang::Language;
use crate::lexer::{Lexed, STR_INTERP, Token, TokenKind};
use crate::rules::{Mode, RuleSpec, Severity};
use hash::{combine, murmur3_32};
use key::Key;

/// Version of the extractor; model files record it and refuse to load under another.
/// Bump it whenever a change moves any feature of any input.
pub const EXTRACTOR_VERSION: u32 = 2;

/// Default width of the hashed weight space: 2^22 coordinates.
pub const DEFAULT_BITS: u8 = 22;

/// A sparse feature vector: sorted unique indices, their values, and the rule-prior offset.
/// Serialized as the plain struct, or compactly in the store's blobs ([`wire`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
    /// Sum of the severity priors of the enforced rules that hit (log-odds units).
    pub offset: f32,
}

impl Features {
    /// Number of non-zero coordinates.
    #[must_use]
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
}

/// Prior log-odds of a rule hit by severity: the margin a hit adds before any training.
#[must_use]
pub fn severity_prior(sev: Severity) -> f32 {
    match sev {
        Severity::Low => 0.75,
        Severity::Medium => 1.75,
        Severity::High => 3.25,
        Severity::Critical => 4.5,
    }
}

// Namespace seeds: arbitrary fixed constants; changing any is an extractor version bump.
const NS_BIAS: u32 = 0x0b1a_5001;
const NS_RULE: u32 = 0x7e1e_0002;
const NS_CWE: u32 = 0x0c3e_0003;
const NS_SEV: u32 = 0x05e7_0004;
const NS_TOK: u32 = 0x70c0_0005;
const NS_BIGRAM: u32 = 0xb161_0006;
const NS_STRWORD: u32 = 0x5770_0007;
const NS_API: u32 = 0x0a91_0008;
const NS_CALL: u32 = 0xca11_0009;
const NS_LANG_CALL: u32 = 0x1ca1_000a;
const NS_SHAPE: u32 = 0x5a9e_000b;
const NS_LANG: u32 = 0x1a96_000c;
const NS_SIZE: u32 = 0x512e_000d;
const NS_NAME: u32 = 0x4a3e_000e;
const NS_RULECOUNT: u32 = 0x7c07_000f;
const NS_ARGSHAPE: u32 = 0xa95e_0010;

/// Builds feature vectors of a fixed width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extractor {
    mask: u32,
}

// Coordinates of fixed keys before masking, hashed at compile time.
const H_BIAS: u32 = murmur3_32(b"bias", NS_BIAS);
const H_SECRETISH: u32 = murmur3_32(b"secretish", NS_NAME);
const H_NUM: u32 = murmur3_32(b"<num>", NS_TOK);
const H_SHAPES: [u32; shapes::NAMES.len()] = hash_all(&shapes::NAMES, NS_SHAPE);
const H_STR_TOKENS: [u32; shapes::TOKENS.len()] = hash_all(&shapes::TOKENS, NS_TOK);

const fn hash_all<const N: usize>(keys: &[&str; N], ns: u32) -> [u32; N] {
    let mut out = [0u32; N];
    let mut i = 0;
    while i < N {
        out[i] = murmur3_32(keys[i].as_bytes(), ns);
        i += 1;
    }
    out
}

impl Extractor {
    /// An extractor for a weight space of `2^bits` coordinates (`bits` clamped to 8..=28).
    #[must_use]
    pub fn new(bits: u8) -> Extractor {
        let bits = bits.clamp(8, 28);
        Extractor { mask: (1u32 << bits) - 1 }
    }

    #[inline]
    fn h(&self, ns: u32, s: &[u8]) -> u32 {
        murmur3_32(s, ns) & self.mask
    }

    /// The coordinate of the bias feature.
    #[must_use]
    pub fn bias_index(&self) -> u32 {
        H_BIAS & self.mask
    }

    /// The coordinate of a rule's id feature (for inspecting what the model learned of it).
    #[must_use]
    pub fn rule_index(&self, rule_id: &str) -> u32 {
        self.h(NS_RULE, rule_id.as_bytes())
    }

    /// The coordinate of a severity's feature (shared by every rule of that severity).
    #[must_use]
    pub fn severity_index(&self, severity: Severity) -> u32 {
        self.h(NS_SEV, severity.name().as_bytes())
    }

    /// Extracts the features of lexed code given the rules that hit it (each rule once).
    #[must_use]
    pub fn extract<'r>(
        &self,
        lexed: &Lexed<'_>,
        lang: Option<Language>,
        rules_hit: impl IntoIterator<Item = &'r RuleSpec>,
    ) -> Features {
        let src = lexed.text;
        // Room for every token push, so the vector never grows: a unigram and a bigram per
        // token, and up to eight words per string literal.
        let n_str = lexed.tokens.iter().filter(|t| t.kind == TokenKind::Str).count();
        let mut tokens: Vec<u32> = Vec::with_capacity(lexed.tokens.len() * 2 + n_str * 8);
        // The last coordinate pushed into each of 64 slots: a repeat found there is not pushed
        // again (the sort below removes the others), which spares sorting most repeats.
        let mut recent = [u32::MAX; 64];
        let mut binary: Vec<u32> = Vec::with_capacity(128);
        let mut offset = 0.0f32;

        binary.push(self.bias_index());
        let lang_name = lang.map_or("unknown", Language::name);
        binary.push(self.h(NS_LANG, lang_name.as_bytes()));

        let mut n_rules = 0u32;
        for r in rules_hit {
            if r.mode == Mode::Monitor {
                continue;
            }
            n_rules += 1;
            offset += severity_prior(r.severity);
            binary.push(self.h(NS_RULE, r.id.as_bytes()));
            binary.push(self.h(NS_CWE, r.cwe.as_bytes()));
            binary.push(self.h(NS_SEV, r.severity.name().as_bytes()));
        }
        binary.push(self.h(NS_RULECOUNT, &[n_rules.min(4) as u8]));

        // Size buckets over the code without comments: log2 of bytes, and of non-blank lines.
        let (code_bytes, code_lines) = code_size(&lexed.masked);
        let bytes_bucket = usize::BITS - code_bytes.leading_zeros();
        let lines_bucket = usize::BITS - code_lines.leading_zeros();
        binary.push(self.h(NS_SIZE, &[b'b', bytes_bucket as u8]));
        binary.push(self.h(NS_SIZE, &[b'l', lines_bucket as u8]));

        // The tokens without comments (the lexer's own list when there are none).
        let filtered: Vec<Token>;
        let code: &[Token] = if lexed.tokens.iter().any(|t| t.kind == TokenKind::Comment) {
            filtered = lexed.tokens.iter().filter(|t| t.kind != TokenKind::Comment).copied().collect();
            &filtered
        } else {
            &lexed.tokens
        };
        let mut prev: Option<u32> = None;
        let mut key = Key::new();
        for (i, t) in code.iter().enumerate() {
            let u = match t.kind {
                TokenKind::Ident => {
                    key.truncate(0);
                    key.push_lower_cut(t.bytes(src), 32);
                    if shapes::is_secretish_lower(key.bytes()) {
                        binary.push(H_SECRETISH & self.mask);
                    }
                    self.h(NS_TOK, key.bytes())
                }
                TokenKind::Number if t.bytes(src).len() <= 5 => {
                    key.truncate(0);
                    key.push_lower(t.bytes(src));
                    self.h(NS_TOK, key.bytes())
                }
                TokenKind::Number => H_NUM & self.mask,
                TokenKind::Str => {
                    let body = t.str_contents(src).as_bytes();
                    let prev_tok = i.checked_sub(1).map(|j| code[j].bytes(src));
                    let next_tok = code.get(i + 1).map(|t| t.bytes(src));
                    let before = code[i.saturating_sub(3)..i].iter().map(|t| t.bytes(src));
                    let shape = shapes::classify(body, t.flags & STR_INTERP != 0, prev_tok, next_tok, before, lang);
                    let mut names = shape.mask();
                    while names != 0 {
                        binary.push(H_SHAPES[names.trailing_zeros() as usize] & self.mask);
                        names &= names - 1;
                    }
                    for w in shapes::words(body).take(8) {
                        key.truncate(0);
                        key.push_lower(w);
                        push_new(&mut tokens, &mut recent, self.h(NS_STRWORD, key.bytes()));
                    }
                    H_STR_TOKENS[shape.token_index()] & self.mask
                }
                TokenKind::Punct => self.h(NS_TOK, t.bytes(src)),
                TokenKind::Comment => continue,
            };
            push_new(&mut tokens, &mut recent, u);
            if let Some(p) = prev {
                push_new(&mut tokens, &mut recent, combine(p, u, NS_BIGRAM) & self.mask);
            }
            prev = Some(u);

            // API chains: ident (sep ident)* ; a call if followed by "(". Only the chain's last
            // two links count: this ident and, when the chain continues, the ident two back.
            if t.kind == TokenKind::Ident {
                let next = code.get(i + 1);
                let ends = !next.is_some_and(|n| is_chain_sep(n, src));
                let is_call = next.is_some_and(|n| n.bytes(src) == b"(");
                let continues = i >= 2 && is_chain_sep(&code[i - 1], src) && code[i - 2].kind == TokenKind::Ident;
                if ends && (continues || is_call) {
                    let before_last = continues.then(|| code[i - 2].bytes(src));
                    let last = t.bytes(src);
                    self.api_features(before_last, last, is_call, lang_name, &mut binary);
                    if is_call {
                        self.argument_features(last, &code[i + 2..], src, lang, &mut binary);
                    }
                }
            }
        }

        // Tokens: unique, L2-normalised as one group.
        let bits = self.mask.count_ones();
        let mut scratch = Vec::new();
        sparse::sort_unique(&mut tokens, &mut scratch, bits);
        let tok_val = if tokens.is_empty() { 0.0 } else { 1.0 / (tokens.len() as f32).sqrt() };
        sparse::sort_unique(&mut binary, &mut scratch, bits);
        sparse::merge(&binary, &tokens, tok_val, offset)
    }

    /// API features of a chain ending in `last` (the link before it, if any: `before_last`).
    fn api_features(&self, before_last: Option<&[u8]>, last: &[u8], is_call: bool, lang: &str, out: &mut Vec<u32>) {
        // "lang:before.last", hashed whole and by suffixes: "before.last" and "last".
        let mut key = Key::new();
        key.push(lang.as_bytes());
        key.push(b":");
        let two_at = key.len();
        if let Some(b) = before_last {
            key.push_lower_cut(b, 40);
            key.push(b".");
        }
        let last_at = key.len();
        key.push_lower_cut(last, 40);
        let two = &key.bytes()[two_at..];
        out.push(self.h(NS_API, two));
        out.push(self.h(NS_API, &key.bytes()[last_at..]));
        if is_call {
            out.push(self.h(NS_CALL, two));
            out.push(self.h(NS_LANG_CALL, key.bytes()));
        }
    }
}

/// Pushes `x` unless `recent` shows it was just pushed (a cheap partial dedup).
#[inline]
fn push_new(v: &mut Vec<u32>, recent: &mut [u32; 64], x: u32) {
    let slot = &mut recent[x as usize % 64];
    if *slot != x {
        *slot = x;
        v.push(x);
    }
}

fn is_chain_sep(t: &Token, src: &str) -> bool {
    t.kind == TokenKind::Punct && matches!(t.bytes(src), b"." | b"::" | b"->" | b"?.")
}

/// Bytes that are not ASCII whitespace, and lines that are not blank (not only whitespace as
/// `str::trim` sees it: ASCII whitespace, the vertical tab, and Unicode spaces).
fn code_size(text: &str) -> (usize, usize) {
    let b = text.as_bytes();
    // Branch-free, summed in bytes over chunks that cannot overflow one, so it vectorises.
    let bytes: usize = b
        .chunks(255)
        .map(|ch| {
            let n: u8 = ch
                .iter()
                .map(|&c| u8::from(!((c == b' ') | (c == b'\n') | (c == b'\t') | (c == b'\r') | (c == 0x0c))))
                .fold(0, u8::wrapping_add);
            usize::from(n)
        })
        .sum();
    let mut lines = 0;
    let mut i = 0;
    while i < b.len() {
        // The line's first byte that `trim` keeps (ASCII whitespace and the vertical tab go).
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | 0x0b | 0x0c) {
            i += 1;
        }
        match b.get(i) {
            None => break,
            Some(b'\n') => i += 1,
            Some(&c) => {
                let end = next_newline(b, i);
                // Past ASCII, `trim` decides (Unicode spaces are blank too).
                lines += usize::from(c.is_ascii() || !text[i..end].trim().is_empty());
                i = end + 1;
            }
        }
    }
    (bytes, lines)
}

/// The index of the first `\n` in `b` from `i`, or `b.len()`: eight bytes at a time (a zero
/// byte of `word ^ 0x0a0a..` shows a newline; the lowest flagged byte is always a true one).
fn next_newline(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ NEWLINES;
        let found = x.wrapping_sub(ONES) & !x & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    b[i.min(b.len())..].iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p)
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor::new(DEFAULT_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::lex;
    use proptest::prelude::*;

    fn feats(src: &str, lang: Language) -> Features {
        Extractor::default().extract(&lex(src, Some(lang)), Some(lang), [])
    }

    #[test]
    fn vectors_are_sorted_unique_and_within_the_space() {
        let f = feats("cur.execute(\"SELECT * FROM t WHERE a = '\" + a + \"'\")", Language::Python);
        assert!(f.idx.windows(2).all(|w| w[0] < w[1]));
        assert!(f.idx.iter().all(|i| *i < 1 << DEFAULT_BITS));
        assert_eq!(f.idx.len(), f.val.len());
        assert_eq!(f.offset, 0.0);
    }

    #[test]
    fn comments_do_not_change_features() {
        let a = feats("x = compute(y)\n", Language::Python);
        let b = feats("x = compute(y)  # pickle.loads os.system\n", Language::Python);
        assert_eq!(a.idx, b.idx);
    }

    #[test]
    fn fixed_inputs_hash_to_fixed_coordinates() {
        // Guards stability across platforms and releases: a change here is an extractor bump.
        let e = Extractor::default();
        assert_eq!(e.bias_index(), murmur3_32(b"bias", NS_BIAS) & ((1 << 22) - 1));
        assert_eq!(e.bias_index(), 3_984_634);
        assert_eq!(e.rule_index("python.sql.string-concat"), 973_144);
        let f = feats("os.system(cmd)", Language::Python);
        assert_eq!(f.len(), 22);
        assert_eq!(&f.idx[..3], &[220_363, 464_765, 504_077]);
    }

    #[test]
    fn api_calls_and_shapes_are_features() {
        let e = Extractor::default();
        let has = |f: &Features, ns: u32, s: &str| f.idx.contains(&(murmur3_32(s.as_bytes(), ns) & e.mask));
        let f = feats("data = pickle.loads(request.data)", Language::Python);
        assert!(has(&f, NS_CALL, "pickle.loads"));
        assert!(has(&f, NS_API, "request.data"));
        let f = feats("q = \"SELECT * FROM users WHERE id = \" + uid", Language::Java);
        assert!(has(&f, NS_SHAPE, "sql+concat"));
        let f = feats("q = \"SELECT * FROM users WHERE id = ?\"", Language::Java);
        assert!(has(&f, NS_SHAPE, "sql"));
        assert!(!has(&f, NS_SHAPE, "sql+concat"));
        let f = feats("el.innerHTML = html", Language::JavaScript);
        assert!(has(&f, NS_API, "el.innerhtml"));
    }

    proptest! {
        #[test]
        fn finds_the_next_newline_like_a_plain_search(b in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..40), i in 0usize..45) {
            let want = b.get(i..).and_then(|r| r.iter().position(|c| *c == b'\n')).map_or(b.len(), |p| i + p);
            prop_assert_eq!(next_newline(&b, i), want.max(i.min(b.len())));
        }

        #[test]
        fn code_size_counts_like_the_str_methods(s in "[ a\t\r\n\x0b\x0c\u{a0}\u{85}\u{3000}é\x1f]{0,40}") {
            let bytes = s.bytes().filter(|b| !b.is_ascii_whitespace()).count();
            let lines = s.lines().filter(|l| !l.trim().is_empty()).count();
            prop_assert_eq!(code_size(&s), (bytes, lines));
        }

        #[test]
        fn never_panics_and_values_are_finite(s in any::<String>(), li in 0usize..15) {
            let lang = Language::ALL.get(li).copied();
            let f = Extractor::default().extract(&lex(&s, lang), lang, []);
            prop_assert!(f.val.iter().all(|v| v.is_finite()));
            prop_assert!(f.idx.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
