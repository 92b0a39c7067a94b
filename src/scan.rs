//! Scanning whole files: inline suppressions, baselines and windowed scoring.
//!
//! The model is trained on snippets of a few to a few dozen lines, the size of a completion.
//! A file is scored as overlapping windows of [`WINDOW_LINES`] lines (stride half that) and its
//! risk is the highest window's, so one risky function is not diluted by a long harmless file.
//! Suppressed findings (inline `guardrank:ignore[rule-id]`, or recorded in a baseline) are
//! dropped from the report and their lines blanked before scoring, so a suppression really
//! clears the gate.

use crate::engine::{Finding, assess};
use crate::features::hash::murmur3_32;
use crate::lang::Language;
use crate::lexer::{TokenKind, lex};
use crate::model::Model;
use crate::rules::{LineIndex, RulePack};

/// Lines per scoring window.
pub const WINDOW_LINES: usize = 40;

/// A finding with the stable fingerprint that baselines record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileFinding {
    #[serde(flatten)]
    pub finding: Finding,
    /// Hash of the rule id and the trimmed text of the finding's first line: survives the
    /// code moving up or down.
    pub fingerprint: String,
}

/// The result of scanning one file's text.
#[derive(Debug, Clone)]
pub struct FileScan {
    pub risk: f64,
    pub findings: Vec<FileFinding>,
    pub suppressed: usize,
}

/// Inline suppressions: for each 1-based line, the rule ids suppressed there (`*` = all).
#[must_use]
pub fn inline_suppressions(text: &str, lang: Option<Language>) -> Vec<(u32, Vec<String>)> {
    let lexed = lex(text, lang);
    let index = LineIndex::new(text);
    let mut out = Vec::new();
    for t in lexed.tokens.iter().filter(|t| t.kind == TokenKind::Comment) {
        let c = t.text(text);
        let mut rest = c;
        while let Some(p) = rest.find("guardrank:ignore[") {
            let after = &rest[p + "guardrank:ignore[".len()..];
            let Some(close) = after.find(']') else { break };
            let ids: Vec<String> =
                after[..close].split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let first = index.position(t.start as usize).line;
            let last = index.position(t.end as usize).line;
            // The comment's own lines and the line after it.
            for line in first..=last + 1 {
                out.push((line, ids.clone()));
            }
            rest = &after[close..];
        }
    }
    out
}

/// The fingerprint of a finding in `text`.
#[must_use]
pub fn fingerprint(f: &Finding, text: &str) -> String {
    let line = text.lines().nth(f.line.saturating_sub(1) as usize).unwrap_or("").trim();
    let mut key = Vec::with_capacity(f.rule_id.len() + line.len() + 1);
    key.extend_from_slice(f.rule_id.as_bytes());
    key.push(0);
    key.extend_from_slice(line.as_bytes());
    format!("{:08x}{:08x}", murmur3_32(&key, 1), murmur3_32(&key, 2))
}

/// Scans a file's text. `baselined(finding)` says whether a baseline already records it.
#[must_use]
pub fn scan_text(
    rules: &RulePack,
    model: &Model,
    text: &str,
    lang: Option<Language>,
    baselined: &dyn Fn(&FileFinding) -> bool,
) -> FileScan {
    let full = assess(rules, model, text, lang);
    let supp = inline_suppressions(text, lang);
    let mut kept = Vec::new();
    let mut blank: Vec<(u32, u32)> = Vec::new();
    for f in full.findings {
        let ff = FileFinding { fingerprint: fingerprint(&f, text), finding: f };
        let inline = supp
            .iter()
            .any(|(l, ids)| *l == ff.finding.line && ids.iter().any(|i| i == "*" || **i == *ff.finding.rule_id));
        if inline || baselined(&ff) {
            blank.push((ff.finding.line, ff.finding.end_line.max(ff.finding.line)));
        } else {
            kept.push(ff);
        }
    }
    let suppressed = blank.len();
    let scored: std::borrow::Cow<'_, str> = if blank.is_empty() {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(
            text.split('\n')
                .enumerate()
                .map(|(i, l)| {
                    let n = i as u32 + 1;
                    if blank.iter().any(|(a, b)| (*a..=*b).contains(&n)) { "" } else { l }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let lines: Vec<&str> = scored.split('\n').collect();
    let risk = if lines.len() <= WINDOW_LINES {
        if blank.is_empty() { full.risk } else { assess(rules, model, &scored, lang).risk }
    } else {
        let stride = WINDOW_LINES / 2;
        let mut best: f64 = 0.0;
        let mut start = 0;
        loop {
            let end = (start + WINDOW_LINES).min(lines.len());
            let window = lines[start..end].join("\n");
            best = best.max(assess(rules, model, &window, lang).risk);
            if end == lines.len() {
                break;
            }
            start += stride;
        }
        best
    };
    FileScan { risk, findings: kept, suppressed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressions_cover_their_line_and_the_next() {
        let src = "a = 1\n# guardrank:ignore[python.x, python.y]\nb = 2\nc = 3 # guardrank:ignore[*]\n";
        let s = inline_suppressions(src, Some(Language::Python));
        let lines: Vec<u32> = s.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert_eq!(s[1].1, ["python.x", "python.y"]);
        assert_eq!(s[2].1, ["*"]);
        // Only comments count: a string that says so is no suppression.
        assert!(inline_suppressions("x = \"guardrank:ignore[*]\"", Some(Language::Python)).is_empty());
    }
}
