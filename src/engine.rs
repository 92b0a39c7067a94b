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
    let index = LineIndex::new(text);
    let findings = hits
        .iter()
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
        .collect();
    Assessment { risk, findings, features }
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
