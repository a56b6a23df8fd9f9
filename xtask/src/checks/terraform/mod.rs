//! `cargo xtask ci --only terraform`: the Terraform modules and examples,
//! proven as far as this machine allows.
//!
//! - `terraform fmt -check -recursive`;
//! - README tables in sync with `variables.tf` / `outputs.tf`, every
//!   variable typed and described;
//! - every `ROBOT_*` env var one the binaries read;
//! - the GCP module's structural rules (parsed HCL);
//! - the variable validation rules of both modules, with real terraform;
//! - `terraform validate` of the AWS example and module, providers from a
//!   local filesystem mirror; then the AWS example applied against moto,
//!   its `aws ecs run-task` command run, and destroyed;
//! - `terraform validate` of the GCP example, or a loud skip when no
//!   google provider is on the machine.

pub mod aws_e2e;
pub mod cli;
pub mod docs;
pub mod env_contract;
pub mod gcp_rules;
pub mod hcl_model;
pub mod moto;
pub mod validation;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use self::cli::{Mirrors, Terraform, copy_tree, run_captured};
use self::hcl_model::TfModule;
use crate::ci::{Outcome, fmt_duration};
use crate::tools;

/// The repository's root (xtask's parent).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Says loudly that something was not checked, and why.
pub(crate) fn loud_skip(what: &str, why: &str, instead: &str) {
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPED: {what}\n!! because: {why}\n!! checked instead: {instead}\n{bar}\n"
    );
}

fn all_tf_sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() && !name.starts_with('.') {
            all_tf_sources(&path, out)?;
        } else if name.ends_with(".tf") {
            let text = std::fs::read_to_string(&path)?;
            out.push((path, text));
        }
    }
    Ok(())
}

/// `terraform init` + `validate` of `dir` (inside a scratch copy).
fn validate(terraform: &Terraform, dir: &Path) -> Result<()> {
    run_captured(terraform.command(dir).args([
        "init",
        "-backend=false",
        "-input=false",
        "-no-color",
    ]))
    .with_context(|| format!("terraform init in {}", dir.display()))?;
    run_captured(terraform.command(dir).args(["validate", "-no-color"]))
        .with_context(|| format!("terraform validate in {}", dir.display()))?;
    Ok(())
}

pub fn step() -> Result<Outcome> {
    let repo = repo_root();
    let scratch = tempfile::Builder::new()
        .prefix("robot-byoc-terraform-")
        .tempdir()
        .context("creating a scratch directory")?;
    let mirrors = Mirrors::discover()?;
    let terraform = Terraform::new(&scratch.path().join("terraformrc"), &mirrors.cli_config())?;
    eprintln!(
        "terraform: {}; provider mirrors: {} ({})",
        terraform.version()?,
        mirrors.describe(),
        mirrors
            .roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut outcome = Outcome::default();
    let mut notes = Vec::new();

    run_captured(terraform.command(&repo).args([
        "fmt",
        "-check",
        "-recursive",
        "-diff",
        "-no-color",
        "terraform",
    ]))
    .context("terraform fmt: run `terraform fmt -recursive terraform` to fix")?;
    eprintln!("terraform: fmt ok");
    outcome.tests_passed += 1;

    for dir in docs::DOCUMENTED {
        docs::check(&repo.join(dir))?;
        outcome.tests_passed += 1;
    }
    eprintln!(
        "terraform: README tables match variables.tf/outputs.tf in {} directories",
        docs::DOCUMENTED.len()
    );

    let mut sources = Vec::new();
    all_tf_sources(&repo.join("terraform"), &mut sources)?;
    let mut unknown = Vec::new();
    for (path, text) in &sources {
        for problem in
            env_contract::unknown(env_contract::robot_names(text).iter().map(String::as_str))
        {
            unknown.push(format!("{}: {problem}", path.display()));
        }
    }
    if !unknown.is_empty() {
        bail!("env vars the binaries do not read:\n{}", unknown.join("\n"));
    }
    eprintln!(
        "terraform: every ROBOT_* env var in {} .tf files is in the contract",
        sources.len()
    );
    outcome.tests_passed += 1;

    let gcp = TfModule::load(&repo.join("terraform/modules/gcp"))?;
    let mut broken = Vec::new();
    for (rule, result) in gcp_rules::check(&gcp) {
        match result {
            Ok(()) => {
                eprintln!("terraform: gcp rule ok: {rule}");
                outcome.tests_passed += 1;
            }
            Err(e) => broken.push(format!("{rule}: {e:#}")),
        }
    }
    if !broken.is_empty() {
        bail!("GCP module rules broken:\n{}", broken.join("\n"));
    }

    let cases_dir = scratch.path().join("validation");
    let cases = validation::run(&terraform, &repo, &cases_dir)?;
    eprintln!("terraform: {cases} variable validation cases behave");
    outcome.tests_passed += cases;

    if mirrors.has("hashicorp/aws") {
        let copy = scratch.path().join("validate");
        copy_tree(&repo.join("terraform"), &copy)?;
        for dir in ["examples/aws", "modules/aws"] {
            validate(&terraform, &copy.join(dir))?;
            eprintln!("terraform: validate ok: terraform/{dir}");
            outcome.tests_passed += 1;
        }
        let venv = tools::python::AWS.ensure()?;
        let report = aws_e2e::run(&terraform, &repo, &scratch.path().join("e2e"), &venv)?;
        eprintln!(
            "terraform: AWS example against moto: {} resources applied in {}, run-task ok, \
             switched to the Lambda mode ({} resources) in {}, destroyed in {}",
            report.resources,
            fmt_duration(report.apply),
            report.resources_lambda,
            fmt_duration(report.switch),
            fmt_duration(report.destroy)
        );
        outcome.tests_passed += report.checks;
        notes.push(format!(
            "aws example vs moto: apply {} ({} resources), switch to lambda {}, destroy {}{}",
            fmt_duration(report.apply),
            report.resources,
            fmt_duration(report.switch),
            fmt_duration(report.destroy),
            if aws_e2e::MOTO_GAPS.is_empty() {
                String::new()
            } else {
                format!(", not in moto: {}", aws_e2e::MOTO_GAPS.join(" "))
            }
        ));
        for unstored in aws_e2e::MOTO_UNSTORED {
            eprintln!("terraform: moto does not keep {unstored}: checked in the state instead");
        }
    } else {
        loud_skip(
            "terraform validate of terraform/examples/aws and the AWS apply against moto",
            &format!(
                "no hashicorp/aws provider in a filesystem mirror (searched {})",
                mirrors.searched
            ),
            "fmt, README tables, env names, variable validation, checkov",
        );
        outcome.tests_ignored += 2;
        notes.push("AWS validate and apply SKIPPED: no aws provider mirror".to_owned());
    }

    if mirrors.has("hashicorp/google") {
        let copy = scratch.path().join("validate-gcp");
        copy_tree(&repo.join("terraform"), &copy)?;
        for dir in ["examples/gcp", "modules/gcp"] {
            validate(&terraform, &copy.join(dir))?;
            eprintln!("terraform: validate ok: terraform/{dir}");
            outcome.tests_passed += 1;
        }
    } else {
        loud_skip(
            "terraform validate of terraform/examples/gcp and terraform/modules/gcp",
            &format!(
                "no hashicorp/google provider in a filesystem mirror (searched {}; found: {})",
                mirrors.searched,
                mirrors.describe()
            ),
            "fmt, README tables, env names, variable validation with terraform, the structural rules above, checkov",
        );
        outcome.tests_ignored += 1;
        notes.push("GCP validate SKIPPED: no google provider on this machine".to_owned());
    }

    outcome.note = Some(notes.join("; "));
    Ok(outcome)
}
