//! The Lambda mode, for real: the controller binary started the way AWS
//! Lambda starts a package's `bootstrap` (no arguments, the function's
//! environment), against cargo-lambda's local Lambda runtime API emulator,
//! invoked with `cargo lambda invoke` and an EventBridge Scheduler payload.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testenv::process::{ChildProcess, free_port, log_tail};
use testenv::python::CARGO_LAMBDA;
use testenv::wait_for;

use crate::support::{CONVERGE, Env};

/// What the EventBridge Scheduler schedule of terraform/modules/aws sends.
pub(crate) const SCHEDULE_EVENT: &str = r#"{"source":"robot-byoc.schedule"}"#;

/// The one function `cargo lambda watch --only-lambda-apis` serves.
const FUNCTION: &str = "_";

/// `cargo lambda watch --only-lambda-apis`: the Lambda runtime API and the
/// invoke endpoint on one loopback port; the function is ours to start.
pub(crate) struct Emulator {
    cargo_lambda: PathBuf,
    port: u16,
    /// The variables a function needs, as the emulator announces them.
    function_env: Vec<(String, String)>,
    _process: ChildProcess,
}

impl Emulator {
    pub(crate) async fn start(dir: &Path) -> Emulator {
        // Installed by `cargo xtask tools`; a test never installs.
        let bin = CARGO_LAMBDA.find().unwrap_or_else(|e| panic!("{e}"));
        let cargo_lambda = bin.join("cargo-lambda");
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("free port");
        let log = dir.join(format!("cargo-lambda-{port}.log"));
        let mut cmd = Command::new(&cargo_lambda);
        cmd.args(["lambda", "watch", "--only-lambda-apis"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            // It reads the workspace's metadata even when it runs no function.
            .current_dir(testenv::workspace_root())
            .env("NO_COLOR", "1");
        let process =
            ChildProcess::spawn("cargo-lambda watch", cmd, &log).expect("emulator starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = wait_for("the Lambda emulator to listen", CONVERGE, || async {
            let text = std::fs::read_to_string(&log).ok()?;
            if text.contains("Error:") {
                return Some(Err(text));
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            let env = announced_env(&text);
            env.iter()
                .any(|(k, _)| k == "AWS_LAMBDA_RUNTIME_API")
                .then_some(Ok(env))
        })
        .await;
        let function_env = match started {
            Ok(Ok(env)) => env,
            Ok(Err(text)) => panic!("the Lambda emulator failed:\n{text}"),
            Err(e) => panic!("{e}; emulator log:\n{}", log_tail(&log, 40)),
        };
        Emulator {
            cargo_lambda,
            port,
            function_env,
            _process: process,
        }
    }

    /// `cargo lambda invoke`: the function's JSON answer, or the error the
    /// client printed.
    pub(crate) async fn invoke(&self, payload: &str) -> Result<Value, String> {
        let mut cmd = Command::new(&self.cargo_lambda);
        cmd.args(["lambda", "invoke", FUNCTION])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string()])
            .args(["--data-ascii", payload])
            .args(["--output-format", "json"])
            .env("NO_COLOR", "1");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("invoke thread")
            .expect("cargo lambda invoke runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_str(&stdout).map_err(|e| format!("not JSON ({e}): {stdout}"))
    }
}

/// The `NAME=value` lines the emulator logs for the function to use.
fn announced_env(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| {
            let (name, value) = line
                .trim()
                .trim_start_matches("INFO")
                .trim()
                .split_once('=')?;
            name.starts_with("AWS_LAMBDA_")
                .then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The controller as Lambda runs a package's `bootstrap`: no arguments,
/// configured by environment only.
pub(crate) fn start_function(
    emulator: &Emulator,
    test_env: &Env,
    env: &[(&str, &str)],
) -> ChildProcess {
    let log = test_env
        .dir
        .path()
        .join(format!("function-{}.log", emulator.port));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_robot-controller"));
    cmd.envs(emulator.function_env.iter().map(|(k, v)| (k, v)))
        .env("ROBOT_CONTROLLER_ALLOWED_ENDPOINTS", test_env.server.url())
        .env("ROBOT_CONTROLLER_LOG_FORMAT", "text")
        .env("ROBOT_CONTROLLER_LOG", "info,robot_controller=debug")
        .envs(env.iter().copied());
    ChildProcess::spawn("robot-controller (lambda)", cmd, &log).expect("function starts")
}

pub(crate) fn summary_field(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no number {field}: {summary}"))
}

#[tokio::test]
async fn each_invocation_is_one_pass_and_a_warm_one_reuses_the_loaded_kubeconfig() {
    let env = Env::start().await;
    env.create_robot("lambda-a", "red", json!({})).await;
    env.create_robot("lambda-b", "green", json!({})).await;
    // A copy of the controller's kubeconfig that the test can take away.
    let kubeconfig = env.dir.path().join("lambda.kubeconfig");
    std::fs::copy(env.cp.controller_kubeconfig_path(), &kubeconfig).expect("copy kubeconfig");
    let kubeconfig_source = kubeconfig.display().to_string();

    let emulator = Emulator::start(env.dir.path()).await;
    let mut function = start_function(
        &emulator,
        &env,
        &[("ROBOT_CONTROLLER_KUBECONFIG_SOURCE", &kubeconfig_source)],
    );

    // Cold: the process reads the kubeconfig, then serves the invocation.
    let first = emulator
        .invoke(SCHEDULE_EVENT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(function.log_path(), 40)));
    assert_eq!(summary_field(&first, "seen"), 2, "{first}");
    assert_eq!(summary_field(&first, "synced"), 2, "{first}");
    assert_eq!(summary_field(&first, "failed"), 0, "{first}");
    summary_field(&first, "duration_ms");
    env.wait_ready("lambda-a").await;
    env.wait_ready("lambda-b").await;
    assert_eq!(
        env.server_robot("lambda-a").await.map(|r| r.color),
        Some("red".into())
    );
    assert_eq!(
        env.server_robot("lambda-b").await.map(|r| r.color),
        Some("green".into())
    );

    // Warm: with the kubeconfig gone, only the client loaded at cold start
    // can reach the control plane. The pass still applies a change made
    // since, so it ran with that cached client.
    std::fs::remove_file(&kubeconfig).expect("remove kubeconfig");
    env.set_color("lambda-a", "blue").await;
    let second = emulator
        .invoke(SCHEDULE_EVENT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(function.log_path(), 40)));
    assert_eq!(summary_field(&second, "seen"), 2, "{second}");
    assert_eq!(summary_field(&second, "synced"), 2, "{second}");
    assert_eq!(
        env.server_robot("lambda-a").await.map(|r| r.color),
        Some("blue".into()),
        "the warm pass did not update the robot"
    );

    // The same process served both: nothing restarted it, and it never
    // tried to read the kubeconfig again (a failed read is logged).
    assert_eq!(function.exit_status(), None, "the function process exited");
    let log = std::fs::read_to_string(function.log_path()).unwrap_or_default();
    assert!(
        !log.contains("cannot re-read the kubeconfig"),
        "a warm invocation re-read the kubeconfig:\n{log}"
    );
}

#[tokio::test]
async fn a_warm_invocation_after_a_credential_rotation_re_reads_the_kubeconfig() {
    let mut env = Env::start().await;
    env.create_robot("rotated", "yellow", json!({})).await;
    let kubeconfig_source = env.cp.controller_kubeconfig_path().display().to_string();

    let emulator = Emulator::start(env.dir.path()).await;
    let function = start_function(
        &emulator,
        &env,
        // Long enough that only the control plane's 401 makes it re-read.
        &[
            ("ROBOT_CONTROLLER_KUBECONFIG_SOURCE", &kubeconfig_source),
            ("ROBOT_CONTROLLER_SECRET_REFRESH_INTERVAL", "1h"),
        ],
    );
    let first = emulator
        .invoke(SCHEDULE_EVENT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(function.log_path(), 40)));
    assert_eq!(summary_field(&first, "synced"), 1, "{first}");

    // The old token is revoked; the kubeconfig file now holds the new one.
    env.cp
        .rotate_controller_token()
        .await
        .expect("token rotates");
    env.set_color("rotated", "orange").await;
    let second = emulator
        .invoke(SCHEDULE_EVENT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(function.log_path(), 40)));
    assert_eq!(summary_field(&second, "synced"), 1, "{second}");
    assert_eq!(summary_field(&second, "failed"), 0, "{second}");
    assert_eq!(
        env.server_robot("rotated").await.map(|r| r.color),
        Some("orange".into())
    );
    let log = std::fs::read_to_string(function.log_path()).unwrap_or_default();
    assert!(
        log.contains("re-reading them"),
        "the 401 did not make the function re-read its credentials:\n{log}"
    );
    // Tokens never reach the log.
    assert!(!log.contains(&env.cp.controller_token()), "token in log");
}

#[test]
fn reads_the_variables_the_emulator_announces() {
    let log = " INFO the lambda function will depend on the following environment variables\n \
               INFO AWS_LAMBDA_FUNCTION_VERSION=1\n \
               INFO AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:9000/.rt\n \
               INFO starting Runtime server runtime_addr=127.0.0.1:9000\n";
    assert_eq!(
        announced_env(log),
        [
            ("AWS_LAMBDA_FUNCTION_VERSION".to_owned(), "1".to_owned()),
            (
                "AWS_LAMBDA_RUNTIME_API".to_owned(),
                "http://127.0.0.1:9000/.rt".to_owned()
            ),
        ]
    );
}
