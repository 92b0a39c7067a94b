//! The rule schema shared by data/rules/*.toml and `POST /admin/rules`.

use crate::lang::Language;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a rule's finding is; sets the rule's prior weight in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which text a rule's patterns see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Comments replaced by spaces (the default).
    #[default]
    Masked,
    /// The text as given.
    Raw,
}

/// Whether a rule's hits raise the risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Findings are reported but do not raise the risk.
    Monitor,
}

/// A rule's own test cases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    #[serde(default)]
    pub insecure: Vec<String>,
    #[serde(default)]
    pub secure: Vec<String>,
}

/// One rule, as written in data/rules/*.toml or posted as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub languages: Vec<String>,
    pub cwe: String,
    pub severity: Severity,
    pub message: String,
    pub patterns: Vec<String>,
    #[serde(default)]
    pub unless: Vec<String>,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub mode: Mode,
    pub examples: Examples,
}

/// A rule file: `[[rule]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rule: Vec<RuleSpec>,
}

/// Why a rule or a rule pack was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule {rule:?}: {problem}")]
    Field { rule: String, problem: String },
    #[error("rule {rule:?}: {what} {pattern:?} does not compile: {error}")]
    Pattern { rule: String, what: String, pattern: String, error: String },
    #[error("rule {rule:?}: {problem}")]
    Example { rule: String, problem: String },
    #[error("rule file {file}: {error}")]
    File { file: String, error: String },
    #[error("rule pack: {0}")]
    Pack(String),
}

impl RuleSpec {
    /// Checks the fields that the type system does not: id shape, languages, CWE, lengths.
    ///
    /// # Errors
    /// The first field out of schema.
    pub fn check_fields(&self) -> Result<(), RuleError> {
        let bad = |problem: String| Err(RuleError::Field { rule: self.id.clone(), problem });
        if self.id.is_empty()
            || self.id.len() > 128
            || !self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return bad("id must be 1 to 128 characters of a-z, 0-9, '.', '_', '-'".into());
        }
        if self.languages.is_empty() {
            return bad("languages must name at least one language, or \"*\"".into());
        }
        for l in &self.languages {
            if l != "*" && l.parse::<Language>().is_err() {
                return bad(format!("unknown language {l:?}"));
            }
        }
        let cwe_ok = self
            .cwe
            .strip_prefix("CWE-")
            .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()));
        if !cwe_ok {
            return bad(format!("cwe must look like \"CWE-89\", got {:?}", self.cwe));
        }
        if self.message.trim().is_empty() || self.message.len() > 300 {
            return bad("message must be 1 to 300 characters".into());
        }
        if self.patterns.is_empty() || self.patterns.len() > 32 || self.unless.len() > 32 {
            return bad("patterns must hold 1 to 32 patterns (unless: at most 32)".into());
        }
        if self.patterns.iter().chain(&self.unless).any(|p| p.is_empty() || p.len() > 4096) {
            return bad("each pattern must be 1 to 4096 characters".into());
        }
        Ok(())
    }

    /// Whether the rule runs on text of `lang` (`None`: unknown language, `*` rules only).
    #[must_use]
    pub fn applies_to(&self, lang: Option<Language>) -> bool {
        self.languages
            .iter()
            .any(|l| l == "*" || lang.is_some_and(|lang| l.parse::<Language>().is_ok_and(|x| x == lang)))
    }

    /// The language the rule's examples are written in: its first listed one.
    #[must_use]
    pub fn example_language(&self) -> Option<Language> {
        self.languages.first().and_then(|l| l.parse().ok())
    }
}
