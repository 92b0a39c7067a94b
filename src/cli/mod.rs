//! The command line: argument parsing and dispatch. Each command is a thin shell over the
//! pure core.

mod corpus_cmd;
mod eval;
mod jsonl;
mod models;
mod prompts_cmd;
mod sarif;
mod score;
mod serve;
mod synth;
mod train;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default block threshold of the policy (API.md, "Numbers and names").
pub const DEFAULT_THRESHOLD: f64 = 0.9;

#[derive(Parser, Debug)]
#[command(
    name = "guardrank",
    version,
    about = "Security risk scoring, reranking and filtering for AI code completions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    Train,
    Holdout,
    All,
}

/// Model and rules to use instead of the built-in ones.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Artefacts {
    /// Use this model file instead of the built-in one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Use the rule files (*.toml) of this directory instead of the built-in pack.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (with no arguments: 127.0.0.1:8080, embedded SQLite in
    /// ./guardrank-data, built-in model and rules).
    Serve {
        #[command(flatten)]
        args: serve::ServeArgs,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Scan files and directories (honouring .gitignore) or a JSON-lines stream on stdin.
    ///
    /// Exit status: 0 clean, 1 when any file's risk reaches the threshold, 2 on usage or I/O
    /// errors. Suppress a finding with `guardrank:ignore[rule-id]` in a comment on its line or
    /// the line above.
    Score {
        /// Files or directories to scan.
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Risk at or above which a file fails the check (default: the block threshold, 0.9).
        #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
        threshold: f64,
        /// Ignore findings recorded in an earlier `--format json` run.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Read JSON lines `{"id", "code", "language"?}` on stdin; write one result line each.
        #[arg(long, conflicts_with_all = ["paths", "baseline"])]
        jsonl: bool,
        /// Treat every file as this language instead of mapping extensions.
        #[arg(long)]
        language: Option<String>,
        #[command(flatten)]
        artefacts: Artefacts,
    },
    /// Evaluate the model on labelled JSON lines `{"code", "language"?, "label": 0|1}`.
    Eval {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = EvalFormat::Human)]
        format: EvalFormat,
        #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
        threshold: f64,
        #[command(flatten)]
        artefacts: Artefacts,
    },
    /// The offline retraining job: fit on the corpus and the logged events, check against
    /// held-out data, publish to the registry (or a file).
    ///
    /// Exit status: 0 published (or a dry run), 1 refused by the holdout check, 2 on errors.
    Train(train::TrainArgs),
    /// Write a generated, realistic event log (corpus candidates, simulated users) into a
    /// store, for scale tests of `train` and memory measurements of `serve`.
    SynthLog(synth::SynthArgs),
    /// The model registry.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Work with the labelled corpus.
    Corpus {
        #[command(subcommand)]
        command: CorpusCommand,
    },
    /// The learned prompt model: train it, evaluate it, score a prompt.
    Prompts {
        #[command(subcommand)]
        command: PromptsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum PromptsCommand {
    /// Fit the learned prompt model on the training families of the prompt set and the corpus
    /// (the built-in one: `--output models/prompt.grm`).
    Train {
        #[command(flatten)]
        data: prompts_cmd::PromptData,
        #[arg(long)]
        corpus: Option<PathBuf>,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value = prompts_cmd::PROMPT_MODEL_VERSION)]
        version: String,
    },
    /// Figures of the prompt scorer (rules plus learned model) on a split of the prompt set.
    Eval {
        #[command(flatten)]
        data: prompts_cmd::PromptData,
        /// A model file instead of the built-in one.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Split::Holdout)]
        split: Split,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Assess the prompt read from stdin; print JSON `{"risk", "rule_risk", "learned", "findings"}`.
    Score {
        /// A model file instead of the built-in one.
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print it (once).
    Create {
        /// plugin or admin.
        #[arg(long)]
        scope: String,
        #[command(flatten)]
        args: serve::ServeArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// The registry's versions, newest first, with their holdout figures; `*` marks the live one.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: serve::ServeArgs,
    },
    /// Make an earlier version live again (a logged activation every replica follows).
    Rollback {
        version: String,
        #[command(flatten)]
        args: serve::ServeArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum CorpusCommand {
    /// Write corpus snippets as JSON lines `{"code", "language", "label", "family"}`.
    Export {
        #[arg(long)]
        corpus: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Split::All)]
        split: Split,
    },
    /// Counts per language, label and kind, and per split.
    Stats {
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
}

/// Runs the command line and returns the process exit status.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { args } => serve::serve(&args),
        Command::Keys { command: KeysCommand::Create { scope, args } } => serve::create_key(&scope, &args),
        Command::Score { paths, format, threshold, baseline, jsonl, language, artefacts } => {
            if jsonl {
                jsonl::run(threshold, language.as_deref(), &artefacts)
            } else {
                score::run(&score::Options { paths, format, threshold, baseline, language, artefacts })
            }
        }
        Command::Eval { data, format, threshold, artefacts } => eval::run(&data, format, threshold, &artefacts),
        Command::Train(args) => train::run(&args),
        Command::SynthLog(args) => synth::run(&args),
        Command::Models { command } => match command {
            ModelsCommand::List { json, args } => models::list(&args, json),
            ModelsCommand::Rollback { version, args } => models::rollback(&version, &args),
        },
        Command::Corpus { command } => match command {
            CorpusCommand::Export { corpus, split } => corpus_cmd::export(corpus.as_deref(), split),
            CorpusCommand::Stats { corpus } => corpus_cmd::stats(corpus.as_deref()),
        },
        Command::Prompts { command } => match command {
            PromptsCommand::Train { data, corpus, output, version } => {
                prompts_cmd::train_cmd(&data, corpus.as_deref(), &output, &version)
            }
            PromptsCommand::Eval { data, model, split, json } => {
                prompts_cmd::eval_cmd(&data, model.as_deref(), split, json)
            }
            PromptsCommand::Score { model } => prompts_cmd::score_cmd(model.as_deref()),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guardrank: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The rule pack: the built-in one, or the rule files of `dir`.
fn rule_pack(dir: Option<&std::path::Path>) -> anyhow::Result<crate::rules::RulePack> {
    use anyhow::Context;
    match dir {
        None => crate::rules::RulePack::builtin().context("compiling the built-in rules"),
        Some(d) => {
            let specs =
                crate::rules::load_rule_dir(d).with_context(|| format!("loading rules from {}", d.display()))?;
            let rules = specs
                .into_iter()
                .map(crate::rules::CompiledRule::compile_checked)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("checking the rules of {}", d.display()))?;
            Ok(crate::rules::RulePack::new(rules)?)
        }
    }
}

/// Loads the detector: the built-in rules and model, or the files named in `a`.
fn detector(a: &Artefacts) -> anyhow::Result<crate::engine::Detector> {
    use anyhow::Context;
    let mut d = crate::engine::Detector::builtin().context("loading the built-in rules and model")?;
    if a.rules.is_some() {
        d.rules = rule_pack(a.rules.as_deref())?;
    }
    if let Some(p) = &a.model {
        let f = std::fs::File::open(p).with_context(|| format!("opening model file {}", p.display()))?;
        d.model = crate::model::read_model(std::io::BufReader::new(f))
            .with_context(|| format!("loading model file {}", p.display()))?;
    }
    Ok(d)
}

fn check_threshold(t: f64) -> anyhow::Result<()> {
    if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
        anyhow::bail!("--threshold must be a probability in [0, 1], got {t}");
    }
    Ok(())
}

fn parse_language(l: Option<&str>) -> anyhow::Result<Option<crate::lang::Language>> {
    l.map(|s| s.parse::<crate::lang::Language>()).transpose().map_err(anyhow::Error::from)
}
