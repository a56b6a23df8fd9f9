//! Load at a scale the test command can afford; the long versions are
//! `cargo xtask bench scale | server-soak | chaos` (figures in
//! BENCHMARKS.md). Correctness only: timings are printed, not asserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use robot_api::{Robot, RobotClient};
use testenv::RobotServer;

use crate::faults::{create_all, names, server_metric, wait_converged};
use crate::support::Env;

/// Prints one line of the load figures (run with `--nocapture`).
fn report_load(what: &str, result: &str) {
    eprintln!("load report | {what} | {result}");
}

#[tokio::test]
async fn five_hundred_robots_converge_then_cost_no_writes() {
    let env = Env::start().await;
    let mut controller = env.controller(&["--poll-interval", "2s"]);
    controller.wait_ready().await;
    let all = names("many", 500);
    let started = Instant::now();
    create_all(&env, &all, "red").await;
    wait_converged(&env, &[&controller], "500 Robots").await;
    let took = started.elapsed();
    let kube = controller
        .metric_sum("robot_controller_kube_requests_total", |_| true)
        .await;
    let server = server_metric(&env, |l| l.contains("route=\"/robots\"")).await;
    report_load(
        "500 Robots created at once (16 concurrent creates)",
        &format!(
            "all Ready and exact in the server {:.1}s after the first create; {:.1} control-plane requests \
             and {:.1} robot-server calls per Robot",
            took.as_secs_f64(),
            kube / 500.0,
            server / 500.0
        ),
    );

    // Steady state: three polls of every Robot, not one write.
    let settle = controller.writes().await;
    wait_for_quiet(&controller, settle).await;
    let writes = controller.writes().await;
    let reconciles = controller.reconciles().await;
    let changing = |l: &str| l.contains("route=\"/robots\"") && !l.contains("method=\"GET\"");
    let server_changes = server_metric(&env, changing).await;
    let server_reads = server_metric(&env, |l| l.contains("method=\"GET\"")).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // the window measured
    let polled = controller.reconciles().await - reconciles;
    assert!(
        polled >= 500.0,
        "only {polled} reconciles in three poll intervals"
    );
    assert_eq!(
        controller.writes().await,
        writes,
        "control-plane writes at steady state"
    );
    assert_eq!(
        server_metric(&env, changing).await,
        server_changes,
        "robot-server changes at steady state"
    );
    let reads = server_metric(&env, |l| l.contains("method=\"GET\"")).await - server_reads;
    report_load(
        "steady state: 500 Robots for 6 s, poll interval 2 s",
        &format!(
            "0 control-plane writes, 0 robot-server changes, {polled} reconciles, {reads} robot-server GETs"
        ),
    );
}

/// Waits until a second passes with no control-plane write: the last
/// writes of convergence (ProviderConfig usage counts) are done.
async fn wait_for_quiet(controller: &crate::support::Controller, mut last: f64) {
    let deadline = Instant::now() + crate::support::CONVERGE;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await; // one quiet second
        let now = controller.writes().await;
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "writes never stopped");
        last = now;
    }
}

#[tokio::test]
async fn the_server_serves_many_checking_clients_without_error() {
    let server = RobotServer::start(&[]).await.expect("robot server");
    let http = robot_api::http_client(Duration::from_secs(10));
    let requests = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs(4);
    let clients = futures::future::join_all((0..64).map(|c| {
        let client = RobotClient::new(http.clone(), server.url(), None).expect("client");
        let requests = &requests;
        async move {
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let name = format!("load-{c}-{n}");
                let first = Robot::new(name.clone(), format!("red \"{n}\""));
                let second = Robot::new(name.clone(), format!("blue\n{n}"));
                client.create(&first).await?;
                assert_eq!(client.get(&name).await?, Some(first));
                client.update(&name, &second).await?;
                assert_eq!(client.get(&name).await?, Some(second));
                assert!(client.delete(&name).await?, "{name} was there");
                assert_eq!(client.get(&name).await?, None);
                requests.fetch_add(6, Ordering::Relaxed);
            }
            Ok::<(), robot_api::Error>(())
        }
    }))
    .await;
    for result in clients {
        result.expect("no error under load");
    }
    let addr = server.addr();
    let metrics = tokio::task::spawn_blocking(move || {
        testenv::http::get(addr, "/metrics", Duration::from_secs(5))
    })
    .await
    .expect("task")
    .expect("metrics")
    .body;
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("robot_server_http_requests_total{") && l.contains("status=\"5"))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(
        metrics.contains("robot_server_robots_stored 0"),
        "all deleted"
    );
    report_load(
        "64 clients against the robot server for 4 s",
        &format!(
            "{} requests, every answer checked, no error",
            requests.load(Ordering::Relaxed)
        ),
    );
}
