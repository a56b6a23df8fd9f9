//! yamllint over infra/ (the repository's .yamllint, warnings fail too) and
//! hadolint over the Dockerfiles: each must report nothing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Runs `tool` and fails with its whole report unless it exits 0 silent.
fn silent(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !report.trim().is_empty() {
        bail!("{what} ({}):\n{report}", out.status);
    }
    Ok(())
}

pub fn yamllint(venv_bin: &Path, repo: &Path) -> Result<()> {
    let config = repo.join(".yamllint");
    if !config.is_file() {
        bail!("{} is missing", config.display());
    }
    silent(
        Command::new(venv_bin.join("yamllint"))
            .args(["--strict", "--format", "parsable", "--config-file"])
            .arg(&config)
            .arg("infra")
            .current_dir(repo),
        "yamllint --strict infra/",
    )
}

pub fn hadolint(venv_bin: &Path, repo: &Path, dockerfiles: &[String]) -> Result<()> {
    silent(
        Command::new(venv_bin.join("hadolint"))
            .args(["--no-color", "--failure-threshold", "style"])
            .args(dockerfiles)
            .current_dir(repo),
        "hadolint",
    )
}
