//! SARIF 2.1.0 output for code-scanning dashboards.

use super::score::Report;
use crate::rules::{RulePack, Severity};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Low => "note",
        Severity::Medium => "warning",
        Severity::High | Severity::Critical => "error",
    }
}

/// Builds the SARIF log of a scan: one run, the rules that fired, one result per finding.
#[must_use]
pub fn document(report: &Report, pack: &RulePack) -> Value {
    let fired: BTreeSet<&str> =
        report.files.iter().flat_map(|f| f.findings.iter().map(|x| &*x.finding.rule_id)).collect();
    let rules: Vec<Value> = pack
        .rules()
        .iter()
        .filter(|r| fired.contains(r.spec.id.as_str()))
        .map(|r| {
            json!({
                "id": r.spec.id,
                "shortDescription": {"text": r.spec.message},
                "defaultConfiguration": {"level": level(r.spec.severity)},
                "properties": {"tags": ["security", r.spec.cwe], "severity": r.spec.severity.name()},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .files
        .iter()
        .flat_map(|f| {
            f.findings.iter().map(move |x| {
                let fi = &x.finding;
                json!({
                    "ruleId": &*fi.rule_id,
                    "level": level(fi.severity),
                    "message": {"text": format!("{} ({})", fi.message, fi.cwe)},
                    "locations": [{"physicalLocation": {
                        "artifactLocation": {"uri": f.path.replace('\\', "/")},
                        "region": {"startLine": fi.line, "startColumn": fi.column,
                                   "endLine": fi.end_line, "endColumn": fi.end_column}
                    }}],
                    "partialFingerprints": {"guardrank/v1": x.fingerprint},
                    "properties": {"risk": f.risk, "cwe": &*fi.cwe},
                })
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "guardrank",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}
