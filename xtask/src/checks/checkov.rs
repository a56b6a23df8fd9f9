//! `cargo xtask ci --only checkov`: checkov over `terraform/` and `infra/`,
//! with the project's custom policies (`terraform/policies/checkov`).
//! Passes only with no failed check, no file checkov could not parse, a
//! reason written inline for every skipped check
//! (`#checkov:skip=CKV_...:reason`), and every custom policy failing on
//! its fixture (`terraform/policies/checkov/tests`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::ci::Outcome;
use crate::tools;

/// The custom policies, and the fixture that must break each of them.
const POLICIES: &str = "terraform/policies/checkov";
const FIXTURES: &str = "terraform/policies/checkov/tests";

/// What checkov's JSON report of one directory says.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub passed: usize,
    pub failed: Vec<String>,
    /// The IDs of the failed checks.
    pub failed_ids: BTreeSet<String>,
    pub skipped: Vec<String>,
    pub unexplained_skips: Vec<String>,
    pub parsing_errors: Vec<String>,
}

/// The placeholder checkov records when a skip comment has no reason.
const NO_REASON: &str = "No comment provided";

/// Reads checkov's `-o json` output: one report object, or a list of them
/// (one per framework), or a bare summary when nothing was scanned.
pub fn parse_report(json: &str) -> Result<Findings> {
    let value: Value = serde_json::from_str(json).context("checkov printed no JSON")?;
    let reports = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut findings = Findings::default();
    for report in &reports {
        let framework = report["check_type"].as_str().unwrap_or("?");
        let results = &report["results"];
        let entries = |key: &str| results[key].as_array().cloned().unwrap_or_default();
        let describe = |c: &Value| {
            format!(
                "[{framework}] {} {} ({}:{})",
                c["check_id"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
                c["file_line_range"]
                    .as_array()
                    .and_then(|r| r.first())
                    .map(Value::to_string)
                    .unwrap_or_default(),
            )
        };
        findings.passed += entries("passed_checks").len();
        findings.failed_ids.extend(
            entries("failed_checks")
                .iter()
                .filter_map(|c| c["check_id"].as_str().map(str::to_owned)),
        );
        findings
            .failed
            .extend(entries("failed_checks").iter().map(|c| {
                format!(
                    "{}: {}",
                    describe(c),
                    c["check_name"].as_str().unwrap_or("")
                )
            }));
        for skip in entries("skipped_checks") {
            let reason = skip["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or("")
                .trim();
            if reason.is_empty() || reason == NO_REASON {
                findings.unexplained_skips.push(describe(&skip));
            } else {
                findings
                    .skipped
                    .push(format!("{}: {reason}", describe(&skip)));
            }
        }
        findings.parsing_errors.extend(
            results["parsing_errors"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.to_string())
                }),
        );
        if let Some(n) = report["parsing_errors"].as_u64().filter(|n| *n > 0) {
            findings
                .parsing_errors
                .push(format!("{n} file(s) checkov could not parse"));
        }
    }
    Ok(findings)
}

fn scan(bin: &Path, dir: &str, extra: &[&str]) -> Result<Findings> {
    let mut cmd = Command::new(bin.join("checkov"));
    cmd.args([
        "--directory",
        dir,
        "--external-checks-dir",
        POLICIES,
        "--output",
        "json",
        "--compact",
        "--soft-fail",
        "--skip-download",
    ])
    .args(extra)
    // No platform calls, no prompts, no colour codes in the report.
    .env("BC_SKIP_MAPPING", "TRUE")
    .env("ANSI_COLORS_DISABLED", "1")
    .env_remove("BC_API_KEY");
    let output = cmd.output().context("cannot start checkov")?;
    if !output.status.success() {
        bail!(
            "checkov failed on {dir}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_report(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading checkov's report on {dir}"))
}

pub fn step() -> Result<Outcome> {
    let bin = tools::python::CHECKOV.ensure()?;
    let mut problems = Vec::new();
    let mut passed = 0;
    let mut notes = Vec::new();
    for dir in ["terraform", "infra"] {
        if !Path::new(dir).is_dir() {
            notes.push(format!("{dir}/ absent"));
            continue;
        }
        // The fixtures break every policy on purpose: checked below.
        let findings = scan(&bin, dir, &["--skip-path", "policies/checkov/tests"])?;
        eprintln!(
            "checkov {dir}/: {} passed, {} failed, {} skipped with a reason, {} without, {} parsing errors",
            findings.passed,
            findings.failed.len(),
            findings.skipped.len(),
            findings.unexplained_skips.len(),
            findings.parsing_errors.len()
        );
        for skip in &findings.skipped {
            eprintln!("  skipped {skip}");
        }
        passed += findings.passed;
        notes.push(format!(
            "{dir}/ {} passed, {} skipped",
            findings.passed,
            findings.skipped.len()
        ));
        problems.extend(findings.failed.iter().map(|f| format!("failed {f}")));
        problems.extend(
            findings
                .unexplained_skips
                .iter()
                .map(|s| format!("skipped without a reason (write #checkov:skip=ID:why) {s}")),
        );
        problems.extend(
            findings
                .parsing_errors
                .iter()
                .map(|p| format!("not parsed: {p}")),
        );
    }
    let ids = policy_ids(Path::new(POLICIES))?;
    let fixtures = scan(
        &bin,
        FIXTURES,
        &[
            "--framework",
            "terraform",
            "--check",
            &ids.iter().cloned().collect::<Vec<_>>().join(","),
        ],
    )?;
    let uncaught: Vec<_> = ids.difference(&fixtures.failed_ids).collect();
    if !uncaught.is_empty() {
        problems.push(format!(
            "custom policies that catch nothing in {FIXTURES}: {uncaught:?}"
        ));
    }
    eprintln!(
        "checkov: {} custom policies in {POLICIES}, each failing on its fixture",
        ids.len()
    );
    passed += ids.len() - uncaught.len();
    if !problems.is_empty() {
        bail!(
            "checkov: {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(Outcome {
        tests_passed: passed,
        note: Some(notes.join(", ")),
        ..Outcome::default()
    })
}

/// The `metadata.id` of every custom policy (one YAML file each).
fn policy_ids(dir: &Path) -> Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let policy: serde_json::Value =
                serde_saphyr::from_str(&std::fs::read_to_string(&path)?)
                    .with_context(|| format!("parsing {}", path.display()))?;
            let id = policy["metadata"]["id"]
                .as_str()
                .with_context(|| format!("{} has no metadata.id", path.display()))?;
            ids.insert(id.to_owned());
        }
    }
    if ids.is_empty() {
        bail!("no custom policy in {}", dir.display());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_failures_reasoned_and_unreasoned_skips() {
        let report = r#"[{"check_type":"terraform","results":{
            "passed_checks":[{"check_id":"CKV_AWS_1"}],
            "failed_checks":[{"check_id":"CKV_AWS_2","check_name":"Encrypt it","resource":"aws_x.y","file_path":"/main.tf","file_line_range":[3,9]}],
            "skipped_checks":[
              {"check_id":"CKV_AWS_3","check_result":{"result":"SKIPPED","suppress_comment":"rotated by the issuer"}},
              {"check_id":"CKV_AWS_4","check_result":{"result":"SKIPPED","suppress_comment":"No comment provided"}}],
            "parsing_errors":[]},
            "summary":{"passed":1,"failed":1,"skipped":2,"parsing_errors":0}},
          {"check_type":"kubernetes","results":{"passed_checks":[{"check_id":"CKV_K8S_1"}],"failed_checks":[],"skipped_checks":[],"parsing_errors":["/bad.yaml"]}}]"#;
        let findings = parse_report(report).expect("parses");
        assert_eq!(findings.passed, 2);
        assert_eq!(
            findings.failed,
            ["[terraform] CKV_AWS_2 aws_x.y (/main.tf:3): Encrypt it"]
        );
        assert_eq!(findings.skipped.len(), 1);
        assert!(findings.skipped[0].ends_with("rotated by the issuer"));
        assert_eq!(findings.unexplained_skips.len(), 1);
        assert_eq!(
            findings.failed_ids,
            BTreeSet::from(["CKV_AWS_2".to_owned()])
        );
        assert!(findings.unexplained_skips[0].contains("CKV_AWS_4"));
        assert_eq!(findings.parsing_errors, ["/bad.yaml"]);
    }

    #[test]
    fn an_empty_directory_is_a_bare_summary() {
        let findings = parse_report(
            r#"{"passed":0,"failed":0,"skipped":0,"parsing_errors":0,"resource_count":0,"checkov_version":"3.3.30"}"#,
        )
        .expect("parses");
        assert_eq!(findings, Findings::default());
    }

    #[test]
    fn every_custom_policy_has_an_id() {
        let ids = policy_ids(&crate::checks::terraform::repo_root().join(POLICIES)).expect("ids");
        assert!(ids.len() >= 10, "{ids:?}");
        assert!(
            ids.iter().all(|id| id.starts_with("CKV2_ROBOT_")),
            "{ids:?}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_report("checkov crashed").is_err());
    }
}
