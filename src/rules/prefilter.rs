//! The literal prefilter (issue 5): which literals every match of a pattern must contain, and
//! one Aho-Corasick automaton over all of them, so that a scan reads
//! the text once and then runs only the patterns whose literals occur.
//!
//! It replaces one `RegexSet` per language, whose lazy DFA had to be determinized anew for
//! every text it had not seen (10 to 60 ms per new request body) and kept up to 64 MiB of
//! cache per set and thread. An automaton over literals costs the same on new and repeated
//! text, holds no per-thread state, and each pattern's own regex is small.
//!
//! A literal condition is necessary, never sufficient: a pattern whose condition holds still
//! runs its own regex, so the hits are exactly those of running every pattern
//! (tests/rules_golden.rs). The analysis follows the "required factors" idea of trigram
//! indexes (Russ Cox, "Regular Expression Matching with a Trigram Index", 2012) on exact
//! literal sets instead of trigrams.

use aho_corasick::Anchored;
use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use regex_syntax::hir::{Class, Hir, HirKind, Repetition};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// A literal, folded: ASCII-lowercased, with the two non-ASCII letters that Unicode case
/// folding puts in `(?i)` classes of ASCII letters (`ſ` U+017F for `s`, `K` U+212A for `k`)
/// written as those letters. Texts are folded the same way before the automaton, which matches
/// ASCII-case-insensitively. Folding maps each character on its own, so a text that contains a
/// string contains its folded form after folding: the condition stays necessary, and `(?i)`
/// needs no expansion into every case combination.
type Lit = Vec<u8>;
type LitSet = BTreeSet<Lit>;

/// Largest exact set kept for a sub-expression (beyond it, only its clauses are kept).
const MAX_EXACT: usize = 64;
/// Largest class expanded into single-character literals.
const MAX_CLASS: u32 = 16;
/// Largest alternative set of one clause.
const MAX_CLAUSE: usize = 256;
/// Clauses kept per sub-expression and per pattern (the most selective ones).
const MAX_CLAUSES: usize = 3;
/// A clause whose shortest literal is shorter than this is dropped at the top: one byte such
/// as `(` is in nearly every text and would only slow the automaton down.
const MIN_LIT: usize = 2;

/// A necessary condition for a pattern to match: every clause has one of its literals in the
/// text. No clauses: the pattern runs on every text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Need {
    clauses: Vec<Vec<Lit>>,
}

impl Need {
    /// The condition of a pattern, from its HIR (parsed with the flags the regex is built with).
    pub(crate) fn of(hir: &Hir) -> Need {
        let mut clauses = info(hir).into_clauses();
        clauses.retain(|c| c.iter().all(|l| l.len() >= MIN_LIT));
        prune(&mut clauses);
        Need { clauses: clauses.into_iter().map(|c| c.into_iter().collect()).collect() }
    }

    /// Whether the pattern runs on every text.
    #[cfg(test)]
    pub(crate) fn is_always(&self) -> bool {
        self.clauses.is_empty()
    }
}

/// What the analysis knows of a sub-expression.
#[derive(Debug, Default)]
struct Info {
    /// Every string it can match, when they are few.
    exact: Option<LitSet>,
    /// Each clause: a set of literals one of which every match contains. Never holds an
    /// empty set nor the empty literal. Unused when `exact` is known.
    clauses: Vec<LitSet>,
}

impl Info {
    fn exact(set: LitSet) -> Info {
        Info { exact: Some(set), clauses: Vec::new() }
    }

    fn into_clauses(self) -> Vec<LitSet> {
        match self.exact {
            Some(e) => usable(e).into_iter().collect(),
            None => self.clauses,
        }
    }
}

/// `ſ` and `K` in UTF-8; in valid UTF-8 these byte strings are always those characters.
const LONG_S: &[u8] = "\u{17f}".as_bytes();
const KELVIN: &[u8] = "\u{212a}".as_bytes();

/// The folded form of a literal (see [`Lit`]).
fn fold(bytes: &[u8]) -> Lit {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(LONG_S) {
            out.push(b's');
            i += LONG_S.len();
        } else if bytes[i..].starts_with(KELVIN) {
            out.push(b'k');
            i += KELVIN.len();
        } else {
            out.push(bytes[i].to_ascii_lowercase());
            i += 1;
        }
    }
    out
}

/// A text with `ſ` and `K` written as `s` and `k`, as [`fold`] writes literals (ASCII case is
/// folded byte by byte during the scan). Folding changes positions, which no caller needs: a
/// scan only asks which literals occur.
fn fold_text(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || !text.contains(['\u{17f}', '\u{212a}']) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.replace('\u{17f}', "s").replace('\u{212a}', "k"))
    }
}

fn empty() -> LitSet {
    LitSet::from([Lit::new()])
}

/// A set as a clause, if it requires something (no empty literal) and is not too wide.
fn usable(set: LitSet) -> Option<LitSet> {
    (!set.is_empty() && !set.contains(&Lit::new()) && set.len() <= MAX_CLAUSE).then_some(set)
}

/// Selectivity, higher is better: the shortest literal first, then fewer alternatives.
fn score(c: &LitSet) -> (usize, std::cmp::Reverse<usize>) {
    (c.iter().map(Vec::len).min().unwrap_or(0), std::cmp::Reverse(c.len()))
}

/// Keeps the most selective clauses, without duplicates.
fn prune(clauses: &mut Vec<LitSet>) {
    clauses.sort_by(|a, b| score(b).cmp(&score(a)).then_with(|| a.cmp(b)));
    clauses.dedup();
    clauses.truncate(MAX_CLAUSES);
}

/// Every concatenation of a string of `a` and one of `b`, if there are few.
fn cross(a: &LitSet, b: &LitSet) -> Option<LitSet> {
    if a.len().saturating_mul(b.len()) > MAX_EXACT {
        return None;
    }
    Some(a.iter().flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat())).collect())
}

fn info(h: &Hir) -> Info {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(empty()),
        HirKind::Literal(l) => Info::exact(LitSet::from([fold(&l.0)])),
        HirKind::Class(c) => Info { exact: class(c), clauses: Vec::new() },
        HirKind::Capture(c) => info(&c.sub),
        HirKind::Repetition(r) => repetition(r),
        HirKind::Concat(hs) => concat(hs),
        HirKind::Alternation(hs) => alternation(hs),
    }
}

/// A small class as its members (UTF-8 encoded, ASCII-lowercased).
fn class(c: &Class) -> Option<LitSet> {
    match c {
        Class::Unicode(u) => {
            let n: u32 = u.iter().map(|r| u32::from(r.end()) - u32::from(r.start()) + 1).sum();
            (n <= MAX_CLASS).then(|| {
                u.iter()
                    .flat_map(|r| (u32::from(r.start())..=u32::from(r.end())).filter_map(char::from_u32))
                    .map(|ch| fold(ch.to_string().as_bytes()))
                    .collect()
            })
        }
        Class::Bytes(b) => {
            let n: u32 = b.iter().map(|r| u32::from(r.end()) - u32::from(r.start()) + 1).sum();
            (n <= MAX_CLASS).then(|| b.iter().flat_map(|r| r.start()..=r.end()).map(|x| fold(&[x])).collect())
        }
    }
}

fn repetition(r: &Repetition) -> Info {
    let sub = info(&r.sub);
    if r.max == Some(0) {
        return Info::exact(empty());
    }
    if let (Some(e), Some(max)) = (&sub.exact, r.max) {
        // Bounded and small, such as `[rb]?` or `-{1,2}`: every repetition count.
        let mut all = if r.min == 0 { empty() } else { LitSet::new() };
        let mut power = Some(empty());
        for k in 1..=max.min(8) {
            power = power.and_then(|p| cross(&p, e));
            match &power {
                Some(p) if k >= r.min => all.extend(p.iter().cloned()),
                Some(_) => {}
                None => break,
            }
        }
        if power.is_some() && max <= 8 && all.len() <= MAX_EXACT {
            return Info::exact(all);
        }
    }
    if r.min == 0 {
        return Info::default();
    }
    // At least one copy of the sub-expression is in every match.
    Info { exact: None, clauses: sub.into_clauses() }
}

fn concat(hs: &[Hir]) -> Info {
    let mut clauses = Vec::new();
    // The exact strings of the current run of exact children, glued together.
    let mut run = empty();
    let mut all_exact = true;
    for h in hs {
        let i = info(h);
        match i.exact {
            Some(e) => match cross(&run, &e) {
                Some(x) => run = x,
                None => {
                    clauses.extend(usable(std::mem::replace(&mut run, e)));
                    all_exact = false;
                }
            },
            None => {
                clauses.extend(usable(std::mem::replace(&mut run, empty())));
                clauses.extend(i.clauses);
                all_exact = false;
            }
        }
    }
    if all_exact {
        return Info::exact(run);
    }
    clauses.extend(usable(run));
    prune(&mut clauses);
    Info { exact: None, clauses }
}

fn alternation(hs: &[Hir]) -> Info {
    let infos: Vec<Info> = hs.iter().map(info).collect();
    if infos.iter().all(|i| i.exact.is_some()) {
        let union: LitSet = infos.iter().filter_map(|i| i.exact.as_ref()).flatten().cloned().collect();
        if union.len() <= MAX_EXACT {
            return Info::exact(union);
        }
    }
    // One branch matches: the union of each branch's best clause is required.
    let mut union = LitSet::new();
    for i in infos {
        let mut cs = i.into_clauses();
        prune(&mut cs);
        let Some(best) = cs.into_iter().next() else {
            return Info::default();
        };
        union.extend(best);
    }
    Info { exact: None, clauses: usable(union).into_iter().collect() }
}

/// Every literal of a pack, interned, and then one automaton over all of them: a scan reads a
/// text once whatever its language and whether or not it has comments (one automaton for the
/// pack is smaller than one per language, and one read of the raw text serves the masked text
/// as well).
#[derive(Debug, Default)]
pub(crate) struct Literals {
    ids: BTreeMap<Lit, u32>,
    /// `None` when the pack has no literal (or, never seen, when the automaton fails to build:
    /// then every pattern runs).
    ac: Option<NFA>,
    count: usize,
    /// The ids of the literals that hold a space, as a bit set (see [`Literals::scan_lexed`]).
    spaced: Vec<u64>,
}

/// A pattern's condition as literal ids of its pack's [`Literals`] (no clauses: always run).
#[derive(Debug, Clone, Default)]
pub(crate) struct Condition(Box<[Box<[u32]>]>);

/// Which literals of a pack occur in a text.
#[derive(Debug)]
pub(crate) struct Seen {
    bits: Vec<u64>,
    /// No automaton: every condition holds.
    all: bool,
}

impl Literals {
    /// Interns a pattern's literals.
    pub(crate) fn condition(&mut self, need: &Need) -> Condition {
        let mut id = |l: &Lit| {
            let next = self.ids.len() as u32;
            *self.ids.entry(l.clone()).or_insert(next)
        };
        Condition(need.clauses.iter().map(|c| c.iter().map(&mut id).collect()).collect())
    }

    /// Builds the automaton over every literal interned so far.
    pub(crate) fn build(mut self) -> Literals {
        let mut lits: Vec<&[u8]> = vec![&[]; self.ids.len()];
        for (l, id) in &self.ids {
            lits[*id as usize] = l;
        }
        self.count = lits.len();
        self.spaced = vec![0; self.count.div_ceil(64)];
        for (i, l) in lits.iter().enumerate() {
            if l.contains(&b' ') {
                self.spaced[i / 64] |= 1 << (i % 64);
            }
        }
        self.ac = (!lits.is_empty())
            .then(|| {
                // A contiguous NFA, not a DFA: over the built-in pack's 5,210 literals the DFA
                // holds 15.5 MB (18.5 MB of a server's resident memory, with the prompt pack's),
                // the NFA 0.65 MB. Alone it scans about as fast, but in a server, where the
                // request path shares the caches, rank ran about 30% faster (BENCHMARKS.md).
                // Literals and texts are both folded to lower case, so it matches
                // case-sensitively: one transition per letter instead of two.
                NFA::builder()
                    .build(&lits)
                    .map_err(|e| tracing::error!(error = %e, "literal prefilter failed to build; every rule runs"))
                    .ok()
            })
            .flatten();
        self.ids = BTreeMap::new();
        self
    }

    /// The literals that may occur in the masked text and those that occur in the raw text of
    /// a lexed text, from one pass over the raw text.
    ///
    /// Masking turns every comment byte but line breaks into a space, so an occurrence in the
    /// masked text of a literal without a space touches no byte that masking changed: it
    /// occurs in the raw text too. The masked set is therefore the raw set plus every literal
    /// that holds a space, a superset, which keeps every condition necessary (a pattern may
    /// run on masked text whose literals occur only in a comment, and then finds nothing
    /// there).
    pub(crate) fn scan_lexed(&self, masked: &str, raw: &str) -> (Seen, Option<Seen>) {
        if masked == raw {
            return (self.scan(raw), None);
        }
        let raw_seen = self.scan(raw);
        let mut masked_seen = Seen { bits: raw_seen.bits.clone(), all: raw_seen.all };
        for (m, s) in masked_seen.bits.iter_mut().zip(&self.spaced) {
            *m |= s;
        }
        (masked_seen, Some(raw_seen))
    }

    /// The literals that occur in `text`.
    ///
    /// The automaton is stepped byte by byte here rather than through the crate's overlapping
    /// iterator: code holds about one literal occurrence every six bytes (the corpus: 148,580
    /// in 929 KB), and the iterator pays for each one it reports. Over the corpus the iterator
    /// ran at 50-76 MB/s, this loop at 75-97 MB/s (BENCHMARKS.md). Only which literals occur
    /// is kept, not where.
    pub(crate) fn scan(&self, text: &str) -> Seen {
        let mut seen = Seen { bits: vec![0; self.count.div_ceil(64)], all: true };
        let Some(nfa) = &self.ac else { return seen };
        let Ok(mut sid) = nfa.start_state(Anchored::No) else { return seen };
        let text = fold_text(text);
        for b in text.bytes() {
            sid = nfa.next_state(Anchored::No, sid, b.to_ascii_lowercase());
            if nfa.is_special(sid) && nfa.is_match(sid) {
                for i in 0..nfa.match_len(sid) {
                    let p = nfa.match_pattern(sid, i).as_usize();
                    if let Some(w) = seen.bits.get_mut(p / 64) {
                        *w |= 1 << (p % 64);
                    }
                }
            }
        }
        seen.all = false;
        seen
    }
}

impl Seen {
    fn has(&self, id: u32) -> bool {
        self.all || self.bits.get(id as usize / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn holds(&self, c: &Condition) -> bool {
        c.0.iter().all(|clause| clause.iter().any(|l| self.has(*l)))
    }
}

/// The patterns of one language and subject (masked or raw text), with their conditions, and
/// an index from literal to the patterns whose first clause holds it: a scan looks only at the
/// patterns one of whose literals occurred (a few dozen of the thousand or so of a language)
/// instead of testing every condition.
#[derive(Debug, Default)]
pub(crate) struct Prefilter {
    /// (rule, pattern within the rule, condition), in rule order.
    entries: Vec<(u32, u32, Condition)>,
    /// The entries without clauses: they run on every text.
    always: Vec<u32>,
    /// Literal id `l`'s entries are `by_literal[starts[l]..starts[l + 1]]`.
    starts: Vec<u32>,
    by_literal: Vec<u32>,
}

impl Prefilter {
    pub(crate) fn new(entries: impl IntoIterator<Item = (u32, u32, Condition)>) -> Prefilter {
        let entries: Vec<(u32, u32, Condition)> = entries.into_iter().collect();
        let mut always = Vec::new();
        // (literal, entry) for each literal of each entry's first clause.
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for (e, (_, _, cond)) in entries.iter().enumerate() {
            match cond.0.first() {
                None => always.push(e as u32),
                Some(first) => pairs.extend(first.iter().map(|l| (*l, e as u32))),
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let literals = pairs.last().map_or(0, |(l, _)| *l as usize + 1);
        let mut starts = vec![0u32; literals + 1];
        for (l, _) in &pairs {
            starts[*l as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let by_literal = pairs.into_iter().map(|(_, e)| e).collect();
        Prefilter { entries, always, starts, by_literal }
    }

    /// Calls `f(rule, pattern)` for every pattern whose condition holds, in rule order.
    pub(crate) fn candidates(&self, seen: &Seen, mut f: impl FnMut(u32, u32)) {
        if seen.all {
            for (rule, pattern, _) in &self.entries {
                f(*rule, *pattern);
            }
            return;
        }
        // The entries one of whose first clause's literals occurred, and those that always run.
        let mut marked = vec![0u64; self.entries.len().div_ceil(64)];
        let mut mark = |e: u32| marked[e as usize / 64] |= 1 << (e % 64);
        self.always.iter().for_each(|e| mark(*e));
        let literals = self.starts.len().saturating_sub(1);
        for l in set_bits(&seen.bits).take_while(|l| *l < literals) {
            let range = self.starts[l] as usize..self.starts[l + 1] as usize;
            self.by_literal[range].iter().for_each(|e| mark(*e));
        }
        for e in set_bits(&marked) {
            if let Some((rule, pattern, cond)) = self.entries.get(e)
                && seen.holds(cond)
            {
                f(*rule, *pattern);
            }
        }
    }
}

/// The positions of the set bits of a bit set, in ascending order.
fn set_bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(w, word)| {
        let mut bits = *word;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                i
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Language;
    use crate::lexer::{Lexed, lex};
    use crate::rules::{Hit, LazyRegex, RulePack, ordered};

    fn need(p: &str) -> Vec<Vec<String>> {
        let hir = regex_syntax::ParserBuilder::new().multi_line(true).build().parse(p).expect("parses");
        Need::of(&hir)
            .clauses
            .into_iter()
            .map(|c| c.into_iter().map(|l| String::from_utf8(l).expect("utf-8")).collect())
            .collect()
    }

    #[test]
    fn literals_concatenate_and_fold_case() {
        assert_eq!(need(r"os\.system\("), [["os.system("]]);
        assert_eq!(need(r"(?i)\bselect\b"), [["select"]], "ſ (U+017F) is folded to s");
        assert_eq!(need(r"(?i)kEy|\u{212a}i"), [["key", "ki"]], "K (U+212A) is folded to k");
        assert_eq!(
            fold_text("ſe\u{212a}ecT É"),
            "sekecT É",
            "ASCII case is folded during the scan, É by the literal sets"
        );
        assert_eq!(need(r#"\b[rb]?f""#), [["bf\"", "f\"", "rf\""]]);
        assert_eq!(need(r"-{1,2}insecure"), [["--insecure", "-insecure"]]);
    }

    #[test]
    fn every_branch_contributes_and_optional_parts_require_nothing() {
        assert_eq!(need(r"(?:eval|exec)\(\s*\w+"), [["eval(", "exec("]]);
        assert_eq!(need(r"\w+\.(?:md5|sha1)\(\s*request"), [vec!["request"], vec![".md5(", ".sha1("]]);
        assert!(need(r"(?:md5|\w+)\(").is_empty());
        assert!(need(r"(?:password)?\w+").is_empty());
        assert!(need(r"\w+=\d+").is_empty(), "one-byte literals are no filter");
        assert_eq!(need(r"(?:token\s*)+="), [["token"]]);
    }

    #[test]
    fn a_pattern_runs_only_when_each_clause_has_a_literal_in_the_text() {
        let hir = |p: &str| regex_syntax::ParserBuilder::new().build().parse(p).expect("parses");
        let needs = [Need::of(&hir(r"md5\(.*request")), Need::of(&hir(r"\w+")), Need::of(&hir(r"(?i)SELECT"))];
        let mut lits = Literals::default();
        let conds: Vec<Condition> = needs.iter().map(|n| lits.condition(n)).collect();
        let lits = lits.build();
        let pf = Prefilter::new(conds.into_iter().enumerate().map(|(i, c)| (i as u32, 0, c)));
        let run = |t: &str| {
            let mut v = Vec::new();
            pf.candidates(&lits.scan(t), |r, _| v.push(r));
            v
        };
        assert_eq!(run("md5(x)"), [1]);
        assert_eq!(run("MD5(request) select"), [0, 1, 2]);
        assert_eq!(run("ſelect"), [1, 2]);
    }

    /// The reference: every applicable pattern of the pack run on the text, no prefilter, and
    /// no ASCII twins.
    fn scan_everything(pack: &RulePack, lexed: &Lexed<'_>, lang: Option<Language>) -> Vec<Hit> {
        let mut hits = Vec::new();
        for (ri, r) in pack.rules.iter().enumerate() {
            if !r.spec.applies_to(lang) {
                continue;
            }
            let subject = r.subject(lexed);
            let mut caches = crate::rules::empty_caches(r.cache_count());
            for pi in 0..r.patterns.len() {
                r.pattern_hits(pi, subject, false, &mut caches, &mut |s, e| {
                    hits.push(Hit { rule: ri as u32, start: s as u32, end: e as u32 });
                });
            }
        }
        ordered(hits)
    }

    #[test]
    fn the_prefilter_keeps_every_hit_of_the_corpus_and_the_rule_examples() {
        let pack = RulePack::builtin().expect("built-in rules");
        let corpus = crate::corpus::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus"))
            .expect("corpus");
        let mut inputs: Vec<(Option<Language>, String)> = corpus.into_iter().map(|s| (s.lang(), s.code)).collect();
        for r in &pack.rules {
            for ex in r.spec.examples.insecure.iter().chain(&r.spec.examples.secure) {
                let lang = r.spec.example_language();
                inputs.push((lang, ex.clone()));
                inputs.push((lang, ex.to_ascii_uppercase()));
                inputs.push((lang, ex.replace('s', "ſ").replace('k', "\u{212a}")));
                inputs.push((None, ex.clone()));
            }
        }
        let (mut differ, mut total) = (Vec::new(), 0);
        for (lang, text) in &inputs {
            let lexed = lex(text, *lang);
            let want = scan_everything(&pack, &lexed, *lang);
            total += want.len();
            if pack.scan(&lexed, *lang) != want {
                differ.push(format!("{lang:?}: {text:?}"));
            }
        }
        assert!(total > 3000, "the inputs exercise the rules ({total} hits)");
        assert!(differ.is_empty(), "{} inputs differ:\n{}", differ.len(), differ.join("\n"));
    }

    #[test]
    fn one_read_of_the_raw_text_serves_the_masked_text_too() {
        use crate::rules::{CompiledRule, Target};
        let rule = |id: &str, pattern: &str| {
            CompiledRule::compile(crate::rules::tests::rule(id, &[pattern], &[], Target::Masked)).expect("compiles")
        };
        // The first pattern's literal ("= 1" and four spaces) occurs only once masking has made
        // the comment spaces; the second's only inside the comment, where masking removes it.
        let pack = RulePack::new(vec![rule("t.spaces", r"= 1 {4}$"), rule("t.call", r"eval\(")]).expect("pack");
        let lang = Some(Language::Python);
        let lexed = lex("x = 1 #ab\n# eval(y)\nz = 2\n", lang);
        assert_ne!(*lexed.masked, *lexed.text);
        let want = scan_everything(&pack, &lexed, lang);
        assert_eq!(want.len(), 1, "the reference finds the masked spaces: {want:?}");
        assert_eq!(pack.scan(&lexed, lang), want);
    }

    #[test]
    fn nearly_every_built_in_pattern_has_a_literal_condition() {
        let pack = RulePack::builtin().expect("built-in rules");
        let patterns: Vec<&LazyRegex> = pack.rules.iter().flat_map(|r| &r.patterns).collect();
        let always: Vec<&str> = patterns.iter().filter(|p| p.need.is_always()).map(|p| p.src.as_str()).collect();
        let rules_always = pack.rules.iter().filter(|r| r.patterns.iter().any(|p| p.need.is_always())).count();
        eprintln!(
            "{} rules, {} patterns; {} patterns ({} rules) run on every text:\n{}",
            pack.rules.len(),
            patterns.len(),
            always.len(),
            rules_always,
            always.join("\n")
        );
        assert!(always.len() * 50 <= patterns.len(), "{} of {} patterns have no literal", always.len(), patterns.len());
    }
}
