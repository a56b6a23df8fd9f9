//! Authenticating with the kubeconfigs real control planes hand out, none
//! of which runs anything here:
//! - Upbound Cloud: the kubeconfig `up ctx ... -f -` writes (an `up
//!   organization token` exec plugin), exchanged natively at a loopback fake
//!   of Upbound's token exchange (faithful to up-sdk-go's wire format: it
//!   refuses anything else) whose short-lived tokens the test control plane
//!   accepts through its TokenReview webhook, so expiry is real;
//! - EKS: `aws eks get-token`, presigned natively; the webhook checks the
//!   token as aws-iam-authenticator does and calls the URL at moto's STS;
//! - GKE: `gke-gcloud-auth-plugin`, an access token from a loopback fake
//!   of the metadata server;
//! - client certificate data.
//!
//! And every kubeconfig field that would run or read something is refused,
//! at start-up and at rotation, with no token ever shown.
//!
//! The fakes (exchange, webhook, metadata server) are hand-written: no
//! emulator of them exists.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use testenv::{ControlPlane, CrdSet, Options, RobotServer};

use crate::secrets::{Moto, Vars, assert_never_shown, distinctive, once, serve};
use crate::support::{Controller, Env, Resources};
use testenv::process::log_tail;

const FAST: &[&str] = &["--poll-interval", "2s", "--max-backoff", "2s"];
const ORG: &str = "acme-robots";
const EKS_CLUSTER: &str = "robots-prod";

/// The control plane's view of tokens: what the fakes issued, what the
/// webhook was shown.
#[derive(Default)]
struct Authority {
    /// Access tokens the exchange and the metadata server issued, with
    /// their expiry and the Upbound token they were issued for.
    issued: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// Upbound tokens the exchange accepts.
    upbound: Mutex<HashSet<String>>,
    /// How long issued tokens live.
    lifetime: Mutex<Duration>,
    exchanges: Mutex<Vec<Instant>>,
    /// Tokens shown to the webhook that it refused (expired, revoked, unknown).
    refused: Mutex<Vec<String>>,
    /// moto's URL, for EKS tokens.
    sts: Mutex<Option<String>>,
    eks_accepted: Mutex<u32>,
}

impl Authority {
    fn new(lifetime: Duration) -> Arc<Self> {
        let a = Arc::new(Authority::default());
        *a.lifetime.lock().unwrap() = lifetime;
        a
    }

    fn issue(&self, upbound: Option<&str>) -> (String, u64) {
        let token = distinctive("cp-access");
        let lifetime = *self.lifetime.lock().unwrap();
        self.issued.lock().unwrap().insert(
            token.clone(),
            (Instant::now() + lifetime, upbound.map(str::to_owned)),
        );
        (token, lifetime.as_secs())
    }

    /// An Upbound token stops working, with every token issued for it.
    fn revoke(&self, upbound: &str) {
        self.upbound.lock().unwrap().remove(upbound);
        self.issued
            .lock()
            .unwrap()
            .retain(|_, (_, u)| u.as_deref() != Some(upbound));
    }

    fn accepts(&self, token: &str) -> bool {
        self.issued
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|(expiry, _)| Instant::now() < *expiry)
    }
}

/// The webhook's answer for `user`.
fn review(user: Option<&str>) -> Value {
    match user {
        Some(u) => json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": { "authenticated": true, "user": { "username": u, "groups": ["system:authenticated"] } },
        }),
        None => json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": { "authenticated": false },
        }),
    }
}

/// The TokenReview webhook the test apiserver asks about every token its
/// static file does not know.
async fn webhook(authority: Arc<Authority>) -> String {
    async fn handle(State(a): State<Arc<Authority>>, body: axum::Json<Value>) -> axum::Json<Value> {
        let token = body["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if a.accepts(&token) {
            return axum::Json(review(Some(testenv::CONTROLLER_USER)));
        }
        if let Some(encoded) = token.strip_prefix("k8s-aws-v1.")
            && verify_eks(&a, encoded).await
        {
            *a.eks_accepted.lock().unwrap() += 1;
            return axum::Json(review(Some(testenv::CONTROLLER_USER)));
        }
        a.refused.lock().unwrap().push(token);
        axum::Json(review(None))
    }
    let app = axum::Router::new()
        .route("/authenticate", post(handle))
        .with_state(authority);
    let (url, _task) = serve(app).await;
    format!("{url}/authenticate")
}

/// An EKS token as aws-iam-authenticator checks it: the shape of the
/// presigned URL, then the URL itself, called with the cluster header,
/// must say who signed it.
async fn verify_eks(a: &Authority, encoded: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    let Ok(url) = url::Url::parse(&String::from_utf8_lossy(&raw)) else {
        return false;
    };
    let Some(sts) = a.sts.lock().unwrap().clone() else {
        return false;
    };
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let allowed = [
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
    ];
    let shaped = url.as_str().starts_with(&sts)
        && url.path() == "/"
        && q.keys().all(|k| allowed.contains(&k.as_str()))
        && q.get("Action").map(String::as_str) == Some("GetCallerIdentity")
        && q.get("X-Amz-SignedHeaders")
            .is_some_and(|h| h.split(';').any(|h| h == "x-k8s-aws-id"))
        && q.get("X-Amz-Expires")
            .and_then(|e| e.parse::<u32>().ok())
            .is_some_and(|e| e <= 900);
    if !shaped {
        return false;
    }
    // moto serves every service on one port and routes by the credential
    // scope of the Authorization header, which a presigned URL carries in
    // its query instead: repeat it there so moto routes to STS (moto checks
    // no signature either way; real STS needs no such hint).
    let hint = format!(
        "AWS4-HMAC-SHA256 Credential={}, SignedHeaders={}, Signature={}",
        q.get("X-Amz-Credential").cloned().unwrap_or_default(),
        q.get("X-Amz-SignedHeaders").cloned().unwrap_or_default(),
        q.get("X-Amz-Signature").cloned().unwrap_or_default()
    );
    let answer = reqwest::Client::new()
        .get(url.as_str())
        .header("x-k8s-aws-id", EKS_CLUSTER)
        .header("authorization", hint)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => r
            .text()
            .await
            .is_ok_and(|t| t.contains("<GetCallerIdentityResult>") && t.contains("<Arn>")),
        _ => false,
    }
}

/// A fake of Upbound's token exchange: up-sdk-go's request exactly, or 400.
async fn exchange_on(
    listener: tokio::net::TcpListener,
    authority: Arc<Authority>,
) -> tokio::task::JoinHandle<()> {
    async fn handle(
        State(a): State<Arc<Authority>>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, axum::Json<Value>) {
        let bad = |why: &str| {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "invalid_request", "error_description": why })),
            )
        };
        if headers.get("content-type").and_then(|v| v.to_str().ok())
            != Some("application/x-www-form-urlencoded")
        {
            return bad("content type");
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let one = |k: &str| {
            let v: Vec<&String> = pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect();
            (v.len() == 1).then(|| v[0].clone())
        };
        let audiences: Vec<&str> = pairs
            .iter()
            .filter(|(n, _)| n == "audience")
            .map(|(_, v)| v.as_str())
            .collect();
        let known = [
            "audience",
            "grant_type",
            "subject_token_type",
            "subject_token",
            "scope",
        ];
        if pairs.iter().any(|(n, _)| !known.contains(&n.as_str()))
            || audiences != ["upbound:spaces:api", "upbound:spaces:controlplanes"]
            || one("grant_type").as_deref()
                != Some("urn:ietf:params:oauth:grant-type:token-exchange")
            || one("subject_token_type").as_deref()
                != Some("urn:ietf:params:oauth:token-type:id_token")
            || one("scope").as_deref() != Some(&format!("upbound:org:{ORG}"))
        {
            return bad("form");
        }
        let Some(subject) = one("subject_token") else {
            return bad("subject_token");
        };
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if bearer != format!("Bearer {subject}") {
            return bad("authorization");
        }
        if !a.upbound.lock().unwrap().contains(&subject) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": "unauthorized" })),
            );
        }
        a.exchanges.lock().unwrap().push(Instant::now());
        let (token, expires_in) = a.issue(Some(&subject));
        (
            StatusCode::OK,
            axum::Json(json!({
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": expires_in,
            })),
        )
    }
    let app = axum::Router::new()
        .route(
            "/apis/tokenexchange.upbound.io/v1alpha1/orgscopedtokens",
            post(handle),
        )
        .with_state(authority);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn exchange(authority: Arc<Authority>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, exchange_on(listener, authority).await)
}

/// A fake of the metadata server's access tokens.
async fn metadata_server(authority: Arc<Authority>) -> String {
    async fn token(
        State(a): State<Arc<Authority>>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<Value>) {
        if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
            return (StatusCode::FORBIDDEN, axum::Json(json!({})));
        }
        let (token, expires_in) = a.issue(None);
        (
            StatusCode::OK,
            axum::Json(
                json!({ "access_token": token, "expires_in": expires_in, "token_type": "Bearer" }),
            ),
        )
    }
    let app = axum::Router::new()
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(token),
        )
        .with_state(authority);
    let (url, _task) = serve(app).await;
    url.trim_start_matches("http://").to_owned()
}

/// A control plane that also accepts the tokens `authority` knows.
async fn env_with_webhook(authority: Arc<Authority>) -> Env {
    let url = webhook(authority).await;
    testenv::install_crypto_provider();
    let cp = ControlPlane::start(Options {
        crds: CrdSet::Ours,
        token_webhook: Some(url),
        ..Options::default()
    })
    .await
    .expect("control plane with a token webhook");
    Env::with_control_plane(
        cp,
        RobotServer::start(&[]).await.expect("robot server"),
        Resources::of(robot_controller::api::Family::Crossplane),
    )
    .await
}

/// The server URL and CA data of the test control plane.
fn cluster_of(env: &Env) -> (String, String) {
    (
        env.cp.url().to_owned(),
        base64::engine::general_purpose::STANDARD.encode(env.cp.ca_pem()),
    )
}

/// The kubeconfig `up ctx <org>/<space>/<group>/<ctp> -f -` prints
/// (upbound/up, `clientcmd.Write`: keys sorted, every name `upbound`),
/// with the test control plane as its server.
fn up_kubeconfig(env: &Env) -> String {
    let (server, ca) = cluster_of(env);
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: upbound
contexts:
- context:
    cluster: upbound
    extensions:
    - extension:
        apiVersion: upbound.io/v1alpha1
        kind: SpaceExtension
        spec:
          cloud:
            organization: {ORG}
            space: upbound-gcp-us-west-1
      name: spaces.upbound.io/space
    namespace: default
    user: upbound
  name: upbound
current-context: upbound
kind: Config
preferences: {{}}
users:
- name: upbound
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      args:
      - organization
      - token
      command: up
      env:
      - name: ORGANIZATION
        value: {ORG}
      - name: UP_PROFILE
        value: default
      interactiveMode: IfAvailable
      provideClusterInfo: false
"
    )
}

/// A kubeconfig for the test control plane whose user is `user` (YAML,
/// indented under `user:`).
fn kubeconfig_with_user(env: &Env, user: &str) -> String {
    let (server, ca) = cluster_of(env);
    let user = user.replace('\n', "\n    ");
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    certificate-authority-data: {ca}
    server: {server}
contexts:
- name: c
  context:
    cluster: c
    user: u
current-context: c
users:
- name: u
  user:
    {user}
"
    )
}

fn eks_kubeconfig(env: &Env) -> String {
    kubeconfig_with_user(
        env,
        &format!(
            "exec:
  apiVersion: client.authentication.k8s.io/v1beta1
  command: aws
  args: [--region, us-east-1, eks, get-token, --cluster-name, {EKS_CLUSTER}, --output, json]"
        ),
    )
}

fn gke_kubeconfig(env: &Env) -> String {
    kubeconfig_with_user(
        env,
        "exec:
  apiVersion: client.authentication.k8s.io/v1beta1
  command: gke-gcloud-auth-plugin
  installHint: Install gke-gcloud-auth-plugin for use with kubectl
  provideClusterInfo: true",
    )
}

fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The run-mode controller with the kubeconfig `yaml` (from an env var)
/// and `extra` flags and variables.
fn controller_with(env: &Env, yaml: &str, extra_args: &[&str], extra_env: Vars) -> Controller {
    let mut args = vec!["--kubeconfig-source", "env:TEST_KUBECONFIG"];
    args.extend(FAST);
    args.extend(extra_args);
    let mut all_env = vars(&[("TEST_KUBECONFIG", yaml)]);
    all_env.extend(extra_env);
    Controller::spawn_with(env.dir.path(), "run", &env.with_allowlist(&args), &all_env)
}

async fn count_401(controller: &Controller) -> f64 {
    controller
        .metric_sum("robot_controller_kube_requests_total", |l| {
            l.contains("code=\"401\"")
        })
        .await
}

#[tokio::test]
async fn upbound_tokens_through_several_lifetimes_without_a_401() {
    let lifetime = Duration::from_secs(3);
    let authority = Authority::new(lifetime);
    let upbound_token = distinctive("upbound-robot");
    authority
        .upbound
        .lock()
        .unwrap()
        .insert(upbound_token.clone());
    let env = env_with_webhook(authority.clone()).await;
    let (endpoint, _exchange) = exchange(authority.clone()).await;
    let yaml = up_kubeconfig(&env);
    let mut controller = controller_with(
        &env,
        &yaml,
        &[
            "--upbound-token-source",
            "env:UP_ROBOT_TOKEN",
            "--upbound-auth-endpoint",
            &endpoint,
        ],
        vars(&[("UP_ROBOT_TOKEN", &upbound_token)]),
    );
    controller.wait_ready().await;
    env.namespace("team-a").await;
    env.create_robot("legacy", "red", json!({})).await;
    env.create_ns_robot("team-a", "modern", "red", json!({}))
        .await;
    env.wait_ready("legacy").await;
    env.wait_ns_ready("team-a", "modern").await;

    // Four lifetimes of changes, each converging.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < lifetime * 4 {
        round += 1;
        let color = format!("c{round}");
        env.set_color("legacy", &color).await;
        env.wait_server_color("legacy", &color).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(count_401(&controller).await, 0.0, "a request was refused");
    let refused = authority.refused.lock().unwrap().clone();
    assert!(
        refused
            .iter()
            .all(|t| !authority.issued.lock().unwrap().contains_key(t)),
        "an issued token was used after it expired"
    );
    let exchanges = authority.exchanges.lock().unwrap().clone();
    assert!(
        exchanges.len() >= 4,
        "{} exchanges in {:?}",
        exchanges.len(),
        started.elapsed()
    );
    // The lead: how long before expiry each token was replaced.
    let gaps: Vec<Duration> = exchanges.windows(2).map(|w| w[1] - w[0]).collect();
    let shortest = gaps.iter().min().copied().unwrap_or_default();
    crate::faults::report(
        "Upbound token lifetimes (3 s tokens, 4 lifetimes)",
        &format!("{} exchanges, 0 refused requests", exchanges.len()),
        lifetime.saturating_sub(shortest),
    );
    let issued: Vec<String> = authority.issued.lock().unwrap().keys().cloned().collect();
    let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    secrets.push(&upbound_token);
    assert_never_shown(&controller, &env, &secrets).await;

    // One pass, with the same kubeconfig.
    let mut args = vec![
        "--kubeconfig-source",
        "env:TEST_KUBECONFIG",
        "--upbound-token-source",
        "env:UP_ROBOT_TOKEN",
        "--upbound-auth-endpoint",
        &endpoint,
    ];
    let allowlist = env.with_allowlist(&[]);
    args.extend(allowlist.iter().map(String::as_str));
    let (code, out) = once(
        &args,
        &vars(&[
            ("TEST_KUBECONFIG", &yaml),
            ("UP_ROBOT_TOKEN", &upbound_token),
        ]),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(&upbound_token));
}

#[tokio::test]
async fn an_up_kubeconfig_without_an_upbound_token_source_says_what_to_set() {
    let env = Env::start().await;
    let (code, out) = once(
        &["--kubeconfig-source", "env:TEST_KUBECONFIG"],
        &vars(&[("TEST_KUBECONFIG", &up_kubeconfig(&env))]),
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--upbound-token-source")
            && out.contains("ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE"),
        "{out}"
    );
}

#[tokio::test]
async fn a_revoked_upbound_token_recovers_after_rotation_in_secrets_manager() {
    let authority = Authority::new(Duration::from_secs(30));
    let first = distinctive("upbound-first");
    let second = distinctive("upbound-second");
    authority.upbound.lock().unwrap().insert(first.clone());
    let env = env_with_webhook(authority.clone()).await;
    let (endpoint, _exchange) = exchange(authority.clone()).await;
    let moto = Moto::start().await;
    // As `up robot token create ... --file` writes it.
    let file = |t: &str| json!({ "accessId": "0c3f8a1e-robot", "token": t }).to_string();
    moto.create("upbound/robot", &file(&first)).await;
    let mut extra_env = moto.controller_env();
    extra_env.push(("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9".into()));
    let mut controller = controller_with(
        &env,
        &up_kubeconfig(&env),
        &[
            "--upbound-token-source",
            "aws-secretsmanager://upbound/robot?region=us-east-1&jsonKey=token",
            "--upbound-auth-endpoint",
            &endpoint,
        ],
        extra_env,
    );
    controller.wait_ready().await;
    env.create_robot("before", "red", json!({})).await;
    env.wait_ready("before").await;

    // Revoked: every token issued for it stops working.
    authority.revoke(&first);
    controller
        .wait_readyz("the revocation is seen", |s, b| {
            s == 503 && b.contains("credentials")
        })
        .await;
    // Rotated in the secret manager: recovered without a restart.
    authority.upbound.lock().unwrap().insert(second.clone());
    let rotated = Instant::now();
    moto.rotate("upbound/robot", &file(&second)).await;
    env.create_robot("after", "blue", json!({})).await;
    env.wait_ready("after").await;
    controller.wait_ready().await;
    crate::faults::report(
        "Upbound token revoked, then rotated in Secrets Manager",
        "a new Robot Ready with the new token",
        rotated.elapsed(),
    );
    assert_never_shown(&controller, &env, &[&first, &second]).await;
}

#[tokio::test]
async fn the_token_exchange_down_at_start_and_later() {
    let authority = Authority::new(Duration::from_secs(4));
    let token = distinctive("upbound-robot");
    authority.upbound.lock().unwrap().insert(token.clone());
    let env = env_with_webhook(authority.clone()).await;
    // A port nothing listens on yet.
    let port =
        testenv::process::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)).unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut controller = controller_with(
        &env,
        &up_kubeconfig(&env),
        &[
            "--upbound-token-source",
            "env:UP_ROBOT_TOKEN",
            "--upbound-auth-endpoint",
            &endpoint,
        ],
        vars(&[("UP_ROBOT_TOKEN", &token)]),
    );
    let body = controller
        .wait_readyz("the exchange is unreachable", |s, b| {
            s == 503 && b.contains("Upbound token exchange: cannot reach")
        })
        .await;
    assert!(!body.contains(&token));
    // It comes up: the controller recovers on its own.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let up = exchange_on(listener, authority.clone()).await;
    controller.wait_ready().await;
    env.create_robot("r", "red", json!({})).await;
    env.wait_ready("r").await;

    // Down again while running: what was issued works until it expires,
    // then the controller says so, and recovers when it is back.
    up.abort();
    let _ = up.await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    controller
        .wait_readyz("the exchange is gone", |s, b| {
            s == 503 && b.contains("Upbound token exchange")
        })
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let back = Instant::now();
    let _up = exchange_on(listener, authority).await;
    env.set_color("r", "green").await;
    env.wait_server_color("r", "green").await;
    controller.wait_ready().await;
    crate::faults::report(
        "Upbound token exchange down, then back",
        "converged",
        back.elapsed(),
    );
}

#[tokio::test]
async fn eks_tokens_from_the_default_aws_chain() {
    let authority = Authority::new(Duration::from_secs(60));
    let moto = Moto::start().await;
    let moto_url = moto
        .controller_env()
        .into_iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v)
        .unwrap();
    *authority.sts.lock().unwrap() = Some(moto_url);
    let env = env_with_webhook(authority.clone()).await;
    let yaml = eks_kubeconfig(&env);
    let mut controller = controller_with(&env, &yaml, &[], moto.controller_env());
    controller.wait_ready().await;
    env.create_robot("eks", "red", json!({})).await;
    env.wait_ready("eks").await;
    assert!(*authority.eks_accepted.lock().unwrap() > 0);
    assert_eq!(count_401(&controller).await, 0.0);
    let mut args = vec!["--kubeconfig-source", "env:TEST_KUBECONFIG"];
    let allowlist = env.with_allowlist(&[]);
    args.extend(allowlist.iter().map(String::as_str));
    let mut env_vars = moto.controller_env();
    env_vars.push(("TEST_KUBECONFIG".into(), yaml));
    let (code, out) = once(&args, &env_vars).await;
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn gke_tokens_from_application_default_credentials() {
    let authority = Authority::new(Duration::from_secs(3600));
    let metadata = metadata_server(authority.clone()).await;
    let env = env_with_webhook(authority.clone()).await;
    let home = tempfile::tempdir().unwrap();
    let adc = vars(&[
        ("GCE_METADATA_HOST", &metadata),
        // No gcloud credentials of this machine's: the metadata server only.
        ("HOME", home.path().to_str().unwrap()),
        ("CLOUDSDK_CONFIG", home.path().to_str().unwrap()),
    ]);
    let mut controller = controller_with(&env, &gke_kubeconfig(&env), &[], adc);
    controller.wait_ready().await;
    env.create_robot("gke", "red", json!({})).await;
    env.wait_ready("gke").await;
    assert_eq!(count_401(&controller).await, 0.0);
    let issued: Vec<String> = authority.issued.lock().unwrap().keys().cloned().collect();
    assert!(
        !issued.is_empty(),
        "no token was asked of the metadata server"
    );
    let secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    assert_never_shown(&controller, &env, &secrets).await;
}

#[tokio::test]
async fn client_certificate_data_works() {
    let env = Env::start().await;
    let yaml = env.cp.controller_cert_kubeconfig_yaml();
    assert!(yaml.contains("client-key-data"));
    let mut controller = controller_with(&env, &yaml, &[], Vars::new());
    controller.wait_ready().await;
    env.create_robot("cert", "red", json!({})).await;
    env.wait_ready("cert").await;
}

/// A kubeconfig with the controller's real token plus one field that
/// would run or read something, the field's name, and the opt-in flag.
fn hostile(env: &Env, token: &str) -> Vec<(String, &'static str, &'static str)> {
    let (server, ca) = cluster_of(env);
    let with_cluster = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n    {extra}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n"
        )
    };
    vec![
        (
            kubeconfig_with_user(
                env,
                &format!(
                    "token: {token}\nexec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: /bin/sh\n  args: [-c, 'echo {token} > /tmp/stolen']"
                ),
            ),
            "users[\"u\"].user.exec",
            "--insecure-kubeconfig-exec",
        ),
        (
            kubeconfig_with_user(
                env,
                &format!(
                    "token: {token}\nauth-provider:\n  name: oidc\n  config: {{client-id: x, idp-issuer-url: 'https://127.0.0.1:9'}}"
                ),
            ),
            "user.auth-provider",
            "--insecure-kubeconfig-auth-provider",
        ),
        (
            kubeconfig_with_user(env, "tokenFile: /etc/hostname"),
            "user.tokenFile",
            "--insecure-kubeconfig-files",
        ),
        (
            kubeconfig_with_user(
                env,
                &format!("token: {token}\nclient-certificate: /etc/ssl/certs/ca-certificates.crt"),
            ),
            "user.client-certificate",
            "--insecure-kubeconfig-files",
        ),
        (
            with_cluster("certificate-authority: /etc/ssl/certs/ca-certificates.crt"),
            "cluster.certificate-authority",
            "--insecure-kubeconfig-files",
        ),
        (
            with_cluster("proxy-url: http://127.0.0.1:9"),
            "cluster.proxy-url",
            "--insecure-kubeconfig-proxy",
        ),
        (
            with_cluster("insecure-skip-tls-verify: true"),
            "cluster.insecure-skip-tls-verify",
            "--insecure-skip-tls-verify",
        ),
    ]
}

#[tokio::test]
async fn every_refused_field_fails_closed_at_start_and_at_rotation() {
    let env = Env::start().await;
    let token = env.cp.controller_token();
    let cases = hostile(&env, &token);

    // At start: exit 2, one line naming the field, the source and the flag.
    for (yaml, field, flag) in &cases {
        let (code, out) = once(
            &["--kubeconfig-source", "env:TEST_KUBECONFIG"],
            &vars(&[("TEST_KUBECONFIG", yaml)]),
        )
        .await;
        assert_eq!(code, Some(2), "{field}: {out}");
        assert!(
            out.contains(field) && out.contains(flag) && out.contains("env:TEST_KUBECONFIG"),
            "{field}: {out}"
        );
        assert!(!out.contains(&token), "{field}: the token is shown");
    }
    assert!(
        !std::path::Path::new("/tmp/stolen").exists(),
        "the exec ran"
    );

    // At rotation: the last good client goes on; /readyz, the log and a
    // metric say the new one is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, env.cp.controller_kubeconfig_yaml()).unwrap();
    let mut args = vec![
        "--kubeconfig-source",
        path.to_str().unwrap(),
        "--secret-refresh-interval",
        "1s",
    ];
    args.extend(FAST);
    let mut controller = Controller::spawn_with(
        env.dir.path(),
        "run",
        &env.with_allowlist(&args),
        &Vars::new(),
    );
    controller.wait_ready().await;
    env.create_robot("steady", "red", json!({})).await;
    env.wait_ready("steady").await;
    for (i, (yaml, field, _)) in cases.iter().enumerate() {
        std::fs::write(&path, yaml).unwrap();
        let body = controller
            .wait_readyz(&format!("{field} refused at rotation"), |_, b| {
                b.contains(field)
            })
            .await;
        assert!(
            body.contains("the last good kubeconfig is still in use"),
            "{body}"
        );
        let color = format!("c{i}");
        env.set_color("steady", &color).await;
        env.wait_server_color("steady", &color).await;
    }
    assert!(
        controller
            .metric_sum("robot_controller_kubeconfig_rejected", |_| true)
            .await
            >= 1.0
    );
    assert!(controller.log().contains("keeping the last good client"));
    // Good again: the warning goes.
    std::fs::write(&path, env.cp.controller_kubeconfig_yaml()).unwrap();
    controller.wait_ready().await;
    assert_never_shown(&controller, &env, &[&token]).await;
    assert!(
        !std::path::Path::new("/tmp/stolen").exists(),
        "the exec ran"
    );
}

/// Every kubeconfig form, one-shot and in Lambda (each `run` is tested
/// above): `once` exits 0, and a Lambda invocation answers one synced
/// Robot, with no secret in the output or the answer. A refused form in
/// Lambda: every invocation fails with the one fixed line, never the token.
#[tokio::test]
async fn every_kubeconfig_form_in_the_one_shot_and_lambda_modes() {
    use crate::lambda::{Emulator, SCHEDULE_EVENT, start_function, summary_field};

    let authority = Authority::new(Duration::from_secs(60));
    let upbound_token = distinctive("upbound-robot");
    authority
        .upbound
        .lock()
        .unwrap()
        .insert(upbound_token.clone());
    let moto = Moto::start().await;
    let moto_env = moto.controller_env();
    *authority.sts.lock().unwrap() = moto_env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL")
        .map(|(_, v)| v.clone());
    let metadata = metadata_server(authority.clone()).await;
    let env = env_with_webhook(authority.clone()).await;
    let (endpoint, _exchange) = exchange(authority.clone()).await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap().to_owned();
    env.create_robot("form", "red", json!({})).await;

    let forms: Vec<(&str, String, Vars)> = vec![
        (
            "static-token",
            env.cp.controller_kubeconfig_yaml(),
            Vars::new(),
        ),
        (
            "client-certificate",
            env.cp.controller_cert_kubeconfig_yaml(),
            Vars::new(),
        ),
        (
            "upbound",
            up_kubeconfig(&env),
            vars(&[
                (
                    "ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE",
                    "env:UP_ROBOT_TOKEN",
                ),
                ("ROBOT_CONTROLLER_UPBOUND_AUTH_ENDPOINT", &endpoint),
                ("UP_ROBOT_TOKEN", &upbound_token),
            ]),
        ),
        ("eks", eks_kubeconfig(&env), moto_env.clone()),
        (
            "gke",
            gke_kubeconfig(&env),
            vars(&[
                ("GCE_METADATA_HOST", &metadata),
                ("HOME", &home),
                ("CLOUDSDK_CONFIG", &home),
            ]),
        ),
    ];
    let secrets = || {
        let mut all: Vec<String> = authority.issued.lock().unwrap().keys().cloned().collect();
        all.push(upbound_token.clone());
        all.push(env.cp.controller_token());
        all
    };
    for (form, yaml, extra) in &forms {
        let mut vars = extra.clone();
        vars.push(("TEST_KUBECONFIG".into(), yaml.clone()));
        vars.push((
            "ROBOT_CONTROLLER_KUBECONFIG_SOURCE".into(),
            "env:TEST_KUBECONFIG".into(),
        ));

        let color = format!("{form}-once");
        env.set_color("form", &color).await;
        let allowlist = env.with_allowlist(&[]);
        let args: Vec<&str> = allowlist.iter().map(String::as_str).collect();
        let (code, out) = once(&args, &vars).await;
        assert_eq!(code, Some(0), "{form}: {out}");
        assert_eq!(
            env.server_robot("form").await.map(|r| r.color),
            Some(color),
            "{form}"
        );

        let color = format!("{form}-lambda");
        env.set_color("form", &color).await;
        let emulator = Emulator::start(env.dir.path()).await;
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let function = start_function(&emulator, &env, &pairs);
        let answer = emulator
            .invoke(SCHEDULE_EVENT)
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}\n{}", log_tail(function.log_path(), 40)));
        assert_eq!(summary_field(&answer, "synced"), 1, "{form}: {answer}");
        assert_eq!(summary_field(&answer, "failed"), 0, "{form}: {answer}");
        assert_eq!(
            env.server_robot("form").await.map(|r| r.color),
            Some(color),
            "{form}"
        );
        let log = std::fs::read_to_string(function.log_path()).unwrap_or_default();
        for secret in secrets() {
            assert!(!out.contains(&secret), "{form}: a secret in once's output");
            assert!(!log.contains(&secret), "{form}: a secret in the Lambda log");
            assert!(
                !answer.to_string().contains(&secret),
                "{form}: a secret in the Lambda answer"
            );
        }
    }

    // Refused in Lambda: each invocation fails with the fixed line (and
    // tries again: a secret fixed meanwhile needs no redeploy).
    let token = env.cp.controller_token();
    let (yaml, field, flag) = hostile(&env, &token).swap_remove(0);
    let emulator = Emulator::start(env.dir.path()).await;
    let function = start_function(
        &emulator,
        &env,
        &[
            ("ROBOT_CONTROLLER_KUBECONFIG_SOURCE", "env:TEST_KUBECONFIG"),
            ("TEST_KUBECONFIG", &yaml),
        ],
    );
    for attempt in 0..2 {
        let err = emulator
            .invoke(SCHEDULE_EVENT)
            .await
            .expect_err("a refused kubeconfig fails the invocation");
        assert!(
            err.contains(field)
                && err.contains(flag)
                && err.contains("RobotController.Configuration"),
            "attempt {attempt}: {err}"
        );
        assert!(!err.contains(&token), "the token is in the Lambda answer");
    }
    let log = std::fs::read_to_string(function.log_path()).unwrap_or_default();
    assert!(!log.contains(&token), "the token is in the Lambda log");
    assert!(
        !std::path::Path::new("/tmp/stolen").exists(),
        "the exec ran"
    );
}
