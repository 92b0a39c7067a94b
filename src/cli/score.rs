//! `guardrank score PATH...`: scan files and directories.

use super::{Format, check_threshold, detector, parse_language, sarif};
use crate::lang::Language;
use crate::scan::{FileFinding, scan_text};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Files larger than this are skipped (generated or vendored blobs, not code a person wrote).
const MAX_FILE_BYTES: u64 = 4 << 20;

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub format: Format,
    pub threshold: f64,
    pub baseline: Option<PathBuf>,
    pub language: Option<String>,
    pub artefacts: super::Artefacts,
}

/// One scanned file in the JSON report.
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    pub language: Option<&'static str>,
    pub risk: f64,
    pub blocked: bool,
    pub suppressed: usize,
    pub findings: Vec<FileFinding>,
}

#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub path: String,
    pub error: String,
}

/// The `--format json` document (also what `--baseline` reads).
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub threshold: f64,
    pub files: Vec<FileReport>,
    pub errors: Vec<ErrorReport>,
}

#[derive(Deserialize)]
struct BaselineDoc {
    files: Vec<BaselineFile>,
}

#[derive(Deserialize)]
struct BaselineFile {
    path: String,
    #[serde(default)]
    findings: Vec<BaselineFinding>,
}

#[derive(Deserialize)]
struct BaselineFinding {
    rule_id: String,
    fingerprint: String,
}

fn load_baseline(p: &Path) -> anyhow::Result<HashSet<(String, String, String)>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading baseline {}", p.display()))?;
    let doc: BaselineDoc = serde_json::from_str(&text)
        .with_context(|| format!("baseline {} is not a `guardrank score --format json` report", p.display()))?;
    Ok(doc
        .files
        .into_iter()
        .flat_map(|f| {
            let path = f.path;
            f.findings.into_iter().map(move |x| (path.clone(), x.rule_id, x.fingerprint))
        })
        .collect())
}

/// Collects the files to scan: named files as given; directories walked honouring
/// .gitignore (also outside a git repository), keeping files of a known language.
fn collect(paths: &[PathBuf], errors: &mut Vec<ErrorReport>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
            continue;
        }
        if !p.exists() {
            errors.push(ErrorReport { path: p.display().to_string(), error: "no such file or directory".into() });
            continue;
        }
        let walk = ignore::WalkBuilder::new(p).require_git(false).build();
        for entry in walk {
            match entry {
                Ok(e) => {
                    let path = e.path();
                    if e.file_type().is_some_and(|t| t.is_file())
                        && Language::from_path(&path.to_string_lossy()).is_some()
                    {
                        out.push(path.to_path_buf());
                    }
                }
                Err(err) => errors.push(ErrorReport { path: p.display().to_string(), error: err.to_string() }),
            }
        }
    }
    out
}

pub fn run(o: &Options) -> anyhow::Result<ExitCode> {
    check_threshold(o.threshold)?;
    if o.paths.is_empty() {
        anyhow::bail!("give at least one file or directory to scan, or --jsonl to read stdin");
    }
    let forced = parse_language(o.language.as_deref())?;
    let det = detector(&o.artefacts)?;
    let baseline = match &o.baseline {
        Some(p) => load_baseline(p)?,
        None => HashSet::new(),
    };
    let mut errors = Vec::new();
    let files = collect(&o.paths, &mut errors);
    let mut reports = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(&path);
        if meta.as_ref().is_ok_and(|m| m.len() > MAX_FILE_BYTES) {
            errors
                .push(ErrorReport { path: shown, error: format!("skipped: larger than {} MiB", MAX_FILE_BYTES >> 20) });
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                errors.push(ErrorReport { path: shown, error: e.to_string() });
                continue;
            }
        };
        if bytes.iter().take(8192).any(|b| *b == 0) {
            continue; // binary file
        }
        let text = String::from_utf8_lossy(&bytes);
        let lang = crate::engine::resolve_language(forced, Some(&shown), &text);
        let is_baselined =
            |f: &FileFinding| baseline.contains(&(shown.clone(), f.finding.rule_id.to_string(), f.fingerprint.clone()));
        let scan = scan_text(&det.rules, &det.model, &text, lang, &is_baselined);
        reports.push(FileReport {
            blocked: scan.risk >= o.threshold,
            path: shown,
            language: lang.map(Language::name),
            risk: scan.risk,
            suppressed: scan.suppressed,
            findings: scan.findings,
        });
    }
    let report = Report {
        tool: "guardrank",
        version: env!("CARGO_PKG_VERSION"),
        threshold: o.threshold,
        files: reports,
        errors,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match o.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut out, &sarif::document(&report, &det.rules))?;
            writeln!(out)?;
        }
        Format::Human => write_human(&mut out, &report)?,
    }
    out.flush()?;
    let code = if !report.errors.iter().all(|e| e.error.starts_with("skipped")) {
        2
    } else if report.files.iter().any(|f| f.blocked) {
        1
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

fn write_human(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let mut nfind = 0;
    for f in &r.files {
        if f.findings.is_empty() && !f.blocked {
            continue;
        }
        let verdict = if f.blocked { "  FAIL" } else { "" };
        writeln!(out, "{}  risk {:.2}{}", f.path, f.risk, verdict)?;
        for x in &f.findings {
            nfind += 1;
            let fi = &x.finding;
            let monitor = if fi.mode == crate::rules::Mode::Monitor { " (monitor)" } else { "" };
            writeln!(
                out,
                "  {}:{}  {:<8} {:<8} {}  {}{}",
                fi.line, fi.column, fi.severity, fi.cwe, fi.rule_id, fi.message, monitor
            )?;
        }
        if f.findings.is_empty() {
            writeln!(out, "  no rule findings; the model scores the code as risky")?;
        }
    }
    for e in &r.errors {
        writeln!(out, "{}: {}", e.path, e.error)?;
    }
    let failing = r.files.iter().filter(|f| f.blocked).count();
    writeln!(
        out,
        "{} files scanned, {} findings, {} at or above risk {:.2}",
        r.files.len(),
        nfind,
        failing,
        r.threshold
    )
}
