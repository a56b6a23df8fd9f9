//! The control plane restarted, refusing for load (API Priority and Fairness), answering 5xx, and written by another writer.

use super::*;

#[tokio::test]
async fn apiserver_and_etcd_restarted_while_robots_change() {
    let mut env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let all = names("cp", 10);
    create_all(&env, &all[..6], "red").await;
    wait_converged(&env, &[&controller], "before the restarts").await;

    // Changes just made are in flight when the apiserver goes away.
    churn(&env, &all[..2], "blue", &all[2..3], &all[6..8]).await;
    env.cp.restart_apiserver().await.expect("apiserver restart");
    let back = Instant::now();
    churn(&env, &all[3..4], "green", &[], &[]).await;
    let took = wait_converged(&env, &[&controller], "after the apiserver restart").await;
    report(
        "kube-apiserver restarted (killed) while Robots change",
        "watches re-established, changes made before and after applied",
        took.min(back.elapsed()),
    );

    churn(&env, &all[4..5], "white", &all[5..6], &all[8..]).await;
    env.cp.restart_etcd().await.expect("etcd restart");
    let back = Instant::now();
    churn(&env, &all[..1], "black", &[], &[]).await;
    let took = wait_converged(&env, &[&controller], "after the etcd restart").await;
    report(
        "etcd restarted (killed) while Robots change",
        "apiserver unready meanwhile; everything applied after",
        took.min(back.elapsed()),
    );
}

/// A priority level with a single seat that rejects instead of queueing,
/// and a flow schema sending the controller's requests to it.
const SQUEEZE: &str = r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: robot-controller-squeeze
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: robot-controller-squeeze
spec:
  priorityLevelConfiguration:
    name: robot-controller-squeeze
  matchingPrecedence: 500
  distinguisherMethod:
    type: ByUser
  rules:
    - subjects:
        - kind: User
          user:
            name: robot-controller
      resourceRules:
        - verbs: ["*"]
          apiGroups: ["*"]
          resources: ["*"]
          clusterScope: true
          namespaces: ["*"]
      nonResourceRules:
        - verbs: ["*"]
          nonResourceURLs: ["*"]
"#;

/// Requests the apiserver's flow control rejected for our flow schema.
async fn rejected_by_flow_control(env: &Env) -> f64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = env
        .admin
        .request_text(request)
        .await
        .expect("apiserver /metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_rejected_requests_total{")
                && l.contains("flow_schema=\"robot-controller-squeeze\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn too_many_requests_from_priority_and_fairness() {
    let env = Env::start().await;
    env.cp.apply_yaml(SQUEEZE).await.expect("apply the squeeze");
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let all = names("busy", 60);
    let started = Instant::now();
    create_all(&env, &all[..50], "red").await;
    churn(&env, &all[..10], "blue", &all[10..15], &all[50..]).await;
    let took = wait_converged(&env, &[&controller], "under the squeeze").await;
    let rejected = rejected_by_flow_control(&env).await;
    assert!(rejected > 0.0, "flow control rejected nothing");
    let seen = controller
        .metric_sum("robot_controller_kube_requests_total", |l| {
            l.contains("code=\"429\"")
        })
        .await;
    assert!(seen > 0.0, "the controller's metrics show no 429");

    // Lifted: the next changes go through at full speed.
    for (kind, plural) in [
        ("FlowSchema", "flowschemas"),
        ("PriorityLevelConfiguration", "prioritylevelconfigurations"),
    ] {
        let ar = kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("flowcontrol.apiserver.k8s.io", "v1", kind),
            plural,
        );
        env.dynamic(&ar)
            .delete("robot-controller-squeeze", &DeleteParams::default())
            .await
            .expect("lift the squeeze");
    }
    churn(&env, &all[15..20], "green", &[], &[]).await;
    wait_converged(&env, &[&controller], "after the squeeze").await;
    report(
        "429 Too Many Requests from API Priority and Fairness (one seat, reject)",
        &format!("{rejected} requests rejected; retried; 60 Robots converged under it"),
        took.min(started.elapsed()),
    );
}

#[tokio::test]
async fn apiserver_answering_5xx() {
    let env = Env::start().await;
    let (proxy, controller, all) =
        converged_behind_proxy(&env, "fivexx", 10, 6, "before the 5xx").await;

    for (code, reason) in [(500, "InternalError"), (503, "ServiceUnavailable")] {
        let before = proxy.answered();
        proxy.set(Fault::Answer(Answer::kubernetes_status(
            code,
            reason,
            "injected by the fault proxy",
        )));
        churn(&env, &all[..2], &format!("c{code}"), &[], &[]).await;
        wait_for("5xx answered", CONVERGE, || async {
            (proxy.answered() > before + 5).then_some(())
        })
        .await
        .expect("the controller kept asking");
        tokio::time::sleep(Duration::from_secs(3)).await; // the fault lasting
        let healed = Instant::now();
        proxy.set(Fault::Pass);
        let took = wait_converged(&env, &[&controller], "after the 5xx").await;
        report(
            &format!("kube-apiserver answers {code} {reason} (Status) for 3+ s"),
            &format!("{} requests answered {code}", proxy.answered() - before),
            took.min(healed.elapsed()),
        );
    }
    churn(&env, &[], "red", &all[2..4], &all[6..]).await;
    wait_converged(&env, &[&controller], "at the end").await;
    let errors = controller
        .metric_sum("robot_controller_kube_requests_total", |l| {
            l.contains("code=\"500\"")
        })
        .await;
    assert!(errors > 0.0, "the controller saw no 500");
}

#[tokio::test]
async fn status_writes_conflict_with_another_writer() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let all = names("shared", 12);
    const THEIRS: &str = "example.com/someone-else";

    // Another writer: labels every Robot, and puts its own finalizer on,
    // over and over while the controller creates and updates them.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for name in &all {
                n += 1;
                let Ok(Some(r)) = env.robots().get_opt(name).await else {
                    continue;
                };
                let mut finalizers = r.metadata.finalizers.clone().unwrap_or_default();
                if !finalizers.iter().any(|f| f == THEIRS) {
                    finalizers.push(THEIRS.into());
                }
                // Guarded by version as a careful writer does; a conflict
                // here is simply retried on the next round.
                let patch = json!({ "metadata": {
                    "resourceVersion": r.metadata.resource_version,
                    "labels": { "touched": n.to_string() },
                    "finalizers": finalizers,
                } });
                let _ = env
                    .robots()
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    };
    let changes = async {
        create_all(&env, &all, "red").await;
        // Recolor one Robot after another until some write of ours has
        // met the other writer's (a 409), for at most a minute.
        let started = Instant::now();
        for (i, name) in all.iter().cycle().enumerate() {
            let conflicts = controller
                .metric_sum("robot_controller_kube_requests_total", |l| {
                    l.contains("code=\"409\"")
                })
                .await;
            if (i >= all.len() && conflicts > 0.0) || started.elapsed() > CONVERGE {
                break;
            }
            env.set_color(name, &format!("blue-{i}")).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    tokio::join!(writer, changes);
    let settled = Instant::now();
    let took = wait_converged(&env, &[&controller], "after the other writer").await;
    let conflicts = controller
        .metric_sum("robot_controller_kube_requests_total", |l| {
            l.contains("code=\"409\"")
        })
        .await;
    assert!(conflicts > 0.0, "the other writer never got in the way");
    // A conflict is a stale view, not a failure: looked at again at once,
    // never reported as a reconcile error (which backs off).
    let errors = controller
        .metric_sum("robot_controller_reconciles_total", |l| {
            l.contains("result=\"error\"")
        })
        .await;
    assert_eq!(errors, 0.0, "conflicts were handled as reconcile errors");
    // Nothing the other writer put on was dropped by our writes.
    for name in &all {
        let r = env.robot(name).await.expect("Robot");
        assert!(
            meta::has_finalizer(&r.metadata, THEIRS),
            "{name} lost the other writer's finalizer"
        );
        assert!(
            r.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("touched"))
        );
    }
    // Deletion waits for both finalizers; ours goes once the robot is gone.
    for name in &all[..4] {
        env.delete_robot(name).await;
    }
    for name in &all[..4] {
        wait_for("our finalizer released", CONVERGE, || async {
            let r = env.robot(name).await?;
            (!meta::has_finalizer(&r.metadata, meta::FINALIZER)).then_some(())
        })
        .await
        .expect("finalized");
        assert_eq!(env.server_robot(name).await, None);
        let patch = json!({ "metadata": { "finalizers": [] } });
        env.patch_robot(name, patch).await;
    }
    wait_converged(&env, &[&controller], "after the deletes").await;
    report(
        "another writer patches every Robot (labels, its own finalizer) while they change",
        &format!(
            "{conflicts} of our writes got 409 Conflict and were redone; no finalizer or label lost"
        ),
        took.min(settled.elapsed()),
    );
}

/// Every connection to the control plane goes silent at once, without a
/// reset (a NAT gateway that forgot them); new connections work. Requests
/// on the dead connections time out (`--kube-timeout`), watches are
/// dropped at the read timeout and resumed on new connections, and no
/// reconcile hangs past `--reconcile-timeout`.
#[tokio::test]
async fn half_open_apiserver_connections_are_abandoned_and_replaced() {
    let env = Env::start().await;
    let (proxy, controller, all) =
        converged_behind_proxy(&env, "half", 10, 6, "before the strand").await;
    let before = proxy.connections();
    proxy.strand();
    let stranded = Instant::now();
    churn(&env, &all[..2], "blue", &all[2..3], &all[6..]).await;
    // Bounded by the read timeout (45 s) plus a poll.
    wait_converged_within(
        &env,
        &[&controller],
        "after the strand",
        Duration::from_secs(90),
    )
    .await;
    let took = stranded.elapsed();
    assert!(
        proxy.connections() > before,
        "recovered over new connections"
    );
    report(
        "every apiserver connection black-holed, half-open (no reset)",
        "requests timed out, watches dropped at the read timeout and resumed",
        took,
    );
}
