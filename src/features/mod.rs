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

pub mod hash;
mod shapes;

use crate::lang::Language;
use crate::lexer::{Lexed, STR_INTERP, TokenKind};
use crate::rules::{Mode, RuleSpec, Severity};
use hash::{combine, murmur3_32};

/// Version of the extractor; model files record it and refuse to load under another.
/// Bump it whenever a change moves any feature of any input.
pub const EXTRACTOR_VERSION: u32 = 2;

/// Default width of the hashed weight space: 2^22 coordinates.
pub const DEFAULT_BITS: u8 = 22;

/// A sparse feature vector: sorted unique indices, their values, and the rule-prior offset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Builds feature vectors of a fixed width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extractor {
    mask: u32,
}

impl Extractor {
    /// An extractor for a weight space of `2^bits` coordinates (`bits` clamped to 8..=28).
    #[must_use]
    pub fn new(bits: u8) -> Extractor {
        let bits = bits.clamp(8, 28);
        Extractor { mask: (1u32 << bits) - 1 }
    }

    fn h(&self, ns: u32, s: &[u8]) -> u32 {
        murmur3_32(s, ns) & self.mask
    }

    /// The coordinate of the bias feature.
    #[must_use]
    pub fn bias_index(&self) -> u32 {
        self.h(NS_BIAS, b"bias")
    }

    /// The coordinate of a rule's id feature (for inspecting what the model learned of it).
    #[must_use]
    pub fn rule_index(&self, rule_id: &str) -> u32 {
        self.h(NS_RULE, rule_id.as_bytes())
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
        let mut binary: Vec<u32> = Vec::with_capacity(64);
        let mut tokens: Vec<u32> = Vec::with_capacity(lexed.tokens.len() * 2 + 8);
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
        let masked = &*lexed.masked;
        let code_bytes = masked.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        let code_lines = masked.lines().filter(|l| !l.trim().is_empty()).count();
        let bytes_bucket = usize::BITS - code_bytes.leading_zeros();
        let lines_bucket = usize::BITS - code_lines.leading_zeros();
        binary.push(self.h(NS_SIZE, &[b'b', bytes_bucket as u8]));
        binary.push(self.h(NS_SIZE, &[b'l', lines_bucket as u8]));

        let mut norm = String::with_capacity(64);
        let mut word = String::with_capacity(32);
        let mut prev: Option<u32> = None;
        let code: Vec<_> = lexed.tokens.iter().filter(|t| t.kind != TokenKind::Comment).collect();
        let mut chain: Vec<&str> = Vec::with_capacity(8);
        for (i, t) in code.iter().enumerate() {
            let text = t.text(src);
            norm.clear();
            match t.kind {
                TokenKind::Ident => {
                    push_lower(&mut norm, text, 32);
                    if shapes::is_secretish_name(&norm) {
                        binary.push(self.h(NS_NAME, b"secretish"));
                    }
                }
                TokenKind::Number => {
                    if text.len() <= 5 {
                        push_lower(&mut norm, text, 5);
                    } else {
                        norm.push_str("<num>");
                    }
                }
                TokenKind::Str => {
                    let body = t.str_contents(src);
                    let prev_tok = i.checked_sub(1).and_then(|j| code.get(j)).map(|t| t.text(src));
                    let next_tok = code.get(i + 1).map(|t| t.text(src));
                    let before = code[i.saturating_sub(3)..i].iter().map(|t| t.text(src));
                    let shape = shapes::classify(body, t.flags & STR_INTERP != 0, prev_tok, next_tok, before, lang);
                    for s in shape.names() {
                        binary.push(self.h(NS_SHAPE, s.as_bytes()));
                    }
                    for w in shapes::words(body).take(8) {
                        word.clear();
                        push_lower(&mut word, w, 24);
                        tokens.push(self.h(NS_STRWORD, word.as_bytes()));
                    }
                    norm.push_str(shape.token());
                }
                TokenKind::Punct => norm.push_str(text),
                TokenKind::Comment => continue,
            }
            let u = self.h(NS_TOK, norm.as_bytes());
            tokens.push(u);
            if let Some(p) = prev {
                tokens.push(combine(p, u, NS_BIGRAM) & self.mask);
            }
            prev = Some(u);

            // API chains: ident (sep ident)* ; a call if followed by "(".
            if t.kind == TokenKind::Ident {
                let continues = i >= 2
                    && code[i - 1].kind == TokenKind::Punct
                    && matches!(code[i - 1].text(src), "." | "::" | "->" | "?.")
                    && code[i - 2].kind == TokenKind::Ident;
                if !continues {
                    chain.clear();
                }
                chain.push(text);
                let ends = !code
                    .get(i + 1)
                    .is_some_and(|n| n.kind == TokenKind::Punct && matches!(n.text(src), "." | "::" | "->" | "?."));
                let is_call = code.get(i + 1).is_some_and(|n| n.text(src) == "(");
                if ends && (chain.len() >= 2 || is_call) {
                    self.api_features(&chain, is_call, lang_name, &mut binary);
                    if is_call {
                        self.argument_features(&chain, &code[i + 2..], src, lang, &mut binary);
                    }
                }
            } else if !(t.kind == TokenKind::Punct && matches!(text, "." | "::" | "->" | "?.")) {
                chain.clear();
            }
        }

        // Tokens: unique, L2-normalised as one group.
        tokens.sort_unstable();
        tokens.dedup();
        let tok_val = if tokens.is_empty() { 0.0 } else { 1.0 / (tokens.len() as f32).sqrt() };
        binary.sort_unstable();
        binary.dedup();

        let mut pairs: Vec<(u32, f32)> = Vec::with_capacity(binary.len() + tokens.len());
        pairs.extend(binary.iter().map(|i| (*i, 1.0)));
        pairs.extend(tokens.iter().map(|i| (*i, tok_val)));
        pairs.sort_unstable_by_key(|p| p.0);
        let mut f = Features { idx: Vec::with_capacity(pairs.len()), val: Vec::with_capacity(pairs.len()), offset };
        for (i, v) in pairs {
            if f.idx.last() == Some(&i) {
                if let Some(last) = f.val.last_mut() {
                    *last += v;
                }
            } else {
                f.idx.push(i);
                f.val.push(v);
            }
        }
        f
    }

    fn api_features(&self, chain: &[&str], is_call: bool, lang: &str, out: &mut Vec<u32>) {
        let mut last = String::with_capacity(32);
        if let Some(l) = chain.last() {
            push_lower(&mut last, l, 40);
        }
        let mut two = String::with_capacity(64);
        if chain.len() >= 2 {
            push_lower(&mut two, chain[chain.len() - 2], 40);
            two.push('.');
        }
        two.push_str(&last);
        out.push(self.h(NS_API, two.as_bytes()));
        out.push(self.h(NS_API, last.as_bytes()));
        if is_call {
            out.push(self.h(NS_CALL, two.as_bytes()));
            let mut lc = String::with_capacity(lang.len() + two.len() + 1);
            lc.push_str(lang);
            lc.push(':');
            lc.push_str(&two);
            out.push(self.h(NS_LANG_CALL, lc.as_bytes()));
        }
    }
}

impl Extractor {
    /// What the arguments of a call look like: built dynamically (interpolated or
    /// concatenated strings, format calls), variables, literals only, or untrusted sources,
    /// crossed with the callee. "A sink called with a dynamic argument" generalises across
    /// languages and codebases better than any single token.
    fn argument_features(
        &self,
        chain: &[&str],
        args: &[&crate::lexer::Token],
        src: &str,
        lang: Option<Language>,
        out: &mut Vec<u32>,
    ) {
        let (mut depth, mut dynamic, mut var, mut source, mut any) = (0i32, false, false, false, false);
        for (k, t) in args.iter().take(96).enumerate() {
            let text = t.text(src);
            match t.kind {
                TokenKind::Punct => match text {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => {
                        depth -= 1;
                        if depth < 0 {
                            break;
                        }
                    }
                    "+" | "%" => {
                        dynamic |= args.get(k.wrapping_sub(1)).is_some_and(|p| p.kind == TokenKind::Str)
                            || args.get(k + 1).is_some_and(|n| n.kind == TokenKind::Str)
                    }
                    "." if lang == Some(Language::Php) => dynamic = true,
                    _ => {}
                },
                TokenKind::Str => {
                    any = true;
                    dynamic |= t.flags & STR_INTERP != 0;
                }
                TokenKind::Ident => {
                    any = true;
                    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(text));
                    dynamic |= is(&["format", "sprintf", "concat", "join", "f"]);
                    var |= !is(&["true", "false", "none", "null", "nil", "self", "this"]);
                    source |= is(&SOURCES);
                }
                TokenKind::Number => any = true,
                TokenKind::Comment => {}
            }
        }
        if !any {
            return;
        }
        let mut last = String::with_capacity(48);
        if let Some(l) = chain.last() {
            push_lower(&mut last, l, 40);
        }
        for (on, shape) in [(dynamic, ":dyn"), (var, ":var"), (!var && !dynamic, ":lit"), (source, ":src")] {
            if on {
                let mut k = String::with_capacity(last.len() + 5);
                k.push_str(&last);
                k.push_str(shape);
                out.push(self.h(NS_ARGSHAPE, k.as_bytes()));
                out.push(self.h(NS_ARGSHAPE, shape.as_bytes()));
            }
        }
    }
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor::new(DEFAULT_BITS)
    }
}

/// Appends the ASCII-lowercased `s`, cut to at most `max` bytes at a char boundary.
fn push_lower(out: &mut String, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for c in s[..end].chars() {
        out.push(c.to_ascii_lowercase());
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
        fn never_panics_and_values_are_finite(s in any::<String>(), li in 0usize..15) {
            let lang = Language::ALL.get(li).copied();
            let f = Extractor::default().extract(&lex(&s, lang), lang, []);
            prop_assert!(f.val.iter().all(|v| v.is_finite()));
            prop_assert!(f.idx.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
