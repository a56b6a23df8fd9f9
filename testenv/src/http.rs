//! A minimal blocking HTTP/1.0 GET for health probes and the demo.
//!
//! Blocking on purpose: a probe into a network namespace must create its
//! socket on the thread that entered the namespace, which an async client
//! with its own threads cannot promise.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Status code and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `addr`, with `timeout` for connecting and for each read.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One buffer, one write: `write!` on the stream sends the request in
    // pieces, and a server that answers after the first piece and closes
    // resets the connection over the rest, losing its answer.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json, */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    // The server closes the connection after an HTTP/1.0 response.
    stream.take(16 * 1024 * 1024).read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parses `HTTP/1.x NNN reason\r\nheaders\r\n\r\nbody`.
fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("response without end of headers"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("not an HTTP/1 response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("response without a status code"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r =
            parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 15\r\n\r\nRobot not found")
                .expect("parse");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, "Robot not found");
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn talks_to_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            // The whole head before answering, as a real server reads it.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8_lossy(&head).into_owned();
            conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nok").expect("write");
            request
        });
        let r = get(addr, "/healthz", Duration::from_secs(5)).expect("get");
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "ok".into()
            }
        );
        assert!(
            server
                .join()
                .expect("server")
                .starts_with("GET /healthz HTTP/1.0\r\n")
        );
    }
}
