//! The shipped rule pack: every rule's own examples, coverage, and behaviour in the full pack.

use guardrank::engine::assess;
use guardrank::lang::Language;
use guardrank::model::{Hyper, Model};
use guardrank::rules::{CompiledRule, RulePack, builtin_specs};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn every_rule_passes_its_own_examples() {
    let specs = builtin_specs().expect("rule files parse");
    let mut failures = Vec::new();
    for s in specs {
        if s.examples.insecure.is_empty() || s.examples.secure.is_empty() {
            failures.push(format!("{}: needs at least one insecure and one secure example", s.id));
            continue;
        }
        if let Err(e) = CompiledRule::compile_checked(s) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{} rules fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn insecure_examples_are_found_by_the_whole_pack_in_every_listed_language() {
    let pack = RulePack::builtin().expect("pack compiles");
    let model = Model::new(Hyper { bits: 12, ..Hyper::default() }, "empty");
    let mut failures = Vec::new();
    for r in pack.rules() {
        let langs: Vec<Option<Language>> = if r.spec.languages.iter().any(|l| l == "*") {
            vec![None, Some(Language::Python), Some(Language::Java)]
        } else {
            r.spec.languages.iter().map(|l| l.parse().ok()).collect()
        };
        for ex in &r.spec.examples.insecure {
            for lang in &langs {
                let a = assess(&pack, &model, ex, *lang);
                if !a.findings.iter().any(|f| *f.rule_id == *r.spec.id) {
                    failures.push(format!("{} as {:?}: {ex:?}", r.spec.id, lang));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} misses:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_pack_is_large_and_covers_every_language_and_the_main_weaknesses() {
    let specs = builtin_specs().expect("rule files parse");
    assert!(specs.len() >= 120, "only {} rules", specs.len());
    let ids: BTreeSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), specs.len(), "rule ids must be unique");
    let mut per_lang: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &specs {
        for l in &s.languages {
            *per_lang.entry(l.as_str()).or_default() += 1;
        }
    }
    for l in ["python", "javascript", "typescript", "java", "c", "cpp", "go", "rust", "php", "ruby", "csharp"] {
        assert!(per_lang.get(l).copied().unwrap_or(0) >= 5, "{l} has only {:?} rules", per_lang.get(l));
    }
    let cwes: BTreeSet<&str> = specs.iter().map(|s| s.cwe.as_str()).collect();
    // Code-level CWE Top 25 weaknesses and the usual suspects the issue lists.
    for c in [
        "CWE-78", "CWE-79", "CWE-89", "CWE-94", "CWE-22", "CWE-502", "CWE-798", "CWE-327", "CWE-295", "CWE-611",
        "CWE-918", "CWE-601", "CWE-120", "CWE-134", "CWE-330", "CWE-732", "CWE-90",
    ] {
        assert!(cwes.contains(c), "no rule for {c}");
    }
}

#[test]
fn the_contract_examples_are_flagged_with_their_cwe() {
    let pack = RulePack::builtin().expect("pack compiles");
    let model = Model::new(Hyper { bits: 12, ..Hyper::default() }, "empty");
    let py = Some(Language::Python);
    let sql = "    return db.execute(\"SELECT * FROM users WHERE name = '\" + name + \"'\")";
    let a = assess(&pack, &model, sql, py);
    assert!(a.findings.iter().any(|f| &*f.cwe == "CWE-89"), "{:?}", a.findings);
    let f = a.findings.iter().find(|f| &*f.cwe == "CWE-89").expect("found");
    assert_eq!(f.line, 1);
    assert!(f.column >= 1 && f.end_column > f.column);
    let shell = "    subprocess.call('tar czf /tmp/out.tgz ' + request.args['dir'], shell=True)";
    let a = assess(&pack, &model, shell, py);
    assert!(a.findings.iter().any(|f| &*f.cwe == "CWE-78"), "{:?}", a.findings);
    let good = "    return db.execute(\"SELECT * FROM users WHERE name = ?\", (name,))";
    assert!(assess(&pack, &model, good, py).findings.is_empty());
}
