//! The files in `infra/` held against the binaries and against each other:
//! Cloud Run and ECS against the binaries' interfaces and the Terraform
//! modules, Kubernetes against the example ProviderConfig, Crossplane's
//! Configuration against its install manifest.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::manifests::{
    self, check_cloud_run, check_ecs, check_kubernetes, endpoint_allowed, env_value, yaml_documents,
};
use super::workspace::Interface;
use crate::checks::binaries::robot_names;
use crate::checks::terraform::hcl_model::{TfModule, as_str};

/// The first fenced block of a README that holds `needle`, as written.
pub fn readme_block(readme: &str, needle: &str) -> Option<String> {
    let mut in_block = false;
    let mut block = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            if in_block && block.iter().any(|l: &&str| l.contains(needle)) {
                return Some(block.join("\n"));
            }
            in_block = !in_block;
            block.clear();
        } else if in_block {
            block.push(line);
        }
    }
    None
}

/// The `aws ecs run-task` command of infra/ecs/README.md (the fenced block
/// that holds it), as written there.
pub fn readme_run_task(readme: &str) -> Option<String> {
    readme_block(readme, "aws ecs run-task")
}

fn files(dir: &Path, ext: &str) -> Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn docs_in(dir: &Path) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for path in files(dir, "yaml")? {
        let name = path.display().to_string();
        for doc in yaml_documents(&read(&path)?).with_context(|| name.clone())? {
            out.push((name.clone(), doc));
        }
    }
    Ok(out)
}

fn kind_is(doc: &Value, kind: &str) -> bool {
    doc["kind"] == kind
}

/// Every problem found in `repo/infra` (and the Terraform it must match).
pub fn check(repo: &Path, interfaces: &[Interface]) -> Result<Vec<String>> {
    let infra = repo.join("infra");
    let mut problems = Vec::new();
    let mut note = |file: &str, found: Vec<String>| {
        problems.extend(found.into_iter().map(|p| format!("{file}: {p}")));
    };

    // Cloud Run: the server service, the controller as a worker pool and
    // as a service.
    let cloud_run = docs_in(&infra.join("cloudrun"))?;
    let kinds: BTreeSet<(String, String)> = cloud_run
        .iter()
        .map(|(_, d)| {
            let containers =
                manifests::pod_containers(d.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                containers
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    for wanted in [
        ("Service", "server"),
        ("WorkerPool", "controller"),
        ("Service", "controller"),
    ] {
        if !kinds.contains(&(wanted.0.to_owned(), wanted.1.to_owned())) {
            note(
                "infra/cloudrun",
                vec![format!("no {} running the {}", wanted.0, wanted.1)],
            );
        }
    }
    for (file, doc) in &cloud_run {
        note(file, check_cloud_run(doc, interfaces));
    }

    // ECS: each task definition, and the same names and settings as the
    // Terraform module's.
    let aws = TfModule::load(&repo.join("terraform/modules/aws"))?;
    let tf_main = read(&repo.join("terraform/modules/aws/main.tf"))?;
    let tf_names = robot_names(&tf_main);
    let local = |name: &str| aws.local(name).and_then(as_str).map(str::to_owned);
    let mut ecs_names = BTreeSet::new();
    let mut ecs_containers = BTreeSet::new();
    for path in files(&infra.join("ecs"), "json")? {
        let file = path.display().to_string();
        let task: Value = serde_json::from_str(&read(&path)?).with_context(|| file.clone())?;
        note(&file, check_ecs(&task, interfaces));
        for c in manifests::ecs_containers(&task) {
            ecs_names.extend(c.env.iter().map(|(n, _)| n.clone()));
            ecs_containers.insert(c.name);
        }
    }
    for tf_local in ["server_container", "controller_name"] {
        match local(tf_local) {
            Some(name) if ecs_containers.contains(&name) => {}
            other => note(
                "infra/ecs",
                vec![format!(
                    "Terraform's {tf_local} {other:?} names no container here ({ecs_containers:?})"
                )],
            ),
        }
    }
    let missing: Vec<_> = tf_names.difference(&ecs_names).collect();
    let extra: Vec<_> = ecs_names.difference(&tf_names).collect();
    if !missing.is_empty() || !extra.is_empty() {
        note(
            "infra/ecs",
            vec![format!(
                "env differs from terraform/modules/aws: missing {missing:?}, not set there {extra:?}"
            )],
        );
    }
    // The one-shot pass in the README: `once` for the controller container.
    let readme = read(&infra.join("ecs/README.md"))?;
    match readme_run_task(&readme) {
        None => note(
            "infra/ecs/README.md",
            vec!["no `aws ecs run-task` command block".into()],
        ),
        Some(cmd) => {
            let controller = local("controller_name").unwrap_or_default();
            let overrides = format!(
                r#"{{"containerOverrides":[{{"name":"{controller}","command":["once"]}}]}}"#
            );
            if !cmd.contains(&overrides) {
                note(
                    "infra/ecs/README.md",
                    vec![format!("run-task must pass --overrides '{overrides}'")],
                );
            }
            let once_exists = manifests::interface_for(interfaces, "controller")
                .is_some_and(|i| i.subcommands.iter().any(|s| s == "once"));
            if !once_exists {
                note(
                    "infra/ecs/README.md",
                    vec!["the controller has no `once` subcommand".into()],
                );
            }
        }
    }

    // Kubernetes: the Deployments, and the example ProviderConfig's endpoint
    // is the server Service, allowed by every controller.
    let kubernetes = docs_in(&infra.join("kubernetes"))?;
    for (file, doc) in &kubernetes {
        note(file, check_kubernetes(doc, interfaces));
    }
    let examples = docs_in(&infra.join("examples"))?;
    let endpoint = examples
        .iter()
        .find(|(_, d)| {
            kind_is(d, "ProviderConfig")
                && d.pointer("/metadata/name") == Some(&Value::from("default"))
        })
        .and_then(|(_, d)| d.pointer("/spec/endpoint").and_then(Value::as_str))
        .map(str::to_owned);
    match &endpoint {
        None => note(
            "infra/examples",
            vec!["no ProviderConfig `default` with spec.endpoint".into()],
        ),
        Some(endpoint) => {
            let service_urls: Vec<String> = kubernetes
                .iter()
                .filter(|(_, d)| kind_is(d, "Service"))
                .flat_map(|(_, d)| {
                    let name = d
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    let ns = d
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("default");
                    d.pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(move |p| format!("http://{name}.{ns}.svc.cluster.local:{}", p["port"]))
                })
                .collect();
            if !service_urls.contains(endpoint) {
                note(
                    "infra/examples",
                    vec![format!(
                        "ProviderConfig endpoint {endpoint} is none of the Services {service_urls:?}"
                    )],
                );
            }
            for (file, doc) in kubernetes.iter().filter(|(_, d)| kind_is(d, "Deployment")) {
                let pod = doc.pointer("/spec/template/spec").unwrap_or(&Value::Null);
                for c in manifests::pod_containers(pod)
                    .iter()
                    .filter(|c| c.name == "controller")
                {
                    let allowed = env_value(c, "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS").unwrap_or("");
                    if !endpoint_allowed(allowed, endpoint) {
                        note(
                            file,
                            vec![format!(
                                "--allowed-endpoints {allowed:?} refuses the example {endpoint}"
                            )],
                        );
                    }
                }
            }
        }
    }

    // Examples: the guide's Robot, a preset external name, an Orphan.
    let robots: Vec<&Value> = examples
        .iter()
        .filter(|(_, d)| kind_is(d, "Robot"))
        .map(|(_, d)| d)
        .collect();
    let has = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        (!robots.iter().any(|r| pred(r))).then(|| format!("no Robot {what}"))
    };
    let wanted = [
        has("`example` with color yellow (the guide's)", &|r| {
            r.pointer("/metadata/name") == Some(&Value::from("example"))
                && r.pointer("/spec/forProvider/color") == Some(&Value::from("yellow"))
        }),
        has("with a crossplane.io/external-name", &|r| {
            r.pointer("/metadata/annotations/crossplane.io~1external-name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
        }),
        has("with deletionPolicy Orphan", &|r| {
            r.pointer("/spec/deletionPolicy") == Some(&Value::from("Orphan"))
        }),
    ];
    note("infra/examples", wanted.into_iter().flatten().collect());

    // Crossplane: the Configuration's dependency is what the install
    // manifest installs, with its controller scaled to zero.
    let config = yaml_documents(&read(
        &infra.join("crossplane/configuration/crossplane.yaml"),
    )?)?;
    let install = yaml_documents(&read(
        &infra.join("crossplane/install/controller-off.yaml"),
    )?)?;
    let provider_meta = yaml_documents(&read(&infra.join("crossplane/provider/crossplane.yaml"))?)?;
    note(
        "infra/crossplane",
        crossplane(&config, &install, &provider_meta),
    );
    Ok(problems)
}

/// The Crossplane files' agreement: Configuration -> provider version ->
/// installed package -> DeploymentRuntimeConfig with zero replicas.
pub fn crossplane(config: &[Value], install: &[Value], provider_meta: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let dependency = config
        .iter()
        .find(|d| d["apiVersion"] == "meta.pkg.crossplane.io/v1" && kind_is(d, "Configuration"))
        .and_then(|d| d.pointer("/spec/dependsOn/0"))
        .and_then(|dep| Some((dep["provider"].as_str()?, dep["version"].as_str()?)));
    let provider = install
        .iter()
        .find(|d| d["apiVersion"] == "pkg.crossplane.io/v1" && kind_is(d, "Provider"));
    let runtime = install
        .iter()
        .find(|d| kind_is(d, "DeploymentRuntimeConfig"));
    match (dependency, provider) {
        (None, _) => problems.push("the Configuration depends on no provider".into()),
        (_, None) => problems.push("controller-off.yaml installs no Provider".into()),
        (Some((package, version)), Some(p)) => {
            let installs = format!("{package}:{version}");
            if p.pointer("/spec/package") != Some(&Value::from(installs.as_str())) {
                problems.push(format!(
                    "the Provider installs {:?}, the Configuration depends on {installs}",
                    p.pointer("/spec/package")
                ));
            }
            let referenced = p.pointer("/spec/runtimeConfigRef/name");
            match runtime {
                Some(r) if r.pointer("/metadata/name") == referenced => {
                    if r.pointer("/spec/deploymentTemplate/spec/replicas") != Some(&Value::from(0))
                    {
                        problems.push(
                            "the DeploymentRuntimeConfig does not scale the controller to 0".into(),
                        );
                    }
                }
                _ => problems
                    .push("the Provider references no DeploymentRuntimeConfig of this file".into()),
            }
        }
    }
    let meta_ok = provider_meta.iter().any(|d| {
        d["apiVersion"] == "meta.pkg.crossplane.io/v1"
            && kind_is(d, "Provider")
            && d.pointer("/spec/controller/image").is_none()
    });
    if !meta_ok {
        problems.push(
            "provider/crossplane.yaml must be Provider package metadata naming no controller image"
                .into(),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_the_run_task_block() {
        let readme = "# x\n```sh\naws ecs register-task-definition\n```\n\ntext\n```sh\naws ecs run-task \\\n  --cluster c\n```\n";
        assert_eq!(
            readme_run_task(readme).as_deref(),
            Some("aws ecs run-task \\\n  --cluster c")
        );
        assert_eq!(readme_run_task("no blocks"), None);
        assert_eq!(
            readme_run_task("```\naws ecs run-task"),
            None,
            "an unterminated block"
        );
    }

    #[test]
    fn crossplane_files_must_agree() {
        let config = [
            json!({"apiVersion": "meta.pkg.crossplane.io/v1", "kind": "Configuration",
            "spec": {"dependsOn": [{"provider": "xpkg.example/p", "version": "v1"}]}}),
        ];
        let meta =
            [json!({"apiVersion": "meta.pkg.crossplane.io/v1", "kind": "Provider", "spec": {}})];
        let install = |package: &str, replicas: i64| {
            [
                json!({"kind": "DeploymentRuntimeConfig", "metadata": {"name": "off"},
                       "spec": {"deploymentTemplate": {"spec": {"replicas": replicas}}}}),
                json!({"apiVersion": "pkg.crossplane.io/v1", "kind": "Provider",
                       "spec": {"package": package, "runtimeConfigRef": {"name": "off"}}}),
            ]
        };
        assert_eq!(
            crossplane(&config, &install("xpkg.example/p:v1", 0), &meta),
            Vec::<String>::new()
        );
        let problems = crossplane(&config, &install("xpkg.example/p:v2", 1), &meta);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        let with_image = [
            json!({"apiVersion": "meta.pkg.crossplane.io/v1", "kind": "Provider",
            "spec": {"controller": {"image": "x"}}}),
        ];
        assert_eq!(
            crossplane(&config, &install("xpkg.example/p:v1", 0), &with_image).len(),
            1
        );
        assert_eq!(crossplane(&[], &[], &meta).len(), 1);
    }
}
