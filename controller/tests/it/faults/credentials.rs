//! Credentials of the control plane and of the server rotated and revoked while Robots change.

use super::*;

/// As [`wait_converged`], for a server that wants `token`.
async fn converged_with_token(env: &Env, controller: &Controller, token: &str) {
    let auth = robot_api::AuthHeader::default();
    auth.set_bearer(token).expect("token");
    let client =
        RobotClient::new(reqwest::Client::new(), env.server.url(), Some(auth)).expect("client");
    wait_for("converged with the server token", CONVERGE, || async {
        let want = desired(env).await?;
        let have: BTreeMap<String, String> = client
            .list(None, 1000)
            .await
            .ok()?
            .items
            .into_iter()
            .map(|r| (r.name, r.color))
            .collect();
        let list = env.robots().list(&ListParams::default()).await.ok()?;
        let synced = list.items.iter().all(|r| {
            r.metadata.deletion_timestamp.is_none()
                && condition(r, "Synced").is_some_and(|c| {
                    c.status == "True" && c.observed_generation == r.metadata.generation
                })
        });
        (synced && have == want).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.log_tail()));
}

#[tokio::test]
async fn credentials_rotated_and_revoked_while_robots_change() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let state = state_dir.path().join("robots.json");
    let server_token = state_dir.path().join("server-token");
    std::fs::write(&server_token, "server-token-one-0123456789abcdef0123").expect("token");
    let mut env = Env::start_with(
        CrdSet::Ours,
        robot_controller::api::Family::Crossplane,
        &[
            "--state-file",
            state.to_str().expect("path"),
            "--auth-token-file",
            server_token.to_str().expect("path"),
        ],
    )
    .await;
    let controller_token = env.dir.path().join("controller-server-token");
    std::fs::write(&controller_token, "server-token-one-0123456789abcdef0123").expect("token");
    let mut controller = env.controller(&[
        "--poll-interval",
        "2s",
        "--max-backoff",
        "2s",
        "--secret-refresh-interval",
        "1s",
        "--server-token-source",
        controller_token.to_str().expect("path"),
    ]);
    controller.wait_ready().await;
    let all = names("rot", 12);
    create_all(&env, &all[..6], "red").await;
    converged_with_token(&env, &controller, "server-token-one-0123456789abcdef0123").await;

    // The control-plane token: a new one issued, the old one revoked (the
    // apiserver restarts with only the new one), while Robots change; the
    // controller re-reads its kubeconfig file.
    churn(&env, &all[..2], "blue", &all[2..3], &all[6..8]).await;
    let rotated = Instant::now();
    env.cp
        .rotate_controller_token()
        .await
        .expect("rotate the controller token");
    churn(&env, &all[3..4], "green", &[], &all[8..10]).await;
    converged_with_token(&env, &controller, "server-token-one-0123456789abcdef0123").await;
    let took = rotated.elapsed();
    let reloads = controller
        .metric_sum("robot_controller_kubeconfig_reloads_total", |_| true)
        .await;
    assert!(reloads >= 1.0, "the kubeconfig was not reloaded");
    report(
        "control-plane token rotated, old one revoked, while Robots change",
        "kubeconfig re-read, client rebuilt, every change applied",
        took,
    );

    // The robot server's token: the server restarts with a new one only,
    // the controller's source is updated after.
    std::fs::write(&server_token, "server-token-two-0123456789abcdef0123").expect("token");
    env.server.restart().await.expect("server restart");
    churn(&env, &all[4..5], "white", &all[5..6], &all[10..]).await;
    let message = synced_false_message(&env, &all[10]).await;
    assert!(message.contains("refused our credentials"), "{message}");
    let rotated = Instant::now();
    std::fs::write(&controller_token, "server-token-two-0123456789abcdef0123").expect("token");
    converged_with_token(&env, &controller, "server-token-two-0123456789abcdef0123").await;
    report(
        "robot-server token rotated, old one revoked, while Robots change",
        &format!("Synced=False ({message}) until the new token was read"),
        rotated.elapsed(),
    );
}
