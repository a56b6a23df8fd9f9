//! The variable validation rules of both modules, exercised by real
//! terraform: each case plans a root holding only the module's
//! `variables.tf` (no provider needed, so the GCP rules run too) and
//! expects either success or the given error messages.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::cli::Terraform;

pub struct Case {
    pub module: &'static str,
    pub what: &'static str,
    pub vars: Value,
    /// Empty: the plan must succeed. Otherwise each text must appear in
    /// some error.
    pub errors: &'static [&'static str],
}

fn base(module: &str) -> Value {
    match module {
        "aws" => {
            json!({ "server_image": "registry.example/robot-server:1", "controller_image": "registry.example/robot-controller:1" })
        }
        _ => json!({
            "project_id": "robot-byoc-test",
            "region": "europe-west1",
            "server_image": "europe-west1-docker.pkg.dev/p/r/robot-server:1",
            "controller_image": "europe-west1-docker.pkg.dev/p/r/robot-controller:1",
        }),
    }
}

fn with(module: &str, extra: Value) -> Value {
    let mut vars = base(module);
    if let (Some(map), Some(extra)) = (vars.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    vars
}

pub fn cases() -> Vec<Case> {
    let aws = |what, extra: Value, errors| Case {
        module: "aws",
        what,
        vars: with("aws", extra),
        errors,
    };
    let gcp = |what, extra: Value, errors| Case {
        module: "gcp",
        what,
        vars: with("gcp", extra),
        errors,
    };
    vec![
        aws("defaults", json!({}), &[]),
        aws(
            "existing network and secret, Lambda, customer key",
            json!({
                "create_vpc": false, "vpc_id": "vpc-0abc", "private_subnet_ids": ["subnet-01", "subnet-02"],
                "create_kubeconfig_secret": false,
                "kubeconfig_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kc-AbCdEf",
                "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/1234",
                "controller_runtime": "lambda", "lambda_package_path": "target/lambda/robot-controller/bootstrap.zip",
                "leader_election": true, "control_plane_port": 6443,
            }),
            &[],
        ),
        aws(
            "no server image",
            json!({ "server_image": null }),
            &["\"server_image\" is not set"],
        ),
        aws(
            "no controller image",
            json!({ "controller_image": null }),
            &["\"controller_image\" is not set"],
        ),
        aws(
            "blank image",
            json!({ "server_image": " " }),
            &["server_image must be a non-empty"],
        ),
        aws(
            "image with a space",
            json!({ "controller_image": "a b" }),
            &["controller_image must be a non-empty"],
        ),
        aws(
            "upper-case name",
            json!({ "name": "Robot_BYOC" }),
            &["name must be 2-24 characters"],
        ),
        aws(
            "name too long",
            json!({ "name": "robot-byoc-with-a-long-name" }),
            &["name must be 2-24 characters"],
        ),
        aws(
            "existing VPC not named",
            json!({ "create_vpc": false }),
            &[
                "vpc_id (vpc-...) is required",
                "private_subnet_ids (subnet-...) must name",
            ],
        ),
        aws(
            "malformed subnet id",
            json!({ "create_vpc": false, "vpc_id": "vpc-0abc", "private_subnet_ids": ["sn-1"] }),
            &["private_subnet_ids (subnet-...) must name"],
        ),
        aws(
            "VPC too large",
            json!({ "vpc_cidr": "10.0.0.0/8" }),
            &["vpc_cidr must be an IPv4 CIDR"],
        ),
        aws(
            "not a CIDR",
            json!({ "vpc_cidr": "10.0.0.0" }),
            &["vpc_cidr must be an IPv4 CIDR"],
        ),
        aws(
            "five zones",
            json!({ "az_count": 5 }),
            &["az_count must be a whole number"],
        ),
        aws(
            "bad control plane CIDR",
            json!({ "control_plane_cidr_blocks": ["10.0.0.0/33"] }),
            &["control_plane_cidr_blocks must hold"],
        ),
        aws(
            "no control plane CIDR",
            json!({ "control_plane_cidr_blocks": [] }),
            &["control_plane_cidr_blocks must hold"],
        ),
        aws(
            "no AWS API CIDR",
            json!({ "aws_api_cidr_blocks": [] }),
            &["aws_api_cidr_blocks must hold"],
        ),
        aws(
            "AWS API CIDR malformed",
            json!({ "aws_api_cidr_blocks": ["0.0.0.0"] }),
            &["aws_api_cidr_blocks must hold"],
        ),
        aws(
            "server memory beyond Fargate's",
            json!({ "server_memory": 65536 }),
            &["server_memory must be from 512"],
        ),
        aws(
            "controller CPU 100",
            json!({ "controller_cpu": 100 }),
            &["controller_cpu must be one of"],
        ),
        aws(
            "unknown controller runtime",
            json!({ "controller_runtime": "fargate" }),
            &["controller_runtime must be"],
        ),
        aws(
            "port out of range",
            json!({ "control_plane_port": 70000 }),
            &["control_plane_port must be a TCP port"],
        ),
        aws(
            "bad namespace",
            json!({ "service_discovery_namespace": "Robot BYOC" }),
            &["service_discovery_namespace must be a DNS name"],
        ),
        aws(
            "existing secret not named",
            json!({ "create_kubeconfig_secret": false }),
            &["kubeconfig_secret_arn must be a Secrets Manager secret ARN"],
        ),
        aws(
            "kubeconfig write without a created secret",
            json!({
                "create_kubeconfig_secret": false,
                "kubeconfig_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kc-AbCdEf",
                "kubeconfig_version": 1,
            }),
            &["kubeconfig_version must be a positive number"],
        ),
        aws(
            "kubeconfig version zero",
            json!({ "kubeconfig_version": 0 }),
            &["kubeconfig_version must be a positive number"],
        ),
        aws(
            "KMS key not an ARN",
            json!({ "kms_key_arn": "alias/mine" }),
            &["kms_key_arn must be a KMS key ARN"],
        ),
        aws(
            "recovery window 3 days",
            json!({ "recovery_window_in_days": 3 }),
            &["recovery_window_in_days must be 0 or from 7 to 30"],
        ),
        aws(
            "retention CloudWatch refuses",
            json!({ "log_retention_in_days": 10 }),
            &["log_retention_in_days must be one of"],
        ),
        aws(
            "log KMS key not an ARN",
            json!({ "cloudwatch_log_group_kms_key_id": "key" }),
            &["cloudwatch_log_group_kms_key_id must be a KMS key ARN"],
        ),
        aws(
            "Fargate CPU 300",
            json!({ "server_cpu": 300 }),
            &["server_cpu must be one of"],
        ),
        aws(
            "controller memory 256",
            json!({ "controller_memory": 256 }),
            &["controller_memory must be from 512"],
        ),
        aws(
            "stop timeout beyond Fargate's",
            json!({ "stop_timeout": 200 }),
            &["stop_timeout must be from 2 to 120"],
        ),
        aws(
            "unknown architecture",
            json!({ "cpu_architecture": "arm" }),
            &["cpu_architecture must be X86_64 or ARM64"],
        ),
        aws(
            "unknown API group",
            json!({ "api_group": "robots.example.com" }),
            &["api_group must be auto"],
        ),
        aws(
            "bad lease namespace",
            json!({ "leader_election_namespace": "Kube_System" }),
            &["leader_election_namespace must be a Kubernetes namespace"],
        ),
        aws(
            "Lambda without package",
            json!({ "controller_runtime": "lambda" }),
            &["lambda_package_path must be the path of a .zip"],
        ),
        aws(
            "Lambda package not a zip",
            json!({ "controller_runtime": "lambda", "lambda_package_path": "bootstrap" }),
            &["lambda_package_path must be the path of a .zip"],
        ),
        aws(
            "Lambda architecture",
            json!({ "lambda_architecture": "amd64" }),
            &["lambda_architecture must be arm64 or x86_64"],
        ),
        aws(
            "schedule in words",
            json!({ "lambda_schedule_expression": "every 5 minutes" }),
            &["lambda_schedule_expression must be a rate"],
        ),
        aws(
            "Lambda timeout 1000",
            json!({ "lambda_timeout": 1000 }),
            &["lambda_timeout must be from 10 to 900"],
        ),
        aws(
            "Lambda memory 64",
            json!({ "lambda_memory_size": 64 }),
            &["lambda_memory_size must be from 128"],
        ),
        gcp("defaults", json!({}), &[]),
        gcp(
            "service runtime, Direct VPC, existing network and secret",
            json!({
                "controller_runtime": "service", "vpc_egress": "direct",
                "create_network": false, "network_name": "shared", "subnet_name": "run-egress",
                "create_nat": false, "create_kubeconfig_secret": false, "kubeconfig_secret_id": "kubeconfig",
                "kms_key_name": "projects/p/locations/europe/keyRings/r/cryptoKeys/k",
                "deletion_protection": false,
            }),
            &[],
        ),
        gcp(
            "no project",
            json!({ "project_id": null }),
            &["\"project_id\" is not set"],
        ),
        gcp(
            "no server image",
            json!({ "server_image": null }),
            &["\"server_image\" is not set"],
        ),
        gcp(
            "server image with a newline",
            json!({ "server_image": "a\nb" }),
            &["server_image must be a non-empty"],
        ),
        gcp(
            "bad lease namespace",
            json!({ "leader_election_namespace": "-x" }),
            &["leader_election_namespace must be a Kubernetes namespace"],
        ),
        gcp(
            "memory without a unit",
            json!({ "controller_memory": "512" }),
            &["controller_memory must be a quantity"],
        ),
        gcp(
            "server CPU 0.5",
            json!({ "server_cpu": "0.5" }),
            &["server_cpu must be"],
        ),
        gcp(
            "blank controller image",
            json!({ "controller_image": "" }),
            &["controller_image must be a non-empty"],
        ),
        gcp(
            "project ID with capitals",
            json!({ "project_id": "My_Project" }),
            &["project_id must be a Google Cloud project ID"],
        ),
        gcp(
            "region with a space",
            json!({ "region": "europe west1" }),
            &["region must be a Google Cloud region"],
        ),
        gcp(
            "name too long for an account ID",
            json!({ "name": "robot-byoc-production" }),
            &["name must be 2-19 characters"],
        ),
        gcp(
            "unknown runtime",
            json!({ "controller_runtime": "job" }),
            &["controller_runtime must be"],
        ),
        gcp(
            "unknown egress",
            json!({ "vpc_egress": "nat" }),
            &["vpc_egress must be"],
        ),
        gcp(
            "existing network not named",
            json!({ "create_network": false }),
            &["network_name is required", "subnet_name is required"],
        ),
        gcp(
            "existing secret not named",
            json!({ "create_kubeconfig_secret": false }),
            &["kubeconfig_secret_id is required"],
        ),
        gcp(
            "secret given as a resource name",
            json!({ "kubeconfig_secret_id": "projects/p/secrets/kubeconfig" }),
            &["not a full resource name"],
        ),
        gcp(
            "kubeconfig write without a created secret",
            json!({ "create_kubeconfig_secret": false, "kubeconfig_secret_id": "kc", "kubeconfig_version": 1 }),
            &["kubeconfig_version must be a positive number"],
        ),
        gcp(
            "KMS key not a key name",
            json!({ "kms_key_name": "key" }),
            &["kms_key_name must be projects/"],
        ),
        gcp(
            "connector max below min",
            json!({ "connector_min_instances": 3, "connector_max_instances": 3 }),
            &["connector_max_instances must be from 3 to 10"],
        ),
        gcp(
            "connector min of one",
            json!({ "connector_min_instances": 1 }),
            &["connector_min_instances must be from 2 to 9"],
        ),
        gcp(
            "connector machine",
            json!({ "connector_machine_type": "n2-standard-2" }),
            &["connector_machine_type must be"],
        ),
        gcp(
            "CPU 3",
            json!({ "controller_cpu": "3" }),
            &["controller_cpu must be"],
        ),
        gcp(
            "memory in MB",
            json!({ "server_memory": "512MB" }),
            &["server_memory must be a quantity"],
        ),
        gcp(
            "subnet not a CIDR",
            json!({ "subnet_cidr": "10.8.0.0" }),
            &["subnet_cidr must be an IPv4 CIDR"],
        ),
        gcp(
            "unknown API group",
            json!({ "api_group": "x" }),
            &["api_group must be auto"],
        ),
    ]
}

/// The error details of a `terraform plan -json` run.
fn plan_errors(terraform: &Terraform, dir: &Path) -> Result<Vec<String>> {
    let output = terraform
        .command(dir)
        .args([
            "plan",
            "-json",
            "-input=false",
            "-lock=false",
            "-var-file=case.tfvars.json",
        ])
        .output()
        .context("cannot run terraform plan")?;
    let mut errors = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let diagnostic = &message["diagnostic"];
        if diagnostic["severity"] == "error" {
            errors.push(format!(
                "{}: {}",
                diagnostic["summary"].as_str().unwrap_or_default(),
                diagnostic["detail"].as_str().unwrap_or_default()
            ));
        }
    }
    if !output.status.success() && errors.is_empty() {
        bail!(
            "terraform plan failed without a diagnostic: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(errors)
}

/// Runs every case; returns how many passed, or the failures.
pub fn run(terraform: &Terraform, repo: &Path, scratch: &Path) -> Result<usize> {
    let mut failures = Vec::new();
    let all = cases();
    for (i, case) in all.iter().enumerate() {
        let dir = scratch.join(format!("case-{i}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            repo.join(format!("terraform/modules/{}/variables.tf", case.module)),
            dir.join("variables.tf"),
        )?;
        std::fs::write(
            dir.join("case.tfvars.json"),
            serde_json::to_vec_pretty(&case.vars)?,
        )?;
        let errors = plan_errors(terraform, &dir)?;
        let label = format!("{} module, {}", case.module, case.what);
        if case.errors.is_empty() {
            if !errors.is_empty() {
                failures.push(format!("{label}: expected success, got {errors:#?}"));
            }
            continue;
        }
        let missing: Vec<&&str> = case
            .errors
            .iter()
            .filter(|want| !errors.iter().any(|e| e.contains(**want)))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{label}: expected errors {missing:?}, got {errors:#?}"
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} variable validation cases failed:\n{}",
            failures.len(),
            all.len(),
            failures.join("\n")
        );
    }
    Ok(all.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::terraform::hcl_model::{TfModule, attr};
    use crate::checks::terraform::repo_root;

    /// Every validation block of both modules is exercised by at least
    /// one failing case (matched through its error message).
    #[test]
    fn every_validation_rule_has_a_failing_case() {
        let all = cases();
        let mut untested = Vec::new();
        for module in ["aws", "gcp"] {
            let m = TfModule::load(&repo_root().join(format!("terraform/modules/{module}")))
                .expect("module parses");
            for (name, block) in m.variables() {
                for validation in block
                    .body
                    .blocks()
                    .filter(|b| b.identifier() == "validation")
                {
                    let message = attr(&validation.body, "error_message")
                        .and_then(super::super::hcl_model::as_str)
                        .unwrap_or_default();
                    let covered = all.iter().any(|c| {
                        c.module == module && c.errors.iter().any(|e| message.contains(e))
                    });
                    if !covered {
                        untested.push(format!("{module}: {name}: {message}"));
                    }
                }
            }
        }
        assert!(
            untested.is_empty(),
            "validation rules without a failing case:\n{}",
            untested.join("\n")
        );
    }
}
