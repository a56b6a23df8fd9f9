//! `kubectl apply --dry-run=server` of infra/ against a real control plane
//! (testenv: kube-apiserver + etcd with our CRDs and infra/rbac applied):
//! the API server validates every field (kubectl's strict field
//! validation) and, for the Kubernetes manifests, the restricted Pod
//! Security Standard. Then the examples again as the controller's user,
//! which infra/rbac must not allow to create them.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

use testenv::{ControlPlane, CrdSet, Options};

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot start {cmd:?}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the dry runs found: objects accepted, and creations refused to the
/// controller.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: usize,
    pub refused_to_controller: usize,
}

/// Runs every dry run; `repo` is the repository root.
pub async fn run(repo: &Path) -> Result<Report> {
    testenv::install_crypto_provider();
    let cp = ControlPlane::start(Options {
        crds: CrdSet::Ours,
        ..Options::default()
    })
    .await
    .context("starting the control plane")?;
    let infra = repo.join("infra");
    let mut report = Report::default();

    // The namespaces for real: the namespaced objects need them to exist.
    for namespace in [
        "kubernetes/namespace.yaml",
        "examples/namespaced/namespace.yaml",
    ] {
        let out = output(
            cp.kubectl()
                .args(["apply", "-f"])
                .arg(infra.join(namespace)),
        )?;
        if !out.status.success() {
            bail!("kubectl apply {namespace}: {}", text(&out));
        }
    }

    let mut admin = cp.kubectl();
    // Server-side apply: testenv created the CRDs and RBAC that way.
    admin.args([
        "apply",
        "--server-side",
        "--field-manager=robot-byoc-ci",
        "--dry-run=server",
        "--validate=strict",
        "--recursive",
    ]);
    for dir in ["crds", "rbac", "examples", "kubernetes"] {
        admin.arg("-f").arg(infra.join(dir));
    }
    let out = output(&mut admin)?;
    let said = text(&out);
    if !out.status.success() {
        bail!("kubectl apply --dry-run=server as admin failed:\n{said}");
    }
    // Pod Security (restricted) and deprecation warnings included.
    if said.contains("Warning:") {
        bail!("the API server warned:\n{said}");
    }
    report.accepted = said
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    eprintln!("{said}");

    // The controller may patch Robots and ProviderConfigs, never create them.
    let examples = infra.join("examples");
    let mut paths = Vec::new();
    for dir in [examples.clone(), examples.join("namespaced")] {
        for entry in std::fs::read_dir(dir)? {
            paths.push(entry?.path());
        }
    }
    for path in paths {
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = output(
            Command::new(testenv::kubectl_path()?)
                .arg(format!(
                    "--kubeconfig={}",
                    cp.controller_kubeconfig_path().display()
                ))
                .args(["apply", "--dry-run=server", "-f"])
                .arg(&path),
        )?;
        let said = text(&out);
        if out.status.success() || !said.contains("forbidden") {
            bail!(
                "the controller's user could create {} ({}): {said}",
                path.display(),
                out.status
            );
        }
        report.refused_to_controller += 1;
    }
    Ok(report)
}
