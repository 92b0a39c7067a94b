//! The model file format: the golden file of format version 1 loads and scores as recorded.
//!
//! Regenerate the golden file (only when the format version changes, as a new file) with
//! `GUARDRANK_WRITE_GOLDEN=1 cargo test --test model_file`.

use guardrank::features::Features;
use guardrank::model::{FORMAT_VERSION, Hyper, Model, read_model, write_model};
use std::path::PathBuf;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/model-format-1.grm")
}

fn probe() -> Features {
    Features { idx: vec![3, 17, 99], val: vec![1.0, 0.5, 0.25], offset: 0.5 }
}

fn golden_model() -> Model {
    let mut m = Model::new(Hyper { bits: 10, ..Hyper::default() }, "golden-1");
    for k in 0..64u32 {
        let f = Features { idx: vec![k % 7, 17, 90 + k % 11], val: vec![1.0, 0.5, 0.25], offset: 0.0 };
        m.update(&f, k % 3 == 0, 1.0);
    }
    m
}

#[test]
fn the_golden_file_of_format_1_loads_and_scores_as_recorded() {
    assert_eq!(FORMAT_VERSION, 1, "a new format version needs a new golden file");
    if std::env::var_os("GUARDRANK_WRITE_GOLDEN").is_some() {
        let mut buf = Vec::new();
        write_model(&golden_model(), &mut buf).expect("encode");
        std::fs::write(golden_path(), buf).expect("write golden");
    }
    let bytes = std::fs::read(golden_path()).expect("golden file present");
    let m = read_model(&bytes[..]).expect("golden file loads");
    assert_eq!(m.version, "golden-1");
    assert_eq!(m.examples, 64);
    assert!(m == golden_model(), "the loaded weights equal the ones training produces today");
    let p = m.score(&probe());
    assert!((p - golden_model().score(&probe())).abs() < 1e-12);
    assert!(p > 0.0 && p < 1.0);
}

#[test]
fn the_built_in_model_loads() {
    let m = read_model(guardrank::engine::BUILTIN_MODEL).expect("built-in model loads");
    assert!(m.nonzero() > 1000, "the built-in model is trained ({} weights)", m.nonzero());
}
