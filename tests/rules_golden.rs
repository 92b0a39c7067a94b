//! Rule hits are stable: the hits (rule index, rule id, byte span) that the built-in rule pack
//! and prompt pack find in every corpus snippet, every rule's own examples (also upper-cased,
//! lower-cased and with the Unicode case-fold twins of `s` and `k`), hand-written edge inputs
//! and deterministic recombinations of example fragments hash to the digests recorded in
//! tests/golden/rule-hits.txt.
//!
//! The model was trained on these hits, so a change to the matching engine (a prefilter, a
//! different regex strategy) must leave every one of them exactly where it was (issue 5).
//!
//! Regenerate (only when the rule data or the corpus change on purpose) with
//! `GUARDRANK_WRITE_GOLDEN=1 cargo test --test rules_golden`.

use guardrank::corpus::parse_corpus_file;
use guardrank::engine::resolve_language;
use guardrank::lang::Language;
use guardrank::lexer::lex;
use guardrank::rules::{Hit, RulePack};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_path() -> PathBuf {
    root().join("tests/golden/rule-hits.txt")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("corpus directory readable") {
        let p = entry.expect("directory entry").path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
}

/// Every language, and text of unknown language.
fn all_langs() -> Vec<Option<Language>> {
    Language::ALL.iter().copied().map(Some).chain([None]).collect()
}

/// The languages a rule's examples are run in: the listed ones, every one for `*` rules.
fn rule_langs(languages: &[String]) -> Vec<Option<Language>> {
    if languages.iter().any(|l| l == "*") {
        all_langs()
    } else {
        languages.iter().map(|l| l.parse().ok()).chain([None]).collect()
    }
}

/// Variants that probe case-insensitive and literal-based matching: ASCII upper and lower
/// case, and `s`/`k` swapped for their Unicode simple case-fold twins (ſ U+017F, K U+212A).
fn mutations(text: &str) -> [String; 4] {
    [
        text.to_ascii_uppercase(),
        text.to_ascii_lowercase(),
        text.replace('s', "ſ").replace('K', "\u{212a}"),
        text.replace('S', "ſ").replace('k', "\u{212a}").replace('\n', " \n\t"),
    ]
}

/// Hand-written edge inputs: empty, whitespace, Unicode, unterminated forms, hit floods.
fn edge_inputs() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "\n\n\r\n\t",
        "x",
        "é = \"ünïcödé ✓\" # 注释 élevé\ny = 'naïve' // ok\n",
        "日本語の識別子 = 関数(引数) + \"文字列\"",
        "🙂🙃 = \"🔑🔑🔑🔑🔑🔑🔑🔑\"; password = \"Sup3r$ecret!2024\"",
        "ÀÉÎÕÜ.ÇAÑA(\"SELECT * FROM t WHERE ß = \" + ẞ)",
        "x = \"unterminated\ny = 'also\nz = `tmpl ${a}",
        "/* open comment os.system(x)",
        "f\"SELECT {x} FROM users WHERE id = {uid}\" % args",
        "r#\"raw \"# string\"#; b'\\x00'; 'a; R\"d(raw)d\"; @\"verb\"\"atim\"; $\"{x}\"",
        "((((((((((((((((((((eval(request.args.get('q') + \"x\" % y))))))))))))",
        "cur.execute(\"SELECT * FROM t WHERE a = '\" + a + \"'\")",
        "cur.execute(\"ſELECT * FROM t WHERE a = '\" + a + \"'\")",
        "cur.execute(\"\u{17f}elect * from t where a = '\" + a + \"'\")",
        "api_key = \"AKIAIOSFODNN7EXAMPLE\"\ntoken = \"ghp_0123456789abcdefABCDEF\"\n",
        "\0\u{1}\u{7f}\u{80}\u{ffff}",
        "#include <stdio.h>\n#define X 1\n# comment\n$# ${#a} #[attr]",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    v.push("eval(x)\nos.system(y)\nstrcpy(a, b);\n".repeat(200));
    v.push(format!("s = \"{}\"", "SELECT a FROM b ".repeat(300)));
    v
}

/// Deterministic recombinations (xorshift64, fixed seed) of fragments of the rules' examples:
/// near misses and hits spread across lines, in every language.
fn generated_inputs(pack: &RulePack) -> Vec<(Option<Language>, String)> {
    let mut pieces: BTreeSet<String> = BTreeSet::new();
    for r in pack.rules() {
        for ex in r.spec.examples.insecure.iter().chain(&r.spec.examples.secure) {
            let mut cur = String::new();
            for ch in ex.chars() {
                cur.push(ch);
                if !(ch.is_alphanumeric() || ch == '_') {
                    pieces.insert(std::mem::take(&mut cur));
                }
            }
            pieces.insert(cur);
        }
    }
    let pieces: Vec<String> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    let langs = all_langs();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..1500)
        .map(|i| {
            let n = 4 + (next() % 60) as usize;
            let text: String = (0..n).map(|_| pieces[(next() % pieces.len() as u64) as usize].as_str()).collect();
            (langs[i % langs.len()], text)
        })
        .collect()
}

/// Hashes the hits of a group of (language, text) inputs.
struct Group {
    h: Sha256,
    inputs: usize,
    hits: usize,
}

impl Group {
    fn new() -> Group {
        Group { h: Sha256::new(), inputs: 0, hits: 0 }
    }

    fn add(&mut self, pack: &RulePack, lang: Option<Language>, text: &str) {
        let hits: Vec<Hit> = pack.scan(&lex(text, lang), lang);
        self.h.update((self.inputs as u32).to_le_bytes());
        self.h.update((hits.len() as u32).to_le_bytes());
        for hit in &hits {
            let id = pack.rule(hit.rule).map_or("?", |r| r.id.as_str());
            self.h.update(hit.rule.to_le_bytes());
            self.h.update(id.as_bytes());
            self.h.update([0]);
            self.h.update(hit.start.to_le_bytes());
            self.h.update(hit.end.to_le_bytes());
        }
        self.inputs += 1;
        self.hits += hits.len();
    }

    fn finish(self) -> (usize, usize, String) {
        (self.inputs, self.hits, hex::encode(self.h.finalize()))
    }
}

type Digests = BTreeMap<String, (usize, usize, String)>;

fn digests() -> Digests {
    let pack = RulePack::builtin().expect("built-in rules");
    let prompt = RulePack::builtin_prompt().expect("built-in prompt rules");
    let mut out = Digests::new();

    let mut files = Vec::new();
    toml_files(&root().join("data/corpus"), &mut files);
    files.sort();
    let mut prompt_corpus = Group::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("corpus file readable");
        let name = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        let mut g = Group::new();
        for s in parse_corpus_file(&name, &text).expect("corpus file parses") {
            let lang = resolve_language(s.lang(), None, &s.code);
            g.add(&pack, lang, &s.code);
            g.add(&pack, lang, &s.code.to_ascii_uppercase());
            g.add(&pack, None, &s.code);
            prompt_corpus.add(&prompt, None, &s.code);
        }
        out.insert(name, g.finish());
    }
    out.insert("prompt/corpus".into(), prompt_corpus.finish());

    for (name, p) in [("rules", &pack), ("prompt", &prompt)] {
        let mut examples: BTreeMap<String, Group> = BTreeMap::new();
        for r in p.rules() {
            let area = r.spec.id.split('.').next().unwrap_or("?").to_string();
            let g = examples.entry(format!("{name}/examples/{area}")).or_insert_with(Group::new);
            let langs = if name == "prompt" { vec![None] } else { rule_langs(&r.spec.languages) };
            let lang0 = langs[0];
            for ex in r.spec.examples.insecure.iter().chain(&r.spec.examples.secure) {
                for lang in &langs {
                    g.add(p, *lang, ex);
                }
                for m in mutations(ex) {
                    g.add(p, lang0, &m);
                }
            }
        }
        out.extend(examples.into_iter().map(|(k, g)| (k, g.finish())));
    }

    for lang in all_langs() {
        let mut g = Group::new();
        for text in edge_inputs() {
            g.add(&pack, lang, &text);
        }
        out.insert(format!("synthetic/edge/{}", lang.map_or("unknown", Language::name)), g.finish());
    }
    let mut g = Group::new();
    let mut gp = Group::new();
    for (lang, text) in generated_inputs(&pack) {
        g.add(&pack, lang, &text);
        gp.add(&prompt, None, &text);
    }
    out.insert("synthetic/generated".into(), g.finish());
    out.insert("prompt/generated".into(), gp.finish());
    out
}

fn render(d: &Digests) -> String {
    let mut s = String::from("# Rule hit digests: group, inputs, hits, sha256 of every (rule index, rule id, span).\n");
    for (k, (n, hits, h)) in d {
        s.push_str(&format!("{k} {n} {hits} {h}\n"));
    }
    s
}

#[test]
fn rule_hits_of_the_corpus_examples_and_edge_inputs_match_the_golden_digests() {
    let now = render(&digests());
    if std::env::var_os("GUARDRANK_WRITE_GOLDEN").is_some() {
        std::fs::write(golden_path(), &now).expect("write golden");
    }
    let golden = std::fs::read_to_string(golden_path()).expect("golden file present");
    let old: BTreeMap<&str, &str> = golden.lines().filter_map(|l| l.split_once(' ')).collect();
    let new: BTreeMap<&str, &str> = now.lines().filter_map(|l| l.split_once(' ')).collect();
    let keys: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| old.get(k) != new.get(k))
        .map(|k| format!("{k}: golden {:?}, now {:?}", old.get(k), new.get(k)))
        .collect();
    assert!(differ.is_empty(), "rule hits moved:\n{}", differ.join("\n"));
}
