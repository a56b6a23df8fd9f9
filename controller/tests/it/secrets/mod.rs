//! Cloud secret sources end to end: the real controller binary reads its
//! kubeconfig and the robot server's token from moto (AWS Secrets Manager)
//! and drongo (Google Secret Manager), both real emulators on loopback,
//! follows rotation and revocation by itself, and refuses bad input at
//! start-up with one clear error that never quotes the secret.
//!
//! Where no emulator does the job, a loopback fake stands in, named as
//! such and answering exactly the documented wire format: a Secret Manager
//! `:access` responder that sends a wrong `payload.dataCrc32c` (drongo
//! sends none), and the metadata server's identity endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::Api;
use robot_api::{AuthHeader, RobotClient};
use robot_controller::api::Family;
use serde_json::{Value, json};
use testenv::process::{ChildProcess, free_port, log_tail};
use testenv::{CrdSet, wait_for};

use crate::support::{CONVERGE, Controller, Env};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REGION: &str = "us-east-1";

/// Environment variables for a child process.
pub(crate) type Vars = Vec<(String, String)>;

mod bad_input;
mod drongo;
mod fakes;
mod moto;
mod rotation;

pub(crate) use drongo::*;
pub(crate) use fakes::*;
pub(crate) use moto::*;

// ---------------------------------------------------------- the binary

/// A long-running controller with its own environment (the shared
/// support spawner passes none).
/// `robot-controller once` with `args` and `env`: exit code and output.
pub(crate) async fn once(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_robot-controller"));
    cmd.arg("once").args(args);
    // The allowlist is checked first; these tests are about the sources.
    if !args.contains(&"--allowed-endpoints") {
        cmd.args(["--allowed-endpoints", "http://127.0.0.1:9"]);
    }
    cmd.env_remove("KUBECONFIG")
        .env("ROBOT_CONTROLLER_LOG_FORMAT", "text")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    let out = tokio::time::timeout(CONVERGE, cmd.output())
        .await
        .expect("once finishes")
        .expect("once runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

// ------------------------------------------------------------- helpers

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        testenv::http::get(addr, &path, Duration::from_secs(2)).ok()
    })
    .await
    .ok()
    .flatten()
    .map(|r| r.status)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A fresh token-like string no output may ever contain.
pub(crate) fn distinctive(label: &str) -> String {
    format!(
        "{label}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A robot client that authenticates with `token` (the test's own view
/// of the server).
fn server_client(env: &Env, token: &str) -> RobotClient {
    let auth = AuthHeader::default();
    auth.set_bearer(token).unwrap();
    RobotClient::new(reqwest::Client::new(), env.server.url(), Some(auth)).unwrap()
}

/// Every Event in the control plane, as text.
async fn all_events(env: &Env) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(env.admin.clone());
    let list = events.list(&Default::default()).await.unwrap();
    serde_json::to_string(&list.items).unwrap()
}

/// Asserts none of `secrets` is in the controller's log, metrics,
/// /readyz or the control plane's Events.
pub(crate) async fn assert_never_shown(controller: &Controller, env: &Env, secrets: &[&str]) {
    let log = controller.log();
    let metrics = controller.get("/metrics").await.unwrap_or_default().1;
    let readyz = controller.get("/readyz").await.unwrap_or_default().1;
    let events = all_events(env).await;
    for secret in secrets {
        assert!(!log.contains(secret), "a secret is in the log");
        assert!(!metrics.contains(secret), "a secret is in the metrics");
        assert!(!readyz.contains(secret), "a secret is in /readyz");
        assert!(!events.contains(secret), "a secret is in an Event");
    }
}

/// Waits until the Robot `name` fails to sync because the server refuses
/// our credentials.
async fn wait_refused(env: &Env, name: &str) {
    wait_for(
        &format!("Robot {name} refused by the server"),
        CONVERGE,
        || async {
            let r = env.robot(name).await?;
            let c = crate::support::condition(&r, "Synced")?;
            (c.status == "False"
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains("refused our credentials")))
            .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Recovery from a kubeconfig rotation: the controller's own view
/// (/readyz healthy again) and a Robot created afterwards being Ready.
fn report_kubeconfig(
    cloud: &str,
    since_revocation: Duration,
    since_new_secret: Duration,
    accepted: Duration,
) {
    eprintln!(
        "rotation ({cloud} kubeconfig): credentials accepted again (/readyz) {accepted:.1?} and a new Robot Ready {since_new_secret:.1?} after the new secret version; {since_revocation:.1?} after the old token was revoked"
    );
}

fn report(what: &str, since_revocation: Duration, since_new_secret: Duration) {
    eprintln!(
        "rotation ({what}): recovered {since_new_secret:.1?} after the new secret version, {since_revocation:.1?} after the old credential was revoked"
    );
}
