//! The READMEs' inputs and outputs tables, by terraform-docs itself
//! (`terraform/.terraform-docs.yml`, `--output-check`), and every variable
//! and output described, every variable typed (from `terraform-docs json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::cli::run_captured;
use crate::tools;

/// The directories whose README.md carries the tables.
pub const DOCUMENTED: &[&str] = &[
    "terraform/modules/aws",
    "terraform/modules/gcp",
    "terraform/examples/aws",
    "terraform/examples/gcp",
];

/// terraform-docs, built from the Go module proxy into the cache.
pub fn terraform_docs() -> Result<PathBuf> {
    tools::go_tool(
        "github.com/terraform-docs/terraform-docs",
        "v0.20.0",
        "github.com/terraform-docs/terraform-docs",
        "terraform-docs",
    )
}

/// Checks every documented directory; returns how many checks passed.
pub fn check(bin: &Path, repo: &Path) -> Result<usize> {
    let config = repo.join("terraform/.terraform-docs.yml");
    let mut problems = Vec::new();
    for dir in DOCUMENTED {
        let out = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .arg("--output-check")
            .arg(repo.join(dir))
            .output()
            .context("cannot run terraform-docs")?;
        if !out.status.success() {
            problems.push(format!(
                "{dir}/README.md is out of date: run `terraform-docs -c terraform/.terraform-docs.yml {dir}`\n{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let json: Value = serde_json::from_str(&run_captured(
            Command::new(bin)
                .arg("json")
                .arg("--sort=false")
                .arg(repo.join(dir)),
        )?)
        .context("terraform-docs json printed no JSON")?;
        problems.extend(undocumented(dir, &json));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(DOCUMENTED.len() * 2)
}

/// Variables without a type or a description, outputs without one.
fn undocumented(dir: &str, json: &Value) -> Vec<String> {
    let described = |v: &Value| {
        v["description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty())
    };
    let items = |key: &str| json[key].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for input in items("inputs") {
        let name = input["name"].as_str().unwrap_or("?");
        if !described(&input) {
            out.push(format!("{dir}: variable {name} has no description"));
        }
        if input["type"].as_str().is_none_or(|t| t == "any") {
            out.push(format!("{dir}: variable {name} has no type"));
        }
    }
    for output in items("outputs") {
        if !described(&output) {
            let name = output["name"].as_str().unwrap_or("?");
            out.push(format!("{dir}: output {name} has no description"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untyped_and_undescribed_items_are_reported() {
        let json = serde_json::json!({
            "inputs": [
                {"name": "ok", "type": "string", "description": "Fine."},
                {"name": "bare", "type": "any", "description": null},
            ],
            "outputs": [{"name": "out", "description": ""}],
        });
        assert_eq!(
            undocumented("m", &json),
            [
                "m: variable bare has no description",
                "m: variable bare has no type",
                "m: output out has no description",
            ]
        );
    }
}
