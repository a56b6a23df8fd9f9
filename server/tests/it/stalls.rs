//! What a client cannot do to the server by being slow or many: hold more
//! than the connection cap, get a page too large to take, or keep a
//! connection by not reading its answer.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use robot_server::Config;

use crate::harness::{PATIENCE, TestServer, config, read_answer};

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
