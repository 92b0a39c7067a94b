//! ASCII twins of patterns (issue 5): the same pattern with every class cut down to its ASCII
//! members, every non-ASCII literal made a dead end and Unicode word boundaries made ASCII
//! ones.
//!
//! On ASCII text (most code: comments are masked to spaces) a twin finds exactly the matches of
//! its pattern: each leaf accepts the same characters there and each assertion decides the
//! same, and the structure that fixes leftmost-first preference (order of alternatives,
//! greediness) is unchanged. Its automaton is far smaller (in Unicode mode `\w` alone is
//! hundreds of UTF-8 states; here it is one byte class), so it is cheaper to build, to
//! determinize and to keep, and its lazy DFA never gives up on a word boundary as a Unicode one
//! does on non-ASCII bytes. Non-ASCII text runs the pattern itself.

use regex_syntax::hir::{Capture, Repetition};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look};

/// The ASCII twin of a pattern, as a pattern string: `regex` builds only from strings, and the
/// HIR printer exists for this round trip.
pub(crate) fn twin_pattern(hir: &Hir) -> String {
    twin(hir).to_string()
}

fn twin(h: &Hir) -> Hir {
    match h.kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(l) if l.0.is_ascii() => Hir::literal(l.0.clone()),
        HirKind::Literal(_) => Hir::fail(),
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.intersect(&ClassUnicode::new([ClassUnicodeRange::new('\0', '\x7f')]));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.intersect(&ClassBytes::new([ClassBytesRange::new(0, 0x7f)]));
            Hir::class(Class::Bytes(c))
        }
        HirKind::Look(l) => Hir::look(ascii_look(*l)),
        HirKind::Repetition(r) => {
            Hir::repetition(Repetition { min: r.min, max: r.max, greedy: r.greedy, sub: Box::new(twin(&r.sub)) })
        }
        // Groups do not move match bounds; dropping them keeps the twin's NFA smaller still.
        HirKind::Capture(Capture { sub, .. }) => twin(sub),
        HirKind::Concat(hs) => Hir::concat(hs.iter().map(twin).collect()),
        HirKind::Alternation(hs) => Hir::alternation(hs.iter().map(twin).collect()),
    }
}

/// The ASCII form of a word assertion (they agree wherever both sides are ASCII).
fn ascii_look(l: Look) -> Look {
    match l {
        Look::WordUnicode => Look::WordAscii,
        Look::WordUnicodeNegate => Look::WordAsciiNegate,
        Look::WordStartUnicode => Look::WordStartAscii,
        Look::WordEndUnicode => Look::WordEndAscii,
        Look::WordStartHalfUnicode => Look::WordStartHalfAscii,
        Look::WordEndHalfUnicode => Look::WordEndHalfAscii,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn twin_of(p: &str) -> String {
        twin_pattern(&regex_syntax::ParserBuilder::new().multi_line(true).build().parse(p).expect("parses"))
    }

    #[test]
    fn twins_are_ascii_and_compile() {
        assert_eq!(twin_of(r"\w"), "[0-9A-Z_a-z]");
        assert_eq!(twin_of(r"(?i)k"), "[Kk]");
        assert_eq!(twin_of(r"\b"), r"(?-u:\b)");
        assert_eq!(twin_of(r"é"), "[a&&b]");
        for p in [r"(?i)\bselect\s+\w+", r"^(a|b)+$", r#"[^"\n]*"#, r"(?-u:[\w!])+x", r"\pL\B\d"] {
            assert!(Regex::new(&twin_of(p)).is_ok(), "{p}");
        }
    }

    #[test]
    fn a_twin_matches_like_its_pattern_on_ascii_text() {
        let texts = ["select name_1 FROM t", "x = eval(y) # éh", "Kelvin k\nKK", "a__b9 c-d", "", "\t\r\n"];
        for p in [r"(?i)\bselect\s+\w+", r"\b\w+\b", r"(?m)^\s*\w", r"(?i)k+|é", r"[^\s]+?\B", r"(\w)(?:-|_)+(\w)"] {
            let (re, tw) = (Regex::new(p).expect("pattern"), Regex::new(&twin_of(p)).expect("twin"));
            for t in texts.iter().filter(|t| t.is_ascii()) {
                let spans = |r: &Regex| r.find_iter(t).map(|m| m.range()).collect::<Vec<_>>();
                assert_eq!(spans(&re), spans(&tw), "{p} on {t:?}");
            }
        }
    }
}
