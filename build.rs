//! Embeds every rule file of data/rules/ into the binary (so a bare `guardrank` has its rules
//! and a new rule file needs no code change).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    embed("data/rules", "builtin_rules.rs");
    embed("data/prompt-rules", "builtin_prompt_rules.rs");
    embed("data/prompts", "builtin_prompt_set.rs");
}

/// Writes `OUT_DIR/<out>`: a slice of (file name, contents) of every `*.toml` in `dir`.
fn embed(dir_name: &str, out_name: &str) {
    println!("cargo:rerun-if-changed={dir_name}");
    let dir = Path::new(dir_name);
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={dir_name}/{f}");
        let _ = writeln!(out, "    ({f:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{dir_name}/{f}\"))),");
    }
    out.push(']');
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join(out_name);
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
