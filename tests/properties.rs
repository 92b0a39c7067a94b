//! Properties of the whole detector on arbitrary input.

use guardrank::engine::Detector;
use guardrank::lang::Language;
use proptest::prelude::*;
use std::sync::OnceLock;

fn det() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| Detector::builtin().expect("built-in detector"))
}

fn check(text: &str, lang: Option<Language>) -> Result<(), TestCaseError> {
    let a = det().assess(text, lang);
    prop_assert!(a.risk.is_finite() && (0.0..=1.0).contains(&a.risk), "risk {}", a.risk);
    for f in &a.findings {
        prop_assert!(f.line >= 1 && f.column >= 1 && f.end_line >= f.line);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_utf8_gives_a_probability(s in any::<String>(), li in 0usize..15) {
        check(&s, Language::ALL.get(li).copied())?;
    }

    #[test]
    fn any_bytes_read_lossily_give_a_probability(b in proptest::collection::vec(any::<u8>(), 0..2048), li in 0usize..15) {
        let s = String::from_utf8_lossy(&b);
        check(&s, Language::ALL.get(li).copied())?;
    }

    #[test]
    fn code_like_fragments_give_a_probability(s in "[a-zA-Z_\"'`#/*\\\\$@{}()\\[\\]\\n =+.;:<>%!-]{0,400}", li in 0usize..15) {
        check(&s, Language::ALL.get(li).copied())?;
    }
}

#[test]
fn huge_lines_and_pathological_text_do_not_panic() {
    let long_line = "x".repeat(1 << 20);
    let quotes = "\"".repeat(100_000);
    let nested = "/*".repeat(50_000);
    let mixed = "SELECT * FROM t WHERE a = '\" + ".repeat(20_000);
    for t in [long_line.as_str(), quotes.as_str(), nested.as_str(), mixed.as_str(), "", "\0\0\0"] {
        for lang in Language::ALL.iter().copied().map(Some).chain([None]) {
            let a = det().assess(t, lang);
            assert!((0.0..=1.0).contains(&a.risk));
        }
    }
}
