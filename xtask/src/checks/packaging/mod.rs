//! `cargo xtask ci --only packaging`: the container images, the platform
//! manifests in `infra/`, and how they fit the workspace.
//!
//! - hadolint over `Dockerfile.*`, yamllint over `infra/`: no findings;
//! - each `Dockerfile.<dir>` against the binary of the package in `<dir>/`
//!   (names from `cargo metadata`, port from the binary's `--help`);
//! - Cloud Run, ECS and Kubernetes manifests against the binaries' env
//!   vars, ports and probe paths, and against the Terraform modules;
//! - `kubectl apply --dry-run=server` of `infra/` against a real control
//!   plane, and the controller's user refused the examples;
//! - the ECS task definitions registered, and the README's one-shot
//!   `aws ecs run-task` run, against moto;
//! - the Cloud Run YAML deployed with the real gcloud, by the commands of
//!   its README, against a recording fake of the Cloud Run Admin API.
//!
//! `cargo xtask ci --only lambda` ([`lambda`]) builds and runs the Lambda
//! packages.

pub mod cloudrun_gcloud;
pub mod dockerfile;
pub mod dry_run;
pub mod ecs_moto;
pub mod infra;
pub mod lambda;
pub mod lint;
pub mod manifests;
pub mod workspace;

use anyhow::{Context as _, Result, bail};

use self::workspace::Workspace;
use crate::ci::Outcome;
use crate::tools;

pub fn step() -> Result<Outcome> {
    let repo = crate::checks::terraform::repo_root();
    let ws = Workspace::load(&repo)?;
    let interfaces = ws.interfaces()?;
    let mut checks = 0;
    let mut problems = Vec::new();

    // Every shipped binary has its Dockerfile, and each agrees with it.
    let mut dockerfiles = Vec::new();
    for interface in &interfaces {
        let name = format!("Dockerfile.{}", interface.binary.dir);
        let text = std::fs::read_to_string(repo.join(&name))
            .with_context(|| format!("{} ships, so {name} must exist", interface.binary.name))?;
        problems.extend(
            dockerfile::check(&text, &ws, interface)
                .into_iter()
                .map(|p| format!("{name}: {p}")),
        );
        dockerfiles.push(name);
        checks += 1;
    }
    let lint = tools::python::LINT.ensure()?;
    lint::hadolint(&lint, &repo, &dockerfiles)?;
    lint::yamllint(&lint, &repo)?;
    checks += 2;

    let found = infra::check(&repo, &interfaces)?;
    checks += 1;
    problems.extend(found);
    if !problems.is_empty() {
        bail!("{} problem(s):\n{}", problems.len(), problems.join("\n"));
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let dry = runtime.block_on(dry_run::run(&repo))?;
    checks += 2;

    let aws = tools::python::AWS.ensure()?;
    let scratch = tempfile::tempdir()?;
    checks += ecs_moto::run(&repo, scratch.path(), &aws)?;
    let mut notes = Vec::new();
    let mut skipped = 0;
    match cloudrun_gcloud::run(&repo, scratch.path(), &interfaces)? {
        cloudrun_gcloud::Ran::Checked(n) => checks += n,
        cloudrun_gcloud::Ran::Skipped(why) => {
            crate::checks::terraform::loud_skip(
                "infra/cloudrun/ deployed with gcloud",
                &why,
                "the same rules over the YAML files themselves",
            );
            skipped += 1;
            notes.push(format!("Cloud Run YAML through gcloud SKIPPED: {why}"));
        }
    }

    notes.insert(
        0,
        format!(
            "{} objects accepted by the API server, {} examples refused to the controller",
            dry.accepted, dry.refused_to_controller
        ),
    );
    Ok(Outcome {
        tests_passed: checks,
        tests_ignored: skipped,
        note: Some(notes.join("; ")),
    })
}
