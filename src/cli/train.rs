//! `guardrank train`: fit the model on the corpus and write a model file.

use super::corpus_cmd;
use crate::engine::resolve_language;
use crate::features::Extractor;
use crate::lexer::lex;
use crate::model::metrics::evaluate;
use crate::model::{Hyper, write_model};
use crate::rules::RulePack;
use crate::train::{Example, fit};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Seed of the training shuffle: fixed, so the baseline is reproducible bit for bit.
pub const TRAIN_SEED: u64 = 0x6775_6172_6472_6e6b;

/// Features of one snippet under the built-in rules.
pub fn example(
    rules: &RulePack,
    ex: &Extractor,
    code: &str,
    lang: Option<crate::lang::Language>,
    insecure: bool,
) -> Example {
    let lexed = lex(code, lang);
    let mut hit: Vec<u32> = rules.scan(&lexed, lang).iter().map(|h| h.rule).collect();
    hit.sort_unstable();
    hit.dedup();
    Example { features: ex.extract(&lexed, lang, hit.iter().filter_map(|r| rules.rule(*r))), insecure, weight: 1.0 }
}

pub fn run(
    corpus: Option<&Path>,
    output: &Path,
    epochs: usize,
    version: &str,
    hyper: Hyper,
    rules_dir: Option<&Path>,
    include_holdout: bool,
) -> anyhow::Result<ExitCode> {
    let ok = |x: f32| x.is_finite() && x >= 0.0;
    if !(ok(hyper.alpha) && hyper.alpha > 0.0 && ok(hyper.l1) && ok(hyper.l2)) {
        anyhow::bail!("--alpha must be positive and --l1, --l2 non-negative");
    }
    let snippets = corpus_cmd::load(corpus)?;
    let rules: RulePack = super::rule_pack(rules_dir)?;
    let ex = Extractor::new(hyper.bits);
    let (mut train, mut hold) = (Vec::new(), Vec::new());
    for s in &snippets {
        let lang = resolve_language(s.lang(), None, &s.code);
        let e = example(&rules, &ex, &s.code, lang, s.insecure());
        if s.is_holdout() {
            hold.push(e.clone());
        }
        if include_holdout || !s.is_holdout() {
            train.push(e);
        }
    }
    eprintln!("training on {} snippets ({} held out), {} passes", train.len(), hold.len(), epochs);
    let (model, progressive) = fit(&train, hyper, epochs, TRAIN_SEED, version);
    let pv = progressive.report(super::DEFAULT_THRESHOLD);
    eprintln!("progressive validation (first pass): ROC-AUC {:.4}, log loss {:.4}", pv.roc_auc, pv.log_loss);
    let scores: Vec<f64> = hold.iter().map(|e| model.score(&e.features)).collect();
    let labels: Vec<bool> = hold.iter().map(|e| e.insecure).collect();
    let r = evaluate(&scores, &labels, super::DEFAULT_THRESHOLD);
    let note = if include_holdout { " (seen in training)" } else { "" };
    eprintln!(
        "held-out families{note}: ROC-AUC {:.4}, PR-AUC {:.4}, log loss {:.4}, precision {:.3} recall {:.3} at {:.2}",
        r.roc_auc, r.pr_auc, r.log_loss, r.precision, r.recall, r.threshold
    );
    let mut buf = Vec::new();
    write_model(&model, &mut buf)?;
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, &buf).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("renaming into {}", output.display()))?;
    eprintln!("wrote {} ({} bytes, {} weights)", output.display(), buf.len(), model.nonzero());
    Ok(ExitCode::SUCCESS)
}
