//! `guardrank synth-log`: writes a generated but realistic event log into a store, for scale
//! tests of the retraining job and memory measurements of the service.
//!
//! Candidates are the corpus's own snippets (features, rule hits and risk computed exactly as
//! the service does), four per impression by default. Users come in two kinds: security-sensitive ones
//! (they reject most insecure candidates and sometimes report them) and careless ones (they
//! accept most of what they see). Every candidate of an impression gets one outcome, so the
//! feedback events are unique. Events are spread over `--days` days of event time.

use super::serve::{ServeArgs, load_settings};
use crate::engine::{BUILTIN_MODEL, resolve_language};
use crate::events::{CandidateRecord, FeedbackIn, Impression, Outcome};
use crate::features::Extractor;
use crate::lexer::lex;
use crate::model::read_model;
use crate::store::WriteBatch;
use crate::train::SplitMix64;
use anyhow::Context;
use std::process::ExitCode;

/// `guardrank synth-log` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Feedback events to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Distinct users (impressions go to them in turn, so each gets feedback once there are
    /// at least as many impressions as users).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Candidates per impression, each with one feedback event (1 to 4).
    #[arg(long, default_value_t = 4)]
    pub per_impression: u64,
    /// Share of users who are security-sensitive.
    #[arg(long, default_value_t = 0.3)]
    pub sensitive: f64,
    /// Days of event time the log spans (ending now).
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Corpus directory the candidates come from (default data/corpus).
    #[arg(long)]
    pub corpus: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub store: ServeArgs,
}

struct Candidate {
    record: CandidateRecord,
    insecure: bool,
    language: String,
}

fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a user does with a candidate.
fn outcome(rng: &mut SplitMix64, sensitive: bool, c: &Candidate) -> Outcome {
    let u = uniform(rng);
    match (sensitive, c.insecure) {
        (true, true) if u < 0.2 => Outcome::ReportedInsecure,
        (true, true) if u < 0.85 => Outcome::Rejected,
        (true, true) => Outcome::Accepted,
        (true, false) if u < 0.02 => Outcome::ReportedSafe,
        (true, false) if u < 0.75 => Outcome::Accepted,
        (false, true) if u < 0.03 => Outcome::ReportedInsecure,
        (false, true) if u < 0.35 => Outcome::Rejected,
        (false, _) if u < 0.7 => Outcome::Accepted,
        _ => Outcome::Rejected,
    }
}

pub fn run(a: &SynthArgs) -> anyhow::Result<ExitCode> {
    if a.users == 0 || a.events == 0 {
        anyhow::bail!("--users and --events must be positive");
    }
    if !(1..=4).contains(&a.per_impression) {
        anyhow::bail!("--per-impression must be 1 to 4");
    }
    if !(0.0..=1.0).contains(&a.sensitive) {
        anyhow::bail!("--sensitive must be in [0, 1]");
    }
    let settings = load_settings(&a.store)?;
    let rules = super::rule_pack(None)?;
    let model = read_model(BUILTIN_MODEL).context("loading the built-in model")?;
    let ex = Extractor::new(model.hyper().bits);
    let snippets = super::corpus_cmd::load(a.corpus.as_deref())?;
    let pool: Vec<Candidate> = snippets
        .iter()
        .map(|s| {
            let lang = resolve_language(s.lang(), None, &s.code);
            let lexed = lex(&s.code, lang);
            let mut hit: Vec<u32> = rules.scan(&lexed, lang).iter().map(|h| h.rule).collect();
            hit.sort_unstable();
            hit.dedup();
            let specs: Vec<_> = hit.iter().filter_map(|r| rules.rule(*r)).collect();
            let features = ex.extract(&lexed, lang, specs.iter().copied());
            let risk = model.score(&features) as f32;
            let flagged = specs.iter().any(|r| r.mode == crate::rules::Mode::Enforce);
            Candidate {
                record: CandidateRecord {
                    id: String::new(),
                    risk,
                    flagged,
                    features,
                    rules: specs.iter().map(|r| r.id.clone()).collect(),
                    text: None,
                },
                insecure: s.insecure(),
                language: s.language.clone(),
            }
        })
        .collect();
    if pool.is_empty() {
        anyhow::bail!("the corpus is empty");
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let store =
        rt.block_on(crate::store::open(&settings.store_url(), settings.durability)).context("opening the store")?;

    let per = a.per_impression;
    let impressions = a.events.div_ceil(per);
    let end_ms = crate::server::now_ms();
    let span_ms = i64::try_from(a.days.max(1) * 86_400_000).unwrap_or(i64::MAX / 4);
    let start_ms = end_ms - span_ms;
    let mut rng = SplitMix64(a.seed);
    let bar = crate::report::progress(a.events, "writing events");
    let started = std::time::Instant::now();
    let per_batch = 1000u64;
    let mut written = 0u64;
    let mut k = 0u64;
    while k < impressions {
        let n = per_batch.min(impressions - k);
        let at_ms = start_ms + i64::try_from((k as u128 * span_ms as u128 / impressions as u128) as u64).unwrap_or(0);
        let mut batch = WriteBatch { at_ms, impressions: Vec::with_capacity(n as usize), ..WriteBatch::default() };
        let mut group = Vec::with_capacity((n * per) as usize);
        for j in k..k + n {
            let user = j % a.users;
            // Users are sensitive or not by a hash of their number, stable across the run.
            let sensitive = (SplitMix64(user ^ a.seed).next_u64() % 1000) as f64 / 1000.0 < a.sensitive;
            let request_id = format!("synth-{}-{j}", a.seed);
            let mut cands = Vec::with_capacity(per as usize);
            let first = (rng.next_u64() % pool.len() as u64) as usize;
            let language = pool[first].language.clone();
            for c in 0..per {
                let i = if c == 0 { first } else { (rng.next_u64() % pool.len() as u64) as usize };
                let mut rec = pool[i].record.clone();
                rec.id = format!("c{c}");
                if written + c < a.events {
                    group.push(FeedbackIn {
                        request_id: request_id.clone(),
                        candidate_id: rec.id.clone(),
                        outcome: outcome(&mut rng, sensitive, &pool[i]),
                    });
                }
                cands.push(rec);
            }
            written = (written + per).min(a.events);
            batch.impressions.push(Impression {
                request_id,
                user_id: format!("user-{user:07}@synth.example"),
                key_id: "synth".into(),
                model_version: model.version.clone(),
                language: Some(language),
                prompt_risk: 0.0,
                candidates: cands,
            });
        }
        batch.feedback.push(group);
        let outcomes = rt.block_on(store.commit(&batch)).context("committing a batch")?;
        if let Some(bad) = outcomes.iter().find(|o| !matches!(o, crate::store::GroupOutcome::Recorded { .. })) {
            anyhow::bail!("a generated batch was refused: {bad:?}");
        }
        k += n;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {written} feedback events on {impressions} impressions of {} users into {} in {secs:.1} s",
        a.users,
        settings.store_url()
    );
    Ok(ExitCode::SUCCESS)
}
