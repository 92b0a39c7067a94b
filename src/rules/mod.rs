//! The rule pack: security rules as data, each pattern compiled into its own small regex.
//!
//! A scan first reads the comment-masked text (and the raw text, for rules that target it)
//! once with the language's literal prefilter ([`prefilter`]): one Aho-Corasick automaton over
//! the literals that every match of each pattern must contain. Only the patterns whose literals
//! occur then run, to find positions. The cost does not depend on warm-up and no matcher keeps
//! a large cache (issue 5). Rust's `regex` and Aho-Corasick are linear-time, so no rule or
//! input can make a scan blow up.

mod ascii;
mod builtin;
mod prefilter;
mod spec;

pub use builtin::{builtin_prompt_specs, builtin_specs, load_rule_dir, parse_rule_file};
pub use spec::{Examples, Mode, RuleError, RuleFile, RuleSpec, Severity, Target};

use crate::lang::Language;
use crate::lexer::{Lexed, lex};
use prefilter::{Literals, Need, Prefilter};
use regex_automata::meta::{self, Cache, Regex};
use regex_automata::util::iter::Searcher;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// At most this many hits are reported per scan (a pathological file cannot flood the output).
pub const MAX_HITS: usize = 256;
const SIZE_LIMIT: usize = 64 << 20;

/// A pattern whose syntax is checked, and whose literal condition and ASCII twin are derived,
/// at once; its matchers are built on first use (building every matcher of a large pack up
/// front costs seconds; most scans need few).
#[derive(Debug)]
struct LazyRegex {
    src: String,
    /// What any match must contain (from the same parse the regex is built from).
    need: Need,
    re: OnceLock<Option<Regex>>,
    /// The pattern for ASCII subjects ([`ascii`]): same matches there, a far smaller automaton.
    twin_src: String,
    twin: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    fn new(src: &str) -> Result<LazyRegex, String> {
        let hir = regex_syntax::ParserBuilder::new().multi_line(true).build().parse(src).map_err(|e| e.to_string())?;
        Ok(LazyRegex {
            src: src.to_string(),
            need: Need::of(&hir),
            re: OnceLock::new(),
            twin_src: ascii::twin_pattern(&hir),
            twin: OnceLock::new(),
        })
    }

    /// The matcher for a subject: the ASCII twin if the subject is ASCII (and the twin builds,
    /// which it always should), else the pattern itself; with the index of its cache among
    /// the pattern's two ([`CacheSet`]: 0 the pattern's, 1 the twin's).
    fn matcher(&self, ascii: bool) -> Option<(&Regex, usize)> {
        let twin = || {
            self.twin
                .get_or_init(|| {
                    build_regex(&self.twin_src)
                        .map_err(|e| tracing::warn!(pattern = %self.src, error = %describe(&e), "ascii twin failed to build"))
                        .ok()
                })
                .as_ref()
                .map(|r| (r, 1))
        };
        let own = || self.get().map(|r| (r, 0));
        if ascii { twin().or_else(own) } else { own() }
    }

    fn get(&self) -> Option<&Regex> {
        self.re
            .get_or_init(|| match build_regex(&self.src) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(pattern = %self.src, error = %describe(&e), "pattern failed to build; it never matches");
                    None
                }
            })
            .as_ref()
    }

    /// Builds the matcher now, reporting failure.
    fn force(&self) -> Result<(), String> {
        if self.get().is_some() { Ok(()) } else { build_regex(&self.src).map(|_| ()).map_err(|e| describe(&e)) }
    }
}

/// A rule ready to run.
#[derive(Debug)]
pub struct CompiledRule {
    pub spec: Arc<RuleSpec>,
    patterns: Vec<LazyRegex>,
    unless: Vec<LazyRegex>,
}

/// One place where a rule matched: the rule's index in the pack and the byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: u32,
    pub start: u32,
    pub end: u32,
}

/// A language's prefilters: one over the patterns of masked-text rules, one for raw-text rules.
#[derive(Debug, Default)]
struct LangIndex {
    masked: Prefilter,
    raw: Prefilter,
}

/// A compiled, immutable rule pack. Changing rules means building a new pack.
#[derive(Debug)]
pub struct RulePack {
    rules: Vec<CompiledRule>,
    /// The literals of every pattern, in one automaton.
    literals: Literals,
    /// Index per language; `None` is text of unknown language (only `*` rules).
    by_lang: BTreeMap<Option<Language>, LangIndex>,
    /// Where each rule's [`CacheSet`] starts in a set of the pool, and where the last ends.
    cache_offsets: Vec<usize>,
    caches: CachePool,
}

/// A pattern's matcher, configured as `regex::RegexBuilder::new(p).multi_line(true)
/// .size_limit(SIZE_LIMIT)` configures it (the `regex` crate is a thin layer over this), but
/// searched with caches the pack owns ([`CachePool`]) instead of the crate's per-regex pools.
fn build_regex(p: &str) -> Result<Regex, Box<meta::BuildError>> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                .utf8_empty(true)
                .nfa_size_limit(Some(SIZE_LIMIT))
                .hybrid_cache_capacity(2 << 20),
        )
        .syntax(syntax::Config::new().multi_line(true).utf8(true))
        .build(p)
        .map_err(Box::new)
}

/// A build error with its cause (the error's own text is only "error building NFA").
fn describe(e: &meta::BuildError) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The search caches of one rule's matchers: two per pattern and per unless pattern (the
/// pattern's own and its ASCII twin's), patterns first. Created on first use.
type CacheSet = [Option<Cache>];

fn cache_of<'c>(caches: &'c mut CacheSet, slot: usize, re: &Regex) -> Option<&'c mut Cache> {
    let c = caches.get_mut(slot)?;
    Some(c.get_or_insert_with(|| re.create_cache()))
}

fn empty_caches(n: usize) -> Vec<Option<Cache>> {
    std::iter::repeat_with(|| None).take(n).collect()
}

/// The pack's sets of matcher caches, one per scan in progress.
///
/// A lazy DFA must keep a mutable cache per search. The `regex` crate keeps one pool per
/// regex: its first thread's cache, plus stacks chosen by thread id, and a thread whose stack
/// is empty makes a new cache even when other stacks hold spares. A server's async workers
/// move between OS threads (`block_in_place` hands a worker to another thread), so over a
/// load test every one of ~2,300 regexes came to hold a cache for most of 9 slots: about
/// 250 MB (BENCHMARKS.md). Here a scan takes one whole set for all the patterns it runs and
/// gives it back, so there are as many sets as scans ever ran at once, whatever the threads.
#[derive(Debug)]
struct CachePool {
    free: Mutex<Vec<Vec<Option<Cache>>>>,
    /// Caches in a set.
    len: usize,
    /// Sets kept for reuse at most; a scan beyond them makes a set and drops it after.
    keep: usize,
}

impl CachePool {
    fn new(len: usize) -> CachePool {
        let keep = std::thread::available_parallelism().map_or(4, |n| n.get() + 1);
        CachePool { free: Mutex::new(Vec::new()), len, keep }
    }

    fn with<R>(&self, f: impl FnOnce(&mut CacheSet) -> R) -> R {
        let taken = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut set = taken.unwrap_or_else(|| empty_caches(self.len));
        let out = f(&mut set);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.keep {
            free.push(set);
        }
        out
    }
}

impl CompiledRule {
    /// Compiles a rule's patterns without checking its examples.
    ///
    /// # Errors
    /// A pattern that does not compile, or a field out of schema.
    pub fn compile(spec: RuleSpec) -> Result<CompiledRule, RuleError> {
        spec.check_fields()?;
        let compile_all = |ps: &[String], what: &str| -> Result<Vec<LazyRegex>, RuleError> {
            ps.iter()
                .map(|p| {
                    LazyRegex::new(p).map_err(|error| RuleError::Pattern {
                        rule: spec.id.clone(),
                        what: what.to_string(),
                        pattern: p.clone(),
                        error,
                    })
                })
                .collect()
        };
        let patterns = compile_all(&spec.patterns, "pattern")?;
        let unless = compile_all(&spec.unless, "unless pattern")?;
        Ok(CompiledRule { spec: Arc::new(spec), patterns, unless })
    }

    /// Compiles a rule and runs its own examples: every insecure example must produce a hit,
    /// no secure example may.
    ///
    /// # Errors
    /// As [`CompiledRule::compile`], or the first example that does not behave.
    pub fn compile_checked(spec: RuleSpec) -> Result<CompiledRule, RuleError> {
        let rule = CompiledRule::compile(spec)?;
        for (what, p) in
            rule.patterns.iter().map(|p| ("pattern", p)).chain(rule.unless.iter().map(|p| ("unless pattern", p)))
        {
            p.force().map_err(|error| RuleError::Pattern {
                rule: rule.spec.id.clone(),
                what: what.to_string(),
                pattern: p.src.clone(),
                error,
            })?;
        }
        let lang = rule.spec.example_language();
        for ex in &rule.spec.examples.insecure {
            if rule.hits_in(ex, lang).is_empty() {
                return Err(RuleError::Example {
                    rule: rule.spec.id.clone(),
                    problem: format!("insecure example does not match: {ex:?}"),
                });
            }
        }
        for ex in &rule.spec.examples.secure {
            if !rule.hits_in(ex, lang).is_empty() {
                return Err(RuleError::Example {
                    rule: rule.spec.id.clone(),
                    problem: format!("secure example matches: {ex:?}"),
                });
            }
        }
        Ok(rule)
    }

    /// Byte spans where this rule alone matches `text` lexed as `lang`.
    #[must_use]
    pub fn hits_in(&self, text: &str, lang: Option<Language>) -> Vec<(usize, usize)> {
        let lexed = lex(text, lang);
        let subject = self.subject(&lexed);
        let ascii = subject.is_ascii();
        let mut out = Vec::new();
        let mut caches = empty_caches(self.cache_count());
        for p in 0..self.patterns.len() {
            self.pattern_hits(p, subject, ascii, &mut caches, &mut |s, e| out.push((s, e)));
        }
        out
    }

    /// The length of this rule's [`CacheSet`].
    fn cache_count(&self) -> usize {
        2 * (self.patterns.len() + self.unless.len())
    }

    fn subject<'a>(&self, lexed: &'a Lexed<'_>) -> &'a str {
        match self.spec.target {
            Target::Raw => lexed.text,
            Target::Masked => &lexed.masked,
        }
    }

    /// Hits of pattern `p` in `subject`; `ascii` tells that the subject is ASCII, so that the
    /// patterns' ASCII twins may run.
    /// `caches` is this rule's [`CacheSet`].
    fn pattern_hits(
        &self,
        p: usize,
        subject: &str,
        ascii: bool,
        caches: &mut CacheSet,
        f: &mut dyn FnMut(usize, usize),
    ) {
        let Some((re, which)) = self.patterns.get(p).and_then(|r| r.matcher(ascii)) else {
            return;
        };
        let (own, unless) = caches.split_at_mut(2 * self.patterns.len());
        let Some(cache) = cache_of(own, 2 * p + which, re) else {
            return;
        };
        // As `regex::Regex::find_iter` iterates (empty matches included), with our cache.
        let mut it = Searcher::new(Input::new(subject));
        while let Some(m) = it.advance(|input| Ok(re.search_with(cache, input))) {
            if m.start() == m.end() {
                continue;
            }
            if !self.unless.is_empty() {
                let ls = subject[..m.start()].rfind('\n').map_or(0, |i| i + 1);
                let le = subject[m.end()..].find('\n').map_or(subject.len(), |i| m.end() + i);
                let region = Input::new(&subject[ls..le]).earliest(true);
                let excused = self.unless.iter().enumerate().any(|(u, lazy)| {
                    lazy.matcher(ascii).is_some_and(|(ure, w)| {
                        cache_of(unless, 2 * u + w, ure).is_some_and(|c| ure.search_half_with(c, &region).is_some())
                    })
                });
                if excused {
                    continue;
                }
            }
            f(m.start(), m.end());
        }
    }
}

impl RulePack {
    /// Builds a pack from compiled rules, with its literal prefilter. Later rules with the same
    /// id replace earlier ones.
    ///
    /// # Errors
    /// None today; kept for packs that may refuse a combination of rules.
    pub fn new(rules: Vec<CompiledRule>) -> Result<RulePack, RuleError> {
        let mut dedup: Vec<CompiledRule> = Vec::with_capacity(rules.len());
        for r in rules {
            if let Some(slot) = dedup.iter_mut().find(|x| x.spec.id == r.spec.id) {
                *slot = r;
            } else {
                dedup.push(r);
            }
        }
        let mut literals = Literals::default();
        let conditions: Vec<Vec<_>> =
            dedup.iter().map(|r| r.patterns.iter().map(|p| literals.condition(&p.need)).collect()).collect();
        let mut keys: Vec<Option<Language>> = Language::ALL.iter().copied().map(Some).collect();
        keys.push(None);
        let mut by_lang = BTreeMap::new();
        for key in keys {
            let index = |target: Target| {
                Prefilter::new(
                    dedup
                        .iter()
                        .zip(&conditions)
                        .enumerate()
                        .filter(|(_, (r, _))| r.spec.target == target && r.spec.applies_to(key))
                        .flat_map(|(ri, (_, conds))| {
                            conds.iter().enumerate().map(move |(pi, c)| (ri as u32, pi as u32, c.clone()))
                        }),
                )
            };
            by_lang.insert(key, LangIndex { masked: index(Target::Masked), raw: index(Target::Raw) });
        }
        let mut cache_offsets = Vec::with_capacity(dedup.len() + 1);
        cache_offsets.push(0);
        for r in &dedup {
            cache_offsets.push(cache_offsets.last().copied().unwrap_or(0) + r.cache_count());
        }
        let caches = CachePool::new(cache_offsets.last().copied().unwrap_or(0));
        Ok(RulePack { rules: dedup, literals: literals.build(), by_lang, cache_offsets, caches })
    }

    /// The built-in pack (data/rules/ compiled into the binary).
    ///
    /// # Errors
    /// Only if the shipped rule files are broken, which the test suite rules out.
    pub fn builtin() -> Result<RulePack, RuleError> {
        let specs = builtin_specs()?;
        let rules = specs.into_iter().map(CompiledRule::compile).collect::<Result<Vec<_>, _>>()?;
        RulePack::new(rules)
    }

    /// The built-in prompt pack (data/prompt-rules/), each rule checked against its examples.
    ///
    /// # Errors
    /// Only if the shipped prompt rules are broken, which the tests rule out.
    pub fn builtin_prompt() -> Result<RulePack, RuleError> {
        let rules =
            builtin_prompt_specs()?.into_iter().map(CompiledRule::compile_checked).collect::<Result<Vec<_>, _>>()?;
        RulePack::new(rules)
    }

    /// Builds every pattern's ASCII matcher now (a server does this at start, off the request
    /// path, so no request pays for it). The Unicode matchers, needed only for text with
    /// non-ASCII characters, are built on first use: built up front they held about as much
    /// memory again as the ASCII ones, for the few requests that need them.
    pub fn warm_up(&self) {
        for r in &self.rules {
            for p in r.patterns.iter().chain(&r.unless) {
                let _ = p.matcher(true);
            }
        }
    }

    /// The rules in the pack.
    #[must_use]
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The rule behind a hit.
    #[must_use]
    pub fn rule(&self, index: u32) -> Option<&RuleSpec> {
        self.rules.get(index as usize).map(|r| r.spec.as_ref())
    }

    /// Finds every rule hit in lexed text (at most [`MAX_HITS`]), ordered by position.
    #[must_use]
    pub fn scan(&self, lexed: &Lexed<'_>, lang: Option<Language>) -> Vec<Hit> {
        let mut hits = Vec::new();
        let Some(idx) = self.by_lang.get(&lang) else {
            return hits;
        };
        // One read of the raw text serves both subjects ([`Literals::scan_lexed`]).
        let (masked_seen, raw_seen) = self.literals.scan_lexed(&lexed.masked, lexed.text);
        self.caches.with(|caches| {
            for (prefilter, subject, seen) in [
                (&idx.masked, &*lexed.masked, &masked_seen),
                (&idx.raw, lexed.text, raw_seen.as_ref().unwrap_or(&masked_seen)),
            ] {
                let ascii = subject.is_ascii();
                prefilter.candidates(seen, |ri, pi| {
                    let Some((rule, set)) = self.rule_and_caches(ri as usize, caches) else { return };
                    rule.pattern_hits(pi as usize, subject, ascii, set, &mut |s, e| {
                        hits.push(Hit { rule: ri, start: s as u32, end: e as u32 });
                    });
                });
            }
        });
        ordered(hits)
    }

    /// Rule `ri` and its part of a set of the pack's caches.
    fn rule_and_caches<'c>(&self, ri: usize, caches: &'c mut CacheSet) -> Option<(&CompiledRule, &'c mut CacheSet)> {
        let (from, to) = (*self.cache_offsets.get(ri)?, *self.cache_offsets.get(ri + 1)?);
        Some((self.rules.get(ri)?, caches.get_mut(from..to)?))
    }
}

/// Hits by position, one per rule and start (the shortest), at most [`MAX_HITS`].
fn ordered(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by_key(|h| (h.start, h.rule, h.end));
    hits.dedup_by_key(|h| (h.rule, h.start));
    hits.truncate(MAX_HITS);
    hits
}

/// Maps byte offsets to 1-based lines and columns counted in Unicode scalar values.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

/// A 1-based position; `column` counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl<'a> LineIndex<'a> {
    #[must_use]
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// Position of a byte offset (clamped to the text, moved back to a char boundary).
    #[must_use]
    pub fn position(&self, offset: usize) -> Position {
        let mut off = offset.min(self.text.len());
        while !self.text.is_char_boundary(off) {
            off -= 1;
        }
        let line = self.starts.partition_point(|s| *s <= off).max(1);
        let ls = self.starts[line - 1];
        let column = self.text[ls..off].chars().count() + 1;
        Position { line: line as u32, column: column as u32 }
    }

    /// Number of lines.
    #[must_use]
    pub fn lines(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Python rule spec for tests (also the prefilter's).
    pub(crate) fn rule(id: &str, pats: &[&str], unless: &[&str], target: Target) -> RuleSpec {
        RuleSpec {
            id: id.to_string(),
            languages: vec!["python".to_string()],
            cwe: "CWE-89".to_string(),
            severity: Severity::High,
            message: "m".to_string(),
            patterns: pats.iter().map(|s| s.to_string()).collect(),
            unless: unless.iter().map(|s| s.to_string()).collect(),
            target,
            mode: Mode::Enforce,
            examples: Examples::default(),
        }
    }

    #[test]
    fn comments_never_fire_masked_rules_but_raw_rules_see_them() {
        let pack = RulePack::new(vec![
            CompiledRule::compile(rule("t.masked", &[r"os\.system\("], &[], Target::Masked)).expect("compiles"),
            CompiledRule::compile(rule("t.raw", &[r"TODO: remove"], &[], Target::Raw)).expect("compiles"),
        ])
        .expect("pack");
        let src = "# os.system(x)  TODO: remove\nrun()";
        let lx = lex(src, Some(Language::Python));
        let hits = pack.scan(&lx, Some(Language::Python));
        let ids: Vec<_> = hits.iter().filter_map(|h| pack.rule(h.rule)).map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["t.raw"]);
        let lx = lex("os.system(x)\n", Some(Language::Python));
        assert_eq!(pack.scan(&lx, Some(Language::Python)).len(), 1);
        // Not for other languages.
        let lx = lex("os.system(x)\n", Some(Language::Go));
        assert!(pack.scan(&lx, Some(Language::Go)).is_empty());
    }

    #[test]
    fn unless_suppresses_on_the_same_line_only() {
        let r = CompiledRule::compile(rule("t.tls", &[r"requests\.get\("], &[r"verify=True"], Target::Masked))
            .expect("compiles");
        assert!(r.hits_in("requests.get(u, verify=True)", Some(Language::Python)).is_empty());
        assert_eq!(r.hits_in("requests.get(u)\nverify=True", Some(Language::Python)).len(), 1);
    }

    #[test]
    fn checked_compile_runs_examples() {
        let mut s = rule("t.x", &[r"eval\("], &[], Target::Masked);
        s.examples.insecure = vec!["eval(x)".into()];
        s.examples.secure = vec!["evaluate(x)".into()];
        assert!(CompiledRule::compile_checked(s.clone()).is_ok());
        s.examples.secure.push("eval(1)".into());
        assert!(matches!(CompiledRule::compile_checked(s), Err(RuleError::Example { .. })));
        let bad = rule("t.bad", &[r"(unclosed"], &[], Target::Masked);
        assert!(matches!(CompiledRule::compile(bad), Err(RuleError::Pattern { .. })));
    }

    #[test]
    fn later_rules_replace_earlier_ones_with_the_same_id() {
        let a = CompiledRule::compile(rule("t.same", &["aaa"], &[], Target::Masked)).expect("compiles");
        let b = CompiledRule::compile(rule("t.same", &["bbb"], &[], Target::Masked)).expect("compiles");
        let pack = RulePack::new(vec![a, b]).expect("pack");
        assert_eq!(pack.rules().len(), 1);
        let lx = lex("aaa bbb", Some(Language::Python));
        let hits = pack.scan(&lx, Some(Language::Python));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].start, 4);
    }

    #[test]
    fn positions_are_one_based_in_characters() {
        let text = "é = 1\nab→cd\n";
        let li = LineIndex::new(text);
        assert_eq!(li.position(0), Position { line: 1, column: 1 });
        assert_eq!(li.position(2), Position { line: 1, column: 2 });
        let off = text.find("cd").expect("present");
        assert_eq!(li.position(off), Position { line: 2, column: 4 });
        assert_eq!(li.position(1), Position { line: 1, column: 1 });
        assert_eq!(li.position(999).line, 3);
    }

    /// The pack's sets of matcher caches follow how many scans ran at once, not which threads
    /// ran them: the `regex` crate's pools grew a cache per regex for most threads that
    /// searched with it, and a server's workers move between threads.
    #[test]
    fn scans_on_ever_new_threads_share_one_set_of_caches() {
        let pack = RulePack::new(vec![
            CompiledRule::compile(rule("t.a", &[r"os\.system\("], &[r"shlex"], Target::Masked)).expect("compiles"),
            CompiledRule::compile(rule("t.b", &[r"eval\("], &[], Target::Masked)).expect("compiles"),
        ])
        .expect("pack");
        let sets = |p: &RulePack| p.caches.free.lock().map(|f| f.len()).unwrap_or(usize::MAX);
        assert_eq!(sets(&pack), 0);
        let scan = |text: &str| pack.scan(&lex(text, Some(Language::Python)), Some(Language::Python)).len();
        for _ in 0..6 {
            std::thread::scope(|s| {
                let t = s.spawn(|| scan("os.system(cmd)\neval(x)\n"));
                assert_eq!(t.join().ok(), Some(2));
            });
        }
        assert_eq!(sets(&pack), 1, "six threads one after another need one set");
        // Both patterns and the unless pattern (ASCII twins) made their caches in that set.
        let made = |p: &RulePack| p.caches.free.lock().map(|f| f[0].iter().flatten().count()).unwrap_or(0);
        assert_eq!(made(&pack), 3);
        // Concurrent scans take a set each and give it back.
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    pack.caches.with(|_| {
                        barrier.wait();
                    })
                });
            }
        });
        assert_eq!(sets(&pack), 3.min(pack.caches.keep));
        assert_eq!(scan("os.system(shlex.quote(cmd))\n"), 0, "the unless pattern still applies");
    }

    #[test]
    fn builtin_pack_compiles() {
        let pack = RulePack::builtin().expect("built-in rules compile");
        assert!(pack.rules().len() >= 120, "only {} rules", pack.rules().len());
    }
}
