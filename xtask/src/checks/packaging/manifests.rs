//! Structural checks of the platform manifests in `infra/` (Cloud Run,
//! ECS, Kubernetes, Crossplane, examples): every env var they set is one
//! the binary reads, spelled its way; every port is the binary's; every
//! probe asks a path the binary serves; every file a source points at is
//! mounted from a secret; and the platform settings the design depends on
//! (one instance, internal ingress, egress through the VPC, ...) hold.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::workspace::Interface;

/// The paths both binaries serve for probes.
pub const PROBE_PATHS: &[&str] = &["/healthz", "/readyz"];

/// A container as any of the platforms describes it.
#[derive(Debug, Default)]
pub struct Container {
    pub name: String,
    pub env: Vec<(String, Option<String>)>,
    /// `(name, number)` of each declared port.
    pub ports: Vec<(Option<String>, u16)>,
    pub probes: Vec<Probe>,
    /// `(mount path, backed by a secret)`.
    pub mounts: Vec<(String, bool)>,
}

#[derive(Debug)]
pub struct Probe {
    pub kind: String,
    pub path: Option<String>,
    pub port: Option<Value>,
}

/// Reads every YAML document of `text` as JSON values.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    // Empty documents are skipped by the parser.
    serde_saphyr::from_multiple(text).context("not YAML (or not representable as JSON)")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `[{name, value}]` lists: Kubernetes `env` and ECS `environment` alike.
fn name_values(container: &Value, pointer: &str) -> Vec<(String, Option<String>)> {
    items(container, pointer)
        .map(|e| {
            (
                str_at(e, "/name").unwrap_or_default().to_owned(),
                str_at(e, "/value").map(str::to_owned),
            )
        })
        .collect()
}

/// `[{name?, containerPort}]` lists: Kubernetes `ports`, ECS `portMappings`.
fn named_ports(container: &Value, pointer: &str) -> Vec<(Option<String>, u16)> {
    items(container, pointer)
        .map(|p| {
            (
                str_at(p, "/name").map(str::to_owned),
                p["containerPort"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
}

/// Containers of a Kubernetes-shaped pod spec (Kubernetes, and Cloud Run's
/// Knative-style YAML), with their mounts resolved against `volumes`.
pub fn pod_containers(pod_spec: &Value) -> Vec<Container> {
    let secret_volumes: Vec<&str> = items(pod_spec, "/volumes")
        .filter(|v| v.get("secret").is_some())
        .filter_map(|v| str_at(v, "/name"))
        .collect();
    items(pod_spec, "/containers")
        .map(|c| Container {
            name: str_at(c, "/name").unwrap_or_default().to_owned(),
            env: name_values(c, "/env"),
            ports: named_ports(c, "/ports"),
            probes: ["startupProbe", "readinessProbe", "livenessProbe"]
                .into_iter()
                .filter_map(|kind| {
                    let probe = c.get(kind)?;
                    Some(Probe {
                        kind: kind.to_owned(),
                        path: str_at(probe, "/httpGet/path").map(str::to_owned),
                        port: probe.pointer("/httpGet/port").cloned(),
                    })
                })
                .collect(),
            mounts: items(c, "/volumeMounts")
                .map(|m| {
                    let volume = str_at(m, "/name").unwrap_or_default();
                    (
                        str_at(m, "/mountPath").unwrap_or_default().to_owned(),
                        secret_volumes.contains(&volume),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Containers of an ECS task definition.
pub fn ecs_containers(task: &Value) -> Vec<Container> {
    items(task, "/containerDefinitions")
        .map(|c| Container {
            name: str_at(c, "/name").unwrap_or_default().to_owned(),
            // Variables and secrets alike end up in the environment.
            env: name_values(c, "/environment")
                .into_iter()
                .chain(name_values(c, "/secrets"))
                .collect(),
            ports: named_ports(c, "/portMappings"),
            ..Container::default()
        })
        .collect()
}

/// The interface of the binary a container runs: containers are named
/// after their package's directory (`server`, `controller`).
pub fn interface_for<'a>(interfaces: &'a [Interface], container: &str) -> Option<&'a Interface> {
    interfaces.iter().find(|i| i.binary.dir == container)
}

/// What every platform must get right about a container.
pub fn check_container(c: &Container, interfaces: &[Interface]) -> Vec<String> {
    let Some(i) = interface_for(interfaces, &c.name) else {
        let known: Vec<&str> = interfaces.iter().map(|i| i.binary.dir.as_str()).collect();
        return vec![format!(
            "container `{}` runs no binary of the workspace (containers are named {known:?})",
            c.name
        )];
    };
    let bin = &i.binary.name;
    let mut problems = Vec::new();
    for (name, _) in &c.env {
        if !i.env.contains(name) {
            problems.push(format!("{}: env {name} is not read by {bin}", c.name));
        }
    }
    for (_, port) in &c.ports {
        if *port != i.port {
            problems.push(format!(
                "{}: port {port}, but {bin} listens on {}",
                c.name, i.port
            ));
        }
    }
    for p in &c.probes {
        match p.path.as_deref() {
            Some(path) if PROBE_PATHS.contains(&path) => {}
            other => problems.push(format!(
                "{}: {} asks {other:?}; {bin} serves {PROBE_PATHS:?}",
                c.name, p.kind
            )),
        }
        let port = match &p.port {
            None if c.ports.is_empty() => {
                problems.push(format!(
                    "{}: {} names no port and none is declared",
                    c.name, p.kind
                ));
                continue;
            }
            None => continue,
            Some(Value::String(name)) => c
                .ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|(_, n)| *n),
            Some(v) => v.as_u64().map(|n| n as u16),
        };
        if port != Some(i.port) {
            problems.push(format!(
                "{}: {} on port {:?}, but {bin} serves health on {}",
                c.name, p.kind, p.port, i.port
            ));
        }
    }
    // A file a source or flag points at must come from a secret volume.
    for (name, value) in &c.env {
        let Some(value) = value else { continue };
        let file = if name.ends_with("_SOURCE") {
            value
                .strip_prefix("file://")
                .or_else(|| value.starts_with('/').then_some(value.as_str()))
        } else if name.ends_with("_FILE") {
            Some(value.as_str())
        } else {
            None
        };
        if let Some(file) = file {
            let mounted = c.mounts.iter().any(|(dir, secret)| {
                *secret && Path::new(file).starts_with(dir) && Path::new(file) != Path::new(dir)
            });
            if !mounted {
                problems.push(format!(
                    "{}: {name} reads {file}, which no secret volume provides",
                    c.name
                ));
            }
        }
    }
    problems
}

/// Annotations of `doc` at `pointer` (`/metadata/annotations`).
fn annotation<'a>(doc: &'a Value, pointer: &str, key: &str) -> Option<&'a str> {
    doc.pointer(pointer)?.get(key)?.as_str()
}

/// A Cloud Run file: a Knative-style Service or a WorkerPool.
pub fn check_cloud_run(doc: &Value, interfaces: &[Interface]) -> Vec<String> {
    let kind = str_at(doc, "/kind").unwrap_or_default();
    let name = str_at(doc, "/metadata/name").unwrap_or("?");
    let mut problems = Vec::new();
    let mut expect = |pointer: &str, key: &str, wanted: &str| {
        let got = annotation(doc, pointer, key);
        if got != Some(wanted) {
            problems.push(format!(
                "{kind} {name}: {key} is {got:?}, expected {wanted:?}"
            ));
        }
    };
    let template = "/spec/template/metadata/annotations";
    let containers = pod_containers(doc.pointer("/spec/template/spec").unwrap_or(&Value::Null));
    let runs = |dir: &str| containers.iter().any(|c| c.name == dir);
    match (str_at(doc, "/apiVersion"), kind) {
        (Some("serving.knative.dev/v1"), "Service") => {
            // Server: its state is in memory. Controller: two would
            // reconcile the same Robots. Either way exactly one instance.
            expect(template, "autoscaling.knative.dev/minScale", "1");
            expect(template, "autoscaling.knative.dev/maxScale", "1");
            expect(
                "/metadata/annotations",
                "run.googleapis.com/ingress",
                "internal",
            );
            if runs("controller") {
                expect(template, "run.googleapis.com/cpu-throttling", "false");
                expect(
                    template,
                    "run.googleapis.com/vpc-access-egress",
                    "all-traffic",
                );
                if annotation(doc, template, "run.googleapis.com/vpc-access-connector").is_none() {
                    problems.push(format!("{kind} {name}: no VPC connector"));
                }
            }
        }
        (Some("run.googleapis.com/v1"), "WorkerPool") => {
            expect(
                "/metadata/annotations",
                "run.googleapis.com/scalingMode",
                "manual",
            );
            expect(
                "/metadata/annotations",
                "run.googleapis.com/manualInstanceCount",
                "1",
            );
            expect(
                template,
                "run.googleapis.com/vpc-access-egress",
                "all-traffic",
            );
            if annotation(doc, template, "run.googleapis.com/vpc-access-connector").is_none() {
                problems.push(format!("{kind} {name}: no VPC connector"));
            }
            if containers.iter().any(|c| !c.ports.is_empty()) {
                problems.push(format!("{kind} {name}: worker pools take no ports"));
            }
        }
        (api, kind) => problems.push(format!(
            "{name}: {api:?} {kind} is neither a Cloud Run Service nor a WorkerPool"
        )),
    }
    if containers.is_empty() {
        problems.push(format!("{kind} {name}: no containers"));
    }
    for c in &containers {
        problems.extend(check_container(c, interfaces));
        if c.probes.is_empty() {
            problems.push(format!("{kind} {name}: {} has no probes", c.name));
        }
    }
    problems
}

/// An ECS task definition for `aws ecs register-task-definition`.
pub fn check_ecs(task: &Value, interfaces: &[Interface]) -> Vec<String> {
    let family = str_at(task, "/family").unwrap_or("?");
    let mut problems = Vec::new();
    if str_at(task, "/networkMode") != Some("awsvpc") {
        problems.push(format!("{family}: networkMode must be awsvpc"));
    }
    if !items(task, "/requiresCompatibilities").any(|c| c == "FARGATE") {
        problems.push(format!("{family}: requiresCompatibilities lacks FARGATE"));
    }
    let containers = ecs_containers(task);
    if containers.is_empty() {
        problems.push(format!("{family}: no containerDefinitions"));
    }
    for (def, c) in items(task, "/containerDefinitions").zip(&containers) {
        problems.extend(check_container(c, interfaces));
        let log = def.pointer("/logConfiguration");
        let awslogs = log.and_then(|l| str_at(l, "/logDriver")) == Some("awslogs")
            && ["awslogs-group", "awslogs-region", "awslogs-stream-prefix"]
                .iter()
                .all(|k| {
                    log.and_then(|l| l.pointer(&format!("/options/{k}")))
                        .is_some()
                });
        if !awslogs {
            problems.push(format!(
                "{family}/{}: no complete awslogs logConfiguration",
                c.name
            ));
        }
        if def["readonlyRootFilesystem"] != Value::Bool(true) {
            problems.push(format!(
                "{family}/{}: readonlyRootFilesystem must be true",
                c.name
            ));
        }
        match str_at(def, "/user").map(|u| u.split(':').next().unwrap_or_default()) {
            Some(uid) if uid.parse::<u32>().is_ok_and(|u| u != 0) => {}
            other => problems.push(format!(
                "{family}/{}: user {other:?} is not a non-root uid",
                c.name
            )),
        }
        // Fargate allows 2..=120 s; it must outlast the binary's own
        // graceful shutdown.
        let stop = def["stopTimeout"].as_u64();
        let shutdown = interface_for(interfaces, &c.name)
            .into_iter()
            .flat_map(|i| i.defaults_ending("_SHUTDOWN_TIMEOUT"))
            .filter_map(|(_, d)| humantime::parse_duration(d).ok())
            .max()
            .unwrap_or_default();
        match stop {
            Some(s) if (2..=120).contains(&s) && s > shutdown.as_secs() => {}
            other => problems.push(format!(
                "{family}/{}: stopTimeout {other:?} must be 2..=120 s and longer than the {}s graceful shutdown",
                c.name,
                shutdown.as_secs()
            )),
        }
        // The image has no shell: the binary probes itself
        // (`<binary> healthcheck` GETs its own /healthz).
        let command: Vec<&str> = def
            .get("healthCheck")
            .map(|health| {
                items(health, "/command")
                    .filter_map(Value::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let binary =
            interface_for(interfaces, &c.name).map(|i| format!("/usr/local/bin/{}", i.binary.name));
        if command.first() != Some(&"CMD")
            || command.get(1).copied() != binary.as_deref()
            || command.get(2) != Some(&"healthcheck")
        {
            problems.push(format!(
                "{family}/{}: healthCheck {command:?} must be [\"CMD\", \"<binary>\", \"healthcheck\"] (no shell in the image)",
                c.name
            ));
        }
    }
    problems
}

/// A Kubernetes Deployment: one replica, and its containers held to the
/// binaries. Security contexts, limits and probes being set at all are
/// checkov's (CKV_K8S_8, 9, 12, 13, 20, 22, 23, 28, 31, 37, 38, 40 pass on
/// both Deployments in the checkov step).
pub fn check_kubernetes(doc: &Value, interfaces: &[Interface]) -> Vec<String> {
    if str_at(doc, "/kind") != Some("Deployment") {
        return Vec::new();
    }
    let name = str_at(doc, "/metadata/name").unwrap_or("?");
    let mut problems = Vec::new();
    if doc.pointer("/spec/replicas").and_then(Value::as_u64) != Some(1) {
        problems.push(format!(
            "Deployment {name}: one replica (state in memory, or one reconciler)"
        ));
    }
    let pod = doc.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    for c in pod_containers(pod) {
        problems.extend(check_container(&c, interfaces));
    }
    problems
}

/// The env value a container sets, if any.
pub fn env_value<'a>(c: &'a Container, var: &str) -> Option<&'a str> {
    c.env
        .iter()
        .find(|(n, _)| n == var)
        .and_then(|(_, v)| v.as_deref())
}

/// Whether `endpoint` is one of the comma-separated URL prefixes in
/// `allowed` (the controller's --allowed-endpoints; empty allows all).
pub fn endpoint_allowed(allowed: &str, endpoint: &str) -> bool {
    let prefixes: Vec<&str> = allowed
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    prefixes.is_empty() || prefixes.iter().any(|p| endpoint.starts_with(p))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::checks::packaging::workspace::Binary;

    fn interface(dir: &str, env: &[&str], port: u16, defaults: &[(&str, &str)]) -> Interface {
        Interface {
            binary: Binary {
                package: format!("robot-{dir}"),
                name: format!("robot-{dir}"),
                dir: dir.into(),
            },
            env: env.iter().map(|e| e.to_string()).collect::<BTreeSet<_>>(),
            port,
            subcommands: Vec::new(),
            defaults: defaults
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn interfaces() -> Vec<Interface> {
        vec![
            interface(
                "server",
                &["ROBOT_SERVER_LOG", "ROBOT_SERVER_AUTH_TOKEN_FILE"],
                9090,
                &[],
            ),
            interface(
                "controller",
                &["ROBOT_CONTROLLER_KUBECONFIG_SOURCE", "ROBOT_CONTROLLER_LOG"],
                8080,
                &[("ROBOT_CONTROLLER_SHUTDOWN_TIMEOUT", "8s")],
            ),
        ]
    }

    fn pod(container: Value, volumes: Value) -> Value {
        json!({ "containers": [container], "volumes": volumes })
    }

    #[test]
    fn a_clean_container_passes() {
        let c = pod_containers(&pod(
            json!({
                "name": "controller",
                "env": [{"name": "ROBOT_CONTROLLER_KUBECONFIG_SOURCE", "value": "file:///etc/k/kubeconfig"}],
                "ports": [{"name": "health", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                "volumeMounts": [{"name": "k", "mountPath": "/etc/k"}],
            }),
            json!([{"name": "k", "secret": {"secretName": "s"}}]),
        ));
        assert_eq!(check_container(&c[0], &interfaces()), Vec::<String>::new());
    }

    #[test]
    fn misspelled_env_wrong_ports_paths_and_unmounted_files_are_caught() {
        let c = pod_containers(&pod(
            json!({
                "name": "controller",
                "env": [
                    {"name": "ROBOT_CONTROLLER_KUBECONFIG", "value": "x"},
                    {"name": "ROBOT_CONTROLLER_KUBECONFIG_SOURCE", "value": "/etc/other/kubeconfig"},
                ],
                "ports": [{"name": "health", "containerPort": 9090}],
                "livenessProbe": {"httpGet": {"path": "/health", "port": "nope"}},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/k"}],
            }),
            json!([{"name": "cfg", "configMap": {"name": "c"}}]),
        ));
        let problems = check_container(&c[0], &interfaces());
        for expected in [
            "env ROBOT_CONTROLLER_KUBECONFIG is not read",
            "port 9090, but robot-controller listens on 8080",
            "asks Some(\"/health\")",
            "livenessProbe on port Some(String(\"nope\"))",
            "reads /etc/other/kubeconfig, which no secret volume provides",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:#?}"
            );
        }
        // A config map is not a secret, even at the right path.
        let c = pod_containers(&pod(
            json!({"name": "controller",
                   "env": [{"name": "ROBOT_CONTROLLER_KUBECONFIG_SOURCE", "value": "file:///etc/k/kubeconfig"}],
                   "volumeMounts": [{"name": "cfg", "mountPath": "/etc/k"}]}),
            json!([{"name": "cfg", "configMap": {"name": "c"}}]),
        ));
        assert_eq!(check_container(&c[0], &interfaces()).len(), 1);
        let unknown = Container {
            name: "sidecar".into(),
            ..Container::default()
        };
        assert!(check_container(&unknown, &interfaces())[0].contains("runs no binary"));
    }

    #[test]
    fn cloud_run_scaling_ingress_and_egress_are_enforced() {
        let service = |annotations: Value, template: Value| {
            json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "Service",
                "metadata": {"name": "c", "annotations": annotations},
                "spec": {"template": {"metadata": {"annotations": template},
                    "spec": {"containers": [{"name": "controller", "ports": [{"containerPort": 8080}],
                        "startupProbe": {"httpGet": {"path": "/healthz"}}}]}}}
            })
        };
        let good = service(
            json!({"run.googleapis.com/ingress": "internal"}),
            json!({"autoscaling.knative.dev/minScale": "1", "autoscaling.knative.dev/maxScale": "1",
                   "run.googleapis.com/cpu-throttling": "false",
                   "run.googleapis.com/vpc-access-connector": "c", "run.googleapis.com/vpc-access-egress": "all-traffic"}),
        );
        assert_eq!(check_cloud_run(&good, &interfaces()), Vec::<String>::new());
        let bad = service(
            json!({"run.googleapis.com/ingress": "all"}),
            json!({"autoscaling.knative.dev/minScale": "0", "autoscaling.knative.dev/maxScale": "3",
                   "run.googleapis.com/vpc-access-egress": "private-ranges-only"}),
        );
        let problems = check_cloud_run(&bad, &interfaces());
        for expected in [
            "minScale",
            "maxScale",
            "ingress",
            "cpu-throttling",
            "vpc-access-egress",
            "no VPC connector",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:#?}"
            );
        }
        let other = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert!(check_cloud_run(&other, &interfaces())[0].contains("neither"));
    }

    #[test]
    fn ecs_task_definitions_need_fargate_logs_a_non_root_user_and_a_long_enough_stop_timeout() {
        let task = |container: Value| {
            json!({"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
                   "containerDefinitions": [container]})
        };
        let good = json!({"name": "controller", "readonlyRootFilesystem": true, "user": "65532:65532",
            "stopTimeout": 30, "portMappings": [{"containerPort": 8080}],
            "healthCheck": {"command": ["CMD", "/usr/local/bin/robot-controller", "healthcheck"]},
            "environment": [{"name": "ROBOT_CONTROLLER_LOG", "value": "info"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "g", "awslogs-region": "r", "awslogs-stream-prefix": "p"}}});
        assert_eq!(
            check_ecs(&task(good.clone()), &interfaces()),
            Vec::<String>::new()
        );
        let mut bad = good;
        bad["stopTimeout"] = json!(5);
        bad["user"] = json!("0");
        bad["readonlyRootFilesystem"] = json!(false);
        bad["logConfiguration"] = json!({"logDriver": "json-file"});
        bad["healthCheck"] =
            json!({"command": ["CMD-SHELL", "curl -f http://localhost:8080/healthz"]});
        let problems = check_ecs(&task(bad), &interfaces());
        for expected in [
            "stopTimeout Some(5)",
            "user Some(\"0\")",
            "readonlyRootFilesystem",
            "awslogs",
            "healthCheck",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:#?}"
            );
        }
        let problems = check_ecs(&json!({"family": "f"}), &interfaces());
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let mut no_probe = task(json!({}));
        no_probe["containerDefinitions"][0] = json!({"name": "controller"});
        assert!(
            check_ecs(&no_probe, &interfaces())
                .iter()
                .any(|p| p.contains("healthCheck")),
            "a task without a health check is refused"
        );
    }

    #[test]
    fn endpoints_are_allowed_by_prefix() {
        assert!(endpoint_allowed("", "http://x"));
        assert!(endpoint_allowed(
            "http://a:1, http://x:9090",
            "http://x:9090/"
        ));
        assert!(!endpoint_allowed("http://a:1", "http://x:9090"));
    }

    #[test]
    fn reads_multi_document_yaml_and_rejects_garbage() {
        let docs = yaml_documents("a: 1\n---\n---\nb: [x]\n").expect("parses");
        assert_eq!(docs, [json!({"a": 1}), json!({"b": ["x"]})]);
        assert!(yaml_documents("a: [1\n").is_err());
    }
}
