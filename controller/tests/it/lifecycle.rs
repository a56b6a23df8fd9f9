//! The guide's workflow and the Crossplane semantics around it, against a
//! real control plane, a real robot server and the real controller.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use robot_api::Robot;
use robot_controller::managed::meta;
use serde_json::json;
use testenv::wait_for;

use crate::support::{CONVERGE, Env, annotation, condition};

const FAST: &[&str] = &["--poll-interval", "2s", "--max-backoff", "2s"];

#[tokio::test]
async fn create_update_drift_delete() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;

    env.create_robot("example", "yellow", json!({})).await;
    let robot = env.wait_ready("example").await;
    assert_eq!(
        env.server_robot("example").await,
        Some(Robot::new("example", "yellow"))
    );
    assert!(
        robot
            .metadata
            .finalizers
            .as_ref()
            .unwrap()
            .iter()
            .any(|f| f == meta::FINALIZER)
    );
    assert_eq!(annotation(&robot, meta::EXTERNAL_NAME), Some("example"));
    // External names are deterministic: no create-pending/succeeded
    // bookkeeping is written (an interrupted create is settled by observing).
    assert_eq!(annotation(&robot, meta::CREATE_PENDING), None);
    let ready = condition(&robot, "Ready").unwrap();
    assert_eq!(ready.reason, "Available");
    assert_eq!(ready.observed_generation, robot.metadata.generation);
    assert_eq!(
        robot
            .status
            .as_ref()
            .unwrap()
            .at_provider
            .as_ref()
            .unwrap()
            .color
            .as_deref(),
        Some("yellow")
    );

    // Usage tracked, ProviderConfig protected and counting.
    let usages = env
        .dynamic(&env.res.usage)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(usages.items.len(), 1);
    assert_eq!(usages.items[0].metadata.name, robot.metadata.uid);
    wait_for("ProviderConfig users=1", CONVERGE, || async {
        let pc = env
            .dynamic(&env.res.provider_config)
            .get("default")
            .await
            .ok()?;
        (pc.data["status"]["users"] == 1
            && pc
                .metadata
                .finalizers
                .as_ref()?
                .iter()
                .any(|f| f == "in-use.crossplane.io"))
        .then_some(())
    })
    .await
    .unwrap();

    // The event Crossplane users look for in `kubectl describe`.
    env.wait_event("CreatedExternalResource", "example").await;

    // Update: the transition time of Ready stays, the color follows.
    let ready_since = ready.last_transition_time.clone();
    env.set_color("example", "green").await;
    env.wait_server_color("example", "green").await;
    let robot = env.wait_ready("example").await;
    assert_eq!(
        condition(&robot, "Ready").unwrap().last_transition_time,
        ready_since
    );

    // Drift: changed and deleted behind our back, put back within a poll.
    env.server_client()
        .update("example", &Robot::new("example", "pink"))
        .await
        .unwrap();
    env.wait_server_color("example", "green").await;
    env.server_client().delete("example").await.unwrap();
    env.wait_server_color("example", "green").await;

    // Delete: gone from the server, then from the control plane.
    env.delete_robot("example").await;
    env.wait_gone("example").await;
    assert_eq!(env.server_robot("example").await, None);
    wait_for("usage released, users=0", CONVERGE, || async {
        let usages = env
            .dynamic(&env.res.usage)
            .list(&ListParams::default())
            .await
            .ok()?;
        let pc = env
            .dynamic(&env.res.provider_config)
            .get("default")
            .await
            .ok()?;
        (usages.items.is_empty() && pc.data["status"]["users"] == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn orphan_keeps_the_robot_and_adopt_takes_one_over() {
    let env = Env::start().await;
    env.server_client()
        .create(&Robot::new("r2d2", "blue"))
        .await
        .unwrap();
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;

    // Adopt: a preset external name takes over the existing robot.
    env.create_robot(
        "astromech",
        "white",
        json!({ "metadata": { "annotations": { meta::EXTERNAL_NAME: "r2d2" } } }),
    )
    .await;
    env.wait_ready("astromech").await;
    env.wait_server_color("r2d2", "white").await;
    assert_eq!(
        env.server_robot("astromech").await,
        None,
        "no robot under the object name"
    );

    // Orphan: the Robot goes, the robot stays.
    env.patch_robot(
        "astromech",
        json!({ "spec": { "deletionPolicy": "Orphan" } }),
    )
    .await;
    env.delete_robot("astromech").await;
    env.wait_gone("astromech").await;
    assert_eq!(
        env.server_robot("r2d2").await,
        Some(Robot::new("r2d2", "white"))
    );
    assert_eq!(env.server_robots().await.len(), 1);
}

#[tokio::test]
async fn observe_only_never_writes_to_the_server() {
    let env = Env::start().await;
    env.server_client()
        .create(&Robot::new("imported", "silver"))
        .await
        .unwrap();
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;

    let observe = json!({ "spec": { "managementPolicies": ["Observe"] } });
    let observe_with_secret = json!({ "spec": {
        "managementPolicies": ["Observe"],
        "writeConnectionSecretToRef": { "name": "imported-conn", "namespace": "default" },
    } });
    env.create_robot("imported", "gold", observe_with_secret)
        .await;
    let robot = env.wait_ready("imported").await;
    // Finalized like any other: the test control plane runs no garbage
    // collector, so only the finalizer removes the usage and the Secret.
    assert!(
        robot
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == meta::FINALIZER),
        "{:?}",
        robot.metadata.finalizers
    );
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), "default");
    wait_for("connection secret", CONVERGE, || async {
        secrets.get_opt("imported-conn").await.ok().flatten()
    })
    .await
    .unwrap();
    assert_eq!(
        robot.status.unwrap().at_provider.unwrap().color.as_deref(),
        Some("silver"),
        "observed, not changed"
    );
    assert_eq!(env.server_robot("imported").await.unwrap().color, "silver");

    // Observing something that does not exist is an error, not a create.
    env.create_robot("phantom", "gold", observe).await;
    let robot = env
        .wait_condition("phantom", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&robot, "Synced")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(env.server_robot("phantom").await, None);

    // Deleting an observe-only Robot leaves the robot alone, and removes
    // what the controller made for it.
    env.delete_robot("imported").await;
    env.wait_gone("imported").await;
    assert_eq!(env.server_robot("imported").await.unwrap().color, "silver");
    assert!(secrets.get_opt("imported-conn").await.unwrap().is_none());
    env.delete_robot("phantom").await;
    env.wait_gone("phantom").await;
    wait_for("usages released", CONVERGE, || async {
        let usages = env
            .dynamic(&env.res.usage)
            .list(&ListParams::default())
            .await
            .ok()?;
        usages.items.is_empty().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn paused_makes_no_external_call_until_resumed() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;

    env.create_robot(
        "sleepy",
        "grey",
        json!({ "metadata": { "annotations": { meta::PAUSED: "true" } } }),
    )
    .await;
    env.wait_condition("sleepy", "Synced", "False", Some("ReconcilePaused"))
        .await;
    assert_eq!(env.server_robot("sleepy").await, None);

    env.patch_robot(
        "sleepy",
        json!({ "metadata": { "annotations": { meta::PAUSED: null } } }),
    )
    .await;
    env.wait_ready("sleepy").await;
    env.wait_server_color("sleepy", "grey").await;
}

#[tokio::test]
async fn provider_config_missing_then_created() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;

    env.create_robot(
        "waiting",
        "orange",
        json!({ "spec": { "providerConfigRef": { "name": "later" } } }),
    )
    .await;
    let robot = env
        .wait_condition("waiting", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&robot, "Synced")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(message.contains("\"later\" not found"), "{message}");

    env.provider_config("later", env.server.url()).await;
    env.wait_ready("waiting").await;
    env.wait_server_color("waiting", "orange").await;

    // A used ProviderConfig cannot vanish: its deletion waits for its users.
    env.dynamic(&env.res.provider_config)
        .delete("later", &Default::default())
        .await
        .unwrap();
    env.wait_event("UsageAccounting", "later").await;
    assert!(
        env.dynamic(&env.res.provider_config)
            .get_opt("later")
            .await
            .unwrap()
            .is_some(),
        "in use: kept by its finalizer"
    );
    env.delete_robot("waiting").await;
    env.wait_gone("waiting").await;
    wait_for("unused ProviderConfig deleted", CONVERGE, || async {
        env.dynamic(&env.res.provider_config)
            .get_opt("later")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_down_then_back_and_restarted_empty() {
    let mut env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    for name in ["one", "two", "three"] {
        env.create_robot(name, "teal", json!({})).await;
    }
    for name in ["one", "two", "three"] {
        env.wait_ready(name).await;
    }

    env.server.kill().await;
    env.set_color("one", "navy").await;
    let robot = env
        .wait_condition("one", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&robot, "Synced")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        message.starts_with("observe failed: cannot get robot"),
        "{message}"
    );
    // The failure repeats with each retry: one Event, counted as a series.
    let warnings = env
        .wait_events("CannotObserveExternalResource", "one", |events| {
            events
                .iter()
                .any(|e| e.series.as_ref().is_some_and(|s| s.count.unwrap_or(0) >= 2))
        })
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:#?}");

    // Back, but empty (its state was in memory): everything is recreated.
    env.server.restart().await.unwrap();
    env.wait_server_color("one", "navy").await;
    env.wait_server_color("two", "teal").await;
    env.wait_server_color("three", "teal").await;
    env.wait_ready("one").await;
    assert_eq!(env.server_robots().await.len(), 3);
}

#[tokio::test]
async fn an_interrupted_create_is_settled_by_observing() {
    let env = Env::start().await;
    // As a controller (ours, or a Crossplane provider before it) killed
    // between the create and its record would leave things: finalized,
    // pending newer than any result, robot created (or not).
    let pending = json!({ "metadata": {
        "finalizers": [meta::FINALIZER],
        "annotations": {
            meta::CREATE_PENDING: "2026-12-01T00:00:00Z",
            meta::EXTERNAL_NAME: "made",
        },
    } });
    env.server_client()
        .create(&Robot::new("made", "red"))
        .await
        .unwrap();
    env.create_robot("made", "red", pending.clone()).await;
    let mut pending_lost = pending;
    pending_lost["metadata"]["annotations"][meta::EXTERNAL_NAME] = json!("lost");
    env.create_robot("lost", "red", pending_lost).await;

    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    env.wait_ready("made").await;
    env.wait_ready("lost").await;
    let names: Vec<String> = env
        .server_robots()
        .await
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["lost", "made"], "each exactly once");
}

#[tokio::test]
async fn connection_details_are_published_and_removed() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    env.create_robot(
        "talker",
        "cyan",
        json!({ "spec": { "writeConnectionSecretToRef": { "name": "talker-conn", "namespace": "default" } } }),
    )
    .await;
    env.wait_ready("talker").await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), "default");
    let secret = wait_for("connection secret", CONVERGE, || async {
        secrets.get_opt("talker-conn").await.ok().flatten()
    })
    .await
    .unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["name"].0, b"talker");
    assert_eq!(data["color"].0, b"cyan");
    assert_eq!(
        secret.type_.as_deref(),
        Some("connection.crossplane.io/v1alpha1")
    );

    // Someone deletes the Secret, then edits it: each is repaired at the
    // next poll, without a restart.
    secrets
        .delete("talker-conn", &Default::default())
        .await
        .unwrap();
    wait_for("connection secret recreated", CONVERGE, || async {
        secrets.get_opt("talker-conn").await.ok().flatten()
    })
    .await
    .unwrap();
    secrets
        .patch(
            "talker-conn",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "data": { "color": "cmVk" } })),
        )
        .await
        .unwrap();
    wait_for("connection secret repaired", CONVERGE, || async {
        let s = secrets.get_opt("talker-conn").await.ok().flatten()?;
        (s.data?.get("color")?.0 == b"cyan").then_some(())
    })
    .await
    .unwrap();

    env.delete_robot("talker").await;
    env.wait_gone("talker").await;
    assert!(secrets.get_opt("talker-conn").await.unwrap().is_none());
}

#[tokio::test]
async fn steady_state_writes_nothing_to_the_control_plane() {
    let env = Env::start().await;
    let mut controller = env.controller(&["--poll-interval", "1s"]);
    controller.wait_ready().await;
    for i in 0..20 {
        env.create_robot(&format!("calm-{i}"), "beige", json!({}))
            .await;
    }
    for i in 0..20 {
        env.wait_ready(&format!("calm-{i}")).await;
    }
    // The last writes of the converging (the ProviderConfig's users count,
    // once its burst settles) may still be on their way: wait for one whole
    // poll without a write, then measure over the next three polls.
    let polls = |n: f64, since: f64| {
        let controller = &controller;
        wait_for(
            "20 Robots polled",
            Duration::from_secs(30),
            move || async move { (controller.reconciles().await >= since + 20.0 * n).then_some(()) },
        )
    };
    let mut quiet = false;
    for _ in 0..10 {
        let (writes, reconciles) = (controller.writes().await, controller.reconciles().await);
        polls(1.0, reconciles).await.unwrap();
        if controller.writes().await == writes {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the converging's writes never ended");
    let before = controller.writes().await;
    polls(3.0, controller.reconciles().await).await.unwrap();
    assert_eq!(
        controller.writes().await,
        before,
        "no control-plane write over three polls while nothing changes"
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly_within_ten_seconds() {
    let env = Env::start().await;
    let mut controller = env.controller(&[]);
    controller.wait_ready().await;
    env.create_robot("last", "black", json!({})).await;
    env.wait_ready("last").await;
    // The container health check (ECS runs it inside the image).
    let probe = |health: std::net::SocketAddr| {
        std::process::Command::new(env!("CARGO_BIN_EXE_robot-controller"))
            .arg("healthcheck")
            .env("ROBOT_CONTROLLER_HEALTH_LISTEN", health.to_string())
            .status()
            .expect("run healthcheck")
    };
    assert!(probe(controller.health).success());
    controller.signal(rustix::process::Signal::TERM);
    let status = controller.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        controller.log_tail()
    );
    assert_eq!(
        probe(controller.health).code(),
        Some(1),
        "nothing answers any more"
    );
}
