//! `guardrank corpus export|stats`.

use super::Split;
use crate::corpus::{Snippet, load_dir};
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The corpus directory: the given one, else `data/corpus` of the working directory.
pub fn corpus_dir(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from("data/corpus"), Path::to_path_buf)
}

pub fn load(given: Option<&Path>) -> anyhow::Result<Vec<Snippet>> {
    let dir = corpus_dir(given);
    if !dir.is_dir() {
        anyhow::bail!(
            "corpus directory {} not found (run from the repository root, or pass --corpus DIR)",
            dir.display()
        );
    }
    load_dir(&dir).with_context(|| format!("loading the corpus in {}", dir.display()))
}

pub fn in_split(s: &Snippet, split: Split) -> bool {
    match split {
        Split::All => true,
        Split::Holdout => s.is_holdout(),
        Split::Train => !s.is_holdout(),
    }
}

pub fn export(given: Option<&Path>, split: Split) -> anyhow::Result<ExitCode> {
    let snippets = load(given)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for s in snippets.iter().filter(|s| in_split(s, split)) {
        let line = serde_json::json!({"code": s.code, "language": s.language, "label": s.label, "family": s.family});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(given: Option<&Path>) -> anyhow::Result<ExitCode> {
    let snippets = load(given)?;
    let mut table: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for s in &snippets {
        let row = table.entry(s.language.as_str()).or_default();
        row[usize::from(s.insecure())] += 1;
        row[2 + usize::from(s.is_holdout())] += 1;
    }
    println!("{:<12} {:>7} {:>9} {:>7} {:>8}", "language", "safe", "insecure", "train", "holdout");
    for (l, r) in &table {
        println!("{l:<12} {:>7} {:>9} {:>7} {:>8}", r[0], r[1], r[2], r[3]);
    }
    let families: std::collections::BTreeSet<&str> = snippets.iter().map(|s| s.family.as_str()).collect();
    println!("{} snippets in {} families", snippets.len(), families.len());
    Ok(ExitCode::SUCCESS)
}
