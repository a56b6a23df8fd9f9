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

// ---------------------------------------------------------------- moto

/// moto's server on a free loopback port: AWS Secrets Manager (and IAM).
pub(crate) struct Moto {
    _process: ChildProcess,
    url: String,
    client: aws_sdk_secretsmanager::Client,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub(crate) async fn start() -> Moto {
        Self::start_with(&[]).await
    }

    /// `env` goes to moto, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to make it
    /// check IAM after that many calls.
    async fn start_with(env: &[(&str, &str)]) -> Moto {
        let bin = tokio::task::spawn_blocking(|| testenv::python::AWS.ensure())
            .await
            .unwrap()
            .expect("moto and the aws CLI install");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(LOOPBACK).unwrap();
        let mut cmd = Command::new(bin.join("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied());
        let log = dir.path().join("moto.log");
        let mut process = ChildProcess::spawn("moto_server", cmd, &log).unwrap();
        let addr = SocketAddr::new(LOOPBACK, port);
        let up = wait_for("moto_server answers", CONVERGE, || {
            let exited = process.exit_status().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                http_status(addr, "/moto-api/").await.map(|_| true)
            }
        })
        .await;
        assert!(
            matches!(up, Ok(true)),
            "moto: {up:?}\n{}",
            log_tail(&log, 30)
        );
        let url = format!("http://{addr}");
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&url)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        Moto {
            _process: process,
            client: aws_sdk_secretsmanager::Client::from_conf(conf),
            url,
            bin,
            _dir: dir,
        }
    }

    /// What the controller needs to talk to this moto, and nothing from
    /// the machine's own AWS set-up.
    pub(crate) fn controller_env(&self) -> Vars {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub(crate) async fn create(&self, name: &str, value: &str) {
        self.client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    }

    /// Rotation as AWS's rotation Lambdas do it: the new value goes in as
    /// AWSPENDING, then AWSCURRENT moves to it (and the old version
    /// becomes AWSPREVIOUS).
    pub(crate) async fn rotate(&self, name: &str, value: &str) {
        let old = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        let current = old
            .version_ids_to_stages()
            .into_iter()
            .flatten()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
            .expect("a current version");
        let new = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .version_stages("AWSPENDING")
            .send()
            .await
            .unwrap();
        self.client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(new.version_id().unwrap())
            .remove_from_version_id(current)
            .send()
            .await
            .unwrap();
    }

    /// The aws CLI against this moto, for the APIs the SDK here lacks (IAM).
    fn aws(&self, args: &[&str], key: (&str, &str)) -> Value {
        let out = Command::new(self.bin.join("aws"))
            .args([
                "--endpoint-url",
                &self.url,
                "--region",
                REGION,
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", key.0)
            .env("AWS_SECRET_ACCESS_KEY", key.1)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

// -------------------------------------------------------------- drongo

/// drongo's server on a free loopback port: Google Secret Manager's REST API.
pub(crate) struct Drongo {
    _process: ChildProcess,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drongo {
    pub(crate) async fn start() -> Drongo {
        let bin = tokio::task::spawn_blocking(|| testenv::python::GCP.ensure())
            .await
            .unwrap()
            .expect("drongo installs");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(LOOPBACK).unwrap();
        let mut cmd = Command::new(bin.join("drongo"));
        cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string()]);
        let log = dir.path().join("drongo.log");
        let mut process = ChildProcess::spawn("drongo", cmd, &log).unwrap();
        let addr = SocketAddr::new(LOOPBACK, port);
        let up = wait_for("drongo answers", CONVERGE, || {
            let exited = process.exit_status().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                http_status(addr, "/v1/projects/p1/secrets")
                    .await
                    .map(|_| true)
            }
        })
        .await;
        assert!(
            matches!(up, Ok(true)),
            "drongo: {up:?}\n{}",
            log_tail(&log, 30)
        );
        Drongo {
            _process: process,
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/v1/{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// Creates `projects/p1/secrets/<id>`.
    pub(crate) async fn create(&self, id: &str) {
        self.post(
            &format!("projects/p1/secrets?secretId={id}"),
            json!({ "replication": { "automatic": {} } }),
        )
        .await;
    }

    /// Adds a version holding `data`; returns its number.
    pub(crate) async fn add_version(&self, id: &str, data: &str) -> String {
        let v = self
            .post(
                &format!("projects/p1/secrets/{id}:addVersion"),
                json!({ "payload": { "data": b64(data.as_bytes()) } }),
            )
            .await;
        v["name"]
            .as_str()
            .and_then(|n| n.rsplit('/').next())
            .unwrap()
            .to_owned()
    }

    /// Disables a version: `latest` moves off it and reading it fails.
    pub(crate) async fn disable(&self, id: &str, version: &str) {
        self.post(
            &format!("projects/p1/secrets/{id}/versions/{version}:disable"),
            json!({}),
        )
        .await;
    }

    pub(crate) fn controller_env(&self) -> Vars {
        vec![(
            "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT".into(),
            self.url.clone(),
        )]
    }
}

// --------------------------------------------------------------- fakes

/// What a loopback fake saw: one entry per request.
#[derive(Clone, Debug, Default)]
struct Seen(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl Seen {
    fn record(&self, entry: BTreeMap<String, String>) {
        self.0.lock().unwrap().push(entry);
    }
    fn all(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().clone()
    }
}

/// A FAKE Secret Manager that answers only `GET /v1/{name}:access`, in the
/// documented shape (`payload.data` base64, `payload.dataCrc32c` an int64
/// as a decimal string), with the checksum it is told to send.
async fn fake_secret_manager(payload: &str, crc32c: u32) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    let data = b64(payload.as_bytes());
    let app = axum::Router::new().route(
        "/v1/{*name}",
        axum::routing::get(move |UrlPath(name): UrlPath<String>| {
            let data = data.clone();
            async move {
                let Some(name) = name.strip_suffix(":access") else {
                    return (StatusCode::NOT_FOUND, axum::Json(json!({})));
                };
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "name": name,
                        "payload": { "data": data, "dataCrc32c": crc32c.to_string() },
                    })),
                )
            }
        }),
    );
    serve(app).await
}

/// A FAKE metadata server: the identity endpoint only, as documented —
/// `GET /computeMetadata/v1/instance/service-accounts/default/identity
/// ?audience=…&format=…` with `Metadata-Flavor: Google`, answered with the
/// token as plain text; without the header, 403.
async fn fake_metadata_server(jwt: String, seen: Seen) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/identity",
        axum::routing::get(
            move |headers: HeaderMap, Query(query): Query<BTreeMap<String, String>>| {
                let (jwt, seen) = (jwt.clone(), seen.clone());
                async move {
                    let flavor = headers
                        .get("metadata-flavor")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut entry = query.clone();
                    entry.insert("Metadata-Flavor".into(), flavor.clone());
                    seen.record(entry);
                    if flavor != "Google" {
                        return (
                            StatusCode::FORBIDDEN,
                            [("content-type", "text/plain")],
                            "Missing required header \"Metadata-Flavor\": \"Google\"\n".to_owned(),
                        );
                    }
                    (StatusCode::OK, [("content-type", "text/plain")], jwt)
                }
            },
        ),
    );
    serve(app).await
}

pub(crate) async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// A JWT shaped like Google's ID tokens (unsigned: nothing here checks
/// the signature; Cloud Run's IAM would).
fn google_id_token(audience: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let enc = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.{}",
        enc(json!({ "alg": "RS256", "kid": "fake-key", "typ": "JWT" })),
        enc(json!({
            "aud": audience,
            "azp": "robot-controller@p1.iam.gserviceaccount.com",
            "email": "robot-controller@p1.iam.gserviceaccount.com",
            "email_verified": true,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": "1234567890",
        })),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"fake-signature"),
    )
}

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

// --------------------------------------------------------------- tests

/// A secret manager the rotation scenario publishes new versions to.
trait RotatingStore {
    /// As the report names it.
    const CLOUD: &'static str;
    /// A new current version of the kubeconfig; the old one retired.
    async fn rotate_kubeconfig(&mut self, yaml: &str);
    /// A new current version of the robot server's token; the old retired.
    async fn rotate_server_token(&mut self, token: &str);
}

/// Secrets Manager: a new AWSCURRENT version; the server token lives in the
/// console's key/value form (a JSON object read with ?jsonKey=).
impl RotatingStore for Moto {
    const CLOUD: &'static str = "AWS";
    async fn rotate_kubeconfig(&mut self, yaml: &str) {
        self.rotate("robot/kubeconfig", yaml).await;
    }
    async fn rotate_server_token(&mut self, token: &str) {
        self.rotate("robot/server", &server_token_json(token)).await;
    }
}

fn server_token_json(token: &str) -> String {
    json!({ "token": token, "note": "robot server" }).to_string()
}

/// Secret Manager: `latest` moves to a new version and the old version is
/// disabled.
struct DrongoVersions {
    drongo: Drongo,
    kubeconfig: String,
    server_token: String,
}

impl RotatingStore for DrongoVersions {
    const CLOUD: &'static str = "GCP";
    async fn rotate_kubeconfig(&mut self, yaml: &str) {
        let new = self.drongo.add_version("kubeconfig", yaml).await;
        let old = std::mem::replace(&mut self.kubeconfig, new);
        self.drongo.disable("kubeconfig", &old).await;
    }
    async fn rotate_server_token(&mut self, token: &str) {
        let new = self.drongo.add_version("server-token", token).await;
        let old = std::mem::replace(&mut self.server_token, new);
        self.drongo.disable("server-token", &old).await;
    }
}

/// A stack whose robot server wants a token (first `token_a`).
struct TokenServer {
    env: Env,
    token_file: PathBuf,
    token_a: String,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    async fn start() -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("server-token");
        let token_a = distinctive("srv-a");
        std::fs::write(&token_file, &token_a).unwrap();
        let env = Env::start_with(
            CrdSet::Ours,
            Family::Crossplane,
            &["--auth-token-file", token_file.to_str().unwrap()],
        )
        .await;
        TokenServer {
            env,
            token_file,
            token_a,
            _dir: dir,
        }
    }
}

/// Robots converge with both credentials from `store`; each credential is
/// then rotated and the old one revoked, and the controller recovers
/// without a restart. No credential ever shows.
async fn rotate_both<S: RotatingStore>(
    stack: TokenServer,
    store: &mut S,
    controller: &mut Controller,
    kubeconfig_uri: &str,
) {
    let TokenServer {
        mut env,
        token_file,
        token_a: server_token_a,
        _dir,
    } = stack;
    let kubeconfig_token_a = env.cp.controller_token();
    env.create_robot("before", "red", json!({})).await;
    env.wait_ready("before").await;
    assert!(
        server_client(&env, &server_token_a)
            .get("before")
            .await
            .unwrap()
            .is_some()
    );

    // The control plane's token: revoked (apiserver restarted without it),
    // then the new kubeconfig published as the current version.
    let revoked = Instant::now();
    let kubeconfig_token_b = env.cp.rotate_controller_token().await.unwrap();
    let problem = controller
        .wait_readyz("/readyz reports refused credentials", |s, b| {
            s != 200 && b.contains("refuses the credentials")
        })
        .await;
    assert!(problem.contains(kubeconfig_uri), "{problem}");
    let updated = Instant::now();
    store
        .rotate_kubeconfig(&env.cp.controller_kubeconfig_yaml())
        .await;
    controller.wait_ready().await;
    let accepted = updated.elapsed();
    env.create_robot("after-kubeconfig", "green", json!({}))
        .await;
    env.wait_ready("after-kubeconfig").await;
    report_kubeconfig(S::CLOUD, revoked.elapsed(), updated.elapsed(), accepted);

    // The server's token: the server restarts with a new one (the old one
    // is refused from then on); a Robot created now fails until the secret
    // holds the new token, then syncs.
    let server_token_b = distinctive("srv-b");
    std::fs::write(&token_file, &server_token_b).unwrap();
    let revoked = Instant::now();
    env.server.restart().await.unwrap();
    env.create_robot("after-server-token", "blue", json!({}))
        .await;
    wait_refused(&env, "after-server-token").await;
    let updated = Instant::now();
    store.rotate_server_token(&server_token_b).await;
    env.wait_ready("after-server-token").await;
    report(
        &format!("{} server token", S::CLOUD),
        revoked.elapsed(),
        updated.elapsed(),
    );
    assert!(
        server_client(&env, &server_token_b)
            .get("after-server-token")
            .await
            .unwrap()
            .is_some()
    );

    assert_never_shown(
        controller,
        &env,
        &[
            &kubeconfig_token_a,
            &kubeconfig_token_b,
            &server_token_a,
            &server_token_b,
        ],
    )
    .await;
}

/// Kubeconfig and server token from AWS Secrets Manager (moto).
#[tokio::test]
async fn aws_secrets_manager_kubeconfig_and_server_token_with_rotation() {
    let stack = TokenServer::start().await;
    let mut moto = Moto::start().await;
    moto.create(
        "robot/kubeconfig",
        &stack.env.cp.controller_kubeconfig_yaml(),
    )
    .await;
    moto.create("robot/server", &server_token_json(&stack.token_a))
        .await;
    let kubeconfig_uri = "aws-secretsmanager://robot/kubeconfig";
    let mut controller = Controller::spawn_with(
        stack.env.dir.path(),
        "run",
        &stack.env.with_allowlist(&[
            "--kubeconfig-source",
            kubeconfig_uri,
            "--server-token-source",
            "aws-secretsmanager://robot/server?region=us-east-1&jsonKey=token",
            "--log-filter",
            "trace",
        ]),
        &moto.controller_env(),
    );
    controller.wait_ready().await;
    rotate_both(stack, &mut moto, &mut controller, kubeconfig_uri).await;
}

/// The same against Google Secret Manager (drongo).
#[tokio::test]
async fn gcp_secret_manager_kubeconfig_and_server_token_with_rotation() {
    let stack = TokenServer::start().await;
    let drongo = Drongo::start().await;
    drongo.create("kubeconfig").await;
    let kubeconfig = drongo
        .add_version("kubeconfig", &stack.env.cp.controller_kubeconfig_yaml())
        .await;
    drongo.create("server-token").await;
    let server_token = drongo.add_version("server-token", &stack.token_a).await;
    let kubeconfig_uri = "gcp-secretmanager://projects/p1/secrets/kubeconfig/versions/latest";
    let mut controller = Controller::spawn_with(
        stack.env.dir.path(),
        "run",
        &stack.env.with_allowlist(&[
            "--kubeconfig-source",
            kubeconfig_uri,
            "--server-token-source",
            "gcp-secretmanager://projects/p1/secrets/server-token/versions/latest",
            "--log-filter",
            "trace",
        ]),
        &drongo.controller_env(),
    );
    controller.wait_ready().await;
    // drongo sends no checksum; the controller says so at debug level.
    assert!(controller.log().contains("no payload.dataCrc32c"));
    let mut store = DrongoVersions {
        drongo,
        kubeconfig,
        server_token,
    };
    rotate_both(stack, &mut store, &mut controller, kubeconfig_uri).await;
}

/// `--server-auth gcp-id-token`: the robot server accepts only the ID token
/// the (fake) metadata server hands out for its URL, so Robots converge
/// only if the header arrives.
#[tokio::test]
async fn gcp_id_tokens_reach_the_robot_server() {
    let server_dir = tempfile::tempdir().unwrap();
    let token_file = server_dir.path().join("expected-id-token");
    std::fs::write(&token_file, "not-yet-the-id-token-placeholder-0123").unwrap();
    let mut env = Env::start_with(
        CrdSet::Ours,
        Family::Crossplane,
        &["--auth-token-file", token_file.to_str().unwrap()],
    )
    .await;
    // The token's audience is the server's URL, known once it runs.
    let jwt = google_id_token(env.server.url());
    std::fs::write(&token_file, &jwt).unwrap();
    env.server.restart().await.unwrap();
    let seen = Seen::default();
    let (metadata_url, _fake) = fake_metadata_server(jwt.clone(), seen.clone()).await;
    let metadata_host = metadata_url.trim_start_matches("http://").to_owned();
    let kubeconfig = env
        .cp
        .controller_kubeconfig_path()
        .to_str()
        .unwrap()
        .to_owned();

    // Without the ID token the server refuses: once exits 1.
    env.create_robot("first", "red", json!({})).await;
    let args = env.with_allowlist(&["--kubeconfig-source", &kubeconfig]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, log) = once(&args, &[]).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("refused our credentials"), "{log}");

    let mut controller = Controller::spawn_with(
        env.dir.path(),
        "run",
        &env.with_allowlist(&[
            "--kubeconfig-source",
            &kubeconfig,
            "--server-auth",
            "gcp-id-token",
            "--log-filter",
            "trace",
        ]),
        &[("GCE_METADATA_HOST".into(), metadata_host)],
    );
    controller.wait_ready().await;
    env.wait_ready("first").await;
    for name in ["second", "third"] {
        env.create_robot(name, "blue", json!({})).await;
    }
    env.wait_ready("second").await;
    env.wait_ready("third").await;

    let requests = seen.all();
    assert_eq!(requests.len(), 1, "one token, cached: {requests:?}");
    let request = &requests[0];
    assert_eq!(request["audience"], env.server.url());
    assert_eq!(request["format"], "full");
    assert_eq!(request["Metadata-Flavor"], "Google");
    assert_never_shown(&controller, &env, &[&jwt]).await;
}

/// Each bad source stops the start with exit code 2 and one error line
/// that names the source and never holds the secret.
#[tokio::test]
async fn bad_sources_fail_at_start_up_with_one_clear_error() {
    let moto = Moto::start().await;
    let drongo = Drongo::start().await;
    let secret = distinctive("tok-bad-input");
    let kubeconfig = testenv::kubeconfig::render("https://127.0.0.1:1", "ca", "u", &secret);
    let no_context: String = kubeconfig
        .lines()
        .filter(|l| !l.starts_with("current-context"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(no_context, kubeconfig);

    moto.create("kc/not-a-kubeconfig", &format!("token: {secret}\n"))
        .await;
    moto.create("kc/no-context", &no_context).await;
    moto.create("kc/blank", " \n").await;
    moto.create("kc/json", &json!({ "other": secret }).to_string())
        .await;
    drongo.create("blank").await;
    drongo.add_version("blank", "").await;
    drongo.create("no-context").await;
    drongo.add_version("no-context", &no_context).await;
    drongo.create("revoked").await;
    let v1 = drongo.add_version("revoked", &kubeconfig).await;
    drongo.disable("revoked", &v1).await;
    let (crc_url, _fake) = fake_secret_manager(&kubeconfig, crc32c_of(&kubeconfig) ^ 1).await;
    let closed_port = free_port(LOOPBACK).unwrap();

    let aws = moto.controller_env();
    let gcp = drongo.controller_env();
    let with = |base: &[(String, String)], k: &str, v: &str| {
        let mut e = base.to_vec();
        e.retain(|(key, _)| key != k);
        e.push((k.to_owned(), v.to_owned()));
        e
    };
    let unreachable = format!("http://127.0.0.1:{closed_port}");
    let cases: Vec<(&str, &str, Vars, String)> = vec![
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/missing",
            aws.clone(),
            format!("the secret does not exist for versionStage AWSCURRENT in region us-east-1 (endpoint {})", moto.url),
        ),
        (
            // The secret exists, in us-east-1.
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context?region=eu-west-1",
            aws.clone(),
            "the secret does not exist for versionStage AWSCURRENT in region eu-west-1".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context",
            with(&aws, "AWS_ENDPOINT_URL", &unreachable),
            format!("cannot reach AWS Secrets Manager for versionStage AWSCURRENT in region us-east-1 (endpoint {unreachable})"),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/blank",
            aws.clone(),
            "the secret is empty".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/not-a-kubeconfig",
            aws.clone(),
            "the payload is not a kubeconfig".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context",
            aws.clone(),
            "the kubeconfig has no current-context".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/json?jsonKey=kubeconfig",
            aws.clone(),
            "the secret's JSON object has no key \"kubeconfig\"".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/blank?versionStage=AWSCURRENT&versionId=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
            aws.clone(),
            "give versionStage or versionId, not both".into(),
        ),
        (
            "--server-token-source",
            "aws-secretsmanager://srv/missing",
            aws.clone(),
            "robot server token: aws-secretsmanager://srv/missing: the secret does not exist".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/missing/versions/latest",
            gcp.clone(),
            format!("the secret does not exist at {}", drongo.url),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/blank/versions/latest",
            gcp.clone(),
            "the secret is empty".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/no-context/versions/1",
            gcp.clone(),
            "the kubeconfig has no current-context".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/revoked/versions/1",
            gcp.clone(),
            "answered FAILED_PRECONDITION: Cannot access secret version in state DISABLED".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
            with(&gcp, "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT", &crc_url),
            "the payload's CRC32C is".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
            with(&gcp, "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT", "http://192.0.2.10:8080"),
            "plain http is allowed on loopback only".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/kubeconfig",
            gcp.clone(),
            "malformed resource name; expected gcp-secretmanager://projects/<project>/secrets/<secret>/versions/<number or latest>".into(),
        ),
        (
            "--kubeconfig-source",
            "vault://secret/kubeconfig",
            vec![],
            "unknown scheme \"vault\"".into(),
        ),
    ];
    for (flag, uri, env, needle) in cases {
        let (code, output) = once(&[flag, uri, "--start-timeout", "2s"], &env).await;
        let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
        // What may pass is retried, then exit 1; what cannot, exit 2 at once.
        let transient = needle.starts_with("cannot reach");
        assert_eq!(code, Some(if transient { 1 } else { 2 }), "{uri}: {output}");
        if transient {
            assert!(
                output.contains("retrying")
                    && output.contains("still failing after --start-timeout"),
                "{output}"
            );
        }
        assert_eq!(errors.len(), 1, "{uri}: one error: {output}");
        assert!(errors[0].contains(uri), "{uri}: names the source: {output}");
        assert!(
            errors[0].contains(&needle),
            "{uri}: wants {needle:?}: {output}"
        );
        assert!(
            !output.contains(&secret),
            "{uri}: the secret is in the output"
        );
    }

    // --server-auth gcp-id-token: its flags are checked at start-up too.
    for (args, env, needle) in [
        (
            vec![
                "--server-auth",
                "gcp-id-token",
                "--server-token-source",
                "env:TOKEN",
            ],
            vec![],
            "takes its tokens from the metadata server; drop --server-token-source",
        ),
        (
            vec!["--server-auth", "gcp-id-token"],
            vec![(
                "GCE_METADATA_HOST".to_owned(),
                "metadata/computeMetadata".to_owned(),
            )],
            "GCE_METADATA_HOST=\"metadata/computeMetadata\" must be a host[:port] only",
        ),
    ] {
        let mut args = args;
        args.extend(["--kubeconfig-source", "env:ROBOT_TEST_UNSET"]);
        let (code, output) = once(&args, &env).await;
        assert_eq!(code, Some(2), "{output}");
        assert!(output.contains(needle), "{output}");
    }

    // The fake's answer with the right checksum is accepted: the start goes
    // past the source (and fails later, at the unreachable control plane).
    let (good_url, _good) = fake_secret_manager(&kubeconfig, crc32c_of(&kubeconfig)).await;
    let (code, output) = once(
        &[
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
        ],
        &with(
            &gcp,
            "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT",
            &good_url,
        ),
    )
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("pass failed"), "{output}");
    assert!(!output.contains(&secret));
}

/// moto checks IAM once told to (after `INITIAL_NO_AUTH_ACTION_COUNT`
/// unchecked calls): a user without a policy is refused GetSecretValue and
/// an unknown access key is refused outright, both permission errors at
/// start-up; a user with the documented policy gets through.
#[tokio::test]
async fn aws_refusals_are_permission_errors() {
    // Six unchecked calls set the stage; every later call is checked.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]).await;
    let setup = (
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let mut keys = Vec::new();
    for user in ["no-policy", "reader"] {
        moto.aws(&["iam", "create-user", "--user-name", user], setup);
        let key = moto.aws(&["iam", "create-access-key", "--user-name", user], setup);
        let field = |f: &str| key["AccessKey"][f].as_str().unwrap().to_owned();
        keys.push((field("AccessKeyId"), field("SecretAccessKey")));
    }
    // The action the README asks for. The README scopes it to the one
    // secret; moto authorizes Secrets Manager calls against resource "*",
    // so only "*" can be granted here.
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }],
    });
    moto.aws(
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "reader",
            "--policy-name",
            "read-kubeconfig",
            "--policy-document",
            &policy.to_string(),
        ],
        setup,
    );
    let secret = distinctive("tok-denied");
    let kubeconfig = testenv::kubeconfig::render("https://127.0.0.1:1", "ca", "u", &secret);
    moto.aws(
        &[
            "secretsmanager",
            "create-secret",
            "--name",
            "kc/denied",
            "--secret-string",
            &kubeconfig,
        ],
        setup,
    );

    let uri = "aws-secretsmanager://kc/denied";
    let run = |key_id: String, key_secret: String| {
        let mut env = moto.controller_env();
        env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
        env.push(("AWS_ACCESS_KEY_ID".into(), key_id));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), key_secret));
        async move { once(&["--kubeconfig-source", uri], &env).await }
    };
    let (no_policy, reader) = (keys[0].clone(), keys[1].clone());
    // moto answers these in XML, which a JSON-protocol client cannot read
    // a code from: the status decides.
    for (key, who) in [
        (no_policy.clone(), "a user without a policy"),
        (
            ("AKIAUNKNOWNKEY000000".into(), "wrong".into()),
            "an unknown key",
        ),
    ] {
        let (code, output) = run(key.0, key.1.clone()).await;
        assert_eq!(code, Some(2), "{who}: {output}");
        let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{who}: {output}");
        assert!(
            errors[0].contains(uri)
                && errors[0].contains("permission denied: AWS answered HTTP 403")
                && errors[0].contains("secretsmanager:GetSecretValue"),
            "{who}: {output}"
        );
        assert!(
            !output.contains(&secret) && !output.contains(&key.1),
            "{who}"
        );
    }
    // With the policy the source is read; the start fails later, at the
    // control plane the kubeconfig names (nothing listens there).
    let (code, output) = run(reader.0, reader.1.clone()).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("pass failed"), "{output}");
    assert!(!output.contains(&secret) && !output.contains(&reader.1));
}

fn crc32c_of(text: &str) -> u32 {
    crc32c::crc32c(text.as_bytes())
}
