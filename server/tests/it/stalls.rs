//! What a client cannot do to the server by being slow or many: hold more
//! than the connection cap, get a page too large to take, or keep a
//! connection by not reading its answer.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use robot_api::{Robot, RobotList};
use robot_server::Config;

use crate::harness::{PATIENCE, Raw, Serving, TestServer, config, read_answer};

/// A page of `GET /v1/robots` is at most this large: what robot-api's
/// client reads.
const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Over the cap, a connection waits in the listen backlog: it is
/// accepted (and answered) once another closes.
#[test]
fn connections_over_the_cap_wait_until_one_closes() {
    let server = TestServer::start(Config {
        max_connections: 1,
        ..config()
    });
    let mut first = TcpStream::connect(server.addr).unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut first).0, 200);
    // `first` is kept alive: it holds the one connection allowed.

    let mut second = TcpStream::connect(server.addr).unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Nothing comes back while the first is open: a bounded wait for
    // something that must not happen.
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = second.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the second connection was served while the first held the only slot: {early:?}"
    );

    drop(first);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_answer(&mut second).0, 200);
}

/// Robots as large as the limits allow: about 1.3 KB each as JSON.
fn large_robots(count: usize) -> Vec<Robot> {
    (0..count)
        .map(|i| {
            let name = format!("{i:05}-{}", "n".repeat(robot_api::wire::MAX_NAME_BYTES - 6));
            Robot::new(name, "c".repeat(robot_api::wire::MAX_COLOR_BYTES))
        })
        .collect()
}

/// A state file holding `robots`, for a server to start from.
fn state_file_with(dir: &std::path::Path, robots: &[Robot]) -> std::path::PathBuf {
    let path = dir.join("robots.json");
    let state = serde_json::json!({
        "format": "robot-server-state",
        "version": 1,
        "robots": robots,
    });
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    path
}

/// A page stops at 1 MiB of JSON, whatever `limit` says, and says where
/// to go on: 10 000 large robots would be 13 MB in one answer.
#[tokio::test]
async fn a_page_stops_at_1_mib_and_paging_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let robots = large_robots(1500);
    let server = TestServer::start(Config {
        state_file: Some(state_file_with(dir.path(), &robots)),
        ..config()
    });
    let answer = Raw::new(&server).get("/v1/robots?limit=10000").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.len() <= MAX_PAGE_BYTES,
        "a page of {} bytes",
        answer.body.len()
    );
    let page: RobotList = serde_json::from_str(&answer.body).unwrap();
    assert!(page.items.len() < robots.len(), "{}", page.items.len());
    assert!(page.items.len() > 500, "{}", page.items.len());
    assert_eq!(page.next.as_ref(), Some(&page.items.last().unwrap().name));
    assert_eq!(page.items[..], robots[..page.items.len()]);

    // Through the client (which reads answers of up to 1 MiB), page
    // after page: every robot once, in order.
    let client = server.client();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.list(after.as_deref(), 10_000).await.unwrap();
        seen.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, robots);
}
