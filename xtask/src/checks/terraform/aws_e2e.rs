//! The AWS example, applied for real against moto's server on loopback:
//! `terraform apply`, the module's `aws ecs run-task` command run with the
//! aws CLI, then `terraform destroy`; between them, what landed in "AWS"
//! is read back and checked against what the module promises.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::cli::{Terraform, run_captured};
use super::env_contract::Contract;
use super::moto::{Aws, Moto, REGION};

/// AWS services the example touches; each provider endpoint points at moto.
const SERVICES: &[&str] = &[
    "cloudwatchlogs",
    "ec2",
    "ecs",
    "iam",
    "kms",
    "lambda",
    "route53",
    "scheduler",
    "secretsmanager",
    "servicediscovery",
    "sts",
];

/// What moto accepts but does not keep, so the run checks it in the
/// Terraform state instead of reading it back.
pub const MOTO_UNSTORED: &[&str] =
    &["aws_ecs_service deploymentConfiguration (healthy percentages, circuit breaker)"];

const MARKER: &str = "robot-byoc-e2e-kubeconfig-marker";

pub struct Report {
    /// Resources with the controller as an ECS service.
    pub resources: usize,
    /// Resources with the controller in the Lambda mode.
    pub resources_lambda: usize,
    pub apply: Duration,
    /// The re-apply from the ECS service to the Lambda mode.
    pub switch: Duration,
    pub destroy: Duration,
    pub checks: usize,
}

/// A test-only provider override: moto endpoints, fake credentials. It is
/// written into the scratch copy only, never into the modules users apply.
fn provider_override(endpoint: &str) -> String {
    let endpoints: String = SERVICES
        .iter()
        .map(|s| format!("    {s} = \"{endpoint}\"\n"))
        .collect();
    format!(
        "# Written by cargo xtask ci for a run against moto; never committed.\n\
         provider \"aws\" {{\n\
         \x20 region                      = \"{REGION}\"\n\
         \x20 access_key                  = \"test\"\n\
         \x20 secret_key                  = \"test\"\n\
         \x20 skip_credentials_validation = true\n\
         \x20 skip_metadata_api_check     = true\n\
         \x20 skip_requesting_account_id  = true\n\
         \x20 endpoints {{\n{endpoints}  }}\n\
         }}\n"
    )
}

/// Applies the example (controller as an ECS service), checks it, runs
/// the one-shot task, switches the controller to the Lambda mode, checks
/// that, destroys everything.
pub fn run(
    terraform: &Terraform,
    repo: &Path,
    scratch: &Path,
    venv_bin: &Path,
    contract: &Contract,
) -> Result<Report> {
    let tree = scratch.join("terraform");
    super::cli::copy_tree(&repo.join("terraform"), &tree)?;
    let example = tree.join("examples/aws");

    let moto = Moto::start(venv_bin, &scratch.join("moto.log"))?;
    eprintln!("terraform: moto on {}", moto.endpoint);
    std::fs::write(
        example.join("moto_override.tf"),
        provider_override(&moto.endpoint),
    )?;

    let package = lambda_package(scratch, venv_bin)?;
    let common = serde_json::json!({
        "server_image": "localhost/robot-server:e2e",
        "controller_image": "localhost/robot-controller:e2e",
        "kubeconfig_version": 1,
        "recovery_window_in_days": 0,
    });
    let mut lambda = common.clone();
    lambda["controller_runtime"] = "lambda".into();
    lambda["lambda_package_path"] = package.display().to_string().into();
    std::fs::write(
        example.join("ecs.tfvars.json"),
        serde_json::to_vec_pretty(&common)?,
    )?;
    std::fs::write(
        example.join("lambda.tfvars.json"),
        serde_json::to_vec_pretty(&lambda)?,
    )?;
    let kubeconfig = format!("apiVersion: v1\nkind: Config\n# {MARKER}\n");

    run_captured(terraform.command(&example).args([
        "init",
        "-backend=false",
        "-input=false",
        "-no-color",
    ]))?;
    let apply = |var_file: &str| -> Result<Duration> {
        let started = Instant::now();
        run_captured(
            terraform
                .command(&example)
                .args(["apply", "-auto-approve", "-input=false", "-no-color"])
                .arg(format!("-var-file={var_file}"))
                // Ephemeral: given through the environment, like a user
                // would, on every apply while kubeconfig_version is set.
                .env("TF_VAR_kubeconfig", &kubeconfig),
        )
        .with_context(|| format!("terraform apply -var-file={var_file} against moto"))?;
        Ok(started.elapsed())
    };

    let aws = Aws {
        venv_bin,
        endpoint: &moto.endpoint,
    };
    let apply_time = apply("ecs.tfvars.json")?;
    let resources = managed_resources(terraform, &example)?;
    let mut checks = check_applied(terraform, &example, &aws, &kubeconfig, contract)?;

    let switch_time = apply("lambda.tfvars.json")?;
    checks += check_lambda(terraform, &example, &aws)?;
    let resources_lambda = managed_resources(terraform, &example)?;

    let started = Instant::now();
    let destroyed = run_captured(terraform.command(&example).args([
        "destroy",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var-file=lambda.tfvars.json",
    ]))
    .context("terraform destroy against moto")?;
    let destroy = started.elapsed();
    ensure!(
        destroyed.contains(&format!("Resources: {resources_lambda} destroyed")),
        "destroy did not remove the {resources_lambda} applied resources:\n{}",
        super::cli::tail(&destroyed, 5)
    );
    let secrets = aws.json(&["secretsmanager", "list-secrets"])?;
    ensure!(
        secrets["SecretList"].as_array().is_some_and(Vec::is_empty),
        "secrets left after destroy: {secrets}"
    );
    drop(moto);
    Ok(Report {
        resources,
        resources_lambda,
        apply: apply_time,
        switch: switch_time,
        destroy,
        checks: checks + 2,
    })
}

/// A placeholder Lambda package: a zip holding `bootstrap`. moto stores
/// the function without running it, so the content does not matter here;
/// the real package comes from `cargo lambda build`.
fn lambda_package(scratch: &Path, venv_bin: &Path) -> Result<PathBuf> {
    let dir = scratch.join("lambda");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("bootstrap"),
        "#!/bin/sh\n# placeholder: moto never runs it\n",
    )?;
    let zip = scratch.join("bootstrap.zip");
    run_captured(
        Command::new(venv_bin.join("python"))
            .current_dir(&dir)
            .args(["-m", "zipfile", "-c"])
            .arg(&zip)
            .arg("bootstrap"),
    )?;
    Ok(zip)
}

/// Resources (not data sources) in the state.
fn managed_resources(terraform: &Terraform, dir: &Path) -> Result<usize> {
    let list = run_captured(terraform.command(dir).args(["state", "list"]))?;
    Ok(list
        .lines()
        .filter(|l| !l.is_empty() && !l.split('.').any(|part| part == "data"))
        .count())
}

/// Reads back what the apply made; returns how many checks passed.
fn check_applied(
    terraform: &Terraform,
    dir: &Path,
    aws: &Aws,
    kubeconfig: &str,
    contract: &Contract,
) -> Result<usize> {
    let outputs: Value = serde_json::from_str(&run_captured(
        terraform.command(dir).args(["output", "-json"]),
    )?)?;
    let output = |name: &str| -> Result<String> {
        outputs[name]["value"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("output {name} is missing"))
    };
    let mut checks = 0;

    // 1. The server URL the user copies into the ProviderConfig.
    let server_url = output("server_url")?;
    ensure!(
        server_url == "http://robot-server.robot-byoc.internal:9090",
        "server_url is {server_url}"
    );
    checks += 1;

    // 2. The kubeconfig reached the secret but not the state.
    let secret_arn = output("kubeconfig_secret_arn")?;
    let secret = aws.json(&[
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        &secret_arn,
    ])?;
    ensure!(
        secret["SecretString"].as_str() == Some(kubeconfig),
        "the secret does not hold the kubeconfig given as TF_VAR_kubeconfig"
    );
    let state = std::fs::read_to_string(dir.join("terraform.tfstate"))?;
    ensure!(
        !state.contains(MARKER),
        "the kubeconfig leaked into terraform.tfstate"
    );
    checks += 1;

    // 3. The controller's task definition: env spelled as the binaries
    //    read it, pointing at the secret and the server; read-only root,
    //    stop timeout.
    let task_def_arn = output("controller_task_definition_arn")?;
    let task_def = aws.json(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        &task_def_arn,
    ])?;
    let container = &task_def["taskDefinition"]["containerDefinitions"][0];
    let env: Vec<(String, String)> = container["environment"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        v["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let unknown = contract.unknown(env.iter().map(|(k, _)| k.as_str()));
    ensure!(unknown.is_empty(), "controller task env: {unknown:?}");
    let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    ensure!(
        names.len() == env.len(),
        "the controller task sets an env var twice: {env:?}"
    );
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    ensure!(
        get("ROBOT_CONTROLLER_KUBECONFIG_SOURCE")
            == Some(&format!("aws-secretsmanager://{secret_arn}")),
        "ROBOT_CONTROLLER_KUBECONFIG_SOURCE is {:?}",
        get("ROBOT_CONTROLLER_KUBECONFIG_SOURCE")
    );
    ensure!(
        get("ROBOT_CONTROLLER_ALLOWED_ENDPOINTS") == Some(server_url.as_str()),
        "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS is {:?}",
        get("ROBOT_CONTROLLER_ALLOWED_ENDPOINTS")
    );
    let token_arn = output("server_token_secret_arn")?;
    ensure!(
        get("ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE")
            == Some(&format!("aws-secretsmanager://{token_arn}"))
            && get("ROBOT_CONTROLLER_SERVER_AUTH") == Some("bearer"),
        "the controller does not present the server token: source {:?}, auth {:?}",
        get("ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE"),
        get("ROBOT_CONTROLLER_SERVER_AUTH")
    );
    ensure!(
        container["readonlyRootFilesystem"] == true,
        "the controller's root file system is writable"
    );
    ensure!(
        container["stopTimeout"]
            .as_u64()
            .is_some_and(|t| (10..=120).contains(&t)),
        "stopTimeout is {}",
        container["stopTimeout"]
    );
    checks += 1;

    // 4. The server token: generated by Secrets Manager, long enough for
    //    the server (32 bytes at least), not in the state; ECS hands it to
    //    the server, and the controller's role may read it.
    let token = aws.json(&[
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        &token_arn,
    ])?;
    let token = token["SecretString"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        token.len() >= 32,
        "the server token has {} bytes, the server needs 32",
        token.len()
    );
    ensure!(
        !state.contains(&token),
        "the server token leaked into terraform.tfstate"
    );
    let server_def = aws.json(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        &output("server_task_definition_arn")?,
    ])?;
    let secrets = &server_def["taskDefinition"]["containerDefinitions"][0]["secrets"];
    ensure!(
        *secrets
            == serde_json::json!([{ "name": "ROBOT_SERVER_AUTH_TOKEN", "valueFrom": token_arn }]),
        "the server container's secrets are {secrets}"
    );
    let role = output("controller_task_role_arn")?;
    let role = role.rsplit('/').next().unwrap_or_default();
    let policy = aws.json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        role,
        "--policy-name",
        "read-secrets",
    ])?;
    ensure!(
        policy["PolicyDocument"].to_string().contains(&token_arn),
        "the controller's role may not read the server token: {}",
        policy["PolicyDocument"]
    );
    checks += 1;

    // 5. The services: one task each, no public IP (read from moto); no
    //    overlapping deployments, circuit breaker with rollback (read
    //    from the state: moto accepts deploymentConfiguration but does
    //    not keep it).
    let cluster = output("cluster_name")?;
    let services = aws.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        &cluster,
        "--services",
        &output("controller_service_name")?,
        &output("server_service_name")?,
    ])?;
    let services = services["services"].as_array().cloned().unwrap_or_default();
    ensure!(
        services.len() == 2,
        "expected 2 ECS services, found {}",
        services.len()
    );
    for service in &services {
        let name = service["serviceName"].as_str().unwrap_or_default();
        ensure!(
            service["desiredCount"] == 1,
            "{name}: desiredCount {}",
            service["desiredCount"]
        );
        ensure!(
            service["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED",
            "{name}: public IP assigned"
        );
    }
    let state: Value = serde_json::from_str(&run_captured(
        terraform.command(dir).args(["show", "-json"]),
    )?)?;
    let in_state = state_resources(&state, "aws_ecs_service");
    ensure!(
        in_state.len() == 2,
        "expected 2 aws_ecs_service in the state, found {}",
        in_state.len()
    );
    for service in in_state {
        let name = service["name"].as_str().unwrap_or_default();
        ensure!(
            service["deployment_minimum_healthy_percent"] == 0
                && service["deployment_maximum_percent"] == 100,
            "{name}: deployments may overlap: min {} max {}",
            service["deployment_minimum_healthy_percent"],
            service["deployment_maximum_percent"]
        );
        let breaker = &service["deployment_circuit_breaker"][0];
        ensure!(
            breaker["enable"] == true && breaker["rollback"] == true,
            "{name}: no circuit breaker with rollback: {breaker}"
        );
    }
    checks += 1;

    // 6. The one-shot pass, run as the user would: the output, verbatim,
    //    through a shell.
    let command = output("ecs_run_task_command")?;
    ensure!(
        command.starts_with("aws ecs run-task "),
        "unexpected command: {command}"
    );
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(&command);
    aws.env(&mut shell);
    let ran: Value = serde_json::from_str(&run_captured(&mut shell)?)
        .context("aws ecs run-task printed no JSON")?;
    ensure!(
        ran["failures"].as_array().is_some_and(Vec::is_empty),
        "run-task failures: {}",
        ran["failures"]
    );
    let tasks = ran["tasks"].as_array().cloned().unwrap_or_default();
    ensure!(tasks.len() == 1, "run-task started {} tasks", tasks.len());
    let task = &tasks[0];
    ensure!(
        task["overrides"]["containerOverrides"][0]["command"] == serde_json::json!(["once"]),
        "the task does not run `once`: {}",
        task["overrides"]
    );
    ensure!(
        task["startedBy"] == "robot-byoc-once",
        "startedBy is {}",
        task["startedBy"]
    );
    let listed = aws.json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        &cluster,
        "--started-by",
        "robot-byoc-once",
    ])?;
    ensure!(
        listed["taskArns"].as_array().is_some_and(|a| a.len() == 1),
        "list-tasks --started-by robot-byoc-once: {listed}"
    );
    checks += 1;

    Ok(checks)
}

/// The `values` of every resource of `kind` in `terraform show -json`,
/// in the root module or any child module.
fn state_resources<'a>(state: &'a Value, kind: &str) -> Vec<&'a Value> {
    let mut found = Vec::new();
    let mut modules = vec![&state["values"]["root_module"]];
    while let Some(module) = modules.pop() {
        for resource in module["resources"].as_array().into_iter().flatten() {
            if resource["type"] == kind && resource["mode"] == "managed" {
                found.push(&resource["values"]);
            }
        }
        modules.extend(module["child_modules"].as_array().into_iter().flatten());
    }
    found
}

/// After the switch to the Lambda mode: the function (reserved
/// concurrency 1, provided.al2023, bootstrap, in the VPC), its schedule,
/// and no ECS controller service any more. Returns how many checks passed.
fn check_lambda(terraform: &Terraform, dir: &Path, aws: &Aws) -> Result<usize> {
    let outputs: Value = serde_json::from_str(&run_captured(
        terraform.command(dir).args(["output", "-json"]),
    )?)?;
    let output = |name: &str| -> Result<String> {
        outputs[name]["value"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("output {name} is missing"))
    };
    let mut checks = 0;
    let function = output("lambda_function_name")?;
    let config = aws.json(&["lambda", "get-function", "--function-name", &function])?;
    let conf = &config["Configuration"];
    ensure!(
        conf["Runtime"] == "provided.al2023" && conf["Handler"] == "bootstrap",
        "Lambda runtime/handler: {} {}",
        conf["Runtime"],
        conf["Handler"]
    );
    ensure!(
        conf["VpcConfig"]["SubnetIds"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "the Lambda is not in the VPC"
    );
    ensure!(
        config["Concurrency"]["ReservedConcurrentExecutions"] == 1,
        "reserved concurrency: {}",
        config["Concurrency"]
    );
    checks += 1;

    ensure!(
        outputs["controller_service_name"]["value"].is_null(),
        "the ECS controller service is still there: {}",
        outputs["controller_service_name"]
    );
    // Deleted ECS services stay visible for a while as DRAINING, then
    // INACTIVE; either (or none at all) means it no longer runs.
    let gone = aws.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        &output("cluster_name")?,
        "--services",
        &format!("{}-controller", output("cluster_name")?),
    ])?;
    let statuses: Vec<&str> = gone["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["status"].as_str())
        .collect();
    ensure!(
        statuses
            .iter()
            .all(|s| *s == "DRAINING" || *s == "INACTIVE"),
        "the ECS controller service still runs after the switch: {statuses:?}"
    );
    let schedule = aws.json(&["scheduler", "get-schedule", "--name", &function])?;
    ensure!(
        schedule["Target"]["Arn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!(":function:{function}"))),
        "the schedule does not target the Lambda: {}",
        schedule["Target"]
    );
    checks += 1;
    Ok(checks)
}
