//! The labelled corpus of data/corpus/: parsing, and the held-out split by task family.

use crate::features::hash::murmur3_32;
use crate::lang::Language;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a snippet is, per the labelling guideline in data/README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Insecure,
    Secure,
    NearMiss,
    Benign,
}

/// One labelled snippet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snippet {
    pub family: String,
    pub language: String,
    pub label: u8,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwe: Option<String>,
    pub code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    #[serde(default)]
    snippet: Vec<Snippet>,
}

/// Why a corpus file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{file}: {error}")]
    Parse { file: String, error: String },
    #[error("{file}: snippet {index}: {problem}")]
    Invalid { file: String, index: usize, problem: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl Snippet {
    /// The snippet's language.
    #[must_use]
    pub fn lang(&self) -> Option<Language> {
        self.language.parse().ok()
    }

    /// Label as a bool (true = insecure).
    #[must_use]
    pub fn insecure(&self) -> bool {
        self.label == 1
    }

    /// Whether the snippet's family is in the held-out split.
    #[must_use]
    pub fn is_holdout(&self) -> bool {
        is_holdout_family(&self.family)
    }
}

/// A family is held out when `murmur3_32(family, 0x9747b28c) % 5 == 0` (about one in five).
#[must_use]
pub fn is_holdout_family(family: &str) -> bool {
    murmur3_32(family.as_bytes(), 0x9747_b28c).is_multiple_of(5)
}

/// Parses one corpus file, checking labels, kinds and languages.
///
/// # Errors
/// Invalid TOML, unknown fields, a bad label/kind combination or an unknown language.
pub fn parse_corpus_file(name: &str, text: &str) -> Result<Vec<Snippet>, CorpusError> {
    let f: CorpusFile =
        toml::from_str(text).map_err(|e| CorpusError::Parse { file: name.to_string(), error: e.to_string() })?;
    for (i, s) in f.snippet.iter().enumerate() {
        let bad =
            |problem: &str| CorpusError::Invalid { file: name.to_string(), index: i, problem: problem.to_string() };
        if s.label > 1 {
            return Err(bad("label must be 0 or 1"));
        }
        if (s.kind == Kind::Insecure) != (s.label == 1) {
            return Err(bad("kind \"insecure\" goes with label 1, every other kind with 0"));
        }
        if s.lang().is_none() {
            return Err(bad("unknown language"));
        }
        if s.family.is_empty() || s.code.trim().is_empty() {
            return Err(bad("family and code must not be empty"));
        }
    }
    Ok(f.snippet)
}

/// Loads every `*.toml` under `dir` (recursively, in path order). A thin I/O wrapper.
///
/// # Errors
/// An unreadable directory or file, or a file that does not parse.
pub fn load_dir(dir: &Path) -> Result<Vec<Snippet>, CorpusError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| CorpusError::Io(d.display().to_string(), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| CorpusError::Io(d.display().to_string(), e))?;
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| CorpusError::Io(f.display().to_string(), e))?;
        out.extend(parse_corpus_file(&f.display().to_string(), &text)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_snippets() {
        let ok = "[[snippet]]\nfamily = \"python.x\"\nlanguage = \"python\"\nlabel = 1\nkind = \"insecure\"\ncwe = \"CWE-78\"\ncode = '''os.system(cmd)'''\n";
        let v = parse_corpus_file("t", ok).expect("parses");
        assert_eq!(v.len(), 1);
        assert!(v[0].insecure());
        let bad = ok.replace("label = 1", "label = 0");
        assert!(matches!(parse_corpus_file("t", &bad), Err(CorpusError::Invalid { .. })));
        let bad = ok.replace("python\"\nlabel", "cobol\"\nlabel");
        assert!(parse_corpus_file("t", &bad).is_err());
    }

    #[test]
    fn the_split_is_stable_and_about_one_in_five() {
        let held = (0..1000).filter(|i| is_holdout_family(&format!("fam-{i}"))).count();
        assert!((150..=250).contains(&held), "{held}");
        assert_eq!(is_holdout_family("python.sql-user-lookup"), is_holdout_family("python.sql-user-lookup"));
    }
}
