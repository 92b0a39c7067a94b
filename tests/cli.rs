//! The `guardrank` command line, run as a process: exit codes, formats, suppressions,
//! baselines and the JSON-lines stream.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_guardrank");

const INSECURE_PY: &str =
    "import pickle\nfrom flask import request\n\ndef load():\n    return pickle.loads(request.data)\n";
const SAFE_PY: &str = "def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n";

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(dir).output().expect("guardrank runs")
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(p, text).expect("write fixture");
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn exit_status_is_0_when_clean_1_when_risky_2_on_usage_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "ok.py", SAFE_PY);
    write(d.path(), "bad.py", INSECURE_PY);
    assert_eq!(run(&["score", "ok.py"], d.path()).status.code(), Some(0));
    let out = run(&["score", "bad.py"], d.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CWE-502") && text.contains("bad.py"), "{text}");
    assert_eq!(run(&["score"], d.path()).status.code(), Some(2));
    assert_eq!(run(&["score", "missing.py"], d.path()).status.code(), Some(2));
    assert_eq!(run(&["score", "--threshold", "1.5", "ok.py"], d.path()).status.code(), Some(2));
    assert_eq!(run(&["score", "--format", "yaml", "ok.py"], d.path()).status.code(), Some(2));
    // A threshold of 1 is never reached; 0 always is.
    assert_eq!(run(&["score", "--threshold", "1", "bad.py"], d.path()).status.code(), Some(0));
    assert_eq!(run(&["score", "--threshold", "0", "ok.py"], d.path()).status.code(), Some(1));
}

#[test]
fn directories_are_walked_honouring_gitignore() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "src/ok.py", SAFE_PY);
    write(d.path(), "vendor/bad.py", INSECURE_PY);
    write(d.path(), "notes.txt", "pickle.loads(request.data)");
    write(d.path(), ".gitignore", "vendor/\n");
    let out = run(&["score", "--format", "json", "."], d.path());
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    let paths: Vec<&str> = v["files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].ends_with("ok.py"));
}

#[test]
fn json_findings_carry_positions_and_fingerprints() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "bad.py", INSECURE_PY);
    let v = json(&run(&["score", "--format", "json", "bad.py"], d.path()));
    let f = &v["files"][0];
    assert_eq!(f["language"], "python");
    assert!(f["risk"].as_f64().expect("risk") >= 0.9);
    let finding =
        f["findings"].as_array().expect("findings").iter().find(|x| x["cwe"] == "CWE-502").expect("a CWE-502 finding");
    assert_eq!(finding["line"], 5);
    // "    return pickle.loads(" : the match starts at or after column 12 (1-based, characters).
    assert!(finding["column"].as_u64().expect("column") >= 12);
    assert!(finding["end_column"].as_u64() > finding["column"].as_u64());
    assert_eq!(finding["fingerprint"].as_str().map(str::len), Some(16));
}

#[test]
fn inline_suppression_and_baseline_clear_the_gate() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "bad.py", INSECURE_PY);
    let v = json(&run(&["score", "--format", "json", "bad.py"], d.path()));
    let ids: Vec<String> = v["files"][0]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule_id"].as_str().map(String::from))
        .collect();
    assert!(!ids.is_empty());
    let suppressed = INSECURE_PY.replace(
        "    return pickle.loads(request.data)\n",
        &format!("    # guardrank:ignore[{}]\n    return pickle.loads(request.data)\n", ids.join(", ")),
    );
    write(d.path(), "suppressed.py", &suppressed);
    let out = run(&["score", "--format", "json", "suppressed.py"], d.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out)["files"][0]["findings"].as_array().map(Vec::len), Some(0));

    // Baseline: record today's findings, then only new ones count.
    let base = run(&["score", "--format", "json", "bad.py"], d.path());
    std::fs::write(d.path().join("baseline.json"), &base.stdout).expect("write baseline");
    assert_eq!(run(&["score", "--baseline", "baseline.json", "bad.py"], d.path()).status.code(), Some(0));
    write(d.path(), "bad.py", &format!("{INSECURE_PY}\ndef run(cmd):\n    os.system(\"sh -c \" + cmd)\n"));
    let out = run(&["score", "--format", "json", "--baseline", "baseline.json", "bad.py"], d.path());
    let v = json(&out);
    let cwes: Vec<&str> =
        v["files"][0]["findings"].as_array().expect("findings").iter().filter_map(|f| f["cwe"].as_str()).collect();
    assert!(cwes.contains(&"CWE-78") && !cwes.contains(&"CWE-502"), "{cwes:?}");
    std::fs::write(d.path().join("broken.json"), "not json").expect("write");
    assert_eq!(run(&["score", "--baseline", "broken.json", "bad.py"], d.path()).status.code(), Some(2));
}

#[test]
fn sarif_is_2_1_0_with_cwe_tags_and_code_point_columns() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "bad.py", INSECURE_PY);
    let v = json(&run(&["score", "--format", "sarif", "bad.py"], d.path()));
    assert_eq!(v["version"], "2.1.0");
    let runv = &v["runs"][0];
    assert_eq!(runv["columnKind"], "unicodeCodePoints");
    assert_eq!(runv["tool"]["driver"]["name"], "guardrank");
    let rules = runv["tool"]["driver"]["rules"].as_array().expect("rules");
    assert!(rules.iter().any(|r| r["properties"]["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == "CWE-502"))));
    let res = runv["results"].as_array().expect("results");
    assert!(!res.is_empty());
    for r in res {
        let region = &r["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64() >= Some(1));
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap_or("")));
        // Every result's rule is described in the driver.
        assert!(rules.iter().any(|x| x["id"] == r["ruleId"]));
    }
}

#[test]
fn jsonl_streams_one_line_per_input_line_in_order_and_survives_bad_lines() {
    let mut child = Command::new(BIN)
        .args(["score", "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let input = concat!(
        "{\"id\": \"a\", \"code\": \"data = pickle.loads(request.data)\", \"language\": \"python\"}\n",
        "this is not json\n",
        "{\"id\": 7, \"nocode\": true}\n",
        "{\"id\": \"b\", \"code\": \"total = sum(values)\"}\n",
        "{\"id\": \"c\", \"code\": \"x\", \"language\": \"cobol\"}\n",
    );
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["blocked"], true);
    assert!(lines[1]["error"].is_string());
    assert_eq!(lines[2]["id"], 7);
    assert!(lines[2]["error"].is_string());
    assert_eq!(lines[3]["id"], "b");
    assert_eq!(lines[3]["blocked"], false);
    assert!(lines[3]["risk"].as_f64().expect("risk") < lines[0]["risk"].as_f64().expect("risk"));
    assert_eq!(lines[4]["id"], "c");
    assert!(lines[4]["error"].as_str().expect("error").contains("cobol"));
}

#[test]
fn eval_reports_overall_and_per_language_figures() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = [
        r#"{"code": "cur.execute(\"SELECT * FROM t WHERE id = \" + uid)", "language": "python", "label": 1}"#,
        r#"{"code": "cur.execute(\"SELECT * FROM t WHERE id = %s\", (uid,))", "language": "python", "label": 0}"#,
        r#"{"code": "strcpy(buf, argv[1]);", "language": "c", "label": 1}"#,
        r#"{"code": "snprintf(buf, sizeof buf, \"%s\", argv[1]);", "language": "c", "label": 0}"#,
    ]
    .join("\n");
    write(d.path(), "e.jsonl", &data);
    let out = run(&["eval", "--data", "e.jsonl", "--format", "json"], d.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["overall"]["n"], 4);
    assert_eq!(v["overall"]["roc_auc"], 1.0);
    assert!(v["per_language"]["python"]["brier"].is_number());
    assert!(v["per_language"]["c"]["pr_auc"].is_number());
    write(d.path(), "bad.jsonl", "{\"code\": \"x\", \"label\": 3}\n");
    let out = run(&["eval", "--data", "bad.jsonl"], d.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

#[test]
fn a_corrupt_model_file_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "ok.py", SAFE_PY);
    write(d.path(), "m.grm", "GRMODEL\0garbage");
    let out = run(&["score", "--model", "m.grm", "ok.py"], d.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("m.grm") && err.contains("model"), "{err}");
}
