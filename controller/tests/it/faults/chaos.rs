//! SIGKILL at random points, many times: nothing lost, nothing duplicated.

use super::*;

/// Names of the Robots not being deleted.
async fn live(env: &Env) -> Vec<String> {
    let list = env
        .robots()
        .list(&ListParams::default())
        .await
        .expect("list");
    list.items
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter_map(|r| r.metadata.name)
        .collect()
}

/// Where a chaos round kills the controller.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// Once the server has answered a create the controller is still
    /// waiting to hear about (the proxy delays answers): after the create,
    /// before it is recorded.
    DuringCreate,
    /// Likewise for an update.
    DuringUpdate,
    /// Likewise for a delete: the robot gone, the finalizer still there.
    DuringDelete,
    /// At a random moment.
    After(Duration),
}

/// Requests the server has answered, by method, on `/robots`.
async fn answered(env: &Env, method: &str) -> f64 {
    let method = format!("method=\"{method}\"");
    server_metric(env, |l| {
        l.contains("route=\"/robots\"") && l.contains(&method)
    })
    .await
}

/// Operations a kill interrupted, seen in what it left behind.
#[derive(Debug, Default)]
struct Interrupted {
    creates: std::collections::BTreeSet<String>,
    deletes: std::collections::BTreeSet<String>,
    /// Name and generation.
    updates: std::collections::BTreeSet<(String, i64)>,
}

impl Interrupted {
    async fn count(&mut self, env: &Env) {
        let held = held(env.server.url()).await.unwrap_or_default();
        let list = env
            .robots()
            .list(&ListParams::default())
            .await
            .expect("list");
        for r in &list.items {
            let name = meta::external_name(&r.metadata);
            if r.metadata.deletion_timestamp.is_some() {
                if meta::has_finalizer(&r.metadata, meta::FINALIZER) && !held.contains_key(&name) {
                    self.deletes.insert(name);
                }
            } else if meta::has_finalizer(&r.metadata, meta::FINALIZER)
                && r.status
                    .as_ref()
                    .is_none_or(|s| s.resource.conditions.is_empty())
            {
                // Finalized for a create whose result was never recorded.
                self.creates.insert(name);
            } else if held.get(&name) == Some(&r.spec.for_provider.color)
                && condition(r, "Synced")
                    .is_some_and(|c| c.observed_generation < r.metadata.generation)
            {
                self.updates
                    .insert((name, r.metadata.generation.unwrap_or_default()));
            }
        }
    }
}

/// One chaos run: `rounds` times, change some Robots, start a controller,
/// SIGKILL it at a point the seeded `rng` picks. Then a last controller
/// must converge on exactly the Robots that exist.
async fn chaos_run(
    env: &Env,
    proxy: &FaultProxy,
    rng: &mut StdRng,
    run: usize,
    rounds: usize,
    interrupted: &mut Interrupted,
) {
    for round in 0..rounds {
        let existing = live(env).await;
        let creates: Vec<String> = (0..rng.random_range(2..6))
            .map(|i| format!("chaos-{run}-{round}-{i}"))
            .collect();
        let mut recolor = Vec::new();
        let mut delete = Vec::new();
        for name in existing {
            match rng.random_range(0..10) {
                0..3 => recolor.push(name),
                3..5 => delete.push(name),
                _ => {}
            }
        }
        let point = match rng.random_range(0..4) {
            0 => KillPoint::DuringCreate,
            1 if !recolor.is_empty() => KillPoint::DuringUpdate,
            2 if !delete.is_empty() => KillPoint::DuringDelete,
            _ => KillPoint::After(Duration::from_millis(rng.random_range(100..1500))),
        };
        let color = format!("c{}", rng.random_range(0..1000));
        churn(env, &recolor, &color, &delete, &creates).await;
        // Answers come late, so a kill right after the server acted finds
        // the controller still waiting for the answer.
        proxy.set(Fault::Delay(Duration::from_millis(
            rng.random_range(100..300),
        )));
        let method = match point {
            KillPoint::DuringCreate => Some("POST"),
            KillPoint::DuringUpdate => Some("PUT"),
            KillPoint::DuringDelete => Some("DELETE"),
            KillPoint::After(_) => None,
        };
        let before = match method {
            Some(m) => answered(env, m).await,
            None => 0.0,
        };
        let controller = env.controller(&["--poll-interval", "2s", "--max-backoff", "1s"]);
        match (point, method) {
            (KillPoint::After(alive), _) => tokio::time::sleep(alive).await, // the fault's timing
            (_, Some(m)) => {
                // Tight polling: the window is the proxy's delay.
                let deadline = Instant::now() + CONVERGE;
                while answered(env, m).await <= before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => {}
        }
        drop(controller); // SIGKILL to its process group
        interrupted.count(env).await;
    }
    proxy.set(Fault::Pass);
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    wait_converged(env, &[&controller], &format!("chaos run {run}")).await;
}

#[tokio::test]
async fn sigkill_at_random_points_loses_nothing() {
    let seed: u64 = std::env::var("ROBOT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    let runs: usize = std::env::var("ROBOT_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("chaos: seed {seed}, {runs} runs (ROBOT_CHAOS_SEED, ROBOT_CHAOS_RUNS)");
    let env = Env::start().await;
    let proxy = server_proxy(&env);
    env.provider_config("default", &proxy.http_url()).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut interrupted = Interrupted::default();
    let started = Instant::now();
    for run in 0..runs {
        chaos_run(&env, &proxy, &mut rng, run, 4, &mut interrupted).await;
    }
    // The schedule did hit operations in flight, or the test proved little.
    assert!(
        !interrupted.creates.is_empty() && !interrupted.deletes.is_empty(),
        "kills interrupted too little: {interrupted:?}"
    );
    let robots = desired(&env).await.expect("Robots").len();
    report(
        &format!("controller SIGKILLed at seeded points, {runs} runs x 4 kills (seed {seed})"),
        &format!(
            "interrupted {} creates, {} updates, {} deletes; {} creates, {} already-exists; \
             {robots} Robots; server exact after every run",
            interrupted.creates.len(),
            interrupted.updates.len(),
            interrupted.deletes.len(),
            posts(&env, 201).await as u64,
            posts(&env, 400).await as u64
        ),
        started.elapsed() / u32::try_from(runs.max(1)).unwrap_or(1),
    );
}
