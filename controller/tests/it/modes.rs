//! Both API generations, `once` exit codes, leader election, scale, and
//! what must never appear in the controller's output.

use std::time::{Duration, Instant};

use robot_controller::api::Family;
use serde_json::json;
use testenv::{CrdSet, wait_for};

use crate::support::{CONVERGE, Env};

async fn converges_against(crds: CrdSet, family: Family) {
    let env = Env::start_with(crds, family, &[]).await;
    // No --api-group: the controller finds the generation by discovery.
    let mut controller = env.controller(&[]);
    controller.wait_ready().await;
    env.create_robot("example", "yellow", json!({})).await;
    env.wait_ready("example").await;
    env.wait_server_color("example", "yellow").await;
    env.set_color("example", "purple").await;
    env.wait_server_color("example", "purple").await;
    env.delete_robot("example").await;
    env.wait_gone("example").await;
    assert_eq!(env.server_robot("example").await, None);
}

#[tokio::test]
async fn works_against_the_crossplane_io_reference_crds() {
    converges_against(CrdSet::Crossplane, Family::Crossplane).await;
}

#[tokio::test]
async fn works_against_the_upbound_io_reference_crds() {
    converges_against(CrdSet::Upbound, Family::Upbound).await;
}

#[tokio::test]
async fn once_exit_codes() {
    let env = Env::start().await;
    env.create_robot("a", "red", json!({})).await;
    env.create_robot("b", "blue", json!({})).await;
    let (status, log) = env.once(&[]);
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(env.server_robots().await.len(), 2);
    env.wait_ready("a").await;

    // One Robot cannot sync: exit 1, and the log says which and why.
    env.create_robot(
        "orphaned",
        "green",
        json!({ "spec": { "providerConfigRef": { "name": "nowhere" } } }),
    )
    .await;
    let (status, log) = env.once(&[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("orphaned") && log.contains("\"nowhere\" not found"),
        "{log}"
    );

    // A source that cannot work is a configuration error: exit 2.
    let (status, log) = env.once(&["--kubeconfig-source", "env:ROBOT_TEST_UNSET_VARIABLE"]);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("env:ROBOT_TEST_UNSET_VARIABLE: the secret does not exist"),
        "{log}"
    );
}

#[tokio::test]
async fn leader_election_one_acts_and_the_standby_takes_over() {
    let env = Env::start().await;
    let args = [
        "--leader-election",
        "--leader-election-duration",
        "4s",
        "--poll-interval",
        "2s",
    ];
    let mut first = env.controller(&args);
    first.wait_ready().await;
    let mut second = env.controller(&args);
    second.wait_ready().await;

    let (a, b) = wait_for("one leader", CONVERGE, || async {
        let (a, b) = (first.leader().await, second.leader().await);
        (a + b == 1.0).then_some((a, b))
    })
    .await
    .unwrap();
    env.create_robot("shared", "gold", json!({})).await;
    env.wait_ready("shared").await;
    // Only the leader reconciled anything.
    let (ra, rb) = (first.reconciles().await, second.reconciles().await);
    assert!(
        (a == 1.0) == (ra > 0.0) && (b == 1.0) == (rb > 0.0),
        "leader {a}/{b}, reconciles {ra}/{rb}"
    );

    // Kill the leader without a goodbye: the standby takes over within the
    // lease duration (plus a renewal period) and carries on.
    let (mut leader, standby) = if a == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    leader.kill();
    let killed = Instant::now();
    wait_for("standby leads", Duration::from_secs(20), || async {
        (standby.leader().await == 1.0).then_some(())
    })
    .await
    .unwrap();
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "took over after {took:?}");
    env.create_robot("after", "silver", json!({})).await;
    env.wait_ready("after").await;
    assert_eq!(env.server_robots().await.len(), 2, "no double create");
}

#[tokio::test]
async fn two_hundred_robots_converge() {
    let env = Env::start().await;
    let mut controller = env.controller(&[]);
    controller.wait_ready().await;
    let started = Instant::now();
    for i in 0..200 {
        env.create_robot(&format!("bot-{i:03}"), "red", json!({}))
            .await;
    }
    wait_for("200 robots in the server", CONVERGE, || async {
        (env.server_robots().await.len() == 200).then_some(())
    })
    .await
    .unwrap();
    wait_for("200 Robots Ready", CONVERGE, || async {
        let list = env.robots().list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|r| {
                crate::support::condition(r, "Ready").is_some_and(|c| c.status == "True")
                    && crate::support::condition(r, "Synced").is_some_and(|c| c.status == "True")
            })
            .then_some(())
    })
    .await
    .unwrap();
    eprintln!("200 Robots Ready in {:?}", started.elapsed());
}

#[tokio::test]
async fn tokens_never_reach_the_output() {
    let env = Env::start_with(CrdSet::Ours, Family::Crossplane, &[]).await;
    let server_token = "srv-token-5ecret-xyz";
    let token_file = env.dir.path().join("server-token");
    std::fs::write(&token_file, server_token).unwrap();
    let mut controller = env.controller(&[
        "--server-token-source",
        token_file.to_str().unwrap(),
        "--log-filter",
        "trace",
    ]);
    controller.wait_ready().await;
    // The server has no token configured, so it accepts ours; the point is
    // what the controller prints while doing its work.
    env.create_robot("quiet", "white", json!({})).await;
    env.wait_ready("quiet").await;
    let log = controller.log();
    let metrics = controller.metrics().await;
    for secret in [server_token, env.cp.controller_token().as_str()] {
        assert!(!log.contains(secret), "a token is in the log");
        assert!(!metrics.contains(secret), "a token is in the metrics");
    }
}
