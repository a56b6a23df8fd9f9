//! Graceful shutdown: when the shutdown future completes (SIGTERM or
//! SIGINT for the binary) the server stops accepting, finishes what is in
//! flight, and returns within Cloud Run's 10 s.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use robot_api::Robot;
use robot_server::Config;
use rustix::process::Signal;

use crate::harness::{
    PATIENCE, Serving, TestServer, config, launch, metric, read_answer, start, wait_for,
};

/// Cloud Run's grace period between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

fn in_flight(addr: SocketAddr, route: &str) -> f64 {
    metric(
        addr,
        &format!("robot_server_http_requests_in_flight{{route=\"{route}\"}}"),
    )
}

/// Sends a POST whose body is cut in two, and returns the connection and
/// the part not yet sent.
fn half_sent_post(addr: SocketAddr, robot: &Robot) -> (TcpStream, Vec<u8>) {
    let body = serde_json::to_vec(robot).unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "POST /robots HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).unwrap();
    (stream, rest.to_vec())
}

/// The binary: SIGTERM is the shutdown, exit 0 its end.
#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("robots.json");
    let mut server = launch().arg("--state-file").arg(&state).start();
    let robot = Robot::new("in flight", "green");
    let (mut stream, rest) = half_sent_post(server.addr, &robot);
    wait_for(PATIENCE, "the POST to be in flight", || {
        in_flight(server.addr, "/robots") == 1.0
    });

    server.signal(Signal::TERM);
    // New connections are refused while the old request is still open.
    server.wait_until_refusing();
    stream.write_all(&rest).unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(status, 201, "{body}");
    let exit = server.wait_exit(GRACE);
    assert!(exit.success(), "{exit:?}:\n{}", server.logs());

    // The request really completed: the robot is in the state file.
    let server = TestServer::start(Config {
        state_file: Some(state),
        ..config()
    });
    assert_eq!(server.client().get("in flight").await.unwrap(), Some(robot));
}

#[test]
fn sigint_exits_0() {
    let mut server = launch().start();
    server.signal(Signal::INT);
    let exit = server.wait_exit(GRACE);
    assert!(exit.success(), "{exit:?}");
    assert!(server.logs().contains("SIGINT"));
}

#[test]
fn idle_connections_do_not_hold_up_shutdown() {
    let mut server = start();
    // A keep-alive connection that has been used, and one that never was.
    let mut used = TcpStream::connect(server.addr).unwrap();
    used.set_read_timeout(Some(PATIENCE)).unwrap();
    used.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut used).0, 200);
    let _silent = TcpStream::connect(server.addr).unwrap();
    server.begin_shutdown();
    server.wait_stopped(GRACE).unwrap();
}

/// A client that stops sending mid-request gets 408 after the request
/// timeout, so it cannot hold the shutdown past the grace period.
#[test]
fn a_stalled_request_times_out_and_shutdown_completes() {
    let mut server = TestServer::start(Config {
        request_timeout: Duration::from_secs(1),
        ..config()
    });
    let (mut stream, _never_sent) = half_sent_post(server.addr, &Robot::new("stalled", "c"));
    wait_for(PATIENCE, "the POST to be in flight", || {
        in_flight(server.addr, "/robots") == 1.0
    });
    server.begin_shutdown();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("the request took longer than 1s"), "{body}");
    server.wait_stopped(GRACE).unwrap();
}

/// While draining, `/readyz` tells load balancers to stop sending.
#[test]
fn readyz_is_503_while_draining() {
    let mut server = start();
    let (mut holding, rest) = half_sent_post(server.addr, &Robot::new("held", "c"));
    wait_for(PATIENCE, "the POST to be in flight", || {
        in_flight(server.addr, "/robots") == 1.0
    });
    // A readiness probe whose request started before the shutdown.
    let mut probe = TcpStream::connect(server.addr).unwrap();
    probe.set_read_timeout(Some(PATIENCE)).unwrap();
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Connections are accepted in order: once a later one is answered,
    // the probe's has been accepted too.
    assert_eq!(in_flight(server.addr, "/robots"), 1.0);
    server.begin_shutdown();
    server.wait_until_refusing();
    probe.write_all(b"\r\n").unwrap();
    let (status, body) = read_answer(&mut probe);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    holding.write_all(&rest).unwrap();
    assert_eq!(read_answer(&mut holding).0, 201);
    server.wait_stopped(GRACE).unwrap();
}

/// Headers that never finish do not hold a connection for ever.
#[test]
fn slow_headers_are_cut_off_after_the_request_timeout() {
    let server = TestServer::start(Config {
        request_timeout: Duration::from_secs(1),
        ..config()
    });
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // Ends when the server closes the connection; a read timeout (the
    // server kept it open) is an error.
    std::io::Read::read_to_end(&mut stream, &mut answer)
        .expect("the server closes a connection whose headers stall");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}
