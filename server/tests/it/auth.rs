//! Bearer-token auth: the robot endpoints need the token, health and
//! metrics stay open, and the token never shows in logs or answers.

use robot_api::{Error, Robot};
use robot_server::{Auth, BearerToken, Config};

use std::path::Path;
use std::time::Duration;

use crate::harness::{PATIENCE, Raw, Serving, TestServer, blocking_get, launch, metric, wait_for};

/// Distinctive, so that finding it in any output is a leak.
const TOKEN: &str = "s3cr3t-T0ken_for.tests-0123456789abcdef";

fn token_config() -> Config {
    Config::new(Auth::Token(BearerToken::new(TOKEN).unwrap()))
}

async fn assert_guarded(server: &impl Serving) {
    let anonymous = Raw::new(server);
    let wrong = Raw::new(server).with_token(&TOKEN[..TOKEN.len() - 1]);
    let right = Raw::new(server).with_token(TOKEN);
    let body = r#"{"name":"r","color":"c"}"#;
    for raw in [&anonymous, &wrong] {
        for (method, path, body) in [
            ("POST", "/robots", Some(body)),
            ("GET", "/robots?name=r", None),
            ("PUT", "/robots?name=r", Some(body)),
            ("DELETE", "/robots?name=r", None),
            ("PATCH", "/robots", None),
            ("GET", "/v1/robots", None),
        ] {
            let answer = raw.call(method, path, body).await;
            assert_eq!(answer.status, 401, "{method} {path}");
            assert_eq!(answer.error(), "Missing or invalid bearer token");
            let challenge = answer.headers.get("www-authenticate").unwrap();
            assert!(challenge.to_str().unwrap().starts_with("Bearer"));
            assert!(!answer.body.contains(TOKEN));
        }
    }
    // Nothing got in.
    assert_eq!(right.get("/robots?name=r").await.status, 404);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path}");
    }
    assert_eq!(right.call("POST", "/robots", Some(body)).await.status, 201);
    assert_eq!(right.get("/robots?name=r").await.status, 200);
    assert_eq!(right.get("/v1/robots").await.status, 200);
    let metrics = anonymous.get("/metrics").await.body;
    assert!(!metrics.contains(TOKEN), "the token is in the metrics");
}

/// The variable is the binary's: read from its environment.
#[tokio::test]
async fn a_token_from_the_environment_guards_the_robots() {
    let server = launch()
        .without_no_auth()
        .env("ROBOT_SERVER_AUTH_TOKEN", TOKEN)
        .args(["--log-filter", "debug"])
        .start();
    assert_guarded(&server).await;
    assert!(
        !server.logs().contains(TOKEN),
        "the token leaked into the logs"
    );
}

#[tokio::test]
async fn a_token_from_a_file_guards_the_robots() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    // As a Kubernetes Secret or `echo` writes it: with a final newline.
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let server = TestServer::start(Config::new(Auth::TokenFile(file)));
    assert_guarded(&server).await;
    assert!(server.logs().contains("listening"), "{}", server.logs());
    assert!(!server.logs().contains(TOKEN));
}

/// Writes `content` to `path` as a Kubernetes Secret volume (or `mv`)
/// does: whole, by a rename.
fn replace_file(path: &Path, content: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A token file is re-read while serving: the new token works and the old
/// one is refused soon after the file changes, without a restart; a bad
/// new content keeps the token in force and is logged without itself.
#[test]
fn a_rotated_token_file_is_in_force_without_a_restart() {
    let old = "first-R0tation-token-0123456789abcdef";
    let new = "second-R0tation-token-0123456789abcdef";
    let bad = "bad-R0tation-s3cret";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let server = TestServer::start(Config {
        token_poll_interval: Duration::from_millis(50),
        ..Config::new(Auth::TokenFile(file.clone()))
    });
    let status = |token: &str| blocking_get(server.addr, "/v1/robots", Some(token)).0;
    assert_eq!(status(old), 200);
    assert_eq!(status(new), 401);

    replace_file(&file, &format!("{new}\n"));
    wait_for(PATIENCE, "the old token to be refused", || {
        status(old) == 401
    });
    assert_eq!(status(new), 200);
    let applied = r#"robot_server_auth_token_reloads_total{result="applied"}"#;
    assert_eq!(metric(server.addr, applied), 1.0);

    // Too short: not a token. The one in force stays.
    replace_file(&file, bad);
    let invalid = r#"robot_server_auth_token_reloads_total{result="invalid"}"#;
    wait_for(PATIENCE, "the bad content to be read", || {
        metric(server.addr, invalid) == 1.0
    });
    assert_eq!(status(new), 200);
    assert_eq!(status(old), 401);
    // Gone (a Secret being replaced): the same.
    std::fs::remove_file(&file).unwrap();
    let unreadable = r#"robot_server_auth_token_reloads_total{result="unreadable"}"#;
    wait_for(PATIENCE, "the missing file to be noticed", || {
        metric(server.addr, unreadable) == 1.0
    });
    assert_eq!(status(new), 200);

    let logs = server.logs();
    assert!(logs.contains("its new token is in force"), "{logs}");
    assert!(logs.contains("not a usable token"), "{logs}");
    assert!(
        logs.contains("cannot re-read the auth token file"),
        "{logs}"
    );
    let (_, metrics) = blocking_get(server.addr, "/metrics", None);
    for secret in [old, new, bad] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(!metrics.contains(secret), "{secret} in the metrics");
    }
}

#[tokio::test]
async fn the_client_sends_the_token_and_reports_refusals() {
    let server = TestServer::start(token_config());
    let client = server.client_with_token(TOKEN);
    client.create(&Robot::new("r", "c")).await.unwrap();
    assert_eq!(client.get("r").await.unwrap(), Some(Robot::new("r", "c")));
    let err = server.client().get("r").await.unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let err = server
        .client_with_token("wrong")
        .create(&Robot::new("x", "c"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"));
}

#[tokio::test]
async fn the_openapi_document_says_when_auth_is_required() {
    let guarded = TestServer::start(token_config());
    let doc: serde_json::Value =
        serde_json::from_str(&Raw::new(&guarded).get("/openapi.json").await.body).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/robots"]["get"]["responses"]["401"].is_object());

    let open = crate::harness::start();
    let doc: serde_json::Value =
        serde_json::from_str(&Raw::new(&open).get("/openapi.json").await.body).unwrap();
    assert!(doc["components"]["securitySchemes"].is_null());
}

#[test]
fn unusable_tokens_stop_the_server_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let empty = write("empty", "\n");
    let spaced = write("spaced", "two words-0123456789-0123456789-0123456789\n");
    let short = write("short", "sh0rt-s3cret\n");
    let good = write("good", TOKEN);
    let missing = dir.path().join("missing");
    let token_file = |path: &std::path::Path| {
        launch()
            .without_no_auth()
            .arg("--auth-token-file")
            .arg(path)
    };
    let cases = [
        (token_file(&empty), "empty"),
        (token_file(&spaced), "whitespace"),
        (token_file(&short), "at least 32"),
        (token_file(&missing), "cannot read"),
        (
            token_file(&good).env("ROBOT_SERVER_AUTH_TOKEN", TOKEN),
            "both",
        ),
        (
            launch()
                .without_no_auth()
                .env("ROBOT_SERVER_AUTH_TOKEN", ""),
            "empty",
        ),
        (
            launch()
                .without_no_auth()
                .env("ROBOT_SERVER_AUTH_TOKEN", "sh0rt-s3cret"),
            "at least 32",
        ),
        // --no-auth (launch's default) with a token.
        (launch().arg("--auth-token-file").arg(&good), "both set"),
        (launch().env("ROBOT_SERVER_AUTH_TOKEN", TOKEN), "both set"),
    ];
    for (launch, needle) in cases {
        let exited = launch.run_to_exit();
        assert_eq!(exited.code, Some(2), "{needle}: {}", exited.output);
        assert!(
            exited.output.contains(needle),
            "{needle}: {}",
            exited.output
        );
        for secret in [TOKEN, "two words", "sh0rt-s3cret"] {
            assert!(!exited.output.contains(secret), "{}", exited.output);
        }
    }
}

/// Fail closed: without a token the server serves no one unless told
/// `--no-auth` in so many words, and says what to set in one line.
#[test]
fn without_a_token_or_no_auth_the_server_exits_2() {
    let exited = launch().without_no_auth().run_to_exit();
    assert_eq!(exited.code, Some(2), "{}", exited.output);
    let lines: Vec<&str> = exited.output.lines().collect();
    assert_eq!(lines.len(), 1, "{}", exited.output);
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let message = line["message"].as_str().unwrap();
    for needed in [
        "--auth-token-file",
        "ROBOT_SERVER_AUTH_TOKEN_FILE",
        "ROBOT_SERVER_AUTH_TOKEN",
        "--no-auth",
        "ROBOT_SERVER_NO_AUTH=true",
    ] {
        assert!(message.contains(needed), "{needed}: {message}");
    }
    // The variable is a bool: true or false, nothing else.
    let exited = launch()
        .without_no_auth()
        .env("ROBOT_SERVER_NO_AUTH", "false")
        .run_to_exit();
    assert_eq!(exited.code, Some(2), "{}", exited.output);
    assert!(exited.output.contains("no auth token"), "{}", exited.output);
    let exited = launch()
        .without_no_auth()
        .env("ROBOT_SERVER_NO_AUTH", "yes")
        .run_to_exit();
    assert_eq!(exited.code, Some(2), "{}", exited.output);
}

#[tokio::test]
async fn no_auth_from_the_environment_serves_everyone() {
    let server = launch()
        .without_no_auth()
        .env("ROBOT_SERVER_NO_AUTH", "true")
        .start();
    let raw = Raw::new(&server);
    assert_eq!(
        raw.call("POST", "/robots", Some(r#"{"name":"r","color":"c"}"#))
            .await
            .status,
        201
    );
    assert_eq!(raw.get("/v1/robots").await.status, 200);
}
