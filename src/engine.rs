//! The detector: rules, features and the model put together to assess one snippet.

use crate::features::{Extractor, Features};
use crate::lang::Language;
use crate::lexer::lex;
use crate::model::{Model, ModelFileError, read_model};
use crate::rules::{LineIndex, Mode, RuleError, RulePack, Severity};
use serde::Serialize;
use std::sync::Arc;

/// The baseline model trained from data/ and shipped in the binary.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../models/baseline.grm");

/// Where a rule matched, in the units of the contract (1-based; columns in characters;
/// `end_column` exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule_id: Arc<str>,
    pub cwe: Arc<str>,
    pub severity: Severity,
    pub message: Arc<str>,
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    /// Present (as `"monitor"`) only for monitor-mode rules, whose findings do not count.
    #[serde(skip_serializing_if = "is_enforce")]
    pub mode: Mode,
}

fn is_enforce(m: &Mode) -> bool {
    *m == Mode::Enforce
}

/// The outcome of assessing one snippet.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// Probability that the snippet is insecure, in [0, 1].
    pub risk: f64,
    pub findings: Vec<Finding>,
    pub features: Features,
}

/// Why the detector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("built-in model: {0}")]
    Model(#[from] ModelFileError),
}

/// The language to assess a snippet as: the explicit one, else the path's, else inferred.
#[must_use]
pub fn resolve_language(explicit: Option<Language>, path: Option<&str>, text: &str) -> Option<Language> {
    explicit.or_else(|| path.and_then(Language::from_path)).or_else(|| Language::infer(text))
}

/// Assesses `text` as `lang` with a rule pack and a model.
#[must_use]
pub fn assess(rules: &RulePack, model: &Model, text: &str, lang: Option<Language>) -> Assessment {
    let extractor = Extractor::new(model.hyper().bits);
    let lexed = lex(text, lang);
    let hits = rules.scan(&lexed, lang);
    let mut seen: Vec<u32> = hits.iter().map(|h| h.rule).collect();
    seen.sort_unstable();
    seen.dedup();
    let features = extractor.extract(&lexed, lang, seen.iter().filter_map(|r| rules.rule(*r)));
    let risk = model.score(&features);
    let findings = to_findings(rules, text, &hits);
    Assessment { risk, findings, features }
}

/// Findings of rule hits, with positions in the contract's units.
fn to_findings(rules: &RulePack, text: &str, hits: &[crate::rules::Hit]) -> Vec<Finding> {
    if hits.is_empty() {
        return Vec::new();
    }
    let index = LineIndex::new(text);
    hits.iter()
        .filter_map(|h| {
            let r = rules.rules().get(h.rule as usize)?;
            let s = index.position(h.start as usize);
            let e = index.position(h.end as usize);
            Some(Finding {
                rule_id: Arc::from(r.spec.id.as_str()),
                cwe: Arc::from(r.spec.cwe.as_str()),
                severity: r.spec.severity,
                message: Arc::from(r.spec.message.as_str()),
                line: s.line,
                column: s.column,
                end_line: e.line,
                end_column: e.column,
                mode: r.spec.mode,
            })
        })
        .collect()
}

/// The built-in rule pack and model, together.
#[derive(Debug)]
pub struct Detector {
    pub rules: RulePack,
    pub model: Model,
}

impl Detector {
    /// The rules and model compiled into the binary.
    ///
    /// # Errors
    /// Only if the shipped artefacts are broken, which the tests rule out.
    pub fn builtin() -> Result<Detector, EngineError> {
        Ok(Detector { rules: RulePack::builtin()?, model: read_model(BUILTIN_MODEL)? })
    }

    /// Assesses one snippet.
    #[must_use]
    pub fn assess(&self, text: &str, lang: Option<Language>) -> Assessment {
        assess(&self.rules, &self.model, text, lang)
    }
}

/// Probability that a prompt asks for something harmful, from prompt-rule severities.
#[must_use]
pub fn prompt_severity_probability(sev: Severity) -> f64 {
    match sev {
        Severity::Low => 0.3,
        Severity::Medium => 0.5,
        Severity::High => 0.8,
        Severity::Critical => 0.95,
    }
}

/// Assesses a prompt with the prompt rule pack: findings, and a risk that combines the
/// distinct enforced rules that hit as independent evidence (`1 − Π(1 − p)`).
#[must_use]
pub fn assess_prompt(prompt_rules: &RulePack, text: &str) -> (f64, Vec<Finding>) {
    let lexed = lex(text, None);
    let hits = prompt_rules.scan(&lexed, None);
    let findings = to_findings(prompt_rules, text, &hits);
    let mut seen: Vec<&str> = Vec::new();
    let mut safe = 1.0;
    for f in &findings {
        if f.mode == Mode::Enforce && !seen.contains(&&*f.rule_id) {
            seen.push(&f.rule_id);
            safe *= 1.0 - prompt_severity_probability(f.severity);
        }
    }
    (1.0 - safe, findings)
}
