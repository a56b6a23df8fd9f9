//! Kubeconfig and server token from AWS Secrets Manager and Google Secret Manager, rotated and revoked while serving; Google ID tokens for a server behind IAM.

use super::*;

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
