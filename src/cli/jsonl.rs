//! `guardrank score --jsonl`: a stream of snippets on stdin, one result line each on stdout.

use super::{check_threshold, detector, parse_language};
use crate::engine::{Detector, Finding, resolve_language};
use crate::lang::Language;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    id: Value,
    code: String,
    #[serde(default)]
    language: Option<String>,
}

#[derive(Serialize)]
struct Output<'a> {
    id: &'a Value,
    risk: f64,
    blocked: bool,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    error: String,
}

/// Scores one input line; the result is the output line (without newline).
fn line_result(det: &Detector, forced: Option<Language>, threshold: f64, line: &str) -> String {
    let err = |id: Option<&Value>, e: String| {
        serde_json::to_string(&ErrorLine { id, error: e }).unwrap_or_else(|_| "{\"error\":\"unprintable\"}".into())
    };
    let input: Input = match serde_json::from_str(line) {
        Ok(i) => i,
        Err(e) => {
            // Salvage the id when the line is JSON but not of our shape.
            let id = serde_json::from_str::<Value>(line).ok().and_then(|v| v.get("id").cloned());
            return err(id.as_ref(), format!("invalid input line: {e}"));
        }
    };
    let lang = match input.language.as_deref().map(str::parse::<Language>).transpose() {
        Ok(l) => l,
        Err(e) => return err(Some(&input.id), e.to_string()),
    };
    let lang = resolve_language(lang.or(forced), None, &input.code);
    let a = det.assess(&input.code, lang);
    serde_json::to_string(&Output { id: &input.id, risk: a.risk, blocked: a.risk >= threshold, findings: &a.findings })
        .unwrap_or_else(|e| err(Some(&input.id), e.to_string()))
}

pub fn run(threshold: f64, language: Option<&str>, artefacts: &super::Artefacts) -> anyhow::Result<ExitCode> {
    check_threshold(threshold)?;
    let forced = parse_language(language)?;
    let det = detector(artefacts)?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let mut input = stdin.lock();
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        writeln!(out, "{}", line_result(&det, forced, threshold, line))?;
        // Flush per line so a pipeline sees each result as it is made.
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
