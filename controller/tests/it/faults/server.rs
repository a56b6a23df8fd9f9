//! The robot server killed, slow, or answering 500s and garbage.

use super::*;

#[tokio::test]
async fn server_killed_then_restarted_with_its_state_file_and_empty() {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let state = state_dir.path().join("robots.json");
    let state_arg = state.to_str().expect("utf-8 path");
    let mut env = Env::start_with(
        CrdSet::Ours,
        robot_controller::api::Family::Crossplane,
        &["--state-file", state_arg],
    )
    .await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let all = names("kept", 12);
    create_all(&env, &all, "teal").await;
    wait_converged(&env, &[&controller], "first convergence").await;
    let created = posts(&env, 201).await;
    assert_eq!(created, 12.0);

    // Killed; changes meanwhile; back with its state file: nothing is
    // created again that it kept, only what changed is done.
    env.server.kill().await;
    churn(&env, &all[..3], "navy", &all[3..5], &names("while-down", 2)).await;
    synced_false_message(&env, &all[0]).await;
    let restarted = Instant::now();
    env.server.restart().await.expect("restart with state");
    let took = wait_converged(&env, &[&controller], "after restart with state").await;
    assert_eq!(
        posts(&env, 201).await,
        2.0,
        "only the two new Robots are created after a restart that kept its state"
    );
    assert_eq!(
        posts(&env, 400).await,
        0.0,
        "no create of an existing robot"
    );
    report(
        "robot server SIGKILLed, restarted with its state file",
        "Synced=False while down; kept robots left alone, the 2 new created, 3 recolored, 2 deleted",
        restarted.elapsed().max(took),
    );

    // Killed again, and its state lost: everything is created again.
    env.server.kill().await;
    std::fs::remove_file(&state).expect("remove the state file");
    env.set_color(&all[5], "olive").await;
    let restarted = Instant::now();
    env.server.restart().await.expect("restart empty");
    wait_converged(&env, &[&controller], "after restart empty").await;
    report(
        "robot server SIGKILLed, restarted empty",
        "every Robot's robot recreated by the next poll",
        restarted.elapsed(),
    );
}

#[tokio::test]
async fn slow_server_answers_past_the_client_timeout() {
    let env = Env::start().await;
    let proxy = server_proxy(&env);
    env.provider_config("default", &proxy.http_url()).await;
    let mut controller = env.controller(&[
        "--poll-interval",
        "2s",
        "--max-backoff",
        "2s",
        "--server-timeout",
        "1s",
    ]);
    controller.wait_ready().await;
    let all = names("slow", 6);
    create_all(&env, &all[..3], "red").await;
    wait_converged(&env, &[&controller], "before the slowness").await;

    // Every answer 2 s late: past the 1 s timeout. Creates and updates do
    // reach the server, but the controller never hears back.
    proxy.set(Fault::Delay(Duration::from_secs(2)));
    churn(&env, &all[..2], "blue", &all[2..3], &all[3..]).await;
    let message = synced_false_message(&env, &all[4]).await;
    assert!(message.contains("timed out"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await; // the fault lasting
    let healed = Instant::now();
    proxy.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the slowness").await;
    assert_eq!(
        posts(&env, 400).await,
        0.0,
        "no create of an existing robot"
    );
    report(
        "robot server answers 2 s late (client timeout 1 s)",
        &format!("Synced=False ({message}); no duplicate create"),
        took.min(healed.elapsed()),
    );
}

#[tokio::test]
async fn server_answering_500_then_garbage() {
    let env = Env::start().await;
    let proxy = server_proxy(&env);
    env.provider_config("default", &proxy.http_url()).await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let all = names("err", 6);
    create_all(&env, &all[..3], "red").await;
    wait_converged(&env, &[&controller], "before the errors").await;

    proxy.set(Fault::Answer(Answer::json(
        500,
        r#"{"error":"database on fire"}"#,
    )));
    churn(&env, &all[..1], "blue", &[], &all[3..4]).await;
    let message = synced_false_message(&env, &all[3]).await;
    assert!(message.contains("500"), "{message}");

    // Garbage where a robot should be: an error, never "not found", so
    // nothing is created or deleted because of it.
    let server_saw = server_metric(&env, |_| true).await;
    proxy.set(Fault::Answer(Answer::json(200, "{\"name\": [1, 2")));
    churn(&env, &all[1..2], "green", &all[2..3], &all[4..]).await;
    let message = wait_for("a garbage answer reported", CONVERGE, || async {
        let robot = env.robot(&all[5]).await?;
        let c = condition(&robot, "Synced")?;
        let m = c.message.clone().unwrap_or_default();
        (c.status == "False" && m.contains("not a robot")).then_some(m)
    })
    .await
    .expect("garbage reported");
    assert!(
        server_metric(&env, |_| true).await - server_saw <= 1.0,
        "nothing reached the server through the faulty proxy (only our own /metrics read)"
    );
    let healed = Instant::now();
    proxy.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the errors").await;
    assert!(proxy.answered() > 0);
    report(
        "robot server answers 500, then 200 with garbage JSON",
        &format!("Synced=False ({message}); no create or delete on garbage"),
        took.min(healed.elapsed()),
    );
}
