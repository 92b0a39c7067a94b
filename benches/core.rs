//! Benchmarks of the detection core: extraction plus scoring of realistic candidates, the
//! FTRL update, model file write/load, and the store's blob codec.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use guardrank::corpus::{load_dir, parse_corpus_file};
use guardrank::engine::Detector;
use guardrank::features::Extractor;
use guardrank::lang::Language;
use guardrank::lexer::lex;
use guardrank::model::{Hyper, Model, read_model, write_model};
use guardrank::rules::RulePack;

const FIXTURES: &[(&str, Language, &str)] = &[
    ("python", Language::Python, include_str!("fixtures/candidate_py.py")),
    ("javascript", Language::JavaScript, include_str!("fixtures/candidate_js.js")),
    ("c", Language::C, include_str!("fixtures/candidate_c.c")),
    ("go", Language::Go, include_str!("fixtures/candidate_go.go")),
];

/// A candidate of about `size` bytes made of whole lines of the fixture (repeated if needed).
fn sized(text: &str, size: usize) -> String {
    let mut out = String::with_capacity(size + 100);
    'outer: loop {
        for line in text.lines() {
            if out.len() + line.len() + 1 > size && !out.is_empty() {
                break 'outer;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn assess(c: &mut Criterion) {
    let det = Detector::builtin().expect("built-in detector");
    let mut g = c.benchmark_group("assess");
    for size in [100usize, 500, 2_000, 8_000] {
        for (name, lang, text) in FIXTURES {
            let cand = sized(text, size);
            g.throughput(Throughput::Bytes(cand.len() as u64));
            g.bench_with_input(BenchmarkId::new(*name, size), &cand, |b, cand| {
                b.iter(|| black_box(det.assess(black_box(cand), Some(*lang)).risk));
            });
        }
    }
    g.finish();
}

/// Corpus files whose snippets, in order, make the realistic candidates of `throughput`:
/// distinct code of each language, insecure and secure mixed, no line repeated.
const CORPUS: &[(&str, Language, &str)] = &[
    ("python", Language::Python, include_str!("../data/corpus/python/web.toml")),
    ("javascript", Language::JavaScript, include_str!("../data/corpus/javascript/web.toml")),
    ("go", Language::Go, include_str!("../data/corpus/go/web.toml")),
    ("java", Language::Java, include_str!("../data/corpus/java/web.toml")),
    ("c", Language::C, include_str!("../data/corpus/c/crypto_db.toml")),
];

/// A candidate of about `size` bytes: whole lines of a corpus file's snippets, in order.
fn corpus_candidate(toml: &str, size: usize) -> String {
    let snippets = parse_corpus_file("bench", toml).expect("corpus file parses");
    let code = snippets.iter().map(|s| s.code.trim_end()).collect::<Vec<_>>().join("\n\n");
    let mut out = String::with_capacity(size + 100);
    for line in code.lines() {
        // Whole lines, within a quarter over `size`; a line too long is skipped while the
        // candidate is under half of it.
        if out.len() + line.len() + 1 > size + size / 4 {
            if out.len() >= size / 2 {
                break;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if out.len() >= size - size / 8 {
            break;
        }
    }
    out
}

/// Extraction plus scoring (`Detector::assess`: lex, rule scan, features, score) of realistic
/// candidates from 100 B to 8 KB in five languages, in bytes per second (issue 5).
fn throughput(c: &mut Criterion) {
    let det = Detector::builtin().expect("built-in detector");
    let mut g = c.benchmark_group("throughput");
    for size in [100usize, 500, 2_000, 8_000] {
        for (name, lang, toml) in CORPUS {
            let cand = corpus_candidate(toml, size);
            g.throughput(Throughput::Bytes(cand.len() as u64));
            g.bench_with_input(BenchmarkId::new(*name, size), &cand, |b, cand| {
                b.iter(|| black_box(det.assess(black_box(cand), Some(*lang)).risk));
            });
        }
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    let det = Detector::builtin().expect("built-in detector");
    let ex = Extractor::default();
    let cand = sized(FIXTURES[0].2, 500);
    let lang = Some(Language::Python);
    let mut g = c.benchmark_group("stages-500B-python");
    g.throughput(Throughput::Bytes(cand.len() as u64));
    g.bench_function("lex", |b| b.iter(|| black_box(lex(black_box(&cand), lang).tokens.len())));
    let lexed = lex(&cand, lang);
    g.bench_function("rules", |b| b.iter(|| black_box(det.rules.scan(black_box(&lexed), lang).len())));
    g.bench_function("features", |b| b.iter(|| black_box(ex.extract(black_box(&lexed), lang, []).len())));
    let f = ex.extract(&lexed, lang, []);
    g.bench_function("score", |b| b.iter(|| black_box(det.model.score(black_box(&f)))));
    g.finish();
}

/// `code` with every identifier it assigns (`name =`, not `==`) renamed to `name_v{k}`: a
/// realistic text that no matcher cache has seen yet.
fn renamed(code: &str, k: usize) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices().chain([(code.len(), ' ')]) {
        match (start, is_word(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                words.push((s, &code[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    let assigned = |end: usize| {
        let rest = code[end..].trim_start_matches([' ', '\t']);
        rest.starts_with('=') && !rest.starts_with("==") && !rest.starts_with("=>")
    };
    let targets: Vec<&str> = words
        .iter()
        .filter(|(s, w)| !w.starts_with(|c: char| c.is_ascii_digit()) && assigned(s + w.len()))
        .map(|(_, w)| *w)
        .collect();
    let mut out = String::with_capacity(code.len() + 64);
    let mut last = 0;
    for (s, w) in words {
        out.push_str(&code[last..s]);
        out.push_str(w);
        if targets.contains(&w) {
            out.push_str(&format!("_v{k}"));
        }
        last = s + w.len();
    }
    out.push_str(&code[last..]);
    out
}

/// The cost of rule matching on text the pack has never seen (issue 5): a fresh, warmed-up
/// pack scans 1,000 distinct corpus snippets with renamed identifiers, each once. Repeating one
/// text (the `stages` bench) measures only warm matcher caches.
fn rules_cold(c: &mut Criterion) {
    let corpus = load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus")).expect("corpus");
    let step = (corpus.len() / 1000).max(1);
    let texts: Vec<(Option<Language>, String)> =
        corpus.iter().step_by(step).take(1000).enumerate().map(|(k, s)| (s.lang(), renamed(&s.code, k))).collect();
    let lexed: Vec<_> = texts.iter().map(|(lang, t)| (*lang, lex(t, *lang))).collect();
    let bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();
    let mut g = c.benchmark_group("rules-cold");
    g.sample_size(10);
    g.throughput(Throughput::Elements(lexed.len() as u64));
    g.bench_function(format!("fresh-pack-{}-distinct-texts-{bytes}B", lexed.len()), |b| {
        b.iter_batched(
            || {
                let pack = RulePack::builtin().expect("built-in rules");
                pack.warm_up();
                pack
            },
            |pack| {
                for (lang, lx) in &lexed {
                    black_box(pack.scan(black_box(lx), *lang).len());
                }
                pack
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn ftrl(c: &mut Criterion) {
    let det = Detector::builtin().expect("built-in detector");
    let examples: Vec<_> = FIXTURES
        .iter()
        .flat_map(|(_, lang, text)| [100, 500, 2000].map(|s| det.assess(&sized(text, s), Some(*lang)).features))
        .collect();
    let coords: u64 = examples.iter().map(|f| f.len() as u64).sum();
    let mut model = Model::new(Hyper::default(), "bench");
    let mut g = c.benchmark_group("ftrl");
    g.throughput(Throughput::Elements(coords));
    g.bench_function("update-feature-coordinates", |b| {
        b.iter(|| {
            for (i, f) in examples.iter().enumerate() {
                model.update(black_box(f), i % 2 == 0, 1.0);
            }
        });
    });
    // Production-like: every corpus snippet once (distinct features spread over the whole 2^22
    // table, 48 MiB of state: most coordinates miss the caches), in a shuffled order, as the
    // learner applies a log of feedback.
    let corpus = load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/corpus")).expect("corpus");
    let mut labelled: Vec<_> = corpus.iter().map(|s| (det.assess(&s.code, s.lang()).features, s.insecure())).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..labelled.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        labelled.swap(i, (state >> 33) as usize % (i + 1));
    }
    let coords: u64 = labelled.iter().map(|(f, _)| f.len() as u64).sum();
    let mut model = Model::new(Hyper::default(), "bench");
    g.throughput(Throughput::Elements(coords));
    g.bench_function(format!("update-corpus-{}-examples-{coords}-coordinates", labelled.len()), |b| {
        b.iter(|| {
            for (f, insecure) in &labelled {
                model.update(black_box(f), *insecure, 1.0);
            }
        });
    });
    g.finish();
}

fn model_file(c: &mut Criterion) {
    let det = Detector::builtin().expect("built-in detector");
    let mut buf = Vec::new();
    write_model(&det.model, &mut buf).expect("encode");
    let mut g = c.benchmark_group("model-file");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("write", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(buf.len());
            write_model(black_box(&det.model), &mut out).expect("encode");
            black_box(out.len())
        });
    });
    g.bench_function("load", |b| b.iter(|| black_box(read_model(black_box(&buf[..])).expect("decode").nonzero())));
    g.finish();
}

/// The prompt scorer (prompt rules plus the learned prompt model) on a chat request and on
/// file prefixes of 2 KB to 64 KB (a code context with a comment request at its end), in bytes/s.
fn prompt(c: &mut Criterion) {
    let scorer = guardrank::prompt::PromptScorer::builtin().expect("built-in prompt scorer");
    let mut g = c.benchmark_group("prompt");
    let chat = "write a function that parses the CSV upload and stores each row with a parameterised insert";
    g.throughput(Throughput::Bytes(chat.len() as u64));
    g.bench_function("chat", |b| b.iter(|| black_box(scorer.assess(black_box(chat)).risk)));
    for size in [2_000usize, 16_000, 64_000] {
        let mut text = sized(FIXTURES[0].2, size);
        text.push_str("# now add a helper that retries the upload three times\n");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("file-prefix", size), &text, |b, t| {
            b.iter(|| black_box(scorer.assess(black_box(t)).risk));
        });
    }
    g.finish();
}

/// The store's blob codec on an impression of four ~300-byte candidates of the fixtures, the
/// body the rank path writes for every request and the feedback path reads back.
fn store_codec(c: &mut Criterion) {
    use guardrank::events::{CandidateRecord, EventBody, Impression};
    use guardrank::store::codec::{decode_event, encode_event};
    let det = Detector::builtin().expect("built-in detector");
    let candidates = FIXTURES
        .iter()
        .enumerate()
        .map(|(i, (name, lang, text))| {
            let a = det.assess(&sized(text, 300), Some(*lang));
            CandidateRecord {
                id: format!("c{i}-{name}"),
                risk: a.risk as f32,
                flagged: !a.findings.is_empty(),
                rules: a.findings.iter().map(|f| f.rule_id.to_string()).collect(),
                features: a.features,
                text: None,
            }
        })
        .collect();
    let body = EventBody::Impression(Impression {
        request_id: "r_0190a1b2c3d4e5f6".into(),
        user_id: "user-1234".into(),
        key_id: "k_plugin".into(),
        model_version: "risk-3".into(),
        language: Some("python".into()),
        prompt_risk: 0.125,
        candidates,
    });
    let bytes = encode_event(&body).expect("encodes");
    let mut g = c.benchmark_group("store-codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("encode-impression-4-candidates-{}B", bytes.len()), |b| {
        b.iter(|| black_box(encode_event(black_box(&body)).expect("encodes").len()))
    });
    g.bench_function(format!("decode-impression-4-candidates-{}B", bytes.len()), |b| {
        b.iter(|| black_box(decode_event(black_box(&bytes)).expect("decodes")))
    });
    g.finish();
}

criterion_group!(benches, assess, throughput, stages, rules_cold, ftrl, model_file, store_codec, prompt);
criterion_main!(benches);
