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
    let features = ex.extract(&lexed, lang, hit.iter().filter_map(|r| rules.rule(*r)));
    let without_rules = (!hit.is_empty()).then(|| ex.extract(&lexed, lang, []));
    Example { features, without_rules, insecure, weight: 1.0 }
}

/// `guardrank train` options.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Corpus: a directory of TOML files (default: data/corpus).
    #[arg(long)]
    pub corpus: Option<std::path::PathBuf>,
    /// Where to write the model file.
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// FTRL learning rate (alpha).
    #[arg(long, default_value_t = Hyper::default().alpha)]
    pub alpha: f32,
    /// FTRL L1 strength.
    #[arg(long, default_value_t = Hyper::default().l1)]
    pub l1: f32,
    /// FTRL L2 strength.
    #[arg(long, default_value_t = Hyper::default().l2)]
    pub l2: f32,
    /// Use the rule files (*.toml) of this directory instead of the built-in pack.
    #[arg(long)]
    pub rules: Option<std::path::PathBuf>,
    /// Probability of learning an example without its rule features (see `train::fit`).
    #[arg(long, default_value_t = 0.5)]
    pub rule_dropout: f64,
    /// Version name recorded in the model file.
    #[arg(long, default_value = "baseline")]
    pub version: String,
    /// Also learn from the held-out families (the held-out figures then no longer measure
    /// generalisation).
    #[arg(long)]
    pub include_holdout: bool,
}

pub fn run(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let (corpus, output, epochs, version, rules_dir, rule_dropout, include_holdout) = (
        a.corpus.as_deref(),
        a.output.as_path(),
        a.epochs,
        a.version.as_str(),
        a.rules.as_deref(),
        a.rule_dropout,
        a.include_holdout,
    );
    let hyper = Hyper { alpha: a.alpha, l1: a.l1, l2: a.l2, ..Hyper::default() };
    if !(0.0..=1.0).contains(&rule_dropout) {
        anyhow::bail!("--rule-dropout must be in [0, 1]");
    }
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
    let (model, progressive) = fit(&train, hyper, epochs, TRAIN_SEED, rule_dropout, version);
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
