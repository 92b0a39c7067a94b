//! Benchmarks of the detection core: extraction plus scoring of realistic candidates, the
//! FTRL update, and model file write/load.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use guardrank::engine::Detector;
use guardrank::features::Extractor;
use guardrank::lang::Language;
use guardrank::lexer::lex;
use guardrank::model::{Hyper, Model, read_model, write_model};

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

criterion_group!(benches, assess, stages, ftrl, model_file);
criterion_main!(benches);
