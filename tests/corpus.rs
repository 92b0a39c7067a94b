//! The labelled corpus and the built-in model trained from it.

use guardrank::corpus::{Kind, Snippet, load_dir};
use guardrank::engine::{Detector, resolve_language};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn corpus() -> Vec<Snippet> {
    load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus")).expect("corpus loads")
}

#[test]
fn the_corpus_is_large_balanced_and_multilingual() {
    let c = corpus();
    assert!(c.len() >= 2000, "{} snippets", c.len());
    let insecure = c.iter().filter(|s| s.insecure()).count();
    assert!(insecure >= 600 && c.len() - insecure >= 600, "{insecure} insecure of {}", c.len());
    let langs: BTreeSet<&str> = c.iter().map(|s| s.language.as_str()).collect();
    for l in ["python", "javascript", "typescript", "java", "c", "cpp", "go", "rust", "php", "ruby", "csharp"] {
        assert!(langs.contains(l), "no {l} snippets");
    }
    let codes: BTreeSet<&str> = c.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes.len(), c.len(), "duplicate snippets");
    for k in [Kind::Secure, Kind::NearMiss, Kind::Benign] {
        assert!(c.iter().filter(|s| s.kind == k).count() >= 100, "too few {k:?}");
    }
}

#[test]
fn families_are_never_split_and_the_holdout_has_both_labels_in_every_language() {
    let c = corpus();
    let mut fam_split: BTreeMap<&str, bool> = BTreeMap::new();
    let mut held: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    for s in &c {
        let h = s.is_holdout();
        assert_eq!(*fam_split.entry(&s.family).or_insert(h), h);
        if h {
            held.entry(&s.language).or_default()[usize::from(s.insecure())] += 1;
        }
    }
    for l in ["python", "javascript", "typescript", "java", "c", "cpp", "go", "rust", "php", "ruby", "csharp"] {
        let [safe, bad] = held.get(l).copied().unwrap_or_default();
        assert!(safe > 0 && bad > 0, "{l} holdout has {safe} safe and {bad} insecure");
    }
}

#[test]
fn held_out_twins_rank_insecure_above_secure() {
    let det = Detector::builtin().expect("built-in detector");
    let all = corpus();
    let mut fams: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for s in all.iter().filter(|s| s.is_holdout()) {
        let risk = det.assess(&s.code, resolve_language(s.lang(), None, &s.code)).risk;
        let e = fams.entry(s.family.as_str()).or_default();
        match s.kind {
            Kind::Insecure => e.0.push(risk),
            Kind::Secure => e.1.push(risk),
            _ => {}
        }
    }
    let (mut ok, mut total) = (0, 0);
    let mut wrong = Vec::new();
    for (fam, (bad, good)) in &fams {
        for b in bad {
            for g in good {
                total += 1;
                if b > g {
                    ok += 1;
                } else {
                    wrong.push(format!("{fam}: insecure {b:.3} <= secure {g:.3}"));
                }
            }
        }
    }
    assert!(total >= 50, "only {total} held-out twin pairs");
    let rate = f64::from(ok) / f64::from(total);
    assert!(rate >= 0.9, "{ok}/{total} twin pairs ordered; misordered:\n{}", wrong.join("\n"));
}
