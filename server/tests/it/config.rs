//! Flags, their environment variables, `PORT`, and the exit codes of bad
//! configuration.

use crate::harness::{Raw, free_port, launch};

#[tokio::test]
async fn port_is_honoured_without_listen() {
    let port = free_port();
    let server = launch()
        .without_listen()
        .env("PORT", port.to_string())
        .start();
    assert_eq!(server.addr.port(), port);
    assert!(
        server
            .logs()
            .contains(&format!("\"address\":\"0.0.0.0:{port}\"")),
        "{}",
        server.logs()
    );
    assert_eq!(Raw::new(&server).get("/healthz").await.status, 200);
}

#[tokio::test]
async fn listen_beats_port() {
    let port = free_port();
    let server = launch()
        .without_listen()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PORT", "1")
        .start();
    assert_eq!(server.addr.port(), port);
    assert_eq!(Raw::new(&server).get("/healthz").await.status, 200);
}

#[tokio::test]
async fn every_flag_reads_its_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("robots.json");
    let token = dir.path().join("token");
    let secret = "env-var-test-token-0123456789abcdef";
    std::fs::write(&token, secret).unwrap();
    let server = launch()
        .without_listen()
        .without_no_auth()
        .env("ROBOT_SERVER_LISTEN", "127.0.0.1:0")
        .env("ROBOT_SERVER_STATE_FILE", &state)
        .env("ROBOT_SERVER_AUTH_TOKEN_FILE", &token)
        .env("ROBOT_SERVER_REQUEST_TIMEOUT", "3s")
        .env("ROBOT_SERVER_MAX_CONNECTIONS", "7")
        .env("ROBOT_SERVER_LOG_FORMAT", "json")
        .env("ROBOT_SERVER_LOG", "info,robot_server::access=debug")
        .start();
    let raw = Raw::new(&server).with_token(secret);
    assert_eq!(raw.get("/v1/robots").await.status, 200);
    assert_eq!(Raw::new(&server).get("/v1/robots").await.status, 401);
    assert!(state.exists());
    assert_eq!(
        crate::harness::metric(server.addr, "robot_server_connections_max"),
        7.0
    );
    // The access log is on, and is JSON with the fields log collectors read.
    crate::harness::wait_for(crate::harness::PATIENCE, "the access log", || {
        server.logs().contains("\"message\":\"request\"")
    });
    let line = server
        .logs()
        .lines()
        .find(|l| l.contains("\"message\":\"request\""))
        .unwrap()
        .to_owned();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["severity"], "DEBUG");
    assert_eq!(event["path"], "/v1/robots");
    assert!(event["status"].is_u64());
    assert!(event["latency_us"].is_u64());
}

#[test]
fn help_names_every_environment_variable() {
    let exited = launch().arg("--help").run_to_exit();
    assert_eq!(exited.code, Some(0));
    for var in [
        "ROBOT_SERVER_LISTEN",
        "ROBOT_SERVER_AUTH_TOKEN_FILE",
        "ROBOT_SERVER_AUTH_TOKEN",
        "ROBOT_SERVER_NO_AUTH",
        "ROBOT_SERVER_STATE_FILE",
        "ROBOT_SERVER_REQUEST_TIMEOUT",
        "ROBOT_SERVER_MAX_CONNECTIONS",
        "ROBOT_SERVER_LOG_FORMAT",
        "ROBOT_SERVER_LOG",
        "PORT",
    ] {
        assert!(
            exited.output.contains(var),
            "{var} missing:\n{}",
            exited.output
        );
    }
}

#[test]
fn bad_configuration_exits_2_with_a_reason() {
    let cases = [
        (
            launch().without_listen().args(["--listen", "nowhere"]),
            "invalid socket address",
        ),
        (launch().args(["--request-timeout", "soon"]), "soon"),
        (launch().args(["--request-timeout", "0s"]), "more than zero"),
        (launch().args(["--max-connections", "0"]), "max-connections"),
        (launch().env("ROBOT_SERVER_MAX_CONNECTIONS", "many"), "many"),
        (launch().args(["--log-format", "xml"]), "xml"),
        (
            launch().args(["--log-filter", "info,["]),
            "invalid log filter",
        ),
        (launch().args(["--no-such-flag"]), "no-such-flag"),
        (launch().without_listen().env("PORT", "http"), "PORT"),
        (launch().without_listen().env("PORT", "70000"), "PORT"),
    ];
    for (launch, needle) in cases {
        let exited = launch.run_to_exit();
        assert_eq!(exited.code, Some(2), "{needle}: {}", exited.output);
        assert!(
            exited.output.contains(needle),
            "{needle}: {}",
            exited.output
        );
    }
}

#[test]
fn an_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exited = launch()
        .without_listen()
        .args(["--listen", &addr])
        .run_to_exit();
    assert_eq!(exited.code, Some(1), "{}", exited.output);
    assert!(exited.output.contains(&addr), "{}", exited.output);
}

#[tokio::test]
async fn text_logs_on_request() {
    let server = launch().args(["--log-format", "text"]).start();
    assert_eq!(Raw::new(&server).get("/healthz").await.status, 200);
    assert!(server.logs().contains("listening"));
    assert!(!server.logs().trim_start().starts_with('{'));
}

#[test]
fn healthcheck_probes_the_configured_server() {
    let server = launch().start();
    let probe = launch()
        .without_listen()
        .arg("healthcheck")
        .env("ROBOT_SERVER_LISTEN", server.addr.to_string())
        .run_to_exit();
    assert_eq!(probe.code, Some(0), "{probe:?}");

    let nobody = free_port();
    let probe = launch()
        .without_listen()
        .arg("healthcheck")
        .env("PORT", nobody.to_string())
        .run_to_exit();
    assert_eq!(probe.code, Some(1));
    assert!(
        probe
            .output
            .contains(&format!("GET http://127.0.0.1:{nobody}/healthz")),
        "{probe:?}"
    );
}
