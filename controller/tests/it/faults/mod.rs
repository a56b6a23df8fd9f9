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

mod apiserver;
mod chaos;
mod credentials;
mod leader;
mod network;
mod server;
mod watches;

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
    wait_converged_within(env, controllers, what, CONVERGE).await
}

/// [`wait_converged`], for faults that take longer than [`CONVERGE`].
pub async fn wait_converged_within(
    env: &Env,
    controllers: &[&Controller],
    what: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let last = std::sync::Mutex::new(String::new());
    let result = wait_for(what, limit, || {
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
