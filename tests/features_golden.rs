//! Feature stability: the features of every corpus snippet and of a fixed set of edge and
//! generated inputs hash to the digests recorded in tests/golden/features-v2.txt.
//!
//! The shipped model was trained on these features, so any change that moves one coordinate,
//! one value bit or the offset of any input is an extractor version bump (and a retrain), never
//! a silent side effect of, say, a performance change. Features are taken along the path of
//! `guardrank score` (`engine::assess` with the built-in rules and model), so rule hits count.
//!
//! Regenerate (only together with an `EXTRACTOR_VERSION` bump, or when the corpus or the rule
//! data change on purpose) with `GUARDRANK_WRITE_GOLDEN=1 cargo test --test features_golden`.

use guardrank::corpus::{load_dir, parse_corpus_file};
use guardrank::engine::{Detector, resolve_language};
use guardrank::features::{EXTRACTOR_VERSION, Extractor, Features};
use guardrank::lang::Language;
use guardrank::lexer::lex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 4] = [
    include_str!("../benches/fixtures/candidate_py.py"),
    include_str!("../benches/fixtures/candidate_js.js"),
    include_str!("../benches/fixtures/candidate_c.c"),
    include_str!("../benches/fixtures/candidate_go.go"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_path() -> PathBuf {
    root().join("tests/golden/features-v2.txt")
}

/// Every bit of a feature vector: length, indices, value bits, offset bits.
fn absorb(h: &mut Sha256, f: &Features) {
    h.update((f.idx.len() as u32).to_le_bytes());
    for i in &f.idx {
        h.update(i.to_le_bytes());
    }
    for v in &f.val {
        h.update(v.to_bits().to_le_bytes());
    }
    h.update(f.offset.to_bits().to_le_bytes());
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

/// Hand-written edge inputs: empty, whitespace, Unicode (also where identifiers and literals
/// are cut), long literals and identifiers, unterminated forms, large candidates.
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
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbé(x)",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé = 1; ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθ.ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠ()",
        "\"wörd wörter ÄÖÜäöü_ab cd_ef ghijklmnopqrstuvwxyzabcdefgh ij ÉÉ 12 345678\"",
        "1234567 0x1F 1_000_000 3.14159 12345 1e10 0b1010 1..10",
        "x = \"unterminated\ny = 'also\nz = `tmpl ${a}",
        "/* open comment os.system(x)",
        "f\"SELECT {x} FROM users WHERE id = {uid}\" % args",
        "r#\"raw \"# string\"#; b'\\x00'; 'a; R\"d(raw)d\"; @\"verb\"\"atim\"; $\"{x}\"",
        "a.b.c.d.e(f)->g::h?.i(j)..k(l)",
        "((((((((((((((((((((eval(request.args.get('q') + \"x\" % y))))))))))))",
        "cur.execute(\"SELECT * FROM t WHERE a = '\" + a + \"'\")",
        "api_key = \"AKIAIOSFODNN7EXAMPLE\"\ntoken = \"ghp_0123456789abcdefABCDEF\"\n",
        "\0\u{1}\u{7f}\u{80}\u{ffff}",
        "#include <stdio.h>\n#define X 1\n# comment\n$# ${#a} #[attr]",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    v.push(format!("s = \"{}\"", "SELECT a FROM b ".repeat(300)));
    v.push(format!("x = {}(y)", "é".repeat(100)));
    for f in FIXTURES {
        let mut big = String::new();
        while big.len() < 8192 {
            big.push_str(f);
        }
        v.push(big);
    }
    v
}

/// Deterministic code-like noise (xorshift64, fixed seed): pieces that exercise every token
/// kind, chains, literal shapes, comments and Unicode in random combinations.
fn generated_inputs() -> Vec<String> {
    const PIECES: [&str; 64] = [
        "os",
        "system",
        "request",
        "args",
        "get",
        "pickle",
        "loads",
        "eval",
        "exec",
        "password",
        "Token",
        "API_KEY",
        "self",
        "this",
        "None",
        "null",
        "format",
        "sprintf",
        "innerHTML",
        "$_GET",
        "x",
        "y",
        "é",
        "数据",
        ".",
        "::",
        "->",
        "?.",
        "..",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "+",
        "+=",
        "%",
        "<<",
        "=",
        "==",
        ",",
        ";",
        ":",
        " ",
        " ",
        "\n",
        "\t",
        "\"",
        "'",
        "`",
        "#",
        "//",
        "/*",
        "*/",
        "f\"",
        "${",
        "#{",
        "\\",
        "\"SELECT * FROM t WHERE id = ",
        "'<script>'",
        "\"sh -c \"",
        "42",
        "123456",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..400)
        .map(|_| {
            let n = (next() % 120) as usize;
            (0..n).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect()
        })
        .collect()
}

/// Group name → (inputs, digest) for the corpus files and the synthetic inputs.
fn digests() -> BTreeMap<String, (usize, String)> {
    let det = Detector::builtin().expect("built-in detector");
    let mut out = BTreeMap::new();

    let corpus = root().join("data/corpus");
    let mut files = Vec::new();
    toml_files(&corpus, &mut files);
    files.sort();
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("corpus file readable");
        let name = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        let snippets = parse_corpus_file(&name, &text).expect("corpus file parses");
        let mut h = Sha256::new();
        for s in &snippets {
            let lang = resolve_language(s.lang(), None, &s.code);
            absorb(&mut h, &det.assess(&s.code, lang).features);
        }
        total += snippets.len();
        out.insert(name, (snippets.len(), hex::encode(h.finalize())));
    }
    assert_eq!(total, load_dir(&corpus).expect("corpus loads").len(), "every corpus snippet is covered");

    let other = Extractor::new(18);
    for (group, inputs) in [("edge", edge_inputs()), ("generated", generated_inputs())] {
        let langs = Language::ALL.iter().copied().map(Some).chain([None]);
        for lang in langs {
            let mut h = Sha256::new();
            for text in &inputs {
                absorb(&mut h, &det.assess(text, lang).features);
                // Another width, without rules: the mask is applied everywhere.
                absorb(&mut h, &other.extract(&lex(text, lang), lang, []));
            }
            let lname = lang.map_or("unknown", Language::name);
            out.insert(format!("synthetic/{group}/{lname}"), (inputs.len(), hex::encode(h.finalize())));
        }
    }
    out
}

fn render(d: &BTreeMap<String, (usize, String)>) -> String {
    let mut s = format!(
        "# Feature digests of extractor version {EXTRACTOR_VERSION}: group, inputs, sha256 of every idx, val bit and offset.\n"
    );
    for (k, (n, h)) in d {
        s.push_str(&format!("{k} {n} {h}\n"));
    }
    s
}

#[test]
fn features_of_the_corpus_and_edge_inputs_match_the_golden_digests() {
    assert_eq!(EXTRACTOR_VERSION, 2, "a new extractor version needs a new golden file");
    let now = render(&digests());
    if std::env::var_os("GUARDRANK_WRITE_GOLDEN").is_some() {
        std::fs::write(golden_path(), &now).expect("write golden");
    }
    let golden = std::fs::read_to_string(golden_path()).expect("golden file present");
    let differ: Vec<String> = {
        let old: BTreeMap<&str, &str> = golden.lines().filter_map(|l| l.split_once(' ')).collect();
        let new: BTreeMap<&str, &str> = now.lines().filter_map(|l| l.split_once(' ')).collect();
        let keys: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
        keys.into_iter()
            .filter(|k| old.get(k) != new.get(k))
            .map(|k| format!("{k}: golden {:?}, now {:?}", old.get(k), new.get(k)))
            .collect()
    };
    assert!(
        differ.is_empty(),
        "features moved (an extractor version bump, or a corpus/rule change to record on purpose):\n{}",
        differ.join("\n")
    );
}
