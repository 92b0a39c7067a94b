//! Settings: `guardrank.toml` (unknown keys are errors), then `GUARDRANK_<SETTING>` environment
//! overrides for known settings only, validated once at start. The loader takes the
//! environment as a parameter, so tests pass their own.

use super::ratelimit::Tiers;
use crate::abuse::AbuseConfig;
use crate::abuse::guard::GuardConfig;
use crate::policy::{LabelWeights, PolicyConfig};
use crate::store::Durability;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every setting, flat, with the names of API.md ("Numbers and names").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Data directory of the embedded store (and initial-keys.txt).
    pub data_dir: PathBuf,
    /// Store URL (`sqlite://PATH`); default: `<data_dir>/guardrank.db`.
    pub store: Option<String>,
    pub durability: Durability,
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `guardrank=debug`.
    pub log_level: String,
    /// Keep candidates' raw text in impressions (off: only hashed features are stored).
    pub retain_text: bool,
    /// Impressions that got no feedback are compacted after this many days.
    pub impression_ttl_days: f64,
    /// Feedback events are kept this many days (they are training data).
    pub feedback_retention_days: f64,
    /// Seconds between compaction runs.
    pub compaction_interval_s: f64,
    /// Impressions are buffered at most this long before they are written.
    pub impression_flush_ms: u64,
    /// A snapshot of weights and policies every this many applied events (0: only at shutdown).
    pub snapshot_every: u64,
    pub snapshots_kept: u32,
    pub request_timeout_ms: u64,
    pub rate_limit_key_per_s: f64,
    pub rate_limit_key_burst: f64,
    pub rate_limit_user_per_s: f64,
    pub rate_limit_user_burst: f64,
    pub default_temperature: f64,
    pub min_temperature: f64,
    pub default_risk_penalty: f64,
    pub max_risk_penalty: f64,
    pub default_block_threshold: f64,
    pub min_block_threshold: f64,
    pub policy_half_life_days: f64,
    pub policy_prior_strength: f64,
    pub risky_at: f64,
    /// Training weight of a reviewer's verdict (the strongest label after the corpus).
    pub label_weight_verdict: f32,
    pub label_weight_reported: f32,
    pub label_weight_accepted: f32,
    pub label_weight_rejected_flagged: f32,
    /// Each replica enforces 1/N of every rate limit (N replicas behind a load balancer).
    pub rate_limit_replicas: u32,
    /// Trust below this puts a user or key in the reduced rate-limit tier.
    pub trust_tier_reduced_below: f64,
    /// Trust below this puts a user or key in the minimal tier.
    pub trust_tier_minimal_below: f64,
    /// Fraction of the full rate and burst in the reduced tier.
    pub rate_limit_reduced_factor: f64,
    /// Fraction of the full rate and burst in the minimal tier.
    pub rate_limit_minimal_factor: f64,
    /// Usage counts of the abuse monitor halve every this many hours (event time).
    pub abuse_half_life_hours: f64,
    /// Prompt risk at or above which a request counts as risky.
    pub abuse_risky_prompt_at: f64,
    /// Pseudo-requests at the population median each user's shares start from.
    pub abuse_prior_strength: f64,
    /// Active users needed before the population statistics replace the reference.
    pub abuse_min_population: u32,
    /// Anomaly score (sum of weighted robust z-scores) up to which trust stays 1.
    pub abuse_tolerance: f64,
    /// Trust reaches 0 at `abuse_tolerance + abuse_span`.
    pub abuse_span: f64,
    /// Seconds of event time between recomputations of the population statistics.
    pub abuse_population_every_s: f64,
    /// Labels from users with trust below this count nothing.
    pub label_min_trust: f64,
    /// Label weight one user may contribute per window.
    pub label_budget: f32,
    pub label_window_hours: f64,
    /// Floor of the learned weight of high and critical rules (log-odds over their prior).
    pub label_rule_floor: f32,
    /// User labels never bring a candidate flagged by a high or critical rule below this risk.
    pub label_floor_risk: f64,
    /// Build every rule matcher at start (a second or two of CPU) so no request pays for it;
    /// off, each language's matchers are built on its first request.
    pub warm_rules: bool,
    /// Unblocked candidates with a risk in [review_band_low, review_band_high) become review
    /// items (the uncertain band); blocked and user-reported ones always do.
    pub review_band_low: f64,
    pub review_band_high: f64,
    /// Pending review items expire after this many days (their text and features are dropped;
    /// judged and expired items are deleted after twice this).
    pub review_retention_days: f64,
    /// At most this many pending uncertain-band items; beyond it the oldest are dropped
    /// (blocked and reported items are always kept).
    pub review_max_uncertain: u64,
    /// A model file to serve instead of the built-in baseline.
    pub model_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        let p = PolicyConfig::default();
        let w = LabelWeights::default();
        let a = AbuseConfig::default();
        let g = GuardConfig::default();
        Settings {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("guardrank-data"),
            store: None,
            durability: Durability::Process,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            retain_text: false,
            impression_ttl_days: 7.0,
            feedback_retention_days: 365.0,
            compaction_interval_s: 3600.0,
            impression_flush_ms: 50,
            snapshot_every: 50_000,
            snapshots_kept: 3,
            request_timeout_ms: 10_000,
            rate_limit_key_per_s: 2000.0,
            rate_limit_key_burst: 4000.0,
            rate_limit_user_per_s: 50.0,
            rate_limit_user_burst: 100.0,
            default_temperature: p.default_temperature,
            min_temperature: p.min_temperature,
            default_risk_penalty: p.default_risk_penalty,
            max_risk_penalty: p.max_risk_penalty,
            default_block_threshold: p.default_block_threshold,
            min_block_threshold: p.min_block_threshold,
            policy_half_life_days: p.half_life_days,
            policy_prior_strength: p.prior_strength,
            risky_at: p.risky_at,
            label_weight_verdict: w.verdict,
            label_weight_reported: w.reported,
            label_weight_accepted: w.accepted,
            label_weight_rejected_flagged: w.rejected_flagged,
            rate_limit_replicas: 1,
            trust_tier_reduced_below: 0.8,
            trust_tier_minimal_below: 0.4,
            rate_limit_reduced_factor: 0.25,
            rate_limit_minimal_factor: 0.05,
            abuse_half_life_hours: a.half_life_hours,
            abuse_risky_prompt_at: a.risky_prompt_at,
            abuse_prior_strength: a.prior_strength,
            abuse_min_population: a.min_population,
            abuse_tolerance: a.tolerance,
            abuse_span: a.span,
            abuse_population_every_s: a.population_every_s,
            label_min_trust: g.min_trust,
            label_budget: g.budget,
            label_window_hours: g.window_hours,
            label_rule_floor: g.rule_floor,
            label_floor_risk: g.floor_risk,
            warm_rules: true,
            review_band_low: 0.35,
            review_band_high: 0.65,
            review_retention_days: 30.0,
            review_max_uncertain: 10_000,
            model_file: None,
        }
    }
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("environment variable {var}: {error}")]
    Env { var: String, error: String },
    #[error("setting {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads settings: defaults, then the file (if any), then `GUARDRANK_*` variables of `env`
    /// that name a setting, then validation.
    ///
    /// # Errors
    /// An unreadable or invalid file, an unparsable variable, or a value out of bounds.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Settings, SettingsError> {
        let mut table = toml::Table::new();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|e| SettingsError::Read(f.to_path_buf(), e))?;
            table = toml::from_str(&text).map_err(|e| SettingsError::Parse(f.to_path_buf(), e.to_string()))?;
            // Validate the file alone first, so its errors name the file.
            Settings::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| SettingsError::Parse(f.to_path_buf(), e.to_string()))?;
        }
        let known = known_settings();
        for (var, value) in env {
            let Some(name) = var.strip_prefix("GUARDRANK_") else { continue };
            let name = name.to_ascii_lowercase();
            let Some(kind) = known.get(name.as_str()) else { continue };
            let v = parse_env(kind, value).map_err(|error| SettingsError::Env { var: var.clone(), error })?;
            table.insert(name, v);
        }
        let s = Settings::deserialize(toml::Value::Table(table))
            .map_err(|e| SettingsError::Env { var: "GUARDRANK_*".into(), error: e.to_string() })?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: String| Err(SettingsError::Invalid(m));
        let prob = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !(self.min_temperature > 0.0
            && self.min_temperature <= self.default_temperature
            && self.default_temperature <= 2.0)
        {
            return bad("temperature: need 0 < min_temperature <= default_temperature <= 2".into());
        }
        if !(self.default_risk_penalty >= 0.0
            && self.default_risk_penalty <= self.max_risk_penalty
            && self.max_risk_penalty.is_finite())
        {
            return bad("risk penalty: need 0 <= default_risk_penalty <= max_risk_penalty".into());
        }
        if !(prob(self.min_block_threshold)
            && prob(self.default_block_threshold)
            && self.min_block_threshold <= self.default_block_threshold)
        {
            return bad("block threshold: need 0 <= min_block_threshold <= default_block_threshold <= 1".into());
        }
        if !prob(self.risky_at) {
            return bad(format!("risky_at must be in [0, 1], got {}", self.risky_at));
        }
        for (name, v) in [
            ("impression_ttl_days", self.impression_ttl_days),
            ("feedback_retention_days", self.feedback_retention_days),
            ("policy_half_life_days", self.policy_half_life_days),
            ("policy_prior_strength", self.policy_prior_strength),
            ("compaction_interval_s", self.compaction_interval_s),
            ("review_retention_days", self.review_retention_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("rate_limit_key_per_s", self.rate_limit_key_per_s),
            ("rate_limit_key_burst", self.rate_limit_key_burst),
            ("rate_limit_user_per_s", self.rate_limit_user_per_s),
            ("rate_limit_user_burst", self.rate_limit_user_burst),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return bad(format!("{name} must be at least 1, got {v}"));
            }
        }
        if !(prob(self.review_band_low) && prob(self.review_band_high) && self.review_band_low <= self.review_band_high)
        {
            return bad("review band: need 0 <= review_band_low <= review_band_high <= 1".into());
        }
        for (name, v) in [
            ("label_weight_verdict", self.label_weight_verdict),
            ("label_weight_reported", self.label_weight_reported),
            ("label_weight_accepted", self.label_weight_accepted),
            ("label_weight_rejected_flagged", self.label_weight_rejected_flagged),
        ] {
            if !(v.is_finite() && (0.0..=10.0).contains(&v)) {
                return bad(format!("{name} must be in [0, 10], got {v}"));
            }
        }
        self.validate_abuse()?;
        if self.impression_flush_ms == 0 || self.impression_flush_ms > 10_000 {
            return bad("impression_flush_ms must be in 1..=10000".into());
        }
        if self.request_timeout_ms < 100 {
            return bad("request_timeout_ms must be at least 100".into());
        }
        if self.snapshots_kept == 0 {
            return bad("snapshots_kept must be at least 1".into());
        }
        Ok(())
    }

    fn validate_abuse(&self) -> Result<(), SettingsError> {
        let bad = |m: String| Err(SettingsError::Invalid(m));
        let prob = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !(prob(self.trust_tier_minimal_below)
            && prob(self.trust_tier_reduced_below)
            && self.trust_tier_minimal_below <= self.trust_tier_reduced_below)
        {
            return bad("trust tiers: need 0 <= trust_tier_minimal_below <= trust_tier_reduced_below <= 1".into());
        }
        if !(self.rate_limit_minimal_factor > 0.0
            && self.rate_limit_minimal_factor <= self.rate_limit_reduced_factor
            && self.rate_limit_reduced_factor <= 1.0)
        {
            return bad("rate limit tiers: need 0 < rate_limit_minimal_factor <= rate_limit_reduced_factor <= 1".into());
        }
        if self.rate_limit_replicas == 0 {
            return bad("rate_limit_replicas must be at least 1".into());
        }
        for (name, v) in [
            ("abuse_half_life_hours", self.abuse_half_life_hours),
            ("abuse_span", self.abuse_span),
            ("abuse_population_every_s", self.abuse_population_every_s),
            ("label_window_hours", self.label_window_hours),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in
            [("abuse_prior_strength", self.abuse_prior_strength), ("abuse_tolerance", self.abuse_tolerance)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a number >= 0, got {v}"));
            }
        }
        for (name, v) in [
            ("abuse_risky_prompt_at", self.abuse_risky_prompt_at),
            ("label_min_trust", self.label_min_trust),
            ("label_floor_risk", self.label_floor_risk),
        ] {
            if !prob(v) {
                return bad(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if !(self.label_budget.is_finite() && self.label_budget >= 0.0) {
            return bad(format!("label_budget must be >= 0, got {}", self.label_budget));
        }
        if !(self.label_rule_floor.is_finite() && (-10.0..=10.0).contains(&self.label_rule_floor)) {
            return bad(format!("label_rule_floor must be in [-10, 10], got {}", self.label_rule_floor));
        }
        Ok(())
    }

    /// The abuse monitor's configuration.
    #[must_use]
    pub fn abuse(&self) -> AbuseConfig {
        AbuseConfig {
            half_life_hours: self.abuse_half_life_hours,
            risky_prompt_at: self.abuse_risky_prompt_at,
            blocked_at: self.default_block_threshold,
            prior_strength: self.abuse_prior_strength,
            min_active_requests: AbuseConfig::default().min_active_requests,
            min_population: self.abuse_min_population,
            tolerance: self.abuse_tolerance,
            span: self.abuse_span,
            population_every_s: self.abuse_population_every_s,
        }
    }

    /// The poisoning defence's configuration.
    #[must_use]
    pub fn guard(&self) -> GuardConfig {
        GuardConfig {
            min_trust: self.label_min_trust,
            budget: self.label_budget,
            window_hours: self.label_window_hours,
            rule_floor: self.label_rule_floor,
            floor_risk: self.label_floor_risk,
        }
    }

    /// The rate-limit tiers.
    #[must_use]
    pub fn tiers(&self) -> Tiers {
        Tiers {
            reduced_below: self.trust_tier_reduced_below,
            minimal_below: self.trust_tier_minimal_below,
            reduced_factor: self.rate_limit_reduced_factor,
            minimal_factor: self.rate_limit_minimal_factor,
        }
    }

    /// The policy configuration these settings define.
    #[must_use]
    pub fn policy(&self) -> PolicyConfig {
        PolicyConfig {
            default_temperature: self.default_temperature,
            min_temperature: self.min_temperature,
            default_risk_penalty: self.default_risk_penalty,
            max_risk_penalty: self.max_risk_penalty,
            default_block_threshold: self.default_block_threshold,
            min_block_threshold: self.min_block_threshold,
            sensitive_threshold_drop: PolicyConfig::default().sensitive_threshold_drop,
            half_life_days: self.policy_half_life_days,
            prior_strength: self.policy_prior_strength,
            risky_at: self.risky_at,
        }
    }

    /// The label weights these settings define.
    #[must_use]
    pub fn label_weights(&self) -> LabelWeights {
        LabelWeights {
            verdict: self.label_weight_verdict,
            reported: self.label_weight_reported,
            accepted: self.label_weight_accepted,
            rejected_flagged: self.label_weight_rejected_flagged,
        }
    }

    /// The store URL: the configured one, else SQLite in the data directory.
    #[must_use]
    pub fn store_url(&self) -> String {
        self.store.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("guardrank.db").display()))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

/// Setting names and how their environment values parse, read off the defaults.
fn known_settings() -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(Settings::default()) {
        for (k, v) in t {
            let kind = match v {
                toml::Value::Integer(_) => Kind::Int,
                toml::Value::Float(_) => Kind::Float,
                toml::Value::Boolean(_) => Kind::Bool,
                _ => Kind::Str,
            };
            out.insert(k, kind);
        }
    }
    // Optional settings are absent from the serialised defaults.
    out.insert("store".into(), Kind::Str);
    out.insert("model_file".into(), Kind::Str);
    out
}

fn parse_env(kind: &Kind, v: &str) -> Result<toml::Value, String> {
    let v = v.trim();
    Ok(match kind {
        Kind::Str => toml::Value::String(v.to_string()),
        Kind::Int => toml::Value::Integer(v.parse().map_err(|_| format!("expected an integer, got {v:?}"))?),
        Kind::Float => toml::Value::Float(v.parse().map_err(|_| format!("expected a number, got {v:?}"))?),
        Kind::Bool => toml::Value::Boolean(match v {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {v:?}")),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::load(None, &BTreeMap::new()).expect("defaults are valid");
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!((s.default_temperature, s.min_temperature), (0.8, 0.2));
        assert_eq!((s.default_risk_penalty, s.max_risk_penalty), (1.0, 4.0));
        assert_eq!((s.default_block_threshold, s.min_block_threshold), (0.9, 0.5));
        assert_eq!((s.rate_limit_key_per_s, s.rate_limit_key_burst), (2000.0, 4000.0));
        assert_eq!(s.impression_ttl_days, 7.0);
        assert!(s.store_url().ends_with("guardrank-data/guardrank.db"));
    }

    #[test]
    fn file_then_environment_and_unknown_keys_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("guardrank.toml");
        std::fs::write(&f, "addr = \"127.0.0.1:9000\"\nretain_text = true\n").expect("write");
        let s = Settings::load(
            Some(&f),
            &env(&[
                ("GUARDRANK_ADDR", "127.0.0.1:9100"),
                ("GUARDRANK_RISKY_AT", "0.6"),
                ("GUARDRANK_ADMIN_KEY", "x"),
                ("GUARDRANK_NOPE", "1"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.addr.port(), 9100);
        assert!(s.retain_text);
        assert_eq!(s.risky_at, 0.6);
        std::fs::write(&f, "adr = \"127.0.0.1:9000\"\n").expect("write");
        let e = Settings::load(Some(&f), &BTreeMap::new()).expect_err("unknown key");
        assert!(e.to_string().contains("adr"), "{e}");
        let e = Settings::load(None, &env(&[("GUARDRANK_RISKY_AT", "lots")])).expect_err("bad number");
        assert!(e.to_string().contains("GUARDRANK_RISKY_AT"), "{e}");
        let e = Settings::load(None, &env(&[("GUARDRANK_MIN_TEMPERATURE", "0.9")])).expect_err("bounds");
        assert!(e.to_string().contains("temperature"), "{e}");
    }
}
