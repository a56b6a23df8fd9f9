//! Leader election under faults, and SIGTERM with the control plane unreachable.

use super::*;

#[tokio::test]
async fn leader_killed_under_load_the_standby_takes_over_without_double_creates() {
    let env = Env::start().await;
    let args = [
        "--leader-election",
        "--leader-election-duration",
        "4s",
        "--poll-interval",
        "10s",
    ];
    let mut first = env.controller(&args);
    let mut second = env.controller(&args);
    first.wait_ready().await;
    second.wait_ready().await;
    let a = wait_for("one leader", CONVERGE, || async {
        let (a, b) = (first.leader().await, second.leader().await);
        (a + b == 1.0).then_some(a)
    })
    .await
    .expect("a leader");
    let (mut leader, standby) = if a == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    let all = names("load", 300);
    let creating = create_all(&env, &all, "red");
    let killing = async {
        // Kill once the leader is well into the work.
        wait_for("a third created", CONVERGE, || async {
            (posts(&env, 201).await >= 100.0).then_some(())
        })
        .await
        .expect("creates under way");
        leader.kill();
        Instant::now()
    };
    let ((), killed) = tokio::join!(creating, killing);
    wait_for("standby leads", Duration::from_secs(20), || async {
        (standby.leader().await == 1.0).then_some(())
    })
    .await
    .expect("standby leads");
    let took_over = killed.elapsed();
    // The standby looks again when the lease expires (4 s after the last
    // renewal), then waits up to 1 s at random before locking it, so two
    // standbys do not collide; the rest is a loaded machine's latency.
    assert!(
        took_over <= Duration::from_secs(4 + 3),
        "took over after {took_over:?} (lease 4 s)"
    );
    let took = wait_converged(&env, &[&standby], "after the handover").await;
    assert_eq!(posts(&env, 201).await, 300.0, "each robot created once");
    assert_eq!(
        posts(&env, 400).await,
        0.0,
        "no create of an existing robot"
    );
    report(
        "leader SIGKILLed while 300 Robots converge (lease 4 s)",
        &format!(
            "standby led after {:.1}s; 300 creates, 0 duplicates",
            took_over.as_secs_f64()
        ),
        took + took_over,
    );
}

/// A leader that cannot reach the control plane cannot renew its Lease;
/// once the standby takes over, the old one must have stopped acting on
/// its stale view, or it undoes what the new leader does.
#[tokio::test]
async fn a_leader_cut_off_from_the_control_plane_steps_down_before_its_lease_expires() {
    let env = Env::start().await;
    let args = [
        "--leader-election",
        "--leader-election-duration",
        "4s",
        "--poll-interval",
        "1s",
        "--max-backoff",
        "1s",
    ];
    let (proxy_a, proxy_b) = (apiserver_proxy(&env), apiserver_proxy(&env));
    let mut a = controller_via(&env, &proxy_a, &args);
    let mut b = controller_via(&env, &proxy_b, &args);
    a.wait_ready().await;
    b.wait_ready().await;
    let a_leads = wait_for("one leader", CONVERGE, || async {
        let (x, y) = (a.leader().await, b.leader().await);
        (x + y == 1.0).then_some(x == 1.0)
    })
    .await
    .expect("a leader");
    let (leader, leader_proxy, standby) = if a_leads {
        (&a, &proxy_a, &b)
    } else {
        (&b, &proxy_b, &a)
    };
    env.create_robot("contested", "red", json!({})).await;
    wait_converged(&env, &[leader], "before the partition").await;

    // The leader loses the control plane, not the robot server.
    leader_proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    let stepped_down = std::sync::Mutex::new(None::<Duration>);
    // Both are sampled together: the standby must never be seen leading
    // while the old leader still says it leads.
    let old_when_standby_led = wait_for("the standby leads", Duration::from_secs(20), || {
        let stepped_down = &stepped_down;
        async move {
            let old = leader.leader().await;
            if old == 0.0 {
                stepped_down.lock().unwrap().get_or_insert(cut.elapsed());
            }
            (standby.leader().await == 1.0).then_some(old)
        }
    })
    .await
    .expect("standby leads");
    let took_over = cut.elapsed();
    assert_eq!(
        old_when_standby_led, 0.0,
        "the standby led while the old leader, cut off from the control plane, still led"
    );
    let stepped_down = stepped_down.into_inner().unwrap().unwrap_or(took_over);

    // The new leader's work stands: the old one, with its stale view (red),
    // puts nothing back over several of its poll intervals.
    env.set_color("contested", "blue").await;
    env.wait_server_color("contested", "blue").await;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let color = env.server_robot("contested").await.map(|r| r.color);
        assert_eq!(
            color.as_deref(),
            Some("blue"),
            "the old leader undid a change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling
    }

    // Healed: it waits as a standby; everything still converges.
    leader_proxy.set(Fault::Pass);
    env.set_color("contested", "green").await;
    wait_converged(&env, &[leader, standby], "after healing").await;
    report(
        "leader cut off from the control plane (lease 4 s), robot server still reachable",
        &format!(
            "old leader stepped down after {:.1}s, standby led after {:.1}s; no change undone",
            stepped_down.as_secs_f64(),
            took_over.as_secs_f64()
        ),
        took_over,
    );
}

/// SIGTERM must end the process within --shutdown-timeout even when an
/// in-flight reconcile waits on a control plane that does not answer
/// (Kubernetes and ECS SIGKILL what outlives its grace period).
#[tokio::test]
async fn sigterm_exits_in_time_while_the_control_plane_is_unreachable() {
    let env = Env::start().await;
    let proxy = apiserver_proxy(&env);
    let mut controller = controller_via(
        &env,
        &proxy,
        &["--poll-interval", "1s", "--shutdown-timeout", "2s"],
    );
    controller.wait_ready().await;
    env.create_robot("stuck", "red", json!({})).await;
    wait_converged(&env, &[&controller], "before the partition").await;

    // Cut off; drift on the server makes the next poll put the color back
    // and then write the status, which cannot get through.
    proxy.set(Fault::Blackhole);
    env.server_client()
        .update("stuck", &robot_api::Robot::new("stuck", "pink"))
        .await
        .expect("drift");
    env.wait_server_color("stuck", "red").await;

    let signalled = Instant::now();
    controller.signal(rustix::process::Signal::TERM);
    let status = controller.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {:?}\n{}",
        signalled.elapsed(),
        controller.log_tail()
    );
    report(
        "SIGTERM while a reconcile waits on an unreachable control plane (--shutdown-timeout 2s)",
        "the stuck reconcile abandoned; exit 0",
        signalled.elapsed(),
    );
}
