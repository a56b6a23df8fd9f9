//! What a client cannot do to the server by being slow or many: hold more
//! than the connection cap, get a page too large to take, or keep a
//! connection by not reading its answer.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use robot_api::{Robot, RobotList};
use robot_server::Config;

use crate::harness::{PATIENCE, Raw, Serving, TestServer, config, metric, read_answer, wait_for};

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

/// A client that sends requests but never reads the answers cannot keep
/// its connection: once the server's writes make no progress for the
/// request timeout, the connection is closed.
#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PIPELINED: usize = 48;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(Config {
        state_file: Some(state_file_with(dir.path(), &large_robots(800))),
        request_timeout: Duration::from_secs(1),
        ..config()
    });
    let addr = server.addr;
    let open = move || metric(addr, "robot_server_connections_open");
    // A small receive window, and 48 pages of about 1 MiB asked for at
    // once: far more than the kernel buffers between the two hold (the
    // send buffer grows to tcp_wmem's maximum, 4 MiB by default).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    let requests = "GET /v1/robots?limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    reader.write_all(requests.as_bytes()).await.unwrap();
    // The metrics request's own connection, and the stalled one.
    assert_eq!(open(), 2.0);

    tokio::task::spawn_blocking(move || {
        wait_for(PATIENCE, "the stalled connection to be closed", || {
            open() == 1.0
        });
    })
    .await
    .unwrap();
    assert_eq!(metric(addr, "robot_server_write_timeouts_total"), 1.0);

    // What was in the buffers, then the end: not every answer.
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut received)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the connection is still open"),
    }
    assert!(
        received.len() < PIPELINED * MAX_PAGE_BYTES / 2,
        "{} bytes",
        received.len()
    );
    let answers = received
        .windows(15)
        .filter(|w| w == b"HTTP/1.1 200 OK")
        .count();
    assert!(answers < PIPELINED, "{answers} answers");
}
