//! Languages: names, file extensions, and a cheap heuristic for text without either.

use std::fmt;
use std::str::FromStr;

/// A programming language guardrank has rules for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    Java,
    C,
    Cpp,
    Go,
    Rust,
    Php,
    Ruby,
    CSharp,
    Kotlin,
    Swift,
    Shell,
}

/// How a language writes comments, which the lexer needs to mask them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommentSyntax {
    /// `#` starts a line comment.
    pub hash: bool,
    /// `//` line comments and `/* */` block comments.
    pub slash: bool,
}

impl Language {
    /// Every language, in a fixed order.
    pub const ALL: [Language; 14] = [
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Java,
        Language::C,
        Language::Cpp,
        Language::Go,
        Language::Rust,
        Language::Php,
        Language::Ruby,
        Language::CSharp,
        Language::Kotlin,
        Language::Swift,
        Language::Shell,
    ];

    /// The contract's name of the language (`python`, `csharp`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Java => "java",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Go => "go",
            Language::Rust => "rust",
            Language::Php => "php",
            Language::Ruby => "ruby",
            Language::CSharp => "csharp",
            Language::Kotlin => "kotlin",
            Language::Swift => "swift",
            Language::Shell => "shell",
        }
    }

    /// The language of a file extension (without the dot), case-insensitively.
    #[must_use]
    pub fn from_extension(ext: &str) -> Option<Language> {
        let ext = ext.to_ascii_lowercase();
        Some(match ext.as_str() {
            "py" | "pyw" | "pyi" => Language::Python,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "tsx" | "mts" | "cts" => Language::TypeScript,
            "java" => Language::Java,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "ipp" => Language::Cpp,
            "go" => Language::Go,
            "rs" => Language::Rust,
            "php" | "phtml" | "php5" | "php7" | "phps" => Language::Php,
            "rb" | "rake" | "gemspec" | "ru" | "erb" => Language::Ruby,
            "cs" | "csx" => Language::CSharp,
            "kt" | "kts" => Language::Kotlin,
            "swift" => Language::Swift,
            "sh" | "bash" | "zsh" | "ksh" => Language::Shell,
            _ => return None,
        })
    }

    /// The language of a path, from its extension (or a few well-known file names).
    #[must_use]
    pub fn from_path(path: &str) -> Option<Language> {
        let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
        match file {
            "Rakefile" | "Gemfile" => return Some(Language::Ruby),
            ".bashrc" | ".profile" | ".zshrc" => return Some(Language::Shell),
            _ => {}
        }
        let (_, ext) = file.rsplit_once('.')?;
        Language::from_extension(ext)
    }

    /// Comment syntax used to mask comments before rules run.
    #[must_use]
    pub fn comments(self) -> CommentSyntax {
        match self {
            Language::Python | Language::Ruby | Language::Shell => CommentSyntax { hash: true, slash: false },
            Language::Php => CommentSyntax { hash: true, slash: true },
            _ => CommentSyntax { hash: false, slash: true },
        }
    }

    /// Guesses the language of a snippet from its text; `None` when nothing stands out.
    ///
    /// A cheap keyword vote: each language has marker substrings with weights; the best total
    /// wins if it reaches a minimum. It reads at most the first 4 KiB.
    #[must_use]
    pub fn infer(text: &str) -> Option<Language> {
        let mut end = text.len().min(4096);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let t = &text[..end];
        let mut best: Option<(Language, u32)> = None;
        for &(lang, markers) in MARKERS {
            let score: u32 = markers.iter().filter(|(m, _)| t.contains(m)).map(|(_, w)| *w).sum();
            if score >= 3 && best.is_none_or(|(_, s)| score > s) {
                best = Some((lang, score));
            }
        }
        best.map(|(l, _)| l)
    }
}

type Markers = &'static [(&'static str, u32)];

/// Marker substrings per language; weights say how telling each is.
const MARKERS: &[(Language, Markers)] = &[
    (
        Language::Php,
        &[
            ("<?php", 9),
            ("$_GET", 6),
            ("$_POST", 6),
            ("$this->", 4),
            ("->", 1),
            ("echo ", 1),
            ("function ", 1),
            ("$", 1),
        ],
    ),
    (
        Language::Python,
        &[
            ("def ", 3),
            ("import ", 1),
            ("from ", 1),
            ("self.", 2),
            ("elif ", 3),
            ("print(", 1),
            ("):\n", 2),
            ("None", 1),
            ("True", 1),
            ("__init__", 3),
            ("f\"", 1),
        ],
    ),
    (
        Language::Ruby,
        &[
            ("def ", 2),
            ("end\n", 2),
            ("puts ", 3),
            ("require '", 3),
            ("do |", 4),
            ("@", 1),
            (".each", 1),
            ("nil", 2),
            ("elsif", 4),
            ("params[", 2),
        ],
    ),
    (
        Language::Go,
        &[
            ("func ", 3),
            (":= ", 3),
            ("package ", 2),
            ("fmt.", 3),
            ("err != nil", 5),
            ("import (", 3),
            ("*http.Request", 4),
        ],
    ),
    (
        Language::Rust,
        &[
            ("fn ", 2),
            ("let mut ", 4),
            ("impl ", 3),
            ("::", 1),
            ("-> Result<", 4),
            ("pub fn", 3),
            ("&str", 3),
            ("unwrap()", 3),
            ("?;", 3),
            ("use std::", 5),
            ("#[derive", 5),
        ],
    ),
    (
        Language::Java,
        &[
            ("public class ", 4),
            ("private ", 1),
            ("public static void", 4),
            ("System.out", 4),
            ("import java", 6),
            ("String ", 1),
            ("@Override", 4),
            ("new ", 1),
            ("throws ", 3),
        ],
    ),
    (
        Language::CSharp,
        &[
            ("using System", 6),
            ("namespace ", 2),
            ("public async Task", 5),
            ("string ", 1),
            ("Console.", 4),
            ("var ", 1),
            ("{ get; set; }", 6),
            ("[HttpGet", 5),
            ("=> ", 1),
        ],
    ),
    (
        Language::Kotlin,
        &[
            ("fun ", 4),
            ("val ", 2),
            ("var ", 1),
            ("println(", 2),
            ("?.let", 5),
            ("data class", 5),
            ("import kotlin", 6),
        ],
    ),
    (
        Language::Swift,
        &[
            ("func ", 2),
            ("let ", 1),
            ("var ", 1),
            ("guard let", 6),
            ("import Foundation", 6),
            ("import UIKit", 6),
            ("-> ", 1),
            ("if let ", 4),
        ],
    ),
    (
        Language::C,
        &[
            ("#include <", 4),
            ("int main(", 3),
            ("printf(", 2),
            ("malloc(", 3),
            ("char *", 3),
            ("char ", 1),
            ("free(", 2),
            ("NULL", 2),
            ("sizeof(", 2),
            ("->", 1),
        ],
    ),
    (
        Language::Cpp,
        &[
            ("#include <", 3),
            ("std::", 5),
            ("cout <<", 5),
            ("template<", 4),
            ("nullptr", 4),
            ("::", 1),
            ("auto ", 1),
            ("#include <iostream>", 4),
        ],
    ),
    (
        Language::TypeScript,
        &[
            (": string", 4),
            (": number", 4),
            ("interface ", 3),
            ("export ", 1),
            ("const ", 1),
            ("=> ", 1),
            (": Promise<", 5),
            ("import {", 2),
            ("as any", 4),
            ("public ", 1),
        ],
    ),
    (
        Language::JavaScript,
        &[
            ("const ", 2),
            ("let ", 1),
            ("function ", 2),
            ("=> ", 2),
            ("require(", 4),
            ("console.log", 3),
            ("document.", 4),
            ("module.exports", 5),
            ("===", 3),
            ("async ", 1),
            ("import {", 1),
        ],
    ),
    (
        Language::Shell,
        &[
            ("#!/bin/bash", 9),
            ("#!/bin/sh", 9),
            ("echo \"$", 5),
            ("fi\n", 4),
            ("then\n", 3),
            ("; then", 5),
            ("$1", 2),
            ("${", 1),
            ("done\n", 2),
        ],
    ),
];

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A language name that guardrank does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown language {0:?}; known: python, javascript, typescript, java, c, cpp, go, rust, php, ruby, csharp, kotlin, swift, shell"
)]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let lang = match lower.as_str() {
            "python" | "py" | "python3" => Language::Python,
            "javascript" | "js" | "node" | "jsx" => Language::JavaScript,
            "typescript" | "ts" | "tsx" => Language::TypeScript,
            "java" => Language::Java,
            "c" => Language::C,
            "cpp" | "c++" | "cxx" => Language::Cpp,
            "go" | "golang" => Language::Go,
            "rust" | "rs" => Language::Rust,
            "php" => Language::Php,
            "ruby" | "rb" => Language::Ruby,
            "csharp" | "c#" | "cs" => Language::CSharp,
            "kotlin" | "kt" => Language::Kotlin,
            "swift" => Language::Swift,
            "shell" | "sh" | "bash" | "zsh" => Language::Shell,
            _ => return Err(UnknownLanguage(s.to_string())),
        };
        Ok(lang)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in Language::ALL {
            assert_eq!(l.name().parse::<Language>(), Ok(l));
        }
        assert!("cobol".parse::<Language>().is_err());
    }

    #[test]
    fn paths_map_to_languages() {
        assert_eq!(Language::from_path("app/db.py"), Some(Language::Python));
        assert_eq!(Language::from_path("src\\Main.JAVA"), Some(Language::Java));
        assert_eq!(Language::from_path("web/App.tsx"), Some(Language::TypeScript));
        assert_eq!(Language::from_path("lib/x.hpp"), Some(Language::Cpp));
        assert_eq!(Language::from_path("Rakefile"), Some(Language::Ruby));
        assert_eq!(Language::from_path("README"), None);
        assert_eq!(Language::from_path("notes.txt"), None);
    }

    #[test]
    fn infers_languages_from_typical_snippets() {
        let cases = [
            ("def load(path):\n    with open(path) as f:\n        return f.read()\n", Language::Python),
            ("<?php\n$id = $_GET['id'];\necho $id;", Language::Php),
            (
                "func handler(w http.ResponseWriter, r *http.Request) {\n\tname := r.URL.Query().Get(\"n\")\n\tif err != nil {\n",
                Language::Go,
            ),
            ("use std::fs;\nfn main() {\n    let mut v = Vec::new();\n}", Language::Rust),
            (
                "import java.util.List;\npublic class A {\n  public static void main(String[] a) { System.out.println(a); }\n}",
                Language::Java,
            ),
            (
                "using System;\nnamespace App {\n  public class User { public string Name { get; set; } }\n}",
                Language::CSharp,
            ),
            (
                "#include <stdio.h>\nint main(int argc, char *argv[]) {\n  char buf[16];\n  printf(\"%s\", argv[1]);\n}",
                Language::C,
            ),
            ("#include <iostream>\nint main() { std::cout << \"hi\"; }", Language::Cpp),
            (
                "const express = require('express');\nconst app = express();\napp.get('/', (req, res) => res.send('ok'));",
                Language::JavaScript,
            ),
            ("export function add(a: number, b: number): number {\n  return a + b;\n}", Language::TypeScript),
            ("class User < ApplicationRecord\n  def full_name\n    puts name\n  end\nend\n", Language::Ruby),
            ("#!/bin/bash\nif [ -z \"$1\" ]; then\n  echo \"usage\"\nfi\n", Language::Shell),
        ];
        for (text, want) in cases {
            assert_eq!(Language::infer(text), Some(want), "{text}");
        }
    }

    #[test]
    fn inference_gives_up_on_prose_and_survives_odd_text() {
        assert_eq!(Language::infer("hello there"), None);
        assert_eq!(Language::infer(""), None);
        let long = "é".repeat(5000);
        assert_eq!(Language::infer(&long), None);
    }
}
