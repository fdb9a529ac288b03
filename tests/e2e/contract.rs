//! The uplink's written contract: every batch example in docs/uplink.md is valid against
//! docs/schema/batch.schema.json (python3 jsonschema, the validator the test receiver uses).

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::repo_root;

/// The ```json blocks of a Markdown file.
fn json_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```json") => cur = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                out.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn validate(schema: &str, doc: &str) -> Result<(), String> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             s = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(s)\n\
             v = jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())\n\
             errs = [e.message for e in v.iter_errors(json.load(sys.stdin))]\n\
             print('\\n'.join(errs)); sys.exit(1 if errs else 0)",
        ])
        .arg(repo_root().join(schema))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_batch_example_in_the_docs_is_valid_against_the_schema() {
    let text = std::fs::read_to_string(repo_root().join("docs/uplink.md")).expect("docs/uplink.md");
    let batches: Vec<String> = json_blocks(&text)
        .into_iter()
        .filter(|b| b.contains("\"idempotency_key\""))
        .collect();
    assert!(!batches.is_empty(), "docs/uplink.md has a batch example");
    for b in &batches {
        serde_json::from_str::<serde_json::Value>(b).expect("the example is JSON");
        validate("docs/schema/batch.schema.json", b).unwrap_or_else(|e| panic!("{e}\n{b}"));
    }
    // The schema is not a rubber stamp: a batch without its seq is refused.
    let broken = batches[0].replacen("\"seq\": ", "\"sequence_number\": ", 1);
    assert!(validate("docs/schema/batch.schema.json", &broken).is_err());
}
