//! Crossplane v2 against the real control plane with both generations
//! installed: namespaced Robots, namespaced ProviderConfigs and
//! ClusterProviderConfigs, usages and in-use protection of each config
//! kind, the 2.3 annotations, CRDs that come and go, one owner per robot,
//! and the standard metrics.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use robot_api::Robot;
use robot_controller::managed::meta;
use robot_controller::managed::usage::{PROVIDER_CONFIG_KIND_LABEL, PROVIDER_CONFIG_LABEL};
use serde_json::json;
use testenv::{CrdSet, RobotServer, wait_for};

use crate::support::{CONVERGE, Env, annotation, condition};

const FAST: &[&str] = &["--poll-interval", "2s", "--max-backoff", "2s"];

fn robot_client(url: &str) -> robot_api::RobotClient {
    robot_api::RobotClient::new(reqwest::Client::new(), url, None).expect("client")
}

/// The `status.users` and finalizers of a config object.
async fn users_of(
    env: &Env,
    ar: &kube::core::ApiResource,
    ns: Option<&str>,
    name: &str,
) -> Option<(i64, bool)> {
    let api = match ns {
        Some(ns) => Api::<kube::core::DynamicObject>::namespaced_with(env.admin.clone(), ns, ar),
        None => env.dynamic(ar),
    };
    let pc = api.get_opt(name).await.ok()??;
    let users = pc.data["status"]["users"].as_i64().unwrap_or(0);
    let in_use = pc
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == "in-use.crossplane.io"));
    Some((users, in_use))
}

async fn wait_users(
    env: &Env,
    ar: &kube::core::ApiResource,
    ns: Option<&str>,
    name: &str,
    users: i64,
) {
    wait_for(
        &format!("{} {name} users={users}", ar.kind),
        CONVERGE,
        || async {
            let (u, in_use) = users_of(env, ar, ns, name).await?;
            (u == users && in_use).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_guides_workflow_with_namespaced_robots() {
    let env = Env::start().await;
    let second = RobotServer::start(&[])
        .await
        .expect("a second robot server");
    env.namespace("team-a").await;
    env.namespace("team-b").await;
    // team-b has its own robot server, through a namespaced ProviderConfig.
    env.ns_provider_config("team-b", "local", second.url())
        .await;
    let allowed = format!("{},{}", env.server.url(), second.url());
    let mut args = FAST.to_vec();
    args.extend(["--allowed-endpoints", &allowed]);
    let mut controller = env.controller(&args);
    controller.wait_ready().await;

    // The same name in two namespaces, on two servers: two robots.
    let a = env
        .create_ns_robot(
            "team-a",
            "r1",
            "yellow",
            json!({ "spec": { "writeConnectionSecretToRef": { "name": "r1-conn" } } }),
        )
        .await;
    let b = env
        .create_ns_robot(
            "team-b",
            "r1",
            "green",
            json!({ "spec": { "providerConfigRef": { "kind": "ProviderConfig", "name": "local" } } }),
        )
        .await;
    let ready_a = env.wait_ns_ready("team-a", "r1").await;
    env.wait_ns_ready("team-b", "r1").await;
    assert_eq!(
        env.server_robot("r1").await,
        Some(Robot::new("r1", "yellow"))
    );
    assert_eq!(
        robot_client(second.url()).get("r1").await.unwrap(),
        Some(Robot::new("r1", "green"))
    );
    assert_eq!(annotation(&ready_a, meta::EXTERNAL_NAME), Some("r1"));
    let status = ready_a.status.as_ref().unwrap();
    assert_eq!(
        status.resource.observed_generation,
        ready_a.metadata.generation
    );
    assert_eq!(
        condition(&ready_a, "Ready").unwrap().observed_generation,
        ready_a.metadata.generation
    );

    // The connection Secret lives beside the Robot.
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), "team-a");
    let secret = wait_for("connection secret in team-a", CONVERGE, || async {
        secrets.get_opt("r1-conn").await.ok().flatten()
    })
    .await
    .unwrap();
    assert_eq!(secret.data.unwrap()["color"].0, b"yellow");

    // Usages: in the Robot's namespace, named by its UID, labelled with the
    // config's name and kind, owned by the Robot.
    let usages = Api::<kube::core::DynamicObject>::namespaced_with(
        env.admin.clone(),
        "team-a",
        &env.res.ns_usage,
    )
    .list(&ListParams::default())
    .await
    .unwrap();
    assert_eq!(usages.items.len(), 1);
    let usage = &usages.items[0];
    assert_eq!(usage.metadata.name, a.metadata.uid);
    let labels = usage.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[PROVIDER_CONFIG_LABEL], "default");
    assert_eq!(labels[PROVIDER_CONFIG_KIND_LABEL], "ClusterProviderConfig");
    let owner = &usage.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(&owner.uid), a.metadata.uid.as_ref());
    assert_eq!(
        usage.data["providerConfigRef"]["kind"],
        "ClusterProviderConfig"
    );

    // Each config kind counts its users and is protected while used.
    wait_users(&env, &env.res.cluster_provider_config, None, "default", 1).await;
    wait_users(
        &env,
        &env.res.ns_provider_config,
        Some("team-b"),
        "local",
        1,
    )
    .await;
    env.dynamic(&env.res.cluster_provider_config)
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let ns_pcs = Api::<kube::core::DynamicObject>::namespaced_with(
        env.admin.clone(),
        "team-b",
        &env.res.ns_provider_config,
    );
    ns_pcs
        .delete("local", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_events("UsageAccounting", "default", |e| !e.is_empty())
        .await;
    assert!(
        env.dynamic(&env.res.cluster_provider_config)
            .get_opt("default")
            .await
            .unwrap()
            .is_some(),
        "a used ClusterProviderConfig stays"
    );
    assert!(
        ns_pcs.get_opt("local").await.unwrap().is_some(),
        "a used ProviderConfig stays"
    );

    // A namespaced ProviderConfig serves its own namespace only.
    env.create_ns_robot(
        "team-a",
        "stray",
        "red",
        json!({ "spec": { "providerConfigRef": { "kind": "ProviderConfig", "name": "local" } } }),
    )
    .await;
    let stray = env
        .wait_ns_condition("team-a", "stray", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&stray, "Synced")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        message.contains("cannot get ProviderConfig: ProviderConfig.dummy.m.crossplane.io team-a/\"local\" not found"),
        "{message}"
    );
    assert_eq!(
        robot_client(second.url()).get("stray").await.unwrap(),
        None,
        "nothing sent to team-b's server"
    );
    env.ns_robots("team-a")
        .delete("stray", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ns_gone("team-a", "stray").await;

    // Deleting the Robots deletes the robots, their usages, the Secret;
    // then the configs can go.
    env.ns_robots("team-a")
        .delete("r1", &DeleteParams::default())
        .await
        .unwrap();
    env.ns_robots("team-b")
        .delete("r1", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ns_gone("team-a", "r1").await;
    env.wait_ns_gone("team-b", "r1").await;
    assert_eq!(env.server_robot("r1").await, None);
    assert_eq!(robot_client(second.url()).get("r1").await.unwrap(), None);
    assert!(secrets.get_opt("r1-conn").await.unwrap().is_none());
    wait_for("both configs released and gone", CONVERGE, || async {
        let cpc = env
            .dynamic(&env.res.cluster_provider_config)
            .get_opt("default")
            .await
            .ok()?;
        let pc = ns_pcs.get_opt("local").await.ok()?;
        (cpc.is_none() && pc.is_none()).then_some(())
    })
    .await
    .unwrap();
    let _ = b;
}

#[tokio::test]
async fn a_namespaced_config_counts_only_its_namespace() {
    // crossplane#7154: same-named ProviderConfigs in two namespaces.
    let env = Env::start().await;
    env.namespace("team-a").await;
    env.namespace("team-b").await;
    for ns in ["team-a", "team-b"] {
        env.ns_provider_config(ns, "pc", env.server.url()).await;
    }
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    env.create_ns_robot(
        "team-a",
        "only",
        "red",
        json!({ "spec": { "providerConfigRef": { "kind": "ProviderConfig", "name": "pc" } } }),
    )
    .await;
    env.wait_ns_ready("team-a", "only").await;
    wait_users(&env, &env.res.ns_provider_config, Some("team-a"), "pc", 1).await;
    wait_users(&env, &env.res.ns_provider_config, Some("team-b"), "pc", 0).await;
    // The unused one goes at once; the used one stays.
    let b = Api::<kube::core::DynamicObject>::namespaced_with(
        env.admin.clone(),
        "team-b",
        &env.res.ns_provider_config,
    );
    b.delete("pc", &DeleteParams::default()).await.unwrap();
    wait_for(
        "team-b's unused ProviderConfig deleted",
        CONVERGE,
        || async { b.get_opt("pc").await.ok()?.is_none().then_some(()) },
    )
    .await
    .unwrap();
    // ...and the ClusterProviderConfig `default`, used by nothing, too.
    wait_users(&env, &env.res.cluster_provider_config, None, "default", 0).await;
}

#[tokio::test]
async fn per_robot_poll_interval_and_reconcile_requests_in_both_generations() {
    let env = Env::start().await;
    env.namespace("team-a").await;
    // A default poll that would never come within the test.
    let mut controller = env.controller(&["--poll-interval", "1h", "--min-poll-interval", "1s"]);
    controller.wait_ready().await;
    let fast_poll = json!({ "metadata": { "annotations": { meta::POLL_INTERVAL: "2s" } } });
    env.create_robot("legacy", "red", fast_poll.clone()).await;
    env.create_ns_robot("team-a", "modern", "blue", fast_poll)
        .await;
    env.wait_ready("legacy").await;
    env.wait_ns_ready("team-a", "modern").await;

    // Changed behind our back: put back within the Robot's own poll.
    let server = env.server_client();
    server
        .update("legacy", &Robot::new("legacy", "pink"))
        .await
        .unwrap();
    server
        .update("modern", &Robot::new("modern", "pink"))
        .await
        .unwrap();
    env.wait_server_color("legacy", "red").await;
    env.wait_server_color("modern", "blue").await;

    // A reconcile request is handled at once and recorded.
    let request = |token: &str| json!({ "metadata": { "annotations": { meta::RECONCILE_REQUESTED_AT: token } } });
    env.patch_robot("legacy", request("now-1")).await;
    env.ns_robots("team-a")
        .patch(
            "modern",
            &PatchParams::default(),
            &Patch::Merge(&request("now-1")),
        )
        .await
        .unwrap();
    wait_for("lastHandledReconcileAt recorded", CONVERGE, || async {
        let legacy = env.robot("legacy").await?;
        let modern = env.ns_robot("team-a", "modern").await?;
        let token = |s: Option<&robot_controller::kinds::robot::RobotStatus>| {
            s.and_then(|s| s.resource.last_handled_reconcile_at.clone())
        };
        (token(legacy.status.as_ref()).as_deref() == Some("now-1")
            && token(modern.status.as_ref()).as_deref() == Some("now-1"))
        .then_some(())
    })
    .await
    .unwrap();
    env.wait_event("ReconcileRequestHandled", "legacy").await;
    env.wait_ns_event("team-a", "ReconcileRequestHandled", "modern")
        .await;
}

#[tokio::test]
async fn a_kind_whose_crd_comes_later_and_goes_never_stops_the_process() {
    let env = Env::start_with(
        CrdSet::OursLegacy,
        robot_controller::api::Family::Crossplane,
        &[],
    )
    .await;
    let mut controller = env.controller(FAST);
    // Ready with the legacy generation; the namespaced kinds wait, said so.
    let body = controller
        .wait_readyz("ready, v2 waiting", |s, _| s == 200)
        .await;
    assert!(
        body.contains("waiting Robot.iam.dummy.m.crossplane.io: the control plane serves no dummy.m.crossplane.io ProviderConfig kinds yet"),
        "{body}"
    );
    env.create_robot("old", "red", json!({})).await;
    env.wait_ready("old").await;

    // The v2 CRDs arrive (a ManagedResourceDefinition activated).
    env.cp
        .install_files(&CrdSet::OursLegacy.namespaced_files().unwrap())
        .await
        .unwrap();
    env.cluster_provider_config("default", env.server.url())
        .await;
    env.namespace("team-a").await;
    env.create_ns_robot("team-a", "new", "blue", json!({}))
        .await;
    env.wait_ns_ready("team-a", "new").await;
    controller
        .wait_readyz("no kind waits", |s, b| s == 200 && !b.contains("waiting"))
        .await;

    // The namespaced Robot's CRD is removed: that controller stops, the
    // process and the other kinds go on.
    let crds: Api<CustomResourceDefinition> = Api::all(env.admin.clone());
    // Its finalizer would hold the CRD's deletion: let the Robot go first.
    env.ns_robots("team-a")
        .delete("new", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ns_gone("team-a", "new").await;
    crds.delete("robots.iam.dummy.m.crossplane.io", &DeleteParams::default())
        .await
        .unwrap();
    let body = controller
        .wait_readyz("the namespaced Robot waits again", |s, b| {
            s == 200 && b.contains("waiting Robot.iam.dummy.m.crossplane.io: the control plane does not serve robots")
        })
        .await;
    assert!(body.starts_with("ok\n"), "{body}");
    env.set_color("old", "green").await;
    env.wait_server_color("old", "green").await;
    assert_eq!(controller.get("/healthz").await.map(|(s, _)| s), Some(200));
    assert!(
        controller
            .wait_exit(std::time::Duration::ZERO)
            .await
            .is_none(),
        "still running"
    );
}

#[tokio::test]
async fn one_robot_one_owner_across_namespaces_and_generations() {
    let env = Env::start().await;
    env.namespace("team-a").await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    // The oldest claimant: a legacy Robot.
    env.create_robot("shared", "red", json!({})).await;
    env.wait_ready("shared").await;
    // A later namespaced Robot naming the same robot on the same server.
    let claim = json!({ "metadata": { "annotations": { meta::EXTERNAL_NAME: "shared" } } });
    env.create_ns_robot("team-a", "copy", "blue", claim.clone())
        .await;
    let copy = env
        .wait_ns_condition("team-a", "copy", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&copy, "Synced").unwrap().message.clone().unwrap();
    assert!(
        message.contains("already managed by Robot.iam.dummy.crossplane.io shared"),
        "{message}"
    );
    env.wait_ns_event("team-a", "ExternalNameConflict", "copy")
        .await;
    assert_eq!(
        env.server_robot("shared").await,
        Some(Robot::new("shared", "red"))
    );

    // Deleting the later claimant leaves the robot.
    env.ns_robots("team-a")
        .delete("copy", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ns_gone("team-a", "copy").await;
    assert_eq!(
        env.server_robot("shared").await,
        Some(Robot::new("shared", "red"))
    );

    // Orphaning the owner, then deleting it, leaves the robot; the next
    // claimant is then the only one and takes it over.
    env.create_ns_robot("team-a", "heir", "blue", claim).await;
    env.wait_ns_condition("team-a", "heir", "Synced", "False", Some("ReconcileError"))
        .await;
    env.patch_robot("shared", json!({ "spec": { "deletionPolicy": "Orphan" } }))
        .await;
    env.delete_robot("shared").await;
    env.wait_gone("shared").await;
    env.wait_ns_ready("team-a", "heir").await;
    env.wait_server_color("shared", "blue").await;
}

#[tokio::test]
async fn crossplanes_managed_resource_metrics_by_name() {
    let env = Env::start().await;
    env.namespace("team-a").await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    env.create_ns_robot("team-a", "m1", "red", json!({})).await;
    env.create_ns_robot("team-a", "m2", "red", json!({})).await;
    env.wait_ns_ready("team-a", "m1").await;
    env.wait_ns_ready("team-a", "m2").await;
    env.server_client()
        .update("m1", &Robot::new("m1", "pink"))
        .await
        .unwrap();
    env.wait_server_color("m1", "red").await;
    env.ns_robots("team-a")
        .delete("m2", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ns_gone("team-a", "m2").await;
    let gvk = "gvk=\"iam.dummy.m.crossplane.io/v1alpha1, Kind=Robot\"";
    let metrics = wait_for("the standard metrics", CONVERGE, || async {
        let m = controller.metrics().await;
        let has = |line: &str| m.lines().any(|l| l == line);
        (has(&format!("crossplane_managed_resource_exists{{{gvk}}} 1"))
            && has(&format!("crossplane_managed_resource_ready{{{gvk}}} 1"))
            && has(&format!("crossplane_managed_resource_synced{{{gvk}}} 1")))
        .then_some(m)
    })
    .await
    .unwrap();
    for name in [
        "crossplane_managed_resource_first_time_to_reconcile_seconds_count",
        "crossplane_managed_resource_first_time_to_readiness_seconds_count",
        "crossplane_managed_resource_deletion_seconds_count",
        "crossplane_managed_resource_drift_seconds_count",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{{gvk}}}")) && !l.ends_with(" 0")),
            "{name} missing or zero in\n{metrics}"
        );
    }
    // Ours keep their names, failures get a reason.
    assert!(metrics.contains("robot_controller_reconciles_total{kind=\"Robot.iam.dummy.m.crossplane.io\",result=\"synced\",reason=\"\"}"), "{metrics}");
}
