//! `guardrank train`: the offline retraining job.
//!
//! 1. Reads the labelled corpus (its training families) and, with a store, every labelled
//!    feedback event of the log (label semantics of `policy::label`), weighed by each
//!    sender's trust and label budget as the online learner weighed them
//!    ([`crate::abuse::gate`]; `--no-label-gate` turns this off).
//! 2. Splits by time: the newest events (`--holdout-events`, a fraction) and the corpus's
//!    held-out families are not trained on.
//! 3. Fits with `batch::fit_batch` (multi-pass FTRL + L-BFGS by default).
//! 4. Evaluates on both holdouts: on the corpus's held-out families against the live model
//!    (the newest snapshot's weights, which include what was learned online; else the live
//!    registry version; else the built-in model), and on the newest events against the risk
//!    logged when they were served (the live model learned from them online; scoring them
//!    with it again would leak).
//! 5. Publishes only when the candidate is no worse in log loss and ROC-AUC, within the
//!    tolerances, on each holdout; otherwise exits 1 and leaves the live model in place.
//!    `--force` publishes anyway and the activation records it.
//! 6. Writes a report (Markdown and SVG plots) to `DIR/reports/<version>/` or `--report`.
//!
//! The built-in baseline is built by this same path, without a store:
//! `guardrank train --output models/baseline.grm --version baseline-…`.

use super::corpus_cmd;
use super::serve::{ServeArgs, load_settings};
use crate::abuse::gate::LabelGate;
use crate::batch::{BatchConfig, FitSummary, Method, RuleColumn, fit_batch};
use crate::corpus::Snippet;
use crate::engine::{BUILTIN_MODEL, resolve_language};
use crate::events::{ActivationReason, EventBody};
use crate::features::{Extractor, severity_prior};
use crate::lexer::lex;
use crate::model::metrics::{Report, evaluate};
use crate::model::{Hyper, Model, read_model, write_model};
use crate::policy::{LabelWeights, label, verdict_label};
use crate::report::{ReportInput, Section, Series, write_report};
use crate::rules::{Mode, RulePack};
use crate::server::admin::rfc3339;
use crate::store::Store;
use crate::train::Example;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Seed of the training shuffle: fixed, so the same data gives the same model.
pub const TRAIN_SEED: u64 = 0x6775_6172_6472_6e6b;

/// Features of one snippet under `rules`.
pub fn example(
    rules: &RulePack,
    ex: &Extractor,
    code: &str,
    lang: Option<crate::lang::Language>,
    insecure: bool,
    group: u64,
) -> Example {
    let lexed = lex(code, lang);
    let mut hit: Vec<u32> = rules.scan(&lexed, lang).iter().map(|h| h.rule).collect();
    hit.sort_unstable();
    hit.dedup();
    let features = ex.extract(&lexed, lang, hit.iter().filter_map(|r| rules.rule(*r)));
    let without_rules = (!hit.is_empty()).then(|| ex.extract(&lexed, lang, []));
    Example { features, without_rules, insecure, weight: 1.0, group }
}

/// `guardrank train` options.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Data directory of the service whose logged events to learn from (its SQLite store, and
    /// where reports go). Without it and without --store, only the corpus is used.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Store URL instead of the data directory's (e.g. postgres://…).
    #[arg(long)]
    pub store: Option<String>,
    /// Settings file of the service (label weights); default ./guardrank.toml when present.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Corpus: a directory of TOML files, or a JSON-lines file as `corpus export` writes
    /// (default: data/corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Also write the model file here (required without a store).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where to write the report (default: DATA_DIR/reports/VERSION with a data directory).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Version name of the new model (default: risk-YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub version: Option<String>,
    /// How to fit: stacked (FTRL + L-BFGS), linfa (L-BFGS alone) or ftrl.
    #[arg(long, value_enum, default_value_t = Method::Stacked)]
    pub method: Method,
    /// FTRL passes over the training data.
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
    /// L2 strength of the L-BFGS fit, per row of the dense matrix.
    #[arg(long, default_value_t = BatchConfig::default().l2)]
    pub batch_l2: f64,
    /// Most hashed columns of the dense matrix (rule features, then the most frequent).
    #[arg(long, default_value_t = BatchConfig::default().max_columns)]
    pub max_columns: usize,
    /// Use the rule files (*.toml) of this directory instead of the built-in pack.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Probability of learning an example without its rule features in FTRL passes.
    #[arg(long, default_value_t = 0.5)]
    pub rule_dropout: f64,
    /// Also learn from the corpus's held-out families (its figures then no longer measure
    /// generalisation).
    #[arg(long)]
    pub include_holdout: bool,
    /// Learn feedback labels at their full weight, without the senders' trust weighting and
    /// label budgets that the online learner applies (and this job replays by default).
    #[arg(long)]
    pub no_label_gate: bool,
    /// Fraction of the labelled events, the newest, held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    pub holdout_events: f64,
    /// How much worse the candidate's log loss may be than the reference's on a holdout.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance_log_loss: f64,
    /// How much lower the candidate's ROC-AUC may be than the reference's on a holdout.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance_auc: f64,
    /// Publish even if the holdout check fails (recorded in the activation and the report).
    #[arg(long)]
    pub force: bool,
    /// Train and evaluate, write the report, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Versions the registry keeps besides the live one.
    #[arg(long, default_value_t = crate::registry::KEEP_DEFAULT)]
    pub keep: usize,
}

/// One labelled event for training or evaluation.
struct LoggedExample {
    seq: i64,
    example: Example,
    /// The risk served when the candidate was shown.
    served_risk: f64,
}

/// A corpus example with its language, for per-language figures.
struct CorpusExample {
    example: Example,
    language: String,
}

fn now_ms() -> i64 {
    crate::server::now_ms()
}

fn default_version(ms: i64) -> String {
    // 2026-11-22T03:04:05.678Z -> risk-20261122-030405
    let t = rfc3339(ms);
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    format!("risk-{}-{}", &digits[..8], &digits[8..14])
}

fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Loads the corpus from a TOML directory or a JSON-lines file.
fn load_corpus(given: Option<&Path>) -> anyhow::Result<Vec<Snippet>> {
    match given {
        Some(p) if p.is_file() => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let mut out = Vec::new();
            for (k, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                #[derive(serde::Deserialize)]
                struct Line {
                    code: String,
                    language: String,
                    label: u8,
                    #[serde(default)]
                    family: Option<String>,
                }
                let l: Line = serde_json::from_str(line).with_context(|| format!("{}:{}", p.display(), k + 1))?;
                if l.label > 1 {
                    anyhow::bail!("{}:{}: label must be 0 or 1", p.display(), k + 1);
                }
                out.push(Snippet {
                    family: l.family.unwrap_or_else(|| format!("line-{}", k + 1)),
                    language: l.language,
                    label: l.label,
                    kind: if l.label == 1 { crate::corpus::Kind::Insecure } else { crate::corpus::Kind::Benign },
                    cwe: None,
                    code: l.code,
                });
            }
            Ok(out)
        }
        _ => corpus_cmd::load(given),
    }
}

/// Reads every labelled feedback and reviewer-verdict event of the log. Returns them in seq order and the log's
/// last seq at the time of reading. With a gate, feedback labels are weighed by their senders'
/// trust and budgets as the online learner weighed them, and labels that keep no weight are
/// left out (of training and of the newest-events holdout alike).
async fn read_logged(
    store: &dyn Store,
    weights: &LabelWeights,
    mut gate: Option<&mut LabelGate>,
) -> anyhow::Result<(Vec<LoggedExample>, i64)> {
    let last = store.last_seq().await.context("reading the log head")?;
    let bar = crate::report::progress(last.max(0).unsigned_abs(), "reading the event log");
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let events = store.read_events(after, 10_000).await.context("reading the event log")?;
        let Some(tail) = events.last() else { break };
        after = tail.seq;
        bar.set_position(after.unsigned_abs());
        for e in events {
            if e.seq > last {
                break;
            }
            if let Some(g) = gate.as_deref_mut() {
                g.observe(&e);
            }
            // Feedback and reviewer verdicts: the labels the server learns online. Verdicts
            // are a reviewer's: no trust weighting or budget, as online.
            let (served, labelled) = match e.body {
                EventBody::Feedback(f) => {
                    let l = label(f.outcome, f.flagged, weights).map(|(insecure, w)| match gate.as_deref_mut() {
                        Some(g) => (insecure, g.weigh(f.user_id.as_deref(), w, e.at_ms)),
                        None => (insecure, w),
                    });
                    (f.risk, l.filter(|(_, w)| *w > 0.0).map(|l| (f.features, l)))
                }
                EventBody::ReviewVerdict(v) => (v.risk, verdict_label(&v, weights).map(|l| (v.features, l))),
                _ => continue,
            };
            if let Some((features, (insecure, weight))) = labelled {
                out.push(LoggedExample {
                    seq: e.seq,
                    served_risk: f64::from(served),
                    example: Example { features, without_rules: None, insecure, weight, group: e.seq.unsigned_abs() },
                });
            }
        }
        if after >= last {
            break;
        }
    }
    bar.finish_and_clear();
    Ok((out, last))
}

/// The model the candidate must beat on the corpus holdout: the newest snapshot's weights
/// (what serves, with online learning), else the live registry version, else the built-in.
async fn live_model(store: Option<&dyn Store>) -> anyhow::Result<(Model, String)> {
    if let Some(store) = store {
        if let Some(snap) = crate::server::snapshot::load_newest_snapshot(store).await {
            let v = snap.model.version.clone();
            return Ok((snap.model, format!("{v} with online learning (snapshot at event {})", snap.seq)));
        }
        if let Some((_, a)) = store.last_activation().await.context("reading the live version")? {
            let m = crate::registry::load(store, &a.version).await.context("loading the live version")?;
            return Ok((m, format!("{} (registry)", a.version)));
        }
    }
    let m = read_model(BUILTIN_MODEL).context("loading the built-in model")?;
    let v = m.version.clone();
    Ok((m, format!("{v} (built-in)")))
}

/// The holdout check of one section: `None` if it passes, else why not.
fn regression(name: &str, cand: &Report, reference: &Report, a: &TrainArgs) -> Option<String> {
    if cand.n == 0 {
        return None;
    }
    if cand.log_loss > reference.log_loss + a.tolerance_log_loss {
        return Some(format!(
            "log loss on {name} is {:.4}, worse than {:.4} by more than the tolerance {}",
            cand.log_loss, reference.log_loss, a.tolerance_log_loss
        ));
    }
    if cand.roc_auc.is_finite() && reference.roc_auc.is_finite() && cand.roc_auc < reference.roc_auc - a.tolerance_auc {
        return Some(format!(
            "ROC-AUC on {name} is {:.4}, below {:.4} by more than the tolerance {}",
            cand.roc_auc, reference.roc_auc, a.tolerance_auc
        ));
    }
    None
}

fn check_args(a: &TrainArgs, hyper: &Hyper) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.rule_dropout) {
        anyhow::bail!("--rule-dropout must be in [0, 1]");
    }
    if !(0.0..1.0).contains(&a.holdout_events) {
        anyhow::bail!("--holdout-events must be in [0, 1)");
    }
    let ok = |x: f32| x.is_finite() && x >= 0.0;
    if !(ok(hyper.alpha) && hyper.alpha > 0.0 && ok(hyper.l1) && ok(hyper.l2)) {
        anyhow::bail!("--alpha must be positive and --l1, --l2 non-negative");
    }
    if !(a.batch_l2.is_finite() && a.batch_l2 > 0.0) {
        anyhow::bail!("--batch-l2 must be positive");
    }
    let tolerance_ok = |t: f64| t.is_finite() && t >= 0.0;
    if !tolerance_ok(a.tolerance_log_loss) || !tolerance_ok(a.tolerance_auc) {
        anyhow::bail!("tolerances must be non-negative");
    }
    if a.max_columns == 0 {
        anyhow::bail!("--max-columns must be at least 1");
    }
    if a.data_dir.is_none() && a.store.is_none() && a.output.is_none() && !a.dry_run {
        anyhow::bail!("nowhere to publish: give --data-dir or --store (the registry), or --output FILE");
    }
    Ok(())
}

pub fn run(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let hyper = Hyper { alpha: a.alpha, l1: a.l1, l2: a.l2, ..Hyper::default() };
    check_args(a, &hyper)?;
    let version = a.version.clone().unwrap_or_else(|| default_version(now_ms()));
    if !valid_version(&version) {
        anyhow::bail!("--version must be 1 to 64 characters of letters, digits, '-', '_' and '.'");
    }
    let started = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;

    // The store, if any, and the label weights of the service's settings.
    let use_store = a.data_dir.is_some() || a.store.is_some();
    let settings = load_settings(&ServeArgs {
        addr: None,
        data_dir: a.data_dir.clone(),
        store: a.store.clone(),
        config: a.config.clone(),
    })?;
    let store: Option<Arc<dyn Store>> = if use_store {
        if let Some(d) = &a.data_dir
            && a.store.is_none()
            && !d.join("guardrank.db").exists()
        {
            anyhow::bail!("{} holds no guardrank store (guardrank.db); run the service there first", d.display());
        }
        let url = settings.store_url();
        Some(rt.block_on(crate::store::open(&url, settings.durability)).context("opening the store")?)
    } else {
        None
    };

    // Corpus.
    let rules: RulePack = super::rule_pack(a.rules.as_deref())?;
    let ex = Extractor::new(hyper.bits);
    let snippets = load_corpus(a.corpus.as_deref())?;
    let bar = crate::report::progress(snippets.len() as u64, "extracting corpus features");
    let (mut train, mut corpus_hold) = (Vec::new(), Vec::new());
    for s in &snippets {
        let lang = resolve_language(s.lang(), None, &s.code);
        let group = u64::from(crate::features::hash::murmur3_32(s.family.as_bytes(), 0x0f01_d5ed));
        let e = example(&rules, &ex, &s.code, lang, s.insecure(), group);
        if s.is_holdout() {
            corpus_hold.push(CorpusExample { example: e.clone(), language: s.language.clone() });
        }
        if a.include_holdout || !s.is_holdout() {
            train.push(e);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let corpus_train = train.len();

    // Logged events, split by time.
    let weights = settings.label_weights();
    let mut gate = (!a.no_label_gate).then(|| LabelGate::new(settings.abuse(), settings.guard()));
    let (logged, log_last) = match &store {
        Some(s) => rt.block_on(read_logged(s.as_ref(), &weights, gate.as_mut()))?,
        None => (Vec::new(), 0),
    };
    if let Some(g) = gate.as_ref().filter(|g| g.wanted > 0.0) {
        eprintln!(
            "feedback label weight kept after trust and budgets: {:.1} of {:.1} ({:.1}%)",
            g.granted,
            g.wanted,
            100.0 * g.granted / g.wanted
        );
    }
    let n_hold = if logged.len() >= 20 { (logged.len() as f64 * a.holdout_events).ceil() as usize } else { 0 };
    let split = logged.len() - n_hold;
    let trained_through_seq = logged[..split].last().map_or(0, |e| e.seq);
    let (events_train, events_hold) = logged.split_at(split);
    train.extend(events_train.iter().map(|e| e.example.clone()));
    eprintln!(
        "training {version} on {} examples: {corpus_train} corpus snippets and {} logged events (through event {trained_through_seq}); holding out {} corpus snippets and the newest {} events",
        train.len(),
        events_train.len(),
        corpus_hold.len(),
        events_hold.len()
    );

    // Fit.
    let rule_cols: Vec<RuleColumn> = rules
        .rules()
        .iter()
        .filter(|r| r.spec.mode != Mode::Monitor)
        .map(|r| RuleColumn { index: ex.rule_index(&r.spec.id), prior: severity_prior(r.spec.severity) })
        .collect();
    let cfg = BatchConfig {
        method: a.method,
        hyper,
        epochs: a.epochs,
        rule_dropout: a.rule_dropout,
        seed: TRAIN_SEED,
        max_columns: a.max_columns,
        l2: a.batch_l2,
        ..BatchConfig::default()
    };
    let spinner = crate::report::progress(0, "fitting");
    let fit_started = std::time::Instant::now();
    let (candidate, summary) = fit_batch(&train, &rule_cols, ex.bias_index(), &cfg, &version, &mut |stage| {
        spinner.set_message(stage.to_string());
        spinner.tick();
    });
    spinner.finish_and_clear();
    let fit_secs = fit_started.elapsed().as_secs_f64();
    for n in &summary.notes {
        eprintln!("note: {n}");
    }
    drop(train);

    // Evaluate.
    let (live, live_name) = rt.block_on(live_model(store.as_deref()))?;
    let threshold = super::DEFAULT_THRESHOLD;
    let c_labels: Vec<bool> = corpus_hold.iter().map(|c| c.example.insecure).collect();
    let c_cand: Vec<f64> = corpus_hold.iter().map(|c| candidate.score(&c.example.features)).collect();
    let c_live: Vec<f64> = corpus_hold.iter().map(|c| live.score(&c.example.features)).collect();
    let e_labels: Vec<bool> = events_hold.iter().map(|e| e.example.insecure).collect();
    let e_cand: Vec<f64> = events_hold.iter().map(|e| candidate.score(&e.example.features)).collect();
    let e_served: Vec<f64> = events_hold.iter().map(|e| e.served_risk).collect();
    let (rc, rl) = (evaluate(&c_cand, &c_labels, threshold), evaluate(&c_live, &c_labels, threshold));
    let (ec, es) = (evaluate(&e_cand, &e_labels, threshold), evaluate(&e_served, &e_labels, threshold));
    print_row("corpus held-out families", "candidate", &rc);
    print_row("corpus held-out families", &live_name, &rl);
    if !events_hold.is_empty() {
        print_row("newest events", "candidate", &ec);
        print_row("newest events", "served (logged risk)", &es);
    }
    let mut problems: Vec<String> = Vec::new();
    problems.extend(regression("the corpus held-out families", &rc, &rl, a));
    if !events_hold.is_empty() {
        problems.extend(regression("the newest events", &ec, &es, a));
    }
    let passed = problems.is_empty();
    let publish = !a.dry_run && (passed || a.force);
    let decision = match (passed, a.force, a.dry_run) {
        (_, _, true) if passed => "dry run: would publish".to_string(),
        (_, _, true) => format!("dry run: would refuse: {}", problems.join("; ")),
        (true, _, _) => "published".to_string(),
        (false, true, _) => format!("published with --force despite: {}", problems.join("; ")),
        (false, false, _) => format!("refused: {}", problems.join("; ")),
    };

    // Report.
    let by_lang = {
        let mut m: std::collections::BTreeMap<String, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, c) in corpus_hold.iter().enumerate() {
            m.entry(c.language.clone()).or_default().push(i);
        }
        m.into_iter().collect::<Vec<_>>()
    };
    let metrics = serde_json::json!({
        "version": version,
        "decision": decision,
        "forced": publish && !passed,
        "method": summary.method,
        "fit": summary,
        "fit_seconds": fit_secs,
        "trained_through_seq": trained_through_seq,
        "log_last_seq": log_last,
        "corpus_train": corpus_train,
        "events_train": events_train.len(),
        "holdout": {
            "corpus": {"candidate": rc, "live": rl, "live_model": live_name},
            "events": {"candidate": ec, "served": es},
        },
        "tolerance": {"log_loss": a.tolerance_log_loss, "roc_auc": a.tolerance_auc},
    });
    let report_dir = a.report.clone().or_else(|| a.data_dir.as_ref().map(|d| d.join("reports").join(&version)));
    if let Some(dir) = &report_dir {
        let training = training_facts(a, &summary, corpus_train, events_train.len(), trained_through_seq, fit_secs);
        let mut sections = vec![Section {
            title: "corpus held-out families",
            labels: &c_labels,
            series: vec![Series { name: "candidate", scores: &c_cand }, Series { name: &live_name, scores: &c_live }],
            languages: by_lang,
        }];
        if !events_hold.is_empty() {
            sections.push(Section {
                title: "newest events",
                labels: &e_labels,
                series: vec![
                    Series { name: "candidate", scores: &e_cand },
                    Series { name: "served (logged risk)", scores: &e_served },
                ],
                languages: Vec::new(),
            });
        }
        let created = rfc3339(now_ms());
        let input =
            ReportInput { version: &version, created: &created, decision: &decision, training, sections, threshold };
        write_report(dir, &input).with_context(|| format!("writing the report to {}", dir.display()))?;
        std::fs::write(dir.join("metrics.json"), serde_json::to_vec_pretty(&metrics)?)
            .with_context(|| format!("writing {}", dir.join("metrics.json").display()))?;
        eprintln!("report: {}", dir.join("summary.md").display());
    }

    if !publish {
        eprintln!("{decision}");
        if a.dry_run {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("the live model stays in place (use --force to publish anyway)");
        return Ok(ExitCode::from(1));
    }
    if let Some(out) = &a.output {
        let mut buf = Vec::new();
        write_model(&candidate, &mut buf)?;
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, &buf).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
        eprintln!("wrote {} ({} bytes, {} weights)", out.display(), buf.len(), candidate.nonzero());
    }
    if let Some(store) = &store {
        let reason = if passed { ActivationReason::Publish } else { ActivationReason::ForcedPublish };
        let seq = rt.block_on(async {
            let now = now_ms();
            crate::registry::store_version(store.as_ref(), &candidate, trained_through_seq, &metrics, now).await?;
            let seq = crate::registry::activate(store.as_ref(), &version, reason, "cli", now).await?;
            let pruned = crate::registry::prune(store.as_ref(), a.keep).await?;
            if !pruned.is_empty() {
                eprintln!("pruned from the registry: {}", pruned.join(", "));
            }
            Ok::<i64, crate::registry::RegistryError>(seq)
        })?;
        eprintln!(
            "{decision}: {version} is live (activation event {seq}); running services switch within their tail interval, or at POST /admin/models/reload"
        );
    } else {
        eprintln!("{decision}");
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn print_row(section: &str, name: &str, r: &Report) {
    eprintln!(
        "{section:<26} {name:<40} n={:<7} ROC-AUC {:.4}  PR-AUC {:.4}  log loss {:.4}  Brier {:.4}  ECE {:.4}",
        r.n, r.roc_auc, r.pr_auc, r.log_loss, r.brier, r.calibration_error
    );
}

fn training_facts(
    a: &TrainArgs,
    s: &FitSummary,
    corpus: usize,
    events: usize,
    through: i64,
    secs: f64,
) -> Vec<(String, String)> {
    let mut v = vec![
        ("method".to_string(), s.method.clone()),
        ("corpus snippets (training families)".into(), corpus.to_string()),
        ("labelled events trained on".into(), events.to_string()),
        ("trained through event".into(), through.to_string()),
        ("FTRL passes, alpha, L1, L2".into(), format!("{}, {}, {}, {}", a.epochs, a.alpha, a.l1, a.l2)),
        ("rule dropout".into(), a.rule_dropout.to_string()),
        (
            "dense matrix rows × columns".into(),
            format!("{} × {} ({} rule features)", s.rows, s.columns, s.rule_columns),
        ),
        ("L-BFGS L2".into(), format!("{}", s.l2)),
        ("fit time".into(), format!("{secs:.1} s")),
    ];
    if let Some(c) = s.ftrl_scale {
        v.push(("coefficient of the FTRL margin".into(), format!("{c:.4}")));
    }
    if let Some(c) = s.prior_scale {
        v.push(("coefficient of the rule priors".into(), format!("{c:.4}")));
    }
    if let Some(p) = s.positive_is_insecure {
        v.push(("linfa positive class".into(), if p { "insecure".into() } else { "safe (signs flipped)".into() }));
    }
    for n in &s.notes {
        v.push(("note".into(), n.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_versions_are_dated_and_valid() {
        let v = default_version(1_795_305_600_123);
        assert_eq!(v, "risk-20261122-000000");
        assert!(valid_version(&v));
        assert!(!valid_version("a/b") && !valid_version("") && !valid_version(&"x".repeat(65)));
    }
}
