//! `guardrank prompts train|eval|score`: the learned prompt model.
//!
//! The built-in model is built by `guardrank prompts train --output models/prompt.grm` from
//! the training families of data/prompts/ and data/corpus/; `tests/prompts.rs` checks that the
//! shipped file is what this command writes, so the data and the model cannot drift apart.

use super::Split;
use super::corpus_cmd;
use crate::model::{read_model, write_model};
use crate::prompt::{PromptExample, PromptScorer, evaluate, load_prompt_dir, train, training_examples};
use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The version name of the built-in prompt model.
pub const PROMPT_MODEL_VERSION: &str = "prompt-20261122-1";

/// Options shared by the subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct PromptData {
    /// The prompt set (default: data/prompts).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

fn load_prompts(given: Option<&Path>) -> anyhow::Result<Vec<PromptExample>> {
    let dir = given.map_or_else(|| PathBuf::from("data/prompts"), Path::to_path_buf);
    if !dir.is_dir() {
        anyhow::bail!(
            "prompt directory {} not found (run from the repository root, or pass --prompts DIR)",
            dir.display()
        );
    }
    load_prompt_dir(&dir).with_context(|| format!("loading the prompt set in {}", dir.display()))
}

fn in_split(holdout: bool, split: Split) -> bool {
    match split {
        Split::All => true,
        Split::Holdout => holdout,
        Split::Train => !holdout,
    }
}

/// `guardrank prompts train`: fits the learned prompt model on the training families.
pub fn train_cmd(data: &PromptData, corpus: Option<&Path>, output: &Path, version: &str) -> anyhow::Result<ExitCode> {
    let prompts = load_prompts(data.prompts.as_deref())?;
    let code = corpus_cmd::load(corpus)?;
    let p: Vec<&PromptExample> = prompts.iter().filter(|p| !p.is_holdout()).collect();
    let c: Vec<&str> = code.iter().filter(|s| !s.is_holdout()).map(|s| s.code.as_str()).collect();
    let examples = training_examples(&p, &c);
    let model = train(&examples, version);
    let mut buf = Vec::new();
    write_model(&model, &mut buf).context("encoding the model")?;
    std::fs::write(output, &buf).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "trained {version} on {} prompts and {} code snippets ({} examples); {} non-zero weights; wrote {}",
        p.len(),
        c.len(),
        examples.len(),
        model.nonzero(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `guardrank prompts eval`: figures of the prompt scorer on a split of the prompt set.
pub fn eval_cmd(data: &PromptData, model: Option<&Path>, split: Split, json: bool) -> anyhow::Result<ExitCode> {
    let prompts = load_prompts(data.prompts.as_deref())?;
    let scorer = scorer(model)?;
    let chosen: Vec<&PromptExample> = prompts.iter().filter(|p| in_split(p.is_holdout(), split)).collect();
    if chosen.is_empty() {
        anyhow::bail!("no prompts in that split");
    }
    let e = evaluate(&scorer, &chosen);
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        println!("prompts {}  roc_auc {:.3}  recall@0.5 {:.3}", e.prompts, e.roc_auc, e.recall);
        println!("flagged at 0.5: security work {:.3}, benign {:.3}", e.security_work_flagged, e.benign_flagged);
        println!(
            "rules alone: recall@0.5 {:.3}, security work flagged {:.3}",
            e.rules_recall, e.rules_security_work_flagged
        );
        println!("{:<6} {:>7} {:>8} {:>14}", "lang", "prompts", "recall", "label-0 flagged");
        for (l, (n, r, f)) in &e.by_language {
            println!("{l:<6} {n:>7} {r:>8.3} {f:>14.3}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `guardrank prompts score`: assesses the prompt on stdin and prints JSON.
pub fn score_cmd(model: Option<&Path>) -> anyhow::Result<ExitCode> {
    let scorer = scorer(model)?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the prompt from stdin")?;
    let a = scorer.assess(&text);
    let out = serde_json::json!({
        "risk": (a.risk * 1e4).round() / 1e4,
        "rule_risk": (a.rule_risk * 1e4).round() / 1e4,
        "learned": {"harmful": (a.learned.probability[0] * 1e4).round() / 1e4,
                    "injection": (a.learned.probability[1] * 1e4).round() / 1e4},
        "findings": a.findings,
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    Ok(ExitCode::SUCCESS)
}

fn scorer(model: Option<&Path>) -> anyhow::Result<PromptScorer> {
    let mut s = PromptScorer::builtin().context("loading the built-in prompt rules and model")?;
    if let Some(p) = model {
        let f = std::fs::File::open(p).with_context(|| format!("opening model file {}", p.display()))?;
        let model =
            read_model(std::io::BufReader::new(f)).with_context(|| format!("loading model file {}", p.display()))?;
        s.model = Arc::new(crate::prompt::PromptWeights::of(&model));
    }
    Ok(s)
}
