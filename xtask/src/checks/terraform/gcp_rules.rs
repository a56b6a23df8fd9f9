//! Structural rules of the GCP module, checked on its parsed HCL because
//! no google provider is available to plan it: what issue 7 asks of the
//! deployment (internal-only single-instance server, least-privilege IAM,
//! controller egress through the VPC, CPU always allocated, a worker pool
//! by default).

use anyhow::{Result, bail, ensure};
use hcl::Value;
use hcl::expr::Expression;
use hcl::structure::Block;

use super::hcl_model::{
    TfModule, as_str, attr, attr_at, block_at, blocks, dynamic_contents, object_get, object_keys,
    source,
};

const SERVER: (&str, &str) = ("google_cloud_run_v2_service", "server");
const WORKER_POOL: (&str, &str) = ("google_cloud_run_v2_worker_pool", "controller");
const CONTROLLER_SERVICE: (&str, &str) = ("google_cloud_run_v2_service", "controller");
const ACCESSOR: (&str, &str) = (
    "google_secret_manager_secret_iam_member",
    "controller_reads_kubeconfig",
);
const INVOKER: (&str, &str) = ("google_cloud_run_v2_service_iam_member", "server_invoker");

pub struct Rule {
    pub name: &'static str,
    pub check: fn(&TfModule) -> Result<()>,
}

pub const RULES: &[Rule] = &[
    Rule {
        name: "server ingress is internal only",
        check: server_ingress_internal,
    },
    Rule {
        name: "server runs exactly one instance",
        check: server_single_instance,
    },
    Rule {
        name: "secret accessor is the controller's, on the one secret",
        check: secret_accessor_scoped,
    },
    Rule {
        name: "controller waits for its grants",
        check: controller_waits_for_grants,
    },
    Rule {
        name: "run.invoker on the server for the controller only",
        check: invoker_controller_only,
    },
    Rule {
        name: "no project-level or authoritative IAM, no public members",
        check: no_broad_iam,
    },
    Rule {
        name: "controller egress ALL_TRAFFIC through the connector",
        check: controller_egress_through_vpc,
    },
    Rule {
        name: "controller service keeps CPU allocated",
        check: controller_cpu_always_allocated,
    },
    Rule {
        name: "controller is a one-instance worker pool by default, a service on switch",
        check: worker_pool_by_default,
    },
    Rule {
        name: "controller probes /healthz",
        check: controller_probes_healthz,
    },
    Rule {
        name: "dedicated service accounts",
        check: dedicated_service_accounts,
    },
    Rule {
        name: "connector has max_instances, Cloud NAT exists",
        check: connector_bounded_and_nat,
    },
    Rule {
        name: "deletion_protection is an input",
        check: deletion_protection_is_input,
    },
    Rule {
        name: "controller env: secret URI and server URL",
        check: controller_env,
    },
];

/// Runs every rule; the failures, by rule name.
pub fn check(module: &TfModule) -> Vec<(&'static str, Result<()>)> {
    RULES
        .iter()
        .map(|rule| (rule.name, (rule.check)(module)))
        .collect()
}

fn resource<'a>(m: &'a TfModule, (kind, name): (&str, &str)) -> Result<&'a Block> {
    m.resource(kind, name)
}

fn literal<'a>(m: &'a TfModule, body: &'a hcl::Body, path: &[&str]) -> Result<&'a Expression> {
    attr_at(body, path)
        .map(|e| m.resolve(e))
        .ok_or_else(|| anyhow::anyhow!("{} is not set", path.join(".")))
}

fn expect_str(m: &TfModule, body: &hcl::Body, path: &[&str], want: &str) -> Result<()> {
    let expr = literal(m, body, path)?;
    match as_str(expr) {
        Some(s) if s == want => Ok(()),
        _ => bail!("{} is `{}`, not \"{want}\"", path.join("."), source(expr)),
    }
}

fn expect_number(m: &TfModule, body: &hcl::Body, path: &[&str], want: u64) -> Result<()> {
    let expr = literal(m, body, path)?;
    match m.evaluate(expr, &[]) {
        Ok(Value::Number(n)) if n.as_u64() == Some(want) => Ok(()),
        _ => bail!("{} is `{}`, not {want}", path.join("."), source(expr)),
    }
}

fn refers_to(m: &TfModule, expr: &Expression, target: &str) -> bool {
    source(m.resolve(expr)).contains(target)
}

fn controllers(m: &TfModule) -> Result<[(&'static str, &Block); 2]> {
    Ok([
        ("worker pool", resource(m, WORKER_POOL)?),
        ("controller service", resource(m, CONTROLLER_SERVICE)?),
    ])
}

fn server_ingress_internal(m: &TfModule) -> Result<()> {
    expect_str(
        m,
        &resource(m, SERVER)?.body,
        &["ingress"],
        "INGRESS_TRAFFIC_INTERNAL_ONLY",
    )
}

fn server_single_instance(m: &TfModule) -> Result<()> {
    let body = &resource(m, SERVER)?.body;
    expect_number(m, body, &["template", "scaling", "min_instance_count"], 1)?;
    expect_number(m, body, &["template", "scaling", "max_instance_count"], 1)
}

fn secret_accessor_scoped(m: &TfModule) -> Result<()> {
    let accessors: Vec<_> = m
        .resources()
        .filter(|r| r.kind.starts_with("google_secret_manager_secret_iam"))
        .collect();
    ensure!(
        accessors.len() == 1 && (accessors[0].kind, accessors[0].name) == ACCESSOR,
        "expected exactly {}.{} among the secret IAM resources, found {:?}",
        ACCESSOR.0,
        ACCESSOR.1,
        accessors
            .iter()
            .map(|r| format!("{}.{}", r.kind, r.name))
            .collect::<Vec<_>>()
    );
    let body = &accessors[0].block.body;
    expect_str(m, body, &["role"], "roles/secretmanager.secretAccessor")?;
    let member = literal(m, body, &["member"])?;
    ensure!(
        refers_to(m, member, "google_service_account.controller."),
        "the accessor's member is `{}`, not the controller's service account",
        source(member)
    );
    // The secret itself: the created one, or the named existing one; never
    // a project-wide grant.
    let secret = literal(m, body, &["secret_id"])?;
    let secret_src = source(secret);
    ensure!(
        secret_src.contains("google_secret_manager_secret.kubeconfig")
            && secret_src.contains("/secrets/"),
        "the accessor's secret_id is `{secret_src}`, not the kubeconfig secret"
    );
    Ok(())
}

fn depends_on(block: &Block) -> String {
    attr(&block.body, "depends_on")
        .map(source)
        .unwrap_or_default()
}

fn controller_waits_for_grants(m: &TfModule) -> Result<()> {
    for (what, block) in controllers(m)? {
        let deps = depends_on(block);
        for grant in [ACCESSOR, INVOKER] {
            let name = format!("{}.{}", grant.0, grant.1);
            ensure!(deps.contains(&name), "the {what} does not depend on {name}");
        }
    }
    Ok(())
}

fn invoker_controller_only(m: &TfModule) -> Result<()> {
    let invokers: Vec<_> = m
        .resources()
        .filter(|r| {
            attr(&r.block.body, "role")
                .and_then(as_str)
                .is_some_and(|role| role == "roles/run.invoker")
        })
        .collect();
    ensure!(
        invokers.len() == 1 && (invokers[0].kind, invokers[0].name) == INVOKER,
        "expected run.invoker granted once, by {}.{}, found {:?}",
        INVOKER.0,
        INVOKER.1,
        invokers
            .iter()
            .map(|r| format!("{}.{}", r.kind, r.name))
            .collect::<Vec<_>>()
    );
    let body = &invokers[0].block.body;
    let service = literal(m, body, &["name"])?;
    ensure!(
        refers_to(m, service, "google_cloud_run_v2_service.server."),
        "run.invoker is granted on `{}`, not the server",
        source(service)
    );
    let member = literal(m, body, &["member"])?;
    ensure!(
        refers_to(m, member, "google_service_account.controller."),
        "run.invoker goes to `{}`, not the controller's service account",
        source(member)
    );
    Ok(())
}

fn no_broad_iam(m: &TfModule) -> Result<()> {
    let mut found = Vec::new();
    for r in m.resources() {
        let project_level = [
            "google_project_iam",
            "google_folder_iam",
            "google_organization_iam",
        ]
        .iter()
        .any(|p| r.kind.starts_with(p));
        let authoritative = r.kind.ends_with("_iam_binding") || r.kind.ends_with("_iam_policy");
        if project_level || authoritative {
            found.push(format!("{}.{}", r.kind, r.name));
        }
        if let Some(member) = attr(&r.block.body, "member") {
            let member = source(m.resolve(member));
            if member.contains("allUsers") || member.contains("allAuthenticatedUsers") {
                found.push(format!("{}.{} grants to {member}", r.kind, r.name));
            }
        }
    }
    ensure!(found.is_empty(), "broad IAM: {}", found.join(", "));
    Ok(())
}

fn controller_egress_through_vpc(m: &TfModule) -> Result<()> {
    let default = m.default_of("vpc_egress").and_then(as_str);
    ensure!(
        default == Some("connector"),
        "vpc_egress defaults to {default:?}, not \"connector\""
    );
    let connector = m.local("connector_id").map(source).unwrap_or_default();
    ensure!(
        connector.contains("google_vpc_access_connector.this"),
        "local.connector_id is `{connector}`, not the module's connector"
    );
    for (what, block) in controllers(m)? {
        expect_str(
            m,
            &block.body,
            &["template", "vpc_access", "egress"],
            "ALL_TRAFFIC",
        )
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let used = attr_at(&block.body, &["template", "vpc_access", "connector"])
            .map(source)
            .unwrap_or_default();
        ensure!(
            used == "local.connector_id",
            "{what}: vpc_access.connector is `{used}`, not local.connector_id"
        );
    }
    Ok(())
}

fn controller_cpu_always_allocated(m: &TfModule) -> Result<()> {
    let body = &resource(m, CONTROLLER_SERVICE)?.body;
    match attr_at(body, &["template", "containers", "resources", "cpu_idle"]) {
        Some(Expression::Bool(false)) => Ok(()),
        Some(other) => bail!("cpu_idle is `{}`, not false", source(other)),
        None => bail!("cpu_idle is not set: it must be false explicitly"),
    }
}

fn worker_pool_by_default(m: &TfModule) -> Result<()> {
    let default = m.default_of("controller_runtime").and_then(as_str);
    ensure!(
        default == Some("worker-pool"),
        "controller_runtime defaults to {default:?}, not \"worker-pool\""
    );
    let counts = |runtime: Option<&str>| -> Result<(u64, u64)> {
        let overrides: Vec<(&str, Value)> = runtime
            .map(|r| vec![("controller_runtime", Value::from(r))])
            .unwrap_or_default();
        Ok((
            m.count_of(WORKER_POOL.0, WORKER_POOL.1, &overrides)?,
            m.count_of(CONTROLLER_SERVICE.0, CONTROLLER_SERVICE.1, &overrides)?,
        ))
    };
    let by_default = counts(None)?;
    ensure!(
        by_default == (1, 0),
        "by default: {} worker pool(s), {} controller service(s)",
        by_default.0,
        by_default.1
    );
    let switched = counts(Some("service"))?;
    ensure!(
        switched == (0, 1),
        "with controller_runtime = \"service\": {} worker pool(s), {} controller service(s)",
        switched.0,
        switched.1
    );
    let pool = &resource(m, WORKER_POOL)?.body;
    expect_str(m, pool, &["scaling", "scaling_mode"], "MANUAL")?;
    expect_number(m, pool, &["scaling", "manual_instance_count"], 1)?;
    let service = &resource(m, CONTROLLER_SERVICE)?.body;
    expect_number(
        m,
        service,
        &["template", "scaling", "min_instance_count"],
        1,
    )?;
    expect_number(
        m,
        service,
        &["template", "scaling", "max_instance_count"],
        1,
    )
}

fn controller_probes_healthz(m: &TfModule) -> Result<()> {
    for (what, block) in controllers(m)? {
        for probe in ["startup_probe", "liveness_probe"] {
            expect_str(
                m,
                &block.body,
                &["template", "containers", probe, "http_get", "path"],
                "/healthz",
            )
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        }
    }
    Ok(())
}

fn dedicated_service_accounts(m: &TfModule) -> Result<()> {
    let uses = |block: &Block, account: &str| {
        attr_at(&block.body, &["template", "service_account"])
            .is_some_and(|e| refers_to(m, e, &format!("google_service_account.{account}.email")))
    };
    ensure!(
        uses(resource(m, SERVER)?, "server"),
        "the server does not run as google_service_account.server"
    );
    for (what, block) in controllers(m)? {
        ensure!(
            uses(block, "controller"),
            "the {what} does not run as google_service_account.controller"
        );
    }
    Ok(())
}

fn connector_bounded_and_nat(m: &TfModule) -> Result<()> {
    let connector = m.resource("google_vpc_access_connector", "this")?;
    ensure!(
        attr(&connector.body, "max_instances").is_some(),
        "the connector has no max_instances"
    );
    ensure!(
        m.resources().any(|r| r.kind == "google_compute_router_nat"),
        "no Cloud NAT: the controller could not reach the control plane"
    );
    Ok(())
}

fn deletion_protection_is_input(m: &TfModule) -> Result<()> {
    for target in [SERVER, WORKER_POOL, CONTROLLER_SERVICE] {
        let body = &resource(m, target)?.body;
        let value = attr(body, "deletion_protection").map(source);
        ensure!(
            value.as_deref() == Some("var.deletion_protection"),
            "{}.{}: deletion_protection is {value:?}, not var.deletion_protection",
            target.0,
            target.1
        );
    }
    Ok(())
}

fn controller_env(m: &TfModule) -> Result<()> {
    for (what, block) in controllers(m)? {
        let containers = blocks(&block.body, "template")
            .flat_map(|t| blocks(&t.body, "containers"))
            .next()
            .ok_or_else(|| anyhow::anyhow!("the {what} has no container"))?;
        let env = dynamic_contents(&containers.body, "env").count();
        let for_each = blocks(&containers.body, "dynamic")
            .find_map(|d| attr(&d.body, "for_each"))
            .map(source)
            .unwrap_or_default();
        ensure!(
            env == 1 && for_each == "local.controller_settings",
            "the {what}'s env does not come from local.controller_settings"
        );
    }
    let settings = m
        .local("controller_settings")
        .ok_or_else(|| anyhow::anyhow!("no local.controller_settings"))?;
    let keys = object_keys(settings);
    let source_uri = object_get(settings, "ROBOT_CONTROLLER_KUBECONFIG_SOURCE")
        .map(|e| source(m.resolve(e)))
        .unwrap_or_default();
    ensure!(
        source_uri.starts_with("\"gcp-secretmanager://projects/${var.project_id}/secrets/")
            && source_uri.ends_with("/versions/latest\""),
        "ROBOT_CONTROLLER_KUBECONFIG_SOURCE is `{source_uri}` (keys: {keys:?})"
    );
    let endpoints = object_get(settings, "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS")
        .map(|e| source(m.resolve(e)))
        .unwrap_or_default();
    ensure!(
        endpoints == "google_cloud_run_v2_service.server.uri",
        "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS is `{endpoints}`, not the server's URL"
    );
    let server = &resource(m, SERVER)?.body;
    ensure!(
        block_at(server, &["template", "containers", "ports"]).is_some(),
        "the server declares no container port (Cloud Run passes it as PORT)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::checks::terraform::hcl_model::read_sources;
    use crate::checks::terraform::repo_root;

    fn module_dir() -> PathBuf {
        repo_root().join("terraform/modules/gcp")
    }

    fn failures(module: &TfModule) -> Vec<String> {
        check(module)
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e:#}")))
            .collect()
    }

    /// The module with `from` replaced by `to` (once, in the file that
    /// holds it), which must then break exactly the rule `broken`.
    fn assert_mutation_breaks(from: &str, to: &str, broken: &str) {
        assert_mutation_breaks_all(from, to, &[broken]);
    }

    fn assert_mutation_breaks_all(from: &str, to: &str, broken: &[&str]) {
        let mut sources = read_sources(&module_dir()).expect("the GCP module is readable");
        let file = sources
            .iter_mut()
            .find(|(_, text)| text.contains(from))
            .unwrap_or_else(|| panic!("no file of the GCP module contains {from:?}"));
        file.1 = file.1.replacen(from, to, 1);
        let module = TfModule::from_sources(&module_dir(), &sources).expect("the mutant parses");
        let failed: Vec<&str> = check(&module)
            .into_iter()
            .filter(|(_, r)| r.is_err())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(failed, broken, "replacing {from:?} with {to:?}");
    }

    #[test]
    fn the_gcp_module_passes_every_rule() {
        let module = TfModule::load(&module_dir()).expect("the GCP module parses");
        let failed = failures(&module);
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    #[test]
    fn public_ingress_is_caught() {
        assert_mutation_breaks(
            "ingress = \"INGRESS_TRAFFIC_INTERNAL_ONLY\"",
            "ingress = \"INGRESS_TRAFFIC_ALL\"",
            "server ingress is internal only",
        );
    }

    #[test]
    fn a_second_server_instance_is_caught() {
        assert_mutation_breaks(
            "max_instance_count = 1",
            "max_instance_count = 2",
            "server runs exactly one instance",
        );
    }

    #[test]
    fn an_accessor_for_the_wrong_account_is_caught() {
        assert_mutation_breaks(
            "role      = \"roles/secretmanager.secretAccessor\"\n  member    = google_service_account.controller.member",
            "role      = \"roles/secretmanager.secretAccessor\"\n  member    = google_service_account.server.member",
            "secret accessor is the controller's, on the one secret",
        );
    }

    #[test]
    fn an_accessor_on_another_secret_is_caught() {
        assert_mutation_breaks(
            "secret_id = local.secret_resource",
            "secret_id = \"projects/p/secrets/other\"",
            "secret accessor is the controller's, on the one secret",
        );
    }

    #[test]
    fn a_controller_that_does_not_wait_for_its_grant_is_caught() {
        assert_mutation_breaks(
            "  depends_on = [\n    google_secret_manager_secret_iam_member.controller_reads_kubeconfig,\n",
            "  depends_on = [\n",
            "controller waits for its grants",
        );
    }

    #[test]
    fn a_public_invoker_is_caught() {
        assert_mutation_breaks_all(
            "role     = \"roles/run.invoker\"\n  member   = google_service_account.controller.member",
            "role     = \"roles/run.invoker\"\n  member   = \"allUsers\"",
            &[
                "run.invoker on the server for the controller only",
                "no project-level or authoritative IAM, no public members",
            ],
        );
    }

    #[test]
    fn a_project_level_grant_is_caught() {
        assert_mutation_breaks(
            "resource \"google_service_account\" \"server\" {",
            "resource \"google_project_iam_member\" \"logs\" {\n  project = var.project_id\n  role    = \"roles/logging.logWriter\"\n  member  = google_service_account.server.member\n}\n\nresource \"google_service_account\" \"server\" {",
            "no project-level or authoritative IAM, no public members",
        );
    }

    #[test]
    fn private_ranges_egress_is_caught() {
        assert_mutation_breaks(
            "egress    = \"ALL_TRAFFIC\"",
            "egress    = \"PRIVATE_RANGES_ONLY\"",
            "controller egress ALL_TRAFFIC through the connector",
        );
    }

    #[test]
    fn throttled_cpu_is_caught() {
        assert_mutation_breaks(
            "cpu_idle          = false",
            "cpu_idle          = true",
            "controller service keeps CPU allocated",
        );
    }

    #[test]
    fn a_service_by_default_is_caught() {
        assert_mutation_breaks(
            "default     = \"worker-pool\"",
            "default     = \"service\"",
            "controller is a one-instance worker pool by default, a service on switch",
        );
    }

    #[test]
    fn both_controllers_at_once_are_caught() {
        assert_mutation_breaks(
            "use_service     = var.controller_runtime == \"service\"",
            "use_service     = true",
            "controller is a one-instance worker pool by default, a service on switch",
        );
    }

    #[test]
    fn an_unbounded_connector_is_caught() {
        assert_mutation_breaks(
            "  max_instances = var.connector_max_instances\n",
            "",
            "connector has max_instances, Cloud NAT exists",
        );
    }

    #[test]
    fn a_wrong_probe_path_is_caught() {
        assert_mutation_breaks(
            "          path = \"/healthz\"\n          port = local.health_port",
            "          path = \"/\"\n          port = local.health_port",
            "controller probes /healthz",
        );
    }

    #[test]
    fn a_hard_wired_deletion_protection_is_caught() {
        assert_mutation_breaks(
            "deletion_protection = var.deletion_protection\n  # Reached",
            "deletion_protection = false\n  # Reached",
            "deletion_protection is an input",
        );
    }

    #[test]
    fn a_wrong_secret_uri_is_caught() {
        assert_mutation_breaks(
            "/versions/latest\"",
            "/versions/1\"",
            "controller env: secret URI and server URL",
        );
    }
}
