//! `guardrank eval --data FILE.jsonl`: figures of the model on labelled snippets.

use super::{EvalFormat, check_threshold, detector};
use crate::engine::resolve_language;
use crate::lang::Language;
use crate::model::metrics::{Report, evaluate};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;

#[derive(Deserialize)]
struct Line {
    code: String,
    #[serde(default)]
    language: Option<String>,
    label: u8,
}

#[derive(Serialize)]
struct EvalOutput {
    overall: Report,
    per_language: BTreeMap<String, Report>,
}

pub fn run(
    data: &std::path::Path,
    format: EvalFormat,
    threshold: f64,
    artefacts: &super::Artefacts,
) -> anyhow::Result<ExitCode> {
    check_threshold(threshold)?;
    let det = detector(artefacts)?;
    let f = std::fs::File::open(data).with_context(|| format!("opening {}", data.display()))?;
    let mut by_lang: BTreeMap<String, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    let (mut all_s, mut all_l) = (Vec::new(), Vec::new());
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", data.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).with_context(|| {
            format!("{} line {}: expected {{\"code\", \"language\"?, \"label\": 0|1}}", data.display(), i + 1)
        })?;
        if l.label > 1 {
            anyhow::bail!("{} line {}: label must be 0 or 1", data.display(), i + 1);
        }
        let explicit = l
            .language
            .as_deref()
            .map(str::parse::<Language>)
            .transpose()
            .with_context(|| format!("{} line {}", data.display(), i + 1))?;
        let lang = resolve_language(explicit, None, &l.code);
        let risk = det.assess(&l.code, lang).risk;
        let key = lang.map_or("unknown", Language::name).to_string();
        let e = by_lang.entry(key).or_default();
        e.0.push(risk);
        e.1.push(l.label == 1);
        all_s.push(risk);
        all_l.push(l.label == 1);
    }
    if all_s.is_empty() {
        anyhow::bail!("{} holds no labelled lines", data.display());
    }
    let out = EvalOutput {
        overall: evaluate(&all_s, &all_l, threshold),
        per_language: by_lang.iter().map(|(k, (s, l))| (k.clone(), evaluate(s, l, threshold))).collect(),
    };
    match format {
        EvalFormat::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        EvalFormat::Human => {
            println!("{}", human_table(&out, threshold));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_table(o: &EvalOutput, threshold: f64) -> String {
    let mut s = format!(
        "{:<12} {:>6} {:>5} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6} {:>6} {:>9}\n",
        "language", "n", "pos", "ROC-AUC", "PR-AUC", "log-loss", "Brier", "prec", "recall", "F1", "P@R≥.85"
    );
    let row = |name: &str, r: &Report| {
        format!(
            "{:<12} {:>6} {:>5} {:>8.4} {:>7.4} {:>9.4} {:>7.4} {:>6.3} {:>6.3} {:>6.3} {:>9.3}\n",
            name,
            r.n,
            r.positives,
            r.roc_auc,
            r.pr_auc,
            r.log_loss,
            r.brier,
            r.precision,
            r.recall,
            r.f1,
            r.precision_at_recall_85
        )
    };
    for (k, r) in &o.per_language {
        s.push_str(&row(k, r));
    }
    s.push_str(&row("overall", &o.overall));
    s.push_str(&format!(
        "precision, recall and F1 at the threshold {threshold:.2}; calibration error {:.4}",
        o.overall.calibration_error
    ));
    s
}
