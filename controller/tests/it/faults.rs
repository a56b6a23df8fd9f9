//! Faults: the robot server, the control plane, the network and the
//! controller itself fail in the ways production sees, while Robots change;
//! afterwards everything converges with no robot lost, duplicated or
//! leaked, and every Robot keeps its finalizer.
//!
//! Real mechanisms wherever they exist (processes killed and restarted,
//! connections cut by a proxy, etcd compacted, API Priority and Fairness
//! rejecting requests); a canned answer from [`FaultProxy`] only for what a
//! real server cannot be made to say on demand (a 500, garbage JSON).
//!
//! Each test prints a `fault report |` line (run with `--nocapture`) with
//! what happened and how long recovery took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use robot_api::RobotClient;
use robot_controller::managed::meta;
use serde_json::json;
use testenv::faultproxy::{Answer, Fault, FaultProxy};
use testenv::{CrdSet, wait_for};

use crate::support::{CONVERGE, Controller, Env, condition};

/// Fast polls and retries, so recovery is bounded by the fault, not by a
/// default poll interval.
const FAST: &[&str] = &["--poll-interval", "2s", "--max-backoff", "2s"];

/// Prints one line of the fault table.
pub(crate) fn report(fault: &str, happened: &str, recovery: Duration) {
    eprintln!(
        "fault report | {fault} | {happened} | recovered in {:.1}s",
        recovery.as_secs_f64()
    );
}

/// The robots the control plane says should exist: external name to
/// color, for every Robot not being deleted.
pub async fn desired(env: &Env) -> Option<BTreeMap<String, String>> {
    let list = env.robots().list(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| {
                (
                    meta::external_name(&r.metadata),
                    r.spec.for_provider.color.clone(),
                )
            })
            .collect(),
    )
}

/// Every robot the server holds, name to color; `None` while it cannot
/// be listed.
pub async fn held(server: &str) -> Option<BTreeMap<String, String>> {
    let client = RobotClient::new(reqwest::Client::new(), server, None).ok()?;
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.list(after.as_deref(), 1000).await.ok()?;
        for r in page.items {
            all.insert(r.name, r.color);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Some(all),
        }
    }
}

/// Why the state is not converged yet, or `None` when it is: no Robot
/// being deleted, every Robot finalized, Synced and Ready at its current
/// generation, and the server holding exactly the Robots' names and
/// colors.
pub async fn divergence(env: &Env) -> Option<String> {
    let list = match env.robots().list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => return Some(format!("cannot list Robots: {e}")),
    };
    let mut want = BTreeMap::new();
    for r in &list.items {
        let name = r.metadata.name.clone().unwrap_or_default();
        if r.metadata.deletion_timestamp.is_some() {
            return Some(format!("Robot {name} is still being deleted"));
        }
        if !meta::has_finalizer(&r.metadata, meta::FINALIZER) {
            return Some(format!("Robot {name} has no finalizer"));
        }
        for type_ in ["Synced", "Ready"] {
            let ok = condition(r, type_).is_some_and(|c| {
                c.status == "True" && c.observed_generation == r.metadata.generation
            });
            if !ok {
                return Some(format!(
                    "Robot {name} is not {type_} at its generation: {:?}",
                    condition(r, type_)
                ));
            }
        }
        want.insert(
            meta::external_name(&r.metadata),
            r.spec.for_provider.color.clone(),
        );
    }
    let Some(have) = held(env.server.url()).await else {
        return Some("cannot list the robot server".into());
    };
    if have != want {
        let lost: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
        let leaked: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
        let wrong: Vec<_> = want
            .iter()
            .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
            .map(|(k, v)| format!("{k}: {:?} != {v:?}", have[k]))
            .collect();
        return Some(format!(
            "server differs: lost {lost:?}, leaked {leaked:?}, wrong color {wrong:?}"
        ));
    }
    None
}

/// Waits until [`divergence`] finds nothing; returns how long it took.
pub async fn wait_converged(env: &Env, controllers: &[&Controller], what: &str) -> Duration {
    let started = Instant::now();
    let last = std::sync::Mutex::new(String::new());
    let result = wait_for(what, CONVERGE, || {
        let last = &last;
        async move {
            match divergence(env).await {
                None => Some(()),
                Some(why) => {
                    *last.lock().unwrap() = why;
                    None
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        for c in controllers {
            eprintln!("--- controller log ---\n{}", c.log_tail());
        }
        panic!("{e}: {}", last.lock().unwrap());
    }
    started.elapsed()
}

/// Creates `names` with `color`, a few at a time.
pub async fn create_all(env: &Env, names: &[String], color: &str) {
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| async move {
            env.create_robot(name, color, json!({})).await;
        })
        .await;
}

pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// A counter of the robot server's /metrics, summed over matching labels.
pub async fn server_metric(env: &Env, filter: impl Fn(&str) -> bool) -> f64 {
    let addr = env.server.addr();
    let body = tokio::task::spawn_blocking(move || {
        testenv::http::get(addr, "/metrics", Duration::from_secs(5))
    })
    .await
    .expect("metrics task")
    .expect("robot server /metrics")
    .body;
    body.lines()
        .filter(|l| l.starts_with("robot_server_http_requests_total{") && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `POST /robots` answered with `status` so far.
pub async fn posts(env: &Env, status: u16) -> f64 {
    let status = format!("status=\"{status}\"");
    server_metric(env, |l| {
        l.contains("route=\"/robots\"") && l.contains("method=\"POST\"") && l.contains(&status)
    })
    .await
}

fn server_proxy(env: &Env) -> FaultProxy {
    FaultProxy::start(env.server.addr()).expect("fault proxy for the robot server")
}

fn apiserver_addr(env: &Env) -> SocketAddr {
    let url = url::Url::parse(env.cp.url()).expect("apiserver URL");
    let host = url.host_str().expect("host");
    let port = url.port().expect("port");
    format!("{host}:{port}").parse().expect("apiserver address")
}

/// A TCP proxy in front of the apiserver that can also answer behind its
/// TLS identity.
fn apiserver_proxy(env: &Env) -> FaultProxy {
    let pki = env.cp.dir().join("pki");
    FaultProxy::start_tls(
        apiserver_addr(env),
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
    )
    .expect("fault proxy for the apiserver")
}

/// The controller's kubeconfig, pointing at `proxy` instead of the
/// apiserver. The serving certificate covers 127.0.0.1, the proxy's address.
fn kubeconfig_via(env: &Env, proxy: &FaultProxy) -> PathBuf {
    let yaml = env
        .cp
        .controller_kubeconfig_yaml()
        .replace(env.cp.url(), &proxy.https_url());
    let path = env
        .dir
        .path()
        .join(format!("via-{}.kubeconfig", proxy.addr().port()));
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

fn controller_via(env: &Env, proxy: &FaultProxy, args: &[&str]) -> Controller {
    Controller::spawn(
        &kubeconfig_via(env, proxy),
        env.dir.path(),
        "run",
        &env.with_allowlist(args),
    )
}

/// The message of a Robot's Synced condition once it is False.
/// A controller that reaches the apiserver through a fault proxy, with
/// `total` Robot names of which the first `created` exist and are Ready.
async fn converged_behind_proxy(
    env: &Env,
    prefix: &str,
    total: usize,
    created: usize,
    what: &str,
) -> (FaultProxy, Controller, Vec<String>) {
    let proxy = apiserver_proxy(env);
    let mut controller = controller_via(env, &proxy, FAST);
    controller.wait_ready().await;
    let all = names(prefix, total);
    create_all(env, &all[..created], "red").await;
    wait_converged(env, &[&controller], what).await;
    (proxy, controller, all)
}

async fn synced_false_message(env: &Env, name: &str) -> String {
    let robot = env
        .wait_condition(name, "Synced", "False", Some("ReconcileError"))
        .await;
    condition(&robot, "Synced")
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

/// Changes while a fault lasts: recolors `recolor`, deletes `delete`,
/// creates `create`.
async fn churn(env: &Env, recolor: &[String], color: &str, delete: &[String], create: &[String]) {
    for name in recolor {
        env.set_color(name, color).await;
    }
    for name in delete {
        env.delete_robot(name).await;
    }
    create_all(env, create, color).await;
}

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
