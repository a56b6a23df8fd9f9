//! Watches cut, and resumed after compaction (410 Gone).

use super::*;

#[tokio::test]
async fn cut_watches_resume_without_missing_a_change() {
    let env = Env::start().await;
    let (proxy, controller, all) =
        converged_behind_proxy(&env, "cut", 20, 10, "before the cuts").await;

    // Connections cut again and again while Robots change.
    let started = Instant::now();
    let cuts_before = proxy.connections();
    let cutter = async {
        while started.elapsed() < Duration::from_secs(6) {
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let changes = async {
        for (i, name) in all[..8].iter().enumerate() {
            env.set_color(name, &format!("shade-{i}")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        churn(&env, &[], "blue", &all[8..10], &all[10..]).await;
    };
    tokio::join!(cutter, changes);
    let took = wait_converged(&env, &[&controller], "after the cuts").await;
    let reconnects = proxy.connections() - cuts_before;
    assert!(
        reconnects >= 10,
        "the controller reconnected {reconnects} times"
    );
    report(
        "control-plane connections (watches included) cut every 300 ms for 6 s",
        &format!("{reconnects} reconnects; every change applied"),
        took,
    );
}

/// The etcd client port, from the etcd process's command line.
fn etcd_client_url(env: &Env) -> String {
    let (_, pid) = env
        .cp
        .processes()
        .into_iter()
        .find(|(name, _)| *name == "etcd")
        .expect("etcd runs");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("etcd cmdline");
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find_map(|a| a.strip_prefix("--listen-client-urls="))
        .expect("--listen-client-urls")
        .to_owned()
}

/// Writes a ConfigMap `times` times: revisions no Robot watch sees.
async fn bump_revision(env: &Env, times: usize) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    let api: Api<ConfigMap> = Api::namespaced(env.admin.clone(), "default");
    for i in 0..times {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "revision-bump" },
            "data": { "n": i.to_string() },
        }))
        .expect("a ConfigMap");
        api.patch(
            "revision-bump",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("ConfigMap written");
    }
}

/// Compacts etcd's history up to its current revision, through etcd's
/// own HTTP/JSON gateway; returns the revision.
async fn compact_etcd(env: &Env) -> i64 {
    let url = etcd_client_url(env);
    let http = reqwest::Client::new();
    let range: serde_json::Value = http
        .post(format!("{url}/v3/kv/range"))
        .json(&json!({ "key": "AA==" }))
        .send()
        .await
        .expect("etcd range")
        .json()
        .await
        .expect("etcd range answer");
    let revision: i64 = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("etcd revision");
    let compacted = http
        .post(format!("{url}/v3/kv/compaction"))
        .json(&json!({ "revision": revision, "physical": true }))
        .send()
        .await
        .expect("etcd compaction");
    assert!(compacted.status().is_success(), "{compacted:?}");
    revision
}

#[tokio::test]
async fn a_watch_resumed_after_compaction_relists_on_410_gone() {
    let mut env = Env::start().await;
    let (proxy, controller, all) =
        converged_behind_proxy(&env, "gone", 12, 8, "before the partition").await;

    // Cut off; the world moves on; etcd's history is compacted and the
    // apiserver restarted, so the controller's last resourceVersion is
    // older than anything the apiserver can replay.
    proxy.set(Fault::Blackhole);
    churn(&env, &all[..3], "blue", &all[3..5], &all[8..]).await;
    // The partition holds what the apiserver already sent, and lets it
    // through when lifted: the controller may yet see every Robot event.
    // Two writes of another kind put the compacted revision past the next
    // one its watch would ask for, so the resume is refused either way.
    bump_revision(&env, 2).await;
    let revision = compact_etcd(&env).await;
    env.cp.restart_apiserver().await.expect("apiserver restart");
    let healed = Instant::now();
    proxy.set(Fault::Pass);
    let took = wait_converged(&env, &[&controller], "after the 410").await;
    let log = controller.log();
    let gone = log
        .lines()
        .find(|l| l.contains("too old resource version") || l.contains("Expired"))
        .unwrap_or_else(|| {
            panic!(
                "the controller's watch resumed without a 410; log:\n{}",
                controller.log_tail()
            )
        });
    eprintln!("410 seen by the controller: {gone}");
    report(
        "watch cut, etcd compacted, apiserver restarted: 410 Gone on resume",
        &format!("watch relisted (etcd compacted at revision {revision}); every change applied"),
        took.min(healed.elapsed()),
    );
}
