//! The robot server harness: start, crash, restart on the same address.

use std::time::Duration;

use testenv::RobotServer;

fn get(server: &RobotServer, path: &str) -> std::io::Result<testenv::http::Response> {
    testenv::http::get(server.addr(), path, Duration::from_secs(5))
}

#[tokio::test]
async fn a_robot_server_starts_crashes_and_restarts_on_the_same_address() {
    let mut server = RobotServer::start(&[]).await.expect("robot server");
    assert!(
        server.url().starts_with("http://127.0.0.1:"),
        "{}",
        server.url()
    );
    assert_eq!(get(&server, "/healthz").expect("healthz").status, 200);
    assert_eq!(
        get(&server, "/robots?name=nobody").expect("get").status,
        404
    );
    let pid = server.pid().expect("pid");

    server.kill().await;
    assert!(!testenv::process::is_running(pid));
    let refused = get(&server, "/healthz").expect_err("nothing listens after a kill");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    server.restart().await.expect("restart");
    assert_ne!(server.pid(), Some(pid));
    assert_eq!(get(&server, "/healthz").expect("healthz").status, 200);
}

#[tokio::test]
async fn a_robot_server_that_cannot_start_says_why() {
    let error = RobotServer::start(&["--no-such-flag"])
        .await
        .expect_err("a bad flag must fail");
    let text = error.to_string();
    assert!(text.contains("robot-server"), "{text}");
    assert!(text.contains("exit status: 2"), "{text}");
    assert!(
        text.contains("--no-such-flag"),
        "the log tail should show the server's complaint: {text}"
    );
}

#[tokio::test]
async fn flags_are_passed_through_and_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    // At least 32 bytes: the server refuses shorter tokens.
    std::fs::write(&token_file, "sesame-0123456789abcdef0123456789\n").expect("write");
    let token_flag = format!("--auth-token-file={}", token_file.display());
    let mut server = RobotServer::start(&[&token_flag])
        .await
        .expect("robot server");
    assert_eq!(get(&server, "/robots?name=x").expect("get").status, 401);
    server.restart().await.expect("restart");
    assert_eq!(get(&server, "/robots?name=x").expect("get").status, 401);
    assert!(!format!("{server:?}").contains("sesame"));
}
