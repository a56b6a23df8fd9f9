//! Partitions from the robot server and from the control plane.

use super::*;

#[tokio::test]
async fn partitions_from_the_server_and_from_the_control_plane_heal() {
    let env = Env::start().await;
    let server = server_proxy(&env);
    env.provider_config("default", &server.http_url()).await;
    let cp = apiserver_proxy(&env);
    let mut controller = controller_via(
        &env,
        &cp,
        &[
            "--poll-interval",
            "2s",
            "--max-backoff",
            "2s",
            "--server-timeout",
            "2s",
        ],
    );
    controller.wait_ready().await;
    let all = names("part", 16);
    create_all(&env, &all[..8], "red").await;
    wait_converged(&env, &[&controller], "before the partitions").await;

    // Controller <-> robot server.
    server.set(Fault::Blackhole);
    churn(&env, &all[..2], "blue", &all[2..3], &all[8..10]).await;
    let message = synced_false_message(&env, &all[8]).await;
    let healed = Instant::now();
    server.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the server partition").await;
    report(
        "partition controller <-> robot server",
        &format!("Synced=False ({message})"),
        took.min(healed.elapsed()),
    );

    // Controller <-> control plane, healed with the connections intact
    // (held packets delivered, as TCP retransmits them) ...
    cp.set(Fault::Blackhole);
    churn(&env, &all[3..5], "green", &all[5..6], &all[10..13]).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // the partition lasting
    let healed = Instant::now();
    cp.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the control-plane partition").await;
    report(
        "partition controller <-> control plane (5 s, connections survive)",
        "reconciles stalled; resumed on heal",
        took.min(healed.elapsed()),
    );

    // ... and with the connections lost, as a NAT gateway forgets them.
    cp.set(Fault::Blackhole);
    churn(&env, &all[6..7], "black", &all[7..8], &all[13..]).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // the partition lasting
    let healed = Instant::now();
    cp.cut();
    cp.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the second partition").await;
    report(
        "partition controller <-> control plane (5 s, connections lost)",
        "watches reconnected; every change applied",
        took.min(healed.elapsed()),
    );
}
