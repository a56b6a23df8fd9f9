//! infra/ecs/ used the way its README says, against moto's ECS on
//! loopback: both task definitions registered with the aws CLI (whose
//! parameter validation rejects a misspelled field), then the README's
//! `aws ecs run-task` command run verbatim through a shell, and the task
//! it started inspected.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::infra::readme_run_task;
use crate::checks::terraform::cli::run_captured;
use crate::checks::terraform::moto::{Aws, Moto, REGION};

/// moto's default account.
const ACCOUNT_ID: &str = "123456789012";
const NAME: &str = "robot-byoc";

/// Replaces each `${VAR}` with its value; an unknown or unterminated
/// placeholder is an error (it would reach AWS verbatim).
pub fn substitute(text: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unterminated placeholder at `{}`", &rest[start..]))?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .with_context(|| format!("unknown placeholder ${{{name}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `${VAR}` names a text uses.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("${")
        .filter_map(|(at, _)| {
            let after = &text[at + 2..];
            Some(after[..after.find('}')?].to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Registers both task definitions and runs the README's one-shot pass.
/// Returns the number of checks made.
pub fn run(repo: &Path, scratch: &Path, venv_bin: &Path) -> Result<usize> {
    let moto = Moto::start(venv_bin, &scratch.join("moto.log"))?;
    let aws = Aws {
        venv_bin,
        endpoint: &moto.endpoint,
    };
    let vpc = aws.json(&["ec2", "create-vpc", "--cidr-block", "10.42.0.0/16"])?;
    let vpc_id = vpc["Vpc"]["VpcId"].as_str().context("no VpcId")?.to_owned();
    // As Terraform's VPC has it (Cloud Map private DNS needs it); moto's
    // RunTask also fails on a VPC without DNS host names.
    let mut modify = Command::new(venv_bin.join("aws"));
    aws.env(&mut modify);
    run_captured(modify.args([
        "ec2",
        "modify-vpc-attribute",
        "--vpc-id",
        &vpc_id,
        "--enable-dns-hostnames",
        r#"{"Value":true}"#,
    ]))?;
    let subnet = aws.json(&[
        "ec2",
        "create-subnet",
        "--vpc-id",
        &vpc_id,
        "--cidr-block",
        "10.42.1.0/24",
    ])?;
    let subnet_id = subnet["Subnet"]["SubnetId"]
        .as_str()
        .context("no SubnetId")?
        .to_owned();
    let sg = aws.json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "robot-byoc-controller",
        "--description",
        "controller",
        "--vpc-id",
        &vpc_id,
    ])?;
    let sg_id = sg["GroupId"].as_str().context("no GroupId")?.to_owned();
    aws.json(&["ecs", "create-cluster", "--cluster-name", NAME])?;

    let vars: BTreeMap<&str, String> = [
        ("NAME", NAME.to_owned()),
        ("REGION", REGION.to_owned()),
        ("ACCOUNT_ID", ACCOUNT_ID.to_owned()),
        ("CPU_ARCHITECTURE", "X86_64".to_owned()),
        (
            "SERVER_IMAGE",
            "registry.example/robot-server:0.1.0".to_owned(),
        ),
        (
            "CONTROLLER_IMAGE",
            "registry.example/robot-controller:0.1.0".to_owned(),
        ),
        (
            "SERVICE_DISCOVERY_NAMESPACE",
            "robot-byoc.internal".to_owned(),
        ),
        (
            "KUBECONFIG_SECRET_ARN",
            format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:robot-byoc-kubeconfig"),
        ),
        (
            "SERVER_TOKEN_SECRET_ARN",
            format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:robot-byoc-server-token"),
        ),
        // Not an Upbound control plane here.
        ("UPBOUND_TOKEN_SOURCE", String::new()),
    ]
    .into();
    let readme = std::fs::read_to_string(repo.join("infra/ecs/README.md"))?;
    let mut checks = 0;
    for role in ["server", "controller"] {
        let path = repo.join(format!("infra/ecs/{role}.task-definition.json"));
        let text = std::fs::read_to_string(&path)?;
        for name in placeholders(&text) {
            ensure!(
                readme.contains(&format!("`{name}`")),
                "{}: placeholder ${{{name}}} is not explained in infra/ecs/README.md",
                path.display()
            );
        }
        let filled = scratch.join(format!("{role}.json"));
        std::fs::write(&filled, substitute(&text, &vars)?)?;
        let registered = aws.json(&[
            "ecs",
            "register-task-definition",
            "--cli-input-json",
            &format!("file://{}", filled.display()),
        ])?;
        let family = &registered["taskDefinition"]["family"];
        ensure!(
            *family == format!("{NAME}-{role}"),
            "{}: registered family {family}",
            path.display()
        );
        checks += 1;
    }

    // The README's command, verbatim, with the shell variables it names.
    let command = readme_run_task(&readme).context("infra/ecs/README.md has no run-task block")?;
    let mut shell = Command::new("bash");
    shell
        .args(["-euo", "pipefail", "-c", &command])
        .env("REGION", REGION)
        .env("NAME", NAME)
        .env("SUBNET_IDS", &subnet_id)
        .env("CONTROLLER_SECURITY_GROUP", &sg_id);
    aws.env(&mut shell);
    let ran: Value = serde_json::from_str(&run_captured(&mut shell)?)
        .context("the README's aws ecs run-task printed no JSON")?;
    let tasks = ran["tasks"].as_array().cloned().unwrap_or_default();
    if tasks.len() != 1 || ran["failures"].as_array().is_some_and(|f| !f.is_empty()) {
        bail!(
            "run-task started {} tasks; failures {}",
            tasks.len(),
            ran["failures"]
        );
    }
    let task = &tasks[0];
    ensure!(
        task["overrides"]["containerOverrides"][0]["command"] == serde_json::json!(["once"]),
        "the README's task does not run `once`: {}",
        task["overrides"]
    );
    ensure!(
        task["taskDefinitionArn"]
            .as_str()
            .is_some_and(|arn| arn.contains(&format!(":task-definition/{NAME}-controller:"))),
        "the README's task runs {}",
        task["taskDefinitionArn"]
    );
    checks += 1;
    drop(moto);
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_placeholders_and_refuses_the_rest() {
        let vars: BTreeMap<&str, String> = [("A", "1".to_owned()), ("B", "two".to_owned())].into();
        assert_eq!(substitute("x${A}y${B}${A}", &vars).unwrap(), "x1ytwo1");
        assert_eq!(substitute("$A {B} $", &vars).unwrap(), "$A {B} $");
        assert!(
            substitute("${C}", &vars)
                .unwrap_err()
                .to_string()
                .contains("${C}")
        );
        assert!(
            substitute("${A", &vars)
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
        assert_eq!(placeholders("${B} ${A} ${B} ${"), ["A", "B"]);
    }
}
